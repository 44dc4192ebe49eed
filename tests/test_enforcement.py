"""Enforcement by construction: only approved content is in force, whatever happens to the
files; every data path needs a grant; refusals are audited; closed mode.

The three holes an audit found (an unapproved scope edit lifting protection, the consistency
check leaking offline values to an online-only purpose, reproduction reusing the manifest's
purpose) each have a test here that fails on the code before grants.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from featurestore import DefinitionError, Entity, FeatureStore, FeatureView
from featurestore.errors import PolicyError, PolicyViolation
from featurestore.governance import Grant
from featurestore.testing import TEST_KEY_PROVIDER

from .test_governance import PERSON, POLICY, VIEW, hmac_of, people

TS = pa.timestamp("us", tz="UTC")
NOW = datetime(2025, 6, 10, tzinfo=UTC)  # the rows (2025-06-01) are within the view's 365-day TTL
# The test policy with two more purposes: one with online access only, one with DP aggregates only.
ENUM_POLICY = POLICY.replace(
    "    customer_support: {access: [reidentify]}\n",
    "    customer_support: {access: [reidentify]}\n    live_scoring: {access: [online], sensitive_attributes: true}\n"
    "    research: {access: [dp_aggregates]}\n    monitoring: {access: [offline, online], sensitive_attributes: true}\n",
) + (
    "differential_privacy:\n  purposes: [research]\n  budget: {epsilon: 1000.0, delta: 1.0e-6}\n  per_release: {epsilon: 1.0}\n"
    "  contribution_bounds: {max_rows_per_subject: 1, clamp: {spend: [0, 100]}}\n"
)
PURPOSES = [
    None,
    "fraud_detection",
    "fairness_audit",
    "customer_support",
    "live_scoring",
    "research",
    "monitoring",
    "marketing",
    "unknown",
]
ACCESS = {  # what each purpose may do under ENUM_POLICY
    None: set(),
    "fraud_detection": {"offline", "online"},
    "fairness_audit": {"offline"},
    "customer_support": {"reidentify"},
    "live_scoring": {"online"},
    "research": {"dp_aggregates"},
    "monitoring": {"offline", "online"},
    "marketing": set(),
    "unknown": set(),
}
SENSITIVE = {"fairness_audit", "monitoring", "live_scoring"}
"""Purposes released for sensitive attributes (the consistency check compares every feature, ethnicity too)."""
MARKER = "Zq.Marker@Example.COM"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def open_store(root: Path) -> FeatureStore:
    return FeatureStore(root, key_provider=TEST_KEY_PROVIDER, actor="tester", clock=Clock(NOW))


def make_store(tmp_path: Path, policy: str | None = ENUM_POLICY, *, approve: bool = True, name: str = "store") -> Path:
    root = tmp_path / name
    with FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER, actor="tester", clock=Clock(NOW)) as fs:
        if policy is not None:
            (root / "policies" / "people.yaml").write_text(policy)
        fs.apply([PERSON, VIEW])
        if policy is not None and approve:
            fs.approve_policy(root / "policies" / "people.yaml", by="A. Counsel", role="legal")
    return root


def spine(ids: list[str]) -> pa.Table:
    return pa.table(
        {"customer_id": ids, "event_timestamp": pa.array([datetime(2025, 6, 5, tzinfo=UTC)] * len(ids), TS)}
    )


def marked_rows(ids: list[str]) -> pa.Table:
    rows = people(ids)
    return rows.set_column(rows.column_names.index("email"), "email", pa.array([MARKER] * len(ids)))


def assert_protected(root: Path, *, ids: list[str] | None = None) -> None:
    """The approved people v1 (ENUM_POLICY) is what is enforced: writes are treated, reads need its purposes."""
    ids = ids or ["p1"]
    with open_store(root) as fs:
        fs.ingest("person", marked_rows(ids))
        with pytest.raises(PolicyViolation, match="requires a purpose"):
            fs.read("person")
        with pytest.raises(PolicyViolation, match="purpose 'marketing' is denied"):
            fs.read("person", purpose="marketing")
        stored = fs.read("person", features=["email"], purpose="fraud_detection").column("email").to_pylist()
        assert stored[-len(ids) :] == [hmac_of(fs, MARKER.lower())] * len(ids), "the email is hashed before storage"
    assert MARKER.encode() not in (root / "offline.duckdb").read_bytes()


# --- the three holes -----------------------------------------------------------------------


def test_hole_1_an_unapproved_scope_edit_does_not_lift_protection(tmp_path: Path) -> None:
    root = make_store(tmp_path)
    path = root / "policies" / "people.yaml"
    path.write_text(ENUM_POLICY.replace("scope: {feature_views: [person]}", "scope: {feature_views: [somewhere_else]}"))
    assert_protected(root)
    with open_store(root) as fs:
        plan = fs.plan_policy(path)
        assert (
            "Feature view person will be governed by no policy: its future data will be stored untreated (raw) and "
            "read without a purpose; rows stored so far keep their treatment."
        ) in plan


def test_hole_2_consistency_needs_offline_and_online_access(tmp_path: Path) -> None:
    root = make_store(tmp_path)
    with open_store(root) as fs:
        fs.ingest("person", people(["c1", "c2"]))
        fs.materialize()
        assert fs.get_online_features({"customer_id": "c1"}, ["person:spend"], purpose="live_scoring").values[
            "spend"
        ] == [10.0]
        with pytest.raises(
            PolicyViolation, match=r"read of 'person' refused: purpose 'live_scoring' may not have offline access"
        ):
            fs.check_consistency(purpose="live_scoring")
        with pytest.raises(PolicyViolation, match=r"purpose 'fairness_audit' may not have online access"):
            fs.check_consistency(purpose="fairness_audit")
        with pytest.raises(PolicyViolation, match=r"ethnicity is a sensitive attribute .* not for 'fraud_detection'"):
            fs.check_consistency(purpose="fraud_detection")
        [report] = fs.check_consistency(purpose="monitoring")
        assert (report.checked, report.mismatches) == (2, [])


def test_hole_3_reproduction_checks_the_callers_purpose_now(tmp_path: Path) -> None:
    root = make_store(tmp_path)
    with open_store(root) as fs:
        fs.ingest("person", people(["c1", "c2"]))
        fs.create_training_set("t", spine(["c1", "c2"]), ["person:spend"], purpose="fraud_detection")
        with pytest.raises(PolicyViolation, match="requires a purpose for every read"):
            fs.reproduce_training_set("t")
        with pytest.raises(PolicyViolation, match="purpose 'live_scoring' may not have offline access"):
            fs.reproduce_training_set("t", purpose="live_scoring")
        with pytest.raises(PolicyViolation, match="requires a purpose for every read"):
            fs.load_training_set("t")
        assert fs.reproduce_training_set("t", purpose="fairness_audit").matches
    # A purpose revoked since the set was built cannot rebuild it.
    path = root / "policies" / "people.yaml"
    path.write_text(
        ENUM_POLICY.replace("version: 1", "version: 2").replace(
            "    fraud_detection: {access: [offline, online]}\n", ""
        )
    )
    with open_store(root) as fs:
        fs.approve_policy(path, by="A. Counsel", role="legal")
        with pytest.raises(PolicyViolation, match="purpose 'fraud_detection' is not allowed by policy 'people'"):
            fs.reproduce_training_set("t", purpose="fraud_detection")


# --- what happens to files never weakens what is enforced ----------------------------------


def _delete(path: Path) -> None:
    path.unlink()


def _rename(path: Path) -> None:
    path.rename(path.with_name("renamed-policy.yml"))


def _rename_away(path: Path) -> None:
    path.rename(path.with_name("people.yaml.bak"))


def _comment_only(path: Path) -> None:
    path.write_text(path.read_text() + "# reviewed again, nothing changed\n")


def _broaden_purposes(path: Path) -> None:
    path.write_text(path.read_text().replace("  denied: [marketing]\n", "    marketing: {access: [offline, online]}\n"))


def _weaken_treatment(path: Path) -> None:
    path.write_text(
        path.read_text().replace("  email: {kind: direct_identifier, normalize: email}", "  email: non_personal")
    )


def _garbage(path: Path) -> None:
    path.write_text("id: people\nscope: [unclosed\n  : : :\n")


def _binary(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 4)


def _empty(path: Path) -> None:
    path.write_text("")


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _alias_bomb(path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    path.write_text("\n".join(lines) + "\nid: people\nscope: {feature_views: [other]}\n")


@pytest.mark.parametrize(
    "change",
    [
        _delete,
        _rename,
        _rename_away,
        _comment_only,
        _broaden_purposes,
        _weaken_treatment,
        _garbage,
        _binary,
        _empty,
        _directory,
        _alias_bomb,
    ],
)
def test_no_change_to_the_file_weakens_the_approved_policy(tmp_path: Path, change: Callable[[Path], None]) -> None:
    root = make_store(tmp_path)
    change(root / "policies" / "people.yaml")
    assert_protected(root)


def test_an_older_approved_version_put_back_changes_nothing(tmp_path: Path) -> None:
    root = make_store(tmp_path)
    path = root / "policies" / "people.yaml"
    stricter = ENUM_POLICY.replace("version: 1", "version: 2").replace(
        "    fairness_audit: {access: [offline], sensitive_attributes: true}\n", ""
    )
    path.write_text(stricter)
    with open_store(root) as fs:
        fs.approve_policy(path, by="A. Counsel", role="legal")
    path.write_text(ENUM_POLICY)  # v1's exact bytes, approved once
    with open_store(root) as fs:
        fs.ingest("person", people(["c1"]))
        with pytest.raises(PolicyViolation, match="purpose 'fairness_audit' is not allowed"):
            fs.read("person", features=["spend"], purpose="fairness_audit")
        with pytest.raises(PolicyViolation, match="it is an older version: a newer one is in force"):
            fs.approve_policy(path, by="Someone", role="legal")
        [status] = fs.policy_status()
        assert (
            status.in_force is not None
            and status.in_force.version == 2
            and [f for f, _ in status.drafts] == [str(path)]
        )


def test_a_file_that_changes_its_id_blocks_rather_than_frees(tmp_path: Path) -> None:
    root = make_store(tmp_path)
    path = root / "policies" / "people.yaml"
    path.write_text(ENUM_POLICY.replace("id: people", "id: people-relaxed"))
    with open_store(root) as fs:
        with pytest.raises(
            PolicyViolation,
            match=r"feature view 'person' can be neither written nor read: it is governed by policy "
            r"'people' but .*people\.yaml \(policy 'people-relaxed'\) also names it",
        ):
            fs.ingest("person", people(["c1"]))
        with pytest.raises(PolicyViolation, match="also names it"):
            fs.read("person", features=["spend"], purpose="fraud_detection")


@pytest.mark.parametrize(
    "second",
    [
        ENUM_POLICY.replace("id: people", "id: lenient").replace(
            "  denied: [marketing]\n", "    marketing: {access: [offline]}\n"
        ),
        "id: lenient\nscope: {feature_views: [person]}\nversion: -1\n",
        "id: lenient\nscope: {feature_views: ['pers*']}\n",
    ],
)
def test_a_second_file_claiming_the_view_blocks_it(tmp_path: Path, second: str) -> None:
    root = make_store(tmp_path)
    (root / "policies" / "zz-lenient.yaml").write_text(second)
    with open_store(root) as fs:
        for call in (
            lambda: fs.ingest("person", people(["c1"])),
            lambda: fs.read("person", purpose="marketing"),
            lambda: fs.read("person", features=["spend"], purpose="fraud_detection"),
        ):
            with pytest.raises(
                PolicyViolation, match=r"policy 'people' but .*zz-lenient\.yaml \(policy 'lenient'\) also names it"
            ):
                call()
        assert fs.list_batches() == []


def test_a_second_file_that_is_not_even_yaml_leaves_the_approved_policy_in_force(tmp_path: Path) -> None:
    root = make_store(tmp_path)
    (root / "policies" / "zz-lenient.yaml").write_text(
        "id: lenient\nscope: {feature_views: [person]}\nthis file: [is broken\n"
    )
    assert_protected(root)


def raw_people(ids: list[str]) -> pa.Table:
    """Rows for the person view when no policy drops the notes column."""
    return people(ids).drop_columns(["notes"])


def test_never_approved_policies_block_the_views_they_name(tmp_path: Path) -> None:
    root = make_store(tmp_path, policy=None)
    with open_store(root) as fs:
        fs.ingest("person", raw_people(["c1"]))  # ungoverned: raw
        assert fs.read("person", features=["spend"]).num_rows == 1
    (root / "policies" / "people.yaml").write_text(ENUM_POLICY)
    with open_store(root) as fs:
        for call in (
            lambda: fs.read("person", features=["spend"]),
            lambda: fs.read("person", features=["spend"], purpose="fraud_detection"),
            lambda: fs.ingest("person", people(["c2"])),
            lambda: fs.materialize(),
        ):
            with pytest.raises(PolicyViolation, match="policy 'people' .* names it and is not approved"):
                call()
    # A broken never-approved file that still names the view blocks it too.
    (root / "policies" / "people.yaml").write_text("id: people\nscope: {feature_views: [person]}\nversion: zero\n")
    with open_store(root) as fs:
        with pytest.raises(
            PolicyViolation,
            match=r"names it and is not approved.*; the file also has problems: .*people\.yaml:1:1: missing 'owner' \(and 7 more\)",
        ):
            fs.read("person", features=["spend"])


def test_an_unreadable_file_blocks_only_views_no_approved_policy_governs(tmp_path: Path) -> None:
    root = make_store(tmp_path)
    with open_store(root) as fs:
        fs.apply(
            [
                Entity(name="shop", join_keys={"shop_id": "int64"}),
                FeatureView(name="footfall", entity="shop", features={"visitors": "int64"}),
            ]
        )
        fs.ingest("footfall", pa.table({"shop_id": [1], "event_timestamp": pa.array([NOW], TS), "visitors": [3]}))
    (root / "policies" / "mystery.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with open_store(root) as fs:
        with pytest.raises(
            PolicyViolation,
            match=r"feature view 'footfall' can be neither written nor read: .*mystery\.yaml cannot be read \(it is not UTF-8 text\)",
        ):
            fs.read("footfall")
    assert_protected(root)
    with open_store(root) as fs:
        assert fs.policy_status()[-1].problems == [f"{root / 'policies' / 'mystery.yaml'}: it is not UTF-8 text"]


def test_releasing_a_view_takes_an_approved_version_and_plan_says_so(tmp_path: Path) -> None:
    root = make_store(tmp_path)
    path = root / "policies" / "people.yaml"
    assert_protected(root)
    path.write_text(ENUM_POLICY.replace("version: 1", "version: 2").replace("[person]", "[other_view]"))
    with open_store(root) as fs:
        assert "Feature view person leaves this policy: it is no longer governed by it." in fs.plan_policy(path)
        fs.approve_policy(path, by="A. Counsel", role="legal")
        fs.ingest("person", marked_rows(["p9"]).drop_columns(["notes"]))
        emails = fs.read("person", features=["email"]).column("email").to_pylist()
        assert emails[-1] == MARKER and emails[0] == hmac_of(fs, MARKER.lower()), "old rows keep their treatment"


# --- every public data method, every policy state, every purpose -----------------------------

# Each public method of FeatureStore is listed here: the access it exercises, or None for
# methods that return no governed value (definitions, manifests, batches, audit entries,
# policies). A new public method fails the test until it is classified.
METHODS: dict[str, tuple[str, ...] | None] = {
    "read": ("offline",),
    "get_historical_features": ("offline",),
    "create_training_set": ("offline",),
    "load_training_set": ("offline",),
    "reproduce_training_set": ("offline",),
    "get_online_features": ("online",),
    "check_consistency": ("offline", "online"),
    "reidentify": ("reidentify",),
    "dp_query": ("dp_aggregates",),
    "dp_budget": None,
    "release_dp_view": None,  # releases through dp_query (its refusals are the ones above)
    "apply": None,
    "plan": None,
    "approve_policy": None,
    "audit_entries": None,
    "close": None,
    "get_training_set": None,
    "get_view": None,
    "list_feature_services": None,
    "get_feature_service": None,
    "ingest": None,
    "push": None,
    "init": None,
    "lint_policy": None,
    "list_batches": None,
    "list_entities": None,
    "list_keys": None,
    "list_training_sets": None,
    "list_views": None,
    "load_definitions": None,
    "lock_timeout": None,
    "materialize": None,
    "materialized_views": None,
    "plan_policy": None,
    "policy_schema": None,
    "policy_snapshot": None,
    "policy_status": None,
    "registry_revision": None,
    "resolve_features": None,
    "root": None,
    "rotate_key": None,
    "show_policy": None,
    "upgrade_registry": None,
    "recover_registry": None,
    "doctor": None,
    "add_approver": None,
    "verify_audit": None,
    "view_versions": None,
    # Erasure and retention return counts and reports, never values (admin verbs; audited).
    "erase": None,
    "erasure_status": None,
    "verify_erasure": None,
    "where": None,
    "run_retention": None,
    "compact": None,
    "add_hold": None,
    "remove_hold": None,
    "list_holds": None,
}


def _calls(fs: FeatureStore, token: str) -> dict[str, Callable[[str | None], Any]]:
    counter = iter(range(1000))
    return {
        "read": lambda p: fs.read("person", features=["spend"], purpose=p).num_rows,
        "get_historical_features": lambda p: (
            fs.get_historical_features(spine(["c1"]), ["person:spend"], purpose=p).column("spend").to_pylist()
        ),
        "create_training_set": lambda p: (
            fs.create_training_set(f"t{next(counter)}", spine(["c1"]), ["person:spend"], purpose=p).row_count
        ),
        "load_training_set": lambda p: fs.load_training_set("base", purpose=p).num_rows,
        "reproduce_training_set": lambda p: fs.reproduce_training_set("base", purpose=p).table.num_rows,
        "get_online_features": lambda p: fs.get_online_features(
            {"customer_id": "c1"}, ["person:spend"], purpose=p
        ).values["spend"],
        "check_consistency": lambda p: fs.check_consistency(purpose=p)[0].checked,
        "reidentify": lambda p: fs.reidentify("person", "iban", token, purpose=p),
        "dp_query": lambda p: (
            fs.dp_query("person", aggregates=["count", "mean:spend"], purpose=p, fresh=True).table.num_rows
        ),
    }


def _state(tmp_path: Path, state: str) -> Path:
    """A store with data, a training set and materialized values, in one policy state."""
    root = make_store(tmp_path, policy=ENUM_POLICY if state in ("approved", "draft") else None)
    governed = state in ("approved", "draft")
    with open_store(root) as fs:
        fs.ingest("person", people(["c1", "c2"]) if governed else raw_people(["c1", "c2"]))
        fs.materialize()
        fs.create_training_set(
            "base",
            spine(["c1", "c2"]),
            ["person:spend"],
            purpose="fraud_detection" if state in ("approved", "draft") else None,
        )
    path = root / "policies" / "people.yaml"
    if state == "draft":  # an edit that would free everything: no scope, every purpose allowed
        path.write_text(
            ENUM_POLICY.replace("[person]", "[elsewhere]").replace(
                "  denied: [marketing]\n", "    marketing: {access: [offline, online, reidentify]}\n"
            )
        )
    elif state == "never_approved":
        path.write_text(ENUM_POLICY)
    return root


@pytest.mark.parametrize("state", ["approved", "draft", "never_approved", "no_policy"])
def test_every_data_method_under_every_policy_state_and_purpose(tmp_path: Path, state: str) -> None:
    public = {name for name, _ in inspect.getmembers(FeatureStore) if not name.startswith("_")}
    assert public == set(METHODS), f"classify these public methods in METHODS: {sorted(public ^ set(METHODS))}"
    root = _state(tmp_path, state)
    with open_store(root) as fs:
        token = (
            fs.read("person", features=["iban"], purpose="fraud_detection").column("iban")[0].as_py()
            if state in ("approved", "draft")
            else "siv-1:AAAA"
        )
        refusals_before = len(fs.audit_entries(action="refused"))
        calls = _calls(fs, token)
        assert set(calls) == {m for m, access in METHODS.items() if access is not None}
        refused = 0
        for method, call in calls.items():
            needed = set(METHODS[method] or ())
            for purpose in PURPOSES:
                if state in ("approved", "draft"):
                    allowed = needed <= ACCESS[purpose] and (method != "check_consistency" or purpose in SENSITIVE)
                elif state == "no_policy":
                    allowed = method not in ("reidentify", "dp_query")  # no tokens, and no DP budget, without a policy
                else:
                    allowed = False
                if allowed:
                    result = call(purpose)
                    assert result not in (None, [], 0), f"{method} for {purpose} under {state} returned nothing"
                    if method == "reidentify":
                        assert result == "GB29NWBK60161331920000"
                else:
                    with pytest.raises(PolicyViolation):
                        call(purpose)
                    refused += 1
        assert len(fs.audit_entries(action="refused")) - refusals_before == refused, "every refusal is in the audit log"


# --- grants are the only way in ---------------------------------------------------------------


def test_a_grant_cannot_be_forged_or_spent_on_another_access(tmp_path: Path) -> None:
    from featurestore.governance import decide, decide_snapshot

    snapshot = decide_snapshot([], [], require_policy=False)
    with FeatureStore(memory=True) as fs:
        fs.apply([PERSON, VIEW])
        vv = fs.get_view("person")
        with pytest.raises(TypeError, match="a Grant is made only by featurestore.governance.access.decide"):
            Grant(vv, ("spend",), None, ("offline",), None, snapshot, NOW)
        online = decide(snapshot, vv, ["spend"], None, ["online"], lambda: NOW)
        import dataclasses

        with pytest.raises(TypeError, match="a Grant is made only by"):
            dataclasses.replace(online, access=("offline",), features=("ethnicity",))
        from featurestore.offline.duckdb_store import OfflineStore

        with pytest.raises(
            PolicyViolation, match=r"a grant for online access to person@v1 cannot be used for offline access"
        ):
            OfflineStore(None).scan(online)


def test_refusals_are_audited_without_values(tmp_path: Path) -> None:
    root = make_store(tmp_path)
    with open_store(root) as fs:
        fs.ingest("person", marked_rows(["zq-subject-7"]))
        for purpose in ("marketing", None, "live_scoring"):
            with pytest.raises(PolicyViolation):
                fs.read("person", features=["email"], purpose=purpose)
        with pytest.raises(PolicyViolation):
            fs.get_historical_features(spine(["zq-subject-7"]), ["person:email"], purpose="marketing")
        entries = fs.audit_entries(action="refused")
        assert [(e.actor, e.target, e.purpose) for e in entries] == [
            ("tester", "person@v1", "marketing"),
            ("tester", "person@v1", None),
            ("tester", "person@v1", "live_scoring"),
            ("tester", "person@v1", "marketing"),
        ]
        assert (
            entries[0].details["reason"] == "read of 'person' refused: purpose 'marketing' is denied by policy 'people'"
        )
        assert entries[0].details["access"] == ["offline"] and entries[0].details["features"] == ["email"]
        text = json.dumps([e.details for e in fs.audit_entries()]).lower()
        assert "zq-subject-7" not in text and MARKER.lower() not in text


# --- closed mode ----------------------------------------------------------------------------

NON_PERSONAL = """\
api_version: featurestore.policy/v1
id: shop-stats
version: 1
owner: dpo@example.com
legal_basis: legitimate_interest
effective_from: 2026-01-01
review_by: 2027-01-01
scope: {feature_views: [footfall]}
classification: {shop_id: non_personal, visitors: non_personal}
treatments: {non_personal: keep}
purposes:
  allowed: {planning: {access: [offline, online]}}
