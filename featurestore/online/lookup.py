"""Online lookups: the hot path, kept free of file reads, registry queries and dataframes.

A :class:`ServingPlan` resolves once what a (features, purpose) request needs: the online
tables, the requested columns, TTLs, how raw keys become stored keys (normalize + HMAC under
every key id, for pseudonymized keys) and the policy decision. Plans are cached and rebuilt
when older than :data:`PLAN_TTL_SECONDS`, so a revoked approval or a new key takes effect within
that time.

Phone keys go through the one phone function ingestion uses (:mod:`featurestore.phones`).
Text and e-mail keys are normalized here in plain Python, by the same rules as the polars
implementation used at ingestion (:mod:`featurestore.privacy.pseudonymize`), which it falls back
to for non-ASCII text; a differential test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..privacy.treatments.keyed_hash import pseudonymizer
from . import KEY_SEPARATOR, VALUES_AT, Row

if TYPE_CHECKING:
    from ..governance import Grant

PLAN_TTL_SECONDS = 1.0
PRESENT, MISSING, EXPIRED = "present", "missing", "expired"

# Rust's char::is_whitespace (Unicode White_Space), which polars' strip_chars() uses; Python's
# str.strip() would also strip U+001C..U+001F.
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def normalize_one(value: Any, kind: str, region: str | None) -> str | None:
    """One raw identifier, normalized exactly as ingestion does (None: cannot be normalized).

    >>> normalize_one(" Ann@Example.COM ", "email", None), normalize_one("020 7946 0958", "phone", "GB")
    ('ann@example.com', '+442079460958')
    """
    text = value if isinstance(value, str) else str(value)
    if kind == "none":
        return text
    if kind == "phone":
        from ..phones import normalize_phone

        return normalize_phone(text, region)
    trimmed = text.strip(_WHITESPACE)
    if trimmed.isascii():
        return trimmed.lower()
    # Non-ASCII case mapping (final sigma, dotted I) differs between Python and Polars: take
    # the column implementation itself, so a key hashes the same online as at ingestion.
    from ..privacy.pseudonymize import normalize

    result: str | None = normalize(pa.array([text]), kind).to_pylist()[0]
    return result


KEY_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
NONE_TYPE = type(None)


def check_key(value: Any, form: KeyForm, row: int, view: str) -> Any:
    """`value` if it has the join key's declared type (None passes: no key, no value); else a
    RetrievalError naming the row, the key and the types, never the value."""
    if value is None:
        return value
    if form.dtype in KEY_RANGES:
        lo, hi = KEY_RANGES[form.dtype]
        if type(value) is int and lo <= value <= hi:
            return value
        got = "a whole number out of that range" if type(value) is int else _kind(value)
        want = f"a whole number ({form.dtype}, {lo} to {hi})"
    else:
        if type(value) is str:
            return value
        got, want = _kind(value), "a string"
    from ..errors import RetrievalError

    hint = (
        " For several entities pass a list of rows or columns of equal length."
        if isinstance(value, (list, tuple))
        else ""
    )
    raise RetrievalError(f"entity row {row}: join key '{form.name}' of {view} must be {want}, not {got}.{hint}")


def missing_key(row: int, entity: Mapping[str, Any], name: str, view: str) -> Exception:
    """The error for an entity row without one of the join keys (its column names, never its values)."""
    from ..errors import RetrievalError

    has = ", ".join(sorted(map(str, entity))) or "nothing"
    return RetrievalError(f"entity row {row} has no '{name}', a join key of {view} (it has: {has})")


def _kind(value: Any) -> str:
    kinds = {
        bool: "a boolean",
        float: "a fractional number",
        list: "a list",
        tuple: "a list",
        dict: "an object",
        int: "a whole number",
        str: "a string",
    }
    return kinds.get(type(value), f"a {type(value).__name__}")


def entity_rows(data: Any) -> list[Mapping[str, Any]]:
    """Entity rows from one row (a mapping of scalars), columns (a mapping of equal-length lists, as
    Feast takes them), a list of rows, or an Arrow table / pandas / polars data frame."""
    from ..errors import RetrievalError

    if type(data) is dict and not any(isinstance(v, (list, tuple)) for v in data.values()):
        return [data]  # one row: the common case of a serving call
    module = type(data).__module__.split(".", 1)[0]
    if module == "pandas":
        data = pa.Table.from_pandas(data, preserve_index=False)
    elif module == "polars" and hasattr(data, "to_arrow"):
        data = data.to_arrow()
    if isinstance(data, pa.Table):
        rows: list[Mapping[str, Any]] = data.to_pylist()
        return rows
    if isinstance(data, Mapping):
        columns = [k for k, v in data.items() if isinstance(v, (list, tuple))]
        if not columns:
            return [data]
        if len(columns) != len(data):
            raise RetrievalError(
                f"entity rows mix columns (lists: {', '.join(sorted(columns))}) and single values: give "
                "every key as a list of equal length, or pass one row per entity"
            )
        lengths = {len(data[k]) for k in columns}
        if len(lengths) != 1:
            raise RetrievalError(
                f"entity columns {', '.join(sorted(columns))} have different lengths ({sorted(lengths)})"
            )
        return [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
    if isinstance(data, (list, tuple)):
        for row, entity in enumerate(data):
            if type(entity) is not dict and not isinstance(entity, Mapping):  # the ABC check costs 10x the type test
                raise RetrievalError(f"entity row {row} is {_kind(entity)}, not an object of join keys")
        return list(data)
    raise RetrievalError(f"entity rows must be a mapping, a list of mappings or a data frame, not {_kind(data)}")


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
    """None (stored as given), or the name of the treatment that made the stored keys."""
    dtype: str = "string"
    """The join key's declared type: a value of another type is refused, never silently missed."""
    normalize: str = "none"
    region: str | None = None
    """Where a phone number without a country code is read (phone keys only)."""
    hmac_keys: tuple[tuple[str, bytes], ...] = ()
    """(key id, HMAC key bytes), newest last: keyed-hash forms for a form made by hand; a plan
    gives `makers`."""
    makers: tuple[Callable[[str], str], ...] = ()
    """Per key id, newest last, the stored form of one normalized value
    (:meth:`featurestore.privacy.treatments.Treatment.lookup_forms`)."""

    def __post_init__(self) -> None:
        if self.hmac_keys and not self.makers:
            object.__setattr__(self, "makers", tuple(pseudonymizer(kid, secret) for kid, secret in self.hmac_keys))

    def forms(self, raw: Any) -> list[str]:
        if raw is None:
            return []
        if self.treatment is None:
            return [raw if isinstance(raw, str) else str(raw)]
        normalized = normalize_one(raw, self.normalize, self.region)
        if normalized is None:
            return []
        return [make(normalized) for make in self.makers]


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
    read_of_one: tuple[str | None, tuple[str, ...], int] = (None, (), 1)
    """(purpose, audit_key, 1): what the read audit counts for one entity, made once."""
    single: Callable[[Mapping[str, Any], int], OnlineResponse | None] | None = None
    """The single-entity path (:func:`single_lookup`), where the plan has one."""


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


