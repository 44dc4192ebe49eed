"""A small HTTP/1.1 load generator for the benchmarks: N keep-alive connections on loopback, each
sending one request, reading its whole response, then the next, for a bounded time and count.

It measures what `wrk` would (requests/s, latency percentiles, errors) with nothing to install;
it runs on uvloop when that is installed. On this 2-core machine it shares the cores with the
server it measures, so the numbers are a floor for the server, not a ceiling.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured."""

    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        """Requests per second (errors included)."""
        return self.requests / self.seconds


def _request(host: str, port: int, path: str, body: dict[str, object]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + payload


async def _connection(
    host: str, port: int, request: bytes, deadline: float, budget: list[int], latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                errors[0] += 1
    finally:
        writer.close()


async def _run(host: str, port: int, request: bytes, concurrency: int, seconds: float, max_requests: int) -> LoadResult:
    latencies: list[float] = []
    errors = [0]
    budget = [max_requests]
    started = time.perf_counter()
    results = await asyncio.gather(
        *(_connection(host, port, request, started + seconds, budget, latencies, errors) for _ in range(concurrency)),
        return_exceptions=True,
    )
    elapsed = time.perf_counter() - started
    failed = sum(isinstance(r, BaseException) for r in results)
    ordered = sorted(latencies) or [float("nan")]
    return LoadResult(
        concurrency,
        len(latencies),
        errors[0] + failed,
        elapsed,
        ordered[len(ordered) // 2] * 1e3,
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
    )


def run_load(
    host: str,
    port: int,
    path: str,
    body: dict[str, object],
    *,
    concurrency: int,
    seconds: float = 5.0,
    max_requests: int = 50_000,
) -> LoadResult:
    """Drive `POST path` with `body` from `concurrency` connections until `seconds` or `max_requests`."""
    request = _request(host, port, path, body)
    try:
        import uvloop

        return uvloop.run(_run(host, port, request, concurrency, seconds, max_requests))
    except ImportError:
        return asyncio.run(_run(host, port, request, concurrency, seconds, max_requests))
