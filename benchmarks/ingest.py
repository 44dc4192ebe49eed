"""Ingestion speed: FeatureStore.ingest against a plain DuckDB INSERT ... SELECT of the same table.

Run:  python benchmarks/ingest.py [--rows 10000000] [--repeat 3]

Both write the same Arrow table (1 int64 key, 1 timestamp, 6 float64, 2 int64, 2 string
columns: 12 in all) into a fresh DuckDB file on the same disk; the store also validates the
batch, adds _ingested_at and _batch_id, and records the batch in its registry. Prints rows/s
for both and the ratio (store time / plain time; the goal is <= 1.5).

Then the same with two identifier columns (a distinct email and phone number per row, the worst
case for hashing) under an approved policy that stores them as HMAC-SHA256 pseudonyms after
normalization; the plain insert writes the raw values. Goal: at least 1M rows/s.

Last, a schema change that adds a feature: `apply` carries v1's rows into v2 (plus its records
and the registry), against a plain `INSERT INTO v2 SELECT ..., NULL FROM v1` in the same kind of
file. Goal: within 1.5x. `--only carry` runs just that part.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featurestore import Entity, FeatureStore, FeatureView  # noqa: E402


def make_table(rows: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    start = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
    columns: dict[str, pa.Array] = {
        "entity_id": pa.array(rng.integers(0, 1_000_000, rows), pa.int64()),
        "event_timestamp": pa.array(start + rng.integers(0, 365 * 86_400_000_000, rows), pa.timestamp("us", tz="UTC")),
    }
    for i in range(6):
        columns[f"f{i}"] = pa.array(rng.standard_normal(rows))
    for i in range(6, 8):
        columns[f"f{i}"] = pa.array(rng.integers(0, 1000, rows), pa.int64())
    cats = pa.array([f"category_{i:03d}" for i in range(200)])
    for i in range(8, 10):
        columns[f"f{i}"] = cats.take(pa.array(rng.integers(0, 200, rows)))
    return pa.table(columns)


FEATURES = {**{f"f{i}": "float64" for i in range(6)}, "f6": "int64", "f7": "int64", "f8": "string", "f9": "string"}


def time_plain(table: pa.Table, folder: Path) -> float:
    path = folder / "plain.duckdb"
    con = duckdb.connect(str(path))
    con.execute(f"CREATE TABLE t ({_column_types(table)})")
    con.register("incoming", table)
    started = time.perf_counter()
    con.execute("BEGIN TRANSACTION")
    con.execute("INSERT INTO t SELECT * FROM incoming")
    con.execute("COMMIT")
    elapsed = time.perf_counter() - started
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == table.num_rows  # type: ignore[index]
    con.close()
    return elapsed


def time_store(table: pa.Table, folder: Path) -> float:
    store = FeatureStore.init(folder / "store")
    store.apply(
        [
            Entity(name="entity", join_keys={"entity_id": "int64"}),
            FeatureView(name="bench", entity="entity", features=FEATURES),
        ]
    )
    started = time.perf_counter()
    result = store.ingest("bench", table)
    elapsed = time.perf_counter() - started
    assert result.rows == table.num_rows
    store.close()
    return elapsed


POLICY = """\
id: bench
version: 1
owner: bench@example.com
legal_basis: legitimate_interest
effective_from: 2026-01-01
review_by: 2027-01-01
scope: {feature_views: [bench]}
classification:
  entity_id: non_personal
  email: {kind: direct_identifier, normalize: email}
  phone: {kind: direct_identifier, normalize: phone}
  "f*": non_personal
