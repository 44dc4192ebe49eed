"""Alembic migrations of the featurestore registry (shipped as ``featurestore.migrations``)."""
