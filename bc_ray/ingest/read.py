"""One batch's files read into validated rows: discovered (a file, a folder or a glob, local or
s3://), read once while their bytes are hashed, then mapped and checked by `bc_ray.data.batch`.

The hash and the way the files were read make the batch's default id, so a retry of the same
files is the same batch and the same files read another way are another."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from bc_ray.data.batch import FileFrame, RawBatch, validate_batch
from bc_ray.data.mapping import ColumnMapping
from bc_ray.ingest.landing_config import ROLES
from bc_ray.ingest.sources import SourceFile, discover, input_format, read_source

# Mapping fields that only decide whether a batch is accepted, never what its rows are: left out
# of the default batch id, so flipping one on a retry does not land the same rows twice.
ACCEPTANCE_ONLY = ("allow_old_times",)


@dataclass(frozen=True)
class BatchInput:
    """Where a batch's files are: edges (required) and optional user / item tables."""

    edges: str
    users: str | None = None
    items: str | None = None

    def paths(self) -> dict[str, str]:
        return {role: path for role, path in (("edges", self.edges), ("users", self.users),
                                              ("items", self.items)) if path}


def read_batch(request: BatchInput, mapping: ColumnMapping,
               files: dict[str, list[SourceFile]] | None = None) -> RawBatch:
    """Read, map and validate every input file of one batch (`files`: already discovered)."""
    files = files or {role: discover(path, mapping.input_format)
                      for role, path in request.paths().items()}
    hasher = hashlib.sha256()
    sources, frames, formats = [], {}, []
    for role in ROLES:
        for source in files.get(role, []):
            hasher.update(f"\n{role}\n".encode())
            frame, sha256 = read_source(source, mapping.input_format, hasher)
            formats.append(input_format(source.uri, mapping.input_format))
            sources.append({"role": role, **source.to_dict(), "rows": frame.height,
                            "sha256": sha256, "read_as": read_as(mapping, formats[-1])})
            frames.setdefault(role, []).append(FileFrame(source.uri, frame,
                                                         typed=formats[-1] != "csv"))
    raw = validate_batch(frames, mapping)
    content = hasher.hexdigest()
    return replace(raw, sources=sources, content_hash=content,
                   default_id=default_batch_id(content, mapping, formats))


def default_batch_id(content_hash: str, mapping: ColumnMapping, formats: list[str]) -> str:
    """`b-` and a hash of the inputs' content and of how they are read (columns, time unit, the
    format each file is read as): the same files read another way are another batch, so a
    corrected re-run lands; a retry of the same is the same batch. `--allow-old-times` only
    decides whether a batch is accepted (its rows are the same either way), so it is left out,
    and so is `--input-format` beyond the format it makes each file be read as."""
    return f"b-{_digest(_reading(mapping, formats, content=content_hash))[:24]}"


def read_as(mapping: ColumnMapping, fmt: str) -> str:
    """How one file was read (its mapping, as the default id counts it, and its format): the
    same bytes read the same way are the same rows, whatever batch they come with."""
    return _digest(_reading(mapping, fmt))[:16]


def _reading(mapping: ColumnMapping, formats: list[str] | str, **extra: str) -> dict:
    reading = {name: value for name, value in asdict(mapping).items()
               if name not in ACCEPTANCE_ONLY}
    return {**reading, "input_format": formats, **extra}


def _digest(value: dict) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
