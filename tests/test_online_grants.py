"""The online service's governed methods: each takes the Grant of the view version it touches and
refuses a grant of another access kind or for another view version, touching nothing then; with
the right grant each removes or reads exactly what it says."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from featurestore import FeatureStore, FeatureView
from featurestore.catalog import ViewVersion
from featurestore.errors import PolicyViolation
from featurestore.governance import MAINTAIN, WRITE, Grant
from featurestore.online.service import OnlineService

from .test_online import ITEM, STOCK, T0, SetClock, stock

STOCK_V2 = FeatureView(name="stock", entity="item", ttl="1d", features={"qty": "float64"})  # not carried: a new table


@pytest.fixture
def fs() -> Iterator[FeatureStore]:
    """Two materialized versions of one view: v1 holds items 1-3 (an hour old) and 4 (three days
    old), v2 holds items 1-3."""
    with FeatureStore(memory=True, clock=SetClock(T0)) as store:
        store.apply([ITEM, STOCK])
        store.ingest("stock", stock([1, 2, 3], T0 - timedelta(hours=1), 5))
        store.ingest("stock", stock([4], T0 - timedelta(days=3), 6))
        store.materialize()
        store.apply([ITEM, STOCK_V2])
        v2 = stock([1, 2, 3], T0 - timedelta(hours=1), 7).select(["item_id", "event_timestamp", "qty"])
        store.ingest("stock", v2.set_column(2, "qty", v2.column("qty").cast("float64")))
        store.materialize(["stock@v2"])
        yield store


def service(fs: FeatureStore) -> OnlineService:
    return fs._caps.online


def grant(fs: FeatureStore, ref: str, *kinds: str, task: str = "erasure") -> Grant:
    """A grant of `kinds`; a maintain grant names `task` (what it may be spent on)."""
    ctx, vv = fs._ctx, fs.get_view(ref)
    return ctx.access.grant(
        ctx.access.snapshot(), vv, vv.view.feature_names, task if kinds == (MAINTAIN,) else None, kinds
    )


def stored(fs: FeatureStore, ref: str) -> dict[str, tuple[Any, ...]]:
    """Every row online of a view version, by entity key (read through the service, with an online grant)."""
    keys, rows = service(fs).sample_rows(grant(fs, ref, "online"), fs.get_view(ref), 1000, 0)
    return {k: r for k, r in zip(keys, rows, strict=True) if r is not None}


Call = Callable[[OnlineService, Grant, ViewVersion], object]
METHODS: dict[str, tuple[str, Call]] = {
    "present_keys": (MAINTAIN, lambda s, g, vv: s.present_keys(g, vv, ["1", "2"])),
    "delete_keys": (MAINTAIN, lambda s, g, vv: s.delete_keys(g, vv, ["1", "2"])),
    "delete_older": (MAINTAIN, lambda s, g, vv: s.delete_older(g, vv, T0 + timedelta(days=1), ["3"])),
    "clear": (MAINTAIN, lambda s, g, vv: s.clear(g, vv)),
    "probe": (MAINTAIN, lambda s, g, vv: s.probe(g, vv)),
    "sample_rows": ("online", lambda s, g, vv: s.sample_rows(g, vv, 10, 0)),
}
TASK_OF = {"delete_keys": "erasure", "delete_older": "retention", "clear": "treat_existing", "probe": "doctor"}
"""The one maintenance task each deleting or probing method accepts (present_keys takes any)."""
KINDS = (MAINTAIN, WRITE, "online", "offline")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_grant_of_another_access_kind_is_refused(fs: FeatureStore, method: str) -> None:
    needed, call = METHODS[method]
    before = {ref: stored(fs, ref) for ref in ("stock@v1", "stock@v2")}
    for kind in (k for k in KINDS if k != needed):
        with pytest.raises(PolicyViolation, match=rf"cannot be used for {needed} access"):
            call(service(fs), grant(fs, "stock@v1", kind, task=TASK_OF.get(method, "erasure")), fs.get_view("stock@v1"))
    assert {ref: stored(fs, ref) for ref in before} == before, "a refused call touches nothing"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_grant_for_another_view_version_is_refused(fs: FeatureStore, method: str) -> None:
    needed, call = METHODS[method]
    before = {ref: stored(fs, ref) for ref in ("stock@v1", "stock@v2")}
    for granted, touched in (("stock@v1", "stock@v2"), ("stock@v2", "stock@v1")):
        with pytest.raises(
            PolicyViolation, match=rf"a grant for {granted} cannot be used on the online rows of {touched}"
        ):
            call(service(fs), grant(fs, granted, needed, task=TASK_OF.get(method, "erasure")), fs.get_view(touched))
    assert {ref: stored(fs, ref) for ref in before} == before, "a refused call touches nothing"


@pytest.mark.parametrize("method", sorted(TASK_OF))
def test_a_maintain_grant_for_another_task_is_refused(fs: FeatureStore, method: str) -> None:
    """A retention grant cannot erase, an erasure grant cannot clear a view, and so on."""
    _needed, call = METHODS[method]
    before = {ref: stored(fs, ref) for ref in ("stock@v1", "stock@v2")}
    for task in ("erasure", "retention", "treat_existing", "carry_forward", "policy_plan", "doctor"):
        if task == TASK_OF[method]:
            continue
        with pytest.raises(PolicyViolation, match=rf"a maintain grant for {task} on stock@v1 cannot be used"):
            call(service(fs), grant(fs, "stock@v1", MAINTAIN, task=task), fs.get_view("stock@v1"))
    assert {ref: stored(fs, ref) for ref in before} == before, "a refused call touches nothing"


def test_a_maintain_grant_names_its_task(fs: FeatureStore) -> None:
    ctx, vv = fs._ctx, fs.get_view("stock@v1")
    for task in (None, "marketing", "ERASURE"):
        with pytest.raises(PolicyViolation, match="a maintain grant for 'stock' names its task"):
            ctx.access.grant(ctx.access.snapshot(), vv, vv.view.feature_names, task, (MAINTAIN,))


def test_push_takes_a_write_grant(fs: FeatureStore) -> None:
    rows = stock([9], T0 - timedelta(minutes=1), 1)
    for kind in (MAINTAIN, "online"):
        with pytest.raises(PolicyViolation, match="cannot be used for write access"):
            service(fs).push(grant(fs, "stock@v1", kind), [rows])
    assert "9" not in stored(fs, "stock@v1")
    assert service(fs).push(grant(fs, "stock@v1", WRITE), [rows]) == 1
    assert stored(fs, "stock@v1")["9"][3] == 1, "written to the grant's view version"
    assert "9" not in stored(fs, "stock@v2")


def test_each_method_touches_exactly_its_rows(fs: FeatureStore) -> None:
    online, v1, v2 = service(fs), fs.get_view("stock@v1"), fs.get_view("stock@v2")
    g1 = grant(fs, "stock@v1", MAINTAIN)

    def g(task: str) -> Grant:
        return grant(fs, "stock@v1", MAINTAIN, task=task)

    untouched = stored(fs, "stock@v2")
    assert sorted(stored(fs, "stock@v1")) == ["1", "2", "3", "4"] and sorted(untouched) == ["1", "2", "3"]
    assert online.present_keys(g1, v1, ["9", "2", "4", "2", "x"]) == ["2", "4", "2"], "in order, repeats kept"
    online.probe(g("doctor"), v1)
    assert online.delete_keys(g1, v1, ["2", "9"]) == 1
    assert sorted(stored(fs, "stock@v1")) == ["1", "3", "4"]
    # Retention: rows before the cutoff go but the held key; item 4 (three days old) and 1 (an hour) are older.
    assert online.delete_older(g("retention"), v1, T0 - timedelta(days=1), ["3"]) == 1
    assert sorted(stored(fs, "stock@v1")) == ["1", "3"]
    assert online.delete_older(g("retention"), v1, T0, ["3"]) == 1
    assert sorted(stored(fs, "stock@v1")) == ["3"]
    assert online.clear(g("treat_existing"), v1) == 1 and stored(fs, "stock@v1") == {}
    assert stored(fs, "stock@v2") == untouched, "another version's rows are never touched"
    keys, rows = online.sample_rows(grant(fs, "stock@v2", "online", "offline"), v2, 2, 7)
    assert keys == online.sample_rows(grant(fs, "stock@v2", "online"), v2, 2, 7)[0], "reproducible for a seed"
    assert len(keys) == 2 and set(keys) <= set(untouched)
    assert [r[0] if r else None for r in rows] == keys
