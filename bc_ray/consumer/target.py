"""Where an export may go: outside the store, and never onto something it would not own.

An export inside the store replaces the store's own files (a Delta export at the store root
overwrote the store's Delta table); an export around the store makes the store part of a Delta
table whose VACUUM would delete it. The same place has many spellings (trailing or doubled
slashes, `file://` or a bare path, `..`, a symlink), so both sides are compared in one
canonical form. A Parquet export onto a folder (or a path spelled as one, with a trailing
slash), or a Delta export onto a file or onto a folder of other files, is refused before
anything is read or written.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from bc_ray.exceptions import ConfigError
from bc_ray.io import FileIO, StorageOptions, split_uri


@dataclass(frozen=True)
class Location:
    """A place in canonical form: symlinks resolved (local), '.', '..' and extra slashes gone."""

    scheme: str
    path: str

    @classmethod
    def of(cls, uri: str) -> Location:
        scheme, path = split_uri(uri)
        if scheme == "file":
            return cls(scheme, os.path.realpath(path))
        return cls(scheme, posixpath.normpath(path).strip("/"))

    def within(self, other: Location) -> bool:
        """This place is `other` or lies under it."""
        return self.scheme == other.scheme and (
            self.path == other.path or self.path.startswith(other.path.rstrip("/") + "/"))


def refuse_overlap(store_uri: str, out: str) -> None:
    """ConfigError when `out` is the store, lies inside it, or holds it."""
    store, target = Location.of(store_uri), Location.of(out)
    if target.within(store):
        raise ConfigError(f"--out {out} is inside the store {store_uri}: write exports outside "
                          "the store (an export there would replace the store's own files)")
    if store.within(target):
        raise ConfigError(f"--out {out} holds the store {store_uri}: write exports to a folder "
                          "of their own (a table around the store would make the store's "
                          "files part of it)")


@dataclass(frozen=True)
class ExportTarget:
    """A checked `--out`: outside the store, and of the kind the format writes."""

    out: str
    io: FileIO

    @classmethod
    def parquet(cls, store_uri: str, out: str, options: StorageOptions | None,
                entity: str = "item") -> ExportTarget:
        target = cls._checked(store_uri, out, options)
        if out.endswith("/") or target.io.fs.isdir(target.io.path()):
            raise ConfigError(f"--out {out} names a folder: give the Parquet file's path (e.g. "
                              f"{out.rstrip('/')}/{entity}s.parquet), or use --format delta")
        return target

    @classmethod
    def delta(cls, store_uri: str, out: str, options: StorageOptions | None) -> ExportTarget:
        target = cls._checked(store_uri, out, options)
        fs, root = target.io.fs, target.io.path()
        if fs.isfile(root):
            raise ConfigError(f"--out {out} is a file: a Delta export needs a folder")
        if fs.isdir(root) and fs.ls(root) and not target.io.exists("_delta_log"):
            raise ConfigError(f"--out {out} holds files that are not a Delta table: give a new "
                              "or empty folder, or the folder of an earlier Delta export")
        return target

    @classmethod
    def _checked(cls, store_uri: str, out: str, options: StorageOptions | None
                 ) -> ExportTarget:
        refuse_overlap(store_uri, out)
        return cls(out, FileIO(out, options))

    def write_parquet(self, table: pa.Table) -> None:
        """One PUT on S3; locally a synced temporary file renamed into place, removed when
        anything fails, so neither a partial file nor a leftover is ever seen."""
        if self.io.scheme == "s3":
            buffer = pa.BufferOutputStream()
            pq.write_table(table, buffer, write_page_checksum=True)
            self.io.fs.pipe_file(self.io.path(), buffer.getvalue().to_pybytes())
            return
        target = self.io.path()
        tmp = f"{target}.{uuid.uuid4().hex}.tmp"
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            pq.write_table(table, tmp, write_page_checksum=True)
            os.replace(tmp, target)
        except OSError as exc:
            raise ConfigError(f"cannot write --out {self.out}: {exc.strerror or exc}") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def delta_location(self) -> str:
        """What deltalake's writer takes: the URI on S3, the path locally."""
        return self.io.uri if self.io.scheme == "s3" else self.io.path()
