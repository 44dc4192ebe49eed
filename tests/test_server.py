"""The HTTP server, tested with a real client against `featurestore serve` on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from featurestore import FeatureService, FeatureStore
from featurestore.cli import app

from .test_online import ITEM, STOCK, stock

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    root = tmp_path / "store"
    now = datetime.now(UTC)
    with FeatureStore.init(root) as fs:
        fs.apply([ITEM, STOCK, FeatureService(name="pricing_v1", features=("stock:price", "stock:qty"))])
        fs.ingest("stock", stock([1, 2], now - timedelta(hours=1), 4))
        fs.ingest("stock", stock([3], now - timedelta(days=3), 9))  # older than the 1-day TTL
        fs.materialize()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "featurestore.cli", "serve", "--port", str(port), "-s", str(root)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise AssertionError(f"server did not start: {server.stderr.read() if server.stderr else ''}")
        time.sleep(0.1)
    yield url, root, server
    if server.poll() is None:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_http_lookups_on_the_running_server(served: tuple[str, Path, subprocess.Popen[str]]) -> None:
    url, root, server = served
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/health").json() == {"status": "ok", "materialized": ["stock@v1"]}
        ok = client.post("/v1/online-features", json={
            "entities": [{"item_id": 1}, {"item_id": 3}, {"item_id": 7}], "features": ["stock:qty", "stock:price"], "purpose": "pricing"})
        assert ok.status_code == 200
        assert ok.json() == {"values": {"qty": [4, None, None], "price": [6.0, None, None]},
                             "statuses": {"qty": ["present", "expired", "missing"], "price": ["present", "expired", "missing"]}}
        no_purpose = client.post("/v1/online-features", json={"entities": [{"item_id": 1}], "features": ["stock:qty"]})
        assert no_purpose.status_code == 200, "an ungoverned view needs no purpose"
        by_service = client.post("/v1/online-features", json={"entities": [{"item_id": 1}], "feature_service": "pricing_v1",
                                                              "purpose": "pricing"})
        assert by_service.status_code == 200 and by_service.json()["values"] == {"price": [6.0], "qty": [4]}
        pinned = client.post("/v1/online-features", json={"entities": [{"item_id": 1}], "feature_service": "pricing_v1@v1"})
        assert pinned.json()["values"] == by_service.json()["values"]
        for body in ({"entities": [{"item_id": 1}]}, {"entities": [{"item_id": 1}], "features": ["stock:qty"], "feature_service": "pricing_v1"}):
            both_or_neither = client.post("/v1/online-features", json=body)
            assert both_or_neither.status_code == 422 and "give either features or feature_service" in both_or_neither.text
        unknown_service = client.post("/v1/online-features", json={"entities": [{"item_id": 1}], "feature_service": "pricng_v1"})
        assert unknown_service.status_code == 404 and "Did you mean 'pricing_v1'?" in unknown_service.json()["detail"]
        unknown = client.post("/v1/online-features", json={"entities": [{"item_id": 1}], "features": ["stok:qty"], "purpose": "p"})
        assert unknown.status_code == 404 and "Did you mean 'stock'?" in unknown.json()["detail"]
        missing_key = client.post("/v1/online-features", json={"entities": [{"sku": 1}], "features": ["stock:qty"], "purpose": "p"})
        assert missing_key.status_code == 400 and "has no 'item_id', a join key of stock@v1" in missing_key.json()["detail"]
        empty = client.post("/v1/online-features", json={"entities": [], "features": ["stock:qty"], "purpose": "p"})
        assert empty.status_code == 422
        spec = client.get("/openapi.json").json()
        assert "/v1/online-features" in spec["paths"] and "/health" in spec["paths"]
        assert spec["components"]["schemas"]["OnlineFeaturesRequest"]["required"] == ["entities"]
    server.terminate()  # a graceful stop records the pending online-read audit entry
    server.wait(timeout=30)
    with FeatureStore(root) as fs:
        entries = {(e.purpose, tuple(e.details["features"])): e.details["entities"] for e in fs.audit_entries(action="online_reads")}
        assert entries[("pricing", ("stock@v1:qty", "stock@v1:price"))] == 3
        assert entries[("pricing", ("stock@v1:price", "stock@v1:qty"))] == 1, "a service lookup is audited with its resolved features"


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


@pytest.mark.slow
def test_serve_with_two_workers_answers_fast_one_request_at_a_time(tmp_path: Path) -> None:
    """Each worker opens the store itself; a lone client is not held up by Nagle's algorithm
    against delayed ACKs (every request took 44 ms that way)."""
    root = tmp_path / "store"
    now = datetime.now(UTC)
    with FeatureStore.init(root) as fs:
        fs.apply([ITEM, STOCK])
        fs.ingest("stock", stock([1, 2], now - timedelta(hours=1), 4))
        fs.materialize()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "featurestore.cli", "serve", "--port", str(port), "--workers", "2",
                               "-s", str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read() if server.stderr else ""
                time.sleep(0.1)
            body = {"entities": [{"item_id": 1}], "features": ["stock:qty"]}
            took = []
            for _ in range(40):
                started = time.perf_counter()
                answer = client.post("/v1/online-features", json=body)
                took.append(time.perf_counter() - started)
                assert answer.json()["values"] == {"qty": [4]}
        assert sorted(took)[len(took) // 2] < 0.02, f"median {sorted(took)[len(took) // 2] * 1e3:.1f} ms at concurrency 1"
    finally:
        server.terminate()
        server.wait(timeout=30)
