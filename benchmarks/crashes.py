"""Kill -9 at random points of ingestion, many times: no committed batch may lack its audit entry.

Run:  python benchmarks/crashes.py [--trials 200] [--seed 1]

Each trial starts a process that ingests 50-row batches without end, kills it after a random
0-0.3 s, opens the store (which settles a batch the dead process left pending, writing its
audit entry in the same registry transaction) and counts committed batches without an
``ingest`` entry. The test suite runs 24 trials; this runs as many as asked.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featurestore import FeatureStore  # noqa: E402
from tests.conftest import CUSTOMER, PROFILE  # noqa: E402
from tests.test_processes import kill_during_ingest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        with FeatureStore.init(root) as fs:
            fs.apply([CUSTOMER, PROFILE])
        started = time.perf_counter()
        results = kill_during_ingest(root, trials=args.trials, seed=args.seed)
        unaudited = sum(u for _c, u in results)
        print(
            f"{args.trials} kills in {time.perf_counter() - started:.0f} s; {results[-1][0]} batches committed; "
            f"committed batches without an audit entry: {unaudited}"
        )
        sys.exit(1 if unaudited else 0)


if __name__ == "__main__":
    main()