"""
SHOP = Entity(name="shop", join_keys={"shop_id": "int64"})
FOOTFALL = FeatureView(name="footfall", entity="shop", features={"visitors": "int64"})


def _closed(root: Path) -> None:
    config = root / "featurestore.yaml"
    config.write_text(config.read_text().replace("require_policy: false", "require_policy: true"))


def test_closed_mode_needs_an_approved_policy_for_every_view(tmp_path: Path) -> None:
    root = make_store(tmp_path)  # person is governed by the approved people policy
    with open_store(root) as fs:
        fs.apply([SHOP, FOOTFALL])  # open mode: an ungoverned view is fine
        fs.ingest("footfall", pa.table({"shop_id": [1], "event_timestamp": pa.array([NOW], TS), "visitors": [3]}))
    _closed(root)
    with open_store(root) as fs:
        with pytest.raises(
            PolicyViolation, match=r"governance\.require_policy.*write policies/footfall\.yaml naming it in its scope"
        ):
            fs.read("footfall")
        with pytest.raises(PolicyViolation, match="require_policy"):
            fs.ingest("footfall", pa.table({"shop_id": [2], "event_timestamp": pa.array([NOW], TS), "visitors": [4]}))
        other = FeatureView(name="basket", entity="shop", features={"items": "int64"})
        with pytest.raises(
            DefinitionError, match=r"feature view 'basket' cannot be applied: .*write policies/basket\.yaml"
        ):
            fs.apply([SHOP, other])
        (root / "policies" / "shop.yaml").write_text(NON_PERSONAL)
        with pytest.raises(PolicyViolation, match="policy 'shop-stats' .* names it and is not approved"):
            fs.read("footfall", purpose="planning")
        fs.approve_policy(root / "policies" / "shop.yaml", by="A. Counsel", role="legal")
        assert fs.read("footfall", purpose="planning").column("visitors").to_pylist() == [3]
        with pytest.raises(PolicyViolation, match="requires a purpose"):
            fs.read("footfall")
    assert_protected(root)


def test_closed_mode_config_is_checked(tmp_path: Path) -> None:
    from featurestore.errors import ConfigError

    root = make_store(tmp_path, policy=None)
    config = root / "featurestore.yaml"
    config.write_text(config.read_text().replace("require_policy: false", "require_policy: yes please"))
    with pytest.raises(
        ConfigError, match=r"featurestore\.yaml:\d+:\d+: 'governance\.require_policy' must be true or false"
    ):
        open_store(root)


# --- one snapshot per request ----------------------------------------------------------------


def test_one_policy_snapshot_per_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import featurestore.governance.policies as policies

    root = make_store(tmp_path)
    with open_store(root) as fs:
        fs.apply([PERSON, VIEW, FeatureView(name="person_extra", entity="person_e", features={"spend": "float64"})])
        fs.ingest("person", people(["c1"]))
    (root / "policies" / "people.yaml").write_text(
        ENUM_POLICY.replace("[person]", "[person, person_extra]").replace("version: 1", "version: 2")
    )
    reads: list[Path] = []
    original = policies.read_proposal

    def counting(path: Path) -> Any:
        reads.append(path)
        return original(path)

    monkeypatch.setattr(policies, "read_proposal", counting)
    with open_store(root) as fs:
        fs.approve_policy(root / "policies" / "people.yaml", by="A. Counsel", role="legal")
        reads.clear()
        fs.get_historical_features(
            spine(["c1"]),
            ["person:spend", "person_extra:spend", "person:email"],
            purpose="fraud_detection",
            full_feature_names=True,
        )
        assert len(reads) == 1, "three features of two views: the one policy file is read once, for one snapshot"


# --- typed policy sections -----------------------------------------------------------------------


def test_retention_erasure_and_dp_sections_are_typed(tmp_path: Path) -> None:
    from featurestore.policy import load_policy

    example = load_policy(Path(__file__).resolve().parents[1] / "policies" / "customer-data.yaml")
    assert example.retention.offline == timedelta(days=400) and example.retention.training_sets == timedelta(days=180)
    assert example.erasure is not None and (example.erasure.subject_key, example.erasure.sla) == (
        "customer_id",
        timedelta(days=30),
    )
    dp = example.differential_privacy
    assert dp is not None and dp.purposes == ("research_statistics",) and dp.min_group_size == 20
    assert dp.budget is not None and (dp.budget.epsilon, dp.budget.delta, dp.budget.period) == (
        4.0,
        1e-6,
        timedelta(days=30),
    )
    assert dp.per_release is not None and dp.per_release.epsilon == 0.5
    assert dp.contribution_bounds.max_rows_per_subject == 5
    assert dp.contribution_bounds.clamp_of("spend_total") == (0.0, 5000.0) and dp.groups_of("segment") == (
        "retail",
        "premium",
        "business",
    )
    assert dp.decimals == 2 and not dp.per_consumer
    bad = tmp_path / "bad.yaml"
    base = ENUM_POLICY.split("differential_privacy:")[0]
    bad.write_text(
        base + "erasure: {subject_key: custmer_id, sla: soon}\n"
        "differential_privacy:\n  purposes: [research]\n  budget: {epsilon: 1.0}\n  per_release: {epsilon: 2.0}\n"
        "  contribution_bounds: {max_rows_per_subject: 0, clamp: {spend: [10, 1], shoe_size: [0, 50]}, "
        "max_groups_per_subject: 1.5}\n"
    )
    with pytest.raises(PolicyError) as info:
        load_policy(bad)
    lines = base.count("\n")
    assert [str(e) for e in info.value.errors] == [
        f"{bad}:{lines + 1}:41: erasure.sla: 'soon' is not a duration; write a number and a unit like '30d', '12h', '90m' "
        "or '1d6h', or an ISO 8601 duration like 'P30D', 'P6M' or 'PT12H'",
        f"{bad}:{lines + 1}:24: erasure.subject_key must name a classified column. Did you mean 'customer_id'?",
        f"{bad}:{lines + 5}:16: per_release.epsilon cannot exceed budget.epsilon",
        f"{bad}:{lines + 6}:47: max_rows_per_subject must be a whole number from 1 up",
        f"{bad}:{lines + 6}:119: max_groups_per_subject must be a whole number from 1 up",
        f"{bad}:{lines + 6}:65: clamp of 'spend' must be [lower, upper] with lower below upper, e.g. [0, 5000]",
        f"{bad}:{lines + 6}:74: clamp names column 'shoe_size', which is not classified.",
    ]


def test_policy_hashes_and_snapshot_ids(tmp_path: Path) -> None:
    root = make_store(tmp_path)
    with open_store(root) as fs:
        snap = fs.policy_snapshot()
        assert [a.policy.sha256 for a in snap.in_force] == [hashlib.sha256(ENUM_POLICY.encode()).hexdigest()]
        assert snap.state("person").governed and not snap.state("nothing").governed and snap.drafts() == []
        assert len(snap.id) == 16 and fs.policy_snapshot().id == snap.id
        shutil.copy(root / "policies" / "people.yaml", root / "policies" / "copy.yaml")
        assert fs.policy_snapshot().id != snap.id
