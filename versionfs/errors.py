"""The one error hierarchy of versionfs.

Every error a user can cause or meet is a ``VfsError`` subclass whose message says
what is wrong and what to do. Each class carries an exit code (used only by the CLI)
and an errno (used only by the FUSE adapter). Programming errors are deliberately
*not* ``VfsError``: they must surface as tracebacks, not as polite messages.
Thread-safe: the classes hold no shared state.
"""

from __future__ import annotations

import errno as _errno


class VfsError(Exception):
    """Base of every expected versionfs failure."""

    exit_code = 1
    errno = _errno.EIO

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(VfsError):
    """The command was called wrongly (bad option value, bad argument)."""

    exit_code = 2
    errno = _errno.EINVAL


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


class Conflict(VfsError):
    """An operation would overwrite uncommitted changes."""

    exit_code = 7
    errno = _errno.EBUSY


class FileChanged(VfsError):
    """A file changed while it was being read, so its bytes cannot be trusted."""

    exit_code = 8
    errno = _errno.EAGAIN


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

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.errno = code


class MountError(VfsError):
    """A FUSE mount could not be started, checked or stopped."""

    exit_code = 12
    errno = _errno.EIO


def from_oserror(exc: OSError, doing: str) -> VfsError:
    """Turn an ``OSError`` met while ``doing`` something into the matching VfsError.

    ``doing`` reads as a phrase: "reading data/x.csv". Errors with no specific
    class keep their strerror so the message stays precise.
    """
    where = f"{doing}: {exc.strerror or exc}"
    if exc.errno == _errno.ENOSPC or exc.errno == _errno.EDQUOT:
        return StorageFull(f"no space left while {where}; free some space and retry")
    if exc.errno in (_errno.EACCES, _errno.EPERM):
        return AccessDenied(f"permission denied while {where}; check the file's permissions")
    if exc.errno == _errno.ENOENT:
        return PathNotFound(f"not found while {where}")
    if exc.errno == _errno.EROFS:
        return AccessDenied(f"read-only filesystem while {where}")
    err = VfsError(f"error while {where}")
    err.errno = exc.errno or _errno.EIO
    return err
