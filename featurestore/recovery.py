"""Registry and offline data agree, or the store refuses to run; ``db recover`` rebuilds the registry.

The offline file records every committed batch in ``_fs_batches`` in the same transaction as its
rows: it is the ground truth for what data exists. The registry records the same batches (and
allocates their ids). When the registry is lost (and recreated empty), replaced, or restored
from an older backup, the two disagree: an older registry hands out batch ids the file already
holds, shows committed batches as aborted, and ``apply`` would create view versions over tables
that hold rows. So every store open compares the two (cheaply: count, largest id and total rows
of the committed batches, then in detail if they differ) and refuses with what disagrees.

``recover`` rebuilds the registry's record of views and batches from the offline file and the
definitions in ``features/``, in one registry transaction, audited. What lives only in the
registry cannot be rebuilt from the file and is listed in the report: policy approvals, data keys,
training-set manifests, materialization state, erasure records and the audit history before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .apply_plan import Change
from .catalog import Catalog
from .config import StoreConfig
from .context import StoreContext
from .definitions import Definitions, FeatureView
from .errors import RegistryOutOfDate, StoreDamaged
from .offline import OfflineEngine
from .types import TYPE_NAMES, duckdb_type
from .versions import table_name

BOOKKEEPING = ("_ingested_at", "_batch_id")
NOT_IN_THE_FILE = (
    "policy approvals (re-approve each policy: featurestore policy approve)",
    "wrapped data keys (restore the registry from a backup to keep pseudonyms joinable; new keys make new pseudonyms)",
    "training-set manifests",
    "materialization state (run featurestore materialize --full)",
    "erasure requests, tombstones and legal holds",
    "the DP budget ledger",
    "audit entries before the recovery",
)
"""What only the registry holds, so ``recover`` cannot rebuild it from the offline file."""
_DTYPE_OF = {duckdb_type(name): name for name in TYPE_NAMES} | {"TIMESTAMP WITH TIME ZONE": "timestamp"}


@dataclass(frozen=True)
class Batch:
    """One batch as one side records it."""

    batch_id: int
    table: str
    rows: int | None
    status: str = "committed"


def disagreements(registry: Sequence[Batch], offline: Sequence[Batch], *, limit: int = 5) -> list[str]:
    """What the registry's batches and the offline file's committed batches disagree on
    (pending batches aside: settling them is the crash recovery's job), at most `limit` of each kind.

    >>> disagreements([Batch(1, "fv_a_v1", 2)], [Batch(1, "fv_a_v1", 2), Batch(2, "fv_a_v1", 5)])
    ['the offline store holds batch 2 (5 rows of fv_a_v1), of which the registry has no record']
    """
    mine = {b.batch_id: b for b in registry}
    theirs = {b.batch_id: b for b in offline}
    found: dict[str, list[str]] = {"unknown": [], "aborted": [], "lost": [], "differs": []}
    for batch_id, b in sorted(theirs.items()):
        r = mine.get(batch_id)
        if r is None:
            found["unknown"].append(
                f"the offline store holds batch {batch_id} ({b.rows} rows of {b.table}), "
                "of which the registry has no record"
            )
        elif r.status == "aborted":
            found["aborted"].append(f"batch {batch_id} is recorded as aborted, but its {b.rows} rows are in {b.table}")
        elif r.status == "committed" and (r.table, r.rows) != (b.table, b.rows):
            found["differs"].append(
                f"batch {batch_id} is {r.rows} rows of {r.table} in the registry but {b.rows} rows of "
                f"{b.table} in the offline store"
            )
    for batch_id, r in sorted(mine.items()):
        if r.status == "committed" and batch_id not in theirs:
            found["lost"].append(
                f"the registry records batch {batch_id} as committed ({r.rows} rows of {r.table}), "
                "but the offline store has no record of it"
            )
    problems: list[str] = []
    for kind in ("unknown", "aborted", "differs", "lost"):
        items = found[kind]
        problems += items[:limit] + ([f"... and {len(items) - limit} more like it"] if len(items) > limit else [])
    return problems


def lost_registry(
    config: StoreConfig, exc: RegistryOutOfDate, where: str, offline: Callable[[], OfflineEngine]
) -> StoreDamaged | None:
    """A registry with no schema beside an offline file that holds batches was lost, not new:
    say to recover it (upgrading alone would leave it empty). None when that is not the case.
    `offline` opens the store's offline engine (asked only when its file exists)."""
    if exc.current is not None or config.offline_path is None or not config.offline_path.exists():
        return None
    book = offline().bookkeeping(wait=False)
    count, _last, rows = book.summary if book is not None else (0, 0, 0)
    if not count:
        return None
    return StoreDamaged(
        f"the registry ({where}) is empty, but the offline store "
        f"{config.offline_path} holds {count} committed batches ({rows:,} rows): the registry was lost or replaced. "
        "Run `featurestore db recover` to rebuild its views and batches from the offline store (definitions from "
        "features/), or put back a backup of the registry (it also holds approvals and keys)."
    )


@dataclass
class RecoveryReport:
    """What ``db recover`` rebuilt, and what it could not."""

    views: list[str] = field(default_factory=list)
    """View versions registered from the offline tables (``name@vN``)."""
    tables_created: list[str] = field(default_factory=list)
    """Registered view versions whose table the offline file lacked (created empty)."""
    batches_added: int = 0
    batches_corrected: int = 0
    batches_lost: int = 0
    """Batches the registry had as committed that the offline file does not hold (now aborted)."""
    not_recovered: tuple[str, ...] = NOT_IN_THE_FILE


class Recovery:
    """Checks registry/offline agreement, and rebuilds the registry from the offline file."""

    def __init__(self, ctx: StoreContext, catalog: Catalog) -> None:
        self.ctx = ctx
        self.catalog = catalog

    def _registry_batches(self) -> list[Batch]:
        tables = {(r.view_name, r.version): r.table_name for r in self.ctx.registry.view_versions()}
        return [
            Batch(r.id, tables.get((r.view_name, r.version), f"fv_{r.view_name}_v{r.version}"), r.row_count, r.status)
            for r in self.ctx.registry.batches()
        ]

    def check(self, *, read_tables: bool = False) -> None:
        """Raise StoreDamaged if the registry does not match the offline data (skipped when another
        process holds the file for writing: that process checked when it opened the store);
        `read_tables` also reads every block of every view table (1.5 s for 10M rows), so damaged data shows."""
        offline = self.ctx.offline
        if offline.path is None:
            return
        if not offline.path.exists():
            count, _last, rows = self.ctx.registry.batch_summary()
            if count:
                raise StoreDamaged(
                    f"the offline store file {offline.path} does not exist, but the registry records {count} committed "
                    f"batches ({rows:,} rows): restore the file from a backup. featurestore does not create an empty "
                    "file over lost data."
                )
            return
        book = offline.bookkeeping(wait=False, read_every_block=read_tables)
        if book is None:
            return
        if book.project is not None and book.project != self.ctx.config.project:
            raise StoreDamaged(
                f"the offline store {offline.path} belongs to project '{book.project}', but featurestore.yaml says "
                f"{repr(self.ctx.config.project) if self.ctx.config.project else 'no project'}: with another project the store "
                f"would read and write another store's registry rows. Set `project: {book.project}` in featurestore.yaml."
            )
        if book.summary == self.ctx.registry.batch_summary():
            return
        records = book.records
        problems = disagreements(self._registry_batches(), [Batch(b, t, n) for b, t, n, _at in records])
        if problems:
            raise StoreDamaged(
                f"the registry ({self.ctx.registry.safe_url()}) does not match the offline store ({offline.path}): "
                + "; ".join(problems)
                + ". The registry was probably lost, replaced or restored from an older backup"
                + (
                    ""
                    if self.ctx.config.registry_url.startswith("sqlite")
                    else ", or another store uses it: stores sharing one registry each need their own `project:` in "
                    "featurestore.yaml (featurestore init --project NAME); check that first, since db recover would make "
                    "the registry match this offline file"
                )
                + ". "
                "Nothing was changed. Run `featurestore db recover` to rebuild its record of views and batches from the "
                "offline store (definitions from features/), or put back the registry that belongs to this offline file."
            )

    def recover(self, definitions: Definitions) -> RecoveryReport:
        """Register the view versions whose tables the offline file holds (definitions from
        `definitions`; older versions from their tables' columns) and make the registry's batches
        match the file's record, in one registry transaction; audited."""
        ctx = self.ctx
        report = RecoveryReport()
        book = ctx.offline.bookkeeping()
        assert book is not None  # waited for the store
        tables, records = book.tables, book.records
        registered = {(r.view_name, r.version) for r in ctx.registry.view_versions()}
        entities = {e.name: e for e in definitions.entities}
        now = ctx.now()
        known_entities = {e.name for e in ctx.registry.entities()}
        steps: list[tuple[list[Change], FeatureView, dict[str, str], str]] = []
        for view in definitions.views:
            entity = entities.get(view.entity)
            if entity is None and view.entity not in known_entities:
                raise StoreDamaged(
                    f"features/: view '{view.name}' names entity '{view.entity}', which is not defined: "
                    "define it and run db recover again"
                )
            keys = dict(entity.join_keys) if entity is not None else dict(ctx.registry.entity(view.entity).join_keys)  # type: ignore[union-attr]
            versions = sorted(
                int(t.rsplit("_v", 1)[1])
                for t in tables
                if t.startswith(f"fv_{view.name}_v")
                and t.rsplit("_v", 1)[1].isdigit()
                and table_name(view.name, int(t.rsplit("_v", 1)[1])) == t
            )
            head = max(versions, default=0)
            for version in versions:
                if (view.name, version) in registered:
                    continue
                table = table_name(view.name, version)
                defined = self._definition_for(view, keys, tables[table], latest=version == head)
                changes = []
                if view.entity not in known_entities:
                    changes.append(Change("create_entity", view.entity, f"entity {view.entity}"))
                    known_entities.add(view.entity)
                kind = "create_view" if not any(n == view.name for n, _v in registered) else "new_version"
                changes.append(Change(kind, view.name, f"{view.name} v{version} (recovered)", version))
                registered.add((view.name, version))
                steps.append((changes, defined, keys, table))
                report.views.append(f"{view.name}@v{version}")
        for changes, defined, keys, table in steps:
            ctx.registry.apply_changes(
                changes, entities, {defined.name: defined}, {defined.name: keys}, {defined.name: table}, now
            )
        for latest in self.catalog.list_views():  # a registered version with no table gets an empty one
            for vv in self.catalog.view_versions(latest.view.name):
                if vv.table not in tables:
                    ctx.offline.create_table(
                        vv.table, vv.view.stored_columns(vv.join_keys), time_columns=vv.view.time_columns
                    )
                    report.tables_created.append(vv.ref)
        versions_of = {r.table_name: (r.view_name, r.version) for r in ctx.registry.view_versions()}
        unknown = sorted({t for _b, t, _n, _at in records if t not in versions_of})
        if unknown:
            raise StoreDamaged(
                f"features/ has no definition for the offline tables {', '.join(unknown)}, which hold "
                "committed batches: add their views to features/ and run db recover again (the views "
                "found so far are registered)"
            )
        mine = {b.batch_id: b for b in self._registry_batches()}
        theirs = {b: (versions_of[t], n, at) for b, t, n, at in records}
        upserts = {}
        for batch_id, ((name, version), rows, at) in theirs.items():
            r = mine.get(batch_id)
            if r is None or r.status != "committed" or r.rows != rows or versions_of.get(r.table) != (name, version):
                upserts[batch_id] = {"view_name": name, "version": version, "row_count": rows, "ingested_at": at}
                report.batches_added += r is None
                report.batches_corrected += r is not None
        lost = [b for b, r in mine.items() if r.status == "committed" and b not in theirs]
        report.batches_lost = len(lost)
        ctx.registry.recover_batches(upserts, lost, now)
        ctx.audit.append(
            ctx.actor,
            "db_recover",
            str(ctx.offline.path),
            details={
                "views": report.views,
                "tables_created": report.tables_created,
                "batches_added": report.batches_added,
                "batches_corrected": report.batches_corrected,
                "batches_lost": report.batches_lost,
            },
        )
        return report

    @staticmethod
    def _definition_for(
        view: FeatureView, keys: dict[str, str], columns: dict[str, str], *, latest: bool
    ) -> FeatureView:
        """The definition of the version a table holds: the file's own if its columns match,
        else (an older version) one made from the table's columns."""
        created = view.created_timestamp_field if view.created_timestamp_field in columns else None
        features = {
            c: _DTYPE_OF.get(t, "string")
            for c, t in columns.items()
            if c not in keys and c not in (view.timestamp_field, created) and c not in BOOKKEEPING
        }
        if latest and {f.name: f.dtype for f in view.features} == features:
            return view
        return FeatureView(
            name=view.name,
            entity=view.entity,
            features=features,
            timestamp_field=view.timestamp_field,
            ttl=view.ttl,
            description=view.description,
            created_timestamp_field=created,
        )
