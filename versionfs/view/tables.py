"""Compact storage behind a view: the file inode table and the tree cache.

A walk of a million files must fit in a small daemon, so neither keeps a Python
object per entry: file inodes live in flat arrays, trees in packed byte strings.

Thread-safety: ``FileTable`` is guarded by its owner's lock; ``TreeCache`` has its own.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import stat
import struct
import threading
from array import array
from collections import OrderedDict

from ..errors import MissingObject
from ..records.model import Kind, ObjectId, Tree, TreeEntry, decode_tree
from ..repo.repository import Repo
from .records import Attr


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

    def _grow(self) -> None:
        self._resize(self.cap * 3 // 2)

    def _resize(self, cap: int) -> None:
        old = (self.inos, self.chks, self.locs, self.refs, self.aliased)
        self._alloc(cap)
        for ino, chk, loc, ref, alias in zip(*old):
            if ino:
                i = self.slot(ino)
                self.inos[i], self.chks[i], self.locs[i], self.refs[i] = ino, chk, loc, ref
                self.aliased[i] = alias

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
    """A tree as compact as it can be while lookups stay fast: every name in one
    blob (sorted, with an offset array) and one packed record per entry (kind,
    mode, size, mtime, id): about 70 bytes an entry where decoded ``TreeEntry``
    objects take 550, and no small objects to fragment the heap."""

    # ``inos``: the file inode of each entry once listed (content decides a file's
    # inode, so every directory instance of this tree shares them); it saves
    # hashing again when a directory is listed again, and goes with the tree.
    __slots__ = ("blob", "offs", "recs", "targets", "inos", "chks")
    REC = struct.Struct("<BIqq32s")

    def __init__(self, tree: Tree):
        rec = self.REC
        buf = bytearray(rec.size * len(tree.entries))
        names = []
        self.targets: dict[int, bytes] = {}
        for i, e in enumerate(tree.entries):
            names.append(e.name.encode("utf-8", "surrogateescape"))
            rec.pack_into(buf, i * rec.size, e.kind, e.mode, e.size, e.mtime_ns, e.id)
            if e.target:
                self.targets[i] = e.target
        self.offs = array("Q", [0])
        self.offs.extend(itertools.accumulate(len(n) for n in names))
        self.blob = b"".join(names)
        self.recs = bytes(buf)
        self.inos: array | None = None
        self.chks: array | None = None

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
        kind, mode, size, mtime, _ = _unpack_from(self.recs, i * _REC_SIZE)
        if kind == _KIND_SYMLINK:
            size = len(self.targets.get(i, b""))
        return Attr(ino, _FTYPE[kind] | mode, size, mtime, 1,
                    0 if kind == _KIND_DIR else (size + 511) // 512, True)


_FTYPE = {int(Kind.FILE): stat.S_IFREG, int(Kind.DIR): stat.S_IFDIR,
          int(Kind.SYMLINK): stat.S_IFLNK}
_KIND_DIR, _KIND_SYMLINK = int(Kind.DIR), int(Kind.SYMLINK)
_unpack_from, _REC_SIZE = PackedTree.REC.unpack_from, PackedTree.REC.size


class MappedPages:
    """Gives the index's mapped pages back, so a long walk does not grow the RSS.

    LMDB reads through a shared, read-only mapping of ``data.mdb``; every page a walk
    touches stays mapped, and counted in this process's RSS, although each record
    was copied out and the page cache keeps the page anyway. ``MADV_DONTNEED`` on
    such a mapping only drops the page-table entries: the next access faults the
    page back in from the page cache. (It belongs in ``index``; it is here, where
    the walk's reads happen, until it moves.)
    """

    MADV_DONTNEED = 4

    def __init__(self, index_dir: str, every: int = 16 << 20):
        self.path = os.path.realpath(os.path.join(index_dir, "data.mdb"))
        self.every = every
        self.pending = 0
        try:
            self._madvise = ctypes.CDLL(None, use_errno=True).madvise
        except (OSError, AttributeError):
            self._madvise = None

    def read(self, nbytes: int) -> None:
        """Note ``nbytes`` read through the mapping; trim now and then."""
        self.pending += nbytes
        if self.pending >= self.every and self._madvise is not None:
            self.pending = 0
            self.trim()

    def trim(self) -> None:
        try:
            with open("/proc/self/maps") as f:
                spans = [line.split()[0] for line in f
                         if line.rstrip().endswith(self.path) and line.split()[1] == "r--s"]
        except OSError:
            return
        for span in spans:
            start, end = (int(x, 16) for x in span.split("-"))
            self._madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start),
                          self.MADV_DONTNEED)


class TreeCache:
    """Packed trees, least recently used first out, bounded by total entries
    (the most recent tree is always kept, however large)."""

    def __init__(self, repo: Repo, max_entries: int):
        self.repo = repo
        self.max = max_entries
        self._trees: OrderedDict[bytes, PackedTree] = OrderedDict()
        self._entries = 0
        self._lock = threading.Lock()
        self._pages = MappedPages(getattr(repo.index, "path", "/nonexistent"))

    def get(self, tid: bytes) -> PackedTree:
        with self._lock:
            tree = self._trees.get(tid)
            if tree is not None:
                self._trees.move_to_end(tid)
                return tree
        tree = PackedTree(self._load(tid))
        with self._lock:
            if tid not in self._trees:
                self._trees[tid] = tree
                self._entries += len(tree)
            while self._entries > self.max and len(self._trees) > 1:
                _, old = self._trees.popitem(last=False)
                self._entries -= len(old)
        return tree

    def _load(self, tid: bytes) -> Tree:
        # Repo.tree keeps 4096 decoded trees whatever their size; a walk of a
        # million files would hold them all, so read around its cache.
        with self.repo.index.read() as txn:
            raw = txn.get("trees", tid)
        if raw is None:
            raise MissingObject(f"tree {ObjectId(tid).short} is missing; run 'vfs fsck'")
        with self._lock:
            self._pages.read(len(raw))
        return decode_tree(raw)
