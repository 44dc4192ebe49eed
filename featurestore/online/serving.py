"""Online lookups: the hot path, kept free of file reads, registry queries and dataframes.

A :class:`ServingPlan` resolves once what a (features, purpose) request needs: the online
tables, the requested columns, TTLs, how raw keys become stored keys (normalize + HMAC under
every key id, for pseudonymized keys) and the policy decision. Plans are cached and rebuilt
when older than :data:`PLAN_TTL_SECONDS`, so a revoked approval or a new key takes effect within
that time.

Single raw keys are normalized here in plain Python, by the same rules as the polars
implementation used at ingestion (:mod:`featurestore.privacy.pseudonymize`); a differential test
keeps the two equal.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..privacy.pseudonymize import PSEUDONYM_HEX_DIGITS
from . import KEY_SEPARATOR, VALUES_AT, Row

if TYPE_CHECKING:
    from ..governance import Grant

PLAN_TTL_SECONDS = 1.0
PRESENT, MISSING, EXPIRED = "present", "missing", "expired"

# Rust's char::is_whitespace (Unicode White_Space), which polars' strip_chars() uses; Python's
# str.strip() would also strip U+001C..U+001F.
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_SEPARATORS = str.maketrans("", "", " -.()/+")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def normalize_one(value: Any, kind: str, country_code: str | None) -> str | None:
    """One raw identifier, normalized exactly as ingestion does (None: cannot be normalized).

    >>> normalize_one(" Ann@Example.COM ", "email", None), normalize_one("020 7946 0958", "phone", "44")
    ('ann@example.com', '+442079460958')
    """
    text = value if isinstance(value, str) else str(value)
    if kind == "none":
        return text
    trimmed = text.strip(_WHITESPACE)
    if kind in ("text", "email"):
        if trimmed.isascii():
            return trimmed.lower()
        # Non-ASCII case mapping (final sigma, dotted I) differs between Python and Polars: take
        # the column implementation itself, so a key hashes the same online as at ingestion.
        from ..privacy.pseudonymize import normalize

        result: str | None = normalize(pa.array([text]), kind).to_pylist()[0]
        return result
    digits = trimmed.translate(_SEPARATORS)
    if trimmed.startswith("00"):
        digits = digits[2:]
    if trimmed.startswith("+") or trimmed.startswith("00"):
        result = "+" + digits
    elif country_code:
        result = f"+{country_code}" + (digits[1:] if digits.startswith("0") else digits)
    else:
        return None
    return result if _E164.fullmatch(result) else None


def value_status(event_us: int | None, now_us: int, ttl_us: int | None) -> str:
    """The status of an online value whose event time is `event_us` (None: no value), read at
    `now_us`: missing (none, or materialized ahead of now), expired (older than the TTL now) or
    present. The one rule for every online read and the consistency check.

    >>> value_status(None, 10, None), value_status(11, 10, None), value_status(4, 10, 5), value_status(5, 10, 5)
    ('missing', 'missing', 'expired', 'present')
    """
    if event_us is None or event_us > now_us:
        return MISSING
    if ttl_us is not None and event_us < now_us - ttl_us:
        return EXPIRED
    return PRESENT


@dataclass(frozen=True)
class KeyForm:
    """How one raw join key becomes its stored forms."""

    name: str
    treatment: str | None
    """None (stored as given), "keyed_hash" or "tokenize"."""
    normalize: str = "none"
    country_code: str | None = None
    hmac_keys: tuple[tuple[str, bytes], ...] = ()
    """(key id, HMAC key bytes), newest last."""
    tokenizers: tuple[Callable[[str], str], ...] = ()

    def forms(self, raw: Any) -> list[str]:
        if raw is None:
            return []
        if self.treatment is None:
            return [raw if isinstance(raw, str) else str(raw)]
        normalized = normalize_one(raw, self.normalize, self.country_code)
        if normalized is None:
            return []
        if self.treatment == "keyed_hash":
            data = normalized.encode()
            return [f"{kid}:" + hmac.new(secret, data, hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_DIGITS]
                    for kid, secret in self.hmac_keys]
        return [tokenize(normalized) for tokenize in self.tokenizers]


@dataclass(frozen=True)
class ViewServing:
    """One view version's part of a plan; made only from an online read grant."""

    grant: Grant
    ref: str
    table: str
    keys: tuple[KeyForm, ...]
    positions: tuple[int, ...]
    """Index in a stored row of each requested feature (from VALUES_AT on)."""
    outputs: tuple[str, ...]
    converters: tuple[Callable[[Any], Any] | None, ...]
    ttl_us: int | None

    def __post_init__(self) -> None:
        self.grant.require("online")


