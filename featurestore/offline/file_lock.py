"""A readers-writer lock between processes on one machine, with writer preference.

DuckDB lets many processes read a file or one write it, and a writer that finds readers has to
try again: readers whose opens overlap could keep it out for ever. This lock sits in front of
every open of the offline file and lets a waiting writer go first:

- ``<file>.lock`` is held shared by readers and exclusively by a writer (OS ``flock``);
- ``<file>.turnstile`` is taken exclusively by a writer *before* it waits for the main lock,
  and a reader passes through it (shared, released at once) before it takes the main lock. So
  once a writer waits, new readers wait behind it, and the writer's wait is bounded by the
  longest read already running.
- ``<file>.holders/`` has one small file per holder (PID, reading or writing, since when,
  command), so a timeout can say who holds the file and how; files of dead processes are
  ignored and removed.

Locks held by a process that dies are released by the OS.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..errors import StoreLockedError

POLL_SECONDS = 0.005


@dataclass(frozen=True)
class Holder:
    """A process that holds (or held, if it died) the file."""

    pid: int
    mode: str
    """``reading`` or ``writing``."""
    since: datetime
    command: str

    def describe(self, now: datetime) -> str:
        """``process 123 (writing for 4.2 s: featurestore ingest ...)``."""
        return f"process {self.pid} ({self.mode} for {(now - self.since).total_seconds():.1f} s: {self.command})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ReadWriteLock:
    """The lock of one file; `timeout` bounds every wait (seconds)."""

    def __init__(self, path: Path, *, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.holders_dir = Path(f"{path}.holders")

    def holders(self) -> list[Holder]:
        """The live processes that hold the file now, oldest first."""
        found: list[Holder] = []
        try:
            names = sorted(self.holders_dir.iterdir())
        except FileNotFoundError:
            return found
        for name in names:
            try:
                record = json.loads(name.read_text())
                holder = Holder(
                    int(record["pid"]),
                    str(record["mode"]),
                    datetime.fromisoformat(record["since"]),
                    str(record["command"]),
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if _alive(holder.pid):
                found.append(holder)
            else:
                name.unlink(missing_ok=True)  # left by a process that died holding the lock
        return sorted(found, key=lambda h: h.since)

    @contextmanager
    def hold(self, *, exclusive: bool, wait: bool = True, purpose: str = "") -> Iterator[bool]:
        """Hold the lock shared (reading) or exclusively (writing); yields False if `wait` is off
        and the lock is taken now, raises StoreLockedError after `timeout` seconds otherwise."""
        deadline = time.monotonic() + (self.timeout if wait else 0.0)
        main = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        turnstile = os.open(f"{self.path}.turnstile", os.O_RDWR | os.O_CREAT, 0o600)
        record: Path | None = None
        try:
            if not self._take(turnstile, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, deadline):
                if not wait:
                    yield False
                    return
                self._timed_out(exclusive, purpose)
            try:
                if not self._take(main, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, deadline):
                    if not wait:
                        yield False
                        return
                    self._timed_out(exclusive, purpose)
            finally:
                fcntl.flock(turnstile, fcntl.LOCK_UN)  # readers pass through; a writer queues the next one
            record = self._record(exclusive)
            yield True
        finally:
            if record is not None:
                record.unlink(missing_ok=True)
            os.close(turnstile)
            os.close(main)  # releases the lock

    @staticmethod
    def _take(fd: int, mode: int, deadline: float) -> bool:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(POLL_SECONDS)

    def _record(self, exclusive: bool) -> Path | None:
        """Say who holds the lock, for the message another process gets on a timeout (best effort)."""
        try:
            self.holders_dir.mkdir(mode=0o700, exist_ok=True)
            record = self.holders_dir / f"{os.getpid()}-{time.monotonic_ns()}.json"
            record.write_text(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "mode": "writing" if exclusive else "reading",
                        "since": datetime.now(UTC).isoformat(),
                        "command": _command(),
                    }
                )
            )
            return record
        except OSError:
            return None

    def _timed_out(self, exclusive: bool, purpose: str) -> None:
        now = datetime.now(UTC)
        holders = self.holders()
        who = "; ".join(h.describe(now) for h in holders) or "a process that did not say who it is"
        writing = any(h.mode == "writing" for h in holders)
        if exclusive:
            why = "it can be written only when no process reads or writes it"
        else:
            why = "it can be read only when no process writes it or waits to write it"
        advice = (
            "wait for the writer to finish, or stop it if it is stuck"
            if writing
            else "wait for the readers to finish (a waiting writer goes before new readers)"
        )
        raise StoreLockedError(
            f"the offline store {self.path} is held by {who}; {why}, and this process waited {self.timeout:g} s"
            f"{' to ' + purpose if purpose else ''}. Try again later: {advice}; or raise offline.lock_timeout_seconds "
            "in featurestore.yaml to wait longer.",
            path=str(self.path),
            pid=holders[0].pid if holders else None,
        )


_WORD = re.compile(r"[a-z][a-z-]{0,30}")


def _command() -> str:
    """The program and its command words (``featurestore erase subject``): never an argument
    value, which could be a subject's key."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    words: list[str] = []
    for arg in sys.argv[1:3]:
        if not _WORD.fullmatch(arg):
            break
        words.append(arg)
    return " ".join([name[:40], *words])
