"""The HTTP server, tested with a real client against `featurestore serve` on loopback."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from featurestore import FeatureService, FeatureStore, FeatureView
from featurestore.cli import app
from featurestore.server import create_app

from .children import PATIENCE
from .conftest import service_unavailable
from .test_online import ITEM, STOCK, TS, stock

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` has a socket listening on 127.0.0.1:`port` (Linux /proc): the
    server answering is ours, not another test's that took the port meanwhile. Without /proc
    (not Linux) it cannot tell, and says yes."""
    if not Path("/proc/net/tcp").exists():
        return True
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def serve(root: Path, *args: str) -> tuple[str, subprocess.Popen[str]]:
    """`featurestore serve` on a free port of loopback, once it answers /health. A port that
    another process takes between the choice and the server's bind is given up for another one."""
    for _attempt in range(5):
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "featurestore.cli", "serve", "--port", str(port), *args, "-s", str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + PATIENCE  # only bounds a server that never comes up
        while server.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=PATIENCE).status_code == 200 and listens_on(server.pid, port):
                    return url, server
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                server.kill()
                server.wait(timeout=PATIENCE)
                raise AssertionError(f"the server did not answer within {PATIENCE:g} s: {server.stderr.read()}")
            time.sleep(0.05)
        err = server.stderr.read() if server.stderr else ""
        if "address already in use" not in err.lower():
            raise AssertionError(f"the server did not start: {err}")
    raise AssertionError("no free port for the server in five tries")


def stop_server(server: subprocess.Popen[str]) -> None:
    if server.poll() is None:
        server.terminate()
        server.wait(timeout=PATIENCE)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    root = tmp_path / "store"
    now = datetime.now(UTC)
    with FeatureStore.init(root) as fs:
        fs.apply([ITEM, STOCK, FeatureService(name="pricing_v1", features=("stock:price", "stock:qty"))])
        fs.ingest("stock", stock([1, 2], now - timedelta(hours=1), 4))
        fs.ingest("stock", stock([3], now - timedelta(days=3), 9))  # older than the 1-day TTL
        fs.materialize()
    url, server = serve(root)
    yield url, root, server
    stop_server(server)


@pytest.mark.slow
def test_http_lookups_on_the_running_server(served: tuple[str, Path, subprocess.Popen[str]]) -> None:
    url, root, server = served
    with httpx.Client(base_url=url, timeout=PATIENCE) as client:
        assert client.get("/health").json() == {"status": "ok", "materialized": ["stock@v1"]}
        ok = client.post(
            "/v1/online-features",
            json={
                "entities": [{"item_id": 1}, {"item_id": 3}, {"item_id": 7}],
                "features": ["stock:qty", "stock:price"],
                "purpose": "pricing",
            },
        )
        assert ok.status_code == 200
        assert ok.json() == {
            "values": {"qty": [4, None, None], "price": [6.0, None, None]},
            "statuses": {"qty": ["present", "expired", "missing"], "price": ["present", "expired", "missing"]},
        }
        no_purpose = client.post("/v1/online-features", json={"entities": [{"item_id": 1}], "features": ["stock:qty"]})
        assert no_purpose.status_code == 200, "an ungoverned view needs no purpose"
        by_service = client.post(
            "/v1/online-features",
            json={"entities": [{"item_id": 1}], "feature_service": "pricing_v1", "purpose": "pricing"},
        )
        assert by_service.status_code == 200 and by_service.json()["values"] == {"price": [6.0], "qty": [4]}
        pinned = client.post(
            "/v1/online-features", json={"entities": [{"item_id": 1}], "feature_service": "pricing_v1@v1"}
        )
        assert pinned.json()["values"] == by_service.json()["values"]
        for body in (
            {"entities": [{"item_id": 1}]},
            {"entities": [{"item_id": 1}], "features": ["stock:qty"], "feature_service": "pricing_v1"},
        ):
            both_or_neither = client.post("/v1/online-features", json=body)
            assert (
                both_or_neither.status_code == 422 and "give either features or feature_service" in both_or_neither.text
            )
        unknown_service = client.post(
            "/v1/online-features", json={"entities": [{"item_id": 1}], "feature_service": "pricng_v1"}
        )
        assert unknown_service.status_code == 404 and "Did you mean 'pricing_v1'?" in unknown_service.json()["detail"]
        unknown = client.post(
            "/v1/online-features", json={"entities": [{"item_id": 1}], "features": ["stok:qty"], "purpose": "p"}
        )
        assert unknown.status_code == 404 and "Did you mean 'stock'?" in unknown.json()["detail"]
        missing_key = client.post(
            "/v1/online-features", json={"entities": [{"sku": 1}], "features": ["stock:qty"], "purpose": "p"}
        )
        assert (
            missing_key.status_code == 400
            and "has no 'item_id', a join key of stock@v1" in missing_key.json()["detail"]
        )
        empty = client.post("/v1/online-features", json={"entities": [], "features": ["stock:qty"], "purpose": "p"})
        assert empty.status_code == 422
        spec = client.get("/openapi.json").json()
        assert "/v1/online-features" in spec["paths"] and "/health" in spec["paths"]
        assert spec["components"]["schemas"]["OnlineFeaturesRequest"]["required"] == ["entities"]
    server.terminate()  # a graceful stop records the pending online-read audit entry
    server.wait(timeout=PATIENCE)
    with FeatureStore(root) as fs:
        entries = {
            (e.purpose, tuple(e.details["features"])): e.details["entities"]
            for e in fs.audit_entries(action="online_reads")
        }
        assert entries[("pricing", ("stock@v1:qty", "stock@v1:price"))] == 3
        assert entries[("pricing", ("stock@v1:price", "stock@v1:qty"))] == 1, (
            "a service lookup is audited with its resolved features"
        )


