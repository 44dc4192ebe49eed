"""Teams on one PostgreSQL registry: each store's project namespaces its registry rows (a schema
``fs_<project>``), so two projects never see each other; a store pointed at another's rows says so."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from featurestore import ConfigError, Entity, FeatureStore, FeatureView, StoreDamaged
from featurestore.cli import app

from .conftest import POSTGRES_URL

TS = pa.timestamp("us", tz="UTC")
DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})
PROFILE = FeatureView(name="driver_profile", entity="driver", features={"rating": "float64"})


def rows(ids: list[int], rating: float) -> pa.Table:
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "event_timestamp": pa.array([datetime(2025, 1, 1, tzinfo=UTC)] * len(ids), TS),
            "rating": [rating] * len(ids),
        }
    )


@pytest.fixture
def projects(postgres_url: str) -> Iterator[tuple[str, str]]:
    """Two fresh project names; their schemas are dropped afterwards."""
    import sqlalchemy as sa

    names = (f"pa_{uuid.uuid4().hex[:10]}", f"pb_{uuid.uuid4().hex[:10]}")
    yield names
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "fs_{name}" CASCADE'))
    admin.dispose()


@pytest.mark.postgres
def test_two_projects_on_one_postgresql_registry_are_isolated(
    tmp_path: Path, postgres_url: str, projects: tuple[str, str]
) -> None:
    a, b = projects
    first = FeatureStore.init(tmp_path / "a", registry_url=postgres_url, project=a)
    second = FeatureStore.init(tmp_path / "b", registry_url=postgres_url, project=b)
    with first, second:
        first.apply([DRIVER, PROFILE])
        first.ingest("driver_profile", rows([1, 2], 4.5))
        second.apply([DRIVER, PROFILE, FeatureView(name="driver_trips", entity="driver", features={"trips": "int64"})])
        batch = second.ingest("driver_profile", rows([7], 3.0))
        assert batch.batch_id == 1, "each project counts its own batches"
        assert [v.view.name for v in first.list_views()] == ["driver_profile"]
        assert first.read("driver_profile").column("driver_id").to_pylist() == [1, 2]
        assert second.read("driver_profile").column("driver_id").to_pylist() == [7]
        assert first.config.registry_url == second.config.registry_url
    for root, ids in ((tmp_path / "a", [1, 2]), (tmp_path / "b", [7])):  # reopened, each still agrees with its registry
        with FeatureStore(root) as fs:
            assert fs.read("driver_profile").column("driver_id").to_pylist() == ids
            assert [b.batch_id for b in fs.list_batches()] == [1]


@pytest.mark.postgres
def test_a_second_store_without_a_project_is_refused_with_the_fix(tmp_path: Path, postgres_url: str) -> None:
    with FeatureStore.init(tmp_path / "a", registry_url=postgres_url) as first:
        first.apply([DRIVER, PROFILE])
        first.ingest("driver_profile", rows([1], 4.5))
    with pytest.raises(StoreDamaged) as info:
        FeatureStore.init(tmp_path / "b", registry_url=postgres_url)
    message = str(info.value)
    assert (
        "the registry records batch 1 as committed (1 rows of fv_driver_profile_v1), but the offline store has no record"
        in message
    )
    assert "another store uses it: stores sharing one registry each need their own `project:`" in message
    assert "check that first, since db recover would make the registry match this offline file" in message
    result = CliRunner().invoke(app, ["views", "-s", str(tmp_path / "b")])
    assert result.exit_code == 1 and "Traceback" not in result.output and "project" in result.output


@pytest.mark.postgres
def test_an_offline_file_of_another_project_is_refused(
    tmp_path: Path, postgres_url: str, projects: tuple[str, str]
) -> None:
    a, b = projects
    FeatureStore.init(tmp_path / "a", registry_url=postgres_url, project=a).close()
    FeatureStore.init(tmp_path / "b", registry_url=postgres_url, project=b).close()
    config = tmp_path / "b" / "featurestore.yaml"
    config.write_text(config.read_text().replace(f"project: {b}", f"project: {a}"))
    with pytest.raises(
        StoreDamaged, match=rf"belongs to project '{b}', but featurestore.yaml says '{a}'.*Set `project: {b}`"
    ):
        FeatureStore(tmp_path / "b")


def test_a_project_name_is_checked(tmp_path: Path) -> None:
    for bad in ("Fraud-Team", "1team", "x" * 41, "a b"):
        with pytest.raises(ConfigError, match="'project' must be lower-case letters, digits and _"):
            FeatureStore.init(tmp_path / f"s{len(bad)}{bad[:1]}", project=bad)
        assert not (tmp_path / f"s{len(bad)}{bad[:1]}" / "featurestore.yaml").exists(), "nothing half-written"
    with FeatureStore.init(tmp_path / "ok", project="fraud_team") as fs:  # on SQLite the project is recorded, harmless
        assert fs.config.project == "fraud_team" and fs.config.registry_schema == "fs_fraud_team"
    result = CliRunner().invoke(app, ["init", str(tmp_path / "cli"), "--project", "risk"])
    assert result.exit_code == 0 and "project: risk" in (tmp_path / "cli" / "featurestore.yaml").read_text()
