"""A repository: create, open, lock, resolve revisions, and read records.

A repository is a ``.vfs`` directory inside a workspace, or a bare directory of the
same layout (``vfs init --bare``). This module knows where things are and how to read
them; operations (snapshot, checkout, diff, gc, fsck) live in their own modules and
use what is here. Reading never takes the lock: LMDB gives every reader a consistent
picture while one writer works.

Thread-safety: a ``Repo`` may be shared by threads for reading (the tree cache has a
lock); writing operations run one at a time under ``Repo.lock``.
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import errno
import fcntl
import io
import os
import re
import threading
import time
import tomllib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..records.chunking import ChunkParams
from ..errors import (
    AmbiguousRevision, CorruptObject, IsADirectory, LockBusy, MissingObject,
    NotADirectory, NotARepository, PathNotFound, RepositoryExists, UnknownRevision,
    UnsupportedFormat, from_oserror,
)
from ..store.index import Index
from . import refs as _refs
from ..records.model import (
    ChunkLoc, ChunkRef, Commit, Kind, ObjectId, Tree, TreeEntry, decode_commit,
    decode_file, decode_tree,
)
from ..store.blocks import BlockTable
from ..store.local import LocalStore
from ..store.reader import ChunkReader

FORMAT_VERSION = 1
VFS_DIR = ".vfs"
DEFAULT_BRANCH = "main"
_HEX = re.compile(r"^[0-9a-f]{4,64}$")
_REV_SUFFIX = re.compile(r"^(.*?)(?:~(\d*))?$")


@dataclass(frozen=True, slots=True)
class LogEntry:
    id: ObjectId
    commit: Commit
    refs: tuple[str, ...]


def _write_config(path: str, params: ChunkParams) -> None:
    lines = [
        "# versionfs repository settings (see docs/format.md)",
        "[versionfs]",
        f"format = {FORMAT_VERSION}",
        "",
        "[chunking]",
        *(f"{k} = {v}" for k, v in params.as_dict().items()),
        "",
    ]
    write_text_atomic(path, "\n".join(lines))


def write_text_atomic(path: str, text: str) -> None:
    """Write a small settings file whole or not at all: tmp, fsync, rename."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def repo_at(path: str) -> tuple[str, str | None] | None:
    """``(vfs_dir, workspace)`` when ``path`` itself is a bare repository or a
    workspace (not a parent of one), else None."""
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, "config.toml")) and \
            os.path.isdir(os.path.join(path, "index.lmdb")):
        return path, None
    cand = os.path.join(path, VFS_DIR)
    if os.path.isfile(os.path.join(cand, "config.toml")):
        return cand, path
    return None


def find_repo_dir(start: str) -> tuple[str, str | None]:
    """``(vfs_dir, workspace)`` for ``start`` or its nearest parent holding one.

    A bare repository has no workspace (None); only ``start`` itself may be bare.
    """
    path = os.path.abspath(start)
    found = repo_at(path)
    if found is not None:
        return found
    probe = path
    while True:
        cand = os.path.join(probe, VFS_DIR)
        if os.path.isfile(os.path.join(cand, "config.toml")):
            return cand, probe
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    raise NotARepository(
        f"not a versionfs repository (or any parent up to /): {path}; "
        "run 'vfs init' there first, or pass the repository path"
    )


