"""A synthetic evolving marketplace: the embedded default data set.

Users and items arrive over time; item popularity follows a power law; every entity has a latent
vector, tastes drift over the timeline, and item categories/brands and user segments are drawn from
the latent factors so features carry signal. A user picks among popularity-sampled candidates by
affinity (softmax over ``strength * <taste(t), item>``), and rates by affinity, item quality, user
bias and item-specific noise, so the paper's unintended tasks (activity, positive activity, item
average and spread of ratings, edge rating) are learnable from embeddings.

Everything is vectorised in numpy and seeded; time is cut into `time_blocks` blocks in which the
sets of present users and items are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import polars as pl

from bc_ray.data.snapshot import RawGraph
from bc_ray.exceptions import ConfigError

SECONDS_PER_DAY = 86_400
USER_ID_OFFSET = 1_000_000
ITEM_ID_OFFSET = 5_000_000


@dataclass(frozen=True)
class SyntheticConfig:
    num_users: int = 2_000
    num_items: int = 1_500
    num_edges: int = 100_000
    seed: int = 0
    latent_dim: int = 16
    num_categories: int = 24
    num_brands: int = 80
    num_segments: int = 8
    initial_fraction: float = 0.5
    drift: float = 0.6
    popularity_exponent: float = 1.1  # matches MovieLens-100K's top-decile share (~0.43)
    affinity_strength: float = 3.0
    candidates: int = 16
    growth: float = 1.0
    mean_lifetime: float = 0.7
    start_timestamp: int = 1_600_000_000
    days: int = 365
    time_blocks: int = 200

    def validate(self) -> None:
        for name in ("num_users", "num_items", "num_edges", "latent_dim", "candidates"):
            if getattr(self, name) < 1:
                raise ConfigError(f"synthetic {name} must be positive, got {getattr(self, name)}")
        if not 0.0 < self.initial_fraction <= 1.0:
            raise ConfigError("synthetic initial_fraction must be in (0, 1]")


def generate(config: SyntheticConfig = SyntheticConfig()) -> RawGraph:
    config.validate()
    rng = np.random.default_rng(config.seed)
    items = _make_items(config, rng)
    users = _make_users(config, rng, items["centroids"])
    edges = _make_edges(config, rng, users, items)
    return RawGraph(
        edges=edges, name=_name(config), source="bc_ray.data.synthetic",
        rating_scale=(1.0, 5.0), user_features=users["features"],
        item_features=items["features"])


def _name(config: SyntheticConfig) -> str:
    """The draw, and every setting it changes from the defaults: results (and `--lam-from`'s
    check) tell two synthetic data sets apart by their names."""
    changed = [f"{setting.name}={getattr(config, setting.name)}" for setting in fields(config)
               if setting.name != "seed" and getattr(config, setting.name) != setting.default]
    return f"synthetic-s{config.seed}" + (f"({','.join(changed)})" if changed else "")


def _labels(prefix: str, codes: np.ndarray) -> pl.Series:
    """Category codes as text labels ("cat07"); negative codes become nulls."""
    series = pl.Series(codes.astype(np.int64))
    text = pl.format(prefix + "{}", series.cast(pl.Utf8).str.zfill(2))
    return pl.select(pl.when(series >= 0).then(text)).to_series()


def _arrivals(count: int, initial_fraction: float, rng: np.random.Generator) -> np.ndarray:
    arrival = rng.random(count)
    arrival[: int(round(count * initial_fraction))] = 0.0
    rng.shuffle(arrival)
    return arrival


def _make_items(config: SyntheticConfig, rng: np.random.Generator) -> dict:
    n, d = config.num_items, config.latent_dim
    centroids = rng.normal(size=(config.num_categories, d)) / np.sqrt(d) * 2.0
    category_weight = 1.0 / np.arange(1, config.num_categories + 1) ** 0.8
    category = rng.choice(config.num_categories, size=n, p=category_weight / category_weight.sum())
    latent = centroids[category] + rng.normal(size=(n, d)) / np.sqrt(d)
    # A secondary category (the nearest other centroid) for a third of the items: multi-hot.
    distance = (centroids ** 2).sum(1)[None, :] - 2.0 * latent @ centroids.T
    distance[np.arange(n), category] = np.inf
    second = np.where(rng.random(n) < 0.33, distance.argmin(1), -1)
    brand_home = rng.integers(0, config.num_categories, size=config.num_brands)
    brand = np.empty(n, dtype=np.int64)
    for c in range(config.num_categories):
        members = np.flatnonzero(category == c)
        pool = np.flatnonzero(brand_home == c)
        pool = pool if pool.size else np.arange(config.num_brands)
        weights = 1.0 / np.arange(1, pool.size + 1)
        brand[members] = rng.choice(pool, size=members.size, p=weights / weights.sum())
    quality = 0.45 * np.tanh(2.0 * latent[:, 0]) + rng.normal(0, 0.25, n)
    spread = 0.35 + 1.1 / (1.0 + np.exp(-3.0 * latent[:, 1] + 0.5))
    features = pl.DataFrame({
        "id": np.arange(n, dtype=np.int64) + ITEM_ID_OFFSET,
        "category": _labels("cat", category),
        "second": _labels("cat", second),
        "brand": _labels("brand", brand),
    }).select("id", category=pl.concat_list("category", "second").list.drop_nulls(),
              brand=pl.concat_list("brand"))
    return {"latent": latent.astype(np.float32),
            "arrival": _arrivals(n, config.initial_fraction, rng),
            "by_rank": rng.permutation(n), "quality": quality, "spread": spread,
            "features": features, "centroids": centroids}


def _make_users(config: SyntheticConfig, rng: np.random.Generator, centroids: np.ndarray) -> dict:
    n, d = config.num_users, config.latent_dim
    favourite = rng.integers(0, centroids.shape[0], size=(n, 2))
    taste = 0.7 * centroids[favourite[:, 0]] + 0.3 * centroids[favourite[:, 1]]
    taste += rng.normal(size=(n, d)) / np.sqrt(d)
    direction = rng.normal(size=(n, d)) / np.sqrt(d)
    activity = rng.lognormal(0.0, 1.0, n)
    arrival = _arrivals(n, config.initial_fraction, rng)
    # Lifetime and rating bias depend on taste, so activity and positivity are predictable.
    hazard = np.exp(0.8 * np.tanh(2.0 * taste[:, 2]))
    lifetime = rng.exponential(config.mean_lifetime, n) / hazard
    bias = 0.5 * np.tanh(2.0 * taste[:, 3]) + rng.normal(0, 0.15, n)
    score = taste[:, 4] + 0.3 * rng.normal(size=n)
    segment = np.searchsorted(np.quantile(score, np.linspace(0, 1, config.num_segments + 1)[1:-1]),
                              score)
    features = pl.DataFrame({
        "id": np.arange(n, dtype=np.int64) + USER_ID_OFFSET,
        "segment": _labels("seg", segment),
        "region": _labels("region", rng.integers(0, 5, n)),
    }).select("id", pl.concat_list("segment"), pl.concat_list("region"))
    return {"taste": taste.astype(np.float32), "direction": direction.astype(np.float32),
            "activity": activity, "arrival": arrival,
            "leave": arrival + lifetime, "bias": bias, "features": features}


def _edge_times(config: SyntheticConfig, count: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted times with density proportional to 1 + growth * t (activity grows over time)."""
    g = config.growth
    u = np.sort(rng.random(max(int(count), 1)))
    if g == 0:
        return u
    return (-1.0 + np.sqrt(1.0 + 2.0 * g * u * (1.0 + g / 2.0))) / g


