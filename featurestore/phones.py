"""Phone numbers to one form, by Google's libphonenumber rules (the ``phonenumbers`` package):
the same number always becomes the same E.164 text, however it was written, so it always gets
the same pseudonym. Ingestion (whole columns) and online lookups (one key) call this module.

A number is parsed with the policy's region for numbers written without a country code
(``region: GB``, or ``country_code: "44"``, read as that code's main region), and must be a
valid number there; an extension is kept (``+14155550001;ext=12``), so two extensions of one
switchboard stay two values.

>>> normalize_phone("+44 (0)20 7946 0958", "US"), normalize_phone("011 44 20 7946 0958", "US")
('+442079460958', '+442079460958')
>>> normalize_phone("1-415-555-0001", "US"), normalize_phone("(415) 555-0001", "US")
('+14155550001', '+14155550001')
>>> normalize_phone("not a number", "US") is None, normalize_phone("020 7946 0958", None) is None
(True, True)
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa  # imported where used: policy files are checked without pyarrow


def region_of(region: str | None, country_code: str | None) -> str | None:
    """The region numbers without a country code are read in: `region` (ISO 3166 alpha-2), else
    the main region of the calling code `country_code` (``"1"`` -> ``"US"``), else None.

    >>> region_of(None, "44"), region_of("ca", "1"), region_of(None, None)
    ('GB', 'CA', None)
    """
    if region:
        return region.upper()
    if country_code:
        import phonenumbers

        found = phonenumbers.region_code_for_country_code(int(country_code))
        return None if found == phonenumbers.UNKNOWN_REGION else str(found)
    return None


def known_region(region: str) -> bool:
    """Whether libphonenumber has numbering rules for `region` (policy files are checked with this)."""
    import phonenumbers

    return region.upper() in phonenumbers.SUPPORTED_REGIONS


def known_country_code(code: str) -> bool:
    """Whether `code` is a calling code libphonenumber knows (``"49"``: yes, ``"999"``: no)."""
    import phonenumbers

    return code.isdigit() and int(code) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE


@lru_cache(maxsize=65536)
def normalize_phone(text: str, region: str | None) -> str | None:
    """E.164 text of a valid number (``;ext=N`` appended for an extension), or None."""
    import phonenumbers

    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return f"{e164};ext={number.extension}" if number.extension else str(e164)


def normalize_phones(column: pa.Array | pa.ChunkedArray, region: str | None) -> tuple[pa.ChunkedArray, int | None]:
    """Every value of a column normalized (each distinct value parsed once), and the index of the
    first value that is not a valid number (None: all are; nulls stay null and are not errors)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    chunked = pa.chunked_array([column]) if isinstance(column, pa.Array) else column
    text = pc.cast(chunked, pa.string()) if not pa.types.is_string(chunked.type) else chunked
    distinct = pc.unique(text)
    normalized = pa.array(
        [None if v is None else normalize_phone(v, region) for v in distinct.to_pylist()], pa.string()
    )
    result = pc.take(normalized, pc.index_in(text, value_set=distinct))
    result = result if isinstance(result, pa.ChunkedArray) else pa.chunked_array([result])
    bad = pc.and_(pc.is_null(result), pc.is_valid(text))
    first = pc.index(bad, True).as_py()
    return result, (None if first < 0 else int(first))
