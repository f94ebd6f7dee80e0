"""The consumer API: read embeddings (any historical version) with polars.

Imports no Ray, no torch.
"""

from bc_ray.consumer.export import export_delta
from bc_ray.consumer.reader import export_embeddings, read_embeddings, scan_embeddings

__all__ = ["read_embeddings", "scan_embeddings", "export_embeddings", "export_delta"]
