"""Typed configuration of `bc-ray publish` (built once at the edge: the CLI or a job)."""

from __future__ import annotations

from dataclasses import dataclass

from bc_ray.exceptions import ConfigError
from bc_ray.redaction import refuse_user_info

# --method: the post-hoc fit of B_k (`bc_ray.core.posthoc.fit_posthoc`) each name runs.
FITS = {"post-procrustes": "procrustes", "post-lowrank": "lowrank", "post-lin": "sgd"}


@dataclass(frozen=True)
class LinearFit:
    """How `post-lin` trains its linear B_k by Adam on the single-step alignment loss (the
    paper's Post-Lin-SLoss): small batches and a bounded number of steps, so a few hundred
    overlapping entities converge and a few million do not take an hour (measured: 400 pairs
    of dimension 16 reach a relative error of 1e-4)."""

    batch_size: int = 256
    lr: float = 1e-2
    max_epochs: int = 200
    max_steps: int = 20_000


@dataclass(frozen=True)
class PublishConfig:
    """One `bc-ray publish`: where the tables are, how their columns are named, how B_k is
    fitted and gated.

    - `min_overlap`: entities (users and items together) that must be in both the new tables
      and the current version's; None means twice the new embeddings' dimension.
    - `max_align_error_rel`: the gate, mean ||B_k z_k - z_{k-1}|| / mean ||z_{k-1}|| on the
      held-out part of the overlap, of users and items each and together; the same default as
      training's gate (`GateConfig`).
    - `holdout`: the fraction of each entity's overlap that B_k is not fitted on and the gate
      measures.
    - `max_fit_rows`: B_k is fitted on a random sample of at most this many pairs (an affine
      map of a few thousand parameters does not need millions).
    - `user_id_col`, `item_id_col`: one table's id column where it is not `id_col` (a team's
      exports often name them `user_id` and `item_id`).
    """

    store: str
    users: str
    items: str
    id_col: str = "id"
    embedding_col: str = "embedding"
    user_id_col: str | None = None
    item_id_col: str | None = None
    method: str = "post-procrustes"
    max_align_error_rel: float = 0.5
    min_overlap: int | None = None
    holdout: float = 0.2
    max_fit_rows: int = 200_000
    seed: int = 0
    linear: LinearFit = LinearFit()

    def __post_init__(self) -> None:
        if self.method not in FITS:
            raise ConfigError(f"--method must be one of {', '.join(FITS)}, got {self.method!r}")
        if not self.max_align_error_rel > 0:
            raise ConfigError(f"--max-align-error-rel must be positive, got "
                              f"{self.max_align_error_rel}")
        if self.min_overlap is not None and self.min_overlap < 1:
            raise ConfigError(f"--min-overlap must be >= 1, got {self.min_overlap}")
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"the held-out fraction must be in (0, 1), got {self.holdout}")
        if not self.id_col or not self.embedding_col or "" in (self.user_id_col,
                                                                self.item_id_col):
            raise ConfigError("--id-col, --user-id-col, --item-id-col and --embedding-col must "
                              "name a column")
        for flag, uri in (("--store", self.store), ("--users", self.users),
                          ("--items", self.items)):
            refuse_user_info(uri, flag)

    def id_col_of(self, entity: str) -> tuple[str, str]:
        """The column `entity`'s table holds its ids in, and the option that named it."""
        own = self.user_id_col if entity == "user" else self.item_id_col
        return (self.id_col, "--id-col") if own is None else (own, f"--{entity}-id-col")

    @property
    def fit(self) -> str:
        return FITS[self.method]

    def overlap_needed(self, dim: int) -> int:
        return self.min_overlap if self.min_overlap is not None else 2 * dim
