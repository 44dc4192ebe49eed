"""Online serving: materialization, TTL at read time, consistency, concurrency, Redis."""

from __future__ import annotations

import textwrap
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from featurestore import Entity, FeatureStore, FeatureView, NotFoundError
from featurestore.errors import PolicyViolation, RetrievalError
from featurestore.online.lookup import normalize_one
from featurestore.privacy.pseudonymize import normalize
from featurestore.testing import TEST_KEY_PROVIDER

from .children import PATIENCE, read_line, spawn, stop, wait_for, wait_until
from .conftest import REDIS_URL, service_unavailable
from .test_governance import PERSON, POLICY, VIEW, people

TS = pa.timestamp("us", tz="UTC")
T0 = datetime(2025, 3, 1, tzinfo=UTC)
ITEM = Entity(name="item", join_keys={"item_id": "int64"})
STOCK = FeatureView(
    name="stock", entity="item", ttl="1d", features={"qty": "int64", "price": "float64", "seen": "timestamp"}
)


class SetClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def stock(ids: list[int], at: datetime, qty: int) -> pa.Table:
    return pa.table(
        {
            "item_id": pa.array(ids, pa.int64()),
            "event_timestamp": pa.array([at] * len(ids), TS),
            "qty": pa.array([qty] * len(ids), pa.int64()),
            "price": [qty * 1.5] * len(ids),
            "seen": pa.array([at] * len(ids), TS),
        }
    )


@pytest.fixture
def clock() -> SetClock:
    return SetClock(T0)


@pytest.fixture
def store(clock: SetClock) -> FeatureStore:
    fs = FeatureStore(memory=True, clock=clock)
    fs.apply([ITEM, STOCK])
    return fs


def test_materialize_and_read_with_statuses(store: FeatureStore, clock: SetClock) -> None:
    store.ingest("stock", stock([1, 2], T0 - timedelta(hours=2), 5))
    store.ingest("stock", stock([1], T0 - timedelta(hours=1), 7))
    store.ingest("stock", stock([1], T0 - timedelta(hours=3), 99))  # late, older: must not win
    [result] = store.materialize()
    assert (result.view, result.entities, result.full) == ("stock", 2, True)
    response = store.get_online_features([{"item_id": 1}, {"item_id": 2}, {"item_id": 3}], ["stock:qty", "stock:seen"])
    assert response.values == {"qty": [7, 5, None], "seen": [T0 - timedelta(hours=1), T0 - timedelta(hours=2), None]}
    assert response.statuses["qty"] == ["present", "present", "missing"]
    single = store.get_online_features({"item_id": 1}, ["stock:*"])
    assert single.to_dict() == {
        "qty": [7],
        "price": [10.5],
        "seen": [T0 - timedelta(hours=1)],
        "qty__status": ["present"],
        "price__status": ["present"],
        "seen__status": ["present"],
    }
    with pytest.raises(NotFoundError, match=r"stock@v2 is not materialized: run `featurestore materialize stock@v2`"):
        store.apply(
            [ITEM, FeatureView(name="stock", entity="item", ttl="1d", features={"qty": "float64"})]
        )  # not carried
        store.get_online_features({"item_id": 1}, ["stock:qty"])


def test_a_batch_with_a_missing_entity_reads_a_subset_of_the_features(store: FeatureStore) -> None:
    """A blank row (a missing entity) is as wide as the requested columns, a stored row as wide as
    the table: the columns are cut out of both."""
    store.ingest("stock", stock([1, 2], T0 - timedelta(hours=1), 5))
    store.materialize()
    got = store.get_online_features([{"item_id": 1}, {"item_id": 3}, {"item_id": 2}], ["stock:qty"])
    assert (got.values, got.statuses) == ({"qty": [5, None, 5]}, {"qty": ["present", "missing", "present"]})