def lookup(
    plan: ServingPlan,
    rows: Sequence[Mapping[str, Any]],
    read: Callable[[str, list[str]], list[Row | None]],
    now_us: int,
) -> OnlineResponse:
    """Answer a request with a plan: stored keys per row, one read per view, TTL against now."""
    values: dict[str, list[Any]] = {out: [] for out in plan.outputs}
    statuses: dict[str, list[str]] = {out: [] for out in plan.outputs}
    for view in plan.views:
        if len(view.keys) == 1 and view.keys[0].treatment is None:
            _lookup_plain(view, rows, read, now_us, values, statuses)
            continue
        per_row: list[list[str]] = []
        for row_number, entity in enumerate(rows):
            try:
                parts = [k.forms(check_key(entity[k.name], k, row_number, view.ref)) for k in view.keys]
            except KeyError as exc:
                raise missing_key(row_number, entity, str(exc.args[0]), view.ref) from None
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


def _lookup_plain(
    view: ViewServing,
    rows: Sequence[Mapping[str, Any]],
    read: Callable[[str, list[str]], list[Row | None]],
    now_us: int,
    values: dict[str, list[Any]],
    statuses: dict[str, list[str]],
) -> None:
    """:func:`lookup` for the common case, one join key stored as given: one key per row (a single
    entity row that holds only its key takes :func:`single_lookup` instead). The per-entity work
    runs in C where it can: the type check over the set of key types, keys made text by ``map``,
    and the requested columns cut out of the stored rows by one ``zip``."""
    form = view.keys[0]
    name = form.name
    try:
        raw = [entity[name] for entity in rows]
    except KeyError:
        row_number, bad = next((i, e) for i, e in enumerate(rows) if name not in e)
        raise missing_key(row_number, bad, name, view.ref) from None
    kinds = set(map(type, raw))
    gaps = NONE_TYPE in kinds
    if form.dtype == "string":
        right = kinds <= {str, NONE_TYPE}
    else:
        lo, hi = KEY_RANGES[form.dtype]
        given = [v for v in raw if v is not None] if gaps else raw
        right = kinds <= {int, NONE_TYPE} and (not given or (lo <= min(given) and max(given) <= hi))
    if not right:  # only on a bad batch: find and name the first bad row
        for row_number, v in enumerate(raw):
            check_key(v, form, row_number, view.ref)
    if not gaps:
        found = read(view.table, raw if form.dtype == "string" else list(map(str, raw))) if raw else []
    else:
        keys = [None if v is None else v if type(v) is str else str(v) for v in raw]
        present = [k for k in keys if k is not None]
        by_key = dict(zip(present, read(view.table, present), strict=True)) if present else {}
        found = [by_key.get(k) if k is not None else None for k in keys]
    ttl_us = view.ttl_us
    row_status = [value_status(None if row is None else row[1], now_us, ttl_us) for row in found]
    width = max(view.positions, default=VALUES_AT - 1) + 1
    blank = (None,) * width
    chosen = [row if status == PRESENT else blank for row, status in zip(found, row_status, strict=True)]
    # Not strict: a blank is cut at the widest requested position, stored rows run on; zip stops at the shorter.
    columns = list(zip(*chosen, strict=False)) if chosen else [()] * width
    for out, pos, conv in zip(view.outputs, view.positions, view.converters, strict=True):
        column = columns[pos]
        values[out].extend(column if conv is None else [None if v is None else conv(v) for v in column])
        statuses[out].extend(row_status)


