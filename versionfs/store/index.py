"""The LMDB index: the only module that imports lmdb.

One LMDB environment holds every record of a repository in named databases
(documented in docs/format.md). Readers take short read transactions and never block
writers; one writer at a time is ensured above this layer by the repository lock, and
by LMDB itself. A write transaction either commits whole or leaves nothing behind, so
the index is always consistent after a crash.

Thread-safety: an ``Index`` may be shared by threads; each transaction belongs to the
thread that opened it (``lock=False`` is safe because versionfs never shares a txn).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import threading
from collections.abc import Iterator
from itertools import islice, takewhile

import lmdb

from ..errors import CorruptObject, StorageFull, VfsError
from ..records.model import (
    ChunkLoc, ObjectId, decode_chunkloc, encode_chunkloc,
)

DB_NAMES = ("meta", "chunks", "files", "trees", "commits", "refs", "statcache",
            "runs", "runcache", "dirstate", "dircache", "blocks")

# A sparse reservation: LMDB maps this much address space but the file grows only
# with the data. 1 TiB of address space costs nothing on 64-bit Linux.
MAP_SIZE = 1 << 40


# LMDB forbids opening one environment twice in a process, so every ``Index`` of the
# same path shares one environment, closed when the last of them closes.
_ENVS: dict[str, list] = {}
_ENVS_LOCK = threading.Lock()


def _open_env(path: str, readonly: bool, max_dbs: int = len(DB_NAMES) + 2):
    key = os.path.realpath(path)
    with _ENVS_LOCK:
        held = _ENVS.get(key)
        if held is not None:
            held[1] += 1
            return held[0]
        try:
            env = lmdb.open(
                path, map_size=MAP_SIZE, max_dbs=max_dbs, subdir=True,
                readonly=readonly, lock=True, max_readers=512, readahead=False,
                metasync=True, sync=True, create=not readonly,
            )
        except lmdb.Error as exc:
            raise VfsError(f"cannot open the index at {path}: {exc}; run 'vfs fsck'") from None
        _ENVS[key] = [env, 1]
        return env


def _close_env(path: str) -> None:
    key = os.path.realpath(path)
    with _ENVS_LOCK:
        held = _ENVS.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _ENVS[key]
            held[0].close()


class Index:
    """One LMDB environment and its named databases (a repository's ``DB_NAMES``
    unless ``names`` says otherwise: a remote's local state has its own)."""

    def __init__(self, path: str, *, readonly: bool = False,
                 names: tuple[str, ...] = DB_NAMES):
        self.path = path
        # LMDB allows one environment per path and process, shared by every Index
        # there, so it is opened writable whenever the files allow: a read-only
        # Index (a mount) must not stop a writer in the same process.
        self.env = _open_env(path, readonly and not os.access(path, os.W_OK), len(names) + 2)
        self._closed = False
        self._map: tuple[int, int] | tuple[()] | None = None  # willneed's (fd, base)
        self.dbs = {}
        if readonly:
            # Opened outside a transaction: handles opened inside a read-only one
            # are invalid once it ends.
            for name in names:
                try:
                    self.dbs[name] = self.env.open_db(name.encode(), create=False)
                except lmdb.NotFoundError:
                    pass   # a table a newer version adds (dirstate, dircache, blocks): reads as empty
        else:
            with self.env.begin(write=True) as txn:
                for name in names:
                    self.dbs[name] = self.env.open_db(name.encode(), txn=txn)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._map:
                os.close(self._map[0])
            _close_env(self.path)

    @contextlib.contextmanager
    def read(self) -> Iterator[Txn]:
        txn = self.env.begin(buffers=False)
        try:
            yield Txn(txn, self.dbs)
        finally:
            txn.abort()

    @contextlib.contextmanager
    def write(self) -> Iterator[Txn]:
        """A write transaction: commits when the block ends without an exception."""
        try:
            txn = self.env.begin(write=True)
        except lmdb.Error as exc:
            raise _translate(exc) from None
        try:
            yield Txn(txn, self.dbs)
        except BaseException:
            txn.abort()
            raise
        try:
            txn.commit()
        except lmdb.Error as exc:
            raise _translate(exc) from None

    def sync(self) -> None:
        self.env.sync(True)

    def release_pages(self) -> None:
        """Give back this process's mapped pages of the index (best effort).

        LMDB reads through a shared mapping of ``data.mdb``, and every page a read
        touched stays mapped and counted in the process's RSS although each value
        was copied out: a checkout at 1,000,000 files touched 180 MB of them.
        ``MADV_DONTNEED`` drops only the page-table entries; the page cache keeps
        the pages, and the next read of one faults it back in. Safe while other
        threads read (the same view of the same file)."""
        _release_mapped(os.path.realpath(os.path.join(self.path, "data.mdb")))


    def willneed(self, db: str, keys) -> None:
        """Have the kernel read the pages of these values (those present, of a page
        or more) into the page cache now. The environment is opened without
        readahead, which suits B-tree lookups, but then a large value comes in one
        4 KiB page fault at a time: 70 KB of a tree in 17 disk reads, one after
        another. A reader about to get many (the mount, listing a directory's
        subdirectories) calls this on worker threads: it blocks while the pages
        are read (``posix_fadvise`` of the file's range), copies nothing, and
        unmaps what the kernel mapped meanwhile (``MADV_DONTNEED``: the pages stay
        in the page cache), so it adds nothing to this process's resident size."""
        where = self._file_and_map()
        if not where:
            return
        fd, base = where
        spans = []
        with self.env.begin(buffers=True) as txn:
            handle = self.dbs[db]
            for key in keys:
                value = txn.get(key, db=handle)  # maps the value's first page
                if value is not None and len(value) >= mmap.PAGESIZE:
                    addr = _address(value)
                    os.posix_fadvise(fd, addr - base, len(value), os.POSIX_FADV_WILLNEED)
                    spans.append((addr & ~(mmap.PAGESIZE - 1), addr + len(value)))
        for start, end in spans:  # last: a later value's fault maps earlier ones' pages
            _madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)

    def _file_and_map(self) -> tuple[int, int] | tuple[()]:
        """An fd of ``data.mdb`` and where LMDB mapped its offset 0, or ()."""
        with _ENVS_LOCK:
            if self._map is None:
                self._map = _find_map(os.path.join(self.path, "data.mdb"))
            return self._map


