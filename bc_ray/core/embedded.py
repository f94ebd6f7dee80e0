"""What bc_ray reads from any model: `embed(graph)` in eval mode, without gradients, and checked
against the contract (`ModelFamily`, README's table), and a training step's `TaskStep`.

A plug-in that breaks the contract gets one error naming the rule it broke, where it broke it,
instead of a dtype error deep inside a loss, a backward pass through a freed graph, or users and
items silently swapped. The checks are on shapes and dtypes only: O(1) per call, except a step's
node order, read on the first step of each task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from bc_ray.exceptions import ShapeError

if TYPE_CHECKING:
    from bc_ray.core.family import EmbeddingModule, TaskStep
    from bc_ray.core.graph import GraphTensors


def embedded(model: EmbeddingModule, graph: GraphTensors) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_user, z_item) of every entity of `graph`, as constants: the model in eval mode (its
    own mode restored after), under no_grad, detached, and checked."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            found = model.embed(graph)
    finally:
        model.train(was_training)
    return checked_embeddings(found, graph.num_users, graph.num_items, spec_dim(model),
                              type(model).__qualname__)


def spec_dim(model: EmbeddingModule) -> int:
    """The width B_k is built for, its spec's `output_dim`, which the model must report too."""
    dim = model.spec.output_dim
    if model.output_dim != dim:
        raise ShapeError(f"{type(model).__qualname__}: output_dim is {model.output_dim} but its "
                         f"spec's is {dim}")
    return dim


def checked_embeddings(found: object, num_users: int, num_items: int, dim: int, who: str
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """`found` as (z_user, z_item): two float32 matrices of `dim` columns, one row per user and
    per item, in that order."""
    if not (isinstance(found, (tuple, list)) and len(found) == 2
            and all(isinstance(z, torch.Tensor) for z in found)):
        raise ShapeError(f"{who}.embed must return (z_user, z_item), two tensors; got "
                         f"{type(found).__name__}")
    for z, entity, rows in ((found[0], "user", num_users), (found[1], "item", num_items)):
        if tuple(z.shape) != (rows, dim):
            swapped = " (are users and items swapped?)" if z.dim() == 2 and z.shape[0] == (
                num_items if entity == "user" else num_users) else ""
            raise ShapeError(f"{who}.embed: z_{entity} has shape {tuple(z.shape)}, expected "
                             f"({rows}, {dim}): one row per {entity} of the graph and the "
                             f"spec's output_dim columns{swapped}")
        if z.dtype != torch.float32:
            raise ShapeError(f"{who}.embed: z_{entity} is {z.dtype}, expected torch.float32")
    return found[0].detach(), found[1].detach()


def check_step(step: TaskStep, dim: int, who: str, first: bool) -> None:
    """A step's embeddings: one float32 row of `dim` per node, its nodes sorted and unique
    (read on the `first` step only: the alignment's rows and weights are indexed by them)."""
    nodes, z = step.nodes, step.z
    if nodes.dim() != 1 or z.dim() != 2 or z.shape != (nodes.shape[0], dim):
        raise ShapeError(f"{who}: a step's z has shape {tuple(z.shape)} for {tuple(nodes.shape)} "
                         f"nodes; expected one row of {dim} values per node")
    if z.dtype != torch.float32:
        raise ShapeError(f"{who}: a step's z is {z.dtype}, expected torch.float32")
    if first and nodes.numel() > 1 and not bool((nodes[1:] > nodes[:-1]).all()):
        raise ShapeError(f"{who}: a step's nodes must be sorted and unique (TaskStep.nodes)")