def test_incremental_materialization_touches_new_batches_only(store: FeatureStore, clock: SetClock) -> None:
    store.ingest("stock", stock([1, 2, 3], T0 - timedelta(hours=5), 1))
    assert store.materialize()[0].entities == 3
    store.ingest("stock", stock([2], T0 - timedelta(hours=1), 2))
    [again] = store.materialize()
    assert (again.entities, again.full) == (1, False), "only item 2 was touched"
    assert store.get_online_features([{"item_id": 1}, {"item_id": 2}], ["stock:qty"]).values["qty"] == [1, 2]
    # A row beyond the last run's end becomes visible once a later end includes it.
    store.ingest("stock", stock([3], T0 + timedelta(hours=1), 3))
    [early] = store.materialize(end=T0)
    assert early.entities == 1 and store.get_online_features({"item_id": 3}, ["stock:qty"]).values["qty"] == [1]
    clock.now = T0 + timedelta(hours=2)
    [later] = store.materialize()
    assert (later.entities, later.full) == (1, False)
    assert store.get_online_features({"item_id": 3}, ["stock:qty"]).values["qty"] == [3]
    [rebuild] = store.materialize(full=True)
    assert (rebuild.entities, rebuild.full) == (3, True)


def test_ttl_is_honoured_at_read_time_like_the_historical_join(store: FeatureStore, clock: SetClock) -> None:
    event = T0 - timedelta(hours=1)
    store.ingest("stock", stock([1], event, 4))
    store.materialize()
    spine = lambda now: pa.table({"item_id": pa.array([1], pa.int64()), "event_timestamp": pa.array([now], TS)})  # noqa: E731
    for now, status in [(event + timedelta(days=1), "present"), (event + timedelta(days=1, microseconds=1), "expired")]:
        clock.now = now
        online = store.get_online_features({"item_id": 1}, ["stock:qty"])
        offline = store.get_historical_features(spine(now), ["stock:qty"]).column("qty").to_pylist()
        assert online.statuses["qty"] == [status]
        assert online.values["qty"] == offline == ([4] if status == "present" else [None])
    assert store.check_consistency()[0].mismatches == []


def test_consistency_check_finds_a_planted_mismatch(clock: SetClock) -> None:
    from featurestore.online.embedded import SQLiteOnlineStore

    online = SQLiteOnlineStore(None)
    store = FeatureStore(memory=True, clock=clock, online_store=online)
    store.apply([ITEM, STOCK])
    store.ingest("stock", stock(list(range(50)), T0 - timedelta(hours=1), 3))
    store.materialize()
    [clean] = store.check_consistency(sample=20)
    assert (clean.checked, clean.mismatches) == (20, [])
    online.write(
        "ov_stock_v1",
        [("7", (T0 - timedelta(hours=1) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1), 3, 99.0, 0)],
        1,
    )
    [report] = store.check_consistency(sample=1000)
    assert report.checked == 50
    assert [(m.key, m.feature, m.online, m.offline) for m in report.mismatches] == [
        ("7", "price", 99.0, 4.5),
        ("7", "seen", datetime(1970, 1, 1, tzinfo=UTC), T0 - timedelta(hours=1)),
    ]
    store.ingest("stock", stock([8], T0 - timedelta(minutes=30), 5))  # ingested, not materialized yet
    assert {m.key for m in store.check_consistency()[0].mismatches} == {"7", "8"}
    store.materialize(full=True)
    assert store.check_consistency()[0].mismatches == []


