"""A family's model as bytes: its spec, the vocabularies it was built for and its weights, so
any process rebuilds it with `ModelFamily.build` and no training data."""

from __future__ import annotations

import io

import torch

from bc_ray.core.family import EmbeddingModule, ModelFamily, Vocabularies


def module_to_bytes(model: EmbeddingModule, family: str) -> bytes:
    vocab: Vocabularies = model.vocab
    buffer = io.BytesIO()
    torch.save({"family": family, "spec": model.spec.to_dict(),
                "vocab": {"num_users": vocab.num_users, "num_items": vocab.num_items,
                          "user_vocab": vocab.user_vocab, "item_vocab": vocab.item_vocab},
                "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, buffer)
    return buffer.getvalue()


def module_from_bytes(family: ModelFamily, data: bytes) -> EmbeddingModule:
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model = family.build(family.spec_from_dict(payload["spec"]),
                         Vocabularies(**payload["vocab"]))
    model.load_state_dict(payload["state"])
    return model.eval()
