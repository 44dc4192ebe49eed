"""Policies enforced: treatments before storage, refusals, PII keys that still join, audit, bytes on disk."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from featurestore import DefinitionError, Entity, FeatureStore, FeatureView
from featurestore.errors import AuditChainBroken, KeyManagementError, PolicyViolation
from featurestore.privacy.keys import StaticKeyProvider
from featurestore.testing import TEST_KEY_PROVIDER, TEST_MASTER_KEY, StepClock, data_key

from .conftest import JOIN_PLANS, join_plan

POLICY = """\
api_version: featurestore.policy/v1
id: people
version: 1
owner: dpo@example.com
legal_basis: legitimate_interest
effective_from: 2026-01-01
review_by: 2027-01-01
scope: {feature_views: [person]}
classification:
  customer_id: {kind: direct_identifier, normalize: text}
  email: {kind: direct_identifier, normalize: email}
  phone: {kind: direct_identifier, normalize: phone, country_code: "44"}
  birth_date: {kind: quasi_identifier, generalize: {to: year}}
  postcode: {kind: quasi_identifier, generalize: {prefix: 3}}
  iban: {kind: direct_identifier, treatment: tokenize}
  ethnicity: sensitive_attribute
  notes: {kind: direct_identifier, treatment: drop}
  spend: non_personal
treatments: {direct_identifier: keyed_hash, quasi_identifier: generalize, sensitive_attribute: keep, non_personal: keep}
purposes:
  allowed:
    fraud_detection: {access: [offline, online]}
    fairness_audit: {access: [offline], sensitive_attributes: true}
    customer_support: {access: [reidentify]}
  denied: [marketing]
retention: {offline: P400D}
"""

PERSON = Entity(name="person_e", join_keys={"customer_id": "string"})
VIEW = FeatureView(
    name="person",
    entity="person_e",
    ttl="365d",
    features={
        "email": "string",
        "phone": "string",
        "birth_date": "date",
        "postcode": "string",
        "iban": "string",
        "ethnicity": "string",
        "spend": "float64",
    },
)
TS = pa.timestamp("us", tz="UTC")


def people(ids: list[str], *, spend: float = 10.0, day: int = 1) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "customer_id": ids,
            "event_timestamp": pa.array([datetime(2025, 6, day, tzinfo=UTC)] * n, TS),
            "email": [f"  Person.{i}@Example.COM " for i in ids],
            "phone": [f"020 7946 {1000 + k:04d}" for k in range(n)],
            "birth_date": pa.array([date(1980, 5, 17)] * n),
            "postcode": ["SW1A 1AA"] * n,
            "iban": [f"GB29NWBK6016133192{k:04d}" for k in range(n)],
            "ethnicity": ["group-a"] * n,
            "spend": [spend] * n,
            "notes": [f"called about {i}" for i in ids],
        }
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    with FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER, actor="tester") as fs:
        (root / "policies" / "people.yaml").write_text(POLICY)
        fs.apply([PERSON, VIEW])
    return root


def open_store(root: Path, clock: StepClock | None = None) -> FeatureStore:
    """The store, on a clock near the test rows (2025-06), so they are within the policy's 400-day retention."""
    clock = clock or StepClock(start=datetime(2025, 6, 10, tzinfo=UTC), step=timedelta(milliseconds=1))
    return FeatureStore(root, key_provider=TEST_KEY_PROVIDER, actor="tester", clock=clock)


@pytest.fixture
def approved(root: Path) -> Path:
    with open_store(root) as fs:
        fs.approve_policy(root / "policies" / "people.yaml", by="A. Counsel", role="legal", ticket="LEGAL-1")
    return root


def hmac_of(fs: FeatureStore, value: str, key_id: str = "hmac-1") -> str:
    key = data_key(fs.config.registry_url, key_id)
    return f"{key_id}:" + hmac.new(key.hmac_text.encode(), value.encode(), hashlib.sha256).hexdigest()[:32]


# --- refusals, each with its message -------------------------------------------------------