treatments: {direct_identifier: keyed_hash, non_personal: keep}
purposes: {allowed: {benchmark: {access: [offline]}}}
"""


def with_identifiers(table: pa.Table, rows_per_person: int = 1) -> pa.Table:
    """Replace the two string columns by an email and a phone number: distinct on every row
    (rows_per_person=1, the worst case for hashing) or shared by that many rows."""
    import pyarrow.compute as pc

    people = pc.divide(pa.array(range(table.num_rows), pa.int64()), rows_per_person)
    numbers = pc.cast(pc.multiply(people, 7919), pa.string())  # scattered, not sorted
    emails = pc.binary_join_element_wise(" User.", numbers, "@Example.com ", "")
    person = np.arange(table.num_rows, dtype=np.int64) // rows_per_person
    areas = np.array(["212", "415", "646", "718"])[person % 4]  # valid US numbers: area code, then 2000000-9999999
    lines = (2_000_000 + (person * 7919) % 8_000_000).astype(str)
    phones = pa.array(np.char.add(np.char.add("+1 ", areas), np.char.add(" ", lines)), pa.string())
    return table.drop_columns(["f8", "f9"]).append_column("email", emails).append_column("phone", phones)


def time_store_hashed(table: pa.Table, folder: Path) -> float:
    import secrets

    from featurestore.privacy.keys import StaticKeyProvider

    root = folder / "store"
    FeatureStore.init(root).close()
    (root / "policies" / "bench.yaml").write_text(POLICY)
    store = FeatureStore(root, key_provider=StaticKeyProvider(secrets.token_bytes(32)))
    features = {k: v for k, v in FEATURES.items() if k not in ("f8", "f9")} | {"email": "string", "phone": "string"}
    store.apply(
        [
            Entity(name="entity", join_keys={"entity_id": "int64"}),
            FeatureView(name="bench", entity="entity", features=features),
        ]
    )
    store.approve_policy(root / "policies" / "bench.yaml", by="bench", role="legal")
    store._keys.current("hmac")  # the key is made once per store, outside the timing
    started = time.perf_counter()
    result = store.ingest("bench", table)
    elapsed = time.perf_counter() - started
    assert result.rows == table.num_rows
    sample = store.read("bench", features=["email"], purpose="benchmark").column("email")[0].as_py()
    assert sample.startswith("hmac-1:") and len(sample) == 7 + 32
    store.close()
    return elapsed


def _column_types(table: pa.Table) -> str:
    return ", ".join(
        f"{f.name} {'BIGINT' if pa.types.is_integer(f.type) else 'DOUBLE' if pa.types.is_floating(f.type) else 'TIMESTAMPTZ' if pa.types.is_timestamp(f.type) else 'VARCHAR'}"
        for f in table.schema
    )


def time_plain_carry(table: pa.Table, folder: Path) -> float:
    con = duckdb.connect(str(folder / "plain.duckdb"))
    con.execute(f"CREATE TABLE v1 ({_column_types(table)}, _ingested_at TIMESTAMPTZ, _batch_id BIGINT)")
    con.register("incoming", table)
    con.execute("INSERT INTO v1 SELECT *, now(), 1 FROM incoming")
    con.execute("CHECKPOINT")
    started = time.perf_counter()
    con.execute("BEGIN TRANSACTION")
    con.execute(
        f"CREATE TABLE v2 ({_column_types(table)}, tenure_days BIGINT, _ingested_at TIMESTAMPTZ, _batch_id BIGINT)"
    )
    names = ", ".join(table.column_names)
    con.execute(f"INSERT INTO v2 SELECT {names}, NULL, _ingested_at, _batch_id FROM v1")
    con.execute("COMMIT")
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed


def time_store_carry(table: pa.Table, folder: Path) -> float:
    store = FeatureStore.init(folder / "store")
    entity = Entity(name="entity", join_keys={"entity_id": "int64"})
    store.apply([entity, FeatureView(name="bench", entity="entity", features=FEATURES)])
    store.ingest("bench", table)
    started = time.perf_counter()
    [change] = store.apply(
        [entity, FeatureView(name="bench", entity="entity", features={**FEATURES, "tenure_days": "int64"})]
    ).changes
    elapsed = time.perf_counter() - started
    assert change.carry_from == 1
    assert store.read("bench", features=["tenure_days"]).num_rows == table.num_rows
    store.close()
    return elapsed


def medians(
    table: pa.Table,
    store_run: Callable[[pa.Table, Path], float],
    repeat: int,
    plain_run: Callable[[pa.Table, Path], float] = time_plain,
) -> tuple[float, float]:
    """Median seconds of the plain run and of `store_run`, alternating, each in a fresh folder."""
    plain, ours = [], []
    for _ in range(repeat):
        for run, times in ((plain_run, plain), (store_run, ours)):
            with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
                times.append(run(table, Path(tmp)))
    return statistics.median(plain), statistics.median(ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["carry"], help="run one part only")
    args = parser.parse_args()
    table = make_table(args.rows)
    print(
        f"{args.rows:,} rows x {table.num_columns} columns, {table.nbytes / 2**20:,.0f} MiB in Arrow; {args.repeat} runs each"
    )
    if args.only != "carry":
        ingestion(table, args.rows, args.repeat)
    p, o = medians(table, time_store_carry, args.repeat, time_plain_carry)
    print("schema change adding one feature, v1's rows carried into v2:")
    print(f"  plain DuckDB INSERT INTO v2 SELECT ... FROM v1 : {p:6.2f} s (median)")
    print(f"  apply (carry forward)                          : {o:6.2f} s (median)")
    print(f"  ratio store/plain                              : {o / p:6.2f}  (goal <= 1.5)")


def ingestion(table: pa.Table, rows: int, repeat: int) -> None:
    """The ingestion rows of the report: plain, then with two hashed identifier columns."""
    p, o = medians(table, time_store, repeat)
    print(f"plain DuckDB INSERT ... SELECT : {p:6.2f} s  {rows / p / 1e6:6.2f} M rows/s (median)")
    print(f"FeatureStore.ingest            : {o:6.2f} s  {rows / o / 1e6:6.2f} M rows/s (median)")
    print(f"ratio store/plain              : {o / p:6.2f}  (goal <= 1.5)")

    for rows_per_person, label in (
        (1, "a distinct email and phone on every row (worst case)"),
        (10, "each email and phone on 10 rows (one person, many events)"),
    ):
        p, o = medians(with_identifiers(table, rows_per_person), time_store_hashed, repeat)
        print(f"with two identifier columns, {label}:")
        print(f"  plain DuckDB INSERT, raw values : {p:6.2f} s  {rows / p / 1e6:6.2f} M rows/s (median)")
        print(f"  ingest, both HMAC'd under policy: {o:6.2f} s  {rows / o / 1e6:6.2f} M rows/s (median; goal >= 1.0)")


if __name__ == "__main__":
    main()
