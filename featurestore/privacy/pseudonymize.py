"""Column treatments applied before anything reaches disk: normalize, keyed hash, tokenize,
generalize. Each takes and returns Arrow columns; keys come in as arguments.

Keyed hashing is HMAC-SHA256 (computed in native code over whole columns by polars-hash,
checked against the standard library on RFC 4231 vectors in the tests), on normalized input,
written as ``"<key id>:<64 hex digits>"`` so every pseudonym names the key that made it.

>>> import pyarrow as pa
>>> normalize(pa.array(["  Ann.Lee@Example.COM "]), "email").to_pylist()
['ann.lee@example.com']
>>> normalize(pa.array(["030 1234567", "+49 (30) 1234567", "0049 30 1234567"]), "phone", region="DE").to_pylist()
['+49301234567', '+49301234567', '+49301234567']
>>> generalize(pa.array([12, 37, None]), {"width": 10}).to_pylist()
[10, 30, None]
>>> generalize(pa.array(["75011", "10115"]), {"prefix": 2}).to_pylist()
['75', '10']
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from ..errors import KeyManagementError, PolicyViolation
from .keys import DataKey

if TYPE_CHECKING:
    import polars as pl  # imported where used: the CLI starts without polars

Column: TypeAlias = "pa.Array | pa.ChunkedArray"


def _normalized(expr: pl.Expr, kind: str) -> pl.Expr:
    """The normalized text of ``none``, ``text`` and ``email`` values (phones: :mod:`.phones`)."""
    import polars as pl

    text = expr.cast(pl.Utf8)
    if kind == "none":
        return text
    if kind in ("text", "email"):
        return text.str.strip_chars().str.to_lowercase()
    raise ValueError(f"unknown normalization {kind!r}")


def _frame(column: Column) -> pl.DataFrame:
    import polars as pl

    series = pl.from_arrow(pa.chunked_array([column]) if isinstance(column, pa.Array) else column)
    assert isinstance(series, pl.Series)
    return pl.DataFrame({"v": series})


def normalize(column: Column, kind: str, *, region: str | None = None, name: str | None = None) -> pa.ChunkedArray:
    """Normalize identifiers so the same person always gives the same input to the hash.

    - ``none``: as given (numbers become their decimal text);
    - ``text``: trimmed and lower-cased;
    - ``email``: trimmed and lower-cased;
    - ``phone``: E.164 by libphonenumber's rules (:func:`.phones.normalize_phone`), numbers
      without a country code read in `region`. A value that is not a valid number raises
      PolicyViolation naming its row and column `name` (never its value).
    """
    if kind == "phone":
        from ..phones import normalize_phones

        values, bad = normalize_phones(column, region)
        if bad is not None:
            raise PolicyViolation(
                (f"column '{name}', " if name else "")
                + f"row {bad}: not a valid phone number"
                + (
                    f" (numbers without a country code are read in region {region})"
                    if region
                    else "; set region (e.g. region: GB) in the policy for numbers written without a country code"
                )
            )
        return values
    import polars as pl

    frame = _frame(column).select(_normalized(pl.col("v"), kind).alias("v"))
    return pa.chunked_array([frame["v"].to_arrow().cast(pa.string())])


def _chash(expr: pl.Expr) -> Any:
    """polars-hash's namespace on an expression (registered at import, unknown to type checkers)."""
    import polars_hash  # noqa: F401  (registers the .chash namespace)

    return cast(Any, expr).chash


def hmac_hex(column: Column, key_text: str, *, prefix: str = "") -> pa.ChunkedArray:
    """HMAC-SHA256 (hex) of every value's UTF-8 bytes under the UTF-8 bytes of `key_text`,
    each after `prefix`; nulls stay null. Native code over the whole column.

    >>> hmac_hex(pa.array(["what do ya want for nothing?"]), "Jefe").to_pylist()  # RFC 4231 case 2
    ['5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843']
    """
    import polars as pl

    frame = _frame(column).select(pl.lit(prefix) + _chash(pl.col("v").cast(pl.Utf8)).hmac_sha256(key=key_text))
    return pa.chunked_array([frame.to_series().to_arrow().cast(pa.string())])