def test_materialize_consistency_and_get_online_commands(tmp_path: Path) -> None:
    root = tmp_path / "store"
    now = datetime.now(UTC)
    with FeatureStore.init(root) as fs:
        fs.apply([ITEM, STOCK])
        fs.ingest("stock", stock([1, 2], now - timedelta(hours=1), 4))
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, "-s", str(root)])
        assert result.exit_code == code, result.output
        return result.output

    assert "stock@v1: 2 entities rebuilt as of" in run("materialize")
    assert "stock@v1: 0 entities updated" in run("materialize", "stock")
    assert "qty = 4 (present)" in run("get-online", "-e", "item_id=1", "-f", "stock:qty")
    assert "qty = None (missing)" in run("get-online", "-e", "item_id=5", "-f", "stock:qty")
    assert "2 entities checked, 0 mismatches" in run("consistency")
    with FeatureStore(root) as fs:
        fs.ingest("stock", stock([2], now - timedelta(minutes=5), 6))
    stale = run("consistency", code=1)
    assert "3 mismatches" in stale and "2 qty: online 4 (present), offline 6" in stale


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def server_side_nodelay(server_pid: int, client: socket.socket) -> bool | None:
    """TCP_NODELAY on the server's end of `client`'s connection, read from the server process (or
    the worker below it) that holds it: its socket is copied here with pidfd_getfd(2) (Linux 5.6).
    None if this process may not copy another's sockets (not Linux, or a container without
    CAP_SYS_PTRACE)."""
    import ctypes
    import errno

    if not hasattr(os, "pidfd_open") or not Path("/proc/self/fd").exists():
        return None  # not Linux
    pidfd_getfd = 438  # the syscall number, the same on every architecture since Linux 5.6
    libc = ctypes.CDLL(None, use_errno=True)
    peer = client.getsockname()
    for pid in descendants(server_pid):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # not permitted to list them: cannot tell
            os.close(pidfd)
            return None
        try:
            for fd in fds:
                try:
                    if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                        continue
                except OSError:
                    continue
                copy = libc.syscall(pidfd_getfd, pidfd, int(fd), 0)
                if copy < 0:
                    if ctypes.get_errno() in (errno.EPERM, errno.ENOSYS, errno.EACCES):
                        return None
                    continue
                sock = socket.socket(fileno=copy)
                try:
                    if sock.type == socket.SOCK_STREAM and sock.getpeername() == peer:
                        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                except OSError:
                    pass
                finally:
                    sock.close()
        finally:
            os.close(pidfd)
    raise AssertionError(f"no process of the server {server_pid} holds the connection from {peer}")


