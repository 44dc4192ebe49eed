"""Erasure and retention speed: erase 1,000 subjects from a 10M-row store and compact it, next to a
plain DuckDB ``COPY FROM DATABASE`` of the same file (the rewrite that compaction is built on).

Run:  python benchmarks/erasure.py [--rows 10000000] [--subjects 1000]

The store has one view governed by an approved policy (customer ids stored as HMAC pseudonyms,
400-day offline retention) with 100 rows per customer over a year, and nothing materialized.
Timed in one run on the same file:
- plain: ``ATTACH`` a new file and ``COPY FROM DATABASE`` into it (what compaction costs at least);
- erase: ``erase(entity, 1,000 raw ids)``: subject hashes, requests and tombstones in the
  registry, one DELETE per table, then the compaction (checkpoint, copy, fsync, rename);
- retention: ``run_retention()`` with the clock moved so that a tenth of the rows are expired.
Prints seconds and the ratio erase / plain (goal <= 2).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featurestore import Entity, FeatureStore, FeatureView  # noqa: E402
from featurestore.testing import TEST_KEY_PROVIDER  # noqa: E402

POLICY = """\
api_version: featurestore.policy/v1
id: bench
version: 1
owner: dpo@example.com
legal_basis: legitimate_interest
effective_from: 2026-01-01
review_by: 2027-01-01
scope: {feature_views: [spend]}
classification:
  customer_id: {kind: direct_identifier, normalize: text}
  amount: non_personal
  count: non_personal
treatments: {direct_identifier: keyed_hash, non_personal: keep}
purposes:
  allowed: {fraud_detection: {access: [offline, online]}}
retention: {offline: P400D}
"""
START = datetime(2025, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)
        return self.now


def build(folder: Path, rows: int, clock: Clock) -> tuple[FeatureStore, list[str]]:
    customers = max(rows // 100, 1)
    store = FeatureStore.init(folder / "store", key_provider=TEST_KEY_PROVIDER, clock=clock)
    (folder / "store" / "policies" / "bench.yaml").write_text(POLICY)
    store.apply(
        [
            Entity(name="customer", join_keys={"customer_id": "string"}),
            FeatureView(name="spend", entity="customer", features={"amount": "float64", "count": "int64"}),
        ]
    )
    store.approve_policy(folder / "store" / "policies" / "bench.yaml", by="bench", role="legal")
    rng = np.random.default_rng(7)
    ids = pa.array([f"C{i:08d}" for i in range(customers)])
    chunk = 2_000_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        year_us = 365 * 86_400_000_000
        table = pa.table(
            {
                "customer_id": ids.take(pa.array(rng.integers(0, customers, n))),
                "event_timestamp": pa.array(
                    int(START.timestamp() * 1e6) + rng.integers(0, year_us, n), pa.timestamp("us", tz="UTC")
                ),
                "amount": pa.array(rng.standard_normal(n)),
                "count": pa.array(rng.integers(0, 50, n), pa.int64()),
            }
        )
        store.ingest("spend", table)
    return store, [f"C{i:08d}" for i in rng.choice(customers, size=min(1000, customers), replace=False)]


def time_plain_copy(path: Path) -> float:
    target = path.with_name("plain-copy.duckdb")
    con = duckdb.connect(str(path))
    started = time.perf_counter()
    con.execute(f"ATTACH '{target}' AS copied")
    [(name,)] = con.execute("SELECT current_database()").fetchall()
    con.execute(f'COPY FROM DATABASE "{name}" TO copied')
    con.execute("DETACH copied")
    elapsed = time.perf_counter() - started
    con.close()
    target.unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--subjects", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clock = Clock(datetime(2026, 1, 2, tzinfo=UTC))
        started = time.perf_counter()
        store, subjects = build(Path(tmp), args.rows, clock)
        built = time.perf_counter() - started
        subjects = subjects[: args.subjects]
        path = Path(tmp) / "store" / "offline.duckdb"
        size = path.stat().st_size
        print(f"{args.rows:,} rows of {args.rows // 100:,} customers (built in {built:.1f} s, {size / 2**20:.0f} MiB)")
        plain = time_plain_copy(path)
        print(f"  plain COPY FROM DATABASE     : {plain:6.2f} s")
        started = time.perf_counter()
        results = store.erase("customer", subjects)
        erase = time.perf_counter() - started
        rows = sum(sum(r.removed.values()) for r in results)
        assert all(r.status == "done" for r in results) and rows > 0
        print(f"  erase {len(subjects):,} subjects + compact: {erase:6.2f} s ({rows:,} rows removed)")
        print(f"  ratio erase / plain copy     : {erase / plain:6.2f}   (goal <= 2)")
        clock.now = START + timedelta(days=400 + 36)  # the oldest ~10% of the year is past the 400-day retention
        started = time.perf_counter()
        report = store.run_retention()
        retention = time.perf_counter() - started
        print(
            f"  retention run + compact      : {retention:6.2f} s ({report.removed['offline spend@v1']:,} rows removed)"
        )
        store.close()


if __name__ == "__main__":
    main()
