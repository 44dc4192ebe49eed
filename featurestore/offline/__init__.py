"""The offline store: every ingested feature row, for training and time travel.

:class:`OfflineEngine` is the face the rest of the store sees (:mod:`.engine`); the DuckDB file
and the Delta lake implement it, and :func:`featurestore.opening.open_offline_store` picks one.
"""

from .engine import GRANTED, POSITION, Bookkeeping, Carry, Compaction, OfflineEngine, OfflineWriter

__all__ = ["GRANTED", "POSITION", "Bookkeeping", "Carry", "Compaction", "OfflineEngine", "OfflineWriter"]
