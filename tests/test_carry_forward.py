"""A schema change that only adds or removes features carries the history forward: the new
version starts with the old version's rows (same event times, ingestion times and batch ids),
offline and online, so old features answer the same before and after the change."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from featurestore import Entity, FeatureStore, FeatureView
from featurestore.registry import Registry
from featurestore.testing import TEST_KEY_PROVIDER, StepClock

from .test_online import ITEM, REDIS_URL, SetClock, redis_store, stock  # noqa: F401  (redis_store is a fixture)

TS = pa.timestamp("us", tz="UTC")
DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})
STATS = FeatureView(name="stats", entity="driver", ttl="400d", features={"trips": "int64", "rating": "float64"})
STATS_V2 = FeatureView(
    name="stats", entity="driver", ttl="400d", features={"trips": "int64", "rating": "float64", "tenure_days": "int64"}
)


def day(n: int, hour: int = 0) -> datetime:
    return datetime(2025, 1, n, hour, tzinfo=UTC)


def rows(ids: list[int], when: list[datetime], trips: list[int], rating: list[float]) -> pa.Table:
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "event_timestamp": pa.array(when, TS),
            "trips": pa.array(trips, pa.int64()),
            "rating": pa.array(rating, pa.float64()),
        }
    )


def history(fs: FeatureStore) -> None:
    """Three batches with the ties the point-in-time rules break: two rows of one (key, event
    time) in one batch (the later row wins), and one (key, event time) again in a later batch."""
    fs.ingest("stats", rows([1, 1, 2, 3], [day(1), day(1), day(2), day(3)], [10, 11, 20, 30], [4.0, 4.1, 4.5, 3.9]))
    fs.ingest("stats", rows([1, 2], [day(5), day(2)], [15, 21], [4.2, 4.6]))
    fs.ingest("stats", rows([3, 4], [day(9), day(9)], [35, 40], [3.8, 5.0]))


SPINE = pa.table(
    {
        "driver_id": pa.array([1, 1, 2, 3, 3, 4, 5], pa.int64()),
        "event_timestamp": pa.array([day(1), day(6), day(2), day(4), day(10), day(8), day(9)], TS),
    }
)


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FeatureStore]:
    root = tmp_path / "store"
    FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER).close()
    with FeatureStore(
        root, clock=StepClock(start=datetime(2025, 2, 1, tzinfo=UTC)), key_provider=TEST_KEY_PROVIDER
    ) as store:
        store.apply([DRIVER, STATS])
        history(store)
        yield store


def bookkeeping(table: pa.Table) -> list[tuple[object, ...]]:
    return list(
        zip(
            *(
                table.column(c).to_pylist()
                for c in ["driver_id", "event_timestamp", "trips", "rating", "_ingested_at", "_batch_id"]
            ),
            strict=True,
        )
    )


def test_adding_a_feature_carries_every_row_forward_with_its_batch_and_ingestion_time(fs: FeatureStore) -> None:
    plan = fs.plan([DRIVER, STATS_V2])
    assert str(plan) == (
        "+ feature view 'stats': schema change (adds tenure_days int64) makes v2; v2 starts with v1's 8 rows; "
        "tenure_days is null for them; v1 and older stay readable by pinned refs like 'stats@v1:...'"
    )
    [change] = fs.apply([DRIVER, STATS_V2]).changes
    assert change.carry_from == 1 and change.version == 2
    v1, v2 = fs.read("stats@v1"), fs.read("stats")
    assert bookkeeping(v2) == bookkeeping(v1) and v2.column("tenure_days").null_count == 8
    batches = fs.list_batches("stats")
    assert len(batches) == 3, "carrying adds no batch: the rows keep the batches they came in"
    for batch in batches:  # time travel: as of each batch, v2 shows what v1 shows
        assert bookkeeping(fs.read("stats", as_of=batch.ingested_at)) == bookkeeping(
            fs.read("stats@v1", as_of=batch.ingested_at)
        )
    entry = fs.audit_entries(action="apply")[-1]
    assert entry.details["carried_rows"] == {"stats@v1": 8}


def test_old_features_join_the_same_through_the_new_version_and_new_ones_fill_in(fs: FeatureStore) -> None:
    before = fs.get_historical_features(SPINE, ["stats:trips", "stats:rating"])
    fs.apply([DRIVER, STATS_V2])
    after = fs.get_historical_features(SPINE, ["stats:trips", "stats:rating"])  # now resolves to v2
    assert after.equals(before)
    assert after.column("trips").to_pylist() == [
        11,
        15,
        21,
        30,
        35,
        None,
        None,
    ]  # in-batch tie: the later row; across batches: the later batch
    as_of = fs.list_batches("stats")[0].ingested_at
    assert fs.get_historical_features(SPINE, ["stats:trips"], as_of=as_of).equals(
        fs.get_historical_features(SPINE, ["stats@v1:trips"], as_of=as_of)
    )
    fs.ingest(
        "stats",
        pa.table(
            {
                "driver_id": pa.array([1], pa.int64()),
                "event_timestamp": pa.array([day(6)], TS),
                "trips": [16],
                "rating": [4.3],
                "tenure_days": [120],
            }
        ),
    )
    joined = fs.get_historical_features(SPINE, ["stats:trips", "stats:tenure_days"])
    assert joined.column("trips").to_pylist() == [11, 16, 21, 30, 35, None, None]
    assert joined.column("tenure_days").to_pylist() == [None, 120, None, None, None, None, None]


def test_a_training_set_built_before_the_change_reproduces_byte_identical(fs: FeatureStore, tmp_path: Path) -> None:
    built = fs.create_training_set("drivers_v1", SPINE, ["stats:*"])
    fs.apply([DRIVER, STATS_V2])
    again = fs.reproduce_training_set("drivers_v1")
    assert again.matches and again.content_hash == built.content_hash
    assert again.table.equals(fs.load_training_set("drivers_v1"))
    rebuilt_on_v2 = fs.get_historical_features(SPINE, ["stats:trips", "stats:rating"])
    assert rebuilt_on_v2.equals(again.table.select(rebuilt_on_v2.column_names))


def online_values(fs: FeatureStore) -> dict[str, list[object]]:
    return fs.get_online_features([{"driver_id": i} for i in range(1, 6)], ["stats:trips", "stats:rating"]).values


def test_online_values_of_old_features_are_unchanged_after_the_change_and_after_materializing(fs: FeatureStore) -> None:
    fs.materialize(end=day(20))
    before = online_values(fs)
    assert before["trips"] == [15, 21, 35, 40, None]
    fs.apply([DRIVER, STATS_V2])
    assert fs.get_view("stats").version == 2
    assert online_values(fs) == before, "the online rows came along: nothing is missing before v2 is materialized"
    new = fs.get_online_features({"driver_id": 1}, ["stats:tenure_days"])
    assert new.values == {"tenure_days": [None]}
    [incremental] = fs.materialize(end=day(21))
    assert not incremental.full and incremental.entities == 0, "the watermark came along too: nothing to recompute"
    assert online_values(fs) == before
    fs.ingest(
        "stats",
        pa.table(
            {
                "driver_id": pa.array([2], pa.int64()),
                "event_timestamp": pa.array([day(12)], TS),
                "trips": [22],
                "rating": [4.7],
                "tenure_days": [30],
            }
        ),
    )
    [incremental] = fs.materialize(end=day(21))
    assert incremental.entities == 1
    assert online_values(fs)["trips"] == [15, 22, 35, 40, None]
    [full] = fs.materialize(full=True, end=day(21))
    assert full.entities == 4 and online_values(fs)["trips"] == [15, 22, 35, 40, None]
    assert fs.check_consistency()[0].mismatches == []


def test_removing_a_feature_carries_the_others_and_a_retype_or_new_key_does_not(fs: FeatureStore) -> None:
    fewer = FeatureView(name="stats", entity="driver", ttl="400d", features={"trips": "int64"})
    [change] = fs.apply([DRIVER, fewer]).changes
    assert change.carry_from == 1 and "v2 starts with v1's 8 rows;" in change.detail and "null" not in change.detail
    assert fs.read("stats").column("trips").to_pylist() == fs.read("stats@v1").column("trips").to_pylist()
    retyped = FeatureView(name="stats", entity="driver", ttl="400d", features={"trips": "float64"})
    [change] = fs.apply([DRIVER, retyped]).changes
    assert change.carry_from is None and fs.read("stats").num_rows == 0
    assert change.detail == (
        "feature view 'stats': schema change (retypes trips int64 -> float64) makes v3, which starts empty: a type change "
        "(trips int64 -> float64) cannot carry v2's 8 rows forward. Backfill by ingesting the history again into v3 "
        "(`featurestore ingest stats FILE`, or store.ingest('stats', ...)); v2 and older stay readable by pinned refs like "
        "'stats@v2:...'"
    )
    fs.ingest(
        "stats",
        pa.table({"driver_id": pa.array([1], pa.int64()), "event_timestamp": pa.array([day(1)], TS), "trips": [1.5]}),
    )
    moved = FeatureView(name="stats", entity="driver", ttl="400d", timestamp_field="at", features={"trips": "float64"})
    assert "a new event time column (event_timestamp -> at) cannot carry v3's 1 rows" in str(fs.plan([DRIVER, moved]))
    other = Entity(name="car", join_keys={"car_id": "string"})
    rekeyed = FeatureView(name="stats", entity="car", ttl="400d", features={"trips": "float64"})
    assert "a change of entity or join keys cannot carry" in str(fs.plan([DRIVER, other, rekeyed]))


def test_a_carried_version_reopens_cleanly_and_is_erased_everywhere(tmp_path: Path, fs: FeatureStore) -> None:
    fs.materialize(end=day(20))
    fs.apply([DRIVER, STATS_V2])
    root = fs.config.root
    assert root is not None
    fs.close()
    assert [c.name for c in FeatureStore.doctor(root, key_provider=TEST_KEY_PROVIDER) if c.status == "problem"] == []
    with FeatureStore(
        root, key_provider=TEST_KEY_PROVIDER
    ) as again:  # the registry/offline agreement check holds after a carry
        assert again.read("stats").num_rows == 8
        [result] = again.erase("driver", ["1"])
        assert result.removed == {
            "offline stats@v1": 3,
            "offline stats@v2": 3,
            "online ov_stats_v1": 1,
            "online ov_stats_v2": 1,
        }
        assert again.where("driver", "1") == {}


def test_an_apply_that_dies_after_the_copy_leaves_an_orphan_the_next_apply_replaces(
    fs: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt("killed between the offline copy and the registry")

    monkeypatch.setattr(Registry, "apply_changes", crash)
    with pytest.raises(KeyboardInterrupt):
        fs.apply([DRIVER, STATS_V2])
    monkeypatch.undo()
    assert fs.get_view("stats").version == 1
    [change] = fs.apply([DRIVER, STATS_V2]).changes
    assert change.version == 2 and fs.read("stats").num_rows == 8


def test_a_table_the_registry_lost_is_never_replaced_even_if_it_was_carried(fs: FeatureStore) -> None:
    fs.apply([DRIVER, STATS_V2])
    fs.ingest(
        "stats",
        pa.table(
            {
                "driver_id": pa.array([9], pa.int64()),
                "event_timestamp": pa.array([day(6)], TS),
                "trips": [1],
                "rating": [1.0],
                "tenure_days": [1],
            }
        ),
    )
    assert fs.config.root is not None
    with duckdb.connect(str(fs.config.root / "offline.duckdb"), read_only=True) as con:
        carried = con.execute("SELECT table_name, source_table, row_count FROM _fs_carried").fetchall()
    assert carried == [("fv_stats_v2", "fv_stats_v1", 8)]
    from featurestore.errors import StoreDamaged

    with pytest.raises(StoreDamaged, match="already holds 9 rows in 1 committed batches of fv_stats_v2"):
        fs._catalog.ctx.offline.create_table("fv_stats_v2", {"driver_id": "int64"})


def test_rows_past_retention_are_not_carried(tmp_path: Path) -> None:
    from .test_erasure import RETAINED, build, clock_at, open_store
    from .test_governance import people

    root = build(tmp_path, compression=None, policy=RETAINED)
    with open_store(root, clock_at(10)) as early:
        early.ingest("person", people(["late1", "late2"], day=9))
    later = StepClock(
        start=datetime(2025, 7, 5, tzinfo=UTC), step=timedelta(milliseconds=1)
    )  # 6-01 is past 30 days, 6-09 is not
    with FeatureStore(root, key_provider=TEST_KEY_PROVIDER, actor="dpo", clock=later) as fs:
        person = fs.get_view("person").view
        fewer = FeatureView(
            name="person",
            entity=person.entity,
            ttl=person.ttl,
            timestamp_field=person.timestamp_field,
            features={f.name: f.dtype for f in person.features if f.name != "iban"},
        )
        [change] = fs.apply([fewer]).changes
        assert change.carry_from == 1
    with duckdb.connect(str(root / "offline.duckdb"), read_only=True) as con:
        counts = dict(
            con.execute(
                "SELECT 'v1', count(*) FROM fv_person_v1 UNION ALL SELECT 'v2', count(*) FROM fv_person_v2"
            ).fetchall()
        )
    assert counts == {"v1": 123, "v2": 2}, "v1's expired rows wait for the retention job; v2 never gets them"


def test_redis_online_rows_carry_forward(redis_store: tuple[FeatureStore, str]) -> None:  # noqa: F811
    store, _prefix = redis_store
    stock_view = FeatureView(name="stock", entity="item", ttl="1d", features={"qty": "int64", "price": "float64"})
    wider = FeatureView(
        name="stock", entity="item", ttl="1d", features={"price": "float64", "qty": "int64", "shelf": "string"}
    )
    store.apply([ITEM, stock_view])
    store.ingest(
        "stock", stock([1, 2, 3], datetime(2025, 3, 1, tzinfo=UTC) - timedelta(hours=1), 6).drop_columns(["seen"])
    )
    store.materialize()
    before = store.get_online_features([{"item_id": i} for i in (1, 2, 3, 4)], ["stock:qty", "stock:price"]).values
    store.apply([ITEM, wider])
    after = store.get_online_features(
        [{"item_id": i} for i in (1, 2, 3, 4)], ["stock:qty", "stock:price", "stock:shelf"]
    ).values
    assert {k: after[k] for k in before} == before and after["shelf"] == [None] * 4
    assert store.get_view("stock").version == 2
