"""pyfuse3 ``Operations`` over a ``View``: translate inodes, attributes and errno.

Nothing here decides what the filesystem contains; ``view`` does. Every handler is
wrapped once: a ``VfsError`` becomes ``FUSEError(its errno)``; any other exception is
logged with its traceback and answered with EIO, so one bug never takes the mount
down. Every write-type request answers EROFS. Loading whole chunks (pread and
BLAKE3) and large unhashed reads run on worker threads under a ``CapacityLimiter``;
cached chunks, small ranges that need no hashing and metadata requests are
answered on the trio thread (memory, short LMDB reads, one small pread). An open
by a process of an observed run is recorded (``view.Tracking``) before it is answered.

Listing a commit's directory reads its packed tree's columns (``view.tables``)
and counts lookups a batch at a time; with pyfuse3 as scripts/setup.sh builds it
(third_party/pyfuse3), the kernel also keeps each listing (a commit never
changes), and files go by name only while the walker does not stat them
(``ListingPolicy``). The all-versions view's own directories take the general,
slower path.

Thread-safety: one instance serves one mount, on that mount's trio loop.
"""

from __future__ import annotations

import errno
import functools
import inspect
import itertools
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
LIST_BATCH = 256  # entries counted at a time; those the kernel did not take are forgotten
# pyfuse3 as scripts/setup.sh builds it (third_party/pyfuse3) lets opendir ask the
# kernel to cache a listing (FOPEN_CACHE_DIR), and readdir_reply send an entry
# without attributes (lookup=False); the stock one can do neither. VFS_STOCK_PYFUSE3=1
# in the daemon's environment serves as if it were stock (to measure the difference).
_STOCK = os.environ.get("VFS_STOCK_PYFUSE3", "") not in ("", "0")
CACHE_READDIR = not _STOCK and hasattr(pyfuse3.FileInfo, "cache_readdir")
READDIR_NAMES = not _STOCK and "lookup" in inspect.signature(pyfuse3.readdir_reply).parameters
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


def _invalidate(inodes) -> None:
    """Make the kernel drop what it cached of these directories (their listings)."""
    for ino in inodes:
        try:
            pyfuse3.invalidate_inode(ino)
        except OSError:  # ENOENT: the kernel has forgotten it already
            pass


