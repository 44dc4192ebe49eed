"""How fast CLI commands start: each command's wall time next to `python -c pass`, same machine, same run.

Run:  python benchmarks/cli.py [--repeat 7]

Builds a small store (two views, a feature service, a few batches, materialized), then runs each
command `--repeat` times in a fresh process and prints the median. Goals (this machine):
`featurestore --help` under 0.3 s, `featurestore views` under 0.6 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featurestore import Entity, FeatureService, FeatureStore, FeatureView  # noqa: E402

SCRIPT = Path(sys.executable).parent / "featurestore"
GOALS = {"--help": 0.3, "views": 0.6}


def build(root: Path) -> None:
    now = datetime.now(UTC)
    with FeatureStore.init(root) as fs:
        fs.apply(
            [
                Entity(name="driver", join_keys={"driver_id": "int64"}),
                FeatureView(name="stats", entity="driver", ttl="2d", features={"trips": "int64", "rating": "float64"}),
                FeatureView(name="profile", entity="driver", features={"city": "string"}),
                FeatureService(name="ranking", features=("stats:trips", "profile:city")),
            ]
        )
        for hours in (3, 2, 1):
            fs.ingest(
                "stats",
                pa.table(
                    {
                        "driver_id": pa.array(range(1000), pa.int64()),
                        "event_timestamp": pa.array(
                            [now - timedelta(hours=hours)] * 1000, pa.timestamp("us", tz="UTC")
                        ),
                        "trips": pa.array(range(1000), pa.int64()),
                        "rating": [4.5] * 1000,
                    }
                ),
            )
        fs.ingest(
            "profile",
            pa.table(
                {
                    "driver_id": pa.array(range(1000), pa.int64()),
                    "event_timestamp": pa.array([now - timedelta(hours=1)] * 1000, pa.timestamp("us", tz="UTC")),
                    "city": ["Berlin"] * 1000,
                }
            ),
        )
        fs.materialize()


def timed(args: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed: {done.stdout}{done.stderr}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        build(root)
        s = ["-s", str(root)]
        commands = {
            "--help": ["--help"],
            "views": ["views", *s],
            "services": ["services", *s],
            "versions stats": ["versions", "stats", *s],
            "batches": ["batches", *s],
            "policy status": ["policy", "status", *s],
            "training-set list": ["training-set", "list", *s],
            "get-online": ["get-online", "-e", "driver_id=7", "-f", "service:ranking", *s],
        }
        baseline = timed([sys.executable, "-c", "pass"], args.repeat)
        print(f"{'python -c pass':<28} {baseline:6.3f} s")
        for name, command in commands.items():
            seconds = timed([str(SCRIPT), *command], args.repeat)
            goal = (
                f"  (goal < {GOALS[name]} s: {'met' if seconds < GOALS[name] else 'NOT met'})" if name in GOALS else ""
            )
            print(f"featurestore {name:<15} {seconds:6.3f} s  {seconds / baseline:5.1f}x python -c pass{goal}")


if __name__ == "__main__":
    main()
