import polars as pl
import pytest

from bc_ray.core.splits import period_split
from bc_ray.data.timeline import (
    calendar_window,
    edges_between,
    edges_until,
    entity_count_at,
    new_entities,
    paper_times,
)
from bc_ray.exceptions import DataError


def test_paper_times():
    assert paper_times() == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    with pytest.raises(DataError):
        paper_times(0.5, 0.2, 5)


def test_edges_and_entities_by_time(small_snapshot):
    e5 = edges_until(small_snapshot, 0.5)
    e6 = edges_until(small_snapshot, 0.6)
    window = edges_between(small_snapshot, 0.5, 0.6)
    assert e5.height + window.height == e6.height
    assert abs(e5.height / small_snapshot.num_edges - 0.5) < 0.01  # time = edge fraction
    new = new_entities(small_snapshot, "user", 0.5, 0.6)
    assert entity_count_at(small_snapshot, "user", 0.6) - entity_count_at(
        small_snapshot, "user", 0.5) == new.len()
    seen_before = set(e5["user_idx"].unique().to_list())
    assert not seen_before & set(new.to_list())


def test_calendar_window_matches_timestamps(small_snapshot):
    end = int(small_snapshot.edges["timestamp"].max())
    start_t, end_t = calendar_window(small_snapshot, end, days=30)
    inside = small_snapshot.edges.filter(pl.col("timestamp") > end - 30 * 86_400)
    assert end_t == 1.0
    assert edges_between(small_snapshot, start_t, end_t).height == inside.height


def test_period_split_like_the_reference(small_snapshot):
    split = period_split(small_snapshot, 0.5, 0.6)
    period = edges_between(small_snapshot, 0.5, 0.6)
    assert split.train_edges.height + split.eval_edges.height == edges_until(
        small_snapshot, 0.6).height
    first_t = small_snapshot.users["first_t"]
    new_users = set(small_snapshot.users.filter(first_t > 0.5)["idx"].to_list())
    evaluated = split.eval_edges.filter(pl.col("user_idx").is_in(list(new_users)))
    assert evaluated.group_by("user_idx").len()["len"].max() == 1  # only each one's last edge
    old_in_period = period.filter(~pl.col("user_idx").is_in(list(new_users))).height
    assert split.eval_edges.height == old_in_period + evaluated.height
    assert not set(split.val_users.tolist()) & set(split.test_users.tolist())

    # A bound on the evaluated users: a draw of that many, the same for the same seed.
    every = set(split.val_users.tolist()) | set(split.test_users.tolist())
    bounded = period_split(small_snapshot, 0.5, 0.6, max_eval_users=20)
    drawn = set(bounded.val_users.tolist()) | set(bounded.test_users.tolist())
    assert len(every) > 20 and len(drawn) == 20 and drawn < every
    again = period_split(small_snapshot, 0.5, 0.6, max_eval_users=20)
    assert again.val_users.tolist() == bounded.val_users.tolist()
    assert bounded.eval_edges.height == split.eval_edges.height  # the edges stay; users drawn
