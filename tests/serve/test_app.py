"""The compatibility service on real Ray Serve over HTTP on 127.0.0.1."""

import concurrent.futures
import time

import httpx
import numpy as np
import pytest

from bc_ray import read_embeddings
from bc_ray.core import affine
from bc_ray.serve.app import build_app
from bc_ray.serve.config import ServeConfig, ServeSettings
from tests.helpers import publish_fake_version, refresh_fake_tables

pytestmark = pytest.mark.ray
BINARY = {"content-type": "application/octet-stream"}


def _chain(store, source, target):
    return store.transform_to(target, source)


def test_health_ready_versions(service):
    client, store, _ = service
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True, "version": 2}
    info = client.get("/v1/versions").json()
    assert info["current_version"] == 2
    assert [(v["version"], v["dim"]) for v in info["versions"]] == [(0, 12), (1, 10), (2, 8)]
    assert "paths" in client.get("/openapi.json").json()


def test_transform_equals_the_store_chain_by_hand(service):
    client, store, _ = service
    rng = np.random.default_rng(0)
    for source, target, dim in ((2, 0, 8), (2, 1, 8), (1, 0, 10), (2, 2, 8)):
        rows = rng.normal(size=(5, dim)).astype(np.float32)
        answer = client.post("/v1/transform", json={"from_version": source, "to_version": target,
                                                    "embeddings": rows.tolist()})
        assert answer.status_code == 200, answer.text
        expected = affine.apply(rows, _chain(store, source, target))
        assert answer.json()["version"] == target
        assert np.allclose(np.array(answer.json()["embeddings"]), expected, atol=1e-5)
        binary = client.post(f"/v1/transform?from_version={source}&to_version={target}",
                             content=rows.tobytes(), headers=BINARY)
        assert binary.status_code == 200 and binary.headers["x-version"] == str(target)
        got = np.frombuffer(binary.content, "<f4").reshape(5, int(binary.headers["x-embedding-dim"]))
        assert np.allclose(got, expected, atol=1e-5)


def test_embeddings_lookup_with_found_flags(service):
    client, _, uri = service
    expected = read_embeddings(uri, "item", version=0)
    wanted = expected["id"].to_list()[:3] + [123456789]
    answer = client.post("/v1/embeddings", json={"entity": "item", "ids": wanted, "version": 0})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["found"] == [True, True, True, False] and body["version"] == 0
    assert np.allclose(np.array(body["embeddings"][:3]),
                       np.stack(expected["embedding"].to_numpy()[:3]), atol=1e-5)
    assert body["embeddings"][3] == [0.0] * 12
    binary = client.post("/v1/embeddings?entity=item&version=1",
                         content=np.array(wanted, "<i8").tobytes(), headers=BINARY)
    assert binary.status_code == 200
    flags = np.frombuffer(binary.content[:4], np.uint8)
    assert flags.tolist() == [1, 1, 1, 0] and int(binary.headers["x-embedding-dim"]) == 10


@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 422, "JSON object"),
    (b'{"to_version": 0, "embeddings": [[1]]}', 422, "from_version"),
    (b'{"from_version": "2", "to_version": 0, "embeddings": [[1]]}', 422, "from_version"),
    (b'{"from_version": 2, "to_version": 0, "embeddings": [[1, 2], [3]]}', 422, "equal-length"),
    (b'{"from_version": 2, "to_version": 0, "embeddings": [[1, 2, 3]]}', 422, "8 dimensions"),
    (b'{"from_version": 1, "to_version": 2, "embeddings": [[1]]}', 400, "only go backwards"),
    (b'{"from_version": 7, "to_version": 0, "embeddings": [[1]]}', 400, "unknown from_version"),
])
def test_transform_errors(service, body, status, fragment):
    client, _, _ = service
    answer = client.post("/v1/transform", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status and fragment in answer.json()["error"]


def test_binary_errors_nan_and_size_limits(service):
    client, _, _ = service
    nan = np.full((2, 8), np.nan, np.float32).tobytes()
    answer = client.post("/v1/transform?from_version=2&to_version=0", content=nan, headers=BINARY)
    assert answer.status_code == 422 and "NaN" in answer.json()["error"]
    ragged = client.post("/v1/transform?from_version=2&to_version=0", content=b"x" * 10,
                         headers=BINARY)
    assert ragged.status_code == 422
    missing = client.post("/v1/transform", content=nan, headers=BINARY)
    assert missing.status_code == 422 and "from_version" in missing.json()["error"]
    too_many = client.post("/v1/transform", json={"from_version": 2, "to_version": 0,
                                                  "embeddings": [[0.0] * 8] * 101})
    assert too_many.status_code == 413
    ids = client.post("/v1/embeddings", json={"entity": "item", "ids": list(range(101))})
    assert ids.status_code == 413
    entity = client.post("/v1/embeddings", json={"entity": "movie", "ids": [1]})
    assert entity.status_code == 422


def test_bearer_token_when_configured(ray_cluster, service):
    from ray import serve

    _, _, uri = service
    port = int(str(service[0].base_url).rsplit(":", 1)[1])
    config = ServeConfig(store=uri, name="bc-ray-auth", route_prefix="/secure",
                         settings=ServeSettings(token="s3cret"))
    serve.run(build_app(config), name=config.name, route_prefix=config.route_prefix)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/secure", timeout=30) as client:
            assert client.get("/v1/versions").status_code == 401
            wrong = client.get("/v1/versions", headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401 and "bearer token" in wrong.json()["error"]
            ok = client.get("/v1/versions", headers={"authorization": "Bearer s3cret"})
            assert ok.status_code == 200
            assert client.get("/healthz").status_code == 200  # probes stay open
    finally:
        serve.delete("bc-ray-auth")


def test_hot_reload_under_load_without_failures(service):
    """A bounded load runs while a new version is published and refreshed: every request
    succeeds, and the replica switches to the new version."""
    client, store, uri = service
    rows = np.ones((4, 8), np.float32).tolist()
    base = str(client.base_url)
    deadline = time.time() + 60

    def hammer(worker: int) -> list[int]:
        statuses = []
        with httpx.Client(base_url=base, timeout=30) as session:
            for _ in range(400):
                answer = session.post("/v1/transform", json={"from_version": 2, "to_version": 0,
                                                             "embeddings": rows})
                statuses.append(answer.status_code)
                if len(statuses) > 40 and session.get("/readyz").json()["version"] == 3:
                    break
                if time.time() > deadline:
                    break
        return statuses

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer, w) for w in range(4)]
        time.sleep(1.0)
        rng = np.random.default_rng(7)
        publish_fake_version(store, 6, rng)
        refresh_fake_tables(store, 3, 40, rng)
        statuses = [s for f in futures for s in f.result()]
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert client.get("/readyz").json()["version"] == 3
    assert client.get("/v1/versions").json()["tables"]["item"]["version"] == 3
