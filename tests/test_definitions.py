"""Definitions in YAML and Python: every problem reported at once, with file:line:column."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from featurestore import DefinitionError, Entity, FeatureView
from featurestore.definitions import load_definitions, parse_ttl
from featurestore.refs import FeatureRef

GOOD = """\
entities:
  - name: customer
    description: A customer.
    join_keys:
      customer_id: string
feature_views:
  - name: profile
    entity: customer
    ttl: 30d
    owner: team@example.com
    tags: {domain: growth}
    features:
      age: int64
      score: {type: float64, description: "risk score"}
"""


def write(tmp_path: Path, text: str, name: str = "defs.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_definitions_load(tmp_path: Path) -> None:
    defs = load_definitions([write(tmp_path, GOOD)])
    [entity] = defs.entities
    [view] = defs.views
    assert entity == Entity(name="customer", join_keys={"customer_id": "string"}, description="A customer.")
    assert view.ttl == timedelta(days=30)
    assert view.feature("score").description == "risk score"
    assert view.tags == {"domain": "growth"}
    assert view.timestamp_field == "event_timestamp"


def test_every_problem_is_reported_with_file_line_column_and_suggestion(tmp_path: Path) -> None:
    bad = """\
entities:
  - name: customer
    join_keys:
      customer_id: strin
feature_views:
  - name: profile
    entity: customer
    ttl: 30 days
    ownr: me
    features:
      age: int46
      score: {type: float64, descripton: x}
"""
    path = write(tmp_path, bad)
    with pytest.raises(DefinitionError) as info:
        load_definitions([path])
    found = [str(e) for e in info.value.errors]
    assert found == [
        f"{path}:4:20: entity 'customer': join key 'customer_id' has type 'strin'; a join key must be one of int32, int64, string. Did you mean 'string'?",
        f"{path}:9:5: unknown field 'ownr' in feature view 'profile'. Did you mean 'owner'?",
        f"{path}:12:30: unknown field 'descripton' in feature 'score'. Did you mean 'description'?",
        f"{path}:8:10: feature view 'profile': invalid TTL '30 days'; write a number and a unit like '30d', '12h', '90m' or '1d6h', or an ISO 8601 duration like 'P30D', 'P6M' or 'PT12H' (omit it for no TTL)",
        f"{path}:11:12: feature view 'profile': feature 'age' has unknown type 'int46'; use one of bool, int32, int64, float32, float64, string, date, timestamp. Did you mean 'int64'?",
    ]
    assert str(info.value).startswith("5 problems in the definitions:")


def test_yaml_syntax_error_and_unknown_section(tmp_path: Path) -> None:
    broken = write(tmp_path, "entities:\n  - name: [unclosed\n", "a.yaml")
    typo = write(tmp_path, "feature_veiws: []\n", "b.yaml")
    with pytest.raises(DefinitionError) as info:
        load_definitions([broken, typo])
    found = [str(e) for e in info.value.errors]
    assert found[0].startswith(f"{broken}:3:1: invalid YAML")
    assert found[1] == f"{typo}:1:1: unknown section 'feature_veiws'. Did you mean 'feature_views'?"


def test_duplicate_keys_and_names_are_errors(tmp_path: Path) -> None:
    text = GOOD + "  - name: profile\n    entity: customer\n    features:\n      a: int64\n      a: string\n"
    path = write(tmp_path, text)
    with pytest.raises(DefinitionError) as info:
        load_definitions([path])
    found = [str(e) for e in info.value.errors]
    assert f"{path}:19:7: feature view 'profile': feature 'a' is written twice" in found
    assert "feature view 'profile' is defined more than once" in found


def test_python_constructors_validate() -> None:
    with pytest.raises(
        DefinitionError, match=r"feature view 'v': feature 'x' has unknown type 'flaot64'.*Did you mean 'float64'\?"
    ):
        FeatureView(name="v", entity="e", features={"x": "flaot64"})
    with pytest.raises(DefinitionError, match=r"a feature view needs at least one feature"):
        FeatureView(name="v", entity="e", features={})
    with pytest.raises(DefinitionError, match=r"feature 'event_timestamp' has the name of the timestamp column"):
        FeatureView(name="v", entity="e", features={"event_timestamp": "timestamp"})
    with pytest.raises(DefinitionError, match=r"entity 'e': an entity needs at least one join key"):
        Entity(name="e", join_keys={})
    with pytest.raises(DefinitionError, match=r"invalid name 'Bad-Name'"):
        Entity(name="Bad-Name", join_keys={"id": "int64"})
    with pytest.raises(DefinitionError, match=r"join key 'id' has type 'float64'"):
        Entity(name="e", join_keys={"id": "float64"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        (3600, timedelta(hours=1)),
        (None, None),
        ("P3M", timedelta(days=90)),
        ("P1Y", timedelta(days=365)),
        ("1d6h", timedelta(days=1, hours=6)),
    ],
)
def test_ttl_forms(text: object, expected: timedelta | None) -> None:
    assert parse_ttl(text) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["0d", "-1d", "30 days", "P", "PT", True])
def test_bad_ttls(text: object) -> None:
    with pytest.raises(ValueError):
        parse_ttl(text)  # type: ignore[arg-type]


def test_feature_refs() -> None:
    assert FeatureRef.parse("view:feat") == FeatureRef("view", None, "feat")
    assert FeatureRef.parse("view@v12:feat") == FeatureRef("view", 12, "feat")
    assert FeatureRef.parse("view:*") == FeatureRef("view", None, "*")
    assert str(FeatureRef.parse("view@v2:f")) == "view@v2:f"
    from featurestore import UnknownFeatureError

    for bad in ["view", "view@2:f", "view:f:g", ":f"]:
        with pytest.raises(UnknownFeatureError, match="write 'view:feature', 'view@v2:feature' or 'view:\\*'"):
            FeatureRef.parse(bad)


def test_one_duration_grammar_and_one_printer(tmp_path: Path) -> None:
    """TTLs and policy durations read the same forms; every listing prints a duration the same way."""
    from typer.testing import CliRunner

    from featurestore import FeatureStore
    from featurestore.cli import app
    from featurestore.durations import format_duration, parse_duration
    from featurestore.policy.model import parse_duration as policy_duration

    for text in ("P3M", "30d", "1d6h", "PT12H", "2w", "P1Y6M"):
        assert parse_ttl(text) == policy_duration(text) == parse_duration(text)
    for text in ("0d", "P", "-1d", "3 months", "P1.5D"):
        with pytest.raises(ValueError):
            policy_duration(text)
        with pytest.raises(ValueError):
            parse_ttl(text)
    assert [format_duration(parse_duration(t)) for t in ("2d", "P90D", "36h", "61s")] == [
        "2 days",
        "90 days",
        "1 day 12 hours",
        "1 minute 1 second",
    ]
    root = tmp_path / "store"
    with FeatureStore.init(root) as fs:
        fs.apply(
            [
                Entity(name="e", join_keys={"id": "int64"}),
                FeatureView(name="v", entity="e", ttl="P3M", features={"x": "int64"}),
            ]
        )
        from datetime import UTC, datetime

        import pyarrow as pa

        fs.ingest(
            "v",
            pa.table(
                {
                    "id": pa.array([1], pa.int64()),
                    "event_timestamp": pa.array([datetime(2025, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
                    "x": [1],
                }
            ),
        )
        fs.create_training_set(
            "t",
            pa.table(
                {
                    "id": pa.array([1], pa.int64()),
                    "event_timestamp": pa.array([datetime(2025, 1, 2, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
                }
            ),
            ["v:x"],
        )
    runner = CliRunner()
    views = runner.invoke(app, ["views", "-s", str(root)], terminal_width=200).output
    shown = runner.invoke(app, ["training-set", "show", "t", "-s", str(root)], terminal_width=200).output
    assert "90 days" in views and "90 days" in shown
    assert "0:00:00" not in views and "e+06" not in shown


ONE_PASS = """\
entities:
  - name: driver
    join_keys: {driver_id: int64}
