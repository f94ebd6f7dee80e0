"""Input files a team lands: found by file, folder or glob, on local disk or S3, read as Parquet or
CSV, each with the identity (size and ETag or mtime) and content hash that make ingestion
exactly-once.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from dataclasses import dataclass

import polars as pl

from bc_ray.exceptions import DataError, NotFoundError
from bc_ray.io import FileIO

INPUT_FORMATS = ("parquet", "csv")
_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".csv.gz": "csv",
               ".tsv": "csv"}
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class SourceFile:
    """One input file; `tag` changes when the file is rewritten (ETag on S3, mtime locally).

    A landed file also carries its path under the landing root (`rel`) and the sha256 of the
    bytes the landing zone checked: that pair is its identity, whatever spelling of the root
    (a symlink, a remount) it was found through, and reading other bytes is refused.
    """

    uri: str
    size: int
    tag: str
    rel: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict:
        identity = {"rel": self.rel, "sha256": self.sha256} if self.rel is not None else {}
        return {"uri": self.uri, "size": self.size, "tag": self.tag, **identity}


def input_format(uri: str, declared: str | None) -> str:
    """`declared` (--input-format) or the file's extension; anything else is refused by name."""
    if declared is not None:
        if declared not in INPUT_FORMATS:
            raise DataError(f"--input-format must be one of {INPUT_FORMATS}, got {declared!r}")
        return declared
    lowered = uri.lower()
    for extension, fmt in _EXTENSIONS.items():
        if lowered.endswith(extension):
            return fmt
    raise DataError("not a Parquet or CSV file by its extension (.parquet, .pq, .csv, .csv.gz, "
                    ".tsv); pass --input-format to read it anyway", path=uri)


def hidden(rel: str) -> bool:
    """Markers and temporaries that writers leave beside data (_SUCCESS, .crc, and everything
    under Spark's dt=.../_temporary/0/task_.../): any component of the path under the root."""
    return any(part.startswith(("_", ".")) for part in rel.split("/") if part)


def _found(io_: FileIO, path: str) -> tuple[dict[str, dict], str]:
    """Every entry at `path` (name -> info), and the prefix their relative names start after."""
    fs, root = io_.fs, io_.root
    if fs.isdir(root):
        return fs.find(root, detail=True), root
    if fs.exists(root):
        return {root: fs.info(root)}, root
    if any(c in path for c in _GLOB_CHARS):
        found = {p: fs.info(p) for p in fs.glob(root)}
        base = root[:min(root.index(c) for c in _GLOB_CHARS if c in root)].rsplit("/", 1)[0]
        return {p: info for p, info in found.items() if info.get("type") != "directory"}, base
    raise DataError("no such file or folder", path=path)


def discover(path: str, declared_format: str | None = None) -> list[SourceFile]:
    """Every data file at `path` (a file, a folder searched recursively, or a glob), sorted.

    A path that exists is taken literally, so a folder named `events[v2]` is not a glob."""
    io_ = FileIO(path)
    with io_.reading():  # storage that fails is one line (StorageAccessError)
        found, base = _found(io_, path)
    files, unnamed = [], 0
    for name, info in sorted(found.items()):
        rel = name[len(base):].lstrip("/") if name.startswith(base) else name
        if rel and hidden(rel):
            continue
        uri = f"{io_.scheme}://{name}" if io_.scheme == "s3" else name
        if declared_format is None and len(found) > 1 and not known_extension(uri):
            unnamed += 1  # a folder may hold READMEs or manifests beside the data
            continue
        files.append(SourceFile(uri=uri, size=int(info.get("size") or 0), tag=file_tag(info)))
    if not files:
        skipped = (f" ({unnamed} file(s) skipped for a name without .parquet or .csv, as Spark "
                   "names its part-00000 files: name them so, or declare the format, as "
                   "`data ingest` and `data land` do with --input-format)" if unnamed else "")
        raise DataError(f"no Parquet or CSV files found{skipped}", path=path)
    return files


def known_extension(uri: str) -> bool:
    return any(uri.lower().endswith(e) for e in _EXTENSIONS)


def file_tag(info: dict) -> str:
    """What changes when a file is rewritten: its ETag on S3, its mtime on a local disk."""
    for key in ("ETag", "etag"):
        if info.get(key):
            return str(info[key]).strip('"')
    for key in ("mtime", "LastModified", "created"):
        value = info.get(key)
        if value is not None:
            return str(value.timestamp() if hasattr(value, "timestamp") else value)
    return ""


def read_source(source: SourceFile, declared_format: str | None, hasher: hashlib._Hash
                ) -> tuple[pl.DataFrame, str]:
    """The file's rows and the sha256 of its bytes (`hasher` takes them too); CSV columns stay
    text (typed later, so errors can count bad values)."""
    fmt = input_format(source.uri, declared_format)
    try:  # storage that fails is StorageAccessError (one line), not a traceback
        data = FileIO(source.uri).read_bytes("")
    except NotFoundError as exc:
        raise DataError("file disappeared while reading", path=source.uri) from exc
    hasher.update(f"{len(data)}:".encode())
    own = hashlib.sha256()
    hashing = threading.Thread(target=_hash, args=(data, hasher, own))  # releases the GIL
    hashing.start()
    try:
        frame, failure = _parse(data, fmt, source.uri), None
    except DataError as exc:
        frame, failure = None, exc
    finally:
        hashing.join()
    if source.sha256 is not None and own.hexdigest() != source.sha256:
        raise DataError("file changed after the landing zone checked it; it is looked at "
                        "again at the next pass", path=source.uri)
    if failure is not None:
        raise failure
    return frame, own.hexdigest()


def _hash(data: bytes, *hashers: hashlib._Hash) -> None:
    for hasher in hashers:
        hasher.update(data)


def _parse(data: bytes, fmt: str, uri: str) -> pl.DataFrame:
    try:
        if fmt == "parquet":
            return pl.read_parquet(io.BytesIO(data))
        separator = "\t" if uri.lower().endswith(".tsv") else ","
        return pl.read_csv(io.BytesIO(data), infer_schema=False, separator=separator)
    except pl.exceptions.NoDataError as exc:
        raise DataError("file is empty", path=uri) from exc
    except Exception as exc:  # noqa: BLE001 - polars raises many kinds for a malformed file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read as {fmt}: {first}", path=uri) from exc


def local_or_uri(path: str) -> str:
    """A path as given on the command line, made absolute when it is local."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))
