"""pyfuse3 ``Operations`` over a ``View``: translate inodes, attributes and errno.

Nothing here decides what the filesystem contains; ``view`` does. Every handler is
wrapped once: a ``VfsError`` becomes ``FUSEError(its errno)``; any other exception is
logged with its traceback and answered with EIO, so one bug never takes the mount
down. Every write-type request answers EROFS. Loading whole chunks (pread and
BLAKE3) and large unhashed reads run on worker threads under a ``CapacityLimiter``;
cached chunks, small ranges that need no hashing and metadata requests are
answered on the trio thread (memory, short LMDB reads, one small pread). An open
by a process of an observed run is recorded (``view.Tracking``) before it is answered.

Thread-safety: one instance serves one mount, on that mount's trio loop.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat

import pyfuse3
import trio

from ..errors import VfsError
from ..view import Attr, Tracking, View

log = logging.getLogger("versionfs.fuse")

# Content is immutable, so the kernel may keep names and attributes "forever";
# names that follow moving refs (HEAD/, tags/...) are rechecked every second.
STABLE_TIMEOUT = 24 * 3600.0
MOVING_TIMEOUT = 1.0
BLOCK_SIZE = 1 << 20   # st_blksize: invites readers to ask for large reads
INLINE_PREAD = 64 << 10  # reads up to this size that need no hashing skip the thread
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC | os.O_CREAT


def _translated(fn):
    """Answer ``VfsError`` with its errno and anything unexpected with EIO."""

    @functools.wraps(fn)
    async def handler(self, *args):
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except VfsError as exc:
            # EIO means damaged or missing data: worth the log; ENOENT and the
            # like are everyday answers
            level = logging.ERROR if exc.errno == errno.EIO else logging.DEBUG
            log.log(level, "%s%r: %s", fn.__name__, args[:2], exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except Exception:
            log.exception("unexpected error in %s%r; answered EIO", fn.__name__, args[:2])
            raise pyfuse3.FUSEError(errno.EIO) from None

    return handler


def _read_only(fn):
    """A write-type request: always EROFS."""

    @functools.wraps(fn)
    async def handler(self, *args):
        raise pyfuse3.FUSEError(errno.EROFS)

    return handler


class Operations(pyfuse3.Operations):
    """The read-only filesystem of one ``View``."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, view: View, *, read_threads: int = 8,
                 tracking: Tracking | None = None):
        super().__init__()
        self.view = view
        self.limiter = trio.CapacityLimiter(read_threads)
        self.uid, self.gid = os.getuid(), os.getgid()
        self.tracking = tracking if tracking is not None else Tracking(view)
        self._trackers = self.tracking.trackers  # the same dict: empty unless observed

    def entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = attr.ino
        e.generation = 0
        e.entry_timeout = e.attr_timeout = STABLE_TIMEOUT if attr.stable else MOVING_TIMEOUT
        e.st_mode = attr.mode
        e.st_nlink = attr.nlink
        e.st_uid, e.st_gid = self.uid, self.gid
        e.st_rdev = 0
        e.st_size = attr.size
        e.st_blksize = BLOCK_SIZE
        e.st_blocks = attr.blocks
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = attr.mtime_ns
        return e

    # -- names and attributes --------------------------------------------------
    @_translated
    async def lookup(self, parent_inode, name, ctx=None):
        return self.entry(self.view.lookup(parent_inode, name))

    @_translated
    async def getattr(self, inode, ctx=None):
        return self.entry(self.view.getattr(inode))

    async def forget(self, inode_list):
        try:  # must never raise: it answers no request
            self.view.forget(inode_list)
        except Exception:
            log.exception("unexpected error in forget")

    @_translated
    async def opendir(self, inode, ctx=None):
        if not stat.S_ISDIR(self.view.getattr(inode).mode):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    @_translated
    async def readdir(self, fh, start_id, token):
        # readdir_reply copies the attributes, so one object serves every entry
        e = self.entry(Attr(0, 0, 0, 0, 1, 0))
        reply = pyfuse3.readdir_reply
        for name, attr, next_offset in self.view.readdir(fh, start_id):
            e.st_ino, e.st_mode, e.st_size, e.st_nlink, e.st_blocks = \
                attr.ino, attr.mode, attr.size, attr.nlink, attr.blocks
            e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = attr.mtime_ns
            e.entry_timeout = e.attr_timeout = STABLE_TIMEOUT if attr.stable \
                else MOVING_TIMEOUT
            if not reply(token, name, e, next_offset):
                if name not in (b".", b".."):
                    self.view.forget([(attr.ino, 1)])  # the kernel did not take it
                break

    @_translated
    async def releasedir(self, fh):
        pass

    @_translated
    async def readlink(self, inode, ctx=None):
        return self.view.readlink(inode)

    @_translated
    async def statfs(self, ctx=None):
        st = self.view.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = st.block_size
        out.f_blocks = st.blocks
        out.f_bfree = out.f_bavail = 0
        out.f_files = st.files
        out.f_ffree = out.f_favail = 0
        out.f_namemax = st.name_max
        return out

    @_translated
    async def getxattr(self, inode, name, ctx=None):
        return self.view.getxattr(inode, name)

    @_translated
    async def listxattr(self, inode, ctx=None):
        return self.view.listxattr(inode)

    # -- file contents ---------------------------------------------------------
    @_translated
    async def open(self, inode, flags, ctx=None):
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        # keep_cache: the bytes of an inode never change, so the page cache
        # filled by one open serves every later open at native speed.
        fh = self.view.open(inode)
        if self._trackers:
            # at open, not read: a page-cached file is read without any request
            self.tracking.record(ctx.pid, inode)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @_translated
    async def read(self, fh, off, size):
        # Cached chunks are answered here, and so are small ranges that need no
        # hashing (--verify=off, or a chunk verified before): a 4 KiB pread costs
        # less than the two thread wake-ups of a hop (~300 µs measured on a busy
        # 2-vCPU machine). Whole-chunk loads and large preads cost a thread hop.
        data = self.view.read(fh, off, size, load=False, pread=size <= INLINE_PREAD)
        if data is None:
            data = await trio.to_thread.run_sync(self.view.read, fh, off, size,
                                                 limiter=self.limiter)
        return data

    @_translated
    async def flush(self, fh):
        pass

    @_translated
    async def fsync(self, fh, datasync):
        pass  # nothing is ever dirty

    @_translated
    async def release(self, fh):
        self.view.release(fh)

    # -- everything that would write ---------------------------------------------
    setattr = _read_only(pyfuse3.Operations.setattr)
    mknod = _read_only(pyfuse3.Operations.mknod)
    mkdir = _read_only(pyfuse3.Operations.mkdir)
    unlink = _read_only(pyfuse3.Operations.unlink)
    rmdir = _read_only(pyfuse3.Operations.rmdir)
    symlink = _read_only(pyfuse3.Operations.symlink)
    rename = _read_only(pyfuse3.Operations.rename)
    link = _read_only(pyfuse3.Operations.link)
    create = _read_only(pyfuse3.Operations.create)
    write = _read_only(pyfuse3.Operations.write)
    setxattr = _read_only(pyfuse3.Operations.setxattr)
    removexattr = _read_only(pyfuse3.Operations.removexattr)
