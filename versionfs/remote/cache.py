"""The local disk chunk cache: fetched chunk bytes on disk by chunk id, LRU by bytes.

A lazy mount of a remote version reads chunk bytes from here and fetches the ones
not here yet. Layout under the cache's root:

* ``chunks/ab/cdef…`` — one file per chunk, named by its 64-hex id (fanned out like
  ``.vfs/packs``). A chunk id names its bytes, so an entry is never stale: one root
  may serve every mount and process of the machine, different versions, even
  different remotes.
* ``tmp/<pid>-<random>`` — a chunk being written. It is renamed into ``chunks/``
  only when complete (and synced, unless ``fsync=False``), so no reader ever sees a
  torn file; a crash leaves only a tmp file, removed at the next start once the
  process that wrote it is dead.

Bounds: after every ``put``, in the putting thread, the least recently used chunks
are deleted until the cache holds at most ``max_bytes`` and the filesystem has at
least ``min_free`` bytes free. A *pinned* chunk (being fetched or read: ``pin``) is
never evicted, nor the chunk just put. Recency is the order of ``locate`` hits and
``put``s in this process; each one also touches the file's mtime, so the scan at
start (and a rescan after every ``max_bytes / 4`` bytes put, which also learns the
chunks other processes added) orders files by their last use in any process.

Several processes sharing a root each keep their own tally and evict by it. A file
another process deletes while this one reads it stays readable through the open fd
(Linux keeps an unlinked file until its last fd closes); a lookup that finds it gone
answers None, and ``store.reader`` then fetches it again. Open fds of deleted files
hold their space until closed: at most ``max_fds`` of them.

Thread-safety: any number of threads at once (one lock around the tally, held for
the unlinks of an eviction too, so a chunk pinned meanwhile is never deleted).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import CorruptObject, MissingObject, from_oserror
from ..records.model import BlobKind, ChunkLoc, ObjectId
from ..store.blobs import BlobReader, fan_out

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What a ``ChunkDiskCache`` holds as this process knows it, and its traffic:
    ``hits``/``misses`` of ``locate``, chunks ``put`` and ``evicted``."""

    bytes: int
    entries: int
    max_bytes: int
    hits: int
    misses: int
    puts: int
    evicted: int

    def as_dict(self) -> dict:
        return {"bytes": self.bytes, "entries": self.entries, "max_bytes": self.max_bytes,
                "hits": self.hits, "misses": self.misses, "puts": self.puts,
                "evicted": self.evicted}


