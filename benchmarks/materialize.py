"""Materialization: 1M entities from 10M rows, next to a plain DuckDB-to-SQLite copy, in one run.

Run:  python benchmarks/materialize.py [--entities 1000000] [--rows-per-entity 10]

Builds a store whose view holds --rows-per-entity rows per entity (10 float features, in as many
batches), then in fresh processes, each timed and with its peak memory above the start:
- the store's full materialization (`materialize(full=True)`);
- the plain baseline: the latest row per entity in DuckDB (`arg_max`), its rows fetched from Arrow
  and written to a fresh SQLite WITHOUT ROWID table with one executemany per 50k rows;
- the same plain copy with the rows sorted by key first (the store writes them so: a B-tree takes
  them about 4x faster than in random order), and with the latest row ranked by a
  `QUALIFY row_number()` window (the form materialization used before).
Goal: within 1.2x of the plain copy, in time and memory.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FEATURES = [f"f{i}" for i in range(10)]


def build(root: Path, entities: int, per_entity: int) -> None:
    import numpy as np
    import pyarrow as pa

    sys.path.insert(0, str(ROOT))
    from featurestore import Entity, FeatureStore, FeatureView

    rng = np.random.default_rng(3)
    now = datetime.now(UTC)
    with FeatureStore.init(root) as fs:
        fs.apply(
            [
                Entity(name="e", join_keys={"entity_id": "int64"}),
                FeatureView(name="bench", entity="e", features={f: "float64" for f in FEATURES}),
            ]
        )
        for b in range(per_entity):
            base_us = int((now - timedelta(days=per_entity - b)).timestamp() * 1_000_000)
            when = base_us + rng.integers(0, 3600 * 10**6, entities)
            fs.ingest(
                "bench",
                pa.table(
                    {
                        "entity_id": pa.array(rng.permutation(entities), pa.int64()),
                        "event_timestamp": pa.array(when, pa.timestamp("us", tz="UTC")),
                        **{f: rng.standard_normal(entities) for f in FEATURES},
                    }
                ),
            )


def run_store(root: str) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from featurestore import FeatureStore

    with FeatureStore(root) as fs:
        started = time.perf_counter()
        [result] = fs.materialize(full=True)
        return {"seconds": time.perf_counter() - started, "entities": result.entities}


def run_plain(root: str, form: str) -> dict[str, float]:
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect(str(Path(root) / "offline.duckdb"), read_only=True)
    values = ", ".join(f"'{f}': {f}" for f in FEATURES)
    if form.startswith("arg_max"):
        sql = (
            f"SELECT CAST(entity_id AS VARCHAR) AS k, epoch_us(b._t), {', '.join(f'b.{f}' for f in FEATURES)} FROM (SELECT entity_id, "
            f"arg_max({{'_t': event_timestamp, {values}}}, {{'t': event_timestamp, 'i': _ingested_at, 'r': rowid}}) AS b "
            "FROM fv_bench_v1 GROUP BY entity_id)" + (" ORDER BY k" if form == "arg_max_sorted" else "")
        )
    else:
        sql = (
            f"SELECT CAST(entity_id AS VARCHAR), epoch_us(event_timestamp), {', '.join(FEATURES)} FROM fv_bench_v1 "
            "QUALIFY row_number() OVER (PARTITION BY entity_id ORDER BY event_timestamp DESC, _ingested_at DESC, rowid DESC) = 1"
        )
    out = sqlite3.connect(str(Path(root) / f"plain_{form}.db"), isolation_level=None)
    out.execute("PRAGMA journal_mode=WAL")
    out.execute("PRAGMA synchronous=NORMAL")
    out.execute(f"CREATE TABLE t (k TEXT PRIMARY KEY, _e INTEGER, {', '.join(FEATURES)}) WITHOUT ROWID")
    count = 0
    for batch in con.sql(sql).arrow(batch_size=50_000):
        rows = list(zip(*(c.to_pylist() for c in batch.columns), strict=True))
        out.execute("BEGIN")
        out.executemany(f"INSERT INTO t VALUES ({', '.join('?' * (2 + len(FEATURES)))})", rows)
        out.execute("COMMIT")
        count += len(rows)
    return {"seconds": time.perf_counter() - started, "entities": count}


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc (VmHWM is this process's own peak: ru_maxrss
    would carry the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(kind: str, root: str) -> None:
    start = _status_mb("VmRSS")
    result = run_store(root) if kind == "store" else run_plain(root, kind)
    result["peak_mb"] = _status_mb("VmHWM") - start
    print(json.dumps(result))


def measure(kind: str, root: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(root)], capture_output=True, text=True, check=True
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--rows-per-entity", type=int, default=10)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        root = Path(tmp) / "store"
        build(root, args.entities, args.rows_per_entity)
        print(
            f"{args.entities:,} entities x {args.rows_per_entity} rows = {args.entities * args.rows_per_entity:,} rows, "
            f"{len(FEATURES)} float features"
        )
        plain = measure("arg_max", root)
        ordered = measure("arg_max_sorted", root)
        window = measure("qualify", root)
        ours = measure("store", root)
        assert ours["entities"] == plain["entities"] == ordered["entities"] == window["entities"] == args.entities
        for label, r in (
            ("plain DuckDB arg_max -> SQLite", plain),
            ("plain, sorted by key", ordered),
            ("plain with a QUALIFY window", window),
            ("materialize(full=True)", ours),
        ):
            print(f"{label:<32} {r['seconds']:6.2f} s  peak +{r['peak_mb']:,.0f} MB")
        print(
            f"ratio store/plain: time {ours['seconds'] / plain['seconds']:.2f}, memory {ours['peak_mb'] / plain['peak_mb']:.2f} (goal <= 1.2); "
            f"against the sorted plain copy: time {ours['seconds'] / ordered['seconds']:.2f}, memory {ours['peak_mb'] / ordered['peak_mb']:.2f}"
        )


if __name__ == "__main__":
    main()
