"""Column treatments applied before anything reaches disk: normalize, keyed hash, tokenize,
generalize. Each takes and returns Arrow columns; keys come in as arguments.

Keyed hashing is HMAC-SHA256 (computed in native code over whole columns by polars-hash,
checked against the standard library on RFC 4231 vectors in the tests), on normalized input,
written as ``"<key id>:<64 hex digits>"`` so every pseudonym names the key that made it.

>>> import pyarrow as pa
>>> normalize(pa.array(["  Ann.Lee@Example.COM "]), "email").to_pylist()
['ann.lee@example.com']
>>> normalize(pa.array(["0151 234-5678", "+49 (151) 2345678", "0049 151 2345678"]), "phone", country_code="49").to_pylist()
['+491512345678', '+491512345678', '+491512345678']
>>> generalize(pa.array([12, 37, None]), {"width": 10}).to_pylist()
[10, 30, None]
>>> generalize(pa.array(["75011", "10115"]), {"prefix": 2}).to_pylist()
['75', '10']
"""

from __future__ import annotations

import base64
from typing import Any

import polars as pl
import polars_hash as plh
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from ..errors import KeyManagementError, PolicyViolation
from .keys import DataKey

Column = pa.Array | pa.ChunkedArray
NORMALIZERS = ("none", "text", "email", "phone")


def normalize(column: Column, kind: str, *, country_code: str | None = None) -> pa.ChunkedArray | pa.Array:
    """Normalize identifiers so the same person always gives the same input to the hash.

    - ``none``: as given (numbers become their decimal text);
    - ``text``: trimmed and lower-cased;
    - ``email``: trimmed and lower-cased;
    - ``phone``: E.164 (``+`` and digits): spaces, dashes, dots and brackets removed, a ``00``
      prefix read as ``+``, a national number (leading ``0``) given `country_code`.
      A number that cannot be made E.164 raises PolicyViolation naming its row (never its value).
    """
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    if kind == "none":
        return column
    trimmed = pc.utf8_trim_whitespace(column)
    if kind in ("text", "email"):
        return pc.utf8_lower(trimmed)
    if kind != "phone":
        raise ValueError(f"unknown normalization {kind!r}")
    international = pc.or_(pc.starts_with(trimmed, "+"), pc.starts_with(trimmed, "00"))
    digits = pc.replace_substring_regex(trimmed, r"[^0-9]", "")
    digits = pc.if_else(pc.starts_with(trimmed, "00"), pc.utf8_slice_codeunits(digits, 2), digits)
    national = pc.replace_substring_regex(digits, r"^0", "")
    result = pc.if_else(
        international,
        pc.binary_join_element_wise("+", digits, ""),
        pc.binary_join_element_wise(f"+{country_code}", national, "") if country_code else pa.nulls(len(column), pa.string()),
    )
    ok = pc.match_substring_regex(result, r"^\+[1-9][0-9]{6,14}$")
    bad = pc.and_(pc.is_valid(column), pc.invert(pc.fill_null(ok, False)))
    if pc.any(bad).as_py():
        row = pc.index(bad, True).as_py()
        raise PolicyViolation(
            f"row {row}: a phone number that cannot be written in E.164 (+ country code and 7-15 digits)"
            + ("" if country_code else "; set country_code in the policy for numbers written without one")
        )
    return result


def hmac_hex(column: Column, key_text: str, *, prefix: str = "") -> pa.ChunkedArray:
    """HMAC-SHA256 (hex) of every value's UTF-8 bytes under the UTF-8 bytes of `key_text`,
    each after `prefix`; nulls stay null. Native code over the whole column.

    >>> hmac_hex(pa.array(["what do ya want for nothing?"]), "Jefe").to_pylist()  # RFC 4231 case 2
    ['5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843']
    """
    series = pl.from_arrow(pa.chunked_array([column]) if isinstance(column, pa.Array) else column)
    assert isinstance(series, pl.Series)
    frame = pl.DataFrame({"v": series.cast(pl.Utf8)})
    hashed = frame.select(pl.lit(prefix) + plh.col("v").chash.hmac_sha256(key=key_text))
    return pa.chunked_array([hashed.to_series().to_arrow().cast(pa.string())])


def keyed_hash(column: Column, key: DataKey) -> pa.ChunkedArray:
    """HMAC-SHA256 of every value (UTF-8) under `key`, as ``"<key id>:<hex>"``; nulls stay null."""
    if key.kind != "hmac":
        raise KeyManagementError(f"key '{key.id}' is not an HMAC key")
    return hmac_hex(column, key.hmac_text, prefix=f"{key.id}:")


def tokenize(column: Column, key: DataKey, *, context: str) -> pa.Array:
    """Deterministic AES-SIV encryption of every value: ``"<key id>:<base64url>"``.

    Equal inputs give equal tokens (so they still join); only :func:`detokenize` with the key
    turns a token back. `context` (the column's name) is authenticated, so a token moved to
    another column does not decrypt.
    """
    if key.kind != "siv":
        raise KeyManagementError(f"key '{key.id}' is not an AES-SIV key")
    siv = AESSIV(key.secret)
    aad = [context.encode()]
    values = pc.cast(column, pa.string()).to_pylist()
    return pa.array(
        [None if v is None else f"{key.id}:" + base64.urlsafe_b64encode(siv.encrypt(v.encode(), aad)).decode() for v in values],
        pa.string(),
    )


def detokenize(token: str, key: DataKey, *, context: str) -> str:
    """The value behind a token made by :func:`tokenize` with `key` for column `context`."""
    prefix, _, body = token.partition(":")
    if prefix != key.id:
        raise KeyManagementError(f"token was made with key '{prefix}', not '{key.id}'")
    try:
        return AESSIV(key.secret).decrypt(base64.urlsafe_b64decode(body), [context.encode()]).decode()
    except (InvalidTag, ValueError):
        raise PolicyViolation(f"not a token of column '{context}' made with key '{key.id}'") from None


def generalize(column: Column, rule: dict[str, Any]) -> pa.ChunkedArray | pa.Array:
    """Coarsen values: dates to the first day of their ``month`` or ``year`` (``{to: year}``),
    numbers down to a multiple of ``width``, text to its first ``prefix`` characters."""
    if "to" in rule:
        unit = {"month": "month", "year": "year"}[rule["to"]]
        if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            return pc.floor_temporal(column, unit=unit)
        raise PolicyViolation(f"'to: {rule['to']}' generalizes dates, not {column.type}")
    if "width" in rule:
        width = rule["width"]
        floored = pc.multiply(pc.floor(pc.divide(pc.cast(column, pa.float64()), float(width))), float(width))
        return pc.cast(floored, column.type)
    if "prefix" in rule:
        return pc.utf8_slice_codeunits(pc.cast(column, pa.string()), 0, int(rule["prefix"]))
    raise ValueError(f"unknown generalization {rule!r}")