def single_lookup(
    view: ViewServing, read_one: Callable[[str], Row | None]
) -> Callable[[Mapping[str, Any], int], OnlineResponse | None]:
    """:func:`lookup` of one view with one join key stored as given, for a request of one entity
    row that holds exactly that key: the serving hot path, with every step decided in advance.
    `read_one` gives ``(*requested values, event time)`` of a key (an OnlineStore's point_reader).
    The function answers None for any other shape of request (the caller takes :func:`lookup`)."""
    form = view.keys[0]
    name, ref, ttl_us = form.name, view.ref, view.ttl_us
    lo, hi = KEY_RANGES.get(form.dtype, (0, 0))
    text = form.dtype == "string"
    outputs = view.outputs
    converters = view.converters
    plain = all(conv is None for conv in converters)

    def single(entity: Mapping[str, Any], now_us: int) -> OnlineResponse | None:
        if len(entity) != 1 or name not in entity:
            return None
        raw = entity[name]
        if type(raw) is str if text else type(raw) is int and lo <= raw <= hi:
            row = read_one(raw if text else str(raw))
        elif raw is None:
            row = None
        elif isinstance(raw, (list, tuple)):
            return None  # columns of entity rows
        else:
            check_key(raw, form, 0, ref)
            return None  # not reached: check_key refused the value
        status = value_status(None if row is None else row[-1], now_us, ttl_us)
        values: dict[str, list[Any]] = {}
        statuses: dict[str, list[str]] = {}
        if status != PRESENT:
            for out in outputs:
                values[out] = [None]
                statuses[out] = [status]
        elif plain:  # one loop fills both: about 40% faster than two comprehensions
            assert row is not None
            for out, value in zip(outputs, row, strict=False):  # the row ends with its event time
                values[out] = [value]
                statuses[out] = [PRESENT]
        else:
            assert row is not None
            for out, value, conv in zip(outputs, row, converters, strict=False):
                values[out] = [value if conv is None or value is None else conv(value)]
                statuses[out] = [PRESENT]
        return OnlineResponse(values, statuses)

    return single