class _PyBuffer(ctypes.Structure):  # Py_buffer, part of the stable ABI
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p),
                ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                ("internal", ctypes.c_void_p)]


try:
    _madvise = ctypes.CDLL(None, use_errno=True).madvise
    _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    _get_buffer = ctypes.pythonapi.PyObject_GetBuffer
    _get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
    _release_buffer = ctypes.pythonapi.PyBuffer_Release
    _release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
except (OSError, AttributeError):  # not CPython, or no libc: no read-ahead, no release
    _madvise = _get_buffer = None
_MADV_DONTNEED = 4


def _address(value) -> int:
    """Where a buffer's bytes are (an LMDB value of a ``buffers=True`` transaction
    points into the map)."""
    view = _PyBuffer()
    _get_buffer(value, ctypes.byref(view), 0)
    try:
        return view.buf
    finally:
        _release_buffer(ctypes.byref(view))


def _find_map(data: str) -> tuple[int, int] | tuple[()]:
    """(read-only fd of ``data``, address of its mapping at file offset 0), or ()."""
    if _get_buffer is None or not hasattr(os, "posix_fadvise"):
        return ()
    real = os.path.realpath(data)
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if (len(parts) == 6 and parts[5].rstrip("\n") == real
                        and int(parts[2], 16) == 0):
                    base = int(parts[0].split("-")[0], 16)
                    return os.open(real, os.O_RDONLY | os.O_CLOEXEC), base
    except OSError:
        pass
    return ()


def _release_mapped(path: str) -> None:
    if _madvise is None:
        return
    try:
        with open("/proc/self/maps") as f:
            spans = [line.split()[0] for line in f
                     if line.rstrip().endswith(path) and line.split()[1] == "r--s"]
    except OSError:
        return
    for span in spans:
        start, end = (int(x, 16) for x in span.split("-"))
        _madvise(start, end - start, _MADV_DONTNEED)


def _translate(exc: lmdb.Error) -> VfsError:
    if isinstance(exc, lmdb.MapFullError) or "No space" in str(exc):
        return StorageFull("no space left to write the index; free some space and retry")
    return VfsError(f"index error: {exc}")


