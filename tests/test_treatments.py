"""Treatments as objects: every registered one honours the protocol, and the policy plan words
every option that changes stored values as a change (and one that does not, as no change)."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from featurestore import FeatureStore, treat_existing
from featurestore.errors import PolicyViolation
from featurestore.policy import parse_policy, plan_policy, policy_json_schema
from featurestore.policy.model import ColumnRule, Policy
from featurestore.privacy.keys import KeyRing, StaticKeyProvider
from featurestore.privacy.treatments import NAMES, REGISTRY, Target, Treatment, same, treatment, treatment_of
from featurestore.testing import TEST_KEY_PROVIDER

from .test_governance import PERSON, POLICY, VIEW, people

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TREATS = "(data ingested from now on; rows stored before need --treat-existing)."
REINGEST = (
    "(data ingested from now on; rows stored before keep their old treated values, which --treat-existing "
    "cannot convert: ingest them again into a new view version)."
)
KEEPS = "(data ingested from now on; rows stored before keep their stored values)."
DROPS = (
    "(data ingested from now on drops it; a view that stores the column must remove it in a new version, "
    "and rows stored before keep it until retention or erasure removes them)."
)


def after_words(before: str, after: str) -> str:
    """What the plan must say of rows stored before a change from treatment `before` to `after`."""
    if after == "drop":
        return DROPS
    if before in ("keyed_hash", "tokenize", "generalize"):  # already treated: cannot be converted in place
        return REINGEST
    return KEEPS if after == "keep" else TREATS


RULES = {
    "keyed_hash": ColumnRule("c", "direct_identifier", "keyed_hash", normalize="email"),
    "tokenize": ColumnRule("c", "direct_identifier", "tokenize", normalize="phone", country_code="44", region="GB"),
    "generalize": ColumnRule("c", "quasi_identifier", "generalize", generalize={"width": 5}),
    "drop": ColumnRule("c", "direct_identifier", "drop"),
    "keep": ColumnRule("c", "non_personal", "keep"),
}


class _Wrapped:
    """An in-memory home for wrapped keys (the registry's part of a key ring)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, datetime]] = []

    def wrapped_keys(self, kind: str) -> list[tuple[str, str, datetime]]:
        return [(i, w, at) for i, k, w, at in self.rows if k == kind]

    def add_wrapped_key(self, key_id: str, kind: str, wrapped: str, created_at: datetime) -> None:
        self.rows.append((key_id, kind, wrapped, created_at))


def _ring() -> KeyRing:
    return KeyRing(_Wrapped(), StaticKeyProvider(os.urandom(32)), lambda: NOW)


# --- the registry and the protocol ---------------------------------------------------------


def test_the_registry_names_are_the_names_policies_may_use() -> None:
    from featurestore.policy import model

    assert NAMES == tuple(REGISTRY) == model.TREATMENTS == ("keyed_hash", "tokenize", "generalize", "drop", "keep")
    assert all(t.name == name for name, t in REGISTRY.items())
    column = policy_json_schema()["properties"]["classification"]["additionalProperties"]["oneOf"][1]
    assert column["properties"]["treatment"]["enum"] == list(NAMES)
    assert set(RULES) == set(NAMES), "every treatment has a sample rule below"


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_treatment_implements_the_protocol(name: str) -> None:
    t = treatment(name)
    rule = RULES[name]
    assert isinstance(t, Treatment) and treatment_of(rule) is t
    assert t.key_kind in ("hmac", "siv", None)
    assert t.output in ("text", "unchanged", "none")
    assert t.stored == (t.output != "none")
    assert all(isinstance(flag, bool) for flag in (t.rewrites, t.reversible, t.as_is))
    assert isinstance(t.options, tuple)
    assert t.describe(rule) and t.describe(rule) == t.describe(rule).strip()
    assert t.same(rule, rule), "a rule stores what it stores"
    for other, rule_b in RULES.items():
        assert same(rule, rule_b) == (other == name), f"{name} vs {other}: another treatment stores other values"
    assert type(t).__doc__ and sys.modules[type(t).__module__].__doc__, f"{name} and its module are documented"
    for method in ("apply", "apply_all", "stored_forms", "lookup_forms", "reverse", "describe", "same"):
        assert getattr(type(t), method).__doc__, f"{name}.{method} has a docstring"


@pytest.mark.parametrize("name", NAMES)
def test_apply_stored_forms_and_lookup_forms_agree(name: str) -> None:
    t, rule, keys = treatment(name), RULES[name], _ring()
    raw = pa.chunked_array([["020 7946 0958", "+44 20 7946 0958"]]) if name == "tokenize" else None
    raw = raw if raw is not None else pa.chunked_array([[15, 42]] if name == "generalize" else [["A@x.com", "b@y.org"]])
    applied = t.apply(raw, rule, keys, context="p/v/c", name="c")
    if not t.stored:
        assert applied is None
        return
    assert applied is not None
    if t.output == "text":
        assert pa.types.is_string(applied.type) or pa.types.is_large_string(applied.type)
    else:
        assert applied.type == raw.type
    if t.as_is:
        assert applied is raw
    together = t.apply_all({"c": Target(raw, rule, "p/v/c")}, keys)["c"]
    assert together is not None and together.to_pylist() == applied.to_pylist()
    forms = t.stored_forms(raw, rule, keys, context="p/v/c")
    makers = t.lookup_forms(rule, keys, context="p/v/c")
    if t.key_kind is None:
        assert forms == [raw] and makers == (), "looked up as given"
        return
    assert [f.to_pylist() for f in forms] == [applied.to_pylist()], "one key id: one form"
    normalized = {"keyed_hash": ["a@x.com", "b@y.org"], "tokenize": ["+442079460958", "+442079460958"]}[name]
    assert [make(v) for make in makers for v in normalized] == applied.to_pylist(), "a lookup makes what is stored"
    keys.rotate(t.key_kind)
    assert len(t.stored_forms(raw, rule, keys, context="p/v/c")) == 2, "a form under every key id after rotation"
    assert len(t.lookup_forms(rule, keys, context="p/v/c")) == 2


@pytest.mark.parametrize("name", NAMES)
def test_only_a_reversible_treatment_turns_a_stored_value_back(name: str) -> None:
    t, rule, keys = treatment(name), RULES[name], _ring()
    if t.reversible:
        tokens = t.apply(pa.chunked_array([["020 7946 0958"]]), rule, keys, context="p/v/c")
        assert tokens is not None
        [token] = tokens.to_pylist()
        assert t.reverse(token, rule, keys, context="p/v/c") == "+442079460958"
        with pytest.raises(PolicyViolation, match="only opens through the view and column it was made for"):
            t.reverse(token, rule, keys, context="p/v/other")
    else:
        with pytest.raises(PolicyViolation, match="its stored values cannot be turned back"):
            t.reverse("hmac-1:00", rule, keys, context="p/v/c")


# --- the plan's words ------------------------------------------------------------------------


def _policy(classification: dict[str, str], version: int = 1) -> Policy:
    text = POLICY.replace("version: 1", f"version: {version}")
    for column, spec in classification.items():
        start = text.index(f"  {column}: ")
        end = text.index("\n", start)
        text = text[:start] + f"  {column}: {spec}" + text[end:]
    return parse_policy(text, "people.yaml")


def _plan(column: str, before: str, after: str) -> list[str]:
    return plan_policy(_policy({column: before}), _policy({column: after}, version=2))


WORDS = {
    "keyed_hash": "replaced by a keyed hash",
    "tokenize": "encrypted as a reversible token",
    "generalize": "generalized to steps of 5",
    "drop": "dropped (never stored)",
    "keep": "kept as is",
}
GB = "(after phone normalization; numbers without a country code are read in region GB)"


def _spec(name: str) -> str:
    return (
        f"{{kind: quasi_identifier, treatment: {name}"
        + (", generalize: {width: 5}" if name == "generalize" else "")
        + "}"
    )


@pytest.mark.parametrize(("a", "b"), [(a, b) for a in NAMES for b in NAMES if a != b])
def test_a_treatment_change_is_a_change_of_stored_values(a: str, b: str) -> None:
    plan = _plan("spend", _spec(a), _spec(b))
    suffix = after_words(a, b)
    assert f"Column spend: was quasi identifier, {WORDS[a]}; now quasi identifier, {WORDS[b]} {suffix}" in plan
    assert not any("No rule changes" in line for line in plan)


@pytest.mark.parametrize(
    ("column", "before", "after", "was", "now"),
    [
        pytest.param(
            "email",
            "{kind: direct_identifier, normalize: email}",
            "{kind: direct_identifier, normalize: text}",
            "replaced by a keyed hash (after email normalization)",
            "replaced by a keyed hash (after text normalization)",
            id="keyed_hash normalize",
        ),
        pytest.param(
            "email",
            "{kind: direct_identifier}",
            "{kind: direct_identifier, normalize: email}",
            "replaced by a keyed hash",
            "replaced by a keyed hash (after email normalization)",
            id="keyed_hash normalize from none",
        ),
        pytest.param(
            "phone",
            "{kind: direct_identifier, normalize: phone, region: GB}",
            "{kind: direct_identifier, normalize: phone, region: IE}",
            f"replaced by a keyed hash {GB}",
            f"replaced by a keyed hash {GB.replace('GB', 'IE')}",
            id="keyed_hash phone region",
        ),
        pytest.param(
            "phone",
            '{kind: direct_identifier, normalize: phone, country_code: "44"}',
            '{kind: direct_identifier, normalize: phone, country_code: "1"}',
            f"replaced by a keyed hash {GB}",
            f"replaced by a keyed hash {GB.replace('GB', 'US')}",
            id="keyed_hash country_code",
        ),
        pytest.param(
            "phone",
            '{kind: direct_identifier, normalize: phone, country_code: "44"}',
            "{kind: direct_identifier, normalize: phone}",
            f"replaced by a keyed hash {GB}",
            "replaced by a keyed hash (after phone normalization)",
            id="keyed_hash country_code removed",
        ),
        pytest.param(
            "iban",
            "{kind: direct_identifier, treatment: tokenize}",
            "{kind: direct_identifier, treatment: tokenize, normalize: text}",
            "encrypted as a reversible token",
            "encrypted as a reversible token (after text normalization)",
            id="tokenize normalize",
        ),
        pytest.param(
            "iban",
            "{kind: direct_identifier, treatment: tokenize, normalize: phone, region: GB}",
            '{kind: direct_identifier, treatment: tokenize, normalize: phone, country_code: "1"}',
            f"encrypted as a reversible token {GB}",
            f"encrypted as a reversible token {GB.replace('GB', 'US')}",
            id="tokenize phone region",
        ),
        pytest.param(
            "birth_date",
            "{kind: quasi_identifier, generalize: {to: year}}",
            "{kind: quasi_identifier, generalize: {to: month}}",
            "generalized to its year",
            "generalized to its month",
            id="generalize to",
        ),
        pytest.param(
            "postcode",
            "{kind: quasi_identifier, generalize: {prefix: 3}}",
            "{kind: quasi_identifier, generalize: {prefix: 2}}",
            "generalized to its first 3 characters",
            "generalized to its first 2 characters",
            id="generalize prefix",
        ),
        pytest.param(
            "spend",
            "{kind: quasi_identifier, generalize: {width: 5}}",
            "{kind: quasi_identifier, generalize: {width: 10}}",
            "generalized to steps of 5",
            "generalized to steps of 10",
            id="generalize width",
        ),
        pytest.param(
            "spend",
            "{kind: quasi_identifier, generalize: {width: 5}}",
            "{kind: sensitive_attribute, generalize: {width: 10}, treatment: generalize}",
            "generalized to steps of 5",
            "generalized to steps of 10",
            id="generalize width and kind",
        ),
    ],
)
def test_an_option_that_changes_stored_values_is_worded_as_a_change(
    column: str, before: str, after: str, was: str, now: str
) -> None:
    plan = _plan(column, before, after)
    a, b = _policy({column: before}).columns[column], _policy({column: after}).columns[column]
    old_kind, new_kind = a.kind.replace("_", " "), b.kind.replace("_", " ")
    assert f"Column {column}: was {old_kind}, {was}; now {new_kind}, {now} {REINGEST}" in plan, plan
    assert not any("No rule changes" in line for line in plan)
    assert not same(a, b) and not treat_existing._same(a, b), "the plan and --treat-existing agree"


@pytest.mark.parametrize(
    ("column", "before", "after", "sentence"),
    [
        pytest.param(
            "ethnicity",
            "sensitive_attribute",
            "non_personal",
            "Column ethnicity: kind sensitive attribute -> non personal; it is still kept as is, "
            "so its stored values do not change.",
            id="kind, same treatment",
        ),
        pytest.param(
            "email",
            "{kind: direct_identifier, normalize: email}",
            "{kind: quasi_identifier, treatment: keyed_hash, normalize: email}",
            "Column email: kind direct identifier -> quasi identifier; it is still replaced by a keyed hash "
            "(after email normalization), so its stored values do not change.",
            id="kind of a hashed column",
        ),
        pytest.param(
            "phone",
            '{kind: direct_identifier, normalize: phone, region: GB, country_code: "44"}',
            '{kind: direct_identifier, normalize: phone, region: GB, country_code: "353"}',
            f"Column phone: country code 44 -> 353; it is still replaced by a keyed hash {GB}, "
            "so its stored values do not change.",
            id="country_code under an explicit region",
        ),
        pytest.param(
            "birth_date",
            "{kind: quasi_identifier, generalize: {to: year}}",
            "{kind: quasi_identifier, generalize: {to: year}, normalize: text}",
            "Column birth_date: normalize none -> text; it is still generalized to its year, "
            "so its stored values do not change.",
            id="normalization of a generalized column",
        ),
    ],
)
def test_an_option_that_does_not_change_stored_values_is_worded_as_such(
    column: str, before: str, after: str, sentence: str
) -> None:
    plan = _plan(column, before, after)
    assert sentence in plan, plan
    assert not any(f"Column {column}: was" in line for line in plan), "not worded as a change of stored values"
    a, b = _policy({column: before}).columns[column], _policy({column: after}).columns[column]
    assert same(a, b) and treat_existing._same(a, b)


def test_a_new_region_on_stored_phones_is_in_the_plan_and_the_untreated_rows(tmp_path: Path) -> None:
    """The bug: the plan said "No rule changes" while every stored phone pseudonym changes."""
    root = tmp_path / "store"
    with FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER) as fs:
        path = root / "policies" / "people.yaml"
        path.write_text(POLICY)
        fs.apply([PERSON, VIEW])
        fs.approve_policy(path, by="A. Counsel", role="legal")
        fs.ingest("person", people(["a1", "a2"]))
        path.write_text(
            POLICY.replace("version: 1", "version: 2").replace('country_code: "44"', 'country_code: "44", region: IE')
        )
        plan = fs.plan_policy(path)
        for treat in (False, True):  # what the plan says: no way to approve over the old pseudonyms in place
            with pytest.raises(PolicyViolation, match="already treated another way|treated another way"):
                fs.approve_policy(path, by="A. Counsel", role="legal", treat_existing=treat)
        assert fs.policy_status()[0].in_force.version == 1  # type: ignore[union-attr]
    assert not any("No rule changes" in line for line in plan), plan
    assert (
        f"Column phone: was direct identifier, replaced by a keyed hash {GB}; now direct identifier, "
        f"replaced by a keyed hash {GB.replace('GB', 'IE')} {REINGEST}"
    ) in plan
    assert any(
        "person@v1 holds 2 rows whose phone (keyed_hash) were stored treated another way (--treat-existing cannot "
        "convert them: ingest them again into a new view version)" in line
        for line in plan
    ), plan