def test_unapproved_policy_refuses_writes_and_reads(root: Path) -> None:
    with open_store(root) as fs:
        with pytest.raises(
            PolicyViolation,
            match=r"feature view 'person' can be neither written nor read: policy 'people' \(.*people\.yaml\) names it and is not approved; review it \(`featurestore policy plan .*people\.yaml`\) and approve it \(`featurestore policy approve .*people\.yaml --by NAME --role ROLE`\)$",
        ):
            fs.ingest("person", people(["c1"]))
        with pytest.raises(PolicyViolation, match="names it and is not approved"):
            fs.read("person", purpose="fraud_detection")
        assert fs.list_batches() == []


def test_an_edit_changes_nothing_until_it_is_approved(approved: Path) -> None:
    path = approved / "policies" / "people.yaml"
    path.write_text(POLICY.replace("P400D", "P200D") + "# a comment legal added\n")  # a draft, not approved
    with open_store(approved) as fs:
        assert fs.ingest("person", people(["c1"])).rows == 1, "the approved version stays in force"
        assert fs.read("person", features=["spend"], purpose="fraud_detection").num_rows == 1
        [status] = fs.policy_status()
        assert status.in_force is not None and status.in_force.sha256 == hashlib.sha256(POLICY.encode()).hexdigest()
        [(file, lines)] = status.drafts
        assert file == str(path)
        assert lines == [
            "Warning: the version stays 1 although the content changed; raise it to 2.",
            "The offline retention is shortened to 200 days (was 400 days): 0 stored rows are older than that "
            "and fall out of retention.",
        ]
        with pytest.raises(
            PolicyViolation,
            match=r"policy 'people' v1 is in force; the content changed, so raise 'version' to 2 \(it is 1\) and approve again",
        ):
            fs.approve_policy(path, by="A. Counsel", role="legal")
        path.write_text(POLICY.replace("P400D", "P200D").replace("version: 1", "version: 2"))
        fs.approve_policy(path, by="A. Counsel", role="legal")
        assert fs.policy_snapshot().policy("people").retention.offline == timedelta(days=200)  # type: ignore[union-attr]
        assert fs.policy_status()[0].drafts == []


def test_reads_need_an_allowed_purpose(approved: Path) -> None:
    with open_store(approved) as fs:
        fs.ingest("person", people(["c1"]))
        with pytest.raises(
            PolicyViolation,
            match=r"read of 'person' refused: policy 'people' requires a purpose for every read; pass purpose=\.\.\. \(CLI: --purpose\)",
        ):
            fs.read("person", features=["spend"])
        with pytest.raises(PolicyViolation, match=r"purpose 'marketing' is denied by policy 'people'"):
            fs.read("person", features=["spend"], purpose="marketing")
        with pytest.raises(
            PolicyViolation,
            match=r"purpose 'fraud_detecton' is not allowed by policy 'people' \(allowed: customer_support, fairness_audit, fraud_detection\)\. Did you mean 'fraud_detection'\?",
        ):
            fs.read("person", features=["spend"], purpose="fraud_detecton")
        with pytest.raises(
            PolicyViolation,
            match=r"purpose 'customer_support' may not have offline access under policy 'people' \(it has: reidentify\)",
        ):
            fs.read("person", features=["spend"], purpose="customer_support")
        with pytest.raises(
            PolicyViolation,
            match=r"ethnicity is a sensitive attribute that policy 'people' releases only for fairness_audit, not for 'fraud_detection'",
        ):
            fs.read("person", features=["ethnicity"], purpose="fraud_detection")
        spine = pa.table({"customer_id": ["c1"], "event_timestamp": pa.array([datetime(2025, 7, 1, tzinfo=UTC)], TS)})
        with pytest.raises(PolicyViolation, match="requires a purpose"):
            fs.get_historical_features(spine, ["person:spend"])
        assert fs.read("person", features=["ethnicity"], purpose="fairness_audit").column("ethnicity").to_pylist() == [
            "group-a"
        ]


