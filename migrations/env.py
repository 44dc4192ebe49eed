"""Alembic environment for the featurestore registry.

Standard generic template, changed only where the project needs it:
- `target_metadata` is featurestore's registry metadata (with a naming convention);
- an open connection passed in `config.attributes["connection"]` is reused, so
  `featurestore db upgrade` and the tests run migrations in their own process and transaction;
- SQLite gets batch mode (`render_as_batch`), since it cannot ALTER most things in place;
- featurestore's own column types are written into revisions as the plain SQLAlchemy type
  they store, so old revisions never import application code.
"""

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import engine_from_config, pool
from sqlalchemy.types import TypeDecorator

from featurestore.registry.models import metadata

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> Any:
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


def _configure(**kwargs: Any) -> None:
    url = str(kwargs.get("url") or kwargs["connection"].engine.url)
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=url.startswith("sqlite"),
        render_item=render_item,
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with connectable.connect() as connection:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
