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

from featurestore import FeatureStore, FeatureView
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
    "file_traces": ((MAINTAIN,), ("erasure",), lambda o, g, fs: o.file_traces(g, {"C0"})),
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


def _answer(result: Any) -> Any:
    """What a call answered, in a form to compare: tables by rows, traces by count."""
    if isinstance(result, pa.Table):
        return result.num_rows if "count_star()" not in result.column_names else result.column(0)[0].as_py()
    if isinstance(result, pa.ChunkedArray):
        return sorted(result.to_pylist())
    return result


EXPECTED: dict[str, Any] = {
    "scan": 4,  # items 1-3 and 4
    "query": 4,
    "data_version": (2, 4),  # two batches, four rows
    "stream": 4,
    "join": 2,  # one row per entity row
    "key_counts": {"1": 1},
    "key_counts delete": {"1": 1},
    "stored_keys": [1, 2, 3, 4],
    "older": 4,
    "older delete": 1,  # item 4, three days old
    "treated_columns": (4, set()),
    "rewrite": 4,
    "append": 0,  # an empty batch
    "carry": "fv_stock_v1",
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_right_grant_is_taken_and_answers(fs: FeatureStore, method: str) -> None:
    kinds, tasks, call = METHODS[method]
    answer = _answer(call(fs._ctx.offline, grant(fs, kinds[0], tasks[0] if tasks else "erasure"), fs))
    if method == "file_traces":  # the file store has no files besides its own; the lake's hold no C0 value
        assert all(values in (None, 0) for _path, _bytes, values in answer), answer
        assert (answer == []) == (fs.config.lake is None)
    else:
        assert answer == EXPECTED[method], (method, answer)


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


# --- the door holds for what a grant does not name (found in review) ----------------------------

OTHER = FeatureView(name="other", entity="item", ttl="1d", features={"secret": "int64"})


def _other(fs: FeatureStore) -> None:
    """A second view of the same entity, one row with a value no stock grant may show."""
    fs.apply([ITEM, STOCK, OTHER])
    fs.ingest(
        "other",
        pa.table(
            {
                "item_id": pa.array([1], pa.int64()),
                "event_timestamp": pa.array([T0 - timedelta(hours=1)], pa.timestamp("us", tz="UTC")),
                "secret": pa.array([31337], pa.int64()),
            }
        ),
    )


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM fv_other_v1",
        "SELECT * FROM fv_stock_v1",  # the granted view's own table: every column, rows past retention
        'SELECT qty FROM "fv_stock_v1"',
        f"SELECT (SELECT max(secret) FROM fv_other_v1) FROM {GRANTED}",
        f"WITH g AS (SELECT * FROM {GRANTED}) SELECT * FROM g JOIN main.fv_other_v1 USING (item_id)",
        "SELECT * FROM _fs_batches",
        "SELECT * FROM query_table('fv_other_v1')",
        f"SELECT 1 FROM {GRANTED}; SELECT * FROM fv_other_v1",
        "DELETE FROM fv_stock_v1",
        "WITH a AS (WITH fv_other_v1 AS (SELECT 1 AS x) SELECT * FROM fv_other_v1) SELECT * FROM fv_other_v1, a",
    ],
)
def test_a_granted_read_reads_the_granted_view_and_nothing_else(fs: FeatureStore, sql: str) -> None:
    """query and stream run a capability's SQL; any table but the granted view is refused, so a
    careless capability cannot read past its grant (another view, ungranted columns, retention)."""
    _other(fs)
    offline, narrow = fs._ctx.offline, grant(fs, "offline")
    with pytest.raises(PolicyViolation, match="reads only"):
        offline.query(narrow, sql)
    with pytest.raises(PolicyViolation, match="reads only"):
        with offline.stream(grant(fs, MATERIALIZE), sql, {}, batch_size=10) as (_last, batches):
            list(batches)
    assert _rows(fs) == [(1, 5), (2, 5), (3, 5), (4, 6)], "nothing was changed"
    with_cte = (
        f"WITH _fs_rows AS MATERIALIZED (SELECT * FROM {GRANTED}) SELECT count(*) AS n FROM _fs_rows "
        f"SEMI JOIN (SELECT item_id FROM {GRANTED}) USING (item_id)"
    )
    assert offline.query(narrow, with_cte).to_pylist() == [{"n": 4}]


@pytest.mark.parametrize("task", TASKS)
def test_a_maintain_grant_reads_keys_and_times_never_feature_values(fs: FeatureStore, task: str) -> None:
    """Maintenance is never refused, even on a blocked view, so its grant must not open the values:
    the granted view of a maintain grant holds keys, times and stamps only."""
    columns = fs._ctx.offline.query(grant(fs, MAINTAIN, task), f"SELECT * FROM {GRANTED}").column_names
    assert "item_id" in columns and "event_timestamp" in columns
    assert not {"qty", "price", "seen"} & set(columns), columns


