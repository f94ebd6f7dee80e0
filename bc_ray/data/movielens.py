"""Loaders for MovieLens 100K (``u.data``, ``u.item``, ``u.user``) and the "latest" CSV format.

The data is GroupLens Research's and may not be redistributed: bc_ray reads it from a path and
never ships it.
"""

from __future__ import annotations

import os

import polars as pl

from bc_ray.data.readers import cast_column, check_range, read_delimited, require_file
from bc_ray.data.snapshot import RawGraph

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]
# MovieLens-1M's age groups, also used for 100K's exact ages.
AGE_BUCKETS = [(0, 17, "<18"), (18, 24, "18-24"), (25, 34, "25-34"), (35, 44, "35-44"),
               (45, 49, "45-49"), (50, 55, "50-55"), (56, 200, "56+")]


def _age_bucket(age: pl.Expr) -> pl.Expr:
    expr = pl.lit(None, dtype=pl.Utf8)
    for low, high, label in reversed(AGE_BUCKETS):
        expr = pl.when((age >= low) & (age <= high)).then(pl.lit(label)).otherwise(expr)
    return expr


def _decade(year: pl.Expr) -> pl.Expr:
    return pl.when(year.is_not_null()).then((year // 10 * 10).cast(pl.Utf8) + "s").otherwise(None)


def _as_list(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr.is_null()).then(pl.lit([], dtype=pl.List(pl.Utf8))).otherwise(
        pl.concat_list(expr))


def load_movielens_100k(path: str) -> RawGraph:
    """`path` is the folder holding u.data, u.item and u.user (u.genre is optional)."""
    data_path = require_file(os.path.join(path, "u.data"))
    edges = read_delimited(data_path, ["user_id", "item_id", "rating", "timestamp"],
                           separator="\t", has_header=False)
    for column, dtype in (("user_id", pl.Int64), ("item_id", pl.Int64), ("rating", pl.Float32),
                          ("timestamp", pl.Int64)):
        edges = cast_column(edges, column, dtype, path=data_path, first_row=1)
    check_range(edges, "rating", 1, 5, path=data_path, first_row=1)

    genres = _read_genre_names(path)
    item_path = require_file(os.path.join(path, "u.item"))
    item_columns = ["id", "title", "release", "video_release", "url"] + genres
    items = read_delimited(item_path, item_columns, separator="|", has_header=False,
                           encoding="latin-1")
    items = cast_column(items, "id", pl.Int64, path=item_path, first_row=1)
    flags = [pl.when(pl.col(g).str.strip_chars() == "1").then(pl.lit(g)) for g in genres]
    year = pl.col("release").str.slice(-4).cast(pl.Int32, strict=False)
    item_features = items.select(
        "id",
        genre=pl.concat_list(flags).list.drop_nulls(),
        decade=_as_list(_decade(year)),
    )

    user_path = require_file(os.path.join(path, "u.user"))
    users = read_delimited(user_path, ["id", "age", "gender", "occupation", "zip"],
                           separator="|", has_header=False)
    users = cast_column(users, "id", pl.Int64, path=user_path, first_row=1)
    users = cast_column(users, "age", pl.Int32, path=user_path, first_row=1)
    user_features = users.select(
        "id",
        age=_as_list(_age_bucket(pl.col("age"))),
        gender=_as_list(pl.col("gender")),
        occupation=_as_list(pl.col("occupation")),
    )
    return RawGraph(edges=edges, name="movielens-100k", source=os.path.abspath(path),
                    rating_scale=(1.0, 5.0), user_features=user_features,
                    item_features=item_features)


def _read_genre_names(path: str) -> list[str]:
    genre_path = os.path.join(path, "u.genre")
    if not os.path.isfile(genre_path):
        return ML100K_GENRES
    table = read_delimited(genre_path, ["name", "code"], separator="|", has_header=False)
    table = table.filter(pl.col("name").is_not_null() & (pl.col("name") != ""))
    table = cast_column(table, "code", pl.Int32, path=genre_path, first_row=1).sort("code")
    return table["name"].to_list()


def load_movielens_latest(path: str) -> RawGraph:
    """`path` holds ratings.csv (userId,movieId,rating,timestamp) and movies.csv
    (movieId,title,genres with '|' between genres); half-star ratings 0.5..5."""
    ratings_path = require_file(os.path.join(path, "ratings.csv"))
    columns = ["userId", "movieId", "rating", "timestamp"]
    edges = read_delimited(ratings_path, columns, separator=",", has_header=True)
    for column, dtype in zip(columns, (pl.Int64, pl.Int64, pl.Float32, pl.Int64)):
        edges = cast_column(edges, column, dtype, path=ratings_path, first_row=2)
    check_range(edges, "rating", 0.5, 5.0, path=ratings_path, first_row=2)
    edges = edges.rename({"userId": "user_id", "movieId": "item_id"})

    item_features = None
    movies_path = os.path.join(path, "movies.csv")
    if os.path.isfile(movies_path):
        movies = read_delimited(movies_path, ["movieId", "title", "genres"], separator=",",
                                has_header=True)
        movies = cast_column(movies, "movieId", pl.Int64, path=movies_path, first_row=2)
        year = pl.col("title").str.extract(r"\((\d{4})\)\s*$", 1).cast(pl.Int32, strict=False)
        item_features = movies.select(
            id="movieId",
            genre=pl.col("genres").fill_null("").str.split("|").list.eval(
                pl.element().filter((pl.element() != "(no genres listed)") & (pl.element() != ""))),
            decade=_as_list(_decade(year)),
        )
    return RawGraph(edges=edges, name="movielens-latest", source=os.path.abspath(path),
                    rating_scale=(0.5, 5.0), item_features=item_features)
