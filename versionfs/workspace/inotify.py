"""Linux inotify through ctypes on libc: an instance, its watches, its events.

No third-party binding: the three system calls (``inotify_init1``,
``inotify_add_watch``, ``inotify_rm_watch``) are called through ``ctypes`` and the
events are parsed from ``os.read`` with ``struct``; that is all the change journal
needs, and the libraries that wrap it add threads or polling loops we do not want.
The constants are those of ``<sys/inotify.h>`` (stable kernel ABI).

The kernel queues an event in the system call that made the change, before that call
returns, so a process that reads the instance until it would block has seen every
change completed before it started reading. It drops events only when the queue holds
``/proc/sys/fs/inotify/max_queued_events`` of them: then it queues one ``Q_OVERFLOW``
(wd -1) instead.

Thread-safety: an ``Inotify`` belongs to one thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Iterator

MODIFY = 0x00000002
ATTRIB = 0x00000004
CLOSE_WRITE = 0x00000008
MOVED_FROM = 0x00000040
MOVED_TO = 0x00000080
CREATE = 0x00000100
DELETE = 0x00000200
DELETE_SELF = 0x00000400
MOVE_SELF = 0x00000800
UNMOUNT = 0x00002000
Q_OVERFLOW = 0x00004000
IGNORED = 0x00008000
ONLYDIR = 0x01000000
DONT_FOLLOW = 0x02000000
EXCL_UNLINK = 0x04000000
ISDIR = 0x40000000

# What a directory watch asks for: every change to the directory's entries, to the
# content and metadata of its files, and to the directory itself.
DIR_EVENTS = (MODIFY | ATTRIB | CLOSE_WRITE | MOVED_FROM | MOVED_TO | CREATE | DELETE
              | DELETE_SELF | MOVE_SELF)
DIR_MASK = DIR_EVENTS | ONLYDIR | DONT_FOLLOW | EXCL_UNLINK

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)
# One read takes what is queued, up to this much (a 16,384-event queue of short
# names is about 512 KiB).
READ_SIZE = 1 << 20


def _libc():
    lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    lib.inotify_init1.argtypes = [ctypes.c_int]
    lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return lib


_LIBC = None


class Inotify:
    """One inotify instance, non-blocking and close-on-exec."""

    def __init__(self):
        global _LIBC
        if _LIBC is None:
            _LIBC = _libc()
        self._lib = _LIBC
        fd = self._lib.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd

    def add_watch(self, path: bytes, mask: int = DIR_MASK) -> int:
        """The watch descriptor of directory ``path`` (the same one again for a
        directory already watched). Raises ``OSError`` (ENOSPC: the user's
        ``max_user_watches`` is reached; ENOTDIR, ENOENT: it is no longer a
        directory; EACCES)."""
        wd = self._lib.inotify_add_watch(self.fd, path, mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fsdecode(path))
        return wd

    def rm_watch(self, wd: int) -> None:
        """Remove a watch; one the kernel removed already (EINVAL) is no error."""
        if self._lib.inotify_rm_watch(self.fd, wd) < 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL:
                raise OSError(err, f"inotify_rm_watch: {os.strerror(err)}")

    def read(self) -> bytes:
        """What is queued (b"" when nothing is)."""
        try:
            return os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def events(buf: bytes) -> Iterator[tuple[int, int, bytes]]:
    """``(wd, mask, name)`` for each event in ``buf`` (name b"" for an event about
    the watched directory itself)."""
    off = 0
    end = len(buf)
    unpack = _HEADER.unpack_from
    size = _HEADER.size
    while off < end:
        wd, mask, _cookie, n = unpack(buf, off)
        off += size
        name = buf[off:off + n].rstrip(b"\0") if n else b""
        off += n
        yield wd, mask, name
