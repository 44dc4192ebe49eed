"""``featurestore doctor``: check a store end to end and say what is wrong and how to fix it.

Checks, in order (a check that cannot run because an earlier one failed is skipped): the config;
the registry (reachable, schema revision, SQLite's integrity check); the offline file (present,
every block of every table readable, no leftover compaction file); registry/offline agreement
(batches, pending batches of crashed processes); the audit chain; the data keys (the master key
opens every one); the online store (reachable, every materialized table readable); the policies
(files that cannot be read, drafts that differ from what is in force). Read-only apart from
settling batches a crashed process left pending, which any open of the store does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .config import load_config
from .errors import FeatureStoreError, StoreDamaged
from .offline.duckdb_store import COMPACT_SUFFIX
from .opening import registry_of
from .registry import Registry

if TYPE_CHECKING:
    from .context import StoreContext
    from .ingestion import BatchInfo
    from .online.service import OnlineService
    from .policy_workflow import PolicyStatus
    from .versions import ViewVersion


@dataclass(frozen=True)
class Check:
    """One finding: `status` is ``ok``, ``warning`` (works, but look) or ``problem`` (fix it)."""

    name: str
    status: str
    detail: str
    fix: str = ""


def _run(checks: list[Check], name: str, probe: Callable[[], str], fix: str = "") -> bool:
    """Run one probe (it returns what it found, or raises FeatureStoreError); record the outcome."""
    try:
        checks.append(Check(name, "ok", probe()))
        return True
    except FeatureStoreError as exc:
        checks.append(Check(name, "problem", str(exc), fix))
        return False
    except Exception as exc:  # noqa: BLE001 - a server down, a driver error: reported, never a traceback
        checks.append(
            Check(name, "problem", f"failed with {type(exc).__name__} (its text is not shown: it may quote data)", fix)
        )
        return False


class DiagnosedStore(Protocol):
    """What the checks ask of an open store (a FeatureStore: doctor does not import the facade)."""

    def __enter__(self) -> DiagnosedStore: ...
    def __exit__(self, *exc: object) -> None: ...
    def list_batches(self) -> list[BatchInfo]:
        """Every batch (reads every block and compares the batch records)."""
        ...

    def verify_audit(self) -> tuple[int, str]:
        """The audit chain's length and head, verified."""
        ...

    def materialized_views(self) -> list[str]:
        """Materialized view versions (``name@vN``)."""
        ...

    def get_view(self, ref: str) -> ViewVersion:
        """One view version."""
        ...

    def policy_status(self) -> list[PolicyStatus]:
        """Every policy id with its version in force, drafts and problems."""
        ...


def diagnose(
    root: Path, open_store: Callable[[], tuple[DiagnosedStore, StoreContext, Callable[[], OnlineService]]]
) -> list[Check]:
    """Every check on the store at `root`; `open_store` opens it without the agreement check and
    gives its context and its online service (made when called; it opens the online store on first use)."""
    checks: list[Check] = []
    try:
        cfg = load_config(root.resolve())
        checks.append(Check("config", "ok", f"{root / 'featurestore.yaml'} is valid"))
    except FeatureStoreError as exc:
        checks.append(Check("config", "problem", str(exc), "`featurestore init DIR` makes a store"))
        return checks
    registry = registry_of(cfg)
    try:
        if not _run(checks, "registry", lambda: _registry(registry)):
            return checks
    finally:
        registry.close()
    offline = cfg.offline_path
    if offline is not None:
        leftover = Path(f"{offline}{COMPACT_SUFFIX}")
        if leftover.exists():
            checks.append(
                Check(
                    "offline store",
                    "warning",
                    f"{leftover} is left from a compaction that did not finish",
                    "run `featurestore compact` (it removes the file) or delete it",
                )
            )
    try:
        fs, ctx, online = open_store()
    except FeatureStoreError as exc:
        checks.append(Check("store", "problem", str(exc)))
        return checks
    with fs:
        batches: list[object] = []

        def agreement() -> str:
            batches.extend(fs.list_batches())  # reads every block of every table and compares the batch records
            return (
                f"{offline or 'the in-memory offline store'}: every table readable; registry and offline store agree "
                f"on {len(batches)} batches"
            )

        _run(checks, "offline store", agreement)
        _run(
            checks,
            "audit log",
            lambda: f"the hash chain verifies ({fs.verify_audit()[0]} entries)",
            "restore the registry from a backup; `featurestore audit show` lists the entries",
        )
        _run(
            checks,
            "keys",
            lambda: _keys(ctx),
            "set the master key the store was made with (FEATURESTORE_MASTER_KEY or keys.master_key_file)",
        )
        _run(
            checks,
            "online store",
            lambda: _online(fs, ctx, online()),
            "start the online store named in featurestore.yaml, or run `featurestore materialize --full`",
        )
        _policies(checks, fs)
    return checks


def _registry(registry: Registry) -> str:
    current, head = registry.current_revision(), registry.head_revision()
    if current != head:
        registry.ensure_current(".")  # raises with the upgrade command
    if problems := registry.integrity_problems():
        raise StoreDamaged(
            f"the registry {registry.safe_url()} fails SQLite's integrity check "
            f"({problems} problems): restore it from a backup, or move it aside and run "
            "`featurestore db upgrade` then `featurestore db recover`"
        )
    return f"{registry.safe_url()} is at the newest revision ({head}) and intact"


def _keys(ctx: StoreContext) -> str:
    opened = sum(len(ctx.keys.keys(kind)) for kind in ("hmac", "siv", "audit"))
    return f"the master key opens all {opened} data keys"


def _online(fs: DiagnosedStore, ctx: StoreContext, online: OnlineService) -> str:
    from .governance import MAINTAIN

    views = fs.materialized_views()
    snapshot = ctx.access.snapshot()
    for ref in views:
        vv = fs.get_view(ref)
        online.probe(ctx.access.grant(snapshot, vv, vv.view.feature_names, "doctor", (MAINTAIN,)), vv)
    return f"reachable; {len(views)} materialized view versions readable"


def _policies(checks: list[Check], fs: DiagnosedStore) -> None:
    statuses = fs.policy_status()
    for status in statuses:
        for problem in status.problems:
            checks.append(
                Check(
                    f"policy {status.policy_id}",
                    "problem",
                    problem,
                    "fix the file (`featurestore policy lint FILE`) or remove it from policies/",
                )
            )
        for file, changes in status.drafts:
            checks.append(
                Check(
                    f"policy {status.policy_id}",
                    "warning",
                    f"{file} differs from the approved version and is not enforced: " + " ".join(changes),
                    "approve it (`featurestore policy approve`) or restore the approved text",
                )
            )
        if status.in_force is None:
            checks.append(
                Check(
                    f"policy {status.policy_id}",
                    "warning",
                    "was never approved, so it governs nothing",
                    "approve it with `featurestore policy approve`",
                )
            )
    if not any(c.name.startswith("policy ") for c in checks):
        in_force = sum(1 for s in statuses if s.in_force is not None)
        checks.append(Check("policies", "ok", f"{in_force} policies in force, no drafts, every file readable"))
