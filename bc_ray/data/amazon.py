"""Loader for Amazon product reviews (2014 and 2018 layouts), as the paper's preprocessing reads.

Reviews: JSON lines with ``reviewerID``, ``asin``, ``overall`` and ``unixReviewTime`` (or
``reviewTime`` as "MM DD, YYYY"). Metadata: ``asin`` with ``brand`` and either ``category`` (2018, a
list) or ``categories`` (2014, a list of category paths). Brands and categories seen on fewer than
`min_count` items are dropped, as in the paper.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

import polars as pl

from bc_ray.data.batch import TIME_RANGE
from bc_ray.data.readers import iter_json_records, require_file
from bc_ray.data.snapshot import RawGraph
from bc_ray.exceptions import DataError

REVIEW_FIELDS = ("reviewerID", "asin", "overall")


def _timestamp(record: dict, path: str, line: int) -> int:
    value = record.get("unixReviewTime")
    if value is not None:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if not isinstance(value, int) or isinstance(value, bool):
            raise DataError(f"cannot parse {value!r} as unix seconds (an integer)", path=path,
                            column="unixReviewTime", row=line)
        if not TIME_RANGE[0] <= value < TIME_RANGE[1]:
            raise DataError(f"{value} is outside 1970-2100 as unix seconds", path=path,
                            column="unixReviewTime", row=line)
        return value
    text = record.get("reviewTime")
    if text is None:
        raise DataError("review has neither unixReviewTime nor reviewTime", path=path,
                        column="unixReviewTime", row=line)
    try:
        parsed = datetime.strptime(str(text).replace(",", "").strip(), "%m %d %Y")
    except ValueError:
        raise DataError(f"cannot parse {text!r} as 'MM DD, YYYY'", path=path,
                        column="reviewTime", row=line) from None
    return int(parsed.replace(tzinfo=timezone.utc).timestamp())


def read_reviews(path: str) -> pl.DataFrame:
    users, items, ratings, stamps = [], [], [], []
    for line, record in iter_json_records(path):
        for name in REVIEW_FIELDS:
            if record.get(name) in (None, ""):
                raise DataError("missing value", path=path, column=name, row=line)
        for name in ("reviewerID", "asin"):
            if not isinstance(record[name], (str, int)) or isinstance(record[name], bool):
                raise DataError(f"an id must be a string or an integer, got "
                                f"{type(record[name]).__name__} {record[name]!r}"[:200],
                                path=path, column=name, row=line)
        rating = record["overall"]
        try:
            if isinstance(rating, bool) or not isinstance(rating, (int, float, str)):
                raise TypeError
            rating = float(rating)
        except (TypeError, ValueError):
            raise DataError(f"cannot parse {record['overall']!r} as a rating (a number)"[:200],
                            path=path, column="overall", row=line) from None
        if not 1.0 <= rating <= 5.0:
            raise DataError(f"value {rating} outside the scale [1, 5]", path=path,
                            column="overall", row=line)
        users.append(str(record["reviewerID"]))
        items.append(str(record["asin"]))
        ratings.append(rating)
        stamps.append(_timestamp(record, path, line))
    return pl.DataFrame({"user_id": users, "item_id": items,
                         "rating": pl.Series(ratings, dtype=pl.Float32),
                         "timestamp": pl.Series(stamps, dtype=pl.Int64)})


def _categories(record: dict) -> list[str]:
    raw = record.get("category")
    if raw is None:
        raw = record.get("categories") or []
    flat: list[str] = []
    for entry in raw:
        flat.extend(entry if isinstance(entry, list) else [entry])
    return sorted({str(c).strip() for c in flat if str(c).strip()})


def read_metadata(path: str) -> pl.DataFrame:
    ids, brands, categories = [], [], []
    for line, record in iter_json_records(path):
        asin = record.get("asin")
        if not asin:
            raise DataError("missing value", path=path, column="asin", row=line)
        brand = str(record.get("brand") or "").strip()
        ids.append(str(asin))
        brands.append([brand] if brand else [])
        categories.append(_categories(record))
    return pl.DataFrame({"id": ids, "brand": brands, "category": categories},
                        schema={"id": pl.Utf8, "brand": pl.List(pl.Utf8),
                                "category": pl.List(pl.Utf8)})


def load_amazon(path: str, min_count: int = 5) -> RawGraph:
    """`path` is a reviews file, or a folder holding one ``*.json[.gz]`` reviews file and
    optionally a ``meta_*.json[.gz]`` metadata file."""
    reviews_path, meta_path = _locate_files(path)
    edges = read_reviews(reviews_path)
    item_features = read_metadata(meta_path) if meta_path else None
    name = os.path.basename(reviews_path).split(".")[0]
    return RawGraph(edges=edges, name=f"amazon-{name}", source=os.path.abspath(reviews_path),
                    rating_scale=(1.0, 5.0), item_features=item_features,
                    min_feature_count=min_count)


def _locate_files(path: str) -> tuple[str, str | None]:
    if os.path.isfile(path):
        folder = os.path.dirname(path)
        metas = [f for f in os.listdir(folder or ".") if f.startswith("meta_")]
        return path, os.path.join(folder, metas[0]) if len(metas) == 1 else None
    if not os.path.isdir(path):
        raise DataError("file not found", path=path)
    names = sorted(os.listdir(path))
    jsons = [n for n in names if n.endswith((".json", ".json.gz", ".jsonl", ".jsonl.gz"))]
    metas = [n for n in jsons if n.startswith("meta_")]
    reviews = [n for n in jsons if not n.startswith("meta_")]
    if len(reviews) != 1:
        raise DataError(f"expected exactly one reviews file (*.json[.gz]) in the folder, "
                        f"found {reviews or 'none'}", path=path)
    if len(metas) > 1:
        raise DataError(f"more than one metadata file: {metas}", path=path)
    return (require_file(os.path.join(path, reviews[0])),
            os.path.join(path, metas[0]) if metas else None)
