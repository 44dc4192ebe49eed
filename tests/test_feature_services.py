"""Feature services: one name for the features a model needs, for training and for serving."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from featurestore import DefinitionError, FeatureService, FeatureStore, UnknownFeatureError
from featurestore.cli import app
from featurestore.testing import TEST_KEY_PROVIDER

from .test_carry_forward import DRIVER, SPINE, STATS, STATS_V2, TS, day, history

FRAUD = FeatureService(name="fraud_v1", features=("stats:trips", "stats@v1:rating"), owner="risk@example.com")


@pytest.fixture
def fs(tmp_path: Path) -> FeatureStore:
    root = tmp_path / "store"
    store = FeatureStore.init(root, clock=lambda: datetime(2025, 2, 1, tzinfo=UTC))
    store.apply([DRIVER, STATS, FRAUD])
    history(store)
    return store


def test_a_service_resolves_the_same_for_training_and_serving(fs: FeatureStore) -> None:
    by_service = fs.get_historical_features(SPINE, "service:fraud_v1")
    by_refs = fs.get_historical_features(SPINE, ["stats:trips", "stats@v1:rating"])
    assert by_service.equals(by_refs)
    assert fs.get_historical_features(SPINE, ["service:fraud_v1"]).equals(by_refs), (
        "a list naming the service works too"
    )
    fs.materialize(end=day(20))
    online = fs.get_online_features([{"driver_id": 1}, {"driver_id": 9}], "service:fraud_v1")
    assert online.values == {"trips": [15, None], "rating": [4.2, None]}
    assert fs.get_online_features([{"driver_id": 1}], ["service:fraud_v1@v1"]).values == {
        "trips": [15],
        "rating": [4.2],
    }


def test_a_training_set_records_the_service_and_its_pins(fs: FeatureStore) -> None:
    ts = fs.create_training_set("fraud_train", SPINE, "service:fraud_v1")
    assert ts.services == {"fraud_v1@v1": ["stats@v1:trips", "stats@v1:rating"]}
    assert fs.get_training_set("fraud_train").services == ts.services
    fs.apply([DRIVER, STATS_V2, FRAUD])  # stats:trips now resolves to v2; the set keeps its pins
    assert fs.reproduce_training_set("fraud_train").matches
    assert [r.ref for r in fs.resolve_features(["service:fraud_v1"])] == ["stats@v2:trips", "stats@v1:rating"]


def test_changing_the_list_makes_a_new_version_and_metadata_changes_in_place(fs: FeatureStore) -> None:
    narrower = FeatureService(name="fraud_v1", features=("stats:trips",), owner="risk@example.com")
    plan = fs.apply([DRIVER, STATS, narrower])
    assert str(plan) == (
        "+ feature service 'fraud_v1': features change (removes stats@v1:rating) makes v2; "
        "v1 stays usable as 'service:fraud_v1@v1'"
    )
    assert [r.ref for r in fs.resolve_features("service:fraud_v1")] == ["stats@v1:trips"]
    assert [r.ref for r in fs.resolve_features("service:fraud_v1@v1")] == ["stats@v1:trips", "stats@v1:rating"]
    moved = FeatureService(
        name="fraud_v1", features=("stats:trips",), owner="fraud@example.com", description="card fraud"
    )
    assert str(fs.apply([DRIVER, STATS, moved])) == "~ update feature service 'fraud_v1' v2: owner, description"
    assert (
        fs.get_feature_service("fraud_v1").version == 2
        and fs.get_feature_service("fraud_v1").service.owner == "fraud@example.com"
    )
    assert fs.plan([DRIVER, STATS, moved]).changes == []
    assert [s.ref for s in fs.list_feature_services()] == ["fraud_v1@v2"]


def test_every_bad_reference_of_a_service_is_reported_at_plan_time(fs: FeatureStore) -> None:
    bad = FeatureService(name="bad", features=("stat:trips", "stats:tripz", "stats@v7:trips", "stats@v1:*"))
    with pytest.raises(DefinitionError) as info:
        fs.plan([DRIVER, STATS, bad])
    text = str(info.value)
    assert "'stat:trips' names unknown feature view 'stat'. Did you mean 'stats'?" in text
    assert "'stats:tripz': feature view 'stats' v1 has no feature 'tripz'. Did you mean 'trips'?" in text
    assert "'stats@v7:trips': feature view 'stats' has no version v7; it has v1 to v1" in text
    assert text.count("feature service 'bad'") == 3, "one problem per bad reference, all in one pass"
    later = FeatureService(name="later", features=("stats:tenure_days",))  # a feature the same apply adds is fine
    assert [c.kind for c in fs.plan([DRIVER, STATS_V2, later]).changes] == ["new_version", "create_service"]
    for features, message in (
        ((), "needs at least one feature reference"),
        (("service:fraud_v1",), "lists view features, not other services"),
        (("stats:trips", "stats:trips"), "is listed twice"),
        (("stats trips",), "invalid feature reference"),
    ):
        with pytest.raises(DefinitionError, match=message):
            FeatureService(name="x", features=features)


def test_unknown_services_are_named_with_a_suggestion(fs: FeatureStore) -> None:
    with pytest.raises(UnknownFeatureError, match=r"unknown feature service 'fraud_v2'\. Did you mean 'fraud_v1'\?"):
        fs.get_historical_features(SPINE, "service:fraud_v2")
    with pytest.raises(UnknownFeatureError, match=r"feature service 'fraud_v1' has no version v3; it has v1 to v1"):
        fs.get_online_features({"driver_id": 1}, "service:fraud_v1@v3")
    with pytest.raises(UnknownFeatureError, match=r"invalid feature service reference"):
        fs.resolve_features(["service:fraud v1"])


YAML = """\
entities:
  - name: driver
    join_keys: {driver_id: int64}
