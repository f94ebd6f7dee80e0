"""Every error bc_ray raises on purpose: catch `BcRayError` for all of them.

Messages say what was wrong, where (file, column, row, version, field) and what to do. Keep
"commit conflict, retry" (`CommitConflictError`) apart from "commit state unknown"
(`CommitStateUnknownError`), as table formats do: the first is safe to retry, the second is not.

A command's exit status tells a scheduler whether to try it again (`exit_status`):
`EXIT_REPEATS` for an error the same command would meet again (its input, its settings, what the
store holds), `EXIT_TEMPORARY` (sysexits' EX_TEMPFAIL) for one a later try may not meet.
"""

from __future__ import annotations


class BcRayError(Exception):
    """Base class of all bc_ray errors. `temporary`: whether a later try of the same command
    may pass (`exit_status`)."""

    temporary: bool = False


class DataError(BcRayError):
    """Input data is malformed: names the file, the column and the row where known."""

    def __init__(self, message: str, *, path: str | None = None, column: str | None = None,
                 row: int | None = None) -> None:
        where = ", ".join(
            part for part in (
                f"file {path}" if path else "",
                f"column {column!r}" if column else "",
                f"row {row}" if row is not None else "",
            ) if part
        )
        super().__init__(f"{message} ({where})" if where else message)
        self.path, self.column, self.row = path, column, row


class ConfigError(BcRayError):
    """A configuration value (version spec, method name, CLI option) cannot be used."""


class FamilyNotFoundError(ConfigError):
    """A model family that is not installed here, or whose module fails to import."""


class StoreError(BcRayError):
    """The store is missing something, or holds something it should not."""


class NotFoundError(StoreError):
    """A version, snapshot or table asked for does not exist in the store."""


class UnmirrorableError(StoreError):
    """The store's tables cannot be shown as its one Delta table (user and item ids of different
    types): no retry helps, only another way to read them."""


class StorageAccessError(StoreError):
    """The object store refused or failed a read (credentials, permissions, endpoint).

    `temporary` where waiting may help: no connection, a timeout, throttling (`io.temporary`);
    `refused` where the store said no (a missing bucket, refused or missing credentials): a
    write it refused did not land."""

    def __init__(self, message: str, *, temporary: bool = False, refused: bool = False) -> None:
        super().__init__(message)
        self.temporary, self.refused = temporary, refused


class LogEntryError(StoreError):
    """A log entry readers cannot take (malformed, of an unknown type, contradicting the state
    before it): the message names the entry, so a reader re-raises it as it is."""


class UnappliableSettingError(LogEntryError):
    """A recorded store setting no process can apply (an older writer let it through): readers
    skip it with a warning, writers never commit one."""


class CorruptFileError(StoreError):
    """A file listed by the log is missing, truncated, or fails its checksum."""


class CommitConflictError(StoreError):
    """Another writer committed this log entry number first; re-read the state and retry."""

    temporary = True


class CommitStateUnknownError(StoreError):
    """The commit may or may not have landed (e.g. a network error during the write); re-read."""

    temporary = True


class StaleInputError(StoreError):
    """What a command computed against changed under it (another writer published first):
    running the command again may pass; retrying only its commit cannot."""

    temporary = True


class UnsafeStoreError(StoreError):
    """The object store does not honour put-if-absent, so commits cannot be made atomic."""


class LeaseHeldError(BcRayError):
    """Another scheduler holds the run lease."""

    temporary = True


class TrainingError(BcRayError):
    """Training cannot start or went wrong (diverging loss, NaN inputs)."""


class PlacementError(BcRayError):
    """The cluster cannot place a job's workers or tasks: at once where no autoscaler runs, or
    autoscaler v2 reports that no node type can (the same command meets it again); after
    `--placement-timeout` where one runs (capacity may come later)."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


class ShapeError(BcRayError):
    """Embedding and transform dimensions do not match."""


EXIT_REPEATS = 2
EXIT_TEMPORARY = 75


def exit_status(exc: BcRayError) -> int:
    """Raised in a Ray task, `exc` is Ray's wrapper of it: the error itself says (`cause`)."""
    cause = getattr(exc, "cause", None)
    return EXIT_TEMPORARY if (cause if isinstance(cause, BcRayError) else exc).temporary \
        else EXIT_REPEATS
