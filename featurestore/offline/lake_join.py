"""Point-in-time joins over the lake layout (:mod:`featurestore.offline.lake`), by two engines with
the rules of :mod:`featurestore.offline.pit` to the letter:

- :func:`duckdb_join`: DuckDB scans each table's files in place (as the lake store does) and runs the same SQL
  as for the embedded file (``pit_sql``), ranking by the lake's row id ``_fs_row`` where the file
  uses ``rowid``; the plan is chosen by shape the same way.
- :func:`spark_join`: Spark reads the tables' Parquet files and joins on a range (key equal,
  ``t - ttl <= e <= t``) with ``ROW_NUMBER`` over (event time, created time with nulls lowest,
  ingestion time, row id), all descending, per entity row. Times are compared as UTC
  microseconds (``unix_micros``), so the session time zone cannot shift an edge; it is pinned to
  UTC anyway. Spark's private ``_joinAsOf`` is not used: it plans a nested-loop join.

Both take the entity frame of :func:`featurestore.entity_frames.join_frame` (``_row``, the keys in
every stored form, ``_t_floor``, ``_t_ceil``) and return ``_row`` plus the outputs, one row per
entity row, in ``_row`` order, typed as the stored columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .lake import DeltaTables
from .pit import ViewRequest, pit_sql, plan_by_shape
from .sql import utc_schema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

LAKE_POSITION = "_fs_row"
_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def duckdb_join(
    lake: DeltaTables, frame: pa.Table, requests: Sequence[ViewRequest], *, as_of: datetime | None, known: bool
) -> pa.Table:
    """The join by DuckDB over the lake's tables (their current versions)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for table in {r.table for r in requests}:
            lake.register(con, table)
        con.register("_fs_entities", frame)
        chosen = plan_by_shape(
            lambda sql: int(con.execute(sql).fetchall()[0][0]),
            [replace(r, position=LAKE_POSITION) for r in requests],
            known=known,
        )
        return utc_schema(con.sql(pit_sql(chosen, as_of=as_of, known_at_prediction_time=known)).to_arrow_table())
    finally:
        con.close()


