"""Push: rows straight to serving, validated and treated as ingest does; online an older event
never overwrites a newer one, whether it comes by push or by materialization."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from featurestore import FeatureStore, IngestionError
from featurestore.errors import FeatureStoreError
from featurestore.testing import TEST_KEY_PROVIDER

from .test_online import ITEM, STOCK, T0, SetClock, redis_store, stock  # noqa: F401  (redis_store is a fixture)

TS = pa.timestamp("us", tz="UTC")


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FeatureStore]:
    root = tmp_path / "store"
    FeatureStore.init(root).close()
    with FeatureStore(root, clock=SetClock(T0)) as store:
        store.apply([ITEM, STOCK])
        yield store


def qty(fs: FeatureStore, *ids: int) -> list[object]:
    return fs.get_online_features([{"item_id": i} for i in ids], ["stock:qty"]).values["qty"]


def check_newer_wins(fs: FeatureStore) -> None:
    result = fs.push("stock", stock([1, 2], T0 - timedelta(minutes=10), 5))
    assert (result.rows, result.batch_id, result.online_entities) == (2, None, 2)
    assert qty(fs, 1, 2, 3) == [5, 5, None], "served at once, without materialize"
    fs.push("stock", stock([1], T0 - timedelta(minutes=30), 1))  # an older event arrives late
    assert qty(fs, 1) == [5], "an older event never overwrites a newer one"
    fs.push("stock", stock([1], T0 - timedelta(minutes=10), 6))  # the same event time again: the later push wins
    assert qty(fs, 1) == [6]
    fs.push(
        "stock", pa.concat_tables([stock([2], T0 - timedelta(minutes=1), 8), stock([2], T0 - timedelta(minutes=1), 9)])
    )
    assert qty(fs, 2) == [9], "within one push, the later of two tied rows wins"


def test_online_push_serves_at_once_and_keeps_the_newest_event(fs: FeatureStore) -> None:
    check_newer_wins(fs)
    assert fs.read("stock").num_rows == 0 and fs.list_batches() == [], "to='online' writes nothing offline"
    [entry, *_] = fs.audit_entries(action="push")
    assert entry.details == {"to": "online", "rows": 2, "batch": None, "online_entities": 2, "dropped_erased": 0}


def test_redis_push_keeps_the_newest_event(redis_store: tuple[FeatureStore, str]) -> None:  # noqa: F811
    store, _prefix = redis_store
    store.apply([ITEM, STOCK])
    check_newer_wins(store)
    store.ingest("stock", stock([1], T0 - timedelta(hours=2), 3))  # older than what was pushed
    store.materialize()
    assert qty(store, 1) == [6], "materialization does not overwrite a newer pushed value on Redis either"
    [full] = store.materialize(full=True)
    assert qty(store, 1) == [6], "a full rebuild keeps a pushed row newer than the offline one (stamped, so not pruned)"
    assert qty(store, 2) == [None], "an entity pushed online only, absent offline, is gone after a full rebuild"
    assert full.entities == 1


def test_materialize_never_overwrites_a_newer_pushed_value_and_a_rewind_does(fs: FeatureStore) -> None:
    fs.ingest("stock", stock([1, 2], T0 - timedelta(hours=2), 3))
    fs.materialize()
    fs.push("stock", stock([1], T0 - timedelta(minutes=5), 7))
    fs.ingest(
        "stock", stock([1], T0 - timedelta(hours=1), 4)
    )  # newer than the materialized row, older than the pushed one
    fs.materialize()
    assert qty(fs, 1, 2) == [7, 3]
    fs.materialize(full=True)
    assert qty(fs, 1, 2) == [7, 3], "pushed online only: a full rebuild from offline does not drop it"
    fs.materialize(end=T0 - timedelta(minutes=90))  # an explicit rewind: the online store as of then
    assert qty(fs, 1, 2) == [3, 3]


def test_push_to_both_writes_one_batch_and_the_online_value(fs: FeatureStore) -> None:
    fs.materialize()
    result = fs.push("stock", stock([1, 2], T0 - timedelta(minutes=3), 5), to="both")
    assert result.batch_id is not None and result.online_entities == 2
    [batch] = fs.list_batches("stock")
    assert (batch.batch_id, batch.rows, batch.status) == (result.batch_id, 2, "committed")
    assert qty(fs, 1, 2) == [5, 5]
    assert fs.check_consistency()[0].mismatches == []
    offline = fs.push("stock", stock([3], T0 - timedelta(minutes=3), 2), to="offline")
    assert offline.online_entities == 0 and qty(fs, 3) == [None]
    with pytest.raises(FeatureStoreError, match="push to must be one of online, offline, both"):
        fs.push("stock", stock([3], T0, 1), to="redis")


def test_bad_rows_are_refused_before_anything_is_written(fs: FeatureStore) -> None:
    fs.materialize()
    bad = stock([1, 2], T0 - timedelta(minutes=1), 5).set_column(2, "qty", pa.array(["5", "x"]))
    for to in ("online", "both"):
        with pytest.raises(IngestionError, match="qty"):
            fs.push("stock", bad, to=to)
    assert qty(fs, 1, 2) == [None, None] and fs.list_batches() == []
    with pytest.raises(IngestionError, match="timestamp"):
        fs.push("stock", stock([1], T0, 1).drop_columns(["event_timestamp"]))


def test_a_governed_push_treats_keys_and_drops_erased_subjects(tmp_path: Path) -> None:
    from .test_governance import PERSON, POLICY, VIEW, open_store, people

    root = tmp_path / "store"
    FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER).close()
    (root / "policies" / "people.yaml").write_text(POLICY)
    with open_store(root) as fs:
        fs.apply([PERSON, VIEW])
        fs.approve_policy(root / "policies" / "people.yaml", by="A. Counsel", role="legal")
        fs.ingest("person", people(["gone"]))
        fs.erase("person_e", ["gone"])
        result = fs.push("person", people(["c1", "gone"], day=9))
        assert (result.rows, result.dropped_erased, result.online_entities) == (2 - 1, 1, 1)
        got = fs.get_online_features(
            [{"customer_id": "c1"}, {"customer_id": "gone"}], ["person:spend"], purpose="fraud_detection"
        )
        assert got.statuses["spend"] == ["present", "missing"], (
            "a raw key finds its pseudonymized row; the erased one is not back"
        )
        assert fs.where("person_e", "gone") == {}
        assert fs.where("person_e", "c1") == {"online ov_person_v1": 1}, "stored under the pseudonym, nothing offline"


def test_http_push(fs: FeatureStore) -> None:
    from fastapi.testclient import TestClient

    from featurestore.server import create_app

    client = TestClient(create_app(fs))
    at = (T0 - timedelta(minutes=2)).isoformat()
    ok = client.post(
        "/v1/push",
        json={"view": "stock", "rows": [{"item_id": 1, "event_timestamp": at, "qty": 4, "price": 1.5, "seen": at}]},
    )
    assert ok.status_code == 200 and ok.json() == {
        "view": "stock@v1",
        "rows": 1,
        "batch_id": None,
        "online_entities": 1,
    }
    served = client.post("/v1/online-features", json={"entities": [{"item_id": 1}], "features": ["stock:qty"]})
    assert served.json()["values"] == {"qty": [4]}
    both = client.post(
        "/v1/push",
        json={
            "view": "stock",
            "to": "both",
            "rows": [{"item_id": 2, "event_timestamp": at, "qty": 1, "price": 1.0, "seen": at}],
        },
    )
    assert both.status_code == 200 and both.json()["batch_id"] is not None
    naive = client.post(
        "/v1/push", json={"view": "stock", "rows": [{"item_id": 3, "event_timestamp": "2025-03-01T00:00:00", "qty": 1}]}
    )
    assert naive.status_code == 400 and naive.json()["detail"].startswith(
        "row 0, column 'event_timestamp': the timestamp has no time zone"
    )
    garbage = client.post(
        "/v1/push", json={"view": "stock", "rows": [{"item_id": 3, "event_timestamp": "soon-ish", "qty": 1}]}
    )
    assert (
        garbage.status_code == 400
        and "soon-ish" not in garbage.text
        and "row 0, column 'event_timestamp'" in garbage.text
    )
    wrong_type = client.post(
        "/v1/push",
        json={
            "view": "stock",
            "rows": [
                {"item_id": 3, "event_timestamp": at, "qty": 1, "price": 1.0, "seen": at},
                {"item_id": "x93k", "event_timestamp": at, "qty": 1},
            ],
        },
    )
    assert (
        wrong_type.status_code == 400 and "row 1, column 'item_id'" in wrong_type.text and "x93k" not in wrong_type.text
    )
    assert client.post("/v1/push", json={"view": "stock", "rows": [], "to": "online"}).status_code == 422
    assert client.post("/v1/push", json={"view": "stock", "rows": [{"item_id": 1}], "to": "disk"}).status_code == 422
    assert client.post("/v1/push", json={"view": "stok", "rows": [{"item_id": 1}]}).status_code == 404


def test_cli_push(tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from featurestore.cli import app

    root = tmp_path / "store"
    with FeatureStore.init(root) as fs:
        fs.apply([ITEM, STOCK])
    rows = tmp_path / "rows.parquet"
    pq.write_table(stock([1, 2], T0 - timedelta(minutes=1), 5), rows)
    runner = CliRunner()
    done = runner.invoke(app, ["push", "stock", str(rows), "--to", "both", "-s", str(root)])
    assert done.exit_code == 0, done.output
    assert "Pushed 2 rows of stock@v1 to batch 1 and the online store (2 entities online)" in done.output
    refused = runner.invoke(app, ["push", "stock", str(rows), "--to", "disk", "-s", str(root)])
    assert refused.exit_code == 1 and "push to must be one of online, offline, both" in refused.output
    assert "Traceback" not in refused.output
