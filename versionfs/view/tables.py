"""Compact storage behind a view: the file inode table and the tree cache.

A walk of a million files must fit in a small daemon, so neither keeps a Python
object per entry: file inodes live in flat arrays, trees in packed byte strings.

Thread-safety: ``FileTable`` is guarded by its owner's lock; ``TreeCache`` has its own.
"""

from __future__ import annotations

import itertools
import logging
import stat
import struct
import threading
from array import array
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from ..errors import CorruptObject, MissingObject
from ..records.hashing import hash_bytes, hash_many
from ..records.model import Kind, ObjectId, TreeEntry, decode_tree_columns
from ..repo.repository import Repo
from .records import Attr

log = logging.getLogger("versionfs.view")


class FileTable:
    """ino → (check, locator, lookup count, aliased) in open-addressed flat arrays.

    ``aliased`` is 1 once the inode (one per content) was handed out through a
    second directory entry: an open of it may then have come through either name.

    Linear probing; deletion shifts later entries back, so there are no tombstones.
    The slot is ``ino % capacity``: inos are hashes, already uniform.
    """

    MAX_LOAD = 0.8

    def __init__(self, capacity: int = 1 << 15):
        self.min_cap = capacity
        self._alloc(capacity)
        self.count = 0

    def _alloc(self, cap: int) -> None:
        self.cap = cap
        self.inos = array("Q", bytes(8 * cap))
        self.chks = array("I", bytes(4 * cap))
        self.locs = array("Q", bytes(8 * cap))
        self.refs = array("I", bytes(4 * cap))
        self.aliased = array("B", bytes(cap))

    def slot(self, ino: int) -> int:
        """The slot holding ``ino``, or the empty slot where it would go."""
        inos, cap = self.inos, self.cap
        i = ino % cap
        while True:
            v = inos[i]
            if v == ino or v == 0:
                return i
            i = i + 1 if i + 1 < cap else 0

    def insert(self, i: int, ino: int, chk: int, loc: int) -> int:
        """Fill empty slot ``i``; returns the slot ``ino`` ends up in."""
        self.inos[i], self.chks[i], self.locs[i], self.refs[i] = ino, chk, loc, 0
        self.aliased[i] = 0
        self.count += 1
        if self.count > self.cap * self.MAX_LOAD:
            self._grow()
            return self.slot(ino)
        return i

    def add_refs(self, inos: array, chks: array, lo: int, base: int) -> tuple[int, list[int]]:
        """One more lookup of each ``inos[j]`` whose check is ``chks[lo + j]`` and
        locator ``base | (lo + j)``, inserted if new: ``insert`` and the probe of
        ``slot`` inlined, the inner loop of every first listing. Returns how many
        were inserted and the ``j`` left alone: zero ``inos[j]`` (directories) and
        those whose slot holds other content (a clash, for the caller to resolve)."""
        skipped: list[int] = []
        added = 0
        slots, checks, locs, refs, aliased, cap = \
            self.inos, self.chks, self.locs, self.refs, self.aliased, self.cap
        limit = int(cap * self.MAX_LOAD)
        for j, ino in enumerate(inos):
            if not ino:
                skipped.append(j)
                continue
            i = ino % cap
            v = slots[i]
            while v != ino and v:
                i = i + 1 if i + 1 < cap else 0
                v = slots[i]
            idx = lo + j
            if not v:  # new: a free slot's other fields are zero
                slots[i], checks[i], locs[i], refs[i] = ino, chks[idx], base | idx, 1
                added += 1
                self.count += 1
                if self.count > limit:
                    self._grow()
                    slots, checks, locs, refs, aliased, cap = \
                        self.inos, self.chks, self.locs, self.refs, self.aliased, self.cap
                    limit = int(cap * self.MAX_LOAD)
            elif checks[i] != chks[idx]:
                skipped.append(j)
            else:
                refs[i] += 1
                if locs[i] != base | idx:
                    aliased[i] = 1
        return added, skipped

    def _grow(self) -> None:
        self._resize(self.cap * 3 // 2)

    def _resize(self, cap: int) -> None:
        old_inos, old_chks, old_locs, old_refs, old_aliased = \
            self.inos, self.chks, self.locs, self.refs, self.aliased
        self._alloc(cap)
        inos, chks, locs, refs, aliased = \
            self.inos, self.chks, self.locs, self.refs, self.aliased
        # the probe inlined: at a million inodes this loop is most of a growth
        for j, ino in enumerate(old_inos):
            if ino:
                i = ino % cap
                while inos[i]:
                    i = i + 1 if i + 1 < cap else 0
                inos[i], chks[i], locs[i] = ino, old_chks[j], old_locs[j]
                refs[i], aliased[i] = old_refs[j], old_aliased[j]

    def remove(self, i: int) -> None:
        inos, cap = self.inos, self.cap
        arrays = (self.inos, self.chks, self.locs, self.refs, self.aliased)
        j = i
        while True:
            j = j + 1 if j + 1 < cap else 0
            v = inos[j]
            if v == 0:
                break
            home = v % cap
            # move j back into the hole at i unless its home lies cyclically in (i, j]
            if (j > i and (home <= i or home > j)) or (j < i and i >= home > j):
                for a in arrays:
                    a[i] = a[j]
                i = j
        for a in arrays:
            a[i] = 0
        self.count -= 1
        if self.cap > self.min_cap and self.count < self.cap * self.MAX_LOAD / 4:
            self._resize(max(self.min_cap, self.cap // 2))  # forgotten inodes give memory back


class PackedTree:
    """A tree as compact as it can be while listing stays cheap: every name in one
    blob (sorted, with an offset array), one packed record per entry (kind, mode,
    size, mtime, id) and, per entry, what a listing answers with in flat arrays:
    ``st_mode`` (type and permission bits), ``st_size``, ``st_blocks``, mtime and
    the file inode. About 100 bytes an entry where decoded ``TreeEntry`` objects
    take 550, and no small objects to fragment the heap.

    ``inos`` holds the inode of each file and symlink entry (0 for directories,
    whose inodes belong to a directory instance): a hash of the entry's record, so
    identical content shares an inode wherever it appears. It is the first of
    three candidates (``ino_candidates``); the view replaces it with a later one in
    the rare case the first is taken by other content. Computing them here, once
    per tree, takes the hashing out of every listing.
    """

    __slots__ = ("blob", "offs", "recs", "targets", "inos", "chks", "modes", "sizes",
                 "blocks", "mtimes", "ndirs", "dirs")
    REC = struct.Struct("<BIqq32s")

    def __init__(self, columns: tuple[tuple, ...]):
        """``columns`` as ``records.model.decode_tree_columns`` gives them. Built
        a column at a time (``map``, array constructors), so that it costs little
        Python per entry: every first listing of a directory pays for it. Raises
        TypeError or OverflowError for an integer field out of range."""
        names, kinds, modes, sizes, mtimes, oids, targets = columns
        keys = list(map(self.REC.pack, kinds, modes, sizes, mtimes, oids))
        self.recs = b"".join(keys)
        self.blob = b"".join(names)
        self.offs = array("Q", [0])
        self.offs.extend(itertools.accumulate(map(len, names)))
        self.mtimes = array("q", mtimes)
        self.modes = array("I", [_FTYPE[k] | m for k, m in zip(kinds, modes)])
        self.inos, self.chks = _first_candidates(hash_many(keys))
        self.targets: dict[int, bytes] = {}
        self.ndirs = kinds.count(_KIND_DIR)
        self.dirs = array("I")  # the indices of the directories, in order
        if self.ndirs or _KIND_SYMLINK in kinds:
            # directories have no file inode; a symlink's size is its target's
            sizes = list(sizes)
            for i, kind in enumerate(kinds):
                if kind == _KIND_DIR:
                    self.inos[i] = self.chks[i] = 0
                    self.dirs.append(i)
                elif kind == _KIND_SYMLINK:
                    self.targets[i] = targets[i]
                    sizes[i] = len(targets[i])
        self.sizes = array("q", sizes)
        self.blocks = array("q", [(s + 511) // 512 for s in sizes])
        for i in self.dirs:
            self.blocks[i] = 0

    def __len__(self) -> int:
        return len(self.offs) - 1

    def name(self, i: int) -> bytes:
        return self.blob[self.offs[i]: self.offs[i + 1]]

    def find(self, name: bytes) -> int:
        """Index of ``name``, or -1 (names are sorted by their bytes)."""
        blob, offs = self.blob, self.offs
        lo, hi = 0, len(offs) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            probe = blob[offs[mid]: offs[mid + 1]]
            if probe < name:
                lo = mid + 1
            elif probe > name:
                hi = mid
            else:
                return mid
        return -1

    def is_dir(self, i: int) -> bool:
        return self.recs[i * _REC_SIZE] == _KIND_DIR

    def key(self, i: int) -> memoryview:
        """What makes a file inode: kind, mode, size, mtime and id, packed."""
        size = self.REC.size
        return memoryview(self.recs)[i * size: (i + 1) * size]

    def fields(self, i: int) -> tuple[int, int, int, int, bytes]:
        return self.REC.unpack_from(self.recs, i * self.REC.size)

    def entry(self, i: int) -> TreeEntry:
        kind, mode, size, mtime, oid = self.fields(i)
        return TreeEntry(self.name(i).decode("utf-8", "surrogateescape"), Kind(kind), mode,
                         size, mtime, ObjectId(oid), self.targets.get(i, b""))

    def attr(self, ino: int, i: int) -> Attr:
        return Attr(ino, self.modes[i], self.sizes[i], self.mtimes[i], 1, self.blocks[i],
                    True)


FILE_BIT = 1 << 62   # file and symlink inodes have it; directories never do
_INO_MASK = FILE_BIT - 1


def ino_candidates(key) -> tuple[list[int], int]:
    """The three inode candidates of an entry record (its BLAKE3's first three
    64-bit words, top two bits replaced by ``01``) and its check value (bytes 24-27):
    a clash of two contents on all three is ~2^-60."""
    h = hash_bytes(key)
    return ([(_from_bytes(h[8 * k: 8 * k + 8], "little") & _INO_MASK) | FILE_BIT
             for k in range(3)], _from_bytes(h[24:28], "little"))


# byte 7 of a little-endian word holds its top bits: clear bit 63, set bit 62
_TOP_BYTE = bytes((b & 0x3F) | 0x40 for b in range(256))


def _first_candidates(digests: list[bytes]) -> tuple[array, array]:
    """``ino_candidates``' first inode and the check of each digest, for a whole
    tree in a few C-speed steps (bytes and array slicing, no Python per digest)."""
    raw = b"".join(digests)
    words = array("Q")
    words.frombytes(raw)
    first = bytearray(words[0::4].tobytes())
    first[7::8] = first[7::8].translate(_TOP_BYTE)
    inos, halves = array("Q"), array("I")
    inos.frombytes(first)
    halves.frombytes(raw)
    return inos, halves[6::8]
_FTYPE = {int(Kind.FILE): stat.S_IFREG, int(Kind.DIR): stat.S_IFDIR,
          int(Kind.SYMLINK): stat.S_IFLNK}
_KIND_DIR, _KIND_SYMLINK = int(Kind.DIR), int(Kind.SYMLINK)
_REC_SIZE = PackedTree.REC.size
_from_bytes = int.from_bytes


class MappedPages:
    """Gives the index's mapped pages back now and then (``Index.release_pages``), so
    a long walk through LMDB's shared mapping does not grow the RSS."""

    def __init__(self, index, every: int = 16 << 20):
        self._release = getattr(index, "release_pages", None)
        self.every = every
        self.pending = 0

    def read(self, nbytes: int) -> None:
        """Note ``nbytes`` read through the mapping; release now and then."""
        self.pending += nbytes
        if self.pending >= self.every:
            self.pending = 0
            self.trim()

    def trim(self) -> None:
        if self._release is not None:
            self._release()


class TreeCache:
    """Packed trees, least recently used first out, bounded by total entries
    (the most recent tree is always kept, however large). ``prefetch`` has the
    index pages of trees about to be read brought in by worker threads."""

    PREFETCH_MAX = 1024     # trees read ahead per call
    PREFETCH_THREADS = 4    # disk reads in flight: one at a time takes ~2 ms a tree
    PREFETCH_BATCH = 8      # trees per task, in order (a walk takes them in order)

    def __init__(self, repo: Repo, max_entries: int):
        self.repo = repo
        self.max = max_entries
        self._trees: OrderedDict[bytes, PackedTree] = OrderedDict()
        self._entries = 0
        self._lock = threading.Lock()
        self._pages = MappedPages(getattr(repo, "index", None))
        self._willneed = getattr(repo.index, "willneed", None)  # a local index's
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    def peek(self, tid: bytes) -> PackedTree | None:
        """The tree if it is cached (not loaded, its place in the LRU unchanged)."""
        with self._lock:
            return self._trees.get(tid)

    def prefetch(self, tids: list[bytes]) -> None:
        """Read ahead the index pages of those of ``tids`` not cached (the first
        ``PREFETCH_MAX``), on worker threads: a listing's subdirectories are what a
        walk lists next, and their trees would otherwise come from a cold disk one
        4 KiB page at a time, on the thread that answers the kernel."""
        if self._willneed is None:
            return
        with self._lock:
            if self._closed:
                return
            todo = [t for t in tids if t not in self._trees][:self.PREFETCH_MAX]
            if todo and self._pool is None:
                self._pool = ThreadPoolExecutor(self.PREFETCH_THREADS,
                                                thread_name_prefix="vfs-trees")
            for i in range(0, len(todo), self.PREFETCH_BATCH):
                self._pool.submit(self._read_ahead, todo[i: i + self.PREFETCH_BATCH])

    def _read_ahead(self, tids: list[bytes]) -> None:
        try:
            self._willneed("trees", tids)
        except Exception:  # only a hint: the tree is read normally when needed
            log.debug("tree read-ahead failed", exc_info=True)

    def close(self) -> None:
        """Stop reading ahead (waits for reads in flight: they use the index)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def get(self, tid: bytes) -> PackedTree:
        with self._lock:
            tree = self._trees.get(tid)
            if tree is not None:
                self._trees.move_to_end(tid)
                return tree
        try:
            tree = PackedTree(self._load(tid))
        except (TypeError, ValueError, OverflowError, struct.error) as exc:
            raise CorruptObject(f"malformed tree record {ObjectId(tid).short}: {exc!r}; "
                                "run 'vfs fsck'") from None
        with self._lock:
            if tid not in self._trees:
                self._trees[tid] = tree
                self._entries += len(tree)
            while self._entries > self.max and len(self._trees) > 1:
                _, old = self._trees.popitem(last=False)
                self._entries -= len(old)
        return tree

    def _load(self, tid: bytes) -> tuple[tuple, ...]:
        # Repo.tree keeps 4096 decoded trees whatever their size; a walk of a
        # million files would hold them all, so read around its cache.
        with self.repo.index.read() as txn:
            raw = txn.get("trees", tid)
        if raw is None:
            raise MissingObject(f"tree {ObjectId(tid).short} is missing; run 'vfs fsck'")
        with self._lock:
            self._pages.read(len(raw))
        return decode_tree_columns(raw)
