"""The embedding model M_k: GraphSAGE over the bipartite user-item graph.

Input of entity x:  h_0(x) = sum_f mean_{c in x_f} E_f[c]  +  ID(x)
(feature-field embedding bags plus a learnable ID embedding; an entity the model has never seen
uses a zero ID row, so the model is inductive). Then L GraphSAGE layers

    h_{l+1}(v) = W_l mean_{u in N(v)} h_l(u) + R_l h_l(v),   BatchNorm, ReLU (not after the last)

and z_k(x) = h_L(x). Score of (u, i) = <z(u), z(i)>. With `cold_start_mixing` the input mixes ID
and metadata by entity age instead of adding them (see mixing.py).
"""

from __future__ import annotations

import torch
from torch import nn

from bc_ray.core.encoders import EntityTables, FeatureEncoder, id_tables
from bc_ray.core.graph import Adjacency, FeatureBag, GraphTensors
from bc_ray.core.mixing import AgeMixing
from bc_ray.models.graphsage.sampler import SampledSubgraph
from bc_ray.models.graphsage.spec import VersionSpec


class LinearSAGE(nn.Module):
    """The parameters of PyG's SAGEConv (``lin_l`` with bias, ``lin_r`` without) and nothing
    else: loading a trained model for inference then needs no torch_geometric import, which costs
    ~5 s per process (every refresh worker pays it otherwise). `EmbeddingModel.layer` computes
    the same W_l agg + W_r x_dst with it; a test checks the outputs are identical."""

    def __init__(self, in_channels: int, out_channels: int, aggr: str = "mean") -> None:
        super().__init__()
        self.aggr = aggr
        self.lin_l = nn.Linear(in_channels, out_channels, bias=True)
        self.lin_r = nn.Linear(in_channels, out_channels, bias=False)


def _sage_conv_class(light: bool):
    if light:
        return LinearSAGE
    from torch_geometric.nn import SAGEConv

    return SAGEConv


class EmbeddingModel(EntityTables, nn.Module):
    def __init__(self, spec: VersionSpec, num_users: int, num_items: int,
                 user_vocab: dict[str, int], item_vocab: dict[str, int],
                 light: bool = False, initialize: bool = True) -> None:
        """`initialize=False` leaves the ID tables uninitialised, for weights about to be
        loaded (their random init is most of a 10M-edge model's load time)."""
        super().__init__()
        self.spec = spec
        self.num_users, self.num_items = num_users, num_items
        hidden = spec.hidden_dim
        self.encoders = nn.ModuleDict({"user": FeatureEncoder(user_vocab, hidden),
                                       "item": FeatureEncoder(item_vocab, hidden)})
        self.ids = id_tables(self, {"user": num_users, "item": num_items}, hidden,
                             enabled=spec.id_embeddings, initialize=initialize)
        self.mixing = AgeMixing(hidden) if spec.cold_start_mixing else None
        dims = [hidden] * spec.num_layers + [spec.output_dim]
        conv = _sage_conv_class(light)
        self.convs = nn.ModuleList(
            conv(dims[i], dims[i + 1], aggr=spec.aggregation) for i in range(spec.num_layers))
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(dims[i + 1])
            for i in range(spec.num_layers)) if spec.batch_norm else None

    def entity_inputs(self, entity: str, graph: GraphTensors, index: torch.Tensor | None = None,
                      id_rows: torch.Tensor | None = None) -> torch.Tensor:
        count = graph.num_users if entity == "user" else graph.num_items
        features = graph.features(entity)
        if index is not None:
            features = {k: v.take(index) for k, v in features.items()}
        first_t = graph.user_first_t if entity == "user" else graph.item_first_t
        rows = torch.arange(count, device=first_t.device) if index is None else index
        return self.inputs_of(entity, features, rows, first_t[rows], graph.now, id_rows)

    def inputs_of(self, entity: str, features: dict[str, FeatureBag], rows: torch.Tensor,
                  first_t: torch.Tensor, now: float,
                  id_rows: torch.Tensor | None = None) -> torch.Tensor:
        """h_0 of entities `rows` from their own features and first-seen times alone (what a
        refresh task of a node range holds). `id_rows`: their ID embeddings, when the ID
        tables live elsewhere (sharded across training workers: `ShardedEmbedding`)."""
        meta = self.encoders[entity](features, rows.numel())
        if not self.spec.id_embeddings:
            return meta
        if id_rows is not None:
            ids = id_rows
        else:
            table = self.ids[entity]
            ids = table(rows.to(meta.device).clamp(max=table.num_embeddings - 1))
        if self.mixing is None:
            return meta + ids
        age = (now - first_t.to(meta.device)).clamp(min=0.0)
        return self.mixing(ids, meta, age)

    def inputs(self, graph: GraphTensors, nodes: torch.Tensor | None = None,
               id_rows: torch.Tensor | None = None) -> torch.Tensor:
        """h_0 of every node, or of `nodes` (with their ID rows `id_rows` when the tables are
        sharded)."""
        if nodes is None:
            return torch.cat([self.entity_inputs("user", graph), self.entity_inputs("item", graph)])
        is_user = nodes < graph.num_users
        out = nodes.new_empty((nodes.numel(), self.spec.hidden_dim), dtype=torch.float32)
        of = (lambda mask: None) if id_rows is None else (lambda mask: id_rows[mask])
        out[is_user] = self.entity_inputs("user", graph, nodes[is_user], of(is_user))
        out[~is_user] = self.entity_inputs("item", graph, nodes[~is_user] - graph.num_users,
                                           of(~is_user))
        return out

    def layer(self, index: int, x_src: torch.Tensor, adjacency: Adjacency,
              x_dst: torch.Tensor) -> torch.Tensor:
        return sage_layer(self.spec, self.convs, self.norms, index, x_src, adjacency, x_dst)

    def combine(self, index: int, aggregated: torch.Tensor, x_dst: torch.Tensor) -> torch.Tensor:
        """Layer `index` from its rows' aggregated neighbours (`sage_combine`)."""
        return sage_combine(self.spec, self.convs, self.norms, index, aggregated, x_dst)

    def aggregation(self) -> str | None:
        """How a row's neighbours are aggregated where `combine` can finish the layer from a
        sum or max taken elsewhere ("mean", "sum" or "max"); None where only PyG's own conv
        aggregates (max on its SAGEConv)."""
        if self.spec.aggregation in ("mean", "sum") or all(
                isinstance(conv, LinearSAGE) for conv in self.convs):
            return self.spec.aggregation
        return None

    def layer_stack(self) -> LayerStack:
        """The GraphSAGE layers alone (sharing this model's modules), for processes that get
        h_0 from elsewhere: a few KB to ship instead of the ID tables' hundreds of MB."""
        return LayerStack(self.spec, self.convs, self.norms)

    def forward(self, graph: GraphTensors, sample: SampledSubgraph | None = None,
                id_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of every node (full graph) or of the sample's seeds (mini-batch; with
        the ID rows of `sample.nodes` given when the tables are sharded)."""
        if sample is None:
            x, adjacency = self.inputs(graph), graph.adjacency()
            for index in range(self.spec.num_layers):
                x = self.layer(index, x, adjacency, x)
            return x
        x = self.inputs(graph, sample.nodes, id_rows)
        for index, block in enumerate(sample.blocks):
            x = self.layer(index, x, block.adjacency, x[: block.num_dst])
        return x

    @torch.no_grad()
    def embed(self, graph: GraphTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_user, z_item) of every entity, in eval mode (full graph)."""
        was_training = self.training
        self.eval()
        z = self.forward(graph)
        self.train(was_training)
        return z[: graph.num_users], z[graph.num_users:]