def local_session(cores: int = 2, memory: str = "2g") -> SparkSession:
    """A local SparkSession set up for point-in-time joins (UTC, few shuffle partitions, Arrow on,
    JVM logging at ERROR, no progress bars): what the tests, benchmarks and demo use; a cluster
    takes its usual configuration, plus ``spark.sql.session.timeZone=UTC``."""
    import os
    import tempfile
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # pyspark's notice about pandas 3
            from pyspark.sql import SparkSession
    except ImportError:  # pragma: no cover - the spark extra is missing
        from ..errors import ConfigError

        raise ConfigError("the Spark engine needs pyspark: pip install 'featurestore[spark]' (and Java 17)") from None
    logging = Path(tempfile.gettempdir()) / "featurestore-spark-log4j2.properties"
    if not logging.exists():
        logging.write_text(
            "rootLogger.level = error\nrootLogger.appenderRef.stderr.ref = console\n"
            "appender.console.type = Console\nappender.console.name = console\n"
            "appender.console.target = SYSTEM_ERR\nappender.console.layout.type = PatternLayout\n"
            "appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n\n",
            encoding="utf-8",
        )
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder: Any = SparkSession.builder
    session: SparkSession = (
        builder.master(f"local[{cores}]")
        .appName("featurestore")
        .config("spark.driver.memory", memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(2 * cores))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{logging}")
        .config("spark.sql.ansi.enabled", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_session() -> SparkSession:
    """The active SparkSession (a cluster's, configured as usual), else :func:`local_session`."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return local_session()
    active = SparkSession.getActiveSession()
    return active if active is not None else local_session()


def spark_join(
    spark: SparkSession,
    lake: DeltaTables,
    frame: pa.Table,
    requests: Sequence[ViewRequest],
    *,
    as_of: datetime | None,
    known: bool,
    committed: set[int] | None = None,
) -> pa.Table:
    """The join by Spark over the lake's tables (their current versions' Parquet files); with
    `committed`, only rows of those batches exist (the lake store's recorded batches)."""
    import warnings

    if spark.conf.get("spark.sql.session.timeZone") != "UTC":
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pyspark's notice about pandas 3 (no pandas is used here)
        return _spark_join(spark, lake, frame, requests, as_of=as_of, known=known, committed=committed)


def _spark_join(
    spark: SparkSession,
    lake: DeltaTables,
    frame: pa.Table,
    requests: Sequence[ViewRequest],
    *,
    as_of: datetime | None,
    known: bool,
    committed: set[int] | None,
) -> pa.Table:
    entities = spark.createDataFrame(frame)
    result = entities.select("_row")
    types: dict[str, pa.DataType] = {}
    for request in requests:
        schema = lake.dataset(request.table).schema
        types.update({out: schema.field(f).type for f, out in zip(request.features, request.outputs, strict=True)})
        files = lake.files(request.table)
        stored = spark.read.parquet(*files) if files else spark.createDataFrame(schema.empty_table())
        if committed is not None:
            from pyspark.sql import functions as F

            stored = stored.where(F.col("_batch_id").isin(sorted(committed)))
        result = result.join(_best(entities, stored, request, as_of=as_of, known=known), "_row", "left")
    arrow = result.orderBy("_row").toArrow()
    columns = {"_row": arrow.column("_row").cast(pa.int64())}
    for request in requests:
        for out in request.outputs:
            columns[out] = arrow.column(out).cast(types[out])
    return utc_schema(pa.table(columns))


def _micros(column: Any) -> Any:
    from pyspark.sql import functions as F

    return F.unix_micros(column)


def _best(
    entities: DataFrame, stored: DataFrame, request: ViewRequest, *, as_of: datetime | None, known: bool
) -> DataFrame:
    """Per entity row (``_row``), the stored row a view's rules choose: its outputs, or no row."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keys = [f"_k{j}" for j in range(len(request.join_keys))]
    created = _micros(F.col(request.created_field)) if request.created_field else F.lit(None).cast("long")
    rows = stored.select(
        *(F.col(k).alias(alias) for k, alias in zip(request.join_keys, keys, strict=True)),
        _micros(F.col(request.timestamp_field)).alias("_e"),
        created.alias("_c"),
        _micros(F.col("_ingested_at")).alias("_i"),
        F.col(LAKE_POSITION).alias("_r"),
        *(F.col(f).alias(f"_v{j}") for j, f in enumerate(request.features)),
    )
    if as_of is not None:
        rows = rows.where(F.col("_i") <= _to_micros(as_of))
    if request.not_before is not None:
        rows = rows.where(F.col("_e") >= _to_micros(request.not_before))
    forms = None
    for prefix in request.key_prefixes:  # every stored form of the keys: the best match over all wins
        form = entities.select(
            "_row",
            *(F.col(prefix + k).alias(alias) for k, alias in zip(request.join_keys, keys, strict=True)),
            _micros(F.col("_t_floor")).alias("_tf"),
            _micros(F.col("_t_ceil")).alias("_tc"),
        )
        forms = form if forms is None else forms.unionByName(form)
    assert forms is not None
    e, f = forms.alias("e"), rows.alias("f")
    condition = F.col("f._e") <= F.col("e._tf")
    for alias in keys:
        condition = condition & (F.col(f"e.{alias}") == F.col(f"f.{alias}"))
    if request.ttl is not None:
        condition = condition & (F.col("f._e") >= F.col("e._tc") - F.lit(request.ttl // _US))
    if known:
        condition = condition & (F.col("f._i") <= F.col("e._tf"))
    candidates = e.join(f, condition, "inner").select(
        "e._row", "f._e", "f._c", "f._i", "f._r", *(f"f._v{j}" for j in range(len(request.features)))
    )
    order = Window.partitionBy("_row").orderBy(
        F.col("_e").desc(), F.col("_c").desc_nulls_last(), F.col("_i").desc(), F.col("_r").desc()
    )
    best = candidates.withColumn("_n", F.row_number().over(order)).where(F.col("_n") == 1)
    return best.select("_row", *(F.col(f"_v{j}").alias(out) for j, out in enumerate(request.outputs)))


def _to_micros(moment: datetime) -> int:
    return (moment.astimezone(UTC) - _EPOCH) // _US
