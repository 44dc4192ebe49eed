"""Durations: one grammar for every duration a user writes (view TTLs, policy retention, erasure
deadlines, privacy-budget periods) and one way to print them.

Written as a number of seconds, a short form (``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``,
``"2w"``, or a compound like ``"1d6h"``) or an ISO 8601 duration (``"P30D"``, ``"PT12H"``,
``"P6M"``, ``"P1Y"``): a year counts 365 days and a month 30 (retention names periods, not
calendar dates). Every duration is longer than zero.

>>> parse_duration("P3M"), parse_duration("1d6h"), parse_duration(90)
(datetime.timedelta(days=90), datetime.timedelta(days=1, seconds=21600), datetime.timedelta(seconds=90))
>>> format_duration(parse_duration("P400D")), format_duration(parse_duration("90m")), format_duration(parse_duration("1s"))
('400 days', '1 hour 30 minutes', '1 second')
"""

from __future__ import annotations

import re
from datetime import timedelta

_SHORT_RE = re.compile(r"(?:\d+[wdhms])+")
_SHORT_PART = re.compile(r"(\d+)([wdhms])")
_SHORT_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_ISO_RE = re.compile(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")
GRAMMAR = (
    "a number and a unit like '30d', '12h', '90m' or '1d6h', or an ISO 8601 duration like 'P30D', 'P6M' or 'PT12H'"
)
"""How to write a duration, for error messages."""


def parse_duration(value: str | int | timedelta) -> timedelta:
    """A duration from its text, a number of seconds or a timedelta; ValueError (with the
    grammar) for anything else or for a duration that is not longer than zero."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write {GRAMMAR}")
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, int):
        result = timedelta(seconds=value)
    else:
        text = str(value).strip()
        iso = _ISO_RE.fullmatch(text)
        if _SHORT_RE.fullmatch(text):
            result = timedelta(seconds=sum(int(n) * _SHORT_UNITS[u] for n, u in _SHORT_PART.findall(text)))
        elif iso and any(iso.groups()) and not text.endswith("T"):
            y, mo, w, d, h, mi, s = (int(g) if g else 0 for g in iso.groups())
            result = timedelta(days=365 * y + 30 * mo + 7 * w + d, hours=h, minutes=mi, seconds=s)
        else:
            raise ValueError(f"{str(value)[:40]!r} is not a duration; write {GRAMMAR}")
    if result <= timedelta(0):
        raise ValueError(f"{str(value)[:40]!r} must be longer than zero")
    return result


def format_duration(value: timedelta) -> str:
    """A duration in words, its largest units first: ``"400 days"``, ``"1 day 6 hours"``."""
    seconds = int(value.total_seconds())
    parts = []
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount} {name}{'' if amount == 1 else 's'}")
    return " ".join(parts) or "0 seconds"


def short_duration(value: timedelta) -> str:
    """The short form :func:`parse_duration` reads back, as definitions store it: ``"30d"``, ``"1d6h"``."""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"
