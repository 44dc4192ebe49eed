"""The offline engine's door: every public method that touches feature rows takes a Grant, and
refuses one of another access kind, another maintenance task or another view version, touching
nothing then. Run on both engines (the DuckDB file and the lake)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from featurestore import FeatureStore
from featurestore.errors import PolicyViolation
from featurestore.governance import MAINTAIN, MATERIALIZE, WRITE, Grant
from featurestore.governance.access import TASKS
from featurestore.offline import GRANTED, Carry, OfflineEngine
from featurestore.offline.pit import ViewRequest

from .test_online import ITEM, STOCK, T0, SetClock, stock

KINDS = ("offline", "online", "reidentify", "dp_aggregates", WRITE, MATERIALIZE, MAINTAIN)


@pytest.fixture(params=["duckdb", "lake"])
def fs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeatureStore]:
    """Items 1-3 (an hour old) and 4 (three days old) in stock@v1."""
    if request.param == "lake":
        pytest.importorskip("deltalake")
        store = FeatureStore.init(tmp_path / "store", lake=str(tmp_path / "lake"), clock=SetClock(T0))
    else:
        store = FeatureStore.init(tmp_path / "store", clock=SetClock(T0))
    with store:
        store.apply([ITEM, STOCK])
        store.ingest("stock", stock([1, 2, 3], T0 - timedelta(hours=1), 5))
        store.ingest("stock", stock([4], T0 - timedelta(days=3), 6))
        yield store


def grant(fs: FeatureStore, kind: str, task: str | None = None) -> Grant:
    ctx, vv = fs._ctx, fs.get_view("stock@v1")
    purpose = task if kind == MAINTAIN else None
    return ctx.access.grant(ctx.access.snapshot(), vv, vv.view.feature_names, purpose, (kind,))


def _join_inputs(fs: FeatureStore) -> tuple[pa.Table, list[ViewRequest]]:
    """The entity frame and requests the historical capability hands an engine for stock:qty."""
    historical = fs._caps.historical
    entity = pa.table({"item_id": [1, 4], "event_timestamp": pa.array([T0, T0], pa.timestamp("us", tz="UTC"))})
    parts = historical.grant_parts(
        fs._ctx.access.snapshot(), historical.requests(["stock:qty"], entity.column_names, False), None
    )
    return historical.join_requests(entity, parts, "event_timestamp")


def _join(offline: OfflineEngine, g: Grant, fs: FeatureStore) -> pa.Table:
    frame, requests = _join_inputs(fs)
    return offline.join([g], frame, requests, as_of=None, known=False)


def _stream(offline: OfflineEngine, g: Grant) -> int:
    with offline.stream(g, f"SELECT * FROM {GRANTED}", {}, batch_size=10) as (_last, batches):
        return sum(b.num_rows for b in batches)


def _append(offline: OfflineEngine, g: Grant) -> int:
    with offline.writing() as writer:
        return writer.append(g, [], batch_id=999, ingested_at=T0)


Call = Callable[[OfflineEngine, Grant, FeatureStore], Any]
METHODS: dict[str, tuple[tuple[str, ...], tuple[str, ...], Call]] = {
    # method: (access kinds it takes, maintenance tasks it takes (empty: any), call)
    "scan": (("offline",), (), lambda o, g, fs: o.scan(g)),
    "query": (
        ("offline", "dp_aggregates", "reidentify", MAINTAIN),
        (),
        lambda o, g, fs: o.query(g, f"SELECT count(*) FROM {GRANTED}"),
    ),
    "data_version": (("offline", "dp_aggregates", "reidentify", MAINTAIN), (), lambda o, g, fs: o.data_version(g)),
    "stream": ((MATERIALIZE,), (), lambda o, g, fs: _stream(o, g)),
    "join": (("offline",), (), _join),
    "key_counts": ((MAINTAIN,), (), lambda o, g, fs: o.key_counts(g, ["1"])),
    "key_counts delete": ((MAINTAIN,), ("erasure",), lambda o, g, fs: o.key_counts(g, ["1"], delete=True)),
    "stored_keys": ((MAINTAIN,), ("erasure", "retention"), lambda o, g, fs: o.stored_keys(g)),
    "older": ((MAINTAIN,), (), lambda o, g, fs: o.older(g, T0)),
    "older delete": ((MAINTAIN,), ("retention",), lambda o, g, fs: o.older(g, T0 - timedelta(days=1), delete=True)),
    "treated_columns": ((MAINTAIN,), ("treat_existing",), lambda o, g, fs: o.treated_columns(g, "sha")),
    "rewrite": (
        (MAINTAIN,),
        ("treat_existing",),
        lambda o, g, fs: o.rewrite(g, ["qty"], lambda t: t, policy_sha256="sha", at=T0),
    ),
    "append": ((WRITE,), (), lambda o, g, fs: _append(o, g)),
    "carry": ((MAINTAIN,), ("carry_forward",), lambda o, g, fs: Carry(g, {}, "event_timestamp").source),
}


def _rows(fs: FeatureStore) -> list[tuple[Any, ...]]:
    g = grant(fs, "offline")
    return sorted(zip(*fs._ctx.offline.scan(g).select(["item_id", "qty"]).to_pydict().values(), strict=True))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_grant_of_another_kind_or_task_is_refused_and_touches_nothing(fs: FeatureStore, method: str) -> None:
    kinds, tasks, call = METHODS[method]
    offline = fs._ctx.offline
    before = _rows(fs)
    refused = 0
    for kind in KINDS:
        for task in TASKS if kind == MAINTAIN else (None,):
            allowed = kind in kinds and (kind != MAINTAIN or not tasks or task in tasks)
            if allowed:
                continue
            with pytest.raises(PolicyViolation, match="cannot be used for"):
                call(offline, grant(fs, kind, task), fs)
            refused += 1
    assert refused >= 2, "every method refuses some grants"
    assert _rows(fs) == before, "a refused call changes no row"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_right_grant_is_taken(fs: FeatureStore, method: str) -> None:
    kinds, tasks, call = METHODS[method]
    call(fs._ctx.offline, grant(fs, kinds[0], tasks[0] if tasks else "erasure"), fs)


def test_a_join_needs_a_grant_for_every_table_it_reads(fs: FeatureStore) -> None:
    frame, requests = _join_inputs(fs)
    stranger = dataclasses.replace(requests[0], table="fv_secret_v1")
    with pytest.raises(PolicyViolation, match="no offline grant covers the offline table fv_secret_v1"):
        fs._ctx.offline.join([grant(fs, "offline")], frame, [*requests, stranger], as_of=None, known=False)
    joined = fs._ctx.offline.join([grant(fs, "offline")], frame, requests, as_of=None, known=False)
    assert joined.num_rows == 2


def test_the_granted_view_holds_only_the_granted_columns(fs: FeatureStore) -> None:
    ctx, vv = fs._ctx, fs.get_view("stock@v1")
    narrow = ctx.access.grant(ctx.access.snapshot(), vv, [], None, ("offline",))
    columns = ctx.offline.query(narrow, f"SELECT * FROM {GRANTED}").column_names
    assert "qty" not in columns and "item_id" in columns, columns
