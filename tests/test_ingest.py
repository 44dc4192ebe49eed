"""Ingestion: every supported source, every kind of bad input (with its message), atomicity."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from featurestore import FeatureStore, IngestionError, UnknownViewError
from featurestore.sources import STREAM_BATCH_ROWS

from .conftest import TS, StepClock, profile_rows, ts


def test_arrow_table_is_stored_with_batch_id_and_ingestion_time(store: FeatureStore, clock: StepClock) -> None:
    expected_time = clock.now  # the injected clock stamps the batch
    result = store.ingest("profile", profile_rows(3))
    assert (result.view, result.version, result.rows, result.batch_id) == ("profile", 1, 3, 1)
    assert result.ingested_at == expected_time
    table = store.read("profile")
    assert table.column("customer_id").to_pylist() == ["c0", "c1", "c2"]
    assert table.column("age").to_pylist() == [20, 21, 22]
    assert table.column("_batch_id").to_pylist() == [1, 1, 1]
    assert set(table.column("_ingested_at").to_pylist()) == {result.ingested_at}
    assert table.schema.field("event_timestamp").type == TS
    [batch] = store.list_batches("profile")
    assert (batch.status, batch.rows, batch.version) == ("committed", 3, 1)


def test_pandas_and_polars_sources(store: FeatureStore) -> None:
    df = profile_rows(2).to_pandas()
    assert isinstance(df["event_timestamp"].dtype, pd.DatetimeTZDtype)
    assert store.ingest("profile", df).rows == 2
    assert store.ingest("profile", pl.from_arrow(profile_rows(4, start=10))).rows == 4
    ages = store.read("profile").column("age").to_pylist()
    assert ages == [20, 21, 20, 21, 22, 23]


def test_pandas_timestamps_in_another_zone_are_stored_as_the_same_instant(store: FeatureStore) -> None:
    df = profile_rows(1).to_pandas()
    df["event_timestamp"] = pd.Series([pd.Timestamp("2025-01-01 01:00", tz="Europe/Berlin")])
    store.ingest("profile", df)
    [stored] = store.read("profile").column("event_timestamp").to_pylist()
    assert stored == datetime(2025, 1, 1, 0, 0, tzinfo=UTC)


def test_parquet_file_streams_in_batches_as_one_atomic_batch(
    store: FeatureStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(profile_rows(250), path, row_group_size=50)
    monkeypatch.setattr("featurestore.sources.STREAM_BATCH_ROWS", 60)
    seen: list[tuple[int, int | None]] = []
    result = store.ingest("profile", path, progress=lambda done, total: seen.append((done, total)))
    assert result.rows == 250
    assert len(seen) >= 4, "a streamed file reports progress once per chunk"
    assert seen[-1] == (250, 250)
    assert set(store.read("profile").column("_batch_id").to_pylist()) == {result.batch_id}
    assert STREAM_BATCH_ROWS == 1_000_000


def test_csv_file_keeps_string_keys_and_parses_zoned_timestamps(store: FeatureStore, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(
        "customer_id,event_timestamp,age,score,country\n"
        "00123,2025-01-01T10:00:00Z,30,1.5,DE\n"
        "00124,2025-01-01T12:00:00+02:00,31,,FR\n"
    )
    assert store.ingest("profile", path).rows == 2
    table = store.read("profile")
    assert table.column("customer_id").to_pylist() == ["00123", "00124"]
    assert table.column("event_timestamp").to_pylist() == [ts(1, 10), ts(1, 10)]
    assert table.column("score").to_pylist() == [1.5, None]


def test_record_batch_reader_source(store: FeatureStore) -> None:
    table = profile_rows(10)
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=3))
    assert store.ingest("profile", reader).rows == 10


def test_pinned_version_ingest_and_unknown_view(store: FeatureStore) -> None:
    assert store.ingest("profile@v1", profile_rows(1)).version == 1
    with pytest.raises(UnknownViewError, match=r"unknown feature view 'profle'\. Did you mean 'profile'\?"):
        store.ingest("profle", profile_rows(1))
    with pytest.raises(UnknownViewError, match=r"feature view 'profile' has no version v3; it has v1 to v1"):
        store.ingest("profile@v3", profile_rows(1))


# --- bad input: one test per kind, each asserting its message, each leaving nothing behind ---


def _assert_nothing_written(store: FeatureStore) -> None:
    assert store.read("profile").num_rows == 0


def test_missing_and_unknown_columns_are_listed_together_with_suggestions(store: FeatureStore) -> None:
    bad = profile_rows(2).rename_columns(["customer_id", "event_timestamp", "agee", "score", "country"])
    bad = bad.append_column("email", pa.array(["a@x", "b@x"]))
    with pytest.raises(IngestionError) as info:
        store.ingest("profile", bad)
    message = str(info.value)
    assert "data for 'profile@v1' does not fit its columns:" in message
    assert "missing column 'age'. Did you mean 'agee'?" in message
    assert "unknown column 'agee'. Did you mean 'age'?" in message
    assert "unknown column 'email'. Drop it before ingesting, or add it to the view definition" in message
    _assert_nothing_written(store)
    assert store.list_batches() == [], "a schema problem is caught before any batch is recorded"


def test_naive_timestamps_are_rejected_with_how_to_declare_a_zone(store: FeatureStore) -> None:
    df = profile_rows(2).to_pandas()
    df["event_timestamp"] = df["event_timestamp"].dt.tz_localize(None)
    with pytest.raises(
        IngestionError,
        match=r"column 'event_timestamp' has time-zone-naive timestamps; declare their zone, e\.g\. in pandas df\['event_timestamp'\] = df\['event_timestamp'\]\.dt\.tz_localize\('UTC'\)",
    ):
        store.ingest("profile", df)
    _assert_nothing_written(store)


def test_naive_timestamps_in_csv_are_rejected(store: FeatureStore, tmp_path: Path) -> None:
    path = tmp_path / "naive.csv"
    path.write_text("customer_id,event_timestamp,age,score,country\nc1,2025-01-01 10:00:00,3,1.0,DE\n")
    with pytest.raises(IngestionError, match="time-zone-naive timestamps.*in CSV an offset like 2024-05-01T12:00:00Z"):
        store.ingest("profile", path)


def test_null_keys_and_null_event_times_name_the_first_row(store: FeatureStore) -> None:
    bad = profile_rows(4)
    bad = bad.set_column(0, "customer_id", pa.array(["c0", "c1", None, None]))
    with pytest.raises(
        IngestionError,
        match=r"column 'customer_id' of 'profile@v1' has 2 null entity keys \(first at row 2\); every row needs its key and event time",
    ):
        store.ingest("profile", bad)
    bad = profile_rows(3).set_column(1, "event_timestamp", pa.array([ts(1), None, ts(2)], TS))
    with pytest.raises(
        IngestionError, match=r"column 'event_timestamp' of 'profile@v1' has 1 null event timestamp \(first at row 1\)"
    ):
        store.ingest("profile", bad)
    _assert_nothing_written(store)


def test_lossy_casts_are_rejected(store: FeatureStore) -> None:
    fractional = profile_rows(2).set_column(2, "age", pa.array([20.0, 20.5]))
    with pytest.raises(IngestionError) as info:
        store.ingest("profile", fractional)
    assert str(info.value) == (
        "column 'age' of 'profile@v1' cannot be stored as int64 without loss: a fractional value "
        "would be truncated converting to int64 (first at row 1)."
    )
    wrong_family = profile_rows(2).set_column(2, "age", pa.array(["20", "21"]))
    with pytest.raises(
        IngestionError,
        match=r"column 'age' is string in the data but int64 in the definition; convert it before ingesting",
    ):
        store.ingest("profile", wrong_family)
    nanos = profile_rows(1).set_column(
        1, "event_timestamp", pa.array([1_000_000_000_000_000_001], pa.timestamp("ns", tz="UTC"))
    )
    with pytest.raises(
        IngestionError, match=r"cannot be stored as timestamp without loss.*The store keeps microseconds"
    ):
        store.ingest("profile", nanos)
    _assert_nothing_written(store)


def test_lossless_casts_are_accepted(store: FeatureStore) -> None:
    data = profile_rows(2)
    data = data.set_column(2, "age", pa.array([20, 21], pa.int8()))
    data = data.set_column(3, "score", pa.array([1, 2], pa.int32()))
    data = data.set_column(4, "country", pa.array(["DE", "FR"]).dictionary_encode())
    data = data.set_column(
        1, "event_timestamp", pa.array([1_735_689_600_000_000_000] * 2, pa.timestamp("ns", tz="Asia/Tokyo"))
    )
    store.ingest("profile", data)
    table = store.read("profile")
    assert table.column("score").to_pylist() == [1.0, 2.0]
    assert table.column("country").to_pylist() == ["DE", "FR"]
    assert table.column("event_timestamp").to_pylist() == [datetime(2025, 1, 1, tzinfo=UTC)] * 2


def test_float32_feature_rejects_values_that_need_float64(clock: object) -> None:
    from featurestore import Entity, FeatureView

    with FeatureStore(memory=True) as fs:
        fs.apply(
            [Entity(name="e", join_keys={"id": "int64"}), FeatureView(name="v", entity="e", features={"x": "float32"})]
        )
        rows = pa.table({"id": [1, 2], "event_timestamp": pa.array([ts(1)] * 2, TS), "x": [0.5, 0.1]})
        with pytest.raises(
            IngestionError, match="cannot be stored as float32 without loss: some values need float64 precision"
        ):
            fs.ingest("v", rows)
        fs.ingest("v", rows.set_column(2, "x", pa.array([0.5, 2.0])))
        assert fs.read("v").column("x").to_pylist() == [0.5, 2.0]


def test_unsupported_sources(store: FeatureStore, tmp_path: Path) -> None:
    with pytest.raises(IngestionError, match=r"cannot ingest a dict into 'profile@v1': pass a pyarrow Table"):
        store.ingest("profile", {"customer_id": ["a"]})
    with pytest.raises(IngestionError, match=r"nope\.parquet: no such file"):
        store.ingest("profile", tmp_path / "nope.parquet")
    (tmp_path / "rows.json").write_text("{}")
    with pytest.raises(IngestionError, match=r"unsupported file type '\.json'; use \.parquet or \.csv"):
        store.ingest("profile", tmp_path / "rows.json")


def test_a_bad_chunk_late_in_a_stream_leaves_nothing_written(store: FeatureStore) -> None:
    good = profile_rows(6)
    bad = profile_rows(3).set_column(0, "customer_id", pa.array(["x", None, "y"]))
    reader = pa.RecordBatchReader.from_batches(good.schema, [*good.to_batches(max_chunksize=2), *bad.to_batches()])
    with pytest.raises(IngestionError, match=r"has 1 null entity key \(first at row 7\)"):
        store.ingest("profile", reader)
    _assert_nothing_written(store)
    [batch] = store.list_batches()
    assert batch.status == "aborted" and batch.rows is None
    assert "null entity key" in (batch.error or "")


def test_bad_csv_value_names_the_file_and_column(store: FeatureStore, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("customer_id,event_timestamp,age,score,country\nc1,2025-01-01T00:00:00Z,abc,1.0,DE\n")
    with pytest.raises(IngestionError) as info:
        store.ingest("profile", path)
    assert str(info.value) == f"{path}: column 'age', row 1 (line 2): a value is not a valid int64"
    _assert_nothing_written(store)


def test_time_travel_on_ingestion_time(store: FeatureStore) -> None:
    first = store.ingest("profile", profile_rows(2))
    second = store.ingest("profile", profile_rows(3, start=5))
    assert first.ingested_at < second.ingested_at
    assert store.read("profile", as_of=first.ingested_at).num_rows == 2
    assert store.read("profile", as_of=second.ingested_at).num_rows == 5
    assert store.read("profile", as_of=datetime(2000, 1, 1, tzinfo=UTC)).num_rows == 0
    only = store.read("profile", features=["age"], as_of=first.ingested_at)
    assert only.column_names == ["customer_id", "event_timestamp", "age", "_ingested_at", "_batch_id"]
    assert pc.max(only.column("_batch_id")).as_py() == first.batch_id


def test_duplicate_key_and_event_time_pairs_in_a_batch_are_counted(tmp_path: Path) -> None:
    """Accepted (the later row wins, as always), but counted and reported, never silent."""
    from typer.testing import CliRunner

    from featurestore.cli import app

    from .conftest import CUSTOMER, PROFILE

    root = tmp_path / "store"
    with FeatureStore.init(root) as fs:
        fs.apply([CUSTOMER, PROFILE])
        data = profile_rows(3)
        data = pa.concat_tables(
            [data, data.slice(0, 1), data.slice(1, 1), data.slice(1, 1)]
        )  # c0 twice, c1 three times
        result = fs.ingest("profile", data)
        assert result.duplicates == 3
        assert fs.audit_entries(action="ingest")[-1].details["duplicates"] == 3
        assert fs.ingest("profile", profile_rows(3)).duplicates == 0, (
            "the same pairs in another batch are not duplicates in it"
        )
    path = tmp_path / "dups.parquet"
    pq.write_table(pa.concat_tables([profile_rows(2), profile_rows(2)]), path)
    result = CliRunner().invoke(app, ["ingest", "profile", str(path), "-s", str(root)])
    assert (
        result.exit_code == 0
        and "2 rows share their key and event time with a later row of this batch" in result.output
    )