class ListingPolicy:
    """Whether a commit directory's files are listed with their attributes or by
    name only. With attributes (readdirplus) the kernel makes an inode and a
    dentry for every entry, which costs more than everything else a first listing
    does (about 4 s of kernel time for a million files); by name only, ``find``
    and ``os.walk`` list a million files in about a second, but each file then
    stat-ed or opened costs a lookup request (~40 µs).

    So listings start by name, and a walker that looks up files in directories
    listed by name (``ls -l``, ``du``, ``rsync``) turns attributes on after
    ``SWITCH_LOOKUPS`` such lookups; the kernel is then told to drop the listings
    it cached by name, so that they come back with attributes when read again.
    With attributes on, the first ``PROBE_ENTRIES`` entries of one listing in
    every ``PROBE_AFTER`` entries go by name as a probe: if fewer than
    ``PROBE_HITS`` of its files (or all of them, when fewer) are looked up before
    the next listing starts, the walker does not stat, and names come back.
    Directories always go with attributes (a walk descends into them anyway).
    Only speed depends on this: every name, inode number, type and attribute a
    process sees is the same either way. Not thread-safe: the trio thread only.
    """

    SWITCH_LOOKUPS = 64
    PROBE_AFTER = 1 << 15
    PROBE_ENTRIES = 32
    PROBE_HITS = 8
    MAX_NAMED = 1 << 16  # directories remembered as listed by name (the oldest go)

    def __init__(self, invalidate, *, names: bool = True):
        self.enabled = names     # False: always with attributes (pyfuse3 unpatched)
        self.names = names       # list files by name now
        # directory → how many of its first entries went by name
        self.named: dict[int, int] = {}
        self.lookups = 0         # file lookups in those directories
        self._mark = 0           # ``lookups`` when names began, or when the probe did
        self._probe: tuple[int, int] | None = None  # (directory, files it named)
        self._listed = 0         # entries listed with attributes since the last probe
        self._invalidate = invalidate

    def start(self, ino: int, tree) -> None:
        """The kernel starts listing directory ``ino`` (``tree``): decide how."""
        if not self.enabled:
            return
        if self._probe is not None:
            probe, files = self._probe
            self._probe = None
            if self.lookups - self._mark < min(self.PROBE_HITS, files):
                self.names = True  # the walker did not stat the probe's files
                self._mark = self.lookups
            else:
                self.named.pop(probe, None)
        n = len(tree)
        if self.names:
            self._name(ino, n)
            return
        self._listed += n
        if self._listed >= self.PROBE_AFTER:
            files = sum(1 for ino_ in tree.inos[:self.PROBE_ENTRIES] if ino_)
            if files:
                self._listed = 0
                self._probe = (ino, files)
                self._mark = self.lookups
                self._name(ino, self.PROBE_ENTRIES)

    def _name(self, ino: int, entries: int) -> None:
        self.named[ino] = entries
        if len(self.named) > self.MAX_NAMED:
            del self.named[next(iter(self.named))]

    def file_lookup(self) -> None:
        """A file of a directory in ``named`` was looked up."""
        self.lookups += 1
        if self.names and self.lookups - self._mark >= self.SWITCH_LOOKUPS:
            self.names = False
            self._listed = 0
            named, self.named = self.named, {}
            self._invalidate(named)


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
        # what every entry of a commit's directory shares, set once
        self._listed = self.entry(Attr(0, 0, 0, 0, 1, 0))
        self._bare = self.entry(Attr(0, 0, 0, 0, 1, 0))  # for entries listed by name
        self.listing = ListingPolicy(_invalidate, names=READDIR_NAMES)

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
        attr = self.view.lookup(parent_inode, name)
        if parent_inode in self.listing.named and not stat.S_ISDIR(attr.mode):
            self.listing.file_lookup()
        return self.entry(attr)

    @_translated
    async def getattr(self, inode, ctx=None):
        return self.entry(self.view.getattr(inode))

    async def forget(self, inode_list):
        try:  # must never raise: it answers no request
            stale = self.view.forget(inode_list)
            if stale and CACHE_READDIR:
                # their cached listings name a directory inode that is gone
                _invalidate(stale)
        except Exception:
            log.exception("unexpected error in forget")

    @_translated
    async def opendir(self, inode, ctx=None):
        if not stat.S_ISDIR(self.view.getattr(inode).mode):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if CACHE_READDIR and self.view.fixed_listing(inode):
            # a commit's directory never changes: the kernel may keep its listing
            return pyfuse3.FileInfo(fh=inode, keep_cache=True, cache_readdir=True)
        return inode

    @_translated
    async def readdir(self, fh, start_id, token):
        tree = self.view.listing(fh)
        if tree is None or start_id < 2:
            # the all-versions view's directories, and . and .. of any
            entries = self.view.readdir(fh, start_id)
            if tree is not None:  # only the dots: the generator counts what it yields
                entries = itertools.islice(entries, 2 - start_id)
            e = self.entry(Attr(0, 0, 0, 0, 1, 0))
            for name, attr, next_offset in entries:
                e.st_ino, e.st_mode, e.st_size, e.st_nlink, e.st_blocks = \
                    attr.ino, attr.mode, attr.size, attr.nlink, attr.blocks
                e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = attr.mtime_ns
                e.entry_timeout = e.attr_timeout = STABLE_TIMEOUT if attr.stable \
                    else MOVING_TIMEOUT
                if not pyfuse3.readdir_reply(token, name, e, next_offset):
                    if name not in (b".", b".."):
                        self.view.forget([(attr.ino, 1)])  # the kernel did not take it
                    return
            if tree is None:
                return
            if start_id == 0:
                self.listing.start(fh, tree)
                self.view.prefetch_subtrees(tree)
            start_id = 2
        # a commit's directory: every entry's attributes come packed with its tree
        # and are stable; files go by name only while the walker does not stat
        # them (ListingPolicy)
        lo = start_id - 2
        named = self.listing.named.get(fh, 0)
        if lo < named and not self._readdir_names(fh, tree, token, lo, named):
            return
        self._readdir_plus(fh, tree, token, max(lo, named))

    def _readdir_plus(self, fh, tree, token, lo) -> bool:
        """Entries from ``lo`` with their attributes, so the kernel makes an inode
        of each; their lookups are counted a batch at a time. The hot loop of every
        first listing: eight attribute stores and a reply per entry. False once the
        kernel's buffer is full."""
        e = self._listed
        reply, count = pyfuse3.readdir_reply, self.view.count_entries
        blob, offs, modes, sizes, blocks, mtimes = \
            tree.blob, tree.offs, tree.modes, tree.sizes, tree.blocks, tree.mtimes
        n = len(tree)
        while lo < n:
            hi = min(n, lo + LIST_BATCH)
            inos = count(fh, tree, lo, hi)
            for idx in range(lo, hi):
                e.st_ino = inos[idx - lo]
                e.st_mode = modes[idx]
                e.st_size = sizes[idx]
                e.st_blocks = blocks[idx]
                e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = mtimes[idx]
                if not reply(token, blob[offs[idx]: offs[idx + 1]], e, idx + 3):
                    # the kernel's buffer is full: it did not take these
                    self.view.forget([(ino, 1) for ino in inos[idx - lo:]])
                    return False
            lo = hi
        return True

    def _readdir_names(self, fh, tree, token, lo, hi) -> bool:
        """Entries ``lo`` to ``hi``: files and symlinks by name, inode number and
        type only (the kernel makes no inode, no lookup is counted), directories
        with their attributes, so a walk descends without a lookup. False once
        the kernel's buffer is full."""
        e, bare = self._listed, self._bare
        reply, count = pyfuse3.readdir_reply, self.view.count_entries
        blob, offs, modes, sizes, blocks, mtimes, inos = \
            tree.blob, tree.offs, tree.modes, tree.sizes, tree.blocks, tree.mtimes, tree.inos
        for idx in range(lo, min(hi, len(tree))):
            ino = inos[idx]
            if ino:
                bare.st_ino = ino
                bare.st_mode = modes[idx]
                if not reply(token, blob[offs[idx]: offs[idx + 1]], bare, idx + 3, False):
                    return False
                continue
            ino = count(fh, tree, idx, idx + 1)[0]  # a directory: counted
            e.st_ino = ino
            e.st_mode = modes[idx]
            e.st_size = sizes[idx]
            e.st_blocks = blocks[idx]
            e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = mtimes[idx]
            if not reply(token, blob[offs[idx]: offs[idx + 1]], e, idx + 3):
                self.view.forget([(ino, 1)])
                return False
        return True

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