def test_raw_keys_and_purposes_online(tmp_path: Path) -> None:
    root = tmp_path / "store"
    clock = SetClock(datetime(2025, 6, 5, tzinfo=UTC))  # the rows (2025-06-01) are within the view's 365-day TTL
    with FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER, clock=clock) as fs:
        (root / "policies" / "people.yaml").write_text(POLICY)
        fs.apply([PERSON, VIEW])
        fs.approve_policy(root / "policies" / "people.yaml", by="A. Counsel", role="legal")
        fs.ingest("person", people(["c1", "c2"], spend=3.0))
        fs.rotate_key("hmac")
        fs.ingest("person", people(["c3"], spend=4.0))
        fs.materialize()
        with pytest.raises(PolicyViolation, match=r"purpose 'credit_scoring' is not allowed"):
            fs.get_online_features({"customer_id": "c1"}, ["person:spend"], purpose="credit_scoring")
        with pytest.raises(PolicyViolation, match=r"may not have online access"):
            fs.get_online_features({"customer_id": "c1"}, ["person:spend"], purpose="fairness_audit")
        got = fs.get_online_features(
            [{"customer_id": " C1 "}, {"customer_id": "c3"}, {"customer_id": "c9"}],
            ["person:spend"],
            purpose="fraud_detection",
        )
        assert got.values["spend"] == [3.0, 4.0, None] and got.statuses["spend"][2] == "missing"
        for _ in range(3):
            fs.get_online_features({"customer_id": "c2"}, ["person:spend"], purpose="fraud_detection")
    with FeatureStore(root, key_provider=TEST_KEY_PROVIDER, clock=clock) as fs:
        [entry] = fs.audit_entries(action="online_reads")
        assert (entry.purpose, entry.details) == ("fraud_detection", {"features": ["person@v1:spend"], "entities": 6})


@pytest.mark.parametrize("kind,cc", [("none", None), ("text", None), ("email", None), ("phone", "GB"), ("phone", None)])
def test_single_key_normalization_equals_the_column_one(kind: str, cc: str | None) -> None:
    samples = [
        " Ann@Example.COM ",
        "\u2003X\u00a0",
        "\x1cA\x1d",
        "0044 20 7946-0958",
        "+1 (212) 555.0100",
        "020 7946 0958",
        "ΣΊΣΥΦΟΣ",
        "İstanbul",
        "00",
        "+0 123 456 789",
        "12",
        "abc",
        "+44 20 7946 0958 ext 3",
        "",
    ]
    for value in samples:
        try:
            expected = normalize(pa.array([value]), kind, region=cc).to_pylist()[0]
        except PolicyViolation:
            expected = None
        assert normalize_one(value, kind, cc) == expected, (value, kind)


# A child that reads 21 entities' values again and again until a stop file appears; it adds a
# byte to a progress file after each read, and prints how many values it read and how many of
# them were missing or torn (price is always 1.5 x qty in one materialization).
READER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from featurestore import FeatureStore
    store = FeatureStore(sys.argv[1])
    progress, stop = open(sys.argv[2], "ab", buffering=0), Path(sys.argv[3])
    reads = torn = 0
    while not stop.exists():
        r = store.get_online_features([{"item_id": i} for i in range(0, 2000, 97)], ["stock:qty", "stock:price"])
        for q, p in zip(r.values["qty"], r.values["price"]):
            reads += 1
            if q is None or p != q * 1.5:
                torn += 1
        progress.write(b".")
        if reads == 21:
            print("READY", flush=True)
    print(f"{reads} {torn}", flush=True)
    """
)
RUNS = 8
"""Materializations while the reader reads (the reader reads after each one begins)."""


@pytest.mark.slow
def test_a_process_reads_while_another_materializes(tmp_path: Path) -> None:
    root = tmp_path / "store"
    clock = SetClock(datetime.now(UTC))
    progress, stop_file = tmp_path / "reads", tmp_path / "stop"
    with FeatureStore.init(root, clock=clock) as fs:
        fs.apply([ITEM, STOCK])
        fs.ingest("stock", stock(list(range(2000)), clock.now - timedelta(hours=1), 1))
        fs.materialize()
        reader = spawn(READER, str(root), str(progress), str(stop_file))
        try:
            wait_for(reader, "READY")
            runs = 0
            for _ in range(RUNS):
                before = progress.stat().st_size
                fs.ingest("stock", stock(list(range(2000)), clock.now - timedelta(minutes=30 - runs), runs + 2))
                fs.materialize(full=runs % 2 == 0)
                runs += 1
                # A read that was under way during this materialization, or began after it, has ended.
                wait_until(lambda before=before: progress.stat().st_size > before, "a read after a materialization")
            stop_file.touch()
            out = read_line(reader)
            assert reader.wait(timeout=PATIENCE) == 0
        finally:
            stop(reader)
    reads, torn = map(int, out.split())
    assert runs == RUNS and reads >= 21 * (RUNS + 1), "the reader read before and after every materialization"
    assert torn == 0, f"{torn} of {reads} values were missing or torn while materializing"


@pytest.fixture
def redis_store(tmp_path: Path) -> Iterator[tuple[FeatureStore, str]]:
    """A store whose online store is the test Redis (REDIS_URL) under a key prefix of its own;
    afterwards exactly the keys under that prefix are deleted."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=30)
        client.ping()
    except Exception as exc:  # noqa: BLE001
        service_unavailable(f"Redis at {REDIS_URL}", str(exc))
    prefix = f"fs-test-{uuid.uuid4().hex[:12]}"
    root = tmp_path / "store"
    FeatureStore.init(root).close()
    config = root / "featurestore.yaml"
    config.write_text(
        config.read_text().replace(
            "  type: embedded\n  path: online.db", f"  type: redis\n  url: {REDIS_URL}\n  prefix: {prefix}"
        )
    )
    try:
        yield FeatureStore(root, clock=SetClock(T0), key_provider=TEST_KEY_PROVIDER), prefix
    finally:
        mine = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if mine:
            client.delete(*mine)
        client.close()