def test_unclassified_column_fails_apply(approved: Path) -> None:
    with open_store(approved) as fs:
        extra = FeatureView(
            name="person", entity="person_e", features={**{f.name: f.dtype for f in VIEW.features}, "income": "float64"}
        )
        with pytest.raises(
            DefinitionError,
            match=r"column 'income' of feature view 'person' is not classified in policy 'people' \(.*people\.yaml\); add it under 'classification' \(default deny\)",
        ):
            fs.apply([PERSON, extra])
        hashed_int = FeatureView(name="person", entity="person_e", features={"email": "int64", "spend": "float64"})
        with pytest.raises(
            DefinitionError,
            match=r"column 'email' of feature view 'person' is stored as a keyed hash under policy 'people', so declare it 'string' \(it is int64\)",
        ):
            fs.apply([PERSON, hashed_int])
        dropped = FeatureView(name="person", entity="person_e", features={"notes": "string", "spend": "float64"})
        with pytest.raises(
            DefinitionError,
            match=r"column 'notes' of feature view 'person' is dropped by policy 'people'; remove it from the view",
        ):
            fs.apply([PERSON, dropped])


# --- treatments ------------------------------------------------------------------------------


def test_treatments_are_applied_before_storage(approved: Path) -> None:
    with open_store(approved) as fs:
        fs.ingest("person", people(["C1", "c2"]))
        stored = fs.read("person", purpose="fairness_audit")
        assert "notes" not in stored.column_names
        assert stored.column("customer_id").to_pylist() == [hmac_of(fs, "c1"), hmac_of(fs, "c2")]  # normalized: text
        assert stored.column("email").to_pylist() == [
            hmac_of(fs, "person.c1@example.com"),
            hmac_of(fs, "person.c2@example.com"),
        ]
        assert stored.column("phone").to_pylist() == [hmac_of(fs, "+442079461000"), hmac_of(fs, "+442079461001")]
        assert stored.column("birth_date").to_pylist() == [date(1980, 1, 1)] * 2
        assert stored.column("postcode").to_pylist() == ["SW1"] * 2
        token = stored.column("iban")[0].as_py()
        assert token.startswith("siv-1:") and "GB29" not in token
        assert stored.column("spend").to_pylist() == [10.0, 10.0]
        with pytest.raises(
            PolicyViolation,
            match=r"re-identification refused: purpose 'fraud_detection' may not have reidentify access",
        ):
            fs.reidentify("person", "iban", token, purpose="fraud_detection")
        assert fs.reidentify("person", "iban", token, purpose="customer_support") == "GB29NWBK60161331920000"
        with pytest.raises(PolicyViolation, match="column 'email' of 'person' is not tokenized"):
            fs.reidentify("person", "email", token, purpose="customer_support")


def test_a_token_opens_only_through_the_view_it_was_made_for(tmp_path: Path) -> None:
    """Two views, two policies that both allow re-identification of their own `iban`: a token of
    one view's column does not open through the other, nor through a renamed copy of the view."""
    root = tmp_path / "store"
    FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER).close()
    other_view = FeatureView(
        name="person_copy", entity="person_e", ttl="365d", features={f.name: f.dtype for f in VIEW.features}
    )
    (root / "policies" / "people.yaml").write_text(POLICY)
    (root / "policies" / "copy.yaml").write_text(
        POLICY.replace("id: people", "id: people_copy").replace(
            "scope: {feature_views: [person]}", "scope: {feature_views: [person_copy]}"
        )
    )
    with open_store(root) as fs:
        fs.apply([PERSON, VIEW, other_view])
        for name in ("people.yaml", "copy.yaml"):
            fs.approve_policy(root / "policies" / name, by="A. Counsel", role="legal")
        fs.ingest("person", people(["c1"]))
        fs.ingest("person_copy", people(["c1"]))
        token = fs.read("person", features=["iban"], purpose="fraud_detection").column("iban")[0].as_py()
        copy_token = fs.read("person_copy", features=["iban"], purpose="fraud_detection").column("iban")[0].as_py()
        assert token != copy_token, "the same value has a different token in each view"
        assert fs.reidentify("person", "iban", token, purpose="customer_support") == "GB29NWBK60161331920000"
        with pytest.raises(PolicyViolation, match="not a token of people_copy/person_copy/iban made with key 'siv-1'"):
            fs.reidentify("person_copy", "iban", token, purpose="customer_support")
        with pytest.raises(PolicyViolation, match="not a token of people/person/iban"):
            fs.reidentify("person", "iban", copy_token, purpose="customer_support")
        refused = [e for e in fs.audit_entries(action="reidentify")]
        assert len(refused) == 1, "only the re-identification that worked is recorded as one"


