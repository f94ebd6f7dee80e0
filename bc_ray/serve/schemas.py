"""OpenAPI documentation of the request bodies (parsing itself is done with orjson: pydantic would
validate every float one by one, which costs more than the matmul)."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, Field


class TransformRequest(BaseModel):
    from_version: int = Field(description="Version the embeddings come from (any published "
                                          "version, not only the latest).")
    to_version: int = Field(description="Version to map them to (<= from_version).")
    embeddings: list[list[float]] = Field(min_length=1, description="Rows of D_from floats.")


class EmbeddingsRequest(BaseModel):
    entity: Literal["user", "item"]
    ids: list[Union[str, int]] = Field(description="External ids.")
    version: Optional[int] = Field(default=None, description=(
        "Version wanted (default: the served table's own, the previous version after a bump "
        "until the new version's first refresh)."))


def _body(model: type[BaseModel], binary: str) -> dict:
    return {"required": True, "content": {
        "application/json": {"schema": model.model_json_schema()},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                "description": binary}}}}


def _query(name: str, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "integer"},
            "description": description}


TRANSFORM_BODY = {
    "requestBody": _body(TransformRequest, "rows x D_from little-endian float32 (versions in "
                                           "the query)"),
    "parameters": [_query("from_version", "binary requests: source version"),
                   _query("to_version", "binary requests: target version")],
}
EMBEDDINGS_BODY = {
    "requestBody": _body(EmbeddingsRequest, "little-endian int64 ids (entity and version in "
                                            "the query)"),
    "parameters": [{"name": "entity", "in": "query", "required": False,
                    "schema": {"type": "string", "enum": ["user", "item"]}},
                   _query("version", "binary requests: version wanted")],
}