PSEUDONYM_HEX_DIGITS = 32
"""A pseudonym keeps the first 128 bits of the HMAC-SHA256 (RFC 2104 section 5 allows truncation
to half the output): collisions stay negligible (about 1e-21 at a billion identifiers) and the
stored column is half as wide."""


def keyed_hash(column: Column, key: DataKey, *, normalize: str = "none", region: str | None = None) -> pa.ChunkedArray:
    """Normalize, then HMAC-SHA256 under `key`, as ``"<key id>:<first 128 bits in hex>"``;
    nulls stay null. One native pass over the column."""
    return keyed_hash_columns({"": (column, normalize, region)}, key)[""]  # "": no column name for messages


def keyed_hash_columns(columns: dict[str, tuple[Column, str, str | None]], key: DataKey) -> dict[str, pa.ChunkedArray]:
    """:func:`keyed_hash` for several columns at once, (column, normalization, phone region)
    by name: one native pass, in parallel across columns of equal length.

    Identifiers repeat (one customer, many rows), so a column whose sample is mostly repeats
    is dictionary-encoded first: each distinct value is hashed once and mapped back.
    """
    import polars as pl

    if key.kind != "hmac":
        raise KeyManagementError(f"key '{key.id}' is not an HMAC key")
    values: dict[str, pa.ChunkedArray] = {}
    indices: dict[str, pa.Array] = {}
    kinds = {name: kind for name, (_, kind, _) in columns.items()}
    for name, (column, kind, region) in columns.items():
        if kind == "phone":  # parsed by libphonenumber first (each distinct value once), then hashed as text
            column, kinds[name] = normalize(column, "phone", region=region, name=name or None), "none"
        chunked = pa.chunked_array([column]) if isinstance(column, pa.Array) else column
        if len(chunked) >= 20_000 and pc.count_distinct(chunked.slice(0, 10_000)).as_py() < 5_000:
            encoded = pc.dictionary_encode(chunked).combine_chunks()
            indices[name] = encoded.indices
            chunked = pa.chunked_array([encoded.dictionary])
        values[name] = chunked
    by_length: dict[int, list[str]] = {}
    for name, chunked in values.items():
        by_length.setdefault(len(chunked), []).append(name)
    hashed: dict[str, pa.ChunkedArray] = {}
    for names in by_length.values():
        frame = pl.DataFrame({name: pl.from_arrow(values[name]) for name in names})
        exprs: list[pl.Expr] = []
        for name in names:
            digest = (
                _chash(_normalized(pl.col(name), kinds[name]))
                .hmac_sha256(key=key.hmac_text)
                .str.slice(0, PSEUDONYM_HEX_DIGITS)
            )
            exprs.append((pl.lit(f"{key.id}:") + digest).alias(name))
        result = frame.select(exprs)
        for name in names:
            hashed[name] = pa.chunked_array([result[name].to_arrow()])
    return {name: pc.take(h, indices[name]) if name in indices else h for name, h in hashed.items()}


def token_context(policy_id: str, view: str, column: str) -> str:
    """The authenticated context of a view column's tokens: the governing policy, the view and
    the column, so a token presented through another view or column does not decrypt.

    >>> token_context("people", "person", "iban")
    'people/person/iban'
    """
    return f"{policy_id}/{view}/{column}"


def tokenize(column: Column, key: DataKey, *, context: str) -> pa.Array:
    """Deterministic AES-SIV encryption of every value: ``"<key id>:<base64url>"``.

    Equal inputs give equal tokens (so they still join); only :func:`detokenize` with the key
    turns a token back. `context` (:func:`token_context` for view columns) is authenticated, so
    a token moved to another view or column does not decrypt.
    """
    if key.kind != "siv":
        raise KeyManagementError(f"key '{key.id}' is not an AES-SIV key")
    siv = AESSIV(key.secret)
    aad = [context.encode()]
    values = pc.cast(column, pa.string()).to_pylist()
    return pa.array(
        [
            None if v is None else f"{key.id}:" + base64.urlsafe_b64encode(siv.encrypt(v.encode(), aad)).decode()
            for v in values
        ],
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
        raise PolicyViolation(
            f"not a token of {context} made with key '{key.id}': a token only opens through the "
            "view and column it was made for"
        ) from None


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