def test_bad_phone_number_refuses_the_batch_without_storing_the_value(approved: Path) -> None:
    with open_store(approved) as fs:
        data = people(["c1", "c2"]).set_column(3, "phone", pa.array(["020 7946 0000", "12"]))
        with pytest.raises(PolicyViolation, match="column .phone., row 1: not a valid phone number"):
            fs.ingest("person", data)
        [batch] = fs.list_batches()
        assert batch.status == "aborted"
        assert batch.error == "PolicyViolation: details withheld, the view is governed by policy 'people'"


# --- PII join keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("plan", JOIN_PLANS)
def test_raw_keys_join_hashed_keys_across_a_rotation(approved: Path, plan: str) -> None:
    clock = StepClock(start=datetime(2025, 6, 2, tzinfo=UTC), step=timedelta(seconds=1))
    with open_store(approved, clock) as fs, join_plan(plan):
        fs.ingest("person", people(["c1", "c2"], spend=1.0, day=1))  # ingested 2025-06-02
        new_id = fs.rotate_key("hmac")
        assert new_id == "hmac-2"
        clock.now = datetime(2025, 6, 6, tzinfo=UTC)
        fs.ingest("person", people(["c2"], spend=2.0, day=5))  # c2 again, under the new key, ingested 06-06
        stored = fs.read("person", features=["spend"], purpose="fraud_detection")
        assert [k.split(":")[0] for k in stored.column("customer_id").to_pylist()] == ["hmac-1", "hmac-1", "hmac-2"]
        spine = pa.table(
            {
                "customer_id": [" C1 ", "c2", "c2", "c2", "c3"],
                "event_timestamp": pa.array(
                    [
                        datetime(2025, 7, 1, tzinfo=UTC),
                        datetime(2025, 6, 3, tzinfo=UTC),
                        datetime(2025, 6, 5, 12, tzinfo=UTC),
                        datetime(2025, 7, 1, tzinfo=UTC),
                        datetime(2025, 7, 1, tzinfo=UTC),
                    ],
                    TS,
                ),
                "label": [1, 0, 1, 1, 0],
            }
        )
        for known, expected in ((False, [1.0, 1.0, 2.0, 2.0, None]), (True, [1.0, 1.0, 1.0, 2.0, None])):
            result = fs.get_historical_features(
                spine, ["person:spend"], purpose="fraud_detection", known_at_prediction_time=known
            )
            assert result.column("spend").to_pylist() == expected, f"known_at_prediction_time={known}"
            assert result.column("customer_id").to_pylist() == [" C1 ", "c2", "c2", "c2", "c3"], (
                "raw keys come back as given"
            )
        saved = fs.create_training_set("fraud", spine, ["person:spend"], purpose="fraud_detection")
        policy_hash = hashlib.sha256((approved / "policies" / "people.yaml").read_bytes()).hexdigest()
        assert saved.policy_hashes == [f"people@{policy_hash}"] and saved.purpose == "fraud_detection"
        assert fs.reproduce_training_set("fraud", purpose="fraud_detection").matches


def test_wrong_or_missing_master_key_is_a_clear_error(approved: Path) -> None:
    with open_store(approved) as fs:
        fs.ingest("person", people(["c1"]))
    other = StaticKeyProvider(bytes(32))
    with FeatureStore(approved, key_provider=other) as fs:
        with pytest.raises(KeyManagementError, match="the master key does not open data key '(hmac|siv)-1'"):
            fs.ingest("person", people(["c2"]))
        with pytest.raises(KeyManagementError, match="the master key does not open data key 'hmac-1'"):
            fs.rotate_key("hmac")
    with FeatureStore(approved) as fs:  # no provider: the environment, here without the variable
        import os

        if "FEATURESTORE_MASTER_KEY" not in os.environ:
            with pytest.raises(
                KeyManagementError, match="no master key: set the environment variable FEATURESTORE_MASTER_KEY"
            ):
                fs.ingest("person", people(["c2"]))


