"""get_historical_features: inputs, outputs, errors; training sets and their reproduction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featurestore import Entity, FeatureStore, FeatureView, NotFoundError, RetrievalError, UnknownFeatureError
from featurestore.cli import app
from featurestore.entity_frames import content_hash

from .conftest import CUSTOMER, JOIN_PLANS, TS, StepClock, join_plan, profile_rows, ts

MERCHANT = Entity(name="merchant", join_keys={"merchant_id": "int64"})
RISK = FeatureView(name="merchant_risk", entity="merchant", features={"risk": "float64", "country": "string"})


def spine(rows: list[tuple[str, int, datetime, int]]) -> pa.Table:
    return pa.table(
        {
            "customer_id": [r[0] for r in rows],
            "merchant_id": pa.array([r[1] for r in rows], pa.int64()),
            "event_timestamp": pa.array([r[2] for r in rows], TS),
            "label": pa.array([r[3] for r in rows], pa.int64()),
        }
    )


@pytest.fixture
def two_entities(store: FeatureStore) -> FeatureStore:
    store.apply([MERCHANT, RISK])
    store.ingest("profile", profile_rows(3))  # c0 at day 1, c1 at day 2, c2 at day 3
    store.ingest(
        "merchant_risk",
        pa.table(
            {
                "merchant_id": pa.array([7, 7, 8], pa.int64()),
                "event_timestamp": pa.array([ts(1), ts(5), ts(2)], TS),
                "risk": [0.1, 0.7, 0.3],
                "country": ["FR", "FR", "NL"],
            }
        ),
    )
    return store


def test_several_views_of_different_entities_in_one_call(two_entities: FeatureStore) -> None:
    entity = spine([("c1", 7, ts(4), 1), ("c0", 7, ts(6), 0), ("c9", 8, ts(1), 1), ("c2", 8, ts(3), 0)])
    result = two_entities.get_historical_features(
        entity, ["profile:age", "merchant_risk:risk", "merchant_risk@v1:country"], full_feature_names=True
    )
    assert result.column_names == [
        "customer_id",
        "merchant_id",
        "event_timestamp",
        "label",
        "profile__age",
        "merchant_risk__risk",
        "merchant_risk__country",
    ]
    assert result.column("profile__age").to_pylist() == [21, 20, None, 22]
    assert result.column("merchant_risk__risk").to_pylist() == [0.1, 0.7, None, 0.3]
    assert result.column("merchant_risk__country").to_pylist() == ["FR", "FR", None, "NL"]
    assert result.schema.field("profile__age").type == pa.int64()


def test_star_reference_and_outputs_convert(two_entities: FeatureStore) -> None:
    entity = spine([("c0", 7, ts(2), 1)]).to_pandas()
    result = two_entities.get_historical_features(entity, ["profile:*"])
    assert result.column_names[-3:] == ["age", "score", "country"]
    frame = result.to_pandas()
    assert frame.loc[0, "age"] == 20 and frame.loc[0, "label"] == 1
    assert pl.from_arrow(result).shape == (1, 7)


def test_parquet_and_polars_entity_frames(two_entities: FeatureStore, tmp_path: Path) -> None:
    entity = spine([("c2", 8, ts(9), 1)])
    pq.write_table(entity, tmp_path / "spine.parquet")
    from_file = two_entities.get_historical_features(tmp_path / "spine.parquet", ["profile:age"])
    from_polars = two_entities.get_historical_features(pl.from_arrow(entity), ["profile:age"])
    assert from_file.column("age").to_pylist() == from_polars.column("age").to_pylist() == [22]


def test_ttl_expiry(two_entities: FeatureStore) -> None:
    late = spine([("c0", 7, ts(1) + timedelta(days=30), 0), ("c0", 7, ts(1) + timedelta(days=30, microseconds=1), 0)])
    assert two_entities.get_historical_features(late, ["profile:age"]).column("age").to_pylist() == [20, None]


def test_bad_requests_have_clear_errors(two_entities: FeatureStore) -> None:
    entity = spine([("c0", 7, ts(2), 1)])
    with pytest.raises(
        RetrievalError,
        match=r"join key 'customer_id' is int64 in entity_df but string in feature view 'profile@v1'; convert it",
    ):
        two_entities.get_historical_features(entity.set_column(0, "customer_id", pa.array([1])), ["profile:age"])
    with pytest.raises(
        RetrievalError, match=r"entity_df has no column 'merchant_id', the join key of feature view 'merchant_risk@v1'"
    ):
        two_entities.get_historical_features(entity.drop_columns(["merchant_id"]), ["merchant_risk:risk"])
    with pytest.raises(
        RetrievalError, match=r"entity_df has no timestamp column 'ts'\. .*Name it with timestamp_column=\.\.\."
    ):
        two_entities.get_historical_features(entity, ["profile:age"], timestamp_column="ts")
    naive = entity.set_column(2, "event_timestamp", pa.array([datetime(2025, 1, 2)]))
    with pytest.raises(
        RetrievalError, match=r"time-zone-naive timestamps; declare their zone, e\.g\. df\['event_timestamp'\] ="
    ):
        two_entities.get_historical_features(naive, ["profile:age"])
    with pytest.raises(
        RetrievalError,
        match=r"two columns would be named 'country': merchant_risk@v1:country and profile@v1:country\. Pass full_feature_names=True",
    ):
        two_entities.get_historical_features(entity, ["profile:country", "merchant_risk:country"])
    with pytest.raises(RetrievalError, match=r"two columns would be named 'label': .* and a column of entity_df"):
        two_entities.apply([FeatureView(name="labels", entity="customer", features={"label": "int64"})])
        two_entities.get_historical_features(entity, ["labels:label"])
    with pytest.raises(UnknownFeatureError, match=r"has no feature 'agee'\. Did you mean 'age'\?"):
        two_entities.get_historical_features(entity, ["profile:agee"])
    with pytest.raises(RetrievalError, match="as_of must be time-zone aware"):
        two_entities.get_historical_features(entity, ["profile:age"], as_of=datetime(2025, 1, 1))


def test_int32_keys_in_the_entity_frame_still_join(two_entities: FeatureStore) -> None:
    entity = spine([("c0", 8, ts(3), 1)]).set_column(1, "merchant_id", pa.array([8], pa.int32()))
    assert two_entities.get_historical_features(entity, ["merchant_risk:risk"]).column("risk").to_pylist() == [0.3]


def test_content_hash_ignores_chunking_and_null_slots() -> None:
    a = pa.table({"x": pa.array([1.5, None, 3.0]), "s": pa.array(["a", None, "c"])})
    b = pa.concat_tables([a.slice(0, 2), a.slice(2)])
    assert content_hash(a) == content_hash(b)
    assert content_hash(a.slice(1)) == content_hash(pa.table({"x": pa.array([None, 3.0]), "s": pa.array([None, "c"])}))
    assert content_hash(a) != content_hash(a.set_column(1, "s", pa.array(["a", "", "c"])))
    assert content_hash(a) != content_hash(a.rename_columns(["y", "s"]))


def test_training_set_reproduces_after_more_ingestion(two_entities: FeatureStore, clock: StepClock) -> None:
    entity = spine([("c0", 7, ts(2), 1), ("c1", 7, ts(6), 0), ("c2", 8, ts(30), 1), ("c0", 8, ts(9), 0)])
    saved = two_entities.create_training_set(
        "fraud_v1", entity, ["profile:age", "profile:score", "merchant_risk:risk"], description="first model"
    )
    assert saved.row_count == 4 and len(saved.content_hash) == 64
    assert saved.as_of == max(b.ingested_at for b in two_entities.list_batches()), (
        "as_of defaults to the last ingestion"
    )
    assert [f["ref"] for f in saved.features] == ["profile@v1:age", "profile@v1:score", "merchant_risk@v1:risk"]
    assert saved.features[0]["ttl_seconds"] == 30 * 86400
    before = two_entities.load_training_set("fraud_v1")
    assert content_hash(before) == saved.content_hash

    # New rows that would change every answer, a new version, and a shorter TTL on the old one.
    two_entities.ingest("profile", profile_rows(3).set_column(2, "age", pa.array([90, 91, 92], pa.int64())))
    two_entities.ingest(
        "merchant_risk",
        pa.table(
            {
                "merchant_id": pa.array([7, 8], pa.int64()),
                "event_timestamp": pa.array([ts(2), ts(2)], TS),
                "risk": [0.99, 0.99],
                "country": ["FR", "NL"],
            }
        ),
    )
    two_entities.apply(
        [
            CUSTOMER,
            FeatureView(
                name="profile",
                entity="customer",
                features={"age": "int64", "score": "float64", "country": "string"},
                ttl="1d",
            ),
        ]
    )
    assert (
        two_entities.get_historical_features(entity, ["profile:age"]).column("age").to_pylist()
        != before.column("age").to_pylist()
    )

    again = two_entities.reproduce_training_set("fraud_v1")
    assert again.matches and again.content_hash == saved.content_hash
    assert again.table.equals(before)


def test_training_set_names_are_unique_and_lookups_suggest(two_entities: FeatureStore) -> None:
    entity = spine([("c0", 7, ts(2), 1)])
    two_entities.create_training_set("churn", entity, ["profile:age"])
    with pytest.raises(RetrievalError, match="a training set named 'churn' exists already"):
        two_entities.create_training_set("churn", entity, ["profile:age"])
    with pytest.raises(NotFoundError, match=r"no training set named 'chrun'\. Did you mean 'churn'\?"):
        two_entities.get_training_set("chrun")
    assert [t.name for t in two_entities.list_training_sets()] == ["churn"]


def test_training_sets_through_the_cli(tmp_path: Path) -> None:
    root = tmp_path / "s"
    clock = StepClock()
    with FeatureStore.init(root, clock=clock) as fs:
        fs.apply([CUSTOMER, FeatureView(name="profile", entity="customer", features={"age": "int64"}, ttl="30d")])
        ingested = fs.ingest("profile", profile_rows(3).select(["customer_id", "event_timestamp", "age"])).ingested_at
    spine_file = tmp_path / "spine.parquet"
    pq.write_table(
        pa.table({"customer_id": ["c0", "c1"], "event_timestamp": pa.array([ts(9), ts(9)], TS), "y": [1, 0]}),
        spine_file,
    )
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, [*args, "-s", str(root)])
        assert result.exit_code == 0, result.output
        return result.output

    out_file = tmp_path / "out.parquet"
    assert "Wrote 2 rows x 4 columns" in run(
        "get-historical", str(spine_file), "-f", "profile:age", "--out", str(out_file)
    )
    assert pq.read_table(out_file).column("age").to_pylist() == [20, 21]
    created = run("training-set", "create", "t1", str(spine_file), "-f", "profile:age")
    assert f"Saved training set 't1': 2 rows, as of {ingested.isoformat()}" in created  # the one ingestion
    assert "t1" in run("training-set", "list")
    shown = run("training-set", "show", "t1")
    assert "- profile@v1:age as age (ttl 30 days)" in shown
    with FeatureStore(root, clock=clock) as fs:
        fs.ingest(
            "profile",
            profile_rows(2).select(["customer_id", "event_timestamp", "age"]).set_column(2, "age", pa.array([50, 51])),
        )
        assert fs.get_historical_features(spine_file, ["profile:age"]).column("age").to_pylist() == [50, 51]
    assert "matches" in run("training-set", "reproduce", "t1")
    future = runner.invoke(
        app,
        [
            "training-set",
            "create",
            "t3",
            str(spine_file),
            "-f",
            "profile:age",
            "--as-of",
            "2099-01-01T00:00:00Z",
            "-s",
            str(root),
        ],
    )
    assert (
        future.exit_code == 1
        and "is in the future: rows ingested until then would change the training set" in future.output
    )
    bad = runner.invoke(
        app,
        [
            "training-set",
            "create",
            "t2",
            str(spine_file),
            "-f",
            "profile:age",
            "--as-of",
            "2030-01-01",
            "-s",
            str(root),
        ],
    )
    assert bad.exit_code == 1 and "has no time zone; add Z or an offset" in bad.output


def test_the_join_plan_follows_the_shape_and_never_the_answer(store: FeatureStore) -> None:
    """A few entity rows against a larger table filter the stored rows by key first; entity rows
    over every key do not. Either way the answer is the same."""
    from unittest import mock

    import featurestore.offline.pit as pit

    store.apply([MERCHANT, RISK])
    ids = list(range(400))
    store.ingest(
        "merchant_risk",
        pa.table(
            {
                "merchant_id": pa.array(ids, pa.int64()),
                "event_timestamp": pa.array([ts(1)] * 400, TS),
                "risk": [i / 10 for i in ids],
                "country": ["NL"] * 400,
            }
        ),
    )
    chosen: list[bool] = []
    real = pit.by_shape

    def spy(count: Callable[[str], int], view: pit.ViewRequest, entities: str = "_fs_entities") -> bool:
        chosen.append(real(count, view, entities))
        return chosen[-1]

    def join(keys: list[int]) -> list[object]:
        entity = pa.table(
            {"merchant_id": pa.array(keys, pa.int64()), "event_timestamp": pa.array([ts(2)] * len(keys), TS)}
        )
        return store.get_historical_features(entity, ["merchant_risk:risk"]).column("risk").to_pylist()

    with mock.patch.object(pit, "by_shape", spy):
        assert join([3, 999]) == [0.3, None] and chosen == [True]
        assert join(ids) == [i / 10 for i in ids] and chosen == [True, False]
    for plan in JOIN_PLANS:
        with join_plan(plan):
            assert join([3, 999]) == [0.3, None] and join(ids) == [i / 10 for i in ids]


@pytest.mark.parametrize("plan", JOIN_PLANS)
def test_a_composite_key_matches_on_every_part(store: FeatureStore, plan: str) -> None:
    store.apply(
        [
            Entity(name="pair", join_keys={"shop": "string", "sku": "int64"}),
            FeatureView(name="stock", entity="pair", features={"qty": "int64"}),
        ]
    )
    store.ingest(
        "stock",
        pa.table(
            {
                "shop": ["a", "a", "b", "ab"],
                "sku": pa.array([1, 11, 1, 1], pa.int64()),
                "event_timestamp": pa.array([ts(1)] * 4, TS),
                "qty": pa.array([10, 20, 30, 40], pa.int64()),
            }
        ),
    )
    entity = pa.table(
        {
            "shop": ["a", "a", "b", "a", None, "ab"],
            "sku": pa.array([1, 11, 1, 2, 1, 1], pa.int64()),
            "event_timestamp": pa.array([ts(2)] * 6, TS),
        }
    )
    with join_plan(plan):
        got = store.get_historical_features(entity, ["stock:qty"]).column("qty").to_pylist()
    assert got == [10, 20, 30, None, None, 40]