class Repo:
    """An open repository. Use ``Repo.init`` or ``Repo.open``."""

    def __init__(self, vfs_dir: str, workspace: str | None, *, readonly: bool = False):
        self.vfs_dir = vfs_dir
        self.workspace = workspace
        self.config = self._read_config()
        c = self.config.get("chunking", {})
        self.params = ChunkParams(**{k: int(v) for k, v in c.items()}) if c else ChunkParams()
        self.index = Index(os.path.join(vfs_dir, "index.lmdb"), readonly=readonly)
        self.store = LocalStore(vfs_dir, self.index)
        # the one read path
        self.reader = ChunkReader(self.store, self.store, blocks=BlockTable(self.index))
        self._trees: OrderedDict[bytes, Tree] = OrderedDict()
        self._trees_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------
    @classmethod
    def init(cls, path: str = ".", *, bare: bool = False,
             params: ChunkParams | None = None) -> Repo:
        path = os.path.abspath(path)
        vfs_dir = path if bare else os.path.join(path, VFS_DIR)
        if os.path.exists(os.path.join(vfs_dir, "config.toml")):
            raise RepositoryExists(f"a versionfs repository already exists at {vfs_dir}")
        try:
            os.makedirs(vfs_dir, exist_ok=True)
            for sub in ("objects", "packs", "tmp"):
                os.makedirs(os.path.join(vfs_dir, sub), exist_ok=True)
            open(os.path.join(vfs_dir, "lock"), "a").close()
            idx = Index(os.path.join(vfs_dir, "index.lmdb"))
            with idx.write() as txn:
                txn.put("meta", b"format", str(FORMAT_VERSION).encode())
                _refs.set_head(txn, _refs.BRANCH_PREFIX + DEFAULT_BRANCH, expect=_refs.ANY)
            idx.close()
            _write_config(os.path.join(vfs_dir, "config.toml"), params or ChunkParams())
        except OSError as exc:
            raise from_oserror(exc, f"creating the repository at {vfs_dir}") from None
        return cls(vfs_dir, None if bare else path)

    @classmethod
    def open_repo(cls, path: str = ".", *, readonly: bool = False) -> Repo:
        """Open the repository at ``path`` or its nearest parent."""
        vfs_dir, workspace = find_repo_dir(path)
        return cls(vfs_dir, workspace, readonly=readonly)

    def close(self) -> None:
        self.store.close()
        self.index.close()

    def __enter__(self) -> Repo:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_config(self) -> dict:
        path = os.path.join(self.vfs_dir, "config.toml")
        try:
            with open(path, "rb") as f:
                config = tomllib.load(f)
        except OSError as exc:
            raise from_oserror(exc, f"reading {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise CorruptObject(f"{path} is not valid TOML ({exc}); fix or restore it") from None
        fmt = config.get("versionfs", {}).get("format")
        if fmt != FORMAT_VERSION:
            raise UnsupportedFormat(
                f"repository format {fmt!r} at {self.vfs_dir} is not supported by this "
                f"versionfs (it reads format {FORMAT_VERSION}); upgrade versionfs"
            )
        return config

    # -- locking ---------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, *, wait: bool = True, timeout: float | None = None,
             on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the repository write lock for the block.

        Waits (telling ``on_wait`` once) while another writer holds it, or raises
        ``LockBusy`` when ``wait`` is false or ``timeout`` passes.
        """
        path = os.path.join(self.vfs_dir, "lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self._acquire(fd, wait, timeout, on_wait)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _acquire(self, fd, wait, timeout, on_wait) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        msg = f"the repository is locked by process {holder} (another write is running)"
        if not wait:
            raise LockBusy(f"{msg}; wait for it to finish and retry")
        if on_wait:
            on_wait(f"{msg}; waiting…")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError:
                if deadline is not None and time.monotonic() > deadline:
                    raise LockBusy(f"{msg}; gave up after {timeout:g} s") from None
                time.sleep(0.05)

    # -- refs and revisions --------------------------------------------------
    def head_state(self) -> _refs.Head:
        """What HEAD names: a branch or a detached commit (``refs.Head``)."""
        with self.index.read() as txn:
            return _refs.read_head(txn)

    def head_ref(self) -> str | None:
        """The branch HEAD follows (``heads/main``), or None when detached."""
        return self.head_state().branch

    def head(self) -> ObjectId | None:
        """The commit HEAD stands on; None before the first commit."""
        with self.index.read() as txn:
            return _refs.head_commit(txn)

    def refs(self, prefix: str = "") -> dict[str, ObjectId]:
        with self.index.read() as txn:
            return _refs.list_refs(txn, prefix)

    def resolve(self, rev: str) -> ObjectId:
        """The commit id named by ``rev`` (id or prefix, tag, branch, HEAD, X~N)."""
        rev = rev.strip()
        m = _REV_SUFFIX.match(rev)
        base, back = m.group(1), m.group(2)
        steps = 0 if back is None else int(back or 1)
        cid = self._resolve_base(base or "HEAD", rev)
        for _ in range(steps):
            parents = self.commit(cid).parents
            if not parents:
                raise UnknownRevision(f"revision {rev!r} goes back past the first commit")
            cid = parents[0]
        return cid

    def _resolve_base(self, name: str, rev: str) -> ObjectId:
        with self.index.read() as txn:
            if name == "HEAD":
                cid = _refs.head_commit(txn)
                if cid is None:
                    raise UnknownRevision("HEAD has no commit yet; run 'vfs snapshot' first")
                return cid
            for ref in (name, f"tags/{name}", f"heads/{name}", f"remotes/{name}"):
                if ref.startswith((_refs.TAG_PREFIX, _refs.BRANCH_PREFIX,
                                   _refs.REMOTE_PREFIX)):
                    cid = _refs.read_ref(txn, ref)
                    if cid is not None:
                        return cid
            low = name.lower()
            if _HEX.match(low):
                matches = self._prefix_matches(txn, low)
                if len(matches) == 1:
                    return matches[0]
                if len(matches) > 1:
                    shown = ", ".join(m.short for m in matches[:5])
                    raise AmbiguousRevision(
                        f"revision {name!r} is ambiguous ({shown}); give more hex digits")
            names = [_refs.short_name(r) for r in _refs.list_refs(txn)] + ["HEAD"]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else \
            "; 'vfs log' lists commits and 'vfs tag' lists tags"
        raise UnknownRevision(f"unknown revision {rev!r}{hint}")

    @staticmethod
    def _prefix_matches(txn, low: str) -> list[ObjectId]:
        even = low[: len(low) // 2 * 2]
        out = []
        for key in txn.keys("commits", bytes.fromhex(even)):
            if key.hex().startswith(low):
                out.append(ObjectId(key))
            if len(out) > 5:
                break
        return out

    def split_rev_path(self, spec: str, default_rev: str = "HEAD") -> tuple[ObjectId, str]:
        """``REV:PATH`` (or ``REV``) → ``(commit id, path)``; path normalized."""
        rev, sep, path = spec.partition(":")
        return self.resolve(rev or default_rev), normalize_path(path) if sep else ""

    # -- records ----------------------------------------------------------
    def commit(self, cid: bytes) -> Commit:
        with self.index.read() as txn:
            raw = txn.get("commits", cid)
        if raw is None:
            raise MissingObject(f"commit {ObjectId(cid).short} is missing; run 'vfs fsck'",
                                object_id=bytes(cid))
        return decode_commit(raw)

    def tree_bytes(self, tid: bytes) -> bytes:
        """The stored encoding of tree ``tid``, neither decoded nor cached (diff and
        checkout compare trees row by row: ``records.model.decode_tree_rows``)."""
        with self.index.read() as txn:
            raw = txn.get("trees", tid)
        if raw is None:
            raise MissingObject(f"tree {ObjectId(tid).short} is missing; run 'vfs fsck'",
                                object_id=bytes(tid))
        return raw

    def tree(self, tid: bytes) -> Tree:
        with self._trees_lock:
            tree = self._trees.get(tid)
            if tree is not None:
                self._trees.move_to_end(tid)
                return tree
        tree = decode_tree(self.tree_bytes(tid))
        with self._trees_lock:
            self._trees[tid] = tree
            while len(self._trees) > 4096:
                self._trees.popitem(last=False)
        return tree

    def root_entry(self, cid: bytes) -> TreeEntry:
        c = self.commit(cid)
        return TreeEntry("", Kind.DIR, 0o755, 0, c.time_ns, c.tree)

    def entry(self, cid: bytes, path: str) -> TreeEntry:
        """The tree entry at ``path`` (``""`` is the root) in commit ``cid``."""
        entry = self.root_entry(cid)
        walked = []
        for part in [p for p in path.split("/") if p]:
            if not entry.is_dir:
                raise NotADirectory(f"{'/'.join(walked)} is not a directory in "
                                    f"{ObjectId(cid).short}")
            found = self.tree(entry.id).get(part)
            walked.append(part)
            if found is None:
                raise PathNotFound(f"path {'/'.join(walked)!r} does not exist in commit "
                                   f"{ObjectId(cid).short}; 'vfs ls' lists what it has")
            entry = found
        return entry

    def chunks(self, entry: TreeEntry) -> tuple[ChunkRef, ...]:
        """The chunks of a file entry, in order."""
        if entry.size == 0:
            return ()
        if entry.size < self.params.threshold:
            return (ChunkRef(entry.id, entry.size),)
        with self.index.read() as txn:
            raw = txn.get("files", entry.id)
        if raw is None:
            raise MissingObject(f"file record {entry.id.short} is missing; run 'vfs fsck'")
        return decode_file(raw).chunks

    def chunk_loc(self, cid: bytes) -> ChunkLoc:
        """Where chunk ``cid``'s bytes are (``MissingObject`` if nowhere)."""
        return self.reader.locate(cid)

    def read_chunk(self, cid: bytes) -> bytes:
        """A whole chunk, checked against its id, through the one read path
        (``store.reader``: re-located once if gc moved it meanwhile)."""
        return self.reader.read(cid)

    def open_file(self, rev: str, path: str) -> VfsFile:
        """A read-only, seekable binary file of ``path`` in ``rev``; every chunk
        read is checked against its id (``CorruptObject`` on mismatch)."""
        cid = self.resolve(rev)
        entry = self.entry(cid, normalize_path(path))
        if entry.kind is Kind.DIR:
            raise IsADirectory(f"{path!r} is a directory in {cid.short}")
        if entry.kind is Kind.SYMLINK:
            return VfsFile(self, entry, (), link=entry.target)
        return VfsFile(self, entry, self.chunks(entry))

    def walk(self, tid: bytes, prefix: str = "") -> Iterator[tuple[str, TreeEntry]]:
        """Every entry below tree ``tid`` as ``(path, entry)``, depth first."""
        for e in self.tree(tid).entries:
            path = f"{prefix}{e.name}"
            yield path, e
            if e.is_dir:
                yield from self.walk(e.id, path + "/")

    def log(self, rev: str = "HEAD", limit: int | None = None) -> list[LogEntry]:
        """Commits reachable from ``rev`` along first parents, newest first."""
        try:
            cid = self.resolve(rev)
        except UnknownRevision:
            if rev == "HEAD" and self.head() is None:
                return []
            raise
        names: dict[bytes, list[str]] = {}
        for name, target in self.refs().items():
            names.setdefault(bytes(target), []).append(name)
        out = []
        seen = set()
        while cid is not None and cid not in seen and (limit is None or len(out) < limit):
            seen.add(cid)
            c = self.commit(cid)
            out.append(LogEntry(cid, c, tuple(sorted(names.get(bytes(cid), ())))))
            cid = c.parents[0] if c.parents else None
        return out


class _OpenMethod:
    """``Repo.open(path)`` opens a repository; ``repo.open(rev, path)`` a file in it."""

    def __get__(self, obj, cls):
        return cls.open_repo if obj is None else obj.open_file


Repo.open = _OpenMethod()


def normalize_path(path: str) -> str:
    """A commit-relative path without leading/trailing slashes or ``.`` parts."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathNotFound(f"path {path!r} may not contain '..'")
    return "/".join(parts)


class VfsFile(io.RawIOBase):
    """A file of a commit, read chunk by chunk with each chunk verified."""

    def __init__(self, repo: Repo, entry: TreeEntry, chunks, link: bytes | None = None):
        super().__init__()
        self.repo = repo
        self.entry = entry
        self.size = len(link) if link is not None else entry.size
        self._link = link
        self._chunks = chunks
        self._starts = []
        pos = 0
        for c in chunks:
            self._starts.append(pos)
            pos += c.length
        self._pos = 0
        self._cache: tuple[int, bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = base + offset
        return self._pos

    def _chunk(self, i: int) -> bytes:
        if self._cache is not None and self._cache[0] == i:
            return self._cache[1]
        data = self.repo.read_chunk(self._chunks[i].id)
        self._cache = (i, data)
        return data

    def readinto(self, buf) -> int:
        if self._pos >= self.size:
            return 0
        if self._link is not None:
            data = self._link[self._pos: self._pos + len(buf)]
        else:
            i = bisect.bisect_right(self._starts, self._pos) - 1
            chunk = self._chunk(i)
            off = self._pos - self._starts[i]
            data = chunk[off: off + len(buf)]
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)