# --- audit -----------------------------------------------------------------------------------


def test_audit_log_records_and_detects_tampering(approved: Path) -> None:
    with open_store(approved) as fs:
        fs.ingest("person", people(["zq-person-1"]))
        fs.read("person", features=["spend"], purpose="fraud_detection")
        token = fs.read("person", features=["iban"], purpose="fraud_detection").column("iban")[0].as_py()
        fs.reidentify("person", "iban", token, purpose="customer_support")
        fs.rotate_key("hmac")
        actions = [e.action for e in fs.audit_entries()]
        assert actions == ["apply", "approve_policy", "ingest", "read", "read", "reidentify", "rotate_key"]
        approval = fs.audit_entries(action="approve_policy")[0]
        assert approval.actor == "A. Counsel" and approval.details["ticket"] == "LEGAL-1"
        read = fs.audit_entries(action="read")[0]
        assert (read.actor, read.purpose, read.details) == (
            "tester",
            "fraud_detection",
            {"features": ["spend"], "rows": 1},
        )
        everything = json.dumps([e.__dict__ for e in fs.audit_entries()], default=str)
        for raw in ["zq-person-1", "person.zq-person-1@example.com", "GB29NWBK", "7946", "SW1A"]:
            assert raw.lower() not in everything.lower(), f"raw identifier {raw!r} in the audit log"
        count, head = fs.verify_audit()
        assert count == 7
    engine = sa.create_engine(f"sqlite:///{approved / 'registry.db'}")

    def tampered(sql: str) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(sql))

    with open_store(approved) as fs:
        tampered("UPDATE audit_log SET purpose = 'fairness_audit' WHERE id = 4")
        with pytest.raises(AuditChainBroken, match=r"audit entry 4 \(read person@v1\) was edited after it was written"):
            fs.verify_audit()
        tampered("UPDATE audit_log SET purpose = 'fraud_detection' WHERE id = 4")
        assert fs.verify_audit() == (7, head)
        tampered("DELETE FROM audit_log WHERE id = 3")
        with pytest.raises(AuditChainBroken, match=r"audit entry 3 is missing \(the next entry is 4\)"):
            fs.verify_audit()


def test_audit_reorder_and_truncation_are_detected(approved: Path) -> None:
    with open_store(approved) as fs:
        fs.ingest("person", people(["c1"]))
        fs.read("person", features=["spend"], purpose="fraud_detection")
        count, head = fs.verify_audit()
        engine = sa.create_engine(f"sqlite:///{approved / 'registry.db'}")
        with engine.begin() as conn:  # swap the contents of entries 2 and 3, keep ids
            rows = {r.id: r for r in conn.execute(sa.text("SELECT * FROM audit_log WHERE id IN (2, 3)"))}
            conn.execute(sa.text("UPDATE audit_log SET prev_hash = 'x' || id WHERE id IN (2, 3)"))
            for target, source in ((2, 3), (3, 2)):
                r = rows[source]
                conn.execute(
                    sa.text(
                        "UPDATE audit_log SET at=:at, actor=:actor, action=:action, target=:target, purpose=:purpose, "
                        "details=:details, prev_hash=:prev, hash=:hash WHERE id=:id"
                    ),
                    {
                        "at": r.at,
                        "actor": r.actor,
                        "action": r.action,
                        "target": r.target,
                        "purpose": r.purpose,
                        "details": r.details,
                        "prev": r.prev_hash,
                        "hash": r.hash,
                        "id": target,
                    },
                )
        with pytest.raises(AuditChainBroken, match="does not follow entry"):
            fs.verify_audit()
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM audit_log"))
        fs.ingest("person", people(["c2"]))
        with pytest.raises(AuditChainBroken, match=r"the audit log's head is .* after 1 entries, not the expected"):
            fs.verify_audit(expect_head=head)


