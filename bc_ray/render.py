"""Plain-text rendering of rows and key/value pairs, shared by the CLI and the demo's report."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any


def iso_time(timestamp: float) -> str:
    """Unix seconds as an ISO 8601 UTC time."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat()


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_within(v)}" for k, v in value.items())
    return "-" if value is None else str(value)


def _within(value: Any) -> str:
    """A value inside a dict: a dict, or a list of several parts, in parentheses, so that
    `user=(version=2, rows=5), item=(version=2)` reads as two entries, not three."""
    text = format_value(value)
    nested = isinstance(value, dict) or (isinstance(value, (list, tuple)) and len(value) > 1)
    return f"({text})" if nested and value else text


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[format_value(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def key_values(data: dict[str, Any]) -> str:
    width = max((len(k) for k in data), default=0)
    return "\n".join(f"{k.ljust(width)}  {format_value(v)}" for k, v in data.items())
