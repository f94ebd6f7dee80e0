"""The replica class itself, on one event loop and without a cluster: what Serve runs for each
request, driven by real Starlette requests whose bodies arrive in chunks, as over a socket."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
from starlette.requests import Request

from bc_ray.serve.app import CompatibilityService
from bc_ray.serve.state import ServingState, apply_grouped
from tests.helpers import publish_fake_version, store_with_chain


def _request(body: bytes, chunks: int = 4) -> Request:
    size = -(-len(body) // chunks)
    parts = [body[i:i + size] for i in range(0, len(body), size)]

    async def receive() -> dict:
        await asyncio.sleep(0)  # the next chunk is not there yet: other requests run
        part = parts.pop(0)
        return {"type": "http.request", "body": part, "more_body": bool(parts)}

    scope = {"type": "http", "method": "POST", "path": "/v1/transform", "query_string": b"",
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    return Request(scope, receive)


def _replica(uri: str):
    """The replica class as written (under the ingress wrapper Serve adds, whose constructor
    is a coroutine that also mounts the FastAPI app)."""
    written = CompatibilityService.func_or_class.__mro__[1]
    replica = object.__new__(written)
    written.__init__(replica, uri)
    return replica


def test_transforms_in_flight_together_go_to_the_batch_and_get_their_own_rows(tmp_path):
    """Requests are counted in flight from their first byte: before, the count only covered
    the matmul, with no await in it, so no request ever found another and none was batched."""
    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [6, 4], rows=10)
    replica = _replica(uri)
    queued: list = []

    async def batch_queue(item: tuple) -> np.ndarray:
        # `@serve.batch` itself needs a replica context (tests/serve/test_app.py has one):
        # here it is the queue's entry that is checked, answering each item on its own
        queued.append(item)
        await asyncio.sleep(0)
        [result] = apply_grouped([item])
        return result

    replica._transform_batch = batch_queue
    try:
        rng = np.random.default_rng(0)
        bodies = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(20)]

        async def send_all() -> list:
            return await asyncio.gather(*(replica._transform(_request(orjson.dumps(
                {"from_version": 1, "to_version": 0, "embeddings": b.tolist()})))
                for b in bodies))

        answers = asyncio.run(send_all())
        _, alone = replica.stats.drain()
        assert len(queued) > len(bodies) // 2  # requests in flight together go to the batch
        assert len(queued) + len(alone) == len(bodies) and replica._transforms_in_flight == 0
        weight, bias = ServingState.load(store).transform_for(1, 0)
        for body, answer in zip(bodies, answers):
            got = np.asarray(orjson.loads(answer.body)["embeddings"], dtype=np.float32)
            np.testing.assert_allclose(got, body @ weight.T + bias, rtol=1e-5, atol=1e-5)
    finally:
        replica._stop.set()


def test_a_reload_that_changes_no_table_reads_none(tmp_path):
    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [6, 4], rows=10, keep_versions=3)
    first = ServingState.load(store)
    publish_fake_version(store, 4, np.random.default_rng(1))  # a bump: the tables stay
    second = ServingState.load(store, first)
    assert second.current == 2 and second.seq > first.seq
    assert all(second.tables[e] is first.tables[e] for e in ("user", "item"))
