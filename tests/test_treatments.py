"""Treatments as objects: every registered one honours the protocol."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from featurestore.errors import PolicyViolation
from featurestore.policy import policy_json_schema
from featurestore.policy.model import ColumnRule
from featurestore.privacy.keys import KeyRing, StaticKeyProvider
from featurestore.privacy.treatments import NAMES, REGISTRY, Target, Treatment, same, treatment, treatment_of

NOW = datetime(2026, 1, 1, tzinfo=UTC)

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
