"""Output of CLI results: the same data as JSON or as text (tables rendered by bc_ray/render.py)."""

from __future__ import annotations

import sys
from typing import Any

import orjson


def emit_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
                                  | orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")


def emit(data: Any, as_json: bool, text: str) -> None:
    if as_json:
        emit_json(data)
    else:
        sys.stdout.write(text + "\n")
