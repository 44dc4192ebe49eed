"""No raw value in any message: bad rows, bad spines, bad entity rows and bad HTTP bodies get an error
that names the file, line, column or row and the kind of problem, never the value; online key
mistakes are errors, never a silent `missing`; columnar entity rows work."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from featurestore import FeatureStore, IngestionError, RetrievalError
from featurestore.server import create_app

from .test_erasure import OTHERS, SUBJECT, build, open_store

SECRET = "Raw.Person1@Example.org"
HEADER = "customer_id,event_timestamp,email,phone,birth_date,postcode,iban,ethnicity,spend,notes"
GOOD = f"{SUBJECT},2025-06-01T00:00:00Z,{SECRET},020 7946 1000,1980-05-17,SW1A 1AA,GB29NWBK60161331920000,group-a,1.5,n"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("leaks"), compression=None)


def no_secret(message: str, *secrets: str) -> None:
    for secret in (SECRET, SUBJECT, *secrets):
        assert secret.lower() not in message.lower(), f"{secret!r} leaked into: {message}"


CSV_CASES = {
    "an extra field": (f"{HEADER}\n{GOOD}\n{GOOD},extra\n", "line 3: expected 10 columns, got 11"),
    "a missing field": (f"{HEADER}\n{GOOD.rsplit(',', 1)[0]}\n", "line 2: expected 10 columns, got 9"),
    "a bad number": (
        f"{HEADER}\n{GOOD}\n{GOOD.replace(',1.5,', f',{SECRET},')}\n",
        "column 'spend', row 2 (line 3): a value is not a valid double",
    ),
    "a bad date": (
        f"{HEADER}\n{GOOD.replace('1980-05-17', SECRET)}\n",
        "column 'birth_date', row 1 (line 2): a value is not a valid date32[day]",
    ),
}


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_bad_csv_rows_name_the_line_or_column_and_row_but_never_the_value(
    root: Path, tmp_path: Path, case: str
) -> None:
    text, expected = CSV_CASES[case]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with open_store(root) as fs:
        with pytest.raises(IngestionError) as info:
            fs.ingest("person", path)
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value), str(info.value)
    no_secret(str(info.value))


def test_bad_in_memory_data_names_the_column_and_row_but_never_the_value(root: Path) -> None:
    from .test_governance import people

    with open_store(root) as fs:
        frame = people([SUBJECT, "p2"]).to_pandas()
        frame["spend"] = pd.Series([1.0, SECRET], dtype=object)
        with pytest.raises(IngestionError) as info:
            fs.ingest("person", frame)
        assert "column 'spend' changes type at row 1" in str(info.value)
        no_secret(str(info.value))
        mixed = people([SUBJECT, "p2"]).set_column(8, "spend", pa.array(["1.0", SECRET]))
        with pytest.raises(IngestionError) as info:
            fs.ingest("person", mixed)
        no_secret(str(info.value))
        stamps = people([SUBJECT]).set_column(
            1, "event_timestamp", pa.array([1_000_000_000_000_000_001], pa.timestamp("ns", tz="UTC"))
        )
        with pytest.raises(IngestionError, match=r"first at row 0"):
            fs.ingest("person", stamps)


def test_bad_entity_files_and_frames_never_quote_a_key(root: Path, tmp_path: Path) -> None:
    spine = tmp_path / "spine.csv"
    spine.write_text(
        f"customer_id,event_timestamp\n{SUBJECT},2025-06-05T00:00:00Z\n{SECRET},2025-06-05T00:00:00Z,extra\n"
    )
    with open_store(root) as fs:
        with pytest.raises(RetrievalError) as info:
            fs.get_historical_features(spine, ["person:spend"], purpose="fraud_detection")
        assert "line 3: expected 2 columns, got 3" in str(info.value)
        no_secret(str(info.value))
        frame = pd.DataFrame(
            {"customer_id": [SUBJECT, 7], "event_timestamp": pd.to_datetime(["2025-06-05"] * 2, utc=True)}
        )
        with pytest.raises(RetrievalError) as info:
            fs.get_historical_features(frame, ["person:spend"], purpose="fraud_detection")
        no_secret(str(info.value))


WRONG_KEYS = [1001, 10.5, True, [SUBJECT], {"id": SUBJECT}]


@pytest.mark.parametrize("value", WRONG_KEYS, ids=["int", "float", "bool", "list", "object"])
def test_a_wrong_key_type_online_is_an_error_not_a_silent_miss(root: Path, value: object) -> None:
    with open_store(root) as fs:
        with pytest.raises(RetrievalError) as info:
            fs.get_online_features(
                [{"customer_id": SUBJECT}, {"customer_id": value}], ["person:spend"], purpose="fraud_detection"
            )
        assert str(info.value).startswith("entity row 1: join key 'customer_id' of person@v1 must be a string, not ")
        no_secret(str(info.value))
        with pytest.raises(RetrievalError) as info:
            fs.get_online_features(
                [{"customer_id": SUBJECT}, {"email": SECRET}], ["person:spend"], purpose="fraud_detection"
            )
        assert str(info.value) == "entity row 1 has no 'customer_id', a join key of person@v1 (it has: email)"


def test_integer_keys_are_checked_for_type_and_range(tmp_path: Path) -> None:
    from featurestore import Entity, FeatureView

    with FeatureStore(memory=True) as fs:
        fs.apply(
            [
                Entity(name="driver", join_keys={"driver_id": "int64"}),
                FeatureView(name="trips", entity="driver", features={"n": "int64"}),
            ]
        )
        fs.ingest(
            "trips",
            pa.table(
                {
                    "driver_id": pa.array([1001], pa.int64()),
                    "event_timestamp": pa.array([pd.Timestamp("2025-06-01", tz="UTC")], pa.timestamp("us", tz="UTC")),
                    "n": pa.array([3], pa.int64()),
                }
            ),
        )
        fs.materialize()
        for value, got in [
            ("abc", "a string"),
            (1001.5, "a fractional number"),
            (True, "a boolean"),
            ([1001], "a list"),
            (2**70, "a whole number out of that range"),
        ]:
            with pytest.raises(RetrievalError) as info:
                fs.get_online_features([{"driver_id": value}], ["trips:n"])
            assert str(info.value).startswith(
                f"entity row 0: join key 'driver_id' of trips@v1 must be a whole number (int64, "
                f"-9223372036854775808 to 9223372036854775807), not {got}"
            ), str(info.value)
        for value, got in [("abc", "a string"), (2**63, "a whole number out of that range"), (None, None)]:
            rows = [{"driver_id": 1001}, {"driver_id": None}, {"driver_id": value}]
            if got is None:
                assert fs.get_online_features(rows, ["trips:n"]).values == {"n": [3, None, None]}
                continue
            with pytest.raises(RetrievalError, match=rf"^entity row 2: join key 'driver_id' of trips@v1 .*, not {got}"):
                fs.get_online_features(rows, ["trips:n"])
        columnar = fs.get_online_features({"driver_id": [1001, 1002]}, ["trips:n"])
        assert columnar.values == {"n": [3, None]} and columnar.statuses["n"] == ["present", "missing"]
        for frame in (pd.DataFrame({"driver_id": [1002, 1001]}), pl.DataFrame({"driver_id": [1002, 1001]})):
            assert fs.get_online_features(frame, ["trips:n"]).values == {"n": [None, 3]}
        with pytest.raises(RetrievalError, match="mix columns"):
            fs.get_online_features({"driver_id": [1001], "other": 3}, ["trips:n"])
        with pytest.raises(RetrievalError, match=r"different lengths \(\[1, 2\]\)"):
            fs.get_online_features({"driver_id": [1001], "other": [1, 2]}, ["trips:n"])


def test_string_keys_in_a_batch_are_checked_row_by_row() -> None:
    from featurestore import Entity, FeatureView

    with FeatureStore(memory=True) as fs:
        fs.apply(
            [
                Entity(name="user", join_keys={"user_id": "string"}),
                FeatureView(name="clicks", entity="user", features={"n": "int64"}),
            ]
        )
        fs.ingest(
            "clicks",
            pa.table(
                {
                    "user_id": ["u1", "7"],
                    "event_timestamp": pa.array(
                        [pd.Timestamp("2025-06-01", tz="UTC")] * 2, pa.timestamp("us", tz="UTC")
                    ),
                    "n": pa.array([3, 4], pa.int64()),
                }
            ),
        )
        fs.materialize()
        got = fs.get_online_features(
            [{"user_id": "7"}, {"user_id": None}, {"user_id": "u1"}, {"user_id": "u2"}], ["clicks:n"]
        )
        assert got.values == {"n": [4, None, 3, None]} and got.statuses["n"] == [
            "present",
            "missing",
            "present",
            "missing",
        ]
        for value, kind in [
            (7, "a whole number"),
            (7.0, "a fractional number"),
            (False, "a boolean"),
            (["7"], "a list"),
        ]:
            with pytest.raises(
                RetrievalError, match=rf"^entity row 2: join key 'user_id' of clicks@v1 must be a string, not {kind}"
            ):
                fs.get_online_features([{"user_id": "u1"}, {"user_id": None}, {"user_id": value}], ["clicks:n"])


def test_http_errors_have_the_declared_shape_and_never_echo_the_request(root: Path) -> None:
    fs = open_store(root)
    with TestClient(create_app(fs)) as client:
        cases = [
            client.post(
                "/v1/online-features",
                json={"entities": [{"email": SECRET}], "features": ["person:spend"], "purpose": "fraud_detection"},
            ),
            client.post(
                "/v1/online-features",
                json={"entities": [{"customer_id": 5}], "features": ["person:spend"], "purpose": "fraud_detection"},
            ),
            client.post("/v1/online-features", json={"entities": SECRET, "features": ["person:spend"], "purpose": "p"}),
            client.post(
                "/v1/online-features", json={"entities": [{"customer_id": SUBJECT}], "features": [SECRET], "purpose": 3}
            ),
            client.post(
                "/v1/online-features",
                content=f'{{"entities": [{{"customer_id": "{SUBJECT}"'.encode(),
                headers={"content-type": "application/json"},
            ),
            client.post(
                "/v1/online-features",
                content=b"\xff\xfe" + SECRET.encode(),
                headers={"content-type": "application/json"},
            ),
            client.post("/v1/online-features", content=SECRET.encode(), headers={"content-type": "text/plain"}),
            client.get("/v1/nowhere"),
        ]
        for response in cases:
            assert 400 <= response.status_code < 500, response.text
            body = response.json()
            assert set(body) == {"error", "detail"} and all(isinstance(v, str) for v in body.values()), body
            no_secret(response.text)
        assert cases[0].status_code == 400 and "has no 'customer_id'" in cases[0].json()["detail"]
        assert cases[2].status_code == 422 and "body.entities" in cases[2].json()["detail"]


def test_a_governed_online_value_is_still_served(root: Path) -> None:
    with open_store(root) as fs:
        got = fs.get_online_features(
            {"customer_id": [OTHERS[0], OTHERS[1]]}, ["person:spend"], purpose="fraud_detection"
        )
        assert got.statuses["spend"] == ["present", "present"]
