"""Child processes for crash and concurrency tests, waited on by events, never by sleeps.

A child says what it has done by printing a line (``READY``, ``OPEN``...); the test waits for that
line, or for a condition it can check itself, for at most :data:`PATIENCE` seconds. The bound is
not a speed requirement: it only turns a child that died or hung into a failure with a message
(and the child's stderr) instead of a test run that never ends. A busy machine only makes the
wait longer.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]

PATIENCE = 120.0
"""Seconds after which a wait for an event fails the test (the event is expected in well under a second)."""

T = TypeVar("T")


def spawn(script: str, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    """Run `script` with the worktree's code (``python -c``), stdin, stdout and stderr piped.
    A child that should hold something until the test lets go waits on its stdin
    (``sys.stdin.readline()``): :func:`release` closes it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        **kwargs,
    )


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The child's stdout, line by line, read by a thread (so a wait can be bounded); None at EOF."""
    lines: queue.Queue[str | None] | None = getattr(proc, "_test_lines", None)
    if lines is None:
        lines = queue.Queue()
        proc._test_lines = lines  # type: ignore[attr-defined]
        out = proc.stdout
        assert out is not None, "spawn the child with stdout=PIPE"

        def pump() -> None:
            for line in out:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True, name=f"stdout-of-{proc.pid}").start()
    return lines


def _died(proc: subprocess.Popen[str], waiting_for: str) -> AssertionError:
    try:
        proc.wait(timeout=PATIENCE)
    except subprocess.TimeoutExpired:
        pass
    err = proc.stderr.read() if proc.stderr is not None and proc.poll() is not None else ""
    return AssertionError(f"child {proc.pid} exited ({proc.returncode}) before {waiting_for}: {err}")


def read_line(proc: subprocess.Popen[str], timeout: float = PATIENCE) -> str:
    """The child's next line of output (stripped)."""
    try:
        line = _lines(proc).get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"child {proc.pid} printed nothing within {timeout:g} s") from None
    if line is None:
        raise _died(proc, "printing another line")
    return line.strip()


def wait_for(proc: subprocess.Popen[str], line: str, timeout: float = PATIENCE) -> None:
    """Wait until the child prints `line` (other lines are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"child {proc.pid} did not print {line!r} within {timeout:g} s")
        try:
            got = _lines(proc).get(timeout=left)
        except queue.Empty:
            continue
        if got is None:
            raise _died(proc, f"printing {line!r}")
        if got.strip() == line:
            return


def wait_until(condition: Callable[[], T], what: str, timeout: float = PATIENCE, poll: float = 0.005) -> T:
    """Poll `condition` until it returns something true, and return that; `what` names the event
    in the failure message."""
    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(poll)


def release(proc: subprocess.Popen[str]) -> None:
    """Close the child's stdin: a child waiting on it goes on."""
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill the child (SIGKILL) if it still runs, and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=PATIENCE)
    release(proc)
