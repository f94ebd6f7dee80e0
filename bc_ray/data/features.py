"""Categorical node features as multi-hot index lists with stable vocabularies.

A field's vocabulary only grows: values known to the previous snapshot keep their code, new
values (seen at least `min_count` times) are appended, so a model trained on an older vocabulary
still reads the codes it knows.
"""

from __future__ import annotations

import polars as pl

from bc_ray.exceptions import DataError

FEATURE_DTYPE = pl.List(pl.Int32)


def encode_fields(index: pl.DataFrame, feature_table: pl.DataFrame | None,
                  prior_vocab: dict[str, list[str]], min_count: int,
                  entity: str) -> tuple[pl.DataFrame, dict[str, list[str]], int]:
    """Attach one ``List(Int32)`` column per field to `index` (which has ``idx`` and ``id``).

    Returns the table, the vocabularies, and how many feature rows named no entity of the graph.
    """
    fields = list(prior_vocab)
    dropped = 0
    if feature_table is not None:
        if "id" not in feature_table.columns:
            raise DataError(f"{entity} feature table has no 'id' column", column="id")
        fields += [c for c in feature_table.columns if c != "id" and c not in fields]
        feature_table = feature_table.unique(subset=["id"], keep="first", maintain_order=True)
        if feature_table["id"].dtype != index["id"].dtype:
            feature_table = feature_table.with_columns(pl.col("id").cast(index["id"].dtype))
        dropped = feature_table.join(index.select("id"), on="id", how="anti").height

    table = index
    vocab: dict[str, list[str]] = {}
    for name in fields:
        known = list(prior_vocab.get(name, []))
        if feature_table is None or name not in feature_table.columns:
            vocab[name] = known
            table = table.with_columns(pl.lit([], dtype=FEATURE_DTYPE).alias(name))
            continue
        values = (
            index.select("idx", "id")
            .join(feature_table.select("id", pl.col(name).cast(pl.List(pl.Utf8))), on="id",
                  how="inner")
            .explode(name)
            .drop_nulls(name)
            .filter(pl.col(name) != "")
        )
        counts = values.group_by(name).len()
        fresh = (
            counts.filter((pl.col("len") >= min_count) & ~pl.col(name).is_in(known))
            .sort(["len", name], descending=[True, False])[name]
            .to_list()
        )
        vocab[name] = known + fresh
        mapping = pl.DataFrame({name: vocab[name],
                                "_code": pl.Series(range(len(vocab[name])), dtype=pl.Int32)},
                               schema={name: pl.Utf8, "_code": pl.Int32})
        codes = (
            values.join(mapping, on=name, how="inner")
            .group_by("idx")
            .agg(pl.col("_code").unique().sort().alias(name))
        )
        table = (
            table.join(codes, on="idx", how="left")
            .with_columns(pl.col(name).fill_null(pl.lit([], dtype=FEATURE_DTYPE)))
        )
    return table.sort("idx"), vocab, dropped
