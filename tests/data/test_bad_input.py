"""Every bad input gets a clear error naming file, column and row (or a counted clean-up)."""

import gzip
import json

import polars as pl
import pytest

from bc_ray.data.amazon import load_amazon
from bc_ray.data.movielens import load_movielens_100k, load_movielens_latest
from bc_ray.data.snapshot import build_snapshot
from bc_ray.data.timeline import edges_until
from bc_ray.exceptions import DataError


def _ml100k(tmp_path, data: str) -> str:
    (tmp_path / "u.data").write_text(data)
    (tmp_path / "u.item").write_text("1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(
        ["0"] * 18 + ["1"]) + "\n")
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n")
    return str(tmp_path)


def test_rating_outside_scale(tmp_path):
    path = _ml100k(tmp_path, "1\t1\t5\t100\n1\t1\t7\t101\n")
    with pytest.raises(DataError) as err:
        load_movielens_100k(path)
    message = str(err.value)
    assert "u.data" in message and "'rating'" in message and "row 2" in message
    assert "outside the scale" in message


def test_timestamp_that_will_not_parse(tmp_path):
    path = _ml100k(tmp_path, "1\t1\t5\t100\n1\t1\t4\tyesterday\n")
    with pytest.raises(DataError, match=r"cannot parse 'yesterday'.*column 'timestamp'.*row 2"):
        load_movielens_100k(path)


def test_wrong_column_in_csv(tmp_path):
    (tmp_path / "ratings.csv").write_text("user,movieId,rating,timestamp\n1,2,3.0,4\n")
    with pytest.raises(DataError, match=r"missing column.*userId.*ratings.csv"):
        load_movielens_latest(str(tmp_path))


def test_half_star_outside_scale_in_latest(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3.0,4\n1,3,5.5,5\n")
    with pytest.raises(DataError, match=r"outside the scale.*row 3"):
        load_movielens_latest(str(tmp_path))


def test_amazon_bad_rating_and_bad_json(tmp_path):
    lines = [json.dumps({"reviewerID": "u", "asin": "a", "overall": 5, "unixReviewTime": 1}),
             json.dumps({"reviewerID": "u", "asin": "b", "overall": 9, "unixReviewTime": 2})]
    (tmp_path / "Cat_5.json").write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"column 'overall', row 2"):
        load_amazon(str(tmp_path))
    (tmp_path / "Cat_5.json").write_text("{not json\n")
    with pytest.raises(DataError, match=r"Cat_5.json, row 1"):
        load_amazon(str(tmp_path))


def test_amazon_unparsable_review_time(tmp_path):
    with gzip.open(tmp_path / "C_5.json.gz", "wt") as handle:
        handle.write(json.dumps({"reviewerID": "u", "asin": "a", "overall": 4,
                                 "reviewTime": "sometime"}))
    with pytest.raises(DataError, match=r"reviewTime.*row 1"):
        load_amazon(str(tmp_path))


def test_duplicate_edges_are_dropped_and_counted(tmp_path):
    path = _ml100k(tmp_path, "1\t1\t5\t100\n1\t1\t3\t200\n")
    snapshot = build_snapshot(load_movielens_100k(path))
    assert snapshot.num_edges == 1
    assert snapshot.meta.cleanup["duplicate_edges_dropped"] == 1
    assert snapshot.edges["rating"].to_list() == [5.0]  # the first interaction is kept


def test_empty_input_and_empty_split(tmp_path, small_snapshot):
    path = _ml100k(tmp_path, "")
    with pytest.raises(DataError, match="empty"):
        load_movielens_100k(path)
    with pytest.raises(DataError, match="split is empty"):
        edges_until(small_snapshot, -0.5)


def test_missing_value_in_raw_edges(small_raw):
    edges = small_raw.edges.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("rating")).alias("rating"))
    with pytest.raises(DataError, match=r"missing value.*'rating'.*row 4"):
        build_snapshot(type(small_raw)(**{**vars(small_raw), "edges": edges}))


@pytest.mark.parametrize("field, value, column", [
    ("unixReviewTime", 1e30, "unixReviewTime"),
    ("unixReviewTime", 9_000_000_000_000_000_000, "unixReviewTime"),
    ("unixReviewTime", True, "unixReviewTime"),
    ("overall", True, "overall"),
    ("overall", [5], "overall"),
    ("reviewerID", ["a", "b"], "reviewerID"),
    ("asin", {"id": 1}, "asin"),
])
def test_amazon_values_of_the_wrong_type_or_range_are_one_line_errors(tmp_path, field, value,
                                                                      column):
    """Issue 14, item 16: typed and range-checked like the MovieLens loader."""
    good = {"reviewerID": "u", "asin": "a", "overall": 4, "unixReviewTime": 1_500_000_000}
    lines = [json.dumps(good), json.dumps({**good, field: value})]
    (tmp_path / "Cat_5.json").write_text("\n".join(lines))
    with pytest.raises(DataError, match=rf"column '{column}', row 2"):
        load_amazon(str(tmp_path))