feature_views:
  - name: stats
    entity: drivr
    features: {trips: int46}
  - name: profile
    entity: driver
    ttl: 30 days
    features: {rating: float64}
  - name: trips
    entity: drivre
    features: {count: int64}
"""


def test_every_definition_problem_is_reported_in_one_pass(tmp_path: Path) -> None:
    """A typo in an entity name shows together with the other problems, not after they are fixed."""
    from typer.testing import CliRunner

    from featurestore import FeatureStore
    from featurestore.cli import app

    root = tmp_path / "store"
    FeatureStore.init(root).close()
    path = root / "features" / "drivers.yaml"
    path.write_text(ONE_PASS)
    with FeatureStore(root) as fs:
        with pytest.raises(DefinitionError) as info:
            fs.plan()
    got = [str(e) for e in info.value.errors]
    assert f"{path}:7:23: feature view 'stats': feature 'trips' has unknown type 'int46'; use one of" in got[0]
    assert any(e.startswith(f"{path}:10:10: feature view 'profile': invalid TTL '30 days'") for e in got)
    assert f"{path}:6:13: feature view 'stats' names unknown entity 'drivr'. Did you mean 'driver'?" in got
    assert f"{path}:13:13: feature view 'trips' names unknown entity 'drivre'. Did you mean 'driver'?" in got
    assert len(got) == 4
    result = CliRunner().invoke(app, ["apply", "-s", str(root)])
    assert result.exit_code == 1 and "4 problems in the definitions" in result.output and "drivr" in result.output