def test_a_join_reads_only_the_features_and_rows_its_grants_cover(fs: FeatureStore) -> None:
    frame, requests = _join_inputs(fs)
    ctx, vv = fs._ctx, fs.get_view("stock@v1")
    only_qty = ctx.access.grant(ctx.access.snapshot(), vv, ["qty"], None, ("offline",))
    wider = dataclasses.replace(requests[0], features=["qty", "price"], outputs=["qty", "price"])
    with pytest.raises(PolicyViolation, match="price"):
        ctx.offline.join([only_qty], frame, [wider], as_of=None, known=False)
    other_keys = dataclasses.replace(requests[0], join_keys=["qty"])
    with pytest.raises(PolicyViolation, match="keys"):
        ctx.offline.join([only_qty], frame, [other_keys], as_of=None, known=False)
    assert ctx.offline.join([only_qty], frame, requests, as_of=None, known=False).num_rows == 2


def test_a_join_keeps_the_grants_retention(tmp_path: Path) -> None:
    """A request that drops the grant's retention cutoff (not_before) is refused: rows past
    retention do not exist for a reader."""
    from featurestore.testing import TEST_KEY_PROVIDER

    from .test_erasure import RETAINED, clock_at, open_store
    from .test_governance import PERSON, VIEW, people

    root = tmp_path / "store"
    FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER).close()
    (root / "policies" / "people.yaml").write_text(RETAINED)
    with open_store(root, clock_at(10)) as store:
        store.apply([PERSON, VIEW])
        store.approve_policy(root / "policies" / "people.yaml", by="A. Counsel", role="legal")
        store.ingest("person", people(["c1"], day=1))
        historical, snapshot = store._caps.historical, store._ctx.access.snapshot()
        at = pa.array([T0.replace(month=6, day=9)], pa.timestamp("us", tz="UTC"))
        entity = pa.table({"customer_id": ["c1"], "event_timestamp": at})
        asked = historical.requests(["person:spend"], entity.column_names, False)
        parts = historical.grant_parts(snapshot, asked, "fraud_detection")
        frame, requests = historical.join_requests(entity, parts, "event_timestamp")
        assert requests[0].not_before is not None, "the policy keeps offline rows 30 days"
        forever = dataclasses.replace(requests[0], not_before=None)
        with pytest.raises(PolicyViolation, match="retention"):
            store._ctx.offline.join([parts[0].grant], frame, [forever], as_of=None, known=False)
        assert store._ctx.offline.join([parts[0].grant], frame, requests, as_of=None, known=False).num_rows == 1


def test_carry_copies_only_an_older_version_of_the_same_view(fs: FeatureStore) -> None:
    """A carry-forward grant for one view cannot fill another view's table (its values would then
    be read under the other view's policy), nor copy columns its grant does not name."""
    _other(fs)
    ctx, other = fs._ctx, fs.get_view("other@v1")
    stock_columns = {"item_id": "int64", "event_timestamp": "timestamp", "qty": "int64"}
    other_columns = {"item_id": "int64", "event_timestamp": "timestamp", "secret": "int64"}
    keys = {"item_id": "item_id", "event_timestamp": "event_timestamp"}
    g = ctx.access.grant(ctx.access.snapshot(), other, other.view.feature_names, "carry_forward", (MAINTAIN,))
    with pytest.raises(PolicyViolation, match="other@v1"):
        ctx.offline.create_table("fv_stock_v9", stock_columns, Carry(g, {**keys, "qty": "secret"}, "event_timestamp"))
    assert ctx.offline.row_counts(["fv_stock_v9"]) == {"fv_stock_v9": 0}
    with pytest.raises(PolicyViolation, match="other@v1"):  # not an older version of itself either
        ctx.offline.create_table(
            "fv_other_v1", other_columns, Carry(g, {**keys, "secret": "secret"}, "event_timestamp")
        )
    narrow = ctx.access.grant(ctx.access.snapshot(), other, [], "carry_forward", (MAINTAIN,))
    with pytest.raises(PolicyViolation, match="secret"):
        ctx.offline.create_table(
            "fv_other_v2", other_columns, Carry(narrow, {**keys, "secret": "secret"}, "event_timestamp")
        )
    carry = Carry(g, {**keys, "secret": "secret"}, "event_timestamp")
    assert ctx.offline.create_table("fv_other_v2", other_columns, carry) == 1


def test_a_rewrite_whose_values_do_not_fit_names_no_value(fs: FeatureStore) -> None:
    """Both engines refuse the same way, and the message quotes no stored or treated value."""
    g = grant(fs, MAINTAIN, "treat_existing")

    def as_text(t: pa.Table) -> pa.Table:
        i = t.column_names.index("qty")
        return t.set_column(i, "qty", pa.array([f"token-{v}" for v in t.column("qty").to_pylist()]))

    with pytest.raises(PolicyViolation, match="do not fit") as refused:
        fs._ctx.offline.rewrite(g, ["qty"], as_text, policy_sha256="sha", at=T0)
    assert "token-" not in str(refused.value)
    assert _rows(fs) == [(1, 5), (2, 5), (3, 5), (4, 6)]
