"""Request and response bodies: JSON (orjson, numpy-native) and raw little-endian float32.

JSON costs more than the math (64 vectors of 256 floats are ~320 KB of text), so both routes also
take and return ``application/octet-stream``:

- /v1/transform: the body is rows x D_from float32; the response rows x D_to float32.
- /v1/embeddings: the body is int64 ids; the response is one found flag byte per id followed by
  rows x D float32.

The dimension and version of a binary response are in the ``X-Embedding-Dim`` and ``X-Version``
headers.
"""

from __future__ import annotations

import numpy as np
import orjson

from bc_ray.serve.state import RequestError

JSON = "application/json"
BINARY = "application/octet-stream"
FLOAT = np.dtype("<f4")
ID = np.dtype("<i8")


def media_type(header: str | None) -> str:
    return BINARY if header and header.split(";")[0].strip() == BINARY else JSON


def load_json(body: bytes) -> dict:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        nonfinite = b"NaN" in body or b"Infinity" in body  # what json.dumps writes for them
        hint = " (NaN and Infinity are not JSON numbers)" if nonfinite else ""
        raise RequestError(400, f"the body is not valid JSON: {exc}{hint}") from None
    if not isinstance(data, dict):
        raise RequestError(422, "the body must be a JSON object")
    return data


def field_int(data: dict, name: str, required: bool = True) -> int | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(422, f"'{name}' must be an integer, got {value!r}"[:200])
    return value


def matrix_from_json(value) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise RequestError(422, "'embeddings' must be a non-empty list of equal-length lists")
    try:
        matrix = np.asarray(value)
    except (ValueError, TypeError):
        raise RequestError(422, "'embeddings' must be a list of equal-length lists of "
                                "numbers") from None
    if matrix.dtype.kind not in "iuf":  # strings, booleans, nulls or objects are not numbers
        raise RequestError(422, "'embeddings' must hold numbers only (not strings, booleans "
                                "or nulls)")
    matrix = matrix.astype(np.float32)
    if matrix.ndim != 2:
        raise RequestError(422, "'embeddings' must be a list of equal-length lists of numbers")
    return matrix


def matrix_from_binary(body: bytes, dim: int) -> np.ndarray:
    if not body or len(body) % (FLOAT.itemsize * dim):
        raise RequestError(422, f"a binary body must hold whole rows of {dim} little-endian "
                                f"float32 values ({FLOAT.itemsize * dim} bytes each); got "
                                f"{len(body)} bytes")
    return np.frombuffer(body, dtype=FLOAT).reshape(-1, dim)


def ids_from_binary(body: bytes) -> list[int]:
    if len(body) % ID.itemsize:
        raise RequestError(422, "a binary id list must hold whole little-endian int64 values")
    return np.frombuffer(body, dtype=ID).tolist()


def dumps(data: dict) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
