"""Embedding model families: the interface (`ModelFamily`), the registry, and the built-ins
(`graphsage`, `sequence`)."""

from bc_ray.core.family import (
    Changes,
    EmbeddingModule,
    ModelFamily,
    ModelSpec,
    TaskStep,
    TrainingTask,
    Vocabularies,
)
from bc_ray.core.family_base import FamilyBase
from bc_ray.core.registry import ENTRY_POINT_GROUP, family_names, family_of, get_family

__all__ = ["Changes", "EmbeddingModule", "ENTRY_POINT_GROUP", "FamilyBase", "ModelFamily",
           "ModelSpec", "TaskStep", "TrainingTask", "Vocabularies", "family_names", "family_of",
           "get_family"]
