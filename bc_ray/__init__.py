"""bc_ray: backward-compatible embeddings on Ray.

Train a new embedding model M_k jointly with a light backward transform B_k (BC-Aligner), keep only
the latest model and embeddings, and serve any historical version j as B_{j+1} o ... o B_k (z_k).

The names below are imported lazily: `import bc_ray` and the consumer API pull in neither Ray nor
torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "read_embeddings": "bc_ray.consumer.reader",
    "scan_embeddings": "bc_ray.consumer.reader",
    "export_embeddings": "bc_ray.consumer.reader",
    "export_delta": "bc_ray.consumer.export",
    "Store": "bc_ray.store.store",
    "RetentionPolicy": "bc_ray.store.store",
    "StorageOptions": "bc_ray.io",
    "GraphSnapshot": "bc_ray.data.snapshot",
    "VersionSpec": "bc_ray.models.graphsage.spec",
    "ModelFamily": "bc_ray.models",
    "FamilyBase": "bc_ray.models",
    "get_family": "bc_ray.models",
    "TrainConfig": "bc_ray.core.train_config",
    "BcRayError": "bc_ray.exceptions",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bc_ray' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))  # the lazy names tab-complete too
