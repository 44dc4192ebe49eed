"""Online stores: the latest value per entity per view version, for low-latency serving.

Two implementations share one small interface: an embedded SQLite file (the default; WAL mode,
so serving processes read while another process materializes) and Redis (production).

A row is written as ``(entity key, event time in microseconds, feature values...)`` and read
back as ``(entity key, event time, generation, feature values...)``: every materialization run
writes its own generation, and a full rebuild prunes older generations only after every new
row is in, so readers never see an entity vanish mid-rebuild. The entity key is the text of the
join key (its pseudonym for a hashed key); a composite key joins its parts with ``\\x1f``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

KEY_SEPARATOR = "\x1f"

Row = tuple[Any, ...]
"""Written: (entity key, event time in microseconds, *values); read: (key, event time, generation, *values)."""
VALUES_AT = 3
"""Index of the first feature value in a row read back."""


class OnlineStore(Protocol):
    """What materialization writes and serving reads."""

    def ensure_table(self, table: str, features: Sequence[str]) -> None:
        """Create the table for a view version (idempotent)."""

    def write(self, table: str, rows: Iterable[Row], generation: int, *, newer_only: bool = False) -> int:
        """Upsert rows, stamped with `generation` (one transaction per call); return how many.
        With `newer_only`, a stored row with a later event time keeps its values (its generation
        is still stamped, so a rebuild does not prune it): an older event never overwrites a newer one."""

    def read(self, table: str, keys: Sequence[str]) -> list[Row | None]:
        """The rows of these entity keys, in order (None where absent)."""

    def point_reader(
        self, table: str, features: Sequence[str], positions: Sequence[int]
    ) -> Callable[[str], Row | None]:
        """A function reading one entity key of a table as ``(*values of features, event time)``
        (None where absent): the single-entity serving path, its query made once. `positions`
        are where those features sit in a row read back (from VALUES_AT on)."""

    def sample_keys(self, table: str, n: int, seed: int) -> list[str]:
        """Up to n entity keys of a table, a reproducible sample."""

    def copy_table(self, source: str, target: str, columns: dict[str, str | None], generation: int) -> int:
        """Copy every row of `source` into `target` (created by ensure_table), stamped with
        `generation`: each target feature from the source feature `columns` names (None: null).
        Returns how many rows."""

    def prune(self, table: str, generation: int) -> int:
        """Remove rows written before `generation` (after a full rebuild); return how many."""

    def delete(self, table: str, keys: Sequence[str]) -> int:
        """Remove these entity keys for good (erasure: no copy left in the store's files); return how many."""

    def delete_older(self, table: str, before_us: int, keep: Sequence[str] = ()) -> int:
        """Remove rows whose event time is before `before_us` (retention), except the keys in
        `keep` (legal holds); return how many."""

    def close(self) -> None:
        """Release connections."""
