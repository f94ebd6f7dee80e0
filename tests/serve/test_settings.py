"""Serve settings and serving state without a cluster (issue 14, items 8, 10 and 15)."""

from __future__ import annotations

import numpy as np
import pytest

from bc_ray.exceptions import ConfigError
from bc_ray.serve.config import TOKEN_ENV, ServeConfig, ServeSettings
from bc_ray.serve.state import ServingState
from tests.helpers import publish_fake_version, refresh_fake_tables, store_with_chain


@pytest.mark.parametrize("settings", [{"token": None}, {"token": "s3cret"}, {"token": ""}])
def test_a_token_in_the_deployment_config_is_refused(settings, monkeypatch):
    """Item 8: `token: None` no longer turns auth off behind the environment's back."""
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment")
    with pytest.raises(ConfigError, match=TOKEN_ENV):
        ServeSettings.from_dict(settings)
    assert ServeSettings.from_dict({}).resolve_token() == "from-the-environment"


def test_a_configured_token_file_that_yields_nothing_never_turns_auth_off(tmp_path):
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        ServeSettings(token_file=str(empty)).resolve_token()
    with pytest.raises(ConfigError, match="cannot read"):
        ServeSettings(token_file=str(tmp_path / "missing")).resolve_token()


def test_queue_and_timeout_bounds_reach_ray_serve():
    """Item 15: the deployment bounds its queue; the HTTP options bound each request."""
    config = ServeConfig(store="file:///x", max_queued_requests=32, request_timeout_s=12.0)
    assert config.deployment_options()["max_queued_requests"] == 32
    assert config.http_options("127.0.0.1", 8000)["request_timeout_s"] == 12.0
    assert "token" not in config.deployment_options()["user_config"]


def test_transforms_are_composed_on_demand_in_a_bounded_cache(tmp_path):
    """Item 10: a replica holds one B_k per version and a bounded set of composed pairs (not
    n(n+1)/2 chain matrices), and every pair equals the store's composed chain."""
    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [6] * 12, rows=5)
    served = ServingState.load(store)
    served.chains.capacity = 8
    assert len(served.chains) == 0 and len(served.chains.transforms) == 11
    for source in range(12):
        for target in range(source + 1):
            got = served.transform_for(source, target)
            expected = store.transform_to(target, source)
            assert np.allclose(got[0], expected[0], atol=1e-5)
            assert np.allclose(got[1], expected[1], atol=1e-5)
            assert len(served.chains) <= 8
    rng = np.random.default_rng(0)
    publish_fake_version(store, 6, rng)
    refresh_fake_tables(store, 12, 5, rng)
    reloaded = ServingState.load(store, served)
    assert all(reloaded.chains.transforms[v] is served.chains.transforms[v] for v in range(1, 12))
    assert len(reloaded.chains) == len(served.chains)  # composed pairs carried over
    got = reloaded.transform_for(12, 0)
    assert np.allclose(got[0], store.transform_to(0, 12)[0], atol=1e-5)


@pytest.mark.parametrize("embeddings", [[["1.5", "2"]], [[True, False]], [[None, 1.0]],
                                        [[{"x": 1}, 2.0]]])
def test_json_embeddings_must_be_numbers(embeddings):
    """Item 16: strings (and other non-numbers) are not silently converted to floats."""
    from bc_ray.serve.codec import matrix_from_json
    from bc_ray.serve.state import RequestError

    with pytest.raises(RequestError) as refused:
        matrix_from_json(embeddings)
    assert refused.value.status == 422
    assert matrix_from_json([[1, 2.5]]).dtype == np.float32


def test_chain_files_outside_retention_are_removed_and_recomposed_on_demand(tmp_path):
    """Item 10: the store keeps O(versions) chain matrices, and every view stays exact."""
    from bc_ray import read_embeddings
    from bc_ray.store.store import Store

    uri = f"file://{tmp_path}/store"
    store, matrices = store_with_chain(uri, [6] * 8, rows=5)
    kept, _ = store_with_chain(f"file://{tmp_path}/kept", [6] * 8, rows=5, keep_versions=8)
    before = {v: kept.chain(v) for v in range(8)}  # the same versions, every chain file kept
    assert not any(r.chain_removed for r in kept.state().versions.values())
    state = store.state()
    assert [v for v, r in state.versions.items() if not r.chain_removed] == [7]
    assert not any(store.io.exists(r.files["chain"].path)
                   for r in state.versions.values() if r.chain_removed)
    for version in range(8):
        again = Store(uri).chain(version)
        assert sorted(again) == sorted(before[version])
        for target, (weight, bias) in before[version].items():
            assert np.allclose(again[target][0], weight, atol=1e-5)
            assert np.allclose(again[target][1], bias, atol=1e-5)
    expected = matrices["item"] @ before[7][2][0].T + before[7][2][1]
    got = np.stack(read_embeddings(uri, "item", version=2)["embedding"].to_numpy())
    assert np.allclose(got, expected, atol=1e-5)


def test_latency_metrics_are_a_bounded_sample_per_route_and_status():
    """Issue 17: a histogram (additive across replicas) fed by at most SAMPLE_PER_FLUSH values
    per (route, status) and flush, drawn uniformly from what was recorded."""
    from bc_ray.serve.stats import SAMPLE_PER_FLUSH, ReplicaStats, _sample

    stats = ReplicaStats()
    for i in range(1000):
        stats.record("/v1/transform", 200, i / 1000)
    stats.record("/v1/transform", 413, 0.002)
    latencies, _ = stats.drain()
    assert set(latencies) == {("/v1/transform", 200), ("/v1/transform", 413)}
    sample = _sample(latencies[("/v1/transform", 200)], SAMPLE_PER_FLUSH,
                     np.random.default_rng(0))
    assert len(sample) == SAMPLE_PER_FLUSH == len(set(sample))
    assert set(sample) <= set(latencies[("/v1/transform", 200)])
    assert stats.drain() == ({}, [])