def sage_layer(spec: VersionSpec, convs: nn.ModuleList, norms: nn.ModuleList | None, index: int,
               x_src: torch.Tensor, adjacency: Adjacency, x_dst: torch.Tensor) -> torch.Tensor:
    """One GraphSAGE layer: destination rows aggregate their neighbours among `x_src`.

    Mean and sum aggregation run through `Adjacency.aggregate` (a cached-transpose SpMM) and
    the PyG layer's own weights: W_l agg + W_r x_dst, exactly SAGEConv's forward."""
    conv = convs[index]
    if spec.aggregation in ("mean", "sum"):
        aggregated = adjacency.aggregate(x_src, spec.aggregation)
    elif isinstance(conv, LinearSAGE):
        aggregated = adjacency.aggregate_max(x_src)
    else:
        return _activate(spec, norms, index, conv((x_src, x_dst), adjacency.binary))
    return sage_combine(spec, convs, norms, index, aggregated, x_dst)


def sage_combine(spec: VersionSpec, convs: nn.ModuleList, norms: nn.ModuleList | None,
                 index: int, aggregated: torch.Tensor, x_dst: torch.Tensor) -> torch.Tensor:
    """A GraphSAGE layer from its rows' aggregated neighbours (however they were gathered:
    `refresh.halo` sums them source by source): W_l agg + W_r x_dst, as SAGEConv's forward
    (`lin_l` with its bias, `lin_r` without, on PyG's conv and on `LinearSAGE` alike)."""
    conv = convs[index]
    return _activate(spec, norms, index, conv.lin_l(aggregated) + conv.lin_r(x_dst))


def _activate(spec: VersionSpec, norms: nn.ModuleList | None, index: int,
              x: torch.Tensor) -> torch.Tensor:
    if norms is not None:
        x = norms[index](x)
    return torch.relu(x) if index < spec.num_layers - 1 else x


class LayerStack(nn.Module):
    """Layers 1..L of a model without its inputs: what layer-wise inference needs once h_0 of
    every node is computed (`EmbeddingModel.layer_stack`)."""

    def __init__(self, spec: VersionSpec, convs: nn.ModuleList,
                 norms: nn.ModuleList | None) -> None:
        super().__init__()
        self.spec, self.convs, self.norms = spec, convs, norms

    def layer(self, index: int, x_src: torch.Tensor, adjacency: Adjacency,
              x_dst: torch.Tensor) -> torch.Tensor:
        return sage_layer(self.spec, self.convs, self.norms, index, x_src, adjacency, x_dst)

    def combine(self, index: int, aggregated: torch.Tensor, x_dst: torch.Tensor) -> torch.Tensor:
        """Layer `index` from its rows' aggregated neighbours (`sage_combine`)."""
        return sage_combine(self.spec, self.convs, self.norms, index, aggregated, x_dst)


def build_model(spec: VersionSpec, graph: GraphTensors) -> EmbeddingModel:
    return EmbeddingModel(spec, graph.num_users, graph.num_items, graph.user_vocab,
                          graph.item_vocab)
