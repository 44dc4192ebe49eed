"""The offline store: every ingested feature row, for training and time travel."""

from .duckdb_store import OfflineStore

__all__ = ["OfflineStore"]
