"""The model-family interface (`bc_ray.models.ModelFamily`): what bc_ray needs of an embedding
model, and nothing else.

BC-Aligner trains *any* M_k jointly with B_k; the store, the chain, Serve, the consumers and the
Delta view only ever see embedding tables. A family is the one place that knows its model: how
to build it from a spec and the snapshot's vocabularies, its task loss on a batch, how to batch
the training data, how to embed entities at refresh time, and which entities a new batch of
interactions affects. Families are found by name (`registry.py`): the built-ins and any
package's `bc_ray.models` entry point.

Entities are numbered as nodes everywhere: users ``0..U-1``, items ``U..U+I-1`` (the snapshot's
idx order), so alignment targets, masks and refresh runs mean the same rows for every family.

New members of this protocol come with defaults in `FamilyBase` (core/family_base.py), so a
family written against an older bc_ray keeps working (the xarray backend pattern).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch and numpy stay out of the command line's start-up
    import numpy as np
    import torch
    from torch import nn

    from bc_ray.core.graph import GraphTensors
    from bc_ray.core.train_config import TrainConfig

API_VERSION = 1  # bumped only when a required member changes meaning


@runtime_checkable
class ModelSpec(Protocol):
    """A version's architecture as typed, frozen data; it round-trips through the version record.
    Its class names its family (`family: ClassVar[str]`, the name it is registered under)."""

    family: ClassVar[str]

    @property
    def output_dim(self) -> int: ...

    def to_dict(self) -> dict[str, Any]: ...


class EmbeddingModule(Protocol):
    """M_k: a torch module with its spec and the vocabularies it was built for, that embeds
    every entity of a graph."""

    spec: ModelSpec
    vocab: Vocabularies

    @property
    def output_dim(self) -> int: ...

    def embed(self, graph: GraphTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_user, z_item) of every entity, in eval mode and without gradients (bc_ray reads them
        as constants: alignment targets, scores, refresh; training calls the module itself), from
        the graph's interactions."""


@dataclass
class TaskStep:
    """One training step's forward pass: the task loss (its own regularisation included) and
    the embeddings it computed, which the alignment loss reuses."""

    loss: torch.Tensor
    nodes: torch.Tensor  # node ids (sorted, unique) whose embeddings this step computed
    z: torch.Tensor  # their embeddings, row i of node nodes[i], with gradients
    # Named parts of the loss to log per epoch (e.g. "bpr"), detached.
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    # Each node's weight in the alignment loss (None: all equal). A task whose steps hold far
    # more of one kind of entity than the alignment should see (the sequence family: every
    # item of a window, but only the users whose history ends in the step) weighs its rows so
    # the step's alignment estimates the mean over all entities.
    align_weights: torch.Tensor | None = None


class TrainingTask(Protocol):
    """How one rank trains M_k: its batches per epoch and the loss of a batch.

    Every rank of a data-parallel run builds the same task with its own `rank` and must take the
    same number of steps per epoch, and every step must use every trainable weight (DDP
    synchronises each step's gradients and Ray Train does not let it look for unused ones)."""

    # Parameters with row-sparse gradients (trained by lazy Adam, averaged outside DDP).
    sparse_parameters: list[nn.Parameter]

    def epoch(self, epoch: int) -> Sequence[Any]:
        """This rank's batches of `epoch` (len() is the step count)."""

    def examples(self, batch: Any) -> int:
        """Training examples in a batch (edges for a link-prediction task), for edges/s."""

    def step(self, model: nn.Module, batch: Any) -> TaskStep:
        """Forward one batch through `model` (M_k itself: DDP wraps the trainer's joint module
        of M_k and B_k around this call, so every weight the step uses is synchronised)."""

    # Optional: `after_backward()`, called after each step's backward pass and before the
    # optimiser's step (a task whose ID rows are sharded across workers sends their gradients
    # to the rows' owners there: `ShardedLinkPredictionTask`).


