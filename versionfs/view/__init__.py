"""What a commit looks like as a read-only filesystem: inodes, lookup, readdir, read.

This package knows nothing of FUSE; ``fuse/ops.py`` only translates its answers. A
``View`` serves one commit (``rev``), or every version side by side (``rev=None``:
``HEAD/``, ``tags/<name>/``, ``heads/<name>/``, ``commits/<id>/``, resolved lazily).

Inodes are made on demand from tree entries, so mounting costs the same for ten
files or a million. A directory gets one inode per path instance (the kernel forbids
aliased directories). A file or symlink gets one inode per *content* — (kind, id,
mode, mtime, size) — so identical files in different commits share an inode and its
page cache. File inodes live in flat arrays (``tables.FileTable``): a million of them cost
about 30 MB, where Python dicts would cost 110 MB. Each holds only a locator, the
directory instance and index of the entry it came from, so ``forget`` drops all state.

Reads map an offset to a chunk by bisecting cumulative offsets, load whole chunks,
check each against its BLAKE3 id (a damaged chunk raises ``CorruptObject``: EIO), and
keep verified chunks in a small LRU so sequential small reads never re-read or
re-hash; sequential readers get the next chunks loaded ahead on background threads.
Where a verified chunk lies is remembered, so a later read of it re-reads just its
range. ``verify="off"`` skips all of that: every read is one pread of its range.

Which process trees opened which files (for ``vfs run``) is ``observe.Tracking``:
``View.opened`` says which commit and path an inode is.

Thread-safety: every method may be called from any thread. Inode tables sit behind
one lock; ``read`` takes it only briefly, so many reads run at once.
"""

from ..errors import NoSuchAttribute
from .chunks import ChunkCache
from .core import View
from .observe import Tracker, Tracking
from .records import (
    ROOT_INO, XATTR_CMD, XATTR_COMMIT, XATTR_ID, XATTR_RUN, XATTR_STAGE, Attr, DirEntry,
    FsStats, OpenedFile,
)

__all__ = ["View", "Attr", "DirEntry", "FsStats", "NoSuchAttribute", "ChunkCache",
           "OpenedFile", "Tracker", "Tracking",
           "ROOT_INO", "XATTR_ID", "XATTR_COMMIT", "XATTR_RUN",
           "XATTR_CMD", "XATTR_STAGE"]
