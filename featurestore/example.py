"""``featurestore init DIR --example``: a small working store to start from, as ``feast init``
gives one. Definitions (an entity, a view, a feature service), a policy that pseudonymizes the
driver id, and a day of hourly data ending now, plus the commands that take it to serving.

The master key goes to ``<DIR>.master.key`` beside the store (mode 600), never inside it, and
``keys.master_key_file`` points at it.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .config import CONFIG_FILE
from .errors import ConfigError
from .privacy.keys import generate_master_key

DEFINITIONS = """\
# The example's definitions. `featurestore plan` shows what `featurestore apply` would change.
entities:
  - name: driver
    description: A driver of the ride-hailing example.
    join_keys: {driver_id: string}   # stored as a keyed hash (see the policy), so text

feature_views:
  - name: driver_hourly_stats
    entity: driver
    description: Hourly statistics per driver.
    ttl: 2d
    features:
      conv_rate: {type: float64, description: "share of offers accepted by riders"}
      acc_rate: {type: float64, description: "share of offers the driver accepted"}
      avg_daily_trips: int64

feature_services:
  - name: driver_activity_v1
    description: What the ranking model reads, for training and serving.
    features: [driver_hourly_stats:conv_rate, driver_hourly_stats:acc_rate, driver_hourly_stats:avg_daily_trips]
"""

POLICY = """\
# The example's data policy: legal reviews and approves it (`featurestore policy approve`).
api_version: featurestore.policy/v1
id: drivers
version: 1
title: Driver activity features
owner: dpo@example.com
legal_basis: contract
effective_from: 2026-01-01
review_by: 2027-12-31
scope: {feature_views: [driver_hourly_stats]}
classification:
  driver_id: {kind: direct_identifier}   # stored as a keyed hash; lookups by raw id still work
  conv_rate: non_personal
  acc_rate: non_personal
  avg_daily_trips: non_personal
treatments: {direct_identifier: keyed_hash, non_personal: keep}
purposes:
  allowed:
    ranking: {access: [offline, online]}
  denied: [marketing]
retention: {offline: P400D, online: P30D}
"""

DRIVERS = (1001, 1002, 1003, 1004, 1005)


def data_csv(now: datetime, seed: int = 7) -> str:
    """A day of hourly rows per driver, the last one an hour before `now` (so nothing is expired)."""
    rng = random.Random(seed)
    end = now.replace(minute=0, second=0, microsecond=0, tzinfo=UTC) - timedelta(hours=1)
    lines = ["driver_id,event_timestamp,conv_rate,acc_rate,avg_daily_trips"]
    for hour in range(24, 0, -1):
        at = (end - timedelta(hours=hour - 1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for driver in DRIVERS:
            lines.append(
                f"{driver},{at},{rng.uniform(0.1, 0.9):.3f},{rng.uniform(0.5, 1.0):.3f},{rng.randrange(100, 900)}"
            )
    return "\n".join(lines) + "\n"


def write_example(root: Path, now: datetime) -> list[str]:
    """Fill a new store directory with the example; return the commands that take it to serving."""
    key_file = root.parent / f"{root.name}.master.key"
    if key_file.exists():
        raise ConfigError(f"{key_file} exists: remove it or choose another directory for the example")
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(generate_master_key() + "\n")
    config = root / CONFIG_FILE
    config.write_text(config.read_text().replace("master_key_file: null", f"master_key_file: {key_file.resolve()}", 1))
    (root / "features" / "drivers.yaml").write_text(DEFINITIONS)
    (root / "policies" / "drivers.yaml").write_text(POLICY)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "driver_hourly_stats.csv").write_text(data_csv(now))
    s = f"-s {root}"
    return [
        f"featurestore plan {s}",
        f"featurestore apply {s}",
        f"featurestore policy approve {root / 'policies' / 'drivers.yaml'} --by 'Your Name' --role legal {s}",
        f"featurestore ingest driver_hourly_stats {root / 'data' / 'driver_hourly_stats.csv'} {s}",
        f"featurestore materialize {s}",
        f"featurestore get-online -e driver_id=1001 -f service:driver_activity_v1 --purpose ranking {s}",
    ]