def test_redis_online_store(redis_store: tuple[FeatureStore, str]) -> None:
    import redis

    fs, prefix = redis_store
    fs.apply([ITEM, STOCK])
    fs.ingest("stock", stock([1, 2, 3], T0 - timedelta(hours=1), 6))
    fs.materialize()
    client = redis.Redis.from_url(REDIS_URL)
    assert client.exists(f"{prefix}:ov_stock_v1:1"), "the values are in Redis, under the store's prefix"
    got = fs.get_online_features([{"item_id": 1}, {"item_id": 4}], ["stock:qty", "stock:seen"])
    assert got.values == {"qty": [6, None], "seen": [T0 - timedelta(hours=1), None]}
    fs.ingest("stock", stock([2], T0 - timedelta(minutes=5), 8))
    assert fs.materialize()[0].entities == 1
    assert fs.get_online_features({"item_id": 2}, ["stock:qty"]).values["qty"] == [8]
    assert fs.check_consistency()[0].mismatches == []
    fs.ingest("stock", stock([3], T0 - timedelta(minutes=1), 9))
    [rebuild] = fs.materialize(full=True)
    assert rebuild.entities == 3 and fs.check_consistency()[0].mismatches == []
    [erased] = fs.erase("item", ["2"])  # erasure reaches Redis too
    assert erased.removed["online ov_stock_v1"] == 1 and erased.status == "done"
    assert not client.exists(f"{prefix}:ov_stock_v1:2") and b"2" not in client.smembers(f"{prefix}:ov_stock_v1:__keys")
    assert fs.get_online_features({"item_id": 2}, ["stock:qty"]).statuses["qty"] == ["missing"]
    assert fs.where("item", "2") == {}
    fs.close()


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(
    value=st.text(alphabet=st.sampled_from(list("0123456789+-.()/ abcAB\t\u00a0\u2003\x1c\x1fΣİ@")), max_size=20),
    kind=st.sampled_from(["none", "text", "email", "phone"]),
    cc=st.sampled_from([None, "GB", "US"]),
)
def test_single_key_normalization_equals_the_column_one_on_random_text(value: str, kind: str, cc: str | None) -> None:
    try:
        expected = normalize(pa.array([value]), kind, region=cc).to_pylist()[0]
    except PolicyViolation:
        expected = None
    assert normalize_one(value, kind, cc) == expected


