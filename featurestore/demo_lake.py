"""The demo's last step: the same features on the lake store (Delta tables that DuckDB and Spark
both read), under the same policy, with the same answers, and an erasure that leaves no trace in
any lake file. Called by :func:`featurestore.demo.run_demo`."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from .config import CONFIG_FILE
from .store import FeatureStore


def lake_step(
    root: Path,
    key_file: Path,
    definitions: str,
    policy: str,
    daily: pa.Table,
    spine: pa.Table,
    expected: pa.Table,
    say: Callable[[str], None],
    clock: Callable[[], datetime] | None,
) -> None:
    """Build ``<root>/lake-store`` on the lake layout, ingest `daily`, join `spine` with DuckDB
    (and Spark when pyspark is installed), compare with `expected` (the embedded file's answer),
    then erase one customer and prove it."""
    lake_root = root / "lake-store"
    say("[bold]9b. Beyond one machine: the lake store[/bold] (featurestore init --lake DIR_OR_URI)")
    FeatureStore.init(lake_root, lake="lake").close()
    config = lake_root / CONFIG_FILE
    config.write_text(
        config.read_text(encoding="utf-8")
        .replace("master_key_file: null", f"master_key_file: {key_file.resolve()}")
        .replace("require_policy: false", "require_policy: true"),
        encoding="utf-8",
    )
    (lake_root / "features" / "customers.yaml").write_text(definitions, encoding="utf-8")
    (lake_root / "policies" / "customer-data.yaml").write_text(policy, encoding="utf-8")
    with FeatureStore(lake_root, clock=clock, actor="demo-engineer") as lake:
        lake.approve_policy(
            lake_root / "policies" / "customer-data.yaml", by="A. Counsel", role="legal", ticket="LEGAL-413"
        )
        lake.apply()
        batch = lake.ingest("customer_spend_daily", daily)
        say(
            f"   offline rows are Delta tables in {lake_root / 'lake'} (one commit per batch: batch {batch.batch_id}, "
            f"{batch.rows:,} rows); closed mode and the same approved policy; bookkeeping in offline.duckdb"
        )
        refs = ["customer_spend_daily:spend_total", "customer_spend_daily:txn_count"]
        joined = lake.get_historical_features(spine, refs, purpose="fraud_detection")
        same = joined.select(expected.column_names).equals(expected)
        say(
            f"   DuckDB over the lake: {joined.num_rows:,} rows, {'the same values as' if same else 'DIFFERENT from'} the "
            "embedded file's join"
        )
        if importlib.util.find_spec("pyspark") is not None:
            by_spark = lake.get_historical_features(spine, refs, purpose="fraud_detection", engine="spark")
            say(
                f"   Spark over the lake (engine='spark', local[2]): "
                f"{'the same values' if by_spark.equals(joined) else 'DIFFERENT values'}"
            )
        else:
            say(
                "   Spark over the lake: pyspark is not installed here (pip install 'featurestore\\[spark]', Java 17); "
                "get_historical_features(..., engine='spark') then runs the same join on any Spark cluster"
            )
        subject = spine.column("customer_id")[1].as_py()
        [erased] = lake.erase("customer", [subject])
        proof = lake.verify_erasure("customer", subject)
        decoded = sum(c.method == "values" for c in proof.checks)
        say(
            f"   erased customer {subject} on the lake: {sum(erased.removed.values()):,} rows; files rewritten, vacuumed and the "
            f"Delta log cleaned; proof read {decoded} lake files decoded: {'clean' if proof.clean else 'FOUND'}"
        )