@dataclass(frozen=True)
class Vocabularies:
    """The sizes a model is built for: entity counts and each feature field's code count."""

    num_users: int
    num_items: int
    user_vocab: dict[str, int]
    item_vocab: dict[str, int]

    @classmethod
    def of(cls, graph: GraphTensors) -> Vocabularies:
        return cls(graph.num_users, graph.num_items, dict(graph.user_vocab),
                   dict(graph.item_vocab))


@dataclass(frozen=True)
class Changes:
    """What an ingested batch (or a later cutoff) changed since a version's last refresh."""

    touched: np.ndarray  # nodes with new interactions
    entities: np.ndarray  # nodes whose entity row was added or changed (features)


class ModelFamily(Protocol):
    """A kind of embedding model bc_ray can train, version and refresh."""

    name: ClassVar[str]
    api_version: ClassVar[int]
    # "layerwise": the family runs its own refresh strategy (GraphSAGE's layer-wise GNN
    # inference); "entities": refresh maps `embed` over runs of entities.
    refresh_strategy: ClassVar[str]

    # -- specs -------------------------------------------------------------------------------
    def default_spec(self) -> ModelSpec: ...

    def parse_spec(self, text: str, base: ModelSpec | None = None) -> ModelSpec:
        """From the command line (`--spec`), e.g. `layers=3,hidden=320`; keys not named keep
        `base`'s values (the current version's spec), else the family's default spec's."""

    def spec_from_dict(self, data: Mapping[str, Any]) -> ModelSpec:
        """From a version record (`ModelSpec.to_dict`)."""

    def grown(self, spec: ModelSpec, version: int, width_step: int) -> ModelSpec:
        """The spec of `version` when `spec` is version 0 (the paper benchmark grows models)."""

    # -- training ----------------------------------------------------------------------------
    def build(self, spec: ModelSpec, vocab: Vocabularies) -> EmbeddingModule:
        """A fresh M_k (random initialisation) for the snapshot's entities and feature codes."""

    def task(self, model: EmbeddingModule, graph: GraphTensors, config: TrainConfig, *,
             rank: int = 0, world_size: int = 1, item_pool: torch.Tensor | None = None,
             device: torch.device | None = None) -> TrainingTask: ...

    def prepare(self, model: EmbeddingModule, graph: GraphTensors) -> None:
        """Before training: e.g. zero the ID rows of entities without training interactions."""

    def warm_start(self, model: EmbeddingModule, previous: EmbeddingModule, graph: GraphTensors,
                   strategy: str, seed: int) -> None:
        """Initialise M_k from M_{k-1} (`--warm-start mean|metadata`)."""

    def fine_tune_from(self, model: EmbeddingModule, previous: EmbeddingModule) -> None:
        """Finetune-M0: M_k starts as M_{k-1} exactly (same spec)."""

    def to_bytes(self, model: EmbeddingModule) -> bytes: ...

    def from_bytes(self, data: bytes, *, light: bool = False) -> EmbeddingModule:
        """`light`: for inference-only processes (no training-only imports or copies)."""

    # -- refresh -----------------------------------------------------------------------------
    def embed_inputs(self, spec: ModelSpec, graph: GraphTensors) -> Any:
        """What an embed task reads (picklable; shared once through the object store)."""

    def embed(self, model: EmbeddingModule, inputs: Any, nodes: np.ndarray) -> np.ndarray:
        """float32 embeddings of `nodes` (rows in that order)."""

    def affected(self, spec: ModelSpec, inputs: Any, changes: Changes) -> np.ndarray:
        """Nodes whose embeddings `changes` may have changed (a superset is correct, only
        slower), given the new graph's `embed_inputs`: an incremental refresh recomputes these
        and copies every other row."""

    def incremental_blocker(self, spec: ModelSpec) -> str | None:
        """Why a spec can never refresh incrementally (None: it can)."""

    def cached_layers(self, spec: ModelSpec) -> int:
        """Inner layers a layer-wise refresh strategy caches for the next incremental one (0
        for the `entities` strategy)."""