feature_views:
  - name: stats
    entity: driver
    ttl: 400d
    features: {trips: int64, rating: float64}
feature_services:
  - name: fraud_v1
    owner: risk@example.com
    description: The card-fraud model's features.
    features: [stats:trips, "stats@v1:rating"]
  - name: broken
    features: [stats:trips, stats:nope]
    colour: blue
"""


def test_services_in_definition_files_and_the_cli(tmp_path: Path) -> None:
    root = tmp_path / "store"
    FeatureStore.init(root).close()
    (root / "features" / "drivers.yaml").write_text(YAML)
    runner = CliRunner()
    bad = runner.invoke(app, ["plan", "-s", str(root)])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert "drivers.yaml:16:5: unknown field 'colour' in a feature service" in bad.output.replace("\n", " ")
    (root / "features" / "drivers.yaml").write_text(YAML.split("  - name: broken")[0])
    assert runner.invoke(app, ["apply", "-s", str(root)]).exit_code == 0
    listed = runner.invoke(app, ["services", "-s", str(root)], terminal_width=200)
    assert listed.exit_code == 0 and "fraud_v1" in listed.output
    assert "stats@v1:trips," in listed.output and "stats@v1:rating" in listed.output, "what the service resolves to now"
    with FeatureStore(root) as fs:
        assert fs.get_feature_service("fraud_v1").service.description == "The card-fraud model's features."
        fs.ingest(
            "stats",
            pa.table(
                {
                    "driver_id": pa.array([1], pa.int64()),
                    "event_timestamp": pa.array([day(1)], TS),
                    "trips": [3],
                    "rating": [4.0],
                }
            ),
        )
    spine = tmp_path / "spine.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"driver_id": pa.array([1], pa.int64()), "event_timestamp": pa.array([day(2)], TS)}), spine)
    out = tmp_path / "out.parquet"
    got = runner.invoke(
        app, ["get-historical", str(spine), "-f", "service:fraud_v1", "--out", str(out), "-s", str(root)]
    )
    assert got.exit_code == 0, got.output
    assert pq.read_table(out).select(["trips", "rating"]).to_pylist() == [{"trips": 3, "rating": 4.0}]


def test_a_service_is_no_way_around_the_policy(tmp_path: Path) -> None:
    from featurestore import PolicyViolation

    from .test_governance import PERSON, POLICY, VIEW, open_store, people

    root = tmp_path / "store"
    FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER).close()
    (root / "policies" / "people.yaml").write_text(POLICY)
    with open_store(root) as fs:
        fs.apply([PERSON, VIEW, FeatureService(name="risk", features=("person:spend", "person:ethnicity"))])
        fs.approve_policy(root / "policies" / "people.yaml", by="A. Counsel", role="legal")
        fs.ingest("person", people(["c1", "c2"]))
        fs.materialize()
        spine = pa.table({"customer_id": ["c1"], "event_timestamp": pa.array([datetime(2025, 6, 5, tzinfo=UTC)], TS)})
        for purpose, message in (
            (None, "requires a purpose"),
            ("marketing", "denied"),
            ("fraud_detection", "sensitive attribute"),
        ):
            with pytest.raises(PolicyViolation, match=message):
                fs.get_historical_features(spine, "service:risk", purpose=purpose)
            with pytest.raises(PolicyViolation):
                fs.get_online_features({"customer_id": "c1"}, "service:risk", purpose=purpose)
            with pytest.raises(PolicyViolation):
                fs.create_training_set("risk_train", spine, "service:risk", purpose=purpose)
        assert fs.get_historical_features(spine, "service:risk", purpose="fairness_audit").num_rows == 1
        refusals = fs.audit_entries(action="refused")
        assert len(refusals) == 9 and all(e.target == "person@v1" for e in refusals)
