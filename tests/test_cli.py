"""The CLI: each command calls one FeatureStore method; errors print a message and exit 1."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

import featurestore.demo  # noqa: F401
from featurestore import FeatureStore
from featurestore.cli import COMMAND_METHODS, app

from .conftest import profile_rows

runner = CliRunner()

DEFS = """\
entities:
  - name: customer
    join_keys: {customer_id: string}
feature_views:
  - name: profile
    entity: customer
    ttl: 30d
    features: {age: int64, score: float64, country: string}
"""


def run(*args: str, ok: bool = True) -> str:
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    return result.output


def all_commands() -> dict[str, Any]:
    """Every leaf command, by its full name ("db upgrade"). typer vendors click privately."""
    root = typer.main.get_command(app)
    found: dict[str, Any] = {}
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        if hasattr(cmd, "commands"):
            for sub, subcmd in cmd.commands.items():
                found[f"{name} {sub}"] = subcmd
        else:
            found[name] = cmd
    return found


def test_every_command_has_help() -> None:
    for name, cmd in all_commands().items():
        assert cmd.help and len(cmd.help.strip()) > 20, f"`featurestore {name}` has no help text"
        output = " ".join(run(*name.split(), "--help").split())
        assert "Usage:" in output
        assert " ".join(cmd.help.split())[:40] in output, f"`featurestore {name} --help` does not show its help"


def test_every_command_takes_the_store_option() -> None:
    for name, cmd in all_commands().items():
        flags = {opt for param in cmd.params for opt in getattr(param, "opts", [])}
        assert {"-s", "--store"} <= flags, f"`featurestore {name}` does not take -s/--store"


def test_init_example_is_a_small_working_store(tmp_path: Path) -> None:
    import shlex

    root = tmp_path / "example"
    output = run("init", "-s", str(root), "--example")
    steps = [line.strip() for line in output.splitlines() if line.strip().startswith("featurestore ")]
    assert len(steps) == 6 and steps[-1].startswith("featurestore get-online")
    key_file = tmp_path / "example.master.key"
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert not any("master" in p.name for p in root.rglob("*key*")), "the master key is outside the store"
    for step in steps:  # exactly the printed commands, in order
        result = runner.invoke(app, shlex.split(step)[1:], terminal_width=200)
        assert result.exit_code == 0, (step, result.output)
    served = result.output
    assert "conv_rate" in served and "present" in served
    with FeatureStore(root) as fs:
        assert (
            fs.read("driver_hourly_stats", purpose="ranking").column("driver_id").to_pylist()[0].startswith("hmac-")
        ), "the example's policy pseudonymizes the driver id"
    again = runner.invoke(app, ["init", str(root), "--example"])
    assert again.exit_code == 1 and "already holds a feature store" in again.output
    both = runner.invoke(app, ["init", str(tmp_path / "a"), "-s", str(tmp_path / "b")])
    assert both.exit_code == 1 and "two directories given" in both.output


def test_a_master_key_is_never_written_into_the_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    FeatureStore.init(root).close()
    refused = runner.invoke(app, ["keys", "generate-master", "--out", str(root / "master.key"), "-s", str(root)])
    assert refused.exit_code == 1 and "inside the store" in refused.output and not (root / "master.key").exists()
    assert runner.invoke(app, ["policy", "schema", "-s", str(root)]).exit_code == 0


def test_commands_mirror_store_methods() -> None:
    assert set(all_commands()) == set(COMMAND_METHODS)
    for name, method in COMMAND_METHODS.items():
        if "." in method:
            module, _, attr = method.rpartition(".")
            assert callable(getattr(importlib.import_module(module), attr)), name
        else:
            assert callable(getattr(FeatureStore, method, None)), f"`{name}` names missing method {method}"


def test_init_apply_ingest_and_listings(tmp_path: Path) -> None:
    store = tmp_path / "s"
    assert f"Created a feature store in {store}" in run("init", str(store))
    (store / "features" / "defs.yaml").write_text(DEFS)
    assert "+ create feature view 'profile' v1 (features: age int64, score float64, country string)" in run(
        "plan", "-s", str(store)
    )
    assert "Applied 2 changes." in run("apply", "-s", str(store))
    assert "No changes: the registry matches the definitions." in run("apply", "-s", str(store))
    data = tmp_path / "rows.parquet"
    pq.write_table(profile_rows(12), data)
    out = run("ingest", "profile", str(data), "-s", str(store))
    assert "Ingested 12 rows into profile@v1 as batch 1 at " in out
    views = run("views", "-s", str(store))
    assert "profile" in views and "v1" in views and "age:int64" in views
    assert "v1" in run("versions", "profile", "-s", str(store))
    batches = run("batches", "-s", str(store))
    assert "profile@v1" in batches and "committed" in batches and "12" in batches
    current = run("db", "current", "-s", str(store))
    assert "up to date" in current
    assert "already at the newest revision" in run("db", "upgrade", "-s", str(store))


def test_errors_print_a_message_and_exit_1_without_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["views", "-s", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "error: " in result.output
    assert "is not a feature store: featurestore.yaml not found. Create one with `featurestore init" in result.output
    assert "Traceback" not in result.output
    store = tmp_path / "s"
    run("init", str(store))
    (store / "features" / "defs.yaml").write_text(DEFS.replace("int64", "int46"))
    result = runner.invoke(app, ["apply", "-s", str(store)])
    assert result.exit_code == 1
    assert "feature 'age' has unknown type 'int46'" in result.output and "Did you mean 'int64'?" in result.output
    result = runner.invoke(app, ["ingest", "profle", str(tmp_path / "x.csv"), "-s", str(store)])
    assert result.exit_code == 1 and "unknown feature view 'profle'" in result.output


def test_db_upgrade_brings_an_empty_registry_to_head(tmp_path: Path) -> None:
    store = tmp_path / "s"
    run("init", str(store))
    (store / "registry.db").unlink()  # a registry database that was never migrated
    result = runner.invoke(app, ["views", "-s", str(store)])
    assert result.exit_code == 1
    assert "has no schema yet, but this version of featurestore needs revision" in result.output
    assert f"Run `featurestore db upgrade --store {store}`" in result.output
    assert "registry revision: none" in run("db", "current", "-s", str(store))
    assert "Upgraded the registry from empty to " in run("db", "upgrade", "-s", str(store))
    assert "up to date" in run("db", "current", "-s", str(store))
    assert "view" in run("views", "-s", str(store))


@pytest.mark.slow
@pytest.mark.xdist_group("spark")  # step 9b starts a local Spark in this process: on the worker of the Spark tests
def test_demo_runs_and_reports(tmp_path: Path) -> None:
    out = run("demo", str(tmp_path / "demo"), "--customers", "50")
    steps = [
        "1. Create a store",
        "2. Write definitions",
        "3. Legal reviews and approves the policy",
        "4. Ingest",
        "5. Reads need an allowed purpose",
        "5b. Only approved content is enforced",
        "6. Bad input is refused whole",
        "7. A schema change makes a new version",
        "8. Time travel on ingestion time",
        "9. A point-in-time training set",
        "9b. Beyond one machine: the lake store",
        "10. Online serving",
        "11. Retention and the right to erasure",
        "12. Differentially private statistics",
        "13. The registry's record",
    ]
    assert [step in out for step in steps] == [True] * len(steps)
    assert "closed mode is on (governance.require_policy: true)" in out
    assert (
        "apply is refused until legal approves: feature view 'customer_profile' cannot be applied: policy 'customer-data'"
        in out
    )
    assert "refusals are audited too: 2 refused reads so far" in out
    assert "an unapproved edit drops customer_profile from the scope; new rows are still hashed: email hmac-1:" in out
    assert "policy status: draft customer-data.yaml pending" in out
    assert (
        "refused: read of 'customer_spend_daily' refused: purpose 'marketing' is denied by policy 'customer-data'"
        in out
    )
    assert "time-zone-naive timestamps" in out
    assert "reproduce_training_set rebuilds it: hash matches" in out
    assert "rows, the same values as the embedded file's join" in out
    assert "Spark over the lake (engine='spark', local[2]): the same values" in out
    assert "lake files decoded: clean" in out
    assert "hash chain intact" in out
    assert "customer_profile@v2 50 checked, 0 mismatches" in out
    assert "where is customer C000001 now? nowhere" in out and "scanned: clean; report customer-" in out
    assert "a late batch with that customer's row: 1 row dropped by the tombstone, 0 stored" in out
    assert (
        "rows are refused: read of 'customer_profile' refused: purpose 'research_statistics' may not have offline access"
        in out
    )
    assert "the same question again: the stored release, no new cost" in out
    assert "budget research_statistics: epsilon 1 spent, 3 of 4 left this 30-day period" in out
    key_file = tmp_path / "demo.master.key"
    assert key_file.stat().st_mode & 0o077 == 0, "the demo's master key is readable by its owner only"
    with FeatureStore(tmp_path / "demo") as fs:
        assert [vv.ref for vv in fs.list_views()] == ["customer_profile@v2", "customer_spend_daily@v1"]
        assert fs.config.require_policy and fs.policy_snapshot().drafts() == []
        stored = fs.read("customer_profile@v1", features=["email", "postcode"], purpose="fraud_detection")
        assert stored.num_rows == 51, (
            "50 customers and 3 rows ingested under the unapproved draft, less the erased customer's 2"
        )
        assert all(e.startswith("hmac-1:") for e in stored.column("email").to_pylist())
        assert {len(p) for p in stored.column("postcode").to_pylist()} == {2}
    result = runner.invoke(app, ["demo", str(tmp_path / "demo"), "--customers", "50"])
    assert result.exit_code == 1 and "is not empty; pass --force" in result.output
    assert "1. Create a store" in run("demo", str(tmp_path / "demo"), "--customers", "50", "--force")