@pytest.mark.slow
def test_serve_with_two_workers_answers_one_request_at_a_time_without_nagle(tmp_path: Path) -> None:
    """Each worker opens the store itself; a lone client is not held up by Nagle's algorithm
    against delayed ACKs (every request took 44 ms that way): the worker's end of a connection
    has TCP_NODELAY, so the second small write of a response never waits for the client's ACK."""
    root = tmp_path / "store"
    now = datetime.now(UTC)
    with FeatureStore.init(root) as fs:
        fs.apply([ITEM, STOCK])
        fs.ingest("stock", stock([1, 2], now - timedelta(hours=1), 4))
        fs.materialize()
    url, server = serve(root, "--workers", "2")
    try:
        with httpx.Client(base_url=url, timeout=PATIENCE) as client:
            body = {"entities": [{"item_id": 1}], "features": ["stock:qty"]}
            for _ in range(40):
                answer = client.post("/v1/online-features", json=body)
                assert answer.json()["values"] == {"qty": [4]}
        host, port = url.removeprefix("http://").split(":")
        lone = http.client.HTTPConnection(host, int(port), timeout=PATIENCE)
        try:
            lone.request("POST", "/v1/online-features", json.dumps(body), {"content-type": "application/json"})
            answer = lone.getresponse()
            assert json.loads(answer.read())["values"] == {"qty": [4]}
            assert lone.sock is not None, "the connection stays open (keep-alive)"
            nodelay = server_side_nodelay(server.pid, lone.sock)
        finally:
            lone.close()
        if nodelay is None:
            service_unavailable(
                "the server's socket options (pidfd_getfd, Linux 5.6)", "the kernel does not let this process read them"
            )
        assert nodelay, "the worker's end of the connection has Nagle's algorithm on"
    finally:
        stop_server(server)


TYPED = FeatureView(
    name="typed",
    entity="item",
    ttl="1d",
    features={
        "b": "bool",
        "i32": "int32",
        "i64": "int64",
        "f32": "float32",
        "f64": "float64",
        "s": "string",
        "d": "date",
        "t": "timestamp",
    },
)


def typed_store() -> FeatureStore:
    now = datetime.now(UTC)
    fs = FeatureStore(memory=True)
    fs.apply([ITEM, STOCK, TYPED, FeatureService(name="mixed_v1", features=("typed:f64", "stock:qty"))])
    fs.ingest(
        "typed",
        pa.table(
            {
                "item_id": pa.array([1, 2, 3, 4], pa.int64()),
                "event_timestamp": pa.array([now - timedelta(hours=1)] * 3 + [now - timedelta(days=3)], TS),
                "b": pa.array([True, None, False, True]),
                "i32": pa.array([-(2**31), None, 0, 1], pa.int32()),
                "i64": pa.array([2**62, None, -1, 1], pa.int64()),
                "f32": pa.array([1.5, None, float("-inf"), 1], pa.float32()),
                "f64": pa.array([float("inf"), None, float("nan"), 1e300], pa.float64()),
                "s": pa.array(['naïve ☃ \u2028 "q" \\', None, "", "x"]),
                "d": pa.array([date(2025, 1, 2), None, date(1969, 12, 31), date(2025, 1, 2)], pa.date32()),
                "t": pa.array(
                    [now - timedelta(days=400), None, datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), now], TS
                ),
            }
        ),
    )
    fs.ingest("stock", stock([1, 2], now - timedelta(hours=1), 4))
    fs.materialize()
    return fs


