"""A summary of a snapshot for people and scripts (`bc-ray data info`)."""

from __future__ import annotations

import polars as pl

from bc_ray.data.snapshot import GraphSnapshot
from bc_ray.render import iso_time


def summarize(snapshot: GraphSnapshot) -> dict:
    edges = snapshot.edges
    visible = edges.filter(pl.col("t") <= snapshot.meta.cutoff)
    histogram = (edges.group_by("rating").len().sort("rating")
                 .select(pl.col("rating").cast(pl.Utf8), "len").rows())
    return {
        "name": snapshot.meta.name,
        "source": snapshot.meta.source,
        "users": snapshot.num_users,
        "items": snapshot.num_items,
        "edges": snapshot.num_edges,
        "cutoff": snapshot.meta.cutoff,
        "visible_edges": visible.height,
        "time_range": [iso_time(int(edges["timestamp"].min())),
                       iso_time(int(edges["timestamp"].max()))],
        "rating_scale": [snapshot.meta.rating_low, snapshot.meta.rating_high],
        "rating_histogram": {rating: count for rating, count in histogram},
        "features": {entity: {name: len(vocab) for name, vocab in fields.items()}
                     for entity, fields in snapshot.meta.features.items()},
        "cleanup": snapshot.meta.cleanup,
    }
