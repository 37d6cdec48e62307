"""The one error hierarchy of versionfs.

Every error a user can cause or meet is a ``VfsError`` subclass whose message says
what is wrong and what to do. Each class carries an exit code (used only by the CLI)
and an errno (used only by the FUSE adapter). Programming errors are deliberately
*not* ``VfsError``: they must surface as tracebacks, not as polite messages.

Besides the one-line message an error may carry structured fields for programs:
``op`` (the operation, e.g. ``"snapshot"``), ``path``, ``object_id`` (hex),
``cause`` (the underlying exception) and ``retryable`` (whether trying the same thing
again may succeed: True for ``LockBusy``, ``FileChanged``, ``RefChanged``,
``RemoteUnavailable`` and ``RemoteBusy``).
``to_dict()`` gives them all as JSON-ready values.
Thread-safe: the classes hold no shared state.
"""

from __future__ import annotations

import errno as _errno
import os


class VfsError(Exception):
    """Base of every expected versionfs failure.

    ``retryable`` is a class default that one error may override (``retryable=``).
    ``object_id`` accepts raw id bytes or hex and is kept as hex.
    """

    exit_code = 1
    errno = _errno.EIO
    retryable = False
    filename: str | bytes | None = None  # set by ``from_oserror``

    def __init__(self, message: str, *, op: str | None = None, path: str | None = None,
                 object_id: bytes | str | None = None, cause: BaseException | None = None,
                 retryable: bool | None = None):
        super().__init__(message)
        self.message = message
        self.op = op
        self.path = path
        self.object_id = object_id.hex() if isinstance(object_id, (bytes, bytearray)) \
            else object_id
        self.cause = cause
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        """The error as JSON-ready values (``cause`` as its type and text)."""
        cause = self.cause
        return {
            "error": type(self).__name__, "message": self.message,
            "exit_code": self.exit_code, "errno": self.errno, "retryable": self.retryable,
            "op": self.op, "path": self.path, "object_id": self.object_id,
            "cause": None if cause is None else f"{type(cause).__name__}: {cause}",
        }


class UsageError(VfsError):
    """The command was called wrongly (bad option value, bad argument)."""

    exit_code = 2
    errno = _errno.EINVAL


class RunFailed(VfsError):
    """A run's command succeeded but the run could not be completed (a declared
    output or metrics file missing or unreadable); it is recorded as failed."""

    exit_code = 1


class Interrupted(VfsError):
    """A run (or ``vfs repro``) stopped by SIGINT, SIGTERM or SIGHUP; recorded as
    interrupted, nothing committed."""

    exit_code = 130


class PipelineInvalid(UsageError):
    """``vfs.yaml`` (or a Python stage module) declares a pipeline that cannot run:
    an unknown key, a missing command, a cycle, an output claimed twice, a missing
    input. The message names the stage."""


class NotARepository(VfsError):
    """No versionfs repository at or above the given path."""

    exit_code = 3
    errno = _errno.ENOENT


class UnsupportedFormat(VfsError):
    """The repository was written by an unknown (newer) format version."""

    exit_code = 3
    errno = _errno.EIO


class RepositoryExists(VfsError):
    """``init`` found a repository already there."""

    exit_code = 3
    errno = _errno.EEXIST


class UnknownRevision(VfsError):
    """A revision name matched no commit, tag or branch."""

    exit_code = 4
    errno = _errno.ENOENT


class AmbiguousRevision(VfsError):
    """An abbreviated commit id matched more than one commit."""

    exit_code = 4
    errno = _errno.ENOENT


class PathNotFound(VfsError):
    """A path does not exist in a commit or in the workspace."""

    exit_code = 5
    errno = _errno.ENOENT


class NotADirectory(VfsError):
    """A path names a file where a directory was needed."""

    exit_code = 5
    errno = _errno.ENOTDIR


class IsADirectory(VfsError):
    """A path names a directory where a file was needed."""

    exit_code = 5
    errno = _errno.EISDIR


class LockBusy(VfsError):
    """Another process holds the repository's write lock."""

    exit_code = 6
    errno = _errno.EBUSY
    retryable = True


class RefChanged(VfsError):
    """A ref or HEAD no longer holds the value the operation read before changing it
    (a writer that ignored the lock moved it); nothing was changed, so a retry may work."""

    exit_code = 6
    errno = _errno.EAGAIN
    retryable = True


