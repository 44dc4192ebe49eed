"""File and disk faults of the offline file and the registry, as StoreDamaged errors that say what to do.

DuckDB, SQLite and the OS report faults in their own words ("Corrupt database file: computed
checksum ...", "database disk image is malformed", "No space left on device", sometimes wrapped in
a transaction error). These rules turn each into a message that names the file, the kind of fault
and the fix, and never quote the underlying text (which could hold a statement's values).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import StoreDamaged


@dataclass(frozen=True)
class Fault:
    """One kind of fault: the words that identify it and what the message says."""

    kind: str
    markers: tuple[str, ...]
    what: str
    fix: str


OFFLINE_FAULTS = (
    Fault(
        "full",
        ("no space left on device", "disk quota exceeded", "file too large"),
        "is on a full disk",
        "free space on that disk and try again; nothing of the failed operation was kept",
    ),
    Fault(
        "read-only",
        ("read-only file system", "permission denied", "operation not permitted"),
        "cannot be written here",
        "make the store directory and its files writable for this user (writes need the .lock, .turnstile and .wal "
        "files beside it too)",
    ),
    Fault(
        "damaged",
        (
            "checksum",
            "corrupt",
            "not a valid duckdb database",
            "invalid database",
            "file is not a valid",
            "unexpected end of file",
            "serialization error",
            "malformed",
            "failed to read database header",
            "could not read enough bytes",
        ),
        "is damaged (a failed disk, a truncated copy or an edit outside DuckDB)",
        "restore it from a backup; `featurestore doctor` checks the whole store",
    ),
)
REGISTRY_FAULTS = (
    Fault(
        "full",
        ("database or disk is full", "no space left on device"),
        "is on a full disk",
        "free space on that disk and try again",
    ),
    Fault(
        "read-only",
        ("readonly database", "read-only file system", "unable to open database file"),
        "cannot be opened for writing",
        "make the store directory and registry.db writable for this user",
    ),
    Fault(
        "damaged",
        ("database disk image is malformed", "malformed database schema", "file is not a database", "disk i/o error"),
        "is damaged (a failed disk, a truncated copy or an edit outside the registry)",
        "restore it from a backup, or move it aside and run `featurestore db upgrade` then `featurestore db recover` "
        "to rebuild its views and batches from the offline store",
    ),
)


def classify(text: str, faults: tuple[Fault, ...]) -> Fault | None:
    """The fault an error message reports, if it is one of `faults`.

    >>> classify("IO Error: Could not write file: No space left on device", OFFLINE_FAULTS).kind
    'full'
    >>> classify("Binder Error: column x not found", OFFLINE_FAULTS) is None
    True
    """
    low = text.lower()
    for fault in faults:
        if any(marker in low for marker in fault.markers):
            return fault
    return None


def _chain(exc: BaseException) -> str:
    """The text of an error and of the errors it was raised while handling (a full disk often shows
    first as "transaction is aborted", its cause one link down)."""
    texts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.append(str(current))
        current = current.__cause__ or current.__context__
    return " | ".join(texts)


def offline_fault(path: object, exc: BaseException) -> StoreDamaged | None:
    """A StoreDamaged for a DuckDB or OS error on the offline file, or None if it is not a file fault."""
    fault = classify(_chain(exc), OFFLINE_FAULTS)
    if fault is None:
        return None
    return StoreDamaged(f"the offline store file {path} {fault.what}: {fault.fix}.")


def registry_fault(where: str, exc: BaseException) -> StoreDamaged | None:
    """A StoreDamaged for an SQLite / SQLAlchemy error on the registry, or None if it is not a file fault."""
    fault = classify(_chain(exc), REGISTRY_FAULTS)
    if fault is None:
        return None
    return StoreDamaged(f"the registry {where} {fault.what}: {fault.fix}.")
