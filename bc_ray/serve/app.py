"""The compatibility service: a FastAPI ingress on Ray Serve.

Every replica holds a `ServingState` (the latest version's composed transforms and refreshed
tables) and polls the store's log in a background thread; when a new version or refresh is
published it loads the new state and swaps one reference, so requests in flight finish on the
state they started with and none fails during the switch. Transform requests are merged by
`@serve.batch` into one matmul per (from, to) pair.

Auth: when a bearer token is configured (the BC_RAY_SERVE_TOKEN variable, or `settings.token_file`
naming a mounted secret; never the deployment config), every /v1 route needs
``Authorization: Bearer <token>``; /healthz and /readyz stay open.
"""


import contextlib
import logging
import secrets
import threading
import time

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve

from bc_ray.exceptions import BcRayError, NotFoundError
from bc_ray.serve import codec
from bc_ray.serve.config import ServeConfig, ServeSettings
from bc_ray.serve.schemas import EMBEDDINGS_BODY, TRANSFORM_BODY
from bc_ray.serve.state import RequestError, ServingState, apply_grouped
from bc_ray.serve.stats import ReplicaStats
from bc_ray.store.store import Store

logger = logging.getLogger(__name__)
api = FastAPI(title="bc_ray compatibility service", version="1",
              description="Embeddings of any historical version, from the latest model.")
OPEN_ROUTES = ("/healthz", "/readyz", "/docs", "/openapi.json")


