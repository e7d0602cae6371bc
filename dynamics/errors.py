"""Errors caused by what a user gave us (a config, a data file, a store), and by the file system.

The command line prints a :class:`DynamicsError` as one line. It exits with status 2 for a bad input
(a config key, a data file, a damaged or foreign store) and with status 1 for a :class:`StoreIOError`
— the file system refused a read or write (a full disk, a read-only file system, missing permission,
an I/O error), whose message names the path and the errno — as for any other ``OSError``
(:func:`exit_status`). Library callers catch them as the ``ValueError`` they also are.
"""

import errno as _errno

#: errno values of a store or folder that cannot be written at all (as opposed to a full disk)
NOT_WRITABLE = (_errno.EROFS, _errno.EACCES, _errno.EPERM)


class DynamicsError(Exception):
    """Base class of every error that a user's input caused."""


class ConfigError(DynamicsError, ValueError):
    """A config or preset key, type or value that cannot be used."""


class DataError(DynamicsError, ValueError):
    """A data file that is missing or malformed; the message says which file and what was expected."""


class StoreError(DynamicsError, ValueError):
    """A run store that cannot be opened or appended to (foreign schema, not a store, bad step)."""


class StoreLockedError(StoreError):
    """Another writer holds the store's lock file."""


class StoreIOError(StoreError):
    """The file system refused to read or write a store or an output (a full disk, a read-only file
    system, missing permission, an I/O error); the message names the path and the errno."""

    def __init__(self, message: str, errno: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.errno, self.reason = errno, reason or message


class StoreReadOnlyError(StoreIOError):
    """A store or folder that cannot be written: a read-only file system or no write permission
    (errno EROFS, EACCES or EPERM). Readers analyse such a store in memory instead."""


def io_error(what: str, err: OSError) -> StoreIOError:
    """The error for an ``OSError`` ``err`` met while doing ``what`` ("cannot write the analysis of
    store X"): :class:`StoreReadOnlyError` for a store that cannot be written, else
    :class:`StoreIOError`; the message names the file (``err.filename``), the reason and the errno."""
    code = _errno.errorcode.get(err.errno, err.errno) if err.errno else type(err).__name__
    where = f"{err.filename}: " if err.filename else ""
    cls = StoreReadOnlyError if err.errno in NOT_WRITABLE else StoreIOError
    reason = f"{err.strerror or err} ({code})"
    return cls(f"{what}: {where}{reason}", err.errno, reason)


#: errno values of a file system that failed (as opposed to a path the user got wrong: ENOENT, ENOTDIR)
FILE_SYSTEM_FAILURES = (*NOT_WRITABLE, _errno.ENOSPC, _errno.EDQUOT, _errno.EIO, _errno.EFBIG, _errno.EMFILE,
                        _errno.ENFILE, _errno.ENOMEM)


def exit_status(error: BaseException) -> int:
    """The command line's exit status for ``error``: 1 when the file system failed — an OSError that
    reached the command line, a StoreIOError, or a DynamicsError raised from an OSError whose errno is
    one of :data:`FILE_SYSTEM_FAILURES` (a full disk, a read-only file system, no permission, an I/O
    error) — and 2 for any other DynamicsError (a bad input: a config, a data file that is missing or
    malformed, a damaged store)."""
    if isinstance(error, (OSError, StoreIOError)):
        return 1
    cause = error.__cause__
    return 1 if isinstance(cause, OSError) and cause.errno in FILE_SYSTEM_FAILURES else 2


class StaleAnalysisWarning(UserWarning):
    """A stored analysis was computed from other data than the store now holds, and was left out."""


class NotWrittenWarning(UserWarning):
    """A result was computed but could not be stored where it belongs (a read-only store or folder);
    it is returned in memory."""
