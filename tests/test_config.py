"""Store directories and featurestore.yaml: clear errors naming the line at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurestore import ConfigError, FeatureStore
from featurestore.config import load_config


def test_init_creates_the_layout_and_refuses_to_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "s"
    FeatureStore.init(root).close()
    for name in ["featurestore.yaml", "features", "policies", "registry.db", "offline.duckdb"]:
        assert (root / name).exists(), name
    config = load_config(root.resolve())
    assert config.registry_url == f"sqlite:///{(root / 'registry.db').resolve()}"
    assert config.lock_timeout == 10.0
    with pytest.raises(ConfigError, match=r"already holds a feature store \(featurestore.yaml exists\)"):
        FeatureStore.init(root)


def test_unknown_settings_name_line_column_and_suggestion(tmp_path: Path) -> None:
    root = tmp_path / "s"
    FeatureStore.init(root).close()
    path = root / "featurestore.yaml"
    path.write_text(
        "registry: sqlite:///registry.db\nofline:\n  path: x.duckdb\noffline:\n  pth: y.duckdb\n  lock_timeout_seconds: -1\n"
    )
    with pytest.raises(ConfigError) as info:
        FeatureStore(root)
    assert str(info.value).splitlines() == [
        f"{path.resolve()}:2:1: unknown setting 'ofline'. Did you mean 'offline'?",
        f"{path.resolve()}:5:3: unknown setting 'offline.pth'. Did you mean 'path'?",
        f"{path.resolve()}:6:25: 'lock_timeout_seconds' must be a number of seconds >= 0",
    ]


def test_not_a_store_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"is not a feature store: featurestore.yaml not found\. Create one with `featurestore init"
    ):
        FeatureStore(tmp_path)
    with pytest.raises(ConfigError, match=r"give either a store path, FeatureStore\('dir'\), or memory=True"):
        FeatureStore()
    with pytest.raises(ConfigError, match="give either"):
        FeatureStore(tmp_path, memory=True)


def test_lock_timeout_comes_from_the_config(tmp_path: Path) -> None:
    root = tmp_path / "s"
    FeatureStore.init(root).close()
    text = (root / "featurestore.yaml").read_text().replace("lock_timeout_seconds: 10", "lock_timeout_seconds: 2.5")
    (root / "featurestore.yaml").write_text(text)
    with FeatureStore(root) as fs:
        assert fs.lock_timeout == 2.5
    with FeatureStore(root, lock_timeout=0) as fs:
        assert fs.lock_timeout == 0


@pytest.mark.parametrize("module,extra,section", [("redis", "redis", "online"), ("psycopg", "postgres", "registry")])
def test_a_missing_optional_dependency_names_its_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, extra: str, section: str
) -> None:
    import sys

    from typer.testing import CliRunner

    from featurestore.cli import app

    from .conftest import CUSTOMER, PROFILE

    root = tmp_path / "store"
    with FeatureStore.init(root) as fs:
        fs.apply([CUSTOMER, PROFILE])  # materialize then has a view to write
    config = root / "featurestore.yaml"
    if section == "online":
        config.write_text(
            config.read_text().replace(
                "  type: embedded\n  path: online.db", "  type: redis\n  url: redis://127.0.0.1:6379/15"
            )
        )
        command = ["materialize", "-s", str(root)]
    else:
        config.write_text(
            config.read_text().replace("registry: sqlite:///registry.db", "registry: postgresql://u@127.0.0.1/db")
        )
        command = ["views", "-s", str(root)]
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"needs the '{extra}' extra" in result.output and f"pip install 'featurestore[{extra}]'" in result.output


def test_the_offline_section_names_its_type_and_the_lake(tmp_path: Path) -> None:
    root = tmp_path / "s"
    FeatureStore.init(root).close()
    config = root / "featurestore.yaml"
    text = config.read_text()
    for offline, message in (
        (
            "offline:\n  type: iceberg\n  path: x",
            r"featurestore.yaml:\d+:\d+: 'offline.type' must be duckdb .* or delta",
        ),
        (
            "offline:\n  type: delta",
            r"offline.type is delta but offline.path is missing: give the lake's directory or URI",
        ),
        (
            "offline:\n  type: delta\n  path: lake\n  storage_options: [a]",
            r"'offline.storage_options' must be a mapping",
        ),
    ):
        config.write_text(text.replace("offline:\n  path: offline.duckdb", offline))
        with pytest.raises(ConfigError, match=message):
            load_config(root.resolve())
    config.write_text(
        text.replace(
            "offline:\n  path: offline.duckdb",
            "offline:\n  type: delta\n  path: s3://bucket/features\n  storage_options: {AWS_REGION: eu-west-1}",
        )
    )
    loaded = load_config(root.resolve())
    assert loaded.lake == "s3://bucket/features" and loaded.lake_options == {"AWS_REGION": "eu-west-1"}
    assert loaded.offline_path == root.resolve() / "offline.duckdb", "bookkeeping stays in the store directory"
