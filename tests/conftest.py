"""Shared fixtures: throwaway stores, a controllable clock, and access to real servers.

Tests that need PostgreSQL or Redis skip with the reason when the server is not running,
unless FEATURESTORE_REQUIRE_SERVICES=1 (set by .ci/run), where a missing server fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import pyarrow as pa
import pytest

from featurestore import Entity, FeatureStore, FeatureView
from featurestore.testing import StepClock

REQUIRE_SERVICES = os.environ.get("FEATURESTORE_REQUIRE_SERVICES") == "1"
POSTGRES_URL = os.environ.get("FEATURESTORE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FEATURESTORE_TEST_REDIS", "redis://127.0.0.1:6379/15")
"""The Redis server and database the tests use; each test writes under its own key prefix and
deletes only those keys, never the database."""
TS = pa.timestamp("us", tz="UTC")


def service_unavailable(what: str, reason: str) -> None:
    """Skip (or, in CI, fail) a test whose server is not running."""
    message = f"{what} is not reachable: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (FEATURESTORE_REQUIRE_SERVICES=1: CI must not skip this)")
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL to a fresh, empty schema on the PostgreSQL test server, dropped afterwards."""
    try:
        import sqlalchemy as sa
    except ImportError as exc:  # pragma: no cover
        service_unavailable("PostgreSQL", str(exc))
    schema = f"fs_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        admin.dispose()
        service_unavailable(f"PostgreSQL at {POSTGRES_URL}", str(exc).splitlines()[0])
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


CUSTOMER = Entity(name="customer", join_keys={"customer_id": "string"}, description="A customer.")
PROFILE = FeatureView(
    name="profile",
    entity="customer",
    features={"age": "int64", "score": "float64", "country": "string"},
    ttl="30d",
    owner="team@example.com",
)


@pytest.fixture
def store(clock: StepClock) -> Iterator[FeatureStore]:
    """An in-memory store with the customer entity and the profile view applied."""
    with FeatureStore(memory=True, clock=clock) as fs:
        fs.apply([CUSTOMER, PROFILE])
        yield fs


@pytest.fixture
def store_dir(tmp_path: Path, clock: StepClock) -> Path:
    """A store directory on disk with the customer entity and profile view applied."""
    root = tmp_path / "store"
    with FeatureStore.init(root, clock=clock) as fs:
        fs.apply([CUSTOMER, PROFILE])
    return root


def ts(day: int, hour: int = 0) -> datetime:
    return datetime(2025, 1, day, hour, tzinfo=UTC)


def profile_rows(n: int = 3, *, start: int = 0) -> pa.Table:
    """n valid rows for the profile view."""
    ids = [f"c{i}" for i in range(start, start + n)]
    return pa.table(
        {
            "customer_id": ids,
            "event_timestamp": pa.array([ts(1 + i % 28) for i in range(n)], TS),
            "age": pa.array([20 + i for i in range(n)], pa.int64()),
            "score": pa.array([0.5 * i for i in range(n)], pa.float64()),
            "country": ["DE"] * n,
        }
    )


JOIN_PLANS = ("asof", "key_filter", "grouped")
"""The point-in-time join's plans (chosen by shape: featurestore.offline.pit.wants_key_filter, and
for known-at joins wants_grouped): tests of the join's semantics run under each, since small test
tables would pick only one. "grouped" differs from "asof" only in known-at joins."""


@contextmanager
def join_plan(plan: str) -> Iterator[None]:
    """Force one plan of the point-in-time join for the block."""
    assert plan in JOIN_PLANS
    with (
        mock.patch(
            "featurestore.offline.pit.by_shape", lambda count, view, entities="_fs_entities": plan == "key_filter"
        ),
        mock.patch("featurestore.offline.pit.grouped_by_shape", lambda count, view: plan == "grouped"),
    ):
        yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``) every test that starts Spark runs on one worker:
    one JVM for the run instead of one per worker."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("spark"))


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One local SparkSession per test process (starting one takes 10-20 s); under pytest-xdist the
    tests that use it run on one worker (pytest_collection_modifyitems)."""
    try:
        from featurestore.offline.lake_join import local_session

        session = local_session(cores=2, memory="1g")
    except Exception as exc:  # noqa: BLE001 - pyspark or Java missing
        service_unavailable("Spark (pyspark and Java 17)", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    yield session
    session.stop()
