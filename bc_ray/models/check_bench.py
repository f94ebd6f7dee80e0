"""What `bc-ray model check`'s rules share: a small synthetic graph before and after a night's
new data, the models earlier rules made, and the comparisons they make.

The graph after has interactions, users and items newer than version 0, and one existing item
whose features changed without any new interaction of its own: an incremental refresh is told
of both (`Changes`), so a family's `affected` is checked against both.
"""

from __future__ import annotations

import pickle
import sys
import sysconfig
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from bc_ray.core.embedded import embedded
from bc_ray.core.family import Changes, EmbeddingModule, ModelFamily, ModelSpec
from bc_ray.core.graph import GraphTensors, build_graph
from bc_ray.core.train_config import TrainConfig
from bc_ray.data.snapshot import GraphSnapshot, build_snapshot
from bc_ray.data.synthetic import SyntheticConfig, generate
from bc_ray.data.timeline import (
    appeared_nodes,
    edge_endpoints,
    edges_between,
    edges_until,
    entity_count_at,
)
from bc_ray.exceptions import BcRayError

# Sparse enough that a GNN's new interactions leave rows untouched (incremental refresh).
GRAPH = SyntheticConfig(num_users=1_000, num_items=800, num_edges=5_000, days=60)
BEFORE = 0.97  # version 0 and the earlier refresh see the edges up to here; then the rest arrive
TRAIN = TrainConfig(epochs=2, batch_size=256, lr=5e-3, eval_every=2, warmup_epochs=0,
                    max_steps=24)
TOLERANCE = 1e-5  # as the refresh's own tests, absolute, and relative to the value


class ContractError(BcRayError):
    """A family broke a rule of the model contract (the message names the rule)."""


class NotApplicable(Exception):
    """A rule that does not apply to this family or spec (the message says why)."""


@dataclass
class Bench:
    """The family, its specs, the graph before and after new data (`changes` between them, in
    the later graph's node numbers), and the models earlier rules made (None until made)."""

    family: ModelFamily
    spec: ModelSpec
    before: GraphTensors
    after: GraphTensors
    changes: Changes
    new_edges: int
    seed: int
    home: Path | None = None  # the family's own code (`home_of`), whose lines errors name
    spec1: ModelSpec | None = None
    model0: EmbeddingModule | None = None
    model1: EmbeddingModule | None = None

    def config(self, **changes: Any) -> TrainConfig:
        return replace(TRAIN, seed=self.seed, **changes)

    def earlier_nodes(self, nodes: np.ndarray) -> np.ndarray:
        """The `before` graph's numbers of `after`'s nodes (entities both have): items follow
        the users, so they shift by the users added since."""
        shift = self.after.num_users - self.before.num_users
        return np.where(nodes < self.after.num_users, nodes, nodes - shift)


def make_bench(family: ModelFamily, spec: ModelSpec, seed: int) -> Bench:
    """The graph at `BEFORE` holds only the entities seen by then (indices follow first
    appearance, so they are the first ones): the later graph has entities newer than M_0."""
    snapshot = build_snapshot(generate(replace(GRAPH, seed=seed)))
    users, items = (entity_count_at(snapshot, entity, BEFORE) for entity in ("user", "item"))
    earlier = replace(snapshot, users=snapshot.users.head(users), items=snapshot.items.head(items),
                      edges=edges_until(snapshot, BEFORE))
    before = build_graph(earlier, earlier.edges, BEFORE)
    new = edges_between(snapshot, BEFORE, 1.0)
    touched = edge_endpoints(new, snapshot.num_users)
    later, changed = _with_changed_item(snapshot, items, touched)
    after = build_graph(later, edges_until(snapshot, 1.0), 1.0)
    entities = np.union1d(appeared_nodes(snapshot, BEFORE), changed)
    return Bench(family, spec, before, after, Changes(touched, entities), new.height, seed,
                 home_of(family))


def _with_changed_item(snapshot: GraphSnapshot, existing: int, touched: np.ndarray
                       ) -> tuple[GraphSnapshot, np.ndarray]:
    """The snapshot with the first feature field of one existing item changed, and its node:
    of the items with an interaction, the one farthest from every new interaction (so its own
    neighbours are affected by its change alone), then with the fewest interactions."""
    fields = snapshot.feature_fields("item")
    users = snapshot.edges["user_idx"].to_numpy()
    items = snapshot.edges["item_idx"].to_numpy() + snapshot.num_users
    hops = _hops_from(touched, users, items, snapshot.num_users + snapshot.num_items)
    degree = np.bincount(items - snapshot.num_users, minlength=snapshot.num_items)
    candidates = np.flatnonzero(degree[:existing] > 0)
    if not fields or candidates.size == 0:
        return snapshot, np.zeros(0, np.int64)
    order = np.lexsort((degree[candidates], -hops[candidates + snapshot.num_users]))
    item = int(candidates[order[0]])
    field = next(iter(fields))
    values = snapshot.items[field].to_list()
    values[item] = [((values[item] or [0])[0] + 1) % max(len(fields[field]), 1)]
    table = snapshot.items.with_columns(pl.Series(field, values,
                                                  dtype=snapshot.items[field].dtype))
    return replace(snapshot, items=table), np.array([snapshot.num_users + item], np.int64)


