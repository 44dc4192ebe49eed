"""Approving a policy over rows stored raw: refused until asked to treat them; then every stored
copy (offline, online, saved training sets) is treated and the raw bytes are gone from disk."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore import FeatureStore, PolicyViolation
from featurestore.testing import TEST_KEY_PROVIDER

from .test_erasure import clock_at
from .test_governance import PERSON, POLICY, VIEW, people

TS = pa.timestamp("us", tz="UTC")
IDS = ["zq-raw-1", "zq-raw-2", "zq-raw-3"]


def raw_store(tmp_path: Path, lake: str | None = None) -> tuple[Path, FeatureStore]:
    root = tmp_path / "store"
    fs = FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER, clock=clock_at(10), lake=lake)
    fs.apply([PERSON, VIEW])
    fs.ingest("person", people(IDS).drop_columns(["notes"]))  # no policy yet: stored as given
    fs.materialize()
    spine = pa.table({"customer_id": IDS, "event_timestamp": pa.array([datetime(2025, 6, 5, tzinfo=UTC)] * 3, TS)})
    fs.create_training_set("early", spine, ["person:email", "person:spend"])
    (root / "policies" / "people.yaml").write_text(POLICY)
    return root, fs


def raw_bytes(root: Path) -> list[str]:
    """Files under the store that still hold a raw id or e-mail: in their bytes, or (lake files,
    whose pages may be compressed) among their decoded values."""
    from featurestore.offline.lake import strings_in

    needles = [*IDS, "  Person.zq-raw-1@Example.COM "]
    found = []
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        decoded = strings_in(p) if "lake" in p.relative_to(root).parts and p.suffix in (".parquet", ".json") else set()
        if any(n.encode() in p.read_bytes() for n in needles) or decoded & set(needles):
            found.append(str(p.relative_to(root)))
    return sorted(found)


def test_approving_over_raw_rows_is_refused_and_says_how_many(tmp_path: Path) -> None:
    root, fs = raw_store(tmp_path)
    with fs:
        plan = " ".join(fs.plan_policy(root / "policies" / "people.yaml"))
        assert (
            "person@v1 holds 3 rows whose customer_id (keyed_hash), email (keyed_hash), phone (keyed_hash), "
            "birth_date (generalize), postcode (generalize), iban (tokenize) were stored untreated" in plan
        )
        with pytest.raises(PolicyViolation) as info:
            fs.approve_policy(root / "policies" / "people.yaml", by="A. Counsel", role="legal")
        assert "would leave stored values readable untreated: person@v1 holds 3 rows" in str(info.value)
        assert "--treat-existing" in str(info.value)
        assert not fs.policy_snapshot().in_force, "nothing was approved"
        assert IDS[0] not in str(info.value) and "Example.COM" not in str(info.value)


@pytest.mark.parametrize("lake", [None, "lake"], ids=["file", "lake"])
def test_treat_existing_rewrites_every_copy_and_leaves_no_raw_bytes(tmp_path: Path, lake: str | None) -> None:
    root, fs = raw_store(tmp_path, lake)
    with fs:
        before = raw_bytes(root)
        assert before, "the raw values are on disk before"
        assert lake is None or any(p.startswith("lake/") for p in before), "and in the lake's files"
        fs.approve_policy(root / "policies" / "people.yaml", by="A. Counsel", role="legal", treat_existing=True)
        rows = fs.read("person", features=["email", "spend"], purpose="fraud_detection")
        assert rows.num_rows == 3
        assert not set(rows.column("customer_id").to_pylist()) & set(IDS), "keys are pseudonyms now"
        assert all(e.startswith("hmac-1:") for e in rows.column("email").to_pylist())
        assert fs.get_online_features({"customer_id": IDS[0]}, ["person:spend"], purpose="fraud_detection").statuses[
            "spend"
        ] == ["missing"], "the raw online copy is gone until materialized again"
        fs.materialize(full=True)
        assert fs.get_online_features({"customer_id": IDS[0]}, ["person:spend"], purpose="fraud_detection").values[
            "spend"
        ] == [10.0], "the raw key finds the treated row"
        ts = fs.get_training_set("early")
        saved = pq.read_table(root / ts.location)
        assert all(e.startswith("hmac-1:") for e in saved.column("email").to_pylist())
        assert ts.notes[-1]["kind"] == "treatment"
        [entry] = fs.audit_entries(action="treat_existing")
        assert entry.details["rows"] == {"person@v1": 3}
        assert not any("untreated" in line for line in fs.plan_policy(root / "policies" / "people.yaml")), (
            "nothing is left"
        )
    assert raw_bytes(root) == [], "no file holds a raw id or e-mail after the rewrite and compaction"
