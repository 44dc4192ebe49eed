"""Keyed hashing, normalization, tokens, generalization, keys: known answers and refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.errors import KeyManagementError, PolicyViolation
from featurestore.privacy.keys import ConfigKeyProvider, DataKey, StaticKeyProvider, generate_master_key, unwrap, wrap
from featurestore.privacy.pseudonymize import detokenize, generalize, hmac_hex, keyed_hash, normalize, tokenize

NOW = datetime(2026, 1, 1, tzinfo=UTC)

# RFC 4231 HMAC-SHA256 test cases whose key and message are text (the store hashes text).
RFC4231 = [
    ("1", "\x0b" * 20, "Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    ("2", "Jefe", "what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (
        "5-untruncated",
        "\x0c" * 20,
        "Test With Truncation",
        "a3b6167473100ee06e0c796c2955552bfa6f7c0a6a8aef8b93f860aab0cd20c5",
    ),
]


@pytest.mark.parametrize(("case", "key", "message", "expected"), RFC4231, ids=[c[0] for c in RFC4231])
def test_rfc4231_vectors(case: str, key: str, message: str, expected: str) -> None:
    assert hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest() == expected  # the stdlib agrees
    assert hmac_hex(pa.array([message]), key).to_pylist() == [expected]


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.text(max_size=40)), max_size=50))
def test_native_hmac_equals_the_standard_library(values: list[str | None]) -> None:
    key = DataKey("hmac-3", "hmac", os.urandom(32), NOW)
    got = keyed_hash(pa.array(values, pa.string()), key).to_pylist()
    want = [
        None if v is None else "hmac-3:" + hmac.new(key.hmac_text.encode(), v.encode(), hashlib.sha256).hexdigest()[:32]
        for v in values
    ]
    assert hmac_hex(pa.array(values, pa.string()), key.hmac_text).to_pylist() == [
        None if v is None else hmac.new(key.hmac_text.encode(), v.encode(), hashlib.sha256).hexdigest() for v in values
    ]
    assert got == want


def test_hashing_is_stable_under_one_key_and_differs_across_keys() -> None:
    a = DataKey("hmac-1", "hmac", b"\x01" * 32, NOW)
    b = DataKey("hmac-2", "hmac", b"\x02" * 32, NOW)
    values = pa.array(["ann@example.com", "ann@example.com", "bob@example.com"])
    first = keyed_hash(values, a).to_pylist()
    assert first[0] == first[1] != first[2]
    assert keyed_hash(values, a).to_pylist() == first
    assert [v.split(":")[1] for v in keyed_hash(values, b).to_pylist()] != [v.split(":")[1] for v in first]


def test_email_and_phone_normalization() -> None:
    emails = pa.array(["  Ann.Lee@Example.COM", "ann.lee@example.com ", None])
    assert normalize(emails, "email").to_pylist() == ["ann.lee@example.com", "ann.lee@example.com", None]
    phones = pa.array(["+44 20 7946 0958", "0044 (20) 7946-0958", "020 7946 0958", "+1.212.555.0100"])
    assert normalize(phones, "phone", region="GB").to_pylist() == ["+442079460958"] * 3 + ["+12125550100"]
    with pytest.raises(PolicyViolation, match=r"row 1: not a valid phone number; set region \(e\.g\. region: GB\)"):
        normalize(pa.array(["+44 20 7946 0958", "020 7946 0958"]), "phone")
    with pytest.raises(
        PolicyViolation,
        match=r"row 0: not a valid phone number \(numbers without a country code are read in region GB\)",
    ) as info:
        normalize(pa.array(["12"]), "phone", region="GB")
    assert "12" not in str(info.value).replace("row 0", ""), "the message never carries the value"
    assert normalize(pa.array([12, 7]), "none").to_pylist() == ["12", "7"]


def test_tokens_are_deterministic_and_reversible_only_with_key_and_column() -> None:
    key = DataKey("siv-1", "siv", os.urandom(64), NOW)
    tokens = tokenize(
        pa.array(["DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 00", None]), key, context="iban"
    )
    assert tokens[0] == tokens[1] and tokens[0].as_py().startswith("siv-1:") and tokens[2].as_py() is None
    assert detokenize(tokens[0].as_py(), key, context="iban") == "DE89 3704 0044 0532 0130 00"
    with pytest.raises(
        PolicyViolation, match="not a token of email made with key 'siv-1': a token only opens through the view"
    ):
        detokenize(tokens[0].as_py(), key, context="email")
    other = DataKey("siv-1", "siv", os.urandom(64), NOW)
    with pytest.raises(PolicyViolation):
        detokenize(tokens[0].as_py(), other, context="iban")


def test_generalization() -> None:
    births = pa.array([date(1987, 6, 15), None])
    assert generalize(births, {"to": "year"}).to_pylist() == [date(1987, 1, 1), None]
    assert generalize(births, {"to": "month"}).to_pylist() == [date(1987, 6, 1), None]
    assert generalize(pa.array([17.5, 42.0]), {"width": 5}).to_pylist() == [15.0, 40.0]
    assert generalize(pa.array(["SW1A 1AA"]), {"prefix": 3}).to_pylist() == ["SW1"]


def test_wrapping_and_the_wrong_master_key() -> None:
    master = base64.b64decode(generate_master_key())
    wrapped = wrap(master, "hmac-1", "hmac", b"s" * 32)
    assert b"s" * 32 not in base64.b64decode(wrapped)
    assert unwrap(master, "hmac-1", "hmac", wrapped) == b"s" * 32
    with pytest.raises(KeyManagementError, match="the master key does not open data key 'hmac-1'"):
        unwrap(os.urandom(32), "hmac-1", "hmac", wrapped)
    with pytest.raises(KeyManagementError):
        unwrap(master, "hmac-2", "hmac", wrapped)  # the id is authenticated too


def test_master_key_sources(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    key = generate_master_key()
    assert len(ConfigKeyProvider(store, environ={"FEATURESTORE_MASTER_KEY": key}).master_key()) == 32
    with pytest.raises(
        KeyManagementError, match=r"no master key: set the environment variable FEATURESTORE_MASTER_KEY"
    ):
        ConfigKeyProvider(store, environ={}).master_key()
    with pytest.raises(KeyManagementError, match=r"is not 32 bytes of base64"):
        ConfigKeyProvider(store, environ={"FEATURESTORE_MASTER_KEY": "c2hvcnQ="}).master_key()
    inside = store / "master.key"
    inside.write_text(key)
    inside.chmod(0o600)
    with pytest.raises(KeyManagementError, match="is inside the store directory; move it out"):
        ConfigKeyProvider(store, key_file=inside).master_key()
    outside = tmp_path / "master.key"
    outside.write_text(key)
    outside.chmod(0o644)
    with pytest.raises(KeyManagementError, match=r"can be read by other users \(mode -rw-r--r--\); run `chmod 600"):
        ConfigKeyProvider(store, key_file=outside).master_key()
    outside.chmod(0o600)
    assert ConfigKeyProvider(store, key_file=outside).master_key() == base64.b64decode(key)
    with pytest.raises(KeyManagementError, match="must be 32 bytes"):
        StaticKeyProvider(b"short").master_key()


def test_key_files_relative_symlinked_or_directories(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    key = generate_master_key()
    outside = tmp_path / "keys" / "master.key"
    outside.parent.mkdir()
    outside.write_text(key)
    outside.chmod(0o600)
    relative = Path("../keys/master.key")  # relative to the store directory, wherever the process runs
    assert ConfigKeyProvider(store, key_file=relative).master_key() == base64.b64decode(key)
    link = store / "key-link"
    link.symlink_to(outside)
    with pytest.raises(KeyManagementError, match=r"is inside the store directory \(through a symlink\); move it out"):
        ConfigKeyProvider(store, key_file=link).master_key()
    with pytest.raises(KeyManagementError, match=r"is inside the store directory"):
        ConfigKeyProvider(store, key_file=Path("key-link")).master_key()
    linked_dir = tmp_path / "dir-link"
    linked_dir.symlink_to(store)
    with pytest.raises(KeyManagementError, match=r"is inside the store directory"):
        ConfigKeyProvider(store, key_file=linked_dir / "master.key").master_key()
    with pytest.raises(KeyManagementError, match=r"is a directory; name the key file itself"):
        ConfigKeyProvider(store, key_file=outside.parent).master_key()


def test_a_wrong_master_key_never_wraps_a_new_key(tmp_path: Path) -> None:
    from featurestore.privacy.keys import KeyRing

    class Keys:
        def __init__(self) -> None:
            self.rows: list[tuple[str, str, str, object]] = []

        def wrapped_keys(self, kind: str) -> list[tuple[str, str, object]]:
            return [(i, w, at) for i, k, w, at in self.rows if k == kind]

        def add_wrapped_key(self, key_id: str, kind: str, wrapped: str, created_at: object) -> None:
            self.rows.append((key_id, kind, wrapped, created_at))

    store = Keys()
    right = StaticKeyProvider(os.urandom(32))
    KeyRing(store, right, lambda: NOW).current("hmac")
    wrong = KeyRing(store, StaticKeyProvider(os.urandom(32)), lambda: NOW)
    for make in (lambda: wrong.rotate("siv"), lambda: wrong.current("siv"), lambda: wrong.rotate("hmac")):
        with pytest.raises(KeyManagementError, match="the master key does not open data key 'hmac-1'"):
            make()
    assert [r[0] for r in store.rows] == ["hmac-1"], "nothing was written under the wrong master key"
    assert KeyRing(store, right, lambda: NOW).current("siv").id == "siv-1", "the right one still works"


def test_repeated_identifiers_are_hashed_once_with_the_same_result() -> None:
    key = DataKey("hmac-1", "hmac", os.urandom(32), NOW)
    repeated = pa.array([f" Id{i % 100}@X.com " if i % 7 else None for i in range(30_000)])
    fast = keyed_hash(repeated, key, normalize="email").to_pylist()  # dictionary path (100 distinct values)
    slow = [
        None
        if v is None
        else "hmac-1:" + hmac.new(key.hmac_text.encode(), v.strip().lower().encode(), hashlib.sha256).hexdigest()[:32]
        for v in repeated.to_pylist()
    ]
    assert fast == slow
    phones = pa.array(["+44 20 7946 0958"] * 20_000 + ["bad"] + ["+44 20 7946 0958"] * 5)
    with pytest.raises(PolicyViolation, match="row 20000: not a valid phone number"):
        keyed_hash(phones, key, normalize="phone")


ONE_NUMBER = {  # the spellings of one US and one UK number; with country_code "1" (region US)
    "+14155550001": ["1-415-555-0001", "(415) 555-0001", "+1 415 555 0001", "415.555.0001"],
    "+442079460958": ["+44 (0)20 7946 0958", "011 44 20 7946 0958", "+44 20 7946 0958", "+4402079460958"],
}


@pytest.mark.parametrize("e164", sorted(ONE_NUMBER))
def test_every_spelling_of_one_number_gets_one_pseudonym_at_ingestion_and_lookup(e164: str) -> None:
    from featurestore.online.lookup import KeyForm
    from featurestore.phones import region_of

    region = region_of(None, "1")
    assert region == "US"
    spellings = ONE_NUMBER[e164]
    assert normalize(pa.array(spellings), "phone", region=region).to_pylist() == [e164] * len(spellings)
    key = DataKey("hmac-1", "hmac", os.urandom(32), NOW)
    stored = set(keyed_hash(pa.array(spellings), key, normalize="phone", region=region).to_pylist())
    assert len(stored) == 1, "one person, one pseudonym, however the number was written"
    form = KeyForm(
        "phone", "keyed_hash", normalize="phone", region=region, hmac_keys=(("hmac-1", key.hmac_text.encode()),)
    )
    assert {form.forms(s)[0] for s in spellings} == stored, "an online lookup computes the pseudonym ingestion stored"


@pytest.mark.parametrize(
    "value", ["555-0001", "+1 415 555 000", "+999 1234567", "tel: nope", "+44 20 7946 09581234", "0"]
)
def test_a_number_libphonenumber_does_not_call_valid_is_refused_by_row_never_quoted(value: str) -> None:
    from featurestore.online.lookup import normalize_one

    with pytest.raises(PolicyViolation, match=r"^row 2: not a valid phone number") as info:
        normalize(pa.array(["+1 415 555 0001", None, value]), "phone", region="US")
    assert value not in str(info.value)
    assert normalize_one(value, "phone", "US") is None, "a lookup of it finds nothing instead of a wrong pseudonym"


def test_the_international_prefix_is_the_one_of_the_region() -> None:
    assert normalize(pa.array(["0044 20 7946 0958", "00 1 415 555 0001"]), "phone", region="GB").to_pylist() == [
        "+442079460958",
        "+14155550001",
    ]
    with pytest.raises(PolicyViolation, match="row 0: not a valid phone number"):  # from the US, 00 dials nowhere
        normalize(pa.array(["0044 20 7946 0958"]), "phone", region="US")


def test_an_extension_stays_part_of_the_number() -> None:
    got = normalize(
        pa.array(["+1 415 555 0001 ext. 12", "+1 415 555 0001 x12", "+1 415 555 0001 ext 13"]), "phone"
    ).to_pylist()
    assert got == ["+14155550001;ext=12", "+14155550001;ext=12", "+14155550001;ext=13"]
