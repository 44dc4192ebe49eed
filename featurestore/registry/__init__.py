"""Metadata of a store, kept through SQLAlchemy (SQLite by default, PostgreSQL in production)."""

from .repository import Registry

__all__ = ["Registry"]
