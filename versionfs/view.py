"""What a commit looks like as a read-only filesystem: inodes, lookup, readdir, read.

This module knows nothing of FUSE; ``fuse/ops.py`` only translates its answers. A
``View`` serves one commit (``rev``), or every version side by side (``rev=None``:
``HEAD/``, ``tags/<name>/``, ``heads/<name>/``, ``commits/<id>/``, resolved lazily).

Inodes are made on demand from tree entries, so mounting costs the same for ten
files or a million. A directory gets one inode per path instance (the kernel forbids
aliased directories). A file or symlink gets one inode per *content* — (kind, id,
mode, mtime, size) — so identical files in different commits share an inode and its
page cache. File inodes live in flat arrays (``_FileTable``): a million of them cost
about 30 MB, where Python dicts would cost 110 MB. Each holds only a locator, the
directory instance and index of the entry it came from, so ``forget`` drops all state.

Reads map an offset to a chunk by bisecting cumulative offsets, load whole chunks,
check each against its BLAKE3 id (a damaged chunk raises ``CorruptObject``: EIO), and
keep verified chunks in a small LRU so sequential small reads never re-read or
re-hash; sequential readers get the next chunks loaded ahead on background threads.

Thread-safety: every method may be called from any thread. Inode tables sit behind
one lock; ``read`` takes it only briefly, so many reads run at once.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import os
import stat
import struct
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .errors import MissingObject, NotADirectory, PathNotFound, VfsError
from .hashing import hash_bytes
from .model import ChunkRef, Commit, Kind, ObjectId, Tree, TreeEntry, decode_tree
from .repo import Repo

ROOT_INO = 1
_FILE_BIT = 1 << 62          # file and symlink inodes have it; directories never do
_IDX_BITS = 32               # a locator is (directory inode << 32) | entry index
_IDX_MASK = (1 << _IDX_BITS) - 1
_DIR_MODE = stat.S_IFDIR | 0o555
XATTR_ID = b"user.versionfs.id"
XATTR_COMMIT = b"user.versionfs.commit"
XATTR_RUN = b"user.versionfs.run"
_XATTR_PREFIX = b"user.versionfs."


class NoSuchAttribute(VfsError):
    """The extended attribute does not exist on this file (ENODATA)."""

    errno = errno.ENODATA


@dataclass(frozen=True, slots=True)
class Attr:
    """The attributes of one inode. ``stable`` is False where a name follows a
    moving ref (``HEAD``, ``tags/x``, ``heads/x`` and their parents), so a
    caller must not cache it for long."""

    ino: int
    mode: int
    size: int
    mtime_ns: int
    nlink: int
    blocks: int
    stable: bool = True


@dataclass(frozen=True, slots=True)
class FsStats:
    block_size: int
    blocks: int
    files: int
    name_max: int = 255


@dataclass(frozen=True, slots=True)
class DirEntry:
    name: bytes
    attr: Attr
    next_offset: int


class _Dir:
    """A directory instance: a tree at one path of one commit, or a virtual
    directory of the all-versions root (``prefix`` set, ``commit`` None)."""

    __slots__ = ("ino", "parent", "key", "commit", "tree", "mode", "mtime_ns", "size",
                 "prefix", "nlookup", "pins", "stable")

    def __init__(self, ino, parent, key, *, commit=None, tree=None, mode=0o555,
                 mtime_ns=0, size=0, prefix=None, stable=True):
        self.ino, self.parent, self.key = ino, parent, key
        self.commit, self.tree, self.prefix = commit, tree, prefix
        self.mode, self.mtime_ns, self.size = mode, mtime_ns, size
        self.nlookup, self.pins, self.stable = 0, 0, stable

    def attr(self) -> Attr:
        return Attr(self.ino, stat.S_IFDIR | self.mode, self.size, self.mtime_ns, 1,
                    0, self.stable)


class _FileTable:
    """ino → (check, locator, lookup count) in open-addressed flat arrays.

    Linear probing; deletion shifts later entries back, so there are no tombstones.
    The slot is ``ino % capacity``: inos are hashes, already uniform.
    """

    MAX_LOAD = 0.8

    def __init__(self, capacity: int = 1 << 15):
        self._alloc(capacity)
        self.count = 0

    def _alloc(self, cap: int) -> None:
        self.cap = cap
        self.inos = array("Q", bytes(8 * cap))
        self.chks = array("I", bytes(4 * cap))
        self.locs = array("Q", bytes(8 * cap))
        self.refs = array("I", bytes(4 * cap))

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
        self.count += 1
        if self.count > self.cap * self.MAX_LOAD:
            self._grow()
            return self.slot(ino)
        return i

    def _grow(self) -> None:
        old = (self.inos, self.chks, self.locs, self.refs)
        self._alloc(self.cap * 3 // 2)
        for ino, chk, loc, ref in zip(*old):
            if ino:
                i = self.slot(ino)
                self.inos[i], self.chks[i], self.locs[i], self.refs[i] = ino, chk, loc, ref

    def remove(self, i: int) -> None:
        inos, cap = self.inos, self.cap
        arrays = (self.inos, self.chks, self.locs, self.refs)
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


class _PackedTree:
    """A tree as compact as it can be while lookups stay fast: every name in one
    blob (sorted, with an offset array) and one packed record per entry (kind,
    mode, size, mtime, id): about 70 bytes an entry where decoded ``TreeEntry``
    objects take 550, and no small objects to fragment the heap."""

    __slots__ = ("blob", "offs", "recs", "targets")
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
        kind, mode, size, mtime, _ = self.fields(i)
        ftype = _FTYPE[kind]
        if kind == Kind.SYMLINK:
            size = len(self.targets.get(i, b""))
        return Attr(ino, ftype | mode, size, mtime, 1, 0 if kind == Kind.DIR else
                    (size + 511) // 512)


_FTYPE = {Kind.FILE: stat.S_IFREG, Kind.DIR: stat.S_IFDIR, Kind.SYMLINK: stat.S_IFLNK}


class _TreeCache:
    """Packed trees, least recently used first out, bounded by total entries
    (the most recent tree is always kept, however large)."""

    def __init__(self, repo: Repo, max_entries: int):
        self.repo = repo
        self.max = max_entries
        self._trees: OrderedDict[bytes, _PackedTree] = OrderedDict()
        self._entries = 0
        self._lock = threading.Lock()

    def get(self, tid: bytes) -> _PackedTree:
        with self._lock:
            tree = self._trees.get(tid)
            if tree is not None:
                self._trees.move_to_end(tid)
                return tree
        tree = _PackedTree(self._load(tid))
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
        return decode_tree(raw)


class ChunkCache:
    """Verified chunks by id, bounded by bytes; loads each chunk once however many
    readers want it at the same moment, and can load chunks ahead in background."""

    def __init__(self, repo: Repo, max_bytes: int = 64 << 20, workers: int = 2):
        self.repo = repo
        self.max_bytes = max_bytes
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._loading: dict[bytes, Future] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, "vfs-prefetch") if workers else None
        self.loads = 0

    def get(self, ref: ChunkRef) -> bytes:
        """The chunk's bytes, checked against its id (``CorruptObject`` if not)."""
        with self._lock:
            data = self._data.get(ref.id)
            if data is not None:
                self._data.move_to_end(ref.id)
                return data
            fut = self._loading.get(ref.id)
            if fut is None:
                fut = self._loading[ref.id] = Future()
                mine = True
            else:
                mine = False
        if mine:
            self._load(ref.id, fut)
        return fut.result()

    def prefetch(self, refs) -> None:
        """Start loading ``refs`` in background; returns at once."""
        if self._pool is None:
            return
        for ref in refs:
            with self._lock:
                if ref.id in self._data or ref.id in self._loading:
                    continue
                fut = self._loading[ref.id] = Future()
            self._pool.submit(self._load, ref.id, fut)

    def _load(self, cid: bytes, fut: Future) -> None:
        try:
            data = self.repo.blobs.read_verified(cid, self.repo.chunk_loc(cid))
        except BaseException as exc:
            with self._lock:
                del self._loading[cid]
            fut.set_exception(exc)
            return
        with self._lock:
            del self._loading[cid]
            self.loads += 1
            if cid not in self._data:
                self._data[cid] = data
                self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._data) > 1:
                _, old = self._data.popitem(last=False)
                self._bytes -= len(old)
        fut.set_result(data)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class _Content:
    """The chunks of an open file and where each starts."""

    __slots__ = ("size", "chunks", "starts", "opens", "next_offset")

    def __init__(self, size: int, chunks: tuple[ChunkRef, ...]):
        self.size, self.chunks, self.opens, self.next_offset = size, chunks, 0, -1
        self.starts, pos = [], 0
        for c in chunks:
            self.starts.append(pos)
            pos += c.length


