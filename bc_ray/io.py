"""Where bytes live: one small interface over `file://` and `s3://`, chosen by the store URI.

Everything else in bc_ray reads and writes through `FileIO`, so the store, Ray Data, polars and
pyarrow all see the same filesystem configuration (endpoint, credentials) for one URI.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import fsspec

from bc_ray.exceptions import (
    BcRayError,
    ConfigError,
    CorruptFileError,
    NotFoundError,
    StorageAccessError,
)
from bc_ray.redaction import refuse_user_info

if TYPE_CHECKING:
    import pyarrow.fs

SUPPORTED_SCHEMES = ("file", "s3")


@dataclass(frozen=True)
class StorageOptions:
    """Where an S3-compatible service is; ignored for `file://`.

    Only what the user set is passed on: the endpoint (`BC_RAY_S3_ENDPOINT` or
    `AWS_ENDPOINT_URL`) and the region (`AWS_REGION` or `AWS_DEFAULT_REGION`). Credentials are
    left to each SDK's own default chain (botocore for s3fs, the AWS C++ SDK for pyarrow,
    object_store for polars): environment keys with `AWS_SESSION_TOKEN`, `AWS_PROFILE`,
    web-identity tokens (EKS/IRSA) and instance roles all work as they do for the AWS CLI.
    `key`/`secret`/`token` are for code that must pass credentials explicitly.
    """

    endpoint_url: str | None = None
    key: str | None = None
    secret: str | None = None
    region: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if bool(self.key) != bool(self.secret):
            raise ConfigError("explicit S3 credentials need both key and secret")
        if self.token and not self.key:
            raise ConfigError("an explicit S3 session token needs its key and secret")
        if self.endpoint_url:
            refuse_user_info(self.endpoint_url, "the S3 endpoint")

    @classmethod
    def from_env(cls) -> StorageOptions:
        env = os.environ
        return cls(
            endpoint_url=env.get("BC_RAY_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        )

    def apply_checksum_defaults(self) -> None:
        """Non-AWS endpoints reject the newer SDKs' default checksums (HTTP 411 on multipart)."""
        if self.endpoint_url:
            os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
            os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://b/p` -> ("s3", "b/p"); `file:///a/b` or a bare path -> ("file", "/a/b").

    A URI with user info (`s3://KEY:SECRET@bucket`) is refused before anything can echo it."""
    refuse_user_info(uri)
    if "://" not in uri:
        return "file", os.path.abspath(os.path.expanduser(uri))
    parsed = urlparse(uri)
    if parsed.scheme not in SUPPORTED_SCHEMES:
        raise ConfigError(
            f"unsupported store URI scheme {parsed.scheme!r} in {uri!r}; use file:// or s3://")
    if parsed.scheme == "file":
        return "file", os.path.abspath(parsed.netloc + parsed.path)
    if not parsed.netloc:
        raise ConfigError(f"store URI {uri!r} names no bucket; use s3://bucket/prefix")
    return "s3", (parsed.netloc + parsed.path).rstrip("/")


class FileIO:
    """Reads and writes bytes under one root URI. Paths given to methods are relative to it."""

    def __init__(self, uri: str, options: StorageOptions | None = None) -> None:
        self.scheme, self.root = split_uri(uri)
        self.options = options or StorageOptions.from_env()
        self._bucket_seen = False
        if self.scheme == "s3":
            self.options.apply_checksum_defaults()

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.root}"

    def child(self, rel: str) -> FileIO:
        """A FileIO rooted at a sub-path, sharing this one's options."""
        return FileIO(self.uri_of(rel), self.options)

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self.scheme == "file":
            return fsspec.filesystem("file", auto_mkdir=True)
        import s3fs

        client_kwargs = {}
        if self.options.endpoint_url:
            client_kwargs["endpoint_url"] = self.options.endpoint_url
        if self.options.region:
            client_kwargs["region_name"] = self.options.region
        credentials = {}
        if self.options.key:  # else botocore's default chain
            credentials = {"key": self.options.key, "secret": self.options.secret,
                           "token": self.options.token}
        return s3fs.S3FileSystem(client_kwargs=client_kwargs, use_listings_cache=False,
                                 skip_instance_cache=True, **credentials)

    def path(self, rel: str = "") -> str:
        """Scheme-less absolute path (what fsspec and pyarrow filesystems take)."""
        rel = rel.strip("/")
        return f"{self.root}/{rel}" if rel else self.root

    def uri_of(self, rel: str) -> str:
        return f"{self.scheme}://{self.path(rel)}"

    # -- reads ---------------------------------------------------------------------------
    @contextmanager
    def reading(self, rel: str = "") -> Iterator[None]:
        """A refused or failed read is one clear error naming the place, not an SDK traceback
        (a missing file stays FileNotFoundError for the callers that expect one)."""
        try:
            yield
        except FileNotFoundError:
            self.check_bucket()
            raise
        except BcRayError:
            raise
        except Exception as exc:  # noqa: BLE001 - OSErrors and the SDK's own; the rest re-raised
            if not storage_failure(exc):
                raise
            raise self._access_error("read", rel, exc) from exc

    def _access_error(self, verb: str, rel: str, exc: Exception) -> StorageAccessError:
        hint = (" (check the S3 endpoint and the credentials the AWS SDKs find: AWS_* "
                "variables, AWS_PROFILE, web identity or instance role)"
                if self.scheme == "s3" else "")
        return access_error(f"cannot {verb} {self.uri_of(rel)}: {exc}{hint}", exc)

    def check_bucket(self) -> None:
        """On S3, one clear error when the store's bucket does not exist, instead of a store
        that reads as empty and a traceback at its first write. Asked only after a key was
        found missing, and once per FileIO when the bucket is there.

        Only S3's own answer that the bucket is missing counts: credentials that may use
        objects under a prefix but not HeadBucket (403), or a throttled call, say nothing about
        the bucket, and the missing key stays the caller's answer."""
        if self.scheme != "s3" or self._bucket_seen:
            return
        bucket = self.root.split("/", 1)[0]
        try:
            self.fs.call_s3("head_bucket", Bucket=bucket)
        except FileNotFoundError:
            raise StorageAccessError(
                f"the S3 bucket {bucket!r} of the store {self.uri} does not exist: create it, "
                "or fix the store URI", refused=True) from None
        except Exception:  # noqa: BLE001 - forbidden or unavailable: no verdict on the bucket
            return
        self._bucket_seen = True

    def read_bytes(self, rel: str) -> bytes:
        try:
            with self.reading(rel):
                return self.fs.cat_file(self.path(rel))
        except FileNotFoundError as exc:
            raise NotFoundError(f"no file {self.uri_of(rel)}") from exc

    def exists(self, rel: str) -> bool:
        with self.reading(rel):
            return self.fs.exists(self.path(rel))

    def size(self, rel: str) -> int:
        try:
            with self.reading(rel):
                return int(self.fs.size(self.path(rel)))
        except FileNotFoundError as exc:
            raise NotFoundError(f"no file {self.uri_of(rel)}") from exc

    def list_dir(self, rel: str) -> list[str]:
        """Names (not paths) directly under `rel`; empty when it does not exist."""
        try:
            with self.reading(rel):
                entries = self.fs.ls(self.path(rel), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(os.path.basename(e.rstrip("/")) for e in entries)

    def list_files(self, rel: str) -> dict[str, float | None]:
        """Every file under `rel` (relative path -> modification time, epoch seconds), in one
        recursive listing; empty when it does not exist."""
        try:
            with self.reading(rel):
                files = self.fs.find(self.path(rel), detail=True)
        except FileNotFoundError:
            return {}
        start = len(self.path()) + 1
        return {path[start:]: file_mtime(info) for path, info in files.items()
                if info.get("type", "file") == "file"}

    def modified_time(self, rel: str) -> float | None:
        """Modification time (epoch seconds) of a file, or the newest file under a prefix."""
        try:
            with self.reading(rel):
                files = self.fs.find(self.path(rel), detail=True)
        except FileNotFoundError:
            return None
        times = [file_mtime(info) for info in files.values()]
        times = [t for t in times if t is not None]
        return max(times) if times else None

    # -- writes --------------------------------------------------------------------------
    @contextmanager
    def _writing(self, rel: str) -> Iterator[None]:
        """An S3 put has no parent folder to miss: a FileNotFoundError is a missing bucket."""
        try:
            yield
        except FileNotFoundError as exc:
            self.check_bucket()
            raise StorageAccessError(f"cannot write {self.uri_of(rel)}: {exc}") from exc
        except (FileExistsError, BcRayError):  # put-if-absent's answer, and ours
            raise
        except Exception as exc:  # noqa: BLE001 - OSErrors and the SDK's own; the rest re-raised
            if not storage_failure(exc):
                raise
            raise self._access_error("write", rel, exc) from exc

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file at a path that is new by construction (unique run prefixes); locally it
        is synced to disk before this returns, so a commit naming it survives a power cut."""
        self.write_parts(rel, [data])

    def write_parts(self, rel: str, parts: Sequence[bytes | memoryview]) -> None:
        """`write_bytes` of the parts one after another, never joined in memory (a matrix's
        rows go out from where they are)."""
        if self.scheme == "file":
            target = self.path(rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as handle:
                for part in parts:
                    handle.write(part)
                handle.flush()
                os.fsync(handle.fileno())
            return
        with self._writing(rel):
            if len(parts) == 1 and isinstance(parts[0], (bytes, bytearray)):
                self.fs.pipe_file(self.path(rel), parts[0])  # botocore takes no memoryview
                return
            with self.fs.open(self.path(rel), "wb") as handle:  # uploaded in blocks as they fill
                for part in parts:
                    handle.write(part)

    def sync(self, rel: str) -> None:
        """Flush a local file (written by any writer, Ray Data's included) and its folder entry
        to disk; object stores are durable once a PUT returns."""
        if self.scheme != "file":
            return
        target = self.path(rel)
        descriptor = os.open(target, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        _sync_dir(os.path.dirname(target))

    def create(self, rel: str, data: bytes) -> None:
        """Put-if-absent: raises FileExistsError when the path exists. Readers never see a
        partially written file: local files are linked into place, S3 PUTs are atomic."""
        if self.scheme == "file":
            target, tmp = self._local_temp(rel, data)
            try:
                os.link(tmp, target)
            finally:
                os.unlink(tmp)
            _sync_dir(os.path.dirname(target))  # the new name itself must survive a crash
            return
        with self._writing(rel):
            self.fs.pipe_file(self.path(rel), data, mode="create")

    def replace(self, rel: str, data: bytes) -> None:
        """Overwrite a hint file (never a source of truth): atomic rename locally."""
        if self.scheme == "file":
            target, tmp = self._local_temp(rel, data)
            os.replace(tmp, target)
            return
        with self._writing(rel):
            self.fs.pipe_file(self.path(rel), data)

    def _local_temp(self, rel: str, data: bytes) -> tuple[str, str]:
        """(final path, a fully written and synced temporary file beside it)."""
        target = self.path(rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return target, tmp

    def delete(self, rel: str, recursive: bool = False) -> None:
        try:
            self.fs.rm(self.path(rel), recursive=recursive)
        except FileNotFoundError:
            pass

    # -- bridges to other libraries -----------------------------------------------------------
    def arrow_fs(self) -> pyarrow.fs.FileSystem:
        """A native pyarrow filesystem with the same configuration (for Parquet and Ray Data)."""
        import pyarrow.fs as pafs

        if self.scheme == "file":
            return pafs.LocalFileSystem()
        kwargs: dict = {}
        if self.options.endpoint_url:
            parsed = urlparse(self.options.endpoint_url)
            kwargs["endpoint_override"] = parsed.netloc or parsed.path
            kwargs["scheme"] = parsed.scheme or "https"
        if self.options.key:  # else the AWS SDK's default chain
            kwargs["access_key"] = self.options.key
            kwargs["secret_key"] = self.options.secret
            if self.options.token:
                kwargs["session_token"] = self.options.token
        if self.options.region:
            kwargs["region"] = self.options.region
        return pafs.S3FileSystem(**kwargs)


def access_error(message: str, exc: BaseException) -> StorageAccessError:
    """`exc`, the storage's failure, as one clear error that says whether waiting may cure it
    and whether the store refused."""
    return StorageAccessError(message, temporary=temporary(exc), refused=refused(exc))


def storage_failure(exc: BaseException) -> bool:
    """An OSError, or one of botocore's own errors (no endpoint at the URL, no credentials
    found), which are no OSErrors: s3fs lets them through untranslated."""
    return isinstance(exc, OSError) or type(exc).__module__.startswith("botocore.")


# The network's own failures, and S3's throttling and server errors as s3fs raises them
# (SlowDown, 503: EBUSY; 500: EREMOTEIO); other codes arrive as EIO with the reply as the cause.
TEMPORARY_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.EREMOTEIO,
                              errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
                              errno.ENETUNREACH, errno.EHOSTUNREACH})
TEMPORARY_CODES = frozenset({"RequestTimeout", "SlowDown", "Throttling", "ServiceUnavailable",
                             "InternalError", "ConditionalRequestConflict"})
REFUSALS = ("NoCredentialsError", "PartialCredentialsError", "ProfileNotFound")


def temporary(exc: BaseException) -> bool:
    """Whether waiting may cure a failed call: no connection, a timeout, throttling, a
    conflicting write or a server error (409, 429, 5xx). Anything else (refused or missing
    credentials, a missing profile, a bad certificate, a path that is a file) would fail again
    alike."""
    classes = {cls.__name__ for cls in type(exc).__mro__
               if cls.__module__.startswith("botocore.")}
    if classes:  # no endpoint, a read timeout; never a certificate the client refuses
        return bool(classes & {"ConnectionError", "HTTPClientError"}) and "SSLError" not in classes
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in TEMPORARY_ERRNOS:
        return True
    code, status = _reply(exc.__cause__)
    return code in TEMPORARY_CODES or status in (409, 429) or (status or 0) >= 500


def refused(exc: BaseException) -> bool:
    """Whether the store said no: refused or missing credentials (nothing was written)."""
    return isinstance(exc, PermissionError) or type(exc).__name__ in REFUSALS


def _reply(cause: BaseException | None) -> tuple[str | None, int | None]:
    """S3's error code and HTTP status, where s3fs kept botocore's error as the cause."""
    response = getattr(cause, "response", None)
    if not isinstance(response, dict):
        return None, None
    return (response.get("Error", {}).get("Code"),
            response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def damaged_or_unreachable(exc: Exception, message: str) -> BcRayError:
    """A failed read of a file the log names: the storage's failure (refused, or one waiting
    may cure) is not the file's damage (pyarrow's OSError for a broken footer is)."""
    if isinstance(exc, StorageAccessError):
        return exc
    if temporary(exc) or refused(exc) or (storage_failure(exc) and not isinstance(exc, OSError)):
        return access_error(message, exc)
    return CorruptFileError(message)


def _sync_dir(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def file_mtime(info: dict) -> float | None:
    """A listed file's modification time, epoch seconds (mtime locally, LastModified on S3)."""
    value = info.get("mtime") or info.get("LastModified") or info.get("created")
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)