# --- nothing raw on disk ------------------------------------------------------------------------


def test_no_raw_identifier_or_master_key_bytes_anywhere_in_the_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER) as fs:
        config = root / "featurestore.yaml"
        config.write_text(
            config.read_text().replace(
                "lock_timeout_seconds: 10", "lock_timeout_seconds: 10\n  force_compression: uncompressed"
            )
        )
    with open_store(root) as fs:
        assert fs.config.force_compression == "uncompressed"
        (root / "policies" / "people.yaml").write_text(POLICY)
        fs.apply([PERSON, VIEW])
        fs.approve_policy(root / "policies" / "people.yaml", by="A. Counsel", role="legal")
        ids = [f"zq{n:05d}xk" for n in range(300)]
        data = people(ids)
        data = data.set_column(2, "email", pa.array([f"marker.{i}@rare-domain-zzq.example" for i in ids]))
        data = data.set_column(3, "phone", pa.array([f"+44 7400 1{n:05d}" for n in range(300)]))
        fs.ingest("person", data)
        spine = pa.table(
            {"customer_id": ids[:10], "event_timestamp": pa.array([datetime(2025, 7, 1, tzinfo=UTC)] * 10, TS)}
        )
        saved = fs.create_training_set("t", spine, ["person:spend", "person:email"], purpose="fraud_detection")
        assert saved.row_count == 10
        assert fs.load_training_set("t", purpose="fraud_detection").column("email").null_count == 0, (
            "the saved set holds pseudonyms"
        )
        with pytest.raises(PolicyViolation, match=r"read of 'person' refused: purpose 'marketing' is denied"):
            fs.load_training_set("t", purpose="marketing")
        assert fs.read("person", features=["spend"], purpose="fraud_detection").num_rows == 300
    sample_ids = ids[::37]
    needles = {
        *(i.encode() for i in sample_ids),
        *(f"marker.{i}@rare-domain-zzq.example".encode() for i in sample_ids),
        b"rare-domain-zzq",
        *(f"+4474001{n:05d}".encode() for n in (0, 150, 299)),
        *(f"7700 9{n:05d}".encode() for n in (0, 150, 299)),
        b"GB29NWBK",
        TEST_MASTER_KEY,
        base64.b64encode(TEST_MASTER_KEY),
    }
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "offline.duckdb" for p in files) and any(p.name == "registry.db" for p in files)
    # Control: the scan does see values in the file (uncompressed), e.g. the stored postcode prefix.
    assert b"SW1" in (root / "offline.duckdb").read_bytes()
    for path in files:
        content = path.read_bytes()
        found = [n for n in needles if n in content]
        assert not found, f"{path.relative_to(root)} holds {found[:3]}"


def test_saved_training_sets_never_hold_raw_identifiers_from_the_entity_frame(approved: Path) -> None:
    with open_store(approved) as fs:
        fs.ingest("person", people(["zq-a", "zq-b"]))
        spine = pa.table(
            {
                "customer_id": ["zq-a", "zq-b"],
                "event_timestamp": pa.array([datetime(2025, 7, 1, tzinfo=UTC)] * 2, TS),
                "email": ["Zq.A@example.com", "zq.b@example.com"],  # passed along, classified direct_identifier
                "notes": ["call back", "vip"],  # classified: dropped
                "label": [1, 0],
            }
        )
        saved = fs.create_training_set("t", spine, ["person:spend"], purpose="fraud_detection")
        assert saved.protected_columns == ["customer_id"]
        table = fs.load_training_set("t", purpose="fraud_detection")
        assert table.column_names == ["customer_id", "event_timestamp", "email", "label", "spend"]
        assert saved.entity_columns == ["customer_id", "event_timestamp", "email", "label"]
        assert all(t.startswith("siv-1:") for t in table.column("customer_id").to_pylist())
        assert table.column("email").to_pylist() == [hmac_of(fs, "zq.a@example.com"), hmac_of(fs, "zq.b@example.com")]
        assert table.column("spend").to_pylist() == [10.0, 10.0]
        assert fs.reproduce_training_set("t", purpose="fraud_detection").matches
