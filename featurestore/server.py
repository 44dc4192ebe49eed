"""HTTP serving of online lookups (``featurestore serve``): FastAPI on uvicorn.

- ``GET /health``: the store is reachable, and which view versions are materialized;
- ``POST /v1/online-features``: ``{"entities": [{...}], "features": [...], "purpose": "..."}``
  (or ``"feature_service": "fraud_v1"`` instead of ``features``; ``purpose`` where a policy
  governs the views) returns values and a status per value (present, missing, expired);
- ``POST /v1/push``: ``{"view": "...", "rows": [{...}], "to": "online"}`` writes rows straight
  to serving (and/or as an offline batch), validated and treated as ``ingest`` does;
- ``GET /openapi.json`` (and ``/docs``): the OpenAPI description.

Store errors become HTTP codes here and only here: a refused purpose is 403, an unknown
feature or a view not materialized is 404, any other bad request is 400, a malformed body 422;
every error body is an ``ErrorResponse`` (error, detail) that names where the problem is and never
quotes a value from the request.
Endpoints are ``async`` and run on the event loop's thread: a lookup takes microseconds, and
the store stays single-threaded.

``POST /v1/online-features`` with a valid JSON body is answered by :class:`OnlineFeaturesFastPath`,
a plain ASGI layer in front of FastAPI: the body is parsed and validated in one step by the same
pydantic model, and the response written as JSON at once, without FastAPI's middleware, routing,
dependency solving and response-model round trip (which took most of a request's time). Any other body
(malformed, not JSON) goes on to FastAPI unchanged, so its errors stay exactly as documented.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import FeatureStoreError, NotFoundError, PolicyViolation
from .sources import rows_table
from .store import FeatureStore


class OnlineFeaturesRequest(BaseModel):
    """A lookup of some features for some entities, for a purpose."""

    entities: list[dict[str, Any]] = Field(
        min_length=1, max_length=10_000, description="Join key values, raw, one object per entity."
    )
    features: list[str] | None = Field(
        None, min_length=1, description="References: view:feature, view@v2:feature or view:*."
    )
    feature_service: str | None = Field(
        None, min_length=1, max_length=120, description="A feature service (name or name@v2), instead of features."
    )
    purpose: str | None = Field(
        None,
        min_length=1,
        description="Why the features are read; checked against the view's policy (required for a governed view).",
    )
    full_feature_names: bool = Field(False, description="Name values view__feature instead of feature.")

    @model_validator(mode="after")
    def _one_feature_list(self) -> OnlineFeaturesRequest:
        if (self.features is None) == (self.feature_service is None):
            raise ValueError("give either features or feature_service")
        return self

    @property
    def refs(self) -> list[str]:
        """The feature references asked for (a service as ``service:NAME``)."""
        return self.features if self.features is not None else [f"service:{self.feature_service}"]


class PushRequest(BaseModel):
    """Rows to write straight to serving, validated and treated as ``ingest`` does."""

    view: str = Field(min_length=1, max_length=120, description="The feature view (name or name@v2).")
    rows: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=10_000,
        description="One object per row: join keys, event time (ISO 8601 with a zone) and features.",
    )
    to: Literal["online", "offline", "both"] = Field("online", description="Where to write.")


class PushResponse(BaseModel):
    """What a push wrote."""

    view: str
    rows: int
    batch_id: int | None
    online_entities: int


class OnlineFeaturesResponse(BaseModel):
    """Values per feature, one per entity, and a status per value."""

    values: dict[str, list[Any]]
    statuses: dict[str, list[str]] = Field(
        description="present, missing (never materialized) or expired (older than the TTL now)."
    )


class ErrorResponse(BaseModel):
    """What went wrong, in words."""

    error: str
    detail: str


SERVE_STORE_ENV = "FEATURESTORE_SERVE_STORE"
"""The store directory each worker process of ``featurestore serve --workers N`` opens."""


def app_from_environment() -> FastAPI:
    """The app of one worker of ``featurestore serve --workers N``: each worker process opens the
    store named by ``FEATURESTORE_SERVE_STORE`` itself (the online store takes many readers)."""
    import gc
    import os

    app = create_app(FeatureStore(os.environ[SERVE_STORE_ENV]))
    gc.freeze()  # what opening made is never collected again: shorter pauses while serving
    return app


def error_status(exc: FeatureStoreError) -> int:
    """The HTTP status of a store error: 403 refused, 404 not found, 400 any other bad request."""
    return 403 if isinstance(exc, PolicyViolation) else 404 if isinstance(exc, NotFoundError) else 400


ONLINE_FEATURES_PATH = "/v1/online-features"
MAX_BODY_BYTES = 64 << 20


class OnlineFeaturesFastPath:
    """ASGI middleware answering ``POST /v1/online-features`` with a valid JSON body itself.

    The body is validated by :class:`OnlineFeaturesRequest` straight from its bytes, the lookup
    runs as the FastAPI route would run it, and the answer is the JSON the route's response model
    would write; store errors get the same status and :class:`ErrorResponse` body as the route's
    handlers give. A body that is not valid (or not declared JSON) is passed on to `app` whole,
    which answers as it always has. :func:`create_app` puts it in front of FastAPI's own layers.

    Args:
        app: The app behind it (FastAPI's).
        store: The store to serve.
    """

    def __init__(self, app: ASGIApp, store: FeatureStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != ONLINE_FEATURES_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body, complete = await _read_body(receive)
        request = _valid_request(body) if complete and _declares_json(scope) else None
        if request is None:
            await self.app(scope, _replay(body, complete, receive), send)
            return
        try:
            result = self.store.get_online_features(
                request.entities, request.refs, purpose=request.purpose, full_feature_names=request.full_feature_names
            )
        except FeatureStoreError as exc:
            await _send_json(send, error_status(exc), to_json({"error": type(exc).__name__, "detail": str(exc)}))
            return
        # What the route's response model writes for dict[str, list[Any]]: values by their own
        # type, infinities and NaN as null (the model's default), checked by a differential test.
        await _send_json(
            send, 200, to_json({"values": result.values, "statuses": result.statuses}, inf_nan_mode="null")
        )


class ServingApp(FastAPI):
    """The FastAPI app of :func:`create_app`, with :class:`OnlineFeaturesFastPath` in front of
    every one of FastAPI's own layers (they cost a valid lookup about half its time)."""

    fast_path: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path is not None:
            await self.fast_path(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _declares_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return False


def _valid_request(body: bytes) -> OnlineFeaturesRequest | None:
    try:
        return OnlineFeaturesRequest.model_validate_json(body)
    except ValidationError:
        return None


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request body, and whether it was read whole (not over MAX_BODY_BYTES, not disconnected)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), True
        if size > MAX_BODY_BYTES:
            return b"".join(chunks), False


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A receive channel that gives back the body already read, then carries on with `receive`."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replay


async def _send_json(send: Send, status: int, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def create_app(store: FeatureStore, *, fast_path: bool = True) -> FastAPI:
    """An ASGI app serving `store`'s online features (`fast_path`: answer valid online-feature
    requests in :class:`OnlineFeaturesFastPath`, in front of FastAPI's route for the same path)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()  # records the pending online-read audit entries

    app = ServingApp(
        title="featurestore online serving",
        version="1",
        lifespan=lifespan,
        description="Online feature lookups with a purpose, values and statuses per entity.",
    )

    @app.exception_handler(FeatureStoreError)
    async def _store_error(_request: Any, exc: FeatureStoreError) -> JSONResponse:
        return JSONResponse(status_code=error_status(exc), content={"error": type(exc).__name__, "detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Any, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default body echoes the input (raw keys): say where and what, never the value.
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()[:10]
        ]
        return JSONResponse(
            status_code=422, content={"error": "InvalidRequest", "detail": "; ".join(problems) or "invalid request"}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Any, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": "HTTPError", "detail": str(exc.detail)},
            headers=getattr(exc, "headers", None),
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Whether the store answers, and which view versions are materialized."""
        return {"status": "ok", "materialized": store.materialized_views()}

    @app.post(
        ONLINE_FEATURES_PATH,
        response_model=OnlineFeaturesResponse,
        responses={
            400: {"model": ErrorResponse},
            403: {"model": ErrorResponse},
            404: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
        },
    )
    async def online_features(request: OnlineFeaturesRequest) -> OnlineFeaturesResponse:
        """Latest values of the features for each entity, as served to production models."""
        result = store.get_online_features(
            request.entities, request.refs, purpose=request.purpose, full_feature_names=request.full_feature_names
        )
        return OnlineFeaturesResponse(values=result.values, statuses=result.statuses)

    @app.post(
        "/v1/push",
        response_model=PushResponse,
        responses={
            400: {"model": ErrorResponse},
            403: {"model": ErrorResponse},
            404: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
        },
    )
    async def push(request: PushRequest) -> PushResponse:
        """Write rows to the online store at once (and/or the offline store as a batch)."""
        vv = store.get_view(request.view)
        types = vv.view.stored_columns(vv.join_keys)
        result = store.push(request.view, rows_table(request.rows, types), to=request.to)
        return PushResponse(
            view=f"{result.view}@v{result.version}",
            rows=result.rows,
            batch_id=result.batch_id,
            online_entities=result.online_entities,
        )

    if fast_path:
        app.fast_path = OnlineFeaturesFastPath(super(ServingApp, app).__call__, store)
    return app