SERVE_THEN_HANG = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from featurestore import FeatureStore

    fs = FeatureStore(sys.argv[1], clock=lambda: datetime(2025, 3, 1, tzinfo=UTC))
    for _ in range(int(sys.argv[2])):
        fs.get_online_features({"item_id": 1}, ["stock:qty"])
    print("SERVED", flush=True)
    sys.stdin.readline()  # serves on, idle, until it is killed: nothing here flushes the audit
    """
)


def test_online_reads_reach_the_audit_log_on_their_own_even_under_kill_9(tmp_path: Path) -> None:
    """The serving process's background writer puts its lookups in the audit log while it idles
    (the README says within about a second; how soon depends on the machine, so the test waits for
    the entries themselves): no clean shutdown is needed, and a kill -9 afterwards loses none."""
    root = tmp_path / "store"
    with FeatureStore.init(root, clock=SetClock(T0)) as fs:
        fs.apply([ITEM, STOCK])
        fs.ingest("stock", stock([1, 2], T0 - timedelta(hours=1), 5))
        fs.materialize()

    def audited() -> int:
        with FeatureStore(root) as fs:
            return sum(e.details["entities"] for e in fs.audit_entries(action="online_reads"))

    for lookups in (37, 2_345):
        expected = 37 if lookups == 37 else 37 + 2_345
        child = spawn(SERVE_THEN_HANG, str(root), str(lookups))
        try:
            wait_for(child, "SERVED")
            wait_until(lambda expected=expected: audited() == expected, "the served lookups in the audit log", poll=0.1)
            assert child.poll() is None, "written while the process still serves, not at its exit"
        finally:
            child.kill()  # SIGKILL: no clean shutdown, no atexit, no flush
            child.wait(timeout=PATIENCE)
        served = audited()
        assert served == expected, "every lookup served before the kill is in the audit log"


def test_online_reads_are_written_at_once_every_thousand_lookups(store: FeatureStore) -> None:
    store.ingest("stock", stock([1], T0 - timedelta(hours=1), 5))
    store.materialize()
    for _ in range(999):
        store.get_online_features({"item_id": 1}, ["stock:qty"])
    assert store.audit_entries(action="online_reads") == []
    store.get_online_features([{"item_id": 1}, {"item_id": 2}], ["stock:qty"])
    [entry] = store.audit_entries(action="online_reads")
    assert entry.details == {"features": ["stock@v1:qty"], "entities": 1_001}


def test_online_reads_and_the_consistency_check_agree_on_a_value_ahead_of_now(
    store: FeatureStore, clock: SetClock
) -> None:
    store.ingest("stock", stock([1], T0 - timedelta(hours=1), 3))
    store.ingest("stock", stock([1], T0 + timedelta(hours=2), 4))  # an event after now
    store.materialize(end=T0 + timedelta(hours=3))  # materialized ahead of now: online holds the later row
    online = store.get_online_features({"item_id": 1}, ["stock:qty"])
    assert (online.values["qty"], online.statuses["qty"]) == ([None], ["missing"])
    [report] = store.check_consistency()
    qty = [m for m in report.mismatches if m.feature == "qty"]
    assert [(m.online, m.offline, m.online_status) for m in qty] == [(None, 3, "missing")], "one status rule for both"


def _single_equals_batch(fs: FeatureStore, clock: SetClock | None = None) -> None:
    """One entity answered by the single-entity path equals the same entity in a batch, for
    every status (present, expired, missing, ahead of now), every dtype converter and a None key."""
    refs = ["stock:qty", "stock:price", "stock:seen", "stock:flag"]
    for item in (1, 2, 3, 4, None):
        one = fs.get_online_features({"item_id": item}, refs)
        batch = fs.get_online_features([{"item_id": item}, {"item_id": 1}], refs)
        assert one.values == {k: v[:1] for k, v in batch.values.items()}, item
        assert one.statuses == {k: v[:1] for k, v in batch.statuses.items()}, item
        column = fs.get_online_features({"item_id": [item]}, refs)  # columns of entity rows: the general path
        assert (column.values, column.statuses) == (one.values, one.statuses)
    assert fs.get_online_features({"item_id": 1}, refs).statuses["qty"] == ["present"]
    assert fs.get_online_features({"item_id": 1}, refs).values["flag"] == [True]
    assert fs.get_online_features({"item_id": 2}, refs).statuses["qty"] == ["expired"]
    assert fs.get_online_features({"item_id": 4}, refs).statuses["qty"] == ["missing"]
    for bad in ("1", 1.0, True, 2**63):  # the declared type is enforced on the single path too
        with pytest.raises(RetrievalError, match="join key 'item_id'"):
            fs.get_online_features({"item_id": bad}, refs)
    with pytest.raises(RetrievalError, match="has no 'item_id'"):
        fs.get_online_features({"sku": 1}, refs)
    extra = fs.get_online_features({"item_id": 1, "label": "x"}, refs)  # other columns ride along
    assert extra.values == fs.get_online_features({"item_id": 1}, refs).values
    mixed = [1, None, 2, 4, 1, 3, None, 2]  # every status, gaps and repeats in one batch
    batch = fs.get_online_features([{"item_id": i} for i in mixed], refs)
    for n, item in enumerate(mixed):
        one = fs.get_online_features({"item_id": item}, refs)
        assert {k: v[n] for k, v in batch.values.items()} == {k: v[0] for k, v in one.values.items()}, (n, item)
        assert {k: v[n] for k, v in batch.statuses.items()} == {k: v[0] for k, v in one.statuses.items()}, (n, item)
    for bad in (
        "1",
        1.0,
        True,
        2**63,
        -(2**63) - 1,
        [1],
        {"x": 1},
    ):  # the first bad row is named, in a batch with gaps too
        for around in ([1, 2, 4], [None, 2, None]):
            with pytest.raises(
                RetrievalError, match=r"^entity row 3: join key 'item_id' of stock@v\d+ must be a whole number"
            ):
                fs.get_online_features([{"item_id": k} for k in [*around, bad, 1]], refs)
    with pytest.raises(RetrievalError, match="^entity row 2 has no 'item_id'"):
        fs.get_online_features([{"item_id": 1}, {"item_id": 2}, {"sku": 1}], refs)
    empty = fs.get_online_features([], refs)
    assert empty.values == {k.split(":")[1]: [] for k in refs} and empty.statuses == empty.values


FLAGGED = FeatureView(
    name="stock",
    entity="item",
    ttl="1d",
    features={"qty": "int64", "price": "float64", "seen": "timestamp", "flag": "bool"},
)


def _flagged(ids: list[int], at: datetime, qty: int) -> pa.Table:
    return stock(ids, at, qty).append_column("flag", pa.array([True] * len(ids)))


def _fill_for_single(fs: FeatureStore) -> None:
    fs.apply([ITEM, FLAGGED])
    fs.ingest("stock", _flagged([1], T0 - timedelta(hours=1), 6))
    fs.ingest("stock", _flagged([2], T0 - timedelta(days=2), 7))  # older than the TTL at T0
    fs.ingest("stock", _flagged([3], T0 + timedelta(hours=1), 8))  # ahead of now: missing
    fs.materialize(end=T0 + timedelta(hours=2))


def test_the_single_entity_path_answers_like_a_batch(clock: SetClock) -> None:
    fs = FeatureStore(memory=True, clock=clock)
    _fill_for_single(fs)
    _single_equals_batch(fs)
    assert fs.get_online_features({"item_id": 3}, ["stock:qty"]).statuses["qty"] == ["missing"]


def test_the_single_entity_path_answers_like_a_batch_on_redis(redis_store: tuple[FeatureStore, str]) -> None:
    fs, _ = redis_store
    _fill_for_single(fs)
    _single_equals_batch(fs)
    fs.close()


class _Audit:
    """An audit log that records appends, and can be made to fail (a registry that is down)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str | None, list[str], int]] = []
        self.failing = False
        self.failed_elsewhere = 0
        """Failed appends from threads other than the one that made this log (the writer thread)."""
        self._maker = threading.get_ident()

    def append(self, _actor: str, _action: str, _target: str, *, purpose: str | None, details: dict[str, Any]) -> None:
        if self.failing:
            if threading.get_ident() != self._maker:
                self.failed_elsewhere += 1
            raise RuntimeError("registry down")
        self.entries.append((purpose, details["features"], details["entities"]))


