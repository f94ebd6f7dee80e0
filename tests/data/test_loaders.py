import gzip
import json

import polars as pl
import pytest

from bc_ray.data.amazon import load_amazon
from bc_ray.data.movielens import load_movielens_100k, load_movielens_latest
from bc_ray.data.snapshot import build_snapshot


def test_movielens_100k_real_files(ml100k_path):
    snapshot = build_snapshot(load_movielens_100k(ml100k_path))
    assert (snapshot.num_users, snapshot.num_items, snapshot.num_edges) == (943, 1682, 100_000)
    counts = snapshot.edges.group_by("rating").len().sort("rating")["len"].to_list()
    assert counts == [6110, 11370, 27145, 34174, 21201]
    assert len(snapshot.meta.features["item"]["genre"]) == 19
    assert set(snapshot.meta.features["user"]) == {"age", "gender", "occupation"}
    # Toy Story (movie 1) is Animation, Children's, Comedy.
    toy = snapshot.items.filter(pl.col("id") == 1)["genre"].to_list()[0]
    names = {snapshot.meta.features["item"]["genre"][c] for c in toy}
    assert names == {"Animation", "Children's", "Comedy"}
    assert snapshot.edges["t"].is_sorted() and snapshot.edges["timestamp"].is_sorted()


def _write_latest(tmp_path, ratings: str, movies: str | None = None):
    (tmp_path / "ratings.csv").write_text(ratings)
    if movies is not None:
        (tmp_path / "movies.csv").write_text(movies)
    return str(tmp_path)


def test_movielens_latest_format(tmp_path):
    path = _write_latest(
        tmp_path,
        "userId,movieId,rating,timestamp\n1,10,4.5,100\n1,20,3.0,200\n2,10,0.5,150\n",
        'movieId,title,genres\n10,"Heat, The (1995)",Action|Crime\n20,Nothing (2001),'
        "(no genres listed)\n")
    snapshot = build_snapshot(load_movielens_latest(path))
    assert snapshot.num_edges == 3 and snapshot.meta.rating_low == 0.5
    vocab = snapshot.meta.features["item"]["genre"]
    heat = snapshot.items.filter(pl.col("id") == 10)["genre"].to_list()[0]
    assert {vocab[c] for c in heat} == {"Action", "Crime"}
    assert snapshot.items.filter(pl.col("id") == 20)["genre"].to_list()[0] == []
    assert snapshot.items["id"].dtype == pl.Int64  # external ids preserved as given


def test_amazon_2018_real_sample(amazon_path):
    snapshot = build_snapshot(load_amazon(amazon_path))
    assert snapshot.num_edges == 2375 - 73
    assert snapshot.meta.cleanup["duplicate_edges_dropped"] == 73
    assert (snapshot.num_users, snapshot.num_items) == (348, 157)
    assert snapshot.users["id"].dtype == pl.Utf8
    for field in ("brand", "category"):
        codes = snapshot.items[field].explode().drop_nulls().value_counts()
        assert codes["count"].min() >= 5  # rare brands/categories dropped, as in the paper


def test_amazon_2014_layout_python_literal_meta(tmp_path):
    reviews = [{"reviewerID": f"U{u}", "asin": f"A{a}", "overall": 5.0,
                "unixReviewTime": 1000 + u * 10 + a} for u in range(6) for a in range(2)]
    with gzip.open(tmp_path / "reviews_Test_5.json.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in reviews))
    meta = [repr({"asin": f"A{a}", "brand": "Acme", "categories": [["Books", "Kids"]]})
            for a in range(2)]
    (tmp_path / "meta_Test.json").write_text("\n".join(meta))
    snapshot = build_snapshot(load_amazon(str(tmp_path), min_count=2))
    assert snapshot.meta.features["item"]["category"] == ["Books", "Kids"]
    assert snapshot.meta.features["item"]["brand"] == ["Acme"]


def test_reindexing_keeps_indices_of_existing_entities(small_raw):
    first = build_snapshot(small_raw)
    extra = pl.DataFrame({"user_id": [10**9], "item_id": [small_raw.edges["item_id"][0]],
                          "rating": [5.0], "timestamp": [small_raw.edges["timestamp"].max() + 1]},
                         schema=small_raw.edges.schema)
    later = build_snapshot(type(small_raw)(**{**vars(small_raw),
                                              "edges": pl.concat([small_raw.edges, extra])}),
                           previous=first)
    joined = first.users.select("id", "idx").join(later.users.select("id", "idx"), on="id")
    assert joined.height == first.num_users and (joined["idx"] == joined["idx_right"]).all()
    assert later.users.filter(pl.col("id") == 10**9)["idx"].item() == first.num_users


@pytest.mark.parametrize("fmt", ["movielens-100k", "movielens-latest", "amazon"])
def test_missing_files_are_named(tmp_path, fmt):
    from bc_ray.data import load_raw
    from bc_ray.exceptions import DataError

    with pytest.raises(DataError, match="not found"):
        load_raw(fmt, str(tmp_path / "nowhere"))
