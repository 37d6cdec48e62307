"""The ``View``: inodes, lookup, readdir, read and xattrs over one repository.

See the package docstring for the design. Thread-safety: every method may be called
from any thread; inode tables sit behind one lock, which ``read`` takes only briefly.
"""

from __future__ import annotations

import bisect
import errno
import os
import shlex
import stat
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Iterator

from ..errors import MissingObject, NoSuchAttribute, NotADirectory, PathNotFound, VfsError
from ..records.chunking import AVG_SIZE
from ..records.model import Commit, Kind, ObjectId, TreeEntry
from ..repo import producers
from ..repo.repository import Repo
from .chunks import ChunkCache, Content
from .records import (
    ROOT_INO, XATTR_CMD, XATTR_COMMIT, XATTR_ID, XATTR_RUN, XATTR_STAGE, Attr, DirEntry,
    FsStats, OpenedFile,
)
from .tables import FILE_BIT as _FILE_BIT, FileTable, PackedTree, TreeCache, ino_candidates

_IDX_BITS = 32               # a locator is (directory inode << 32) | entry index
_IDX_MASK = (1 << _IDX_BITS) - 1
_XATTR_PREFIX = b"user.versionfs."
REMOTE_PREFETCH = 64 << 20  # mountpoint-s3 and hf-mount grow theirs to 64-128 MiB
LOCAL_PREFETCH = 2 * AVG_SIZE  # two chunks: 4 or 8 measured no faster


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
                 tree_cache_entries: int = 150_000, prefetch_bytes: int | None = None,
                 prefetch_workers: int = 2, verify: str = "chunk"):
        self.repo = repo
        self.rev = rev
        self.commit_id = repo.resolve(rev) if rev is not None else None
        self.chunks = ChunkCache(repo, cache_bytes, prefetch_workers, verify=verify)
        self.prefetch_bytes = self._prefetch_bytes(prefetch_bytes, verify)
        self._trees = TreeCache(repo, tree_cache_entries)
        self._lock = threading.RLock()
        self._files = FileTable()
        self._dirs: dict[int, _Dir] = {}
        self._children: dict[tuple, int] = {}
        self._open: dict[int, Content] = {}
        self._commits: OrderedDict[bytes, Commit] = OrderedDict()
        self._runs: OrderedDict[bytes, dict[bytes, bytes]] = OrderedDict()
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

    def _prefetch_bytes(self, wanted: int | None, verify: str) -> int:
        """The largest read-ahead batch: ``wanted``, else 64 MiB when chunks are
        fetched from a remote, else two average chunks (more measured no faster
        locally: docs/benchmarks.md). Unfetched, ``verify="off"`` reads ranges
        straight from their blobs and loads nothing ahead."""
        fetches = self.repo.reader.fetcher is not None
        if not fetches and verify == "off":
            return 0
        if wanted is not None:
            return wanted
        return REMOTE_PREFETCH if fetches else LOCAL_PREFETCH

    def close(self) -> None:
        self._trees.close()
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

    def _locate(self, ino: int) -> tuple[_Dir, int, PackedTree]:
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

    def _child(self, d: _Dir, tree: PackedTree, idx: int) -> Attr:
        """Allocate (or find) the inode of entry ``idx`` of directory ``d`` and
        count one lookup of it."""
        if not tree.is_dir(idx):
            return tree.attr(self._count_file(d, tree, idx), idx)
        return self._child_dir(d, tree, idx).attr()

    def _child_dir(self, d: _Dir, tree: PackedTree, idx: int) -> _Dir:
        """The directory instance of entry ``idx`` of ``d``, made if needed, with
        one more lookup."""
        ckey = (d.ino, idx)
        ino = self._children.get(ckey)
        if ino is None:
            _, mode, size, mtime, oid = tree.fields(idx)
            child = self._new_dir(d, ckey, commit=d.commit, tree=ObjectId(oid),
                                  mode=mode, mtime_ns=mtime, size=size)
        else:
            child = self._dirs[ino]
        child.nlookup += 1
        return child

    def _count_file(self, d: _Dir, tree: PackedTree, idx: int) -> int:
        """The inode of file entry ``idx``, made if needed, with one more lookup.

        The inode is a hash of the entry's content (``tables.PackedTree``), so
        identical files share it. ``count_entries`` is the same for many entries.
        """
        table = self._files
        loc = (d.ino << _IDX_BITS) | idx
        ino, chk = tree.inos[idx], tree.chks[idx]
        i = table.slot(ino)
        if table.inos[i] == 0:
            i = table.insert(i, ino, chk, loc)
            d.pins += 1
        elif table.chks[i] != chk:
            ino, i = self._clash(d, tree, idx, loc)
        table.refs[i] += 1
        if table.locs[i] != loc:
            table.aliased[i] = 1
        return ino

    def _clash(self, d: _Dir, tree: PackedTree, idx: int, loc: int) -> tuple[int, int]:
        """The entry's inode is taken by other content: the first later candidate
        that is free or holds this content, remembered in the tree."""
        table = self._files
        candidates, chk = ino_candidates(tree.key(idx))
        for ino in candidates:
            i = table.slot(ino)
            if table.inos[i] == 0:
                i = table.insert(i, ino, chk, loc)
                d.pins += 1
            elif table.chks[i] != chk:
                continue
            tree.inos[idx] = ino
            return ino, i
        raise VfsError("inode hash clash on three candidates; this cannot happen")

    def count_entries(self, ino: int, tree: PackedTree, lo: int, hi: int) -> array:
        """Count one lookup of each of entries ``lo`` to ``hi`` (exclusive) of
        directory ``ino`` listing ``tree`` (``listing``), as handing them to the
        kernel in a listing does; returns their inodes. Entries a caller could not
        pass on must be ``forget``-ed. Files are counted by ``FileTable.add_refs`` in
        one loop; directories, and the rare clash, by ``_child_dir``/``_count_file``."""
        with self._lock:
            d = self._dir(ino)
            out = tree.inos[lo:hi]
            added, skipped = self._files.add_refs(out, tree.chks, lo, d.ino << _IDX_BITS)
            d.pins += added
            for j in skipped:
                idx = lo + j
                out[j] = self._count_file(d, tree, idx) if out[j] else \
                    self._child_dir(d, tree, idx).ino
        return out

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

    def fixed_listing(self, ino: int) -> bool:
        """Whether directory ``ino`` lists the same entries for as long as it exists
        (a commit's directory: yes; the all-versions view's own: no). Cheap: its
        tree is not loaded."""
        with self._lock:
            return self._dir(ino).commit is not None

    def listing(self, ino: int) -> PackedTree | None:
        """The tree that directory ``ino`` lists (its entry ``i`` has offset
        ``i + 3``: ``.`` and ``..`` come first), or None for a virtual directory of
        the all-versions view. For callers that list fast (``count_entries``)."""
        with self._lock:
            d = self._dir(ino)
        return None if d.commit is None else self._trees.get(d.tree)

    def prefetch_subtrees(self, tree: PackedTree) -> None:
        """Read ahead the trees of ``tree``'s subdirectories (``TreeCache.prefetch``):
        a listing's caller is about to walk into them."""
        if tree.ndirs:
            self._trees.prefetch([bytes(tree.fields(i)[4]) for i in tree.dirs])

    def readdir(self, ino: int, offset: int = 0) -> Iterator[DirEntry]:
        """Entries from ``offset`` on (0 starts; each entry gives the next).

        ``.`` and ``..`` come first and count no lookup; every other entry yielded
        counts one lookup of its inode: a caller that cannot pass an entry on must
        ``forget`` it. (``listing`` and ``count_entries`` do the same in batches.)
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
            child = self.count_entries(ino, tree, idx, idx + 1)[0]
            yield DirEntry(tree.name(idx), tree.attr(child, idx), idx + 3)

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

    def forget(self, items) -> list[int]:
        """Drop ``n`` lookups of each ``(ino, n)``; inodes reaching zero are freed.

        Returns the directories, still there, that lost a subdirectory's inode: a
        subdirectory looked up again gets a new inode number, so a listing of such
        a parent kept from before (the kernel's cache) shows a stale one for it."""
        stale: list[_Dir] = []
        with self._lock:
            for ino, n in items:
                if ino & _FILE_BIT:
                    self._forget_file(ino, n, stale)
                elif ino in self._dirs:
                    d = self._dirs[ino]
                    d.nlookup = max(0, d.nlookup - n)
                    self._maybe_free(d, stale)
            return [d.ino for d in stale if self._dirs.get(d.ino) is d]

    def _forget_file(self, ino: int, n: int, stale: list) -> None:
        t = self._files
        i = t.slot(ino)
        if t.inos[i] != ino:
            return
        t.refs[i] = max(0, t.refs[i] - n)
        if t.refs[i] == 0 and ino not in self._open:
            d = self._dirs[t.locs[i] >> _IDX_BITS]
            t.remove(i)
            d.pins -= 1
            self._maybe_free(d, stale)

    def _maybe_free(self, d: _Dir, stale: list) -> None:
        while d.nlookup == 0 and d.pins == 0 and d.ino != ROOT_INO:
            del self._dirs[d.ino]
            del self._children[d.key]
            d = self._dirs[d.parent]
            d.pins -= 1
            stale.append(d)

    def inode_count(self) -> int:
        with self._lock:
            return len(self._dirs) + self._files.count

    def open(self, ino: int) -> int:
        """Prepare ``ino`` for reading; returns the handle to pass to ``read``
        (the inode itself: content is shared by every open of it)."""
        e = self._entry(ino)
        if e.kind is not Kind.FILE:
            raise PathNotFound(f"inode {ino} is not a regular file")
        content = Content(e.size, self.repo.chunks(e))
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

    def read(self, fh: int, offset: int, size: int, *, load: bool = True,
             pread: bool = True):
        """Up to ``size`` bytes at ``offset`` (fewer at the end, ``b""`` past it).

        Returns bytes or a memoryview. Unless the view was made with
        ``verify="off"``, every byte comes from a chunk that matched its id, or from
        a 16 KiB block that matched the block hash recorded from such a chunk (now,
        or earlier through the same blob range: see ``ChunkCache``).
        ``load=False``: return None rather than load (read and hash) a whole chunk;
        ``pread=False`` too: None rather than read anything not cached. So a caller
        can answer cached reads, and small ranges, without a thread.
        """
        with self._lock:
            c = self._open.get(fh)
        opened = c is not None
        if c is None:
            e = self._entry(fh)
            c = Content(e.size, self.repo.chunks(e))
        end = min(offset + size, c.size)
        if offset < 0 or offset >= end:
            return b""
        i = bisect.bisect_right(c.starts, offset) - 1
        parts, pos, cache = [], offset, self.chunks
        by_block = not c.streaming(offset)  # a random read checks 16 KiB blocks
        if by_block and opened and not c.digests_asked and len(c.chunks) > 1:
            c.digests_asked = True  # a file read at random: its block hashes, at once
            cache.want_blocks(c.chunks)
        while pos < end:
            start, ref = c.starts[i], c.chunks[i]
            stop = min(end - start, ref.length)
            data = cache.peek(ref)
            if data is not None:
                parts.append(memoryview(data)[pos - start: stop])
            elif not pread and not load:
                return None
            else:
                part = cache.read_range(ref, pos - start, stop - (pos - start),
                                        by_block=by_block) if pread else None
                if part is None and not load:
                    return None
                parts.append(part if part is not None else
                             cache.get_range(ref, pos - start, stop - (pos - start)))
            pos = start + stop
            i += 1
        # a sequential reader gets the next chunks loaded while it consumes these
        with self._lock:
            batch = c.read_ahead(offset, end, i, self.prefetch_bytes)
        if batch is not None:
            cache.prefetch(c.chunks[batch[0]: batch[1]])
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def place(self, ino: int) -> tuple[int, int, bool]:
        """Where file inode ``ino`` came from: ``(directory inode, entry index,
        exact)``, ``exact`` False if another entry led to the same inode too. Cheap
        (an open of an observed run pays it); ``dir_place`` and ``opened`` say more."""
        with self._lock:
            t = self._files
            i = t.slot(ino) if ino & _FILE_BIT else -1
            if i < 0 or t.inos[i] != ino:
                raise _gone(f"file inode {ino}")
            loc = t.locs[i]
            return loc >> _IDX_BITS, loc & _IDX_MASK, not t.aliased[i]

    def dir_place(self, ino: int) -> tuple[str, str, bytes]:
        """``(commit hex, path inside the commit, tree id)`` of a commit's directory
        (the path is ``""`` for the commit's root, else ends with ``/``)."""
        with self._lock:
            d = self._dir(ino)
            tree_id, steps = d.tree, []
            # up to the commit's root: its parent is virtual, or it is the mount's root
            while d.ino != ROOT_INO and self._dirs[d.parent].commit is not None:
                parent = self._dirs[d.parent]
                steps.append((parent.tree, d.key[1]))
                d = parent
            if d.commit is None:
                raise _gone(f"directory inode {ino} of a commit")
        names = [self._trees.get(tid).name(idx) for tid, idx in reversed(steps)]
        prefix = b"".join(n + b"/" for n in names).decode("utf-8", "surrogateescape")
        return d.commit.hex(), prefix, bytes(tree_id)

    def opened(self, commit: str, prefix: str, tree_id: bytes, idx: int,
               exact: bool = True) -> OpenedFile:
        """The file of entry ``idx`` of tree ``tree_id``, at ``prefix`` in ``commit``
        (as ``dir_place`` gave them: trees never change, so this works later too)."""
        tree = self._trees.get(tree_id)
        _, _, size, _, oid = tree.fields(idx)
        name = tree.name(idx).decode("utf-8", "surrogateescape")
        return OpenedFile(commit, prefix + name, bytes(oid).hex(), size, exact)

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
                cid, oid, own = d.commit, d.tree, True
            else:
                d, idx, tree = self._locate(ino)
                cid, oid, own = d.commit, ObjectId(tree.fields(idx)[4]), False
            ids = [oid] + self._enclosing_trees(d, own=own)
        out = {XATTR_ID: oid.hex().encode(), XATTR_COMMIT: cid.hex().encode()}
        out.update(self._producer(ids))
        return out

    def _enclosing_trees(self, d: _Dir, *, own: bool) -> list[bytes]:
        """Tree ids of the directories around an entry of ``d`` (``d`` itself unless
        the entry *is* ``d``), nearest first, up to but not including the commit's
        root (no run can output the whole workspace). Caller holds the lock."""
        out = []
        cur = d
        while cur.parent != cur.ino:
            up = self._dirs[cur.parent]
            if up.commit != d.commit:
                break  # cur is a commit root of the all-versions view
            if not own or cur is not d:
                out.append(cur.tree)
            cur = up
        return out

    def _producer(self, ids: list[bytes]) -> dict[bytes, bytes]:
        """The run attributes of the first of ``ids`` (an entry's content id, then
        its enclosing directories' tree ids) that a recorded run output: the newest
        such run. One LMDB get for content a run output (more only for a file no run
        output, one per enclosing directory); run records are decoded once each."""
        with self.repo.index.read() as txn:
            for oid in ids:
                for rid in reversed(producers.producer_ids(txn, oid)):
                    with self._lock:
                        attrs = self._runs.get(rid)
                    if attrs is None:
                        attrs = self._run_attrs(txn, rid)
                    if attrs:
                        return attrs
        return {}

    def _run_attrs(self, txn, rid: bytes) -> dict[bytes, bytes]:
        rec = producers.read_run(txn, rid)
        if rec is None:
            return {}
        attrs = {XATTR_RUN: rec.id.encode(),
                 XATTR_CMD: " ".join(shlex.quote(a) for a in rec.argv).encode(),
                 XATTR_STAGE: rec.name.encode()}
        with self._lock:
            self._runs[rid] = attrs
            if len(self._runs) > 1024:
                self._runs.popitem(last=False)
        return attrs

    def listxattr(self, ino: int) -> list[bytes]:
        return list(self._xattrs(ino))

    def getxattr(self, ino: int, name: bytes) -> bytes:
        if not name.startswith(b"user."):
            # "not supported" (not "no such attribute"): ls -l then stops asking
            # every file for security.selinux and ACLs on this filesystem
            raise NoSuchAttribute(f"only user.versionfs.* attributes exist here, "
                                  f"not {name.decode(errors='replace')}", errno.EOPNOTSUPP)
        value = self._xattrs(ino).get(name) if name.startswith(_XATTR_PREFIX) else None
        if value is None:
            raise NoSuchAttribute(f"no extended attribute {name.decode(errors='replace')}")
        return value

    def statfs(self) -> FsStats:
        st = os.statvfs(self.repo.vfs_dir)
        return FsStats(st.f_frsize, st.f_blocks, self.inode_count())