def test_online_reads_from_many_threads_are_all_counted() -> None:
    """Lookups are counted without a lock (a queue): none is lost or counted twice, whatever the
    threads and the writer's flushes in between."""
    from featurestore.online.read_audit import ReadAudit

    audit = _Audit()
    reads = ReadAudit(audit, "tester", background=True)  # type: ignore[arg-type]
    one, batch = ("p", ("v@v1:a",), 1), ("q", ("v@v1:a", "v@v1:b"), 7)

    def serve() -> None:
        for n in range(20_000):
            reads.record_read(one) if n % 2 else reads.record("q", batch[1], 7)

    threads = [threading.Thread(target=serve) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(5):
        reads.flush()  # flushes while the threads count
    for t in threads:
        t.join()
    reads.close()
    totals: dict[str | None, int] = {}
    for purpose, _features, entities in audit.entries:
        totals[purpose] = totals.get(purpose, 0) + entities
    assert totals == {"p": 4 * 10_000, "q": 4 * 10_000 * 7}


def test_online_reads_stay_counted_in_bounded_memory_while_the_audit_log_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from featurestore.online import read_audit

    monkeypatch.setattr(read_audit, "FOLD_QUEUED", 500)
    audit = _Audit()
    audit.failing = True
    reads = read_audit.ReadAudit(audit, "tester", background=True)  # type: ignore[arg-type]
    read = ("p", ("v@v1:a",), 1)
    for _ in range(10_000):
        reads.record_read(read)
        assert len(reads._queue) <= 501
    with pytest.raises(RuntimeError):
        reads.flush()
    failed = audit.failed_elsewhere
    wait_until(lambda: audit.failed_elsewhere > failed, "a failed write by the writer thread")  # it fails too
    assert reads._thread is not None and reads._thread.is_alive(), "and carries on"
    audit.failing = False
    reads.close()
    assert [e[2] for e in audit.entries] == [10_000], "every lookup is written once the registry is back, none twice"


@pytest.mark.parametrize("file", [False, True])
def test_sqlite_writes_never_put_an_older_event_over_a_newer_one(tmp_path: Path, file: bool) -> None:
    """A chunk with no stored row in its key range goes in by a plain INSERT, any other by the
    compare-and-set upsert: the same answer either way, for every mix of stored and new keys."""
    from featurestore.online.embedded import SQLiteOnlineStore

    online = SQLiteOnlineStore(tmp_path / "online.db" if file else None)
    online.ensure_table("t", ["v"])

    def stored() -> dict[str, tuple[int, int, float]]:
        return {
            row[0]: (row[1], row[2], row[3])
            for row in online.read("t", [f"k{i}" for i in range(10)])
            if row is not None
        }

    assert online.write("t", [("k3", 50, 3.0), ("k5", 50, 5.0)], 1, newer_only=True) == 2  # empty: plain insert
    online.write("t", [("k1", 10, 1.0), ("k2", 10, 2.0)], 2, newer_only=True)  # below every stored key: plain insert
    online.write("t", [("k4", 10, 4.0), ("k5", 10, -5.0), ("k6", 60, 6.0)], 2, newer_only=True)  # k5 stored newer: kept
    online.write("t", [("k3", 70, 30.0)], 3, newer_only=True)  # a newer event replaces
    online.write(
        "t", [("k8", 20, 8.0), ("k8", 10, -8.0), ("k9", 5, 9.0)], 4, newer_only=True
    )  # a repeated key: the newer wins
    assert stored() == {
        "k1": (10, 2, 1.0),
        "k2": (10, 2, 2.0),
        "k3": (70, 3, 30.0),
        "k4": (10, 2, 4.0),
        "k5": (50, 2, 5.0),
        "k6": (60, 2, 6.0),
        "k8": (20, 4, 8.0),
        "k9": (5, 4, 9.0),
    }
    online.write("t", [("k1", 1, -1.0), ("k9", 99, 99.0)], 5)  # not newer_only (a rewind): written as given
    assert stored()["k1"] == (1, 5, -1.0) and stored()["k9"] == (99, 5, 99.0)
    online.close()
