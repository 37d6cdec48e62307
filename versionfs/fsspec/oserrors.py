"""versionfs errors as the builtin ``OSError`` classes fsspec callers expect.

fsspec's convention is that callers never import a library's exceptions: a missing
path is a ``FileNotFoundError``, a directory opened as a file an
``IsADirectoryError``, and so on. ``translated`` turns a ``VfsError`` into the
``OSError`` subclass of its errno, made as Python makes its own
(``FileNotFoundError(errno, message)``: ``str`` is ``[Errno 2] <the one-line
message>``, ``strerror`` the message itself), the ``VfsError`` kept as ``__cause__``
and as ``vfs_error``. Thread-safe: no state.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from ..errors import VfsError

_CLASSES: dict[int, type[OSError]] = {
    errno.ENOENT: FileNotFoundError,
    errno.EISDIR: IsADirectoryError,
    errno.ENOTDIR: NotADirectoryError,
    errno.EACCES: PermissionError,
    errno.EPERM: PermissionError,
    errno.EROFS: PermissionError,
    errno.EEXIST: FileExistsError,
}

READ_ONLY = "versionfs:// is read-only; open files with mode 'rb'"


def to_oserror(exc: VfsError) -> OSError:
    """The builtin ``OSError`` (subclass) for ``exc``, carrying its message."""
    code = exc.errno or errno.EIO
    err = _CLASSES.get(code, OSError)(code, exc.message)
    err.vfs_error = exc
    return err


def read_only() -> PermissionError:
    """What every write to a ``versionfs://`` filesystem raises."""
    return PermissionError(errno.EROFS, READ_ONLY)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise a ``VfsError`` met in the block as its ``OSError``."""
    try:
        yield
    except VfsError as exc:
        raise to_oserror(exc) from exc
