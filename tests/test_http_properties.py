"""A property-based run against `featurestore serve`'s API (the role schemathesis plays): a few
hundred generated requests, well-formed and not; no 500, every response in its declared shape, and
no response quotes a key value it was sent (names the caller chose, like a purpose, may be quoted).
Every request also goes to the same app without its fast path (FastAPI's route alone): both must
answer with the same status and the same JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.server import create_app

from .test_erasure import OTHERS, build, open_store

MARK = "zq-sent-"  # every generated string carries it, so an echo is easy to find
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8).map(lambda t: MARK + t),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)
key_values = st.one_of(st.sampled_from(OTHERS[:3]).map(lambda k: k), json_scalars)
entity = st.dictionaries(st.sampled_from(["customer_id", "email", "other"]), key_values, max_size=2)
features = st.lists(st.sampled_from(["person:spend", "person:email", "person:*", "nope:x", "person", ":"]), max_size=3)
# Names a caller chose (a purpose, a feature reference) may be quoted back ("purpose 'x' is not
# allowed"); values sent as entity keys never are. So only those carry the mark.
plain_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
bodies = st.one_of(
    st.fixed_dictionaries(
        {"entities": st.one_of(st.lists(entity, max_size=4), json_values), "features": features},
        optional={
            "purpose": st.one_of(st.sampled_from(["fraud_detection", "marketing", ""]), plain_scalars),
            "full_feature_names": st.one_of(st.booleans(), plain_scalars),
        },
    ),
    json_values,
)
raw_bodies = st.one_of(
    st.binary(max_size=40).map(lambda b: MARK.encode() + b), st.text(max_size=40).map(lambda t: (MARK + t).encode())
)


class Both:
    """The app with its fast path and without it, over one store: every answer is compared."""

    def __init__(self, fast: TestClient, route: TestClient) -> None:
        self.fast, self.route = fast, route

    def post(self, path: str, **kwargs: Any) -> Any:
        answer, expected = self.fast.post(path, **kwargs), self.route.post(path, **kwargs)
        assert answer.status_code == expected.status_code, (answer.text, expected.text)
        assert answer.headers["content-type"] == expected.headers["content-type"]
        assert answer.json() == expected.json()
        return answer


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root: Path = build(tmp_path_factory.mktemp("http"), compression=None)
    store = open_store(root)
    with TestClient(create_app(store)) as fast, TestClient(create_app(store, fast_path=False)) as route:
        yield Both(fast, route)


def conforms(response: Any) -> None:
    assert response.status_code in (200, 400, 403, 404, 422), (response.status_code, response.text)
    body = response.json()
    if response.status_code == 200:
        assert set(body) == {"values", "statuses"}
        assert all(isinstance(v, list) for v in body["values"].values())
        assert all(s in ("present", "missing", "expired") for col in body["statuses"].values() for s in col)
    else:
        assert set(body) == {"error", "detail"} and all(isinstance(v, str) for v in body.values()), body
        assert MARK not in response.text, f"the response echoes the request: {response.text}"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(body=bodies)
def test_generated_json_bodies(client: Any, body: Any) -> None:
    conforms(client.post("/v1/online-features", content=json.dumps(body), headers={"content-type": "application/json"}))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=raw_bodies,
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]),
)
def test_generated_raw_bodies(client: Any, raw: bytes, content_type: str) -> None:
    conforms(
        client.post("/v1/online-features", content=raw, headers={"content-type": content_type} if content_type else {})
    )
