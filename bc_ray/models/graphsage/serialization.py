"""Models as bytes: everything needed to rebuild M_k (spec, table sizes, vocabularies, weights)."""

from __future__ import annotations

import io

import torch
from torch import nn

from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.spec import VersionSpec


def model_payload(model: EmbeddingModel) -> dict:
    """What a model file holds of `model` (`torch.save`d)."""
    return {
        "spec": model.spec.to_dict(),
        "num_users": model.num_users,
        "num_items": model.num_items,
        "user_vocab": model.encoders["user"].vocab_sizes,
        "item_vocab": model.encoders["item"].vocab_sizes,
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def model_to_bytes(model: EmbeddingModel) -> bytes:
    buffer = io.BytesIO()
    torch.save(model_payload(model), buffer)
    return buffer.getvalue()


def save_model(model: EmbeddingModel, path: str) -> None:
    """What `model_to_bytes` holds, written to `path` tensor by tensor: no copy of the tables
    in memory (with a torch that cannot write M_k's file in place, a sharded bump's rank 0 writes
    it beside the whole tables it gathered).
    The file loads as the bytes do; its own bytes differ (torch names the records after it)."""
    torch.save(model_payload(model), path)


def model_from_bytes(data: bytes, device: torch.device | str = "cpu",
                     light: bool = False) -> EmbeddingModel:
    """`light` builds the layers without torch_geometric, for inference-only processes: these
    also take the loaded tensors as the weights instead of copying them (half the peak memory
    of loading; a training model keeps its own, which carry gradient hooks)."""
    payload = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    return model_of_payload(payload, device, light)


def model_from_file(path: str) -> EmbeddingModel:
    """An inference model over a model file mapped, not read: its tensors are the file's pages,
    so a process that looks up a few ID rows reads only theirs (a refresh task of a node range
    never holds the whole ID tables)."""
    payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return model_of_payload(payload, "cpu", light=True)


def model_of_payload(payload: dict, device: torch.device | str = "cpu", light: bool = False,
                     id_tables: bool = True) -> EmbeddingModel:
    """The model of a loaded payload. `id_tables=False`: built without its ID tables, from a
    state without them (a reader that holds only some of their rows supplies them: `ModelFile`)."""
    counts = (payload["num_users"], payload["num_items"]) if id_tables else (0, 0)
    model = EmbeddingModel(VersionSpec.from_dict(payload["spec"]), *counts,
                           payload["user_vocab"], payload["item_vocab"], light=light,
                           initialize=False)
    if not id_tables:
        model.ids = nn.ModuleDict()
        model.num_users, model.num_items = payload["num_users"], payload["num_items"]
    model.load_state_dict(payload["state"], assign=light)
    return model.to(device).eval()