@dataclass
class ServingPlan:
    """What a request for some features, for a purpose, needs; built once, reused."""

    views: list[ViewServing]
    outputs: list[str]
    built_at: float
    audit_key: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class OnlineResponse:
    """Feature values per entity row, with a status per value: present, missing or expired."""

    values: dict[str, list[Any]]
    statuses: dict[str, list[str]]

    def to_dict(self) -> dict[str, list[Any]]:
        """Values and statuses as plain lists (statuses under ``<feature>__status``)."""
        out: dict[str, list[Any]] = dict(self.values)
        out.update({f"{k}__status": v for k, v in self.statuses.items()})
        return out


def converter(dtype: str) -> Callable[[Any], Any] | None:
    """How a stored online value turns back into its Python value (None: as stored)."""
    if dtype == "timestamp":
        return lambda v: None if v is None else EPOCH + timedelta(microseconds=v)
    if dtype == "date":
        return lambda v: None if v is None else date(1970, 1, 1) + timedelta(days=v)
    if dtype == "bool":
        return lambda v: None if v is None else bool(v)
    return None


def lookup(plan: ServingPlan, rows: Sequence[dict[str, Any]], read: Callable[[str, list[str]], list[Row | None]],
           now_us: int) -> OnlineResponse:
    """Answer a request with a plan: stored keys per row, one read per view, TTL against now."""
    values: dict[str, list[Any]] = {out: [] for out in plan.outputs}
    statuses: dict[str, list[str]] = {out: [] for out in plan.outputs}
    for view in plan.views:
        if len(view.keys) == 1 and view.keys[0].treatment is None:
            _lookup_plain(view, rows, read, now_us, values, statuses)
            continue
        per_row: list[list[str]] = []
        for entity in rows:
            try:
                parts = [k.forms(entity[k.name]) for k in view.keys]
            except KeyError as exc:
                from ..errors import RetrievalError

                raise RetrievalError(f"entity row {entity!r} has no '{exc.args[0]}', a join key of {view.ref}") from None
            if len(parts) == 1:
                per_row.append(parts[0])
            else:  # composite keys: every combination of the parts' forms
                combos = [""]
                for forms in parts:
                    combos = [f"{c}{KEY_SEPARATOR}{f}" if c else f for c in combos for f in forms] if forms else []
                per_row.append(combos)
        flat = [k for forms in per_row for k in forms]
        found = dict(zip(flat, read(view.table, flat), strict=True)) if flat else {}
        for forms in per_row:
            best: Row | None = None
            for key in forms:  # newest key id last: it wins ties
                row = found.get(key)
                if row is not None and (best is None or row[1] >= best[1]):
                    best = row
            status = value_status(None if best is None else best[1], now_us, view.ttl_us)
            if status != PRESENT:
                best = None
            for out, pos, conv in zip(view.outputs, view.positions, view.converters, strict=True):
                value = None if best is None else best[pos]
                values[out].append(conv(value) if conv is not None and value is not None else value)
                statuses[out].append(status)
    return OnlineResponse(values, statuses)


def _lookup_plain(view: ViewServing, rows: Sequence[dict[str, Any]], read: Callable[[str, list[str]], list[Row | None]],
                  now_us: int, values: dict[str, list[Any]], statuses: dict[str, list[str]]) -> None:
    """:func:`lookup` for the common case, one join key stored as given: one key per row."""
    name = view.keys[0].name
    try:
        keys = [None if (v := entity[name]) is None else v if isinstance(v, str) else str(v) for entity in rows]
    except KeyError:
        from ..errors import RetrievalError

        bad = next(e for e in rows if name not in e)
        raise RetrievalError(f"entity row {bad!r} has no '{name}', a join key of {view.ref}") from None
    present = [k for k in keys if k is not None]
    found = dict(zip(present, read(view.table, present), strict=True)) if present else {}
    ttl_us = view.ttl_us
    row_status: list[str] = []
    chosen: list[Row | None] = []
    for key in keys:
        row = found.get(key) if key is not None else None
        status = value_status(None if row is None else row[1], now_us, ttl_us)
        row_status.append(status)
        chosen.append(row if status == PRESENT else None)
    for out, pos, conv in zip(view.outputs, view.positions, view.converters, strict=True):
        column = [None if row is None else row[pos] for row in chosen]
        values[out].extend(column if conv is None else [None if v is None else conv(v) for v in column])
        statuses[out].extend(row_status)