def _sample_weighted(weights: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    cumulative = np.cumsum(weights)
    return np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right")


def _zipf_ranks(count: int, size: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Ranks in [0, count) with P(r) ~ (r+1)^-exponent, by the closed-form inverse CDF."""
    u = rng.random(size)
    if abs(exponent - 1.0) < 1e-9:
        ranks = np.power(float(count + 1), u)
    else:
        a = 1.0 - exponent
        ranks = np.power(u * (float(count + 1) ** a - 1.0) + 1.0, 1.0 / a)
    return np.minimum(ranks.astype(np.int64) - 1, count - 1).clip(0)


def _sample_present_items(items: dict, now: float, size: int, exponent: float,
                          rng: np.random.Generator) -> np.ndarray:
    """Popularity-weighted items among those arrived by `now` (rejection on arrival)."""
    by_rank = items["by_rank"]
    chosen = by_rank[_zipf_ranks(by_rank.size, size, exponent, rng)]
    pending = np.flatnonzero(items["arrival"][chosen] > now)
    while pending.size:
        chosen[pending] = by_rank[_zipf_ranks(by_rank.size, pending.size, exponent, rng)]
        pending = pending[items["arrival"][chosen[pending]] > now]
    return chosen


def _draw_edges(config: SyntheticConfig, rng: np.random.Generator, users: dict, items: dict,
                times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    blocks = np.array_split(np.arange(times.size), config.time_blocks)
    user_out, item_out, affinity_out = [], [], []
    for block in blocks:
        if block.size == 0:
            continue
        now = times[block[-1]]
        present = np.flatnonzero((users["arrival"] <= now) & (users["leave"] > now))
        if present.size == 0:  # everyone churned: the earliest arrivals stay
            present = np.flatnonzero(users["arrival"] <= now)
        chosen_users = present[_sample_weighted(users["activity"][present], block.size, rng)]
        candidates = _sample_present_items(items, now, block.size * config.candidates,
                                           config.popularity_exponent, rng)
        candidates = candidates.reshape(block.size, config.candidates)
        taste = users["taste"][chosen_users] + config.drift * times[block, None].astype(
            np.float32) * users["direction"][chosen_users]
        affinity = np.matmul(items["latent"][candidates], taste[:, :, None])[..., 0]
        uniform = rng.random(affinity.shape, dtype=np.float32) + np.float32(1e-12)
        gumbel = -np.log(-np.log(uniform))
        pick = np.argmax(config.affinity_strength * affinity + gumbel, axis=1)
        rows = np.arange(block.size)
        user_out.append(chosen_users)
        item_out.append(candidates[rows, pick])
        affinity_out.append(affinity[rows, pick])
    return np.concatenate(user_out), np.concatenate(item_out), np.concatenate(affinity_out)


def _make_edges(config: SyntheticConfig, rng: np.random.Generator, users: dict,
                items: dict) -> pl.DataFrame:
    """Draw edges until `num_edges` distinct (user, item) pairs exist; repeats of a pair keep the
    first, and surplus pairs are dropped at random so the count is exact."""
    parts: list[pl.DataFrame] = []
    have, wanted, yield_rate = 0, config.num_edges, 1.0
    for _ in range(8):
        times = _edge_times(config, (wanted - have) * 1.1 / yield_rate, rng)
        user_idx, item_idx, affinity = _draw_edges(config, rng, users, items, times)
        parts.append(pl.DataFrame({"u": user_idx, "i": item_idx, "time": times,
                                   "affinity": affinity}))
        merged = pl.concat(parts).sort("time").unique(subset=["u", "i"], keep="first",
                                                      maintain_order=True)
        yield_rate = max((merged.height - have) / times.size, 0.05)
        have = merged.height
        parts = [merged]
        if have >= wanted:
            break
    merged = parts[0]
    if merged.height > wanted:
        keep = np.sort(rng.choice(merged.height, size=wanted, replace=False))
        merged = merged[keep]
    user_idx = merged["u"].to_numpy()
    item_idx = merged["i"].to_numpy()
    affinity = merged["affinity"].to_numpy().astype(np.float64)
    times = merged["time"].to_numpy()
    z = (affinity - affinity.mean()) / (affinity.std() + 1e-9)
    noise = rng.normal(size=z.size) * items["spread"][item_idx]
    rating = np.clip(np.rint(3.6 + 0.8 * z + items["quality"][item_idx] + users["bias"][user_idx]
                             + noise), 1, 5)
    jitter = rng.integers(0, 60, size=times.size)
    timestamp = config.start_timestamp + (times * config.days * SECONDS_PER_DAY).astype(np.int64)
    return pl.DataFrame({
        "user_id": user_idx.astype(np.int64) + USER_ID_OFFSET,
        "item_id": item_idx.astype(np.int64) + ITEM_ID_OFFSET,
        "rating": rating.astype(np.float32),
        "timestamp": np.maximum.accumulate(timestamp + jitter),
    })
