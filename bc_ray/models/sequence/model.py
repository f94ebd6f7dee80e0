"""The sequence model M_k: a causal transformer over each user's time-ordered interactions.

Input of entity x (as for GraphSAGE): e(x) = sum_f mean_{c in x_f} E_f[c] + ID(x), or the
age-aware mix of the two (mixing.py). A user's sequence is

    [e(u), e(i_1), ..., e(i_m)] + P[0..m]        (learned positions by order)

over its last m <= max_len items, oldest first. The first token carries the user itself, so a
user without interactions is embedded from its own features and ID (and the transformer learns
to predict a user's first interaction from them). Pre-LN blocks with a causal mask and a final
LayerNorm; there is no batch normalisation, so a row never depends on the other rows of its
batch. Then

    z(u) = W_u h_m(u)        (the final hidden state, projected)
    z(i) = W_i e(i)          (the item's input representation, projected)

and the score of (u, i) is <z(u), z(i)>, as for GraphSAGE. In training, the hidden state at
every position is projected by W_u and scores the items that follow it (task.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bc_ray.core.encoders import EntityTables, FeatureEncoder, id_tables
from bc_ray.core.family import Vocabularies
from bc_ray.core.graph import GraphTensors
from bc_ray.core.mixing import AgeMixing
from bc_ray.models.sequence.history import Entities, SequenceInputs, sequence_inputs
from bc_ray.models.sequence.spec import SequenceSpec

POSITION_INIT_STD = 0.1
# Tokens per embedding chunk: bounds inference memory to chunk x dim floats per activation.
EMBED_TOKENS = 65_536


class SequenceModel(EntityTables, nn.Module):
    def __init__(self, spec: SequenceSpec, vocab: Vocabularies, initialize: bool = True) -> None:
        """`initialize=False` leaves the ID tables uninitialised, for weights about to be loaded."""
        super().__init__()
        self.spec = spec
        self.num_users, self.num_items = vocab.num_users, vocab.num_items
        dim = spec.dim
        self.encoders = nn.ModuleDict({"user": FeatureEncoder(vocab.user_vocab, dim),
                                       "item": FeatureEncoder(vocab.item_vocab, dim)})
        self.ids = id_tables(self, {"user": vocab.num_users, "item": vocab.num_items}, dim,
                             enabled=spec.id_embeddings, initialize=initialize)
        self.mixing = AgeMixing(dim) if spec.cold_start_mixing else None
        self.positions = nn.Embedding(spec.max_len + 1, dim)
        nn.init.normal_(self.positions.weight, std=POSITION_INIT_STD)
        block = nn.TransformerEncoderLayer(dim, spec.num_heads, 4 * dim, spec.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, spec.num_layers, norm=nn.LayerNorm(dim),
                                            enable_nested_tensor=False)
        self.dropout = nn.Dropout(spec.dropout)
        self.user_head = nn.Linear(dim, spec.output_dim)
        self.item_head = nn.Linear(dim, spec.output_dim)

    def entity_inputs(self, entity: str, source: Entities, index: torch.Tensor) -> torch.Tensor:
        """e(x) of the entities in `index` (an entity the model was not built for gets the zero
        padding ID row, and only the feature codes the model knows)."""
        device, at_source = self.positions.weight.device, index.to(source.first_t.device)
        bags = {k: v.take(at_source).to(device) for k, v in source.features.items()}
        meta = self.encoders[entity](bags, index.numel())
        if not self.spec.id_embeddings:
            return meta
        table = self.ids[entity]
        ids = table(index.to(device).clamp(max=table.num_embeddings - 1))
        if self.mixing is None:
            return meta + ids
        age = (source.now - source.first_t[at_source].to(device)).clamp(min=0.0)
        return self.mixing(ids, meta, age)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, dim) of token rows (B, T, dim) that start with the user token;
        position t sees positions 0..t only."""
        length = tokens.shape[1]
        x = self.dropout(tokens + self.positions.weight[:length])
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=x.device,
                                                              dtype=x.dtype)
        return self.blocks(x, mask=mask, is_causal=True)

    def forward(self, users: Entities, items: Entities, user_idx: torch.Tensor,
                item_idx: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries, z_items): W_u h_t at every position (B, T, out) of the sequences of users
        `user_idx` over the items `item_idx[rows]` (rows: (B, T - 1)); and z of `item_idx`."""
        user_x = self.entity_inputs("user", users, user_idx)
        item_x = self.entity_inputs("item", items, item_idx)
        tokens = torch.cat([user_x[:, None], item_x[rows]], dim=1)
        return self.user_head(self.encode(tokens)), self.item_head(item_x)

    @torch.no_grad()
    def embed(self, graph: GraphTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_user, z_item) of every entity, in eval mode, from the graph's interactions."""
        inputs = sequence_inputs(graph, self.spec.max_len)
        z = embed_nodes(self, inputs, np.arange(inputs.num_nodes))
        device = self.positions.weight.device
        z = torch.from_numpy(z).to(device)
        return z[: graph.num_users], z[graph.num_users:]


@torch.no_grad()
def embed_nodes(model: SequenceModel, inputs: SequenceInputs, nodes: np.ndarray) -> np.ndarray:
    """float32 z of `nodes` (users and items mixed; rows in that order), in eval mode, a chunk of
    users (or items) at a time."""
    nodes = np.asarray(nodes, dtype=np.int64)
    out = np.empty((nodes.size, model.output_dim), dtype=np.float32)
    was_training = model.training
    model.eval()
    device = model.positions.weight.device
    users, items = inputs.entities("user"), inputs.entities("item")
    is_user = nodes < inputs.num_users
    user_rows, item_rows = np.flatnonzero(is_user), np.flatnonzero(~is_user)
    # Chunks of users with histories of similar length pad less.
    user_rows = user_rows[np.argsort(inputs.recent.lengths[nodes[user_rows]], kind="stable")]
    chunk = max(1, EMBED_TOKENS // (model.spec.max_len + 1))
    for start in range(0, user_rows.size, chunk):
        rows = user_rows[start:start + chunk]
        out[rows] = _user_z(model, inputs, users, items, nodes[rows], device)
    for start in range(0, item_rows.size, EMBED_TOKENS):
        rows = item_rows[start:start + EMBED_TOKENS]
        index = torch.from_numpy(nodes[rows] - inputs.num_users)
        out[rows] = model.item_head(model.entity_inputs("item", items, index)).cpu().numpy()
    model.train(was_training)
    return out


def _user_z(model: SequenceModel, inputs: SequenceInputs, users: Entities, items: Entities,
            user_idx: np.ndarray, device: torch.device) -> np.ndarray:
    padded, lengths = inputs.recent.rows(user_idx)
    unique, local = np.unique(padded, return_inverse=True)
    item_x = model.entity_inputs("item", items, torch.from_numpy(unique))
    user_x = model.entity_inputs("user", users, torch.from_numpy(user_idx))
    local = torch.from_numpy(local.reshape(padded.shape)).to(device)
    hidden = model.encode(torch.cat([user_x[:, None], item_x[local]], dim=1))
    last = hidden[torch.arange(user_idx.size, device=device), torch.from_numpy(lengths).to(device)]
    return model.user_head(last).cpu().numpy()
