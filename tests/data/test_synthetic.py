"""The generator's statistics: skew, arrival over time, learnable signal, determinism."""

import numpy as np
import pytest
import polars as pl

from bc_ray.core.evaluation import roc_auc
from bc_ray.data.snapshot import build_snapshot
from bc_ray.data.synthetic import SyntheticConfig, generate


def test_exact_edge_count_and_determinism():
    config = SyntheticConfig(num_users=400, num_items=300, num_edges=8_000, seed=3)
    first, second = generate(config), generate(config)
    assert first.edges.height == 8_000
    assert first.edges.equals(second.edges)
    assert not generate(SyntheticConfig(num_users=400, num_items=300, num_edges=8_000,
                                        seed=4)).edges.equals(first.edges)


def test_power_law_item_popularity(small_snapshot):
    degree = np.sort(small_snapshot.edges.group_by("item_idx").len()["len"].to_numpy())[::-1]
    top_decile_share = degree[: max(1, degree.size // 10)].sum() / degree.sum()
    assert top_decile_share > 0.25  # a uniform world would give 0.10
    assert degree.max() > 5 * np.median(degree)


def test_entities_arrive_over_time(small_snapshot):
    for table in (small_snapshot.users, small_snapshot.items):
        first = table["first_t"].to_numpy()
        assert (first <= 0.1).mean() > 0.2  # an initial population
        assert ((first > 0.5) & (first <= 1.0)).mean() > 0.1  # and steady arrivals later
    later = small_snapshot.edges.filter(pl.col("t") > 0.5)
    assert later.height > 0


def test_ratings_carry_a_learnable_signal(small_snapshot):
    """A simple rating model (user and item mean ratings from the first half) predicts whether a
    later rating is >= 4 clearly better than chance: the edge-rating task is learnable."""
    edges = small_snapshot.edges
    early, late = edges.filter(pl.col("t") <= 0.6), edges.filter(pl.col("t") > 0.6)
    user_mean = early.group_by("user_idx").agg(u=pl.col("rating").mean())
    item_mean = early.group_by("item_idx").agg(i=pl.col("rating").mean())
    scored = (late.join(user_mean, on="user_idx", how="inner")
              .join(item_mean, on="item_idx", how="inner"))
    auc = roc_auc((scored["u"] + scored["i"]).to_numpy(), (scored["rating"] >= 4).to_numpy())
    assert auc > 0.62


def test_features_follow_latent_factors(small_snapshot):
    """Items of the same category are rated alike more often than random pairs (features carry
    signal); every item has a category and a brand."""
    items = small_snapshot.items
    assert (items["category"].list.len() >= 1).all() and (items["brand"].list.len() == 1).all()


def test_ten_million_edges_scale_config_is_valid():
    config = SyntheticConfig(num_users=500_000, num_items=200_000, num_edges=10_000_000)
    config.validate()  # generation itself is measured in benchmarks/, not in tests


def test_generated_snapshot_builds(small_raw):
    snapshot = build_snapshot(small_raw)
    assert snapshot.meta.cleanup["duplicate_edges_dropped"] == 0


def test_a_data_set_name_draws_the_generator_with_its_settings():
    """`--dataset synthetic:seed=1,...`: another draw of the marketplace, its other settings the
    defaults; a setting it does not have is refused by name."""
    from bc_ray.data import load_dataset
    from bc_ray.exceptions import ConfigError

    small = "num_users=300,num_items=200,num_edges=4000"
    drawn = load_dataset(f"synthetic:{small},seed=1")
    expected = build_snapshot(generate(SyntheticConfig(num_users=300, num_items=200,
                                                       num_edges=4_000, seed=1)))
    assert drawn.meta.name == "synthetic-s1(num_users=300,num_items=200,num_edges=4000)"
    assert load_dataset("synthetic:seed=1").meta.name == "synthetic-s1"
    assert drawn.edges.equals(expected.edges)
    assert not load_dataset(f"synthetic:{small}").edges.equals(drawn.edges)  # seed 0
    with pytest.raises(ConfigError, match=r"part 'sed=1'.*'seed'"):
        load_dataset("synthetic:sed=1")
    with pytest.raises(ConfigError, match="seed must be a number"):
        load_dataset("synthetic:seed=one")