class Txn:
    """A transaction with typed accessors for each database."""

    __slots__ = ("txn", "dbs")

    def __init__(self, txn, dbs):
        self.txn = txn
        self.dbs = dbs

    # -- raw access -----------------------------------------------------
    def get(self, db: str, key: bytes) -> bytes | None:
        handle = self.dbs.get(db)
        return None if handle is None else self.txn.get(key, db=handle)

    def put(self, db: str, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        try:
            return self.txn.put(key, value, db=self.dbs[db], overwrite=overwrite)
        except lmdb.Error as exc:
            raise _translate(exc) from None

    def delete(self, db: str, key: bytes) -> bool:
        return self.txn.delete(key, db=self.dbs[db])

    def has(self, db: str, key: bytes) -> bool:
        handle = self.dbs.get(db)
        return handle is not None and self.txn.get(key, db=handle) is not None

    def items(self, db: str, prefix: bytes = b"", *,
              start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Keys and values whose keys start with ``prefix``, in key order, from the
        first key at or above ``start`` (default: ``prefix``)."""
        if db not in self.dbs:  # read-only, and an older versionfs made no such db
            return
        with self.txn.cursor(db=self.dbs[db]) as cur:
            if not cur.set_range(prefix if start is None else start):
                return
            for key, value in cur:
                if not key.startswith(prefix):
                    return
                yield key, value

    def keys(self, db: str, prefix: bytes = b"", *,
             start: bytes | None = None) -> Iterator[bytes]:
        for key, _ in self.items(db, prefix, start=start):
            yield key

    def as_dict(self, db: str) -> dict[bytes, bytes]:
        """Every key and value of ``db`` in one pass (a C loop: ~1 µs per entry)."""
        with self.txn.cursor(db=self.dbs[db]) as cur:
            return dict(cur.iternext(keys=True, values=True))

    def dict_under(self, db: str, prefix: bytes, limit: int) -> dict[bytes, bytes] | None:
        """The keys and values of ``db`` whose keys start with ``prefix``, in one C
        loop like ``as_dict``; None if there are more than ``limit``."""
        with self.txn.cursor(db=self.dbs[db]) as cur:
            if not cur.set_range(prefix):
                return {}
            it = cur.iternext(keys=True, values=True)
            end = _above(prefix)
            if end is not None:   # (end,) > (key, value) exactly while key < end
                it = takewhile((end,).__gt__, it)
            found = dict(islice(it, limit + 1))
        return found if len(found) <= limit else None

    def children(self, db: str, prefix: bytes) -> Iterator[tuple[bytes, bool]]:
        """The keys of ``db`` one level below ``prefix`` (a ``/``-separated path with
        its trailing ``/``, or b"" for the top): ``(key, False)`` for each key with no
        further ``/``, ``(prefix + name + b"/", True)`` once for each name with keys
        deeper down, which are skipped by one seek. The cost follows the number of
        children, not of descendants."""
        n = len(prefix)
        with self.txn.cursor(db=self.dbs[db]) as cur:
            found = cur.set_range(prefix)
            while found:
                key = cur.key()
                if not key.startswith(prefix):
                    return
                cut = key.find(b"/", n)
                if cut < 0:
                    yield key, False
                    found = cur.next()
                else:
                    yield key[:cut + 1], True
                    found = cur.set_range(key[:cut] + b"0")  # b"0" is b"/" + 1

    def count(self, db: str) -> int:
        return self.txn.stat(self.dbs[db])["entries"]

    # -- typed helpers ---------------------------------------------------
    def chunk_loc(self, cid: bytes) -> ChunkLoc | None:
        raw = self.get("chunks", cid)
        return decode_chunkloc(raw) if raw is not None else None

    def put_chunk_loc(self, cid: bytes, loc: ChunkLoc) -> None:
        self.put("chunks", cid, encode_chunkloc(loc))

    def ref(self, name: str) -> ObjectId | None:
        raw = self.get("refs", name.encode())
        if raw is None:
            return None
        if len(raw) != 32:
            raise CorruptObject(f"ref {name} is malformed; run 'vfs fsck'")
        return ObjectId(raw)

    def set_ref(self, name: str, cid: bytes) -> None:
        self.put("refs", name.encode(), bytes(cid))

    def refs(self, prefix: str = "") -> dict[str, ObjectId]:
        return {k.decode(): ObjectId(v) for k, v in self.items("refs", prefix.encode())}

    def meta(self, key: str) -> bytes | None:
        return self.get("meta", key.encode())


def _above(prefix: bytes) -> bytes | None:
    """The least key above every key starting with ``prefix`` (None: there is none)."""
    stem = prefix.rstrip(b"\xff")
    return stem[:-1] + bytes([stem[-1] + 1]) if stem else None


def index_exists(path: str) -> bool:
    return os.path.exists(os.path.join(path, "data.mdb"))
