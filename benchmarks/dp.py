"""Differentially private aggregates: dp_query against a plain DuckDB GROUP BY of the same data.

Run:  python benchmarks/dp.py [--rows 10000000] [--groups 1000]

One governed view (customer ids as HMAC pseudonyms) with `rows` rows over 1M customers and a
group column with `groups` public values declared in the policy. Timed in one run:
- plain: ``SELECT g, count(*), avg(v) FROM t GROUP BY g`` in DuckDB on the store's file, fetched to Arrow;
- first call: ``dp_query(count + mean:v by g)``: calibration (OpenDP's noise search), the per-entity
  truncation in DuckDB, the release and the ledger;
- repeated shape: the same query shape again with ``fresh=True`` (a new release, charged): the
  per-entity truncation and its per-group sums are kept for the same data version, so only
  OpenDP's noise and the ledger are paid. Goal: within 5x of the plain GROUP BY.
- after a new batch: one more 1,000-row batch, then the same shape: a new data version, so the
  truncation (a window over every entity, ordered at random) is paid again.
"""

from __future__ import annotations

import argparse
import statistics
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
scope: {{feature_views: [spend]}}
classification:
  customer_id: {{kind: direct_identifier, normalize: text}}
  g: non_personal
  v: non_personal
treatments: {{direct_identifier: keyed_hash, non_personal: keep}}
purposes:
  allowed: {{research: {{access: [dp_aggregates]}}}}
differential_privacy:
  purposes: [research]
  budget: {{epsilon: 1000000.0, delta: 1.0e-6}}
  per_release: {{epsilon: 1.0}}
  contribution_bounds: {{max_rows_per_subject: 10, clamp: {{v: [0, 100]}}}}
  public_groups: {{g: [{groups}]}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        clock_now = [datetime(2025, 6, 1, tzinfo=UTC)]

        def clock() -> datetime:
            clock_now[0] += timedelta(microseconds=1)
            return clock_now[0]

        store = FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER, clock=clock)
        names = [f"g{i:04d}" for i in range(args.groups)]
        (root / "policies" / "bench.yaml").write_text(POLICY.format(groups=", ".join(names)))
        store.apply(
            [
                Entity(name="customer", join_keys={"customer_id": "string"}),
                FeatureView(name="spend", entity="customer", features={"g": "string", "v": "int64"}),
            ]
        )
        store.approve_policy(root / "policies" / "bench.yaml", by="bench", role="legal")
        rng = np.random.default_rng(3)
        ids = pa.array([f"C{i:07d}" for i in range(1_000_000)])
        groups = pa.array(names)
        started = time.perf_counter()
        for start in range(0, args.rows, 2_000_000):
            n = min(2_000_000, args.rows - start)
            store.ingest(
                "spend",
                pa.table(
                    {
                        "customer_id": ids.take(pa.array(rng.integers(0, len(ids), n))),
                        "event_timestamp": pa.array(
                            [datetime(2025, 5, 1, tzinfo=UTC)] * n, pa.timestamp("us", tz="UTC")
                        ),
                        "g": groups.take(pa.array(rng.integers(0, args.groups, n))),
                        "v": pa.array(rng.integers(0, 101, n), pa.int64()),
                    }
                ),
            )
        print(f"{args.rows:,} rows, {args.groups:,} groups (built in {time.perf_counter() - started:.1f} s)")

        def plain() -> float:
            con = duckdb.connect(str(root / "offline.duckdb"), read_only=True)
            t = time.perf_counter()
            con.sql("SELECT g, count(*), avg(v) FROM fv_spend_v1 GROUP BY g").to_arrow_table()
            elapsed = time.perf_counter() - t
            con.close()
            return elapsed

        query = {"aggregates": ["count", "mean:v"], "group_by": ["g"], "purpose": "research", "epsilon": 1.0}
        base = statistics.median(plain() for _ in range(args.repeat))
        t = time.perf_counter()
        first = store.dp_query("spend", **query)  # type: ignore[arg-type]
        first_s = time.perf_counter() - t
        repeated = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            store.dp_query("spend", **query, fresh=True)  # type: ignore[arg-type]
            repeated.append(time.perf_counter() - t)
        again = statistics.median(repeated)
        assert first.table is not None and first.table.num_rows == args.groups
        store.ingest(
            "spend",
            pa.table(
                {
                    "customer_id": ids.take(pa.array(rng.integers(0, len(ids), 1000))),
                    "event_timestamp": pa.array(
                        [datetime(2025, 5, 2, tzinfo=UTC)] * 1000, pa.timestamp("us", tz="UTC")
                    ),
                    "g": groups.take(pa.array(rng.integers(0, args.groups, 1000))),
                    "v": pa.array(rng.integers(0, 101, 1000), pa.int64()),
                }
            ),
        )
        t = time.perf_counter()
        store.dp_query("spend", **query, fresh=True)  # type: ignore[arg-type]
        after_s = time.perf_counter() - t
        print(f"  plain DuckDB GROUP BY      : {base:6.2f} s (median of {args.repeat})")
        print(f"  dp_query, first call       : {first_s:6.2f} s   ratio {first_s / base:6.1f}")
        print(f"  dp_query, repeated shape   : {again:6.2f} s   ratio {again / base:6.1f}   (goal <= 5)")
        print(f"  dp_query, after a new batch: {after_s:6.2f} s   ratio {after_s / base:6.1f}")
        store.close()


if __name__ == "__main__":
    main()