@api.exception_handler(RequestError)
async def _request_error(_request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


def _query_int(request: Request, name: str, required: bool = True) -> int | None:
    raw = request.query_params.get(name)
    if raw is None and not required:
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise RequestError(422, f"binary requests need the integer query parameter '{name}'"
                           ) from None


def _wants_binary(request: Request, binary_request: bool) -> bool:
    accept = request.headers.get("accept", "")
    return codec.BINARY in accept or (binary_request and codec.JSON not in accept)


def _respond(request: Request, binary: bool, matrix: np.ndarray, version: int,
             payload: dict) -> Response:
    if _wants_binary(request, binary):
        return Response(np.ascontiguousarray(matrix, dtype=codec.FLOAT).tobytes(),
                        media_type=codec.BINARY,
                        headers={"X-Embedding-Dim": str(matrix.shape[1]),
                                 "X-Version": str(version)})
    return Response(codec.dumps({**payload, "embeddings": matrix}), media_type=codec.JSON)


@serve.deployment(name="CompatibilityService")
@serve.ingress(api)
class CompatibilityService:
    def __init__(self, store: str) -> None:
        self.store = Store(store)
        self.settings = ServeSettings()
        self.token = self.settings.resolve_token()
        self.state: ServingState | None = None
        self.last_error: str | None = None
        self.confirmed_at = 0.0  # when the served state was last known to be the store's
        self._reload()
        self.stats = ReplicaStats()
        self._flush_failed = False
        # Transform requests being answered: a request that finds none answers at once, the
        # others share `@serve.batch` matmuls (the replica's event loop runs one at a time).
        self._transforms_in_flight = 0
        self._stop = threading.Event()
        threading.Thread(target=self._poll, name="bc-ray-reload", daemon=True).start()

    # -- configuration and hot reload -------------------------------------------------------------
    def reconfigure(self, user_config: dict) -> None:
        self.settings = ServeSettings.from_dict(user_config)
        self.token = self.settings.resolve_token()
        self._transform_batch.set_max_batch_size(self.settings.max_batch_size)
        self._transform_batch.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)

    def _reload(self) -> None:
        try:
            fresh = ServingState.load(self.store, self.state)
        except Exception as exc:  # noqa: BLE001 - the replica keeps its state, /readyz tells
            self._failed(exc)
            return
        if self.state is None or fresh.signature != self.state.signature:
            logger.info("serving version %d (tables %s)", fresh.current,
                        {e: t.version for e, t in fresh.tables.items()})
        self.state, self.last_error = fresh, None  # one reference swap: atomic for readers
        self.confirmed_at = time.monotonic()

    def _failed(self, exc: Exception) -> None:
        if not isinstance(exc, (BcRayError, OSError)):
            logger.exception("reloading the served state failed")
        self.last_error = f"{type(exc).__name__}: {exc}"

    def _poll(self) -> None:
        """Never dies: any failure is recorded, and /readyz turns 503 once it lasts too long."""
        while not self._stop.wait(self.settings.poll_interval_s):
            self._flush_stats()
            try:
                seq = self.store.state().seq
                if self.state is None or seq != self.state.seq:
                    self._reload()
                else:
                    self.confirmed_at = time.monotonic()
            except Exception as exc:  # noqa: BLE001
                self._failed(exc)

    def _flush_stats(self) -> None:
        """Metrics that cannot be exported never stop the reloads (said once)."""
        try:
            self.stats.flush(self.state.current if self.state else None)
        except Exception:  # noqa: BLE001
            if not self._flush_failed:
                logger.exception("exporting the Serve metrics failed; reloads go on")
            self._flush_failed = True
        else:
            self._flush_failed = False  # a later outage is said again

    def _ready(self) -> ServingState:
        if self.state is None:
            raise RequestError(503, f"no version is loaded yet: {self.last_error}")
        return self.state

    def _authorize(self, request: Request) -> None:
        if self.token and not secrets.compare_digest(
                request.headers.get("authorization", "").encode(),
                f"Bearer {self.token}".encode()):
            raise RequestError(401, "missing or wrong bearer token (Authorization: Bearer ...)")

    @contextlib.contextmanager
    def _timed(self, route: str):
        """Record the route's status (200, or the RequestError's) and latency."""
        started = time.perf_counter()
        try:
            yield
        except RequestError as exc:
            self.stats.record(route, exc.status, time.perf_counter() - started)
            raise
        self.stats.record(route, 200, time.perf_counter() - started)

    # -- routes -----------------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        if self.state is None:
            return JSONResponse({"ready": False, "reason": self.last_error}, status_code=503)
        stale = time.monotonic() - self.confirmed_at
        if stale > self.settings.max_staleness_s:
            return JSONResponse({"ready": False, "version": self.state.current,
                                 "reason": f"the served state is unconfirmed for {stale:.0f} s "
                                           f"(max_staleness_s {self.settings.max_staleness_s:g}):"
                                           f" {self.last_error}"}, status_code=503)
        return JSONResponse({"ready": True, "version": self.state.current})

    @api.get("/v1/versions")
    async def versions(self, request: Request) -> dict:
        self._authorize(request)
        return self._ready().info()

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def _transform_batch(self, requests: list[tuple]) -> list[np.ndarray]:
        self.stats.record_batch(len(requests))
        return apply_grouped(requests)

    @api.post("/v1/transform", openapi_extra=TRANSFORM_BODY)
    async def transform(self, request: Request) -> Response:
        with self._timed("/v1/transform"):
            return await self._transform(request)

    async def _begin(self, request: Request) -> tuple[ServingState, bool, bytes]:
        """Auth, the state this request will finish on, the body and its encoding."""
        self._authorize(request)
        state = self._ready()
        binary = codec.media_type(request.headers.get("content-type")) == codec.BINARY
        return state, binary, await self._read_body(request, state)

    async def _read_body(self, request: Request, state: ServingState) -> bytes:
        """The body, refused with 413 as soon as it is known to be too large: by its declared
        Content-Length before a byte is read, else by the bytes streamed so far."""
        limit = state.max_body_bytes(self.settings.max_rows)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"a body of {int(declared)} bytes exceeds the limit of "
                                    f"{limit} ({self.settings.max_rows} rows); split the batch")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"the body exceeds the limit of {limit} bytes "
                                        f"({self.settings.max_rows} rows); split the batch")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _transform(self, request: Request) -> Response:
        # In flight from its first byte: requests still reading their bodies are what a
        # batch gathers (counted only around the matmul, with no await between, a request
        # never found another and the batch path never ran).
        self._transforms_in_flight += 1
        try:
            return await self._transform_counted(request)
        finally:
            self._transforms_in_flight -= 1

    async def _transform_counted(self, request: Request) -> Response:
        state, binary, body = await self._begin(request)
        if binary:
            source = _query_int(request, "from_version")
            target = _query_int(request, "to_version")
            state.transform_for(source, target)
            self._check_size(len(body) // (4 * state.dims[source]))
            matrix = codec.matrix_from_binary(body, state.dims[source])
        else:
            data = codec.load_json(body)
            source = codec.field_int(data, "from_version")
            target = codec.field_int(data, "to_version")
            matrix = codec.matrix_from_json(data.get("embeddings"))
            state.transform_for(source, target)
            self._check_size(matrix.shape[0])
        state.check_rows(source, matrix)
        item = (state, source, target, matrix)
        if self._transforms_in_flight == 1:  # alone: no batch queue to wait in
            self.stats.record_batch(1)
            [result] = apply_grouped([item])
        else:
            result = await self._transform_batch(item)
        return _respond(request, binary, result, target, {"version": target})

    @api.post("/v1/embeddings", openapi_extra=EMBEDDINGS_BODY)
    async def embeddings(self, request: Request) -> Response:
        with self._timed("/v1/embeddings"):
            return await self._embeddings(request)

    async def _embeddings(self, request: Request) -> Response:
        state, binary, body = await self._begin(request)
        if binary:
            entity = request.query_params.get("entity", "")
            version = _query_int(request, "version", required=False)
            ids = codec.ids_from_binary(body)
        else:
            data = codec.load_json(body)
            entity = data.get("entity")
            version = codec.field_int(data, "version", required=False)
            ids = data.get("ids")
            if not isinstance(ids, list) or not all(
                    isinstance(i, (str, int)) and not isinstance(i, bool) for i in ids):
                raise RequestError(422, "'ids' must be a list of strings or integers")
        if not isinstance(entity, str):
            raise RequestError(422, "'entity' must be 'user' or 'item'")
        self._check_size(len(ids))
        matrix, found, target = state.lookup(entity, ids, version)
        if _wants_binary(request, binary):
            payload = found.astype(np.uint8).tobytes() + matrix.astype(codec.FLOAT).tobytes()
            return Response(payload, media_type=codec.BINARY,
                            headers={"X-Embedding-Dim": str(matrix.shape[1]),
                                     "X-Version": str(target)})
        return Response(codec.dumps({"version": target, "entity": entity, "embeddings": matrix,
                                     "found": found}), media_type=codec.JSON)

    def _check_size(self, rows: int) -> None:
        if rows > self.settings.max_rows:
            raise RequestError(413, f"{rows} rows exceed the limit of {self.settings.max_rows} "
                                    "per request; split the batch")


def build_app(config: ServeConfig):
    return CompatibilityService.options(**config.deployment_options()).bind(store=config.store)


def app_builder(args: dict):
    """Import path for `serve deploy` / KubeRay RayService: ``bc_ray.serve.app:app_builder``
    with args ``{store: ..., num_replicas: ..., settings: {...}}``."""
    args = dict(args)
    settings = ServeSettings.from_dict(args.pop("settings", None))
    return build_app(ServeConfig(settings=settings, **args))


def check_store(uri: str) -> None:
    """Fail early (before deploying) when the store has nothing to serve."""
    if not Store(uri).state().lineage():
        raise NotFoundError(f"{uri} has no published version to serve; run `bc-ray train` or "
                            "`bc-ray publish`")