def _hops_from(sources: np.ndarray, users: np.ndarray, items: np.ndarray, nodes: int,
               most: int = 8) -> np.ndarray:
    """Each node's distance in interactions from `sources` (`most` + 1 beyond `most`)."""
    hops = np.full(nodes, most + 1, dtype=np.int64)
    reached = np.zeros(nodes, dtype=bool)
    reached[sources] = True
    hops[sources] = 0
    for hop in range(1, most + 1):
        frontier = reached[users] | reached[items]
        new = np.zeros(nodes, dtype=bool)
        new[users[frontier]] = True
        new[items[frontier]] = True
        new &= ~reached
        if not new.any():
            break
        hops[new], reached = hop, reached | new
    return hops


# -- what the rules compare ---------------------------------------------------------------------
def embeddings(model: EmbeddingModule, graph: GraphTensors) -> torch.Tensor:
    """(z_user; z_item) of every node, checked (`embedded`)."""
    return torch.cat(embedded(model, graph))


def embed_rows(family: ModelFamily, model: EmbeddingModule, inputs: Any, nodes: np.ndarray,
               dim: int) -> np.ndarray:
    """`family.embed` of `nodes`, refusing anything but one float32 row of `dim` per node."""
    with torch.no_grad():
        rows = family.embed(model, inputs, nodes)
    if not isinstance(rows, np.ndarray) or rows.dtype != np.float32 \
            or rows.shape != (len(nodes), dim):
        got = (f"{rows.dtype} array of shape {rows.shape}" if isinstance(rows, np.ndarray)
               else type(rows).__name__)
        raise ContractError(f"embed(model, inputs, nodes) must return a float32 numpy array "
                            f"of shape ({len(nodes)}, {dim}); got a {got}")
    return rows


def shipped(inputs: Any) -> Any:
    """`inputs` after a trip through pickle, as Ray's object store gives it to a task."""
    try:
        return pickle.loads(pickle.dumps(inputs, protocol=5))
    except Exception as error:  # noqa: BLE001 - whatever the object holds
        raise ContractError(f"embed_inputs(...) returned a {type(inputs).__name__} that cannot "
                            f"be pickled ({type(error).__name__}: {error}); refresh ships it "
                            "to its tasks through Ray's object store") from None


def node_name(node: int, graph: GraphTensors) -> str:
    if node < graph.num_users:
        return f"user {node} (node {node})"
    return f"item {node - graph.num_users} (node {node})"


def check_finite(z_user: torch.Tensor, z_item: torch.Tensor, what: str) -> None:
    if not (torch.isfinite(z_user).all() and torch.isfinite(z_item).all()):
        raise ContractError(f"{what} holds NaN or inf")


def close(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Which values agree within `TOLERANCE` (summation order alone moves large ones more)."""
    return np.abs(got - expected) <= TOLERANCE * (1.0 + np.abs(expected))


def check_same(got: torch.Tensor | np.ndarray, expected: torch.Tensor | np.ndarray, what: str,
               nodes: np.ndarray | None = None, graph: GraphTensors | None = None) -> None:
    """Rows within `TOLERANCE`; else the largest difference, and whose row it is where the rows
    are `nodes` of `graph`."""
    got, expected = np.asarray(got), np.asarray(expected)
    if close(got, expected).all():
        return
    difference = np.abs(got - expected)
    worst = float(difference.max(initial=0.0))
    where = ""
    if nodes is not None and graph is not None:
        row = int(np.unravel_index(np.argmax(difference), difference.shape)[0])
        where = f", at {node_name(int(nodes[row]), graph)}"
    raise ContractError(f"{what} differs from the expected rows by up to {worst:.3g}{where} "
                        f"(tolerance {TOLERANCE})")


def said(error: BaseException, home: Path | None = None) -> str:
    """The error on one line, with the plug-in's own line that raised it: the innermost frame
    in `home` (the family's module or package), else outside bc_ray, the standard library and
    the array libraries it calls."""
    text = str(error) if isinstance(error, BcRayError) else f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if home is not None and _within(f.filename, home)]
    frames = own or [f for f in frames if not any(_within(f.filename, root)
                                                  for root in _NOT_THE_PLUGIN)]
    if frames:
        text += f" (at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})"
    return text


def home_of(family: object) -> Path | None:
    """Where a family's code lives: its package's folder, or its module's file."""
    module = sys.modules.get(type(family).__module__)
    file = getattr(module, "__file__", None)
    if file is None:
        return None
    path = Path(file).resolve()
    return path.parent if path.name == "__init__.py" else path


def _within(filename: str, root: Path) -> bool:
    return Path(filename).resolve().is_relative_to(root)


_NOT_THE_PLUGIN = tuple(Path(p).resolve() for p in (
    Path(__file__).parents[1], Path(torch.__file__).parent, Path(np.__file__).parent,
    sysconfig.get_paths()["stdlib"]))
