"""The method variants and baselines, each a small strategy: which transform, which alignment
loss, when B_k is trained, and how M_k is obtained. One training path reads these flags.

| name             | transform  | alignment | B_k trained        | M_k            |
|------------------|------------|-----------|--------------------|----------------|
| non-bc           | none       | none      | -                  | fresh          |
| post-lin-sloss   | linear     | single    | after M_k          | fresh          |
| post-lin-mloss   | linear     | multi     | after M_k          | fresh          |
| joint-notrans    | identity   | single    | jointly            | fresh          |
| joint-lin-sloss  | linear     | single    | jointly            | fresh          |
| bc-aligner       | linear     | multi     | jointly            | fresh          |
| fix-m0           | none       | none      | -                  | M_0 forever    |
| finetune-m0      | none       | none      | -                  | from M_{k-1}   |
| keep-all         | (the ideal: every M_j kept; the reference of the degradations)      |
| post-procrustes  | orthogonal | single    | after, closed form | fresh          |
| post-lowrank     | low-rank affine | single | after, closed form | fresh         |
| bc-aligner-orth  | orthogonal | multi     | jointly            | fresh          |
| bc-aligner-refit | linear     | multi     | jointly, then refit in closed form | fresh |
| popularity       | (a reference row: items ranked by training interactions, no M_k)  |
| bpr-mf           | (a reference row: graph-free BPR matrix factorisation, no B_k)     |
| counts           | (consumers trained on raw interaction counts: do the tasks carry signal?) |
"""

from __future__ import annotations

from dataclasses import dataclass

from bc_ray.exceptions import ConfigError


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    transform: str | None = None  # linear | identity | orthogonal | lowrank
    alignment: str | None = None  # single | multi
    schedule: str = "none"  # joint | post | none
    model: str = "fresh"  # fresh | fixed | finetune | popularity | mf | counts
    # How B_k is fitted once M_k is trained (`posthoc.fit_posthoc`): sgd | procrustes | lowrank
    # | least-squares for a post-hoc method; a joint method keeps its jointly trained B_k
    # (sgd) or fits it again in closed form (least-squares: BC-Aligner + refit).
    fit: str = "sgd"

    @property
    def joint(self) -> bool:
        return self.schedule == "joint"

    @property
    def refits(self) -> bool:
        """A joint method whose B_k is fitted again once M_k is trained."""
        return self.joint and self.fit != "sgd"

    @property
    def posthoc(self) -> bool:
        return self.schedule == "post"

    @property
    def keep_latest(self) -> bool:
        return self.name != "keep-all" and not self.reference_only

    @property
    def reference_only(self) -> bool:
        """A simple recommender scored on the intended task only (no ver-0 view to consume)."""
        return self.model in ("popularity", "mf", "counts")


PAPER_METHODS = (
    Method("non-bc", "Non-BC"),
    Method("post-lin-sloss", "Post-Lin-SLoss", "linear", "single", "post"),
    Method("post-lin-mloss", "Post-Lin-MLoss", "linear", "multi", "post"),
    Method("joint-notrans", "Joint-NoTrans", "identity", "single", "joint"),
    Method("joint-lin-sloss", "Joint-Lin-SLoss", "linear", "single", "joint"),
    Method("bc-aligner", "BC-Aligner", "linear", "multi", "joint"),
)
BASELINES = (
    Method("fix-m0", "Fix-M0", model="fixed"),
    Method("finetune-m0", "Finetune-M0", model="finetune"),
    Method("keep-all", "Keep-All"),
)
NEWER_BASELINES = (
    Method("post-procrustes", "Post-Procrustes", "orthogonal", "single", "post", fit="procrustes"),
    Method("post-lowrank", "Post-LowRank", "lowrank", "single", "post", fit="lowrank"),
    Method("bc-aligner-orth", "BC-Aligner-Orth", "orthogonal", "multi", "joint"),
    Method("bc-aligner-refit", "BC-Aligner + refit", "linear", "multi", "joint",
           fit="least-squares"),
)
# What a trained model must beat before any method is ranked (core/baselines.py).
SIMPLE_BASELINES = (
    Method("popularity", "Popularity", model="popularity"),
    Method("bpr-mf", "BPR-MF", model="mf"),
    Method("counts", "Counts (consumer ceiling check)", model="counts"),
)
METHODS = {m.name: m for m in PAPER_METHODS + BASELINES + NEWER_BASELINES + SIMPLE_BASELINES}
ALIASES = {"joint-lin-mloss": "bc-aligner", "bc-aligner-orthogonal": "bc-aligner-orth",
           "nobc": "non-bc", "keepall": "keep-all", "mf": "bpr-mf", "pop": "popularity"}


def get_method(name: str) -> Method:
    key = name.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[key]