class Conflict(VfsError):
    """An operation would overwrite uncommitted changes."""

    exit_code = 7
    errno = _errno.EBUSY


class FileChanged(VfsError):
    """A file changed while it was being read, so its bytes cannot be trusted."""

    exit_code = 8
    errno = _errno.EAGAIN
    retryable = True


class CorruptObject(VfsError):
    """Stored data does not match its id, or a record cannot be decoded."""

    exit_code = 9
    errno = _errno.EIO


class MissingObject(VfsError):
    """A record or blob that a commit references is absent."""

    exit_code = 9
    errno = _errno.EIO


class StorageFull(VfsError):
    """The filesystem holding the repository or workspace ran out of space."""

    exit_code = 10
    errno = _errno.ENOSPC


class AccessDenied(VfsError):
    """Permission was denied on a file the operation needed."""

    exit_code = 11
    errno = _errno.EACCES


class NoSuchAttribute(VfsError):
    """An extended attribute does not exist on this file (ENODATA), or its namespace
    is not supported here (EOPNOTSUPP, passed as ``code``)."""

    exit_code = 5
    errno = _errno.ENODATA

    def __init__(self, message: str, code: int | None = None, **fields):
        super().__init__(message, **fields)
        if code is not None:
            self.errno = code


class MountError(VfsError):
    """A FUSE mount could not be started, checked or stopped."""

    exit_code = 12
    errno = _errno.EIO


class RepositoryDamaged(VfsError):
    """``vfs fsck`` found problems (listed before this message)."""

    exit_code = 1


class RemoteError(VfsError):
    """A remote (object storage reached through fsspec) failed in a way no subclass
    names; the message keeps the store's own reason."""

    exit_code = 13
    errno = _errno.EIO


class RemoteUnavailable(RemoteError):
    """The remote could not be reached: transient failures (connection, timeout,
    HTTP 5xx, throttling) persisted through every retry."""

    exit_code = 13
    errno = _errno.EIO
    retryable = True


class RemoteMissing(RemoteError):
    """An object the operation needs is absent on the remote."""

    exit_code = 9
    errno = _errno.EIO


class RemoteCorrupt(RemoteError):
    """A remote object is truncated, or its bytes do not match their name or hash."""

    exit_code = 9
    errno = _errno.EIO


class RemoteBusy(RemoteError):
    """Another process holds the remote's lock object (stores that ignore conditional
    writes serialise ref updates with it)."""

    exit_code = 6
    errno = _errno.EBUSY
    retryable = True


class RemoteAuth(RemoteError):
    """The remote refused the credentials (HTTP 401/403, a bad key or signature), or
    a directory remote refused permission."""

    exit_code = 11
    errno = _errno.EACCES


class RemoteInvalid(RemoteError):
    """A remote URL cannot be used: malformed, an unknown protocol, the fsspec
    implementation for it not installed, or its bucket does not exist."""

    exit_code = 2
    errno = _errno.EINVAL


class RemoteRejected(RemoteError):
    """A push that would drop commits the remote has (not a fast-forward), or move
    a tag."""

    exit_code = 7
    errno = _errno.EBUSY


def from_oserror(exc: OSError, doing: str, *, op: str | None = None) -> VfsError:
    """Turn an ``OSError`` met while ``doing`` something into the matching VfsError.

    ``doing`` reads as a phrase: "reading data/x.csv". Errors with no specific
    class keep their strerror so the message stays precise. The result keeps the
    OSError's ``errno`` and ``filename`` (also as ``path``) and the OSError as ``cause``.
    """
    where = f"{doing}: {exc.strerror or exc}"
    if exc.errno == _errno.ENOSPC or exc.errno == _errno.EDQUOT:
        cls, text = StorageFull, f"no space left while {where}; free some space and retry"
    elif exc.errno in (_errno.EACCES, _errno.EPERM):
        cls, text = AccessDenied, \
            f"permission denied while {where}; check the file's permissions"
    elif exc.errno == _errno.ENOENT:
        cls, text = PathNotFound, f"not found while {where}"
    elif exc.errno == _errno.EROFS:
        cls, text = AccessDenied, f"read-only filesystem while {where}"
    else:
        cls, text = VfsError, f"error while {where}"
    filename = exc.filename
    path = os.fsdecode(filename) if isinstance(filename, (str, bytes)) else None
    err = cls(text, op=op, path=path, cause=exc)
    if exc.errno:
        err.errno = exc.errno
    err.filename = filename
    return err