def test_the_fast_path_answers_as_the_fastapi_route_does(tmp_path: Path) -> None:
    """Every value type (inf, NaN, nulls, dates before 1970, text that JSON escapes), every status
    and every error: the same status and JSON with the fast path as through FastAPI's route alone."""
    fs = typed_store()
    bodies: list[object] = [
        *({"entities": [{"item_id": i}], "features": ["typed:*"]} for i in (1, 2, 3, 4, 5)),
        {"entities": [{"item_id": i} for i in (1, 2, 3, 4, 5, 1)], "features": ["typed:*", "stock:qty"]},
        {
            "entities": [{"item_id": 1}],
            "features": ["typed:f64", "stock:*"],
            "full_feature_names": True,
            "purpose": "any",
        },
        {"entities": [{"item_id": 1}], "feature_service": "mixed_v1"},
        {"entities": [{"item_id": 1, "other": "x"}], "features": ["typed:s"]},
        {"entities": [{"item_id": None}], "features": ["typed:s"]},
        {"entities": [{"item_id": "1"}], "features": ["typed:s"]},
        {"entities": [{"item_id": 2**70}], "features": ["typed:s"]},
        {"entities": [{"item_id": 1.0}], "features": ["typed:s"]},
        {"entities": [{"item_id": True}], "features": ["typed:s"]},
        {"entities": [{"item_id": [1, 2]}], "features": ["typed:s"]},
        {"entities": [{"sku": 1}], "features": ["typed:s"]},
        {"entities": [{"item_id": 1}], "features": ["typd:s"]},
        {"entities": [{"item_id": 1}], "features": ["typed:nope"]},
        {"entities": [{"item_id": 1}], "feature_service": "nope_v1"},
        {"entities": [], "features": ["typed:s"]},
        {"entities": [{"item_id": 1}]},
        {"entities": [{"item_id": 1}], "features": ["typed:s"], "purpose": ""},
        {"entities": [{"item_id": 1}], "features": "typed:s"},
        [1, 2],
    ]
    raw: list[tuple[bytes, dict[str, str]]] = [
        (
            b'{"entities": [{"item_id": 1}], "features": ["typed:s"], "features": ["typed:b"]}',
            {"content-type": "application/json"},
        ),
        (b'{"entities": [{"item_id": NaN}], "features": ["typed:s"]}', {"content-type": "application/json"}),
        (
            b'{"entities": [{"item_id": 1}], "features": ["typed:s"]}',
            {"content-type": "application/json; charset=utf-8"},
        ),
        (b'{"entities": [{"item_id": 1}], "features": ["typed:s"]}', {"content-type": "Application/JSON"}),
        (b'{"entities": [{"item_id": 1}], "features": ["typed:s"]}', {"content-type": "text/plain"}),
        (b'{"entities": [{"item_id": 1}], "features": ["typed:s"]}', {}),
        (b'{"entities": [{"item_id": 1}], "features": ["typed:s"]', {"content-type": "application/json"}),
        (b"", {"content-type": "application/json"}),
        (
            '{"entities": [{"item_id": 1}], "features": ["typed:s"], "purpose": "\u00e9"}'.encode("latin-1"),
            {"content-type": "application/json"},
        ),
    ]
    with TestClient(create_app(fs)) as fast, TestClient(create_app(fs, fast_path=False)) as route:
        seen = set()
        for body in bodies:
            answer, expected = fast.post("/v1/online-features", json=body), route.post("/v1/online-features", json=body)
            assert (answer.status_code, answer.json()) == (expected.status_code, expected.json()), body
            assert answer.headers["content-type"] == expected.headers["content-type"] == "application/json"
            seen.add(answer.status_code)
        for content, headers in raw:
            answer = fast.post("/v1/online-features", content=content, headers=headers)
            expected = route.post("/v1/online-features", content=content, headers=headers)
            assert (answer.status_code, answer.json()) == (expected.status_code, expected.json()), content
        assert seen == {200, 400, 404, 422}
        present = fast.post("/v1/online-features", json=bodies[0]).json()
        assert present["values"]["f64"] == [None] and present["values"]["s"] == ['naïve ☃ \u2028 "q" \\'], present
        assert present["statuses"]["f64"] == ["present"], (
            "an infinite value is served as JSON null, as FastAPI serializes it"
        )


def test_the_fast_path_answers_valid_bodies_itself_and_passes_on_everything_else() -> None:
    """Valid lookups never reach FastAPI; anything else reaches it with its body whole."""
    from featurestore.server import OnlineFeaturesFastPath

    passed: list[tuple[str, str, bytes]] = []

    async def behind(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        passed.append((scope["method"], scope["path"], body))
        await send({"type": "http.response.start", "status": 418, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"behind"})

    fs = typed_store()
    client = TestClient(OnlineFeaturesFastPath(behind, fs))
    valid = {"entities": [{"item_id": 1}, {"item_id": 2}], "features": ["typed:s"]}
    assert client.post("/v1/online-features", json=valid).json()["values"] == {"s": ['naïve ☃ \u2028 "q" \\', None]}
    assert (
        client.post("/v1/online-features", json={"entities": [{"sku": 1}], "features": ["typed:s"]}).status_code == 400
    )
    assert passed == [], "a valid body (and a store error) is answered in front of FastAPI"
    big = b'{"entities": [' + b", ".join(b'{"item_id": %d}' % i for i in range(20_000)) + b'], "features": ["typed:s"]}'
    for content, headers in [
        (b'{"entities": []}', {"content-type": "application/json"}),
        (b"{", {"content-type": "application/json"}),
        (b'{"entities": [{"item_id": 1}], "features": ["typed:s"]}', {"content-type": "text/plain"}),
        (big, {"content-type": "application/json"}),
    ]:
        assert client.post("/v1/online-features", content=content, headers=headers).status_code == 418
        assert passed[-1] == ("POST", "/v1/online-features", content)
    assert client.get("/v1/online-features").status_code == 418 and client.get("/health").status_code == 418
    assert [p[:2] for p in passed[-2:]] == [("GET", "/v1/online-features"), ("GET", "/health")]