def _gone(what: str) -> PathNotFound:
    return PathNotFound(f"{what} does not exist")


class View:
    """A read-only filesystem view of one commit (``rev``) or of all versions.

    Error handling: ``lookup`` of a missing name raises ``PathNotFound``; unknown
    inodes raise ``PathNotFound``; a missing or damaged record or chunk raises
    ``MissingObject``/``CorruptObject``; a missing extended attribute raises
    ``NoSuchAttribute``. Each carries the errno a filesystem should answer.
    """

    def __init__(self, repo: Repo, rev: str | None = None, *, cache_bytes: int = 64 << 20,
                 tree_cache_entries: int = 250_000, prefetch_chunks: int = 2,
                 prefetch_workers: int = 2):
        self.repo = repo
        self.rev = rev
        self.commit_id = repo.resolve(rev) if rev is not None else None
        self.chunks = ChunkCache(repo, cache_bytes, prefetch_workers)
        self.prefetch_chunks = prefetch_chunks
        self._trees = _TreeCache(repo, tree_cache_entries)
        self._lock = threading.RLock()
        self._files = _FileTable()
        self._dirs: dict[int, _Dir] = {}
        self._children: dict[tuple, int] = {}
        self._open: dict[int, _Content] = {}
        self._commits: OrderedDict[bytes, Commit] = OrderedDict()
        self._next_dir = ROOT_INO + 1
        self.started_ns = time.time_ns()
        if self.commit_id is not None:
            root = self._commit_root(ROOT_INO, None, None, self.commit_id, stable=True)
        else:
            root = _Dir(ROOT_INO, None, None, prefix="", mtime_ns=self.started_ns,
                        stable=False)
        root.parent = root.ino
        root.pins = 1  # the root never goes away
        self._dirs[ROOT_INO] = root

    def close(self) -> None:
        self.chunks.close()

    # -- records ---------------------------------------------------------------
    def commit(self, cid: bytes) -> Commit:
        with self._lock:
            c = self._commits.get(cid)
        if c is None:
            c = self.repo.commit(cid)
            with self._lock:
                self._commits[cid] = c
                if len(self._commits) > 256:
                    self._commits.popitem(last=False)
        return c

    def _commit_root(self, ino, parent, key, cid, *, stable) -> _Dir:
        c = self.commit(cid)
        return _Dir(ino, parent, key, commit=ObjectId(cid), tree=c.tree, mode=0o755,
                    mtime_ns=c.time_ns, stable=stable)

    def _dir(self, ino: int) -> _Dir:
        d = self._dirs.get(ino)
        if d is None:
            raise _gone(f"directory inode {ino}") if ino < _FILE_BIT else \
                NotADirectory(f"inode {ino} is not a directory")
        return d

    def _locate(self, ino: int) -> tuple[_Dir, int, _PackedTree]:
        """The directory instance, tree and index a file inode came from."""
        with self._lock:
            i = self._files.slot(ino) if ino & _FILE_BIT else -1
            if i < 0 or self._files.inos[i] != ino:
                raise _gone(f"file inode {ino}")
            loc = self._files.locs[i]
            d = self._dirs[loc >> _IDX_BITS]
        return d, loc & _IDX_MASK, self._trees.get(d.tree)

    def _entry(self, ino: int) -> TreeEntry:
        _, idx, tree = self._locate(ino)
        return tree.entry(idx)

    # -- inode allocation (callers hold the lock) ------------------------------
    def _new_dir(self, parent: _Dir, key, **kw) -> _Dir:
        ino = self._next_dir
        self._next_dir += 1
        d = _Dir(ino, parent.ino, key, **kw) if "cid" not in kw else \
            self._commit_root(ino, parent.ino, key, kw["cid"], stable=kw["stable"])
        self._dirs[ino] = d
        self._children[key] = ino
        parent.pins += 1
        return d

    def _child(self, d: _Dir, tree: _PackedTree, idx: int) -> Attr:
        """Allocate (or find) the inode of entry ``idx`` of directory ``d`` and
        count one lookup of it."""
        key = tree.key(idx)
        if key[0] == Kind.DIR:
            ckey = (d.ino, idx)
            ino = self._children.get(ckey)
            if ino is None:
                _, mode, size, mtime, oid = tree.fields(idx)
                child = self._new_dir(d, ckey, commit=d.commit, tree=ObjectId(oid),
                                      mode=mode, mtime_ns=mtime, size=size)
            else:
                child = self._dirs[ino]
            child.nlookup += 1
            return child.attr()
        h = hash_bytes(key)
        chk = int.from_bytes(h[24:28], "little")
        table = self._files
        for k in range(3):  # three independent 62-bit candidates; a clash is ~2^-60
            ino = (int.from_bytes(h[8 * k: 8 * k + 8], "little") >> 2) | _FILE_BIT
            i = table.slot(ino)
            if table.inos[i] == 0:
                i = table.insert(i, ino, chk, (d.ino << _IDX_BITS) | idx)
                d.pins += 1
            elif table.chks[i] != chk:
                continue
            table.refs[i] += 1
            return tree.attr(ino, idx)
        raise VfsError("inode hash clash on three candidates; this cannot happen")

    def _virtual_child(self, d: _Dir, name: str) -> Attr | None:
        """A child of a virtual directory of the all-versions view, or None."""
        key = None
        if d.prefix == "" and name in ("tags", "heads", "commits"):
            key = (d.ino, name)
            kw = {"prefix": name + "/", "mtime_ns": self.started_ns, "stable": False}
        elif d.prefix == "" and name == "HEAD" or d.prefix == "commits/":
            cid = self._commit_by_name(d.prefix, name)
            if cid is None:
                return None
            key = (d.ino, name, cid)
            kw = {"cid": cid, "stable": d.prefix == "commits/"}
        elif d.prefix:
            refs = self.repo.refs(d.prefix + name)
            full = d.prefix + name
            if full in refs:
                key = (d.ino, name, refs[full])
                kw = {"cid": refs[full], "stable": False}
            elif any(r.startswith(full + "/") for r in refs):
                key = (d.ino, name)
                kw = {"prefix": full + "/", "mtime_ns": self.started_ns, "stable": False}
        if key is None:
            return None
        ino = self._children.get(key)
        child = self._dirs[ino] if ino is not None else self._new_dir(d, key, **kw)
        child.nlookup += 1
        return child.attr()

    def _commit_by_name(self, prefix: str, name: str) -> ObjectId | None:
        if prefix == "":
            return self.repo.head()
        if len(name) != 64:
            return None
        try:
            cid = ObjectId.from_hex(name)
            self.commit(cid)
        except (ValueError, MissingObject):
            return None
        return cid

    # -- the filesystem operations ---------------------------------------------
    def lookup(self, parent: int, name: bytes) -> Attr:
        """The attributes of ``name`` in directory ``parent``; counts one lookup."""
        with self._lock:
            d = self._dir(parent)
            if name in (b".", b".."):
                target = self._dirs[d.ino if name == b"." else d.parent]
                target.nlookup += 1
                return target.attr()
            if d.commit is None:
                attr = self._virtual_child(d, name.decode("utf-8", "surrogateescape"))
            else:
                tree = self._trees.get(d.tree)
                idx = tree.find(name)
                attr = None if idx < 0 else self._child(d, tree, idx)
        if attr is None:
            raise PathNotFound(f"no {name.decode(errors='replace')!r} in directory {parent}")
        return attr

    def getattr(self, ino: int) -> Attr:
        with self._lock:
            d = self._dirs.get(ino)
            if d is not None:
                return d.attr()
        _, idx, tree = self._locate(ino)
        return tree.attr(ino, idx)

    def readdir(self, ino: int, offset: int = 0) -> Iterator[DirEntry]:
        """Entries from ``offset`` on (0 starts; each entry gives the next).

        ``.`` and ``..`` come first and count no lookup; every other entry yielded
        counts one lookup of its inode: a caller that cannot pass an entry on must
        ``forget`` it.
        """
        with self._lock:
            d = self._dir(ino)
            dots = [(b".", d), (b"..", self._dirs[d.parent])]
        for i in range(offset, 2):
            yield DirEntry(dots[i][0], dots[i][1].attr(), i + 1)
        if d.commit is None:
            yield from self._readdir_virtual(d, max(offset, 2))
            return
        tree = self._trees.get(d.tree)
        for idx in range(max(offset, 2) - 2, len(tree)):
            with self._lock:
                attr = self._child(d, tree, idx)
            yield DirEntry(tree.name(idx), attr, idx + 3)

    def _readdir_virtual(self, d: _Dir, offset: int) -> Iterator[DirEntry]:
        for i, name in enumerate(self._virtual_names(d)[offset - 2:], offset):
            with self._lock:
                attr = self._virtual_child(d, name)
            if attr is not None:
                yield DirEntry(name.encode("utf-8", "surrogateescape"), attr, i + 1)

    def _virtual_names(self, d: _Dir) -> list[str]:
        if d.prefix == "":
            return (["HEAD"] if self.repo.head() is not None else []) + \
                ["commits", "heads", "tags"]
        if d.prefix == "commits/":
            with self.repo.index.read() as txn:
                return [k.hex() for k in txn.keys("commits")]
        names = {r[len(d.prefix):].split("/", 1)[0] for r in self.repo.refs(d.prefix)}
        return sorted(names)

    def forget(self, items) -> None:
        """Drop ``n`` lookups of each ``(ino, n)``; inodes reaching zero are freed."""
        with self._lock:
            for ino, n in items:
                if ino & _FILE_BIT:
                    self._forget_file(ino, n)
                elif ino in self._dirs:
                    d = self._dirs[ino]
                    d.nlookup = max(0, d.nlookup - n)
                    self._maybe_free(d)

    def _forget_file(self, ino: int, n: int) -> None:
        t = self._files
        i = t.slot(ino)
        if t.inos[i] != ino:
            return
        t.refs[i] = max(0, t.refs[i] - n)
        if t.refs[i] == 0 and ino not in self._open:
            d = self._dirs[t.locs[i] >> _IDX_BITS]
            t.remove(i)
            d.pins -= 1
            self._maybe_free(d)

    def _maybe_free(self, d: _Dir) -> None:
        while d.nlookup == 0 and d.pins == 0 and d.ino != ROOT_INO:
            del self._dirs[d.ino]
            del self._children[d.key]
            d = self._dirs[d.parent]
            d.pins -= 1

    def inode_count(self) -> int:
        with self._lock:
            return len(self._dirs) + self._files.count

    def open(self, ino: int) -> int:
        """Prepare ``ino`` for reading; returns the handle to pass to ``read``
        (the inode itself: content is shared by every open of it)."""
        e = self._entry(ino)
        if e.kind is not Kind.FILE:
            raise PathNotFound(f"inode {ino} is not a regular file")
        content = _Content(e.size, self.repo.chunks(e))
        with self._lock:
            content = self._open.setdefault(ino, content)
            content.opens += 1
        return ino

    def release(self, fh: int) -> None:
        with self._lock:
            content = self._open.get(fh)
            if content is not None:
                content.opens -= 1
                if content.opens <= 0:
                    del self._open[fh]

    def read(self, fh: int, offset: int, size: int):
        """Up to ``size`` bytes at ``offset`` (fewer at the end, ``b""`` past it).

        Returns bytes or a memoryview of a cached chunk; never unverified data.
        """
        with self._lock:
            c = self._open.get(fh)
        if c is None:
            e = self._entry(fh)
            c = _Content(e.size, self.repo.chunks(e))
        end = min(offset + size, c.size)
        if offset < 0 or offset >= end:
            return b""
        i = bisect.bisect_right(c.starts, offset) - 1
        parts, pos = [], offset
        while pos < end:
            start, ref = c.starts[i], c.chunks[i]
            data = self.chunks.get(ref)
            stop = min(end - start, ref.length)
            parts.append(memoryview(data)[pos - start: stop])
            pos = start + stop
            i += 1
        if self.prefetch_chunks and offset == c.next_offset:
            self.chunks.prefetch(c.chunks[i: i + self.prefetch_chunks])
        c.next_offset = end
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readlink(self, ino: int) -> bytes:
        e = self._entry(ino)
        if e.kind is not Kind.SYMLINK:
            raise VfsError(f"inode {ino} is not a symbolic link")
        return e.target

    # -- extended attributes ---------------------------------------------------
    def _xattrs(self, ino: int) -> dict[bytes, bytes]:
        with self._lock:
            d = self._dirs.get(ino)
        if d is not None:
            if d.commit is None:
                return {}
            cid, oid = d.commit, d.tree
        else:
            d, idx, tree = self._locate(ino)
            cid, oid = d.commit, ObjectId(tree.fields(idx)[4])
        out = {XATTR_ID: oid.hex().encode(), XATTR_COMMIT: cid.hex().encode()}
        run = self.commit(cid).run
        if run:
            out[XATTR_RUN] = run.hex().encode()
        return out

    def listxattr(self, ino: int) -> list[bytes]:
        return list(self._xattrs(ino))

    def getxattr(self, ino: int, name: bytes) -> bytes:
        # ls -l asks every file for security.selinux: answer without any lookup
        value = self._xattrs(ino).get(name) if name.startswith(_XATTR_PREFIX) else None
        if value is None:
            raise NoSuchAttribute(f"no extended attribute {name.decode(errors='replace')}")
        return value

    def statfs(self) -> FsStats:
        st = os.statvfs(self.repo.vfs_dir)
        return FsStats(st.f_frsize, st.f_blocks, self.inode_count())
