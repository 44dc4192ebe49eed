"""Schema changes make new versions; old versions stay readable through pinned references."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from featurestore import DefinitionError, Entity, FeatureStore, FeatureView, UnknownFeatureError

from .conftest import CUSTOMER, PROFILE, TS, profile_rows, ts

PROFILE_V2 = FeatureView(
    name="profile",
    entity="customer",
    features={"age": "int64", "score": "float32", "tenure": "int64"},  # drops country, retypes score
    ttl="30d",
    owner="team@example.com",
)


def v2_rows() -> pa.Table:
    return pa.table(
        {
            "customer_id": ["c0"],
            "event_timestamp": pa.array([ts(5)], TS),
            "age": [41],
            "score": pa.array([0.5], pa.float32()),
            "tenure": [100],
        }
    )


def test_schema_change_makes_v2_and_v1_stays_readable(store: FeatureStore) -> None:
    store.ingest("profile", profile_rows(2))
    plan = store.apply([CUSTOMER, PROFILE_V2])
    [change] = plan.changes
    assert change.kind == "new_version" and change.version == 2
    assert str(change) == (
        "+ feature view 'profile': schema change (adds tenure int64; removes country; retypes score "
        "float64 -> float32) makes v2, which starts empty: a type change (score float64 -> float32) cannot carry v1's 2 rows "
        "forward. Backfill by ingesting the history again into v2 (`featurestore ingest profile FILE`, or "
        "store.ingest('profile', ...)); v1 and older stay readable by pinned refs like 'profile@v1:...'"
    )
    assert [vv.version for vv in store.view_versions("profile")] == [1, 2]
    assert store.get_view("profile").version == 2
    store.ingest("profile", v2_rows())

    v1 = store.read("profile@v1")
    assert v1.column("country").to_pylist() == ["DE", "DE"]
    assert v1.column("score").to_pylist() == [0.0, 0.5]
    latest = store.read("profile")
    assert latest.column("tenure").to_pylist() == [100]
    assert "country" not in latest.column_names

    resolved = store.resolve_features(["profile@v1:country", "profile:tenure", "profile@v1:score", "profile:score"])
    assert [(r.ref, r.dtype) for r in resolved] == [
        ("profile@v1:country", "string"),
        ("profile@v2:tenure", "int64"),
        ("profile@v1:score", "float64"),
        ("profile@v2:score", "float32"),
    ]


def test_dropped_feature_never_breaks_silently(store: FeatureStore) -> None:
    store.apply([CUSTOMER, PROFILE_V2])
    with pytest.raises(
        UnknownFeatureError,
        match=r"feature view 'profile' v2 \(latest\) has no feature 'country'\. It is in v1: pin it as 'profile@v1:country'\.",
    ):
        store.resolve_features(["profile:country"])
    with pytest.raises(
        UnknownFeatureError,
        match=r"feature view 'profile' v2 \(latest\) has no feature 'tenur'\. Did you mean 'tenure'\?",
    ):
        store.resolve_features(["profile:tenur"])
    with pytest.raises(UnknownFeatureError, match=r"feature view 'profile' v1 has no feature 'tenure'\."):
        store.read("profile@v1", features=["tenure"])
    assert [r.feature for r in store.resolve_features(["profile@v1:*"])] == ["age", "score", "country"]


def test_metadata_change_updates_in_place_without_new_version(store: FeatureStore) -> None:
    changed = FeatureView(
        name="profile",
        entity="customer",
        features={"country": "string", "age": "int64", "score": "float64"},
        ttl="7d",
        owner="new-owner@example.com",
        description="Profile facts.",
    )
    plan = store.apply([CUSTOMER, changed])
    assert [str(c) for c in plan.changes] == [
        "~ update feature view 'profile' v1: ttl 30 days -> 7 days, owner team@example.com -> new-owner@example.com, description, feature order"
    ]
    vv = store.get_view("profile")
    assert vv.version == 1 and vv.view.owner == "new-owner@example.com"
    assert str(store.plan([CUSTOMER, changed])) == "No changes: the registry matches the definitions."


def test_entity_join_keys_cannot_change(store: FeatureStore) -> None:
    with pytest.raises(
        DefinitionError,
        match=r"entity 'customer' is registered with join keys \(customer_id string\); they cannot change to \(customer_id int64\)\. Define a new entity",
    ):
        store.apply([Entity(name="customer", join_keys={"customer_id": "int64"})])


def test_view_moving_to_an_entity_with_other_keys_makes_a_new_version(store: FeatureStore) -> None:
    account = Entity(name="account", join_keys={"account_id": "int64"})
    moved = FeatureView(
        name="profile", entity="account", features={"age": "int64", "score": "float64", "country": "string"}
    )
    [entity_change, view_change] = store.apply([account, moved]).changes
    assert entity_change.kind == "create_entity"
    assert (
        view_change.kind == "new_version"
        and "entity customer (customer_id string) -> account (account_id int64)" in view_change.detail
    )
    assert store.get_view("profile").join_keys == {"account_id": "int64"}
    assert store.get_view("profile@v1").join_keys == {"customer_id": "string"}


def test_unknown_entity_in_yaml_points_at_the_line(tmp_path: Path) -> None:
    with FeatureStore.init(tmp_path / "s") as fs:
        path = tmp_path / "s" / "features" / "defs.yaml"
        path.write_text(
            "entities:\n  - name: customer\n    join_keys: {customer_id: string}\n"
            "feature_views:\n  - name: profile\n    entity: custmer\n    features: {age: int64}\n"
        )
        with pytest.raises(DefinitionError) as info:
            fs.plan()
        assert [str(e) for e in info.value.errors] == [
            f"{path}:6:13: feature view 'profile' names unknown entity 'custmer'. Did you mean 'customer'?"
        ]


def test_key_used_as_feature_is_refused(store: FeatureStore) -> None:
    clash = FeatureView(name="bad", entity="customer", features={"customer_id": "string"})
    with pytest.raises(
        DefinitionError, match="customer_id is a join key of entity 'customer' and cannot also be a feature"
    ):
        store.apply([clash])


def test_apply_is_idempotent_and_never_deletes(store: FeatureStore) -> None:
    assert store.apply([CUSTOMER, PROFILE]).changes == []
    other = FeatureView(name="other", entity="customer", features={"x": "bool"})
    store.apply([other])
    assert [vv.view.name for vv in store.list_views()] == ["other", "profile"]
    assert store.apply([]).changes == []
    assert [vv.view.name for vv in store.list_views()] == ["other", "profile"]
