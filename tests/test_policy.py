"""Policy files: golden invalid files with their messages, the schema, the review workflow."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from featurestore import FeatureStore, PolicyError
from featurestore.cli import app
from featurestore.policy import load_policy, policy_json_schema
from featurestore.testing import TEST_KEY_PROVIDER

from .test_governance import PERSON, POLICY, VIEW, people

FIXTURES = Path(__file__).parent / "fixtures" / "policies"
EXAMPLE = Path(__file__).resolve().parents[1] / "policies" / "customer-data.yaml"


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.yaml")))
def test_invalid_policy_files_report_every_problem(name: str) -> None:
    path = FIXTURES / f"{name}.yaml"
    expected = (FIXTURES / f"{name}.expected").read_text().format(f=path).splitlines()
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert [str(e) for e in info.value.errors] == expected


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value.isoformat() if isinstance(value, date) else value


def test_the_example_policy_loads_and_fits_the_published_schema() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.id == "customer-data" and policy.rule("email").treatment == "keyed_hash"
    schema = policy_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(_jsonable(yaml.safe_load(EXAMPLE.read_text())), schema)
    for name in ("typo_treatment", "unknown_kind_and_section"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(_jsonable(yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())), schema)


def test_review_workflow_through_the_cli(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER) as fs:
        policy_file = root / "policies" / "people.yaml"
        policy_file.write_text(POLICY)
        fs.apply([PERSON, VIEW])
    runner = CliRunner(env={"FEATURESTORE_MASTER_KEY": __import__("base64").b64encode(bytes(range(32))).decode()})

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, "-s", str(root)])
        assert result.exit_code == code, result.output
        return result.output

    assert "policy 'people' v1 is valid" in run("policy", "lint", str(policy_file))
    plan = run("policy", "plan", str(policy_file))
    assert "- Policy 'people' v1 has no approved version yet: approving it puts all of it in force." in plan
    assert (
        "- Column email (direct identifier) will be replaced by a keyed hash (after email normalization) before it is stored."
        in plan
    )
    shown = run("policy", "show", str(policy_file))
    assert "**Not approved**" in shown and "| birth_date | quasi identifier | generalized to its year |" in shown
    assert "Approved policy 'people' v1" in run(
        "policy", "approve", str(policy_file), "--by", "A. Counsel", "--role", "legal", "--ticket", "LEGAL-9"
    )
    assert "already approved with this exact content" in run(
        "policy", "approve", str(policy_file), "--by", "B", "--role", "dpo", code=1
    )
    assert "Approved by A. Counsel (legal) on" in run("policy", "show", str(policy_file))

    with FeatureStore(root, key_provider=TEST_KEY_PROVIDER) as fs:
        old_rows = people(["a1", "a2", "a3"], day=1)  # event time 2025-06-01
        fs.ingest("person", old_rows)
    changed = (
        POLICY.replace("version: 1", "version: 2")
        .replace("P400D", "P30D")
        .replace("    customer_support: {access: [reidentify]}\n", "")
        .replace("  spend: non_personal", "  spend: {kind: quasi_identifier, generalize: {width: 5}}")
    )
    policy_file.write_text(changed)
    plan = run("policy", "plan", str(policy_file))
    assert "- Policy 'people' goes from v1 to v2." in plan
    assert (
        "- Column spend: was non personal, kept as is; now quasi identifier, generalized to steps of 5 (data ingested from now on; rows stored before need --treat-existing)."
        in plan
    )
    assert (
        "Stored rows this policy would treat are untreated: person@v1 holds 3 rows whose spend (generalize) were stored untreated."
        in plan
    )
    assert "- Purpose customer_support is revoked: reads for it will be refused." in plan
    assert (
        "- The offline retention is shortened to 30 days (was 400 days): 3 stored rows are older than that and fall out of retention (3 in person)."
        in plan
    )
    spine = tmp_path / "spine.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"customer_id": ["a1"], "event_timestamp": pa.array([old_rows.column("event_timestamp")[0].as_py()])}),
        spine,
    )
    # The draft changes nothing until approved: v1 stays in force, and `policy status` lists the draft.
    ok = run(
        "get-historical",
        str(spine),
        "-f",
        "person:spend",
        "--out",
        str(tmp_path / "o.parquet"),
        "--purpose",
        "customer_support",
        code=1,
    )
    assert "purpose 'customer_support' may not have offline access under policy 'people'" in ok
    status = run("policy", "status")
    assert (
        f"people: v1 in force (approved by A. Counsel; SHA-256 {__import__('hashlib').sha256(POLICY.encode()).hexdigest()[:12]}...), governing person"
        in status
    )
    assert (
        f"draft pending approval: {policy_file}" in status
        and "- Purpose customer_support is revoked: reads for it will be refused." in status
    )
    assert "would leave stored values readable untreated" in run(
        "policy", "approve", str(policy_file), "--by", "A. Counsel", "--role", "legal", code=1
    )
    run("policy", "approve", str(policy_file), "--by", "A. Counsel", "--role", "legal", "--treat-existing")
    ok = run(
        "get-historical",
        str(spine),
        "-f",
        "person:spend",
        "--out",
        str(tmp_path / "o.parquet"),
        "--purpose",
        "fraud_detection",
    )
    assert "Wrote 1 rows" in ok
    assert "no draft pending: the files match the version in force" in run("policy", "status")
    verified = run("audit", "verify")
    assert "its chain is intact" in verified
    shown = run("audit", "show", "--action", "approve_policy")
    assert shown.count("approve_policy") == 2
    listed = run("keys", "list")
    assert "hmac-1" in listed and "siv-1" in listed  # iban is tokenized, so an AES-SIV key exists too
    assert "New hmac key hmac-2" in run("keys", "rotate")
    schema = json.loads(runner.invoke(app, ["policy", "schema"]).output)
    assert schema["title"] == "featurestore data policy"


def test_lint_points_at_a_misspelt_classified_column(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER) as fs:
        fs.apply([PERSON, VIEW])  # applied before any policy exists
        path = root / "policies" / "people.yaml"
        path.write_text(POLICY.replace("  postcode:", "  postcde:"))
        with pytest.raises(PolicyError) as info:
            fs.lint_policy(path)
        assert [str(e) for e in info.value.errors] == [
            f"{path}: column 'postcode' of feature view 'person' is not classified (default deny: the view can be neither applied nor read)",
            f"{path}:14:3: classified column 'postcde' is in none of the governed views. Did you mean 'postcode'?",
        ]