def free_space(path: str) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class ChunkDiskCache:
    """Chunk bytes in files under ``root``, bounded by ``max_bytes`` and ``min_free``.

    ``free`` measures free space (injectable for tests); ``fsync=False`` skips the
    sync before a chunk is renamed into place (faster; after a power loss a file may
    then hold zeros, which verified reads report as ``CorruptObject``).

    Error handling: writes that fail raise the matching ``VfsError`` (``StorageFull``
    when the disk is full) and leave nothing behind; ``load`` of a chunk no longer
    here raises ``MissingObject``.
    """

    def __init__(self, root: str, max_bytes: int, *, min_free: int = 1 << 30,
                 fsync: bool = True, max_fds: int = 32,
                 free: Callable[[str], int] = free_space):
        self.root = root
        self.max_bytes = max_bytes
        self.min_free = min_free
        self.fsync = fsync
        self._free = free
        self._chunks = os.path.join(root, "chunks")
        self._tmp = os.path.join(root, "tmp")
        try:
            os.makedirs(self._chunks, exist_ok=True)
            os.makedirs(self._tmp, exist_ok=True)
        except OSError as exc:
            raise from_oserror(exc, f"creating the chunk cache {root}") from None
        self._lock = threading.Lock()
        self._sizes: OrderedDict[bytes, int] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._pins: dict[bytes, int] = {}
        self._hits = self._misses = self._puts = self._evicted = 0
        self._since_scan = 0
        self._scan_lock = threading.Lock()
        self._dropped: set[bytes] | None = None  # deleted while a rescan walks
        self._reader = BlobReader(self, max_fds=max_fds)
        self._remove_leftovers()
        self.rescan()

    # -- paths (BlobReader asks for them) -----------------------------------------
    def blob_path(self, kind: BlobKind, blob: bytes) -> str:
        return fan_out(self._chunks, blob)

    # -- the tally ------------------------------------------------------------------
    def _remove_leftovers(self) -> None:
        """Delete tmp files of processes that are gone (writes a crash cut short)."""
        me = os.getpid()
        for name in os.listdir(self._tmp):
            pid = name.split("-", 1)[0]
            if pid.isdigit() and (int(pid) == me or _pid_alive(int(pid))):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._tmp, name))

    def _walk(self) -> Iterator[tuple[int, bytes, int]]:
        """``(mtime_ns, chunk id, size)`` of every chunk file now under ``chunks/``."""
        for fan in os.scandir(self._chunks):
            if len(fan.name) != 2 or not fan.is_dir():
                continue
            for entry in os.scandir(fan.path):
                name = fan.name + entry.name
                if len(name) != 64 or not _HEX.issuperset(name):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # evicted since the listing
                    continue
                yield st.st_mtime_ns, bytes.fromhex(name), st.st_size

    def rescan(self) -> None:
        """Learn the root's files afresh (other processes add and evict), ordered by
        last use (mtime); chunks put meanwhile by this process stay the newest, and
        those it deleted meanwhile stay gone. One rescan at a time: a second caller
        returns at once."""
        if not self._scan_lock.acquire(blocking=False):
            return
        try:
            with self._lock:
                self._dropped = set()
            found = sorted(self._walk())
            with self._lock:
                dropped, self._dropped = self._dropped, None
                old = self._sizes
                self._sizes = OrderedDict((cid, size) for _, cid, size in found
                                          if cid not in dropped)
                for cid, size in old.items():
                    if cid not in self._sizes:  # put after the walk listed its directory
                        self._sizes[cid] = size
                self._bytes = sum(self._sizes.values())
                self._since_scan = 0
        finally:
            self._scan_lock.release()

    def _drop(self, cid: bytes) -> None:
        """Take ``cid`` out of the tally (caller holds the lock)."""
        size = self._sizes.pop(cid, None)
        if size is not None:
            self._bytes -= size
        if self._dropped is not None:
            self._dropped.add(cid)

    # -- reads ------------------------------------------------------------------------
    def locate(self, cid: bytes) -> ChunkLoc | None:
        """The chunk's place here (kind ``CACHE``, the whole file), or None."""
        path = fan_out(self._chunks, cid)
        with self._lock:
            size = self._sizes.get(cid)
            if size is not None:
                self._sizes.move_to_end(cid)
        try:
            with contextlib.suppress(PermissionError):  # another user's file: no touch
                os.utime(path)  # the recency every process sees; and it is still here
            if size is None:  # put by another process
                size = os.stat(path).st_size
        except FileNotFoundError:
            with self._lock:
                self._misses += 1
                if cid in self._sizes and not os.path.exists(path):  # not put meanwhile
                    self._drop(cid)
            return None
        with self._lock:
            self._hits += 1
            if cid not in self._sizes:
                self._sizes[cid] = size
                self._bytes += size
        return ChunkLoc(BlobKind.CACHE, ObjectId(cid), 0, size)

    def load(self, loc: ChunkLoc, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of the chunk at ``loc`` (or a range of it), unverified."""
        try:
            return self._reader.pread(loc, offset, length)
        except (MissingObject, CorruptObject):
            # gone (evicted by another process), or short (damaged): fetch it anew
            self._discard(loc.blob)
            raise MissingObject(f"chunk {loc.blob.short} left the chunk cache "
                                f"{self.root}; read it again to fetch it",
                                object_id=loc.blob) from None

    def _discard(self, cid: bytes) -> None:
        """Forget a chunk whose file is gone or short, deleting what is left, so
        the next lookup misses and the reader fetches it again."""
        with self._lock:
            self._drop(cid)
        self._reader.forget(BlobKind.CACHE, cid)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fan_out(self._chunks, cid))

    def is_local(self, loc: ChunkLoc) -> bool:
        return True

    # -- writes -----------------------------------------------------------------------
    def put(self, cid: bytes, data) -> ChunkLoc:
        """Keep ``data`` (the caller verified it is chunk ``cid``); returns its place.

        Evicts least recently used chunks afterwards if the cache is over a bound."""
        final = fan_out(self._chunks, cid)
        if not os.path.exists(final):
            self._write(final, data)
        size = len(data)
        with self._lock:
            self._puts += 1
            if cid in self._sizes:
                self._sizes.move_to_end(cid)
            else:
                self._sizes[cid] = size
                self._bytes += size
            self._since_scan += size
            rescan = self._since_scan >= max(self.max_bytes // 4, 1)
        if rescan:
            self.rescan()
        self._evict(keep=cid)
        return ChunkLoc(BlobKind.CACHE, ObjectId(cid), 0, size)

    def _write(self, final: str, data) -> None:
        tmp = os.path.join(self._tmp, f"{os.getpid()}-{os.urandom(8).hex()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.rename(tmp, final)  # atomic; a twin written meanwhile has the same bytes
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise from_oserror(exc, f"writing a chunk into the chunk cache {self.root}") \
                from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _evict(self, keep: bytes) -> None:
        """Delete least recently used, unpinned chunks (never ``keep``) until both
        bounds hold or nothing more may go."""
        free = self._free(self.root) if self.min_free else 0
        with self._lock:
            victims, total = [], self._bytes
            for cid, size in self._sizes.items():
                if total <= self.max_bytes and free >= self.min_free:
                    break
                if cid == keep or self._pins.get(cid):
                    continue
                victims.append(cid)
                total -= size
                free += size
            for cid in victims:
                self._drop(cid)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(fan_out(self._chunks, cid))
                self._reader.forget(BlobKind.CACHE, cid)
            self._evicted += len(victims)

    # -- pins, stats ------------------------------------------------------------------
    @contextlib.contextmanager
    def pin(self, cid: bytes) -> Iterator[None]:
        """While held, ``cid`` is not evicted by this process (here yet or not)."""
        with self._lock:
            self._pins[cid] = self._pins.get(cid, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                n = self._pins[cid] - 1
                if n:
                    self._pins[cid] = n
                else:
                    del self._pins[cid]

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._bytes, len(self._sizes), self.max_bytes, self._hits,
                              self._misses, self._puts, self._evicted)

    def close(self) -> None:
        """Close the open fds (the files stay for the next user of the root)."""
        self._reader.close()
