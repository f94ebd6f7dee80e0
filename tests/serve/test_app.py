"""The compatibility service on real Ray Serve over HTTP on 127.0.0.1."""

import concurrent.futures
import time

import httpx
import numpy as np
import pytest

from bc_ray import read_embeddings
from bc_ray import chain as chain_math
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
        expected = chain_math.apply(rows, _chain(store, source, target))
        assert answer.json()["version"] == target
        assert np.allclose(np.array(answer.json()["embeddings"]), expected, atol=1e-5)
        binary = client.post(f"/v1/transform?from_version={source}&to_version={target}",
                             content=rows.tobytes(), headers=BINARY)
        assert binary.status_code == 200 and binary.headers["x-version"] == str(target)
        served_dim = int(binary.headers["x-embedding-dim"])
        got = np.frombuffer(binary.content, "<f4").reshape(5, served_dim)
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
    as_text = client.post("/v1/embeddings", json={  # 64-bit ids as JavaScript clients send them
        "entity": "item", "ids": [str(i) for i in wanted] + ["item-1"], "version": 0}).json()
    assert as_text["found"] == body["found"] + [False]
    assert as_text["embeddings"][:4] == body["embeddings"]
    binary = client.post("/v1/embeddings?entity=item&version=1",
                         content=np.array(wanted, "<i8").tobytes(), headers=BINARY)
    assert binary.status_code == 200
    flags = np.frombuffer(binary.content[:4], np.uint8)
    assert flags.tolist() == [1, 1, 1, 0] and int(binary.headers["x-embedding-dim"]) == 10
    served = client.post("/v1/embeddings?entity=item", content=np.array(wanted, "<i8").tobytes(),
                         headers=BINARY)  # no version: the served table's own, as in JSON
    own = client.post("/v1/embeddings", json={"entity": "item", "ids": wanted}).json()["version"]
    assert served.status_code == 200 and served.headers["x-version"] == str(own)
    unknown = client.post("/v1/embeddings", json={"entity": "item", "ids": wanted, "version": 7})
    assert unknown.status_code == 400 and unknown.json()["error"].startswith("unknown version 7")


@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"from_version": 2, "to_version": 0, "embeddings": [[NaN]]}', 400,
     "(NaN and Infinity are not JSON numbers)"),
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
    answer = client.post("/v1/transform", content=body,
                         headers={"content-type": "application/json"})
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


def test_bearer_token_when_configured(ray_cluster, service, tmp_path):
    from ray import serve

    _, _, uri = service
    port = int(str(service[0].base_url).rsplit(":", 1)[1])
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    config = ServeConfig(store=uri, name="bc-ray-auth", route_prefix="/secure",
                         settings=ServeSettings(token_file=str(secret)))
    assert "s3cret" not in str(config.deployment_options())  # never in the deployment config
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
    # The version and its refreshed tables are two commits: a poll between them serves version
    # 3 with version 2's tables, and the next poll (0.3 s) picks the tables up.
    settled = time.time() + 10
    while (client.get("/v1/versions").json()["tables"]["item"]["version"] != 3
           and time.time() < settled):
        time.sleep(0.1)
    assert client.get("/v1/versions").json()["tables"]["item"]["version"] == 3


def test_an_oversized_body_is_refused_before_it_is_read(service):
    """Item 9: a declared Content-Length over the limit gets 413 without the body being sent;
    a body streamed without a length is cut off as soon as it passes the limit."""
    import socket

    client, _, _ = service
    host, port = str(client.base_url).split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(b"POST /v1/transform HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 74000000\r\n\r\n{\"from_version\": 2")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

    def chunks():
        yield b'{"from_version": 2, "to_version": 0, "embeddings": ['
        for _ in range(2000):
            yield b"[" + b", ".join([b"0.123456789"] * 8) + b"], " * 50

    streamed = client.post("/v1/transform", content=chunks(),
                           headers={"content-type": "application/json"})
    assert streamed.status_code == 413


def test_readiness_turns_503_when_the_store_cannot_be_read_and_back(service, tmp_path):
    """Item 14: a damaged log entry (or anything else) never ends the reload thread; /readyz
    says 503 once the served state is unconfirmed for longer than max_staleness_s."""
    from ray import serve

    from bc_ray.store.log import entry_path
    from tests.helpers import store_with_chain

    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [8], rows=10)
    config = ServeConfig(store=uri, name="bc-ray-stale", route_prefix="/stale",
                         settings=ServeSettings(poll_interval_s=0.2, max_staleness_s=3.0))
    serve.run(build_app(config), name=config.name, route_prefix=config.route_prefix)
    port = int(str(service[0].base_url).rsplit(":", 1)[1])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/stale", timeout=30) as client:
            assert client.get("/readyz").status_code == 200
            damaged = entry_path(store.state().seq + 1)
            store.io.create(damaged, b"{}")
            deadline = time.time() + 30
            while client.get("/readyz").status_code == 200 and time.time() < deadline:
                time.sleep(0.2)
            stale = client.get("/readyz")
            assert stale.status_code == 503 and "log entry" in stale.json()["reason"]
            assert client.get("/v1/versions").status_code == 200  # still serving what it had
            store.io.delete(damaged)
            deadline = time.time() + 30
            while client.get("/readyz").status_code != 200 and time.time() < deadline:
                time.sleep(0.2)
            assert client.get("/readyz").status_code == 200
    finally:
        serve.delete("bc-ray-stale")
