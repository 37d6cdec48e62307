"""Blob storage: the only module that opens blob and pack files.

Two kinds of blob hold chunk bytes:

* objects/ab/cdef… — a whole-file blob, made by cloning a workspace file (FICLONE,
  instant and free on XFS/btrfs) into tmp/, hashing the clone and renaming it here.
* packs/ab/cdef… — many chunks appended, written to tmp/, fsynced, then renamed.

Blobs are immutable and read-only once renamed into place. Everything is first written
under tmp/ on the same filesystem and renamed only when durable, so a crash leaves at
worst an orphan in tmp/ (removed by ``vfs gc``), never a torn blob.

Thread-safety: ``BlobReader`` may be shared by threads (``pread`` on cached fds under a
lock for the cache only); ``PackWriter`` belongs to one thread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
from collections import OrderedDict

from ..errors import CorruptObject, MissingObject, from_oserror
from ..records.hashing import hash_bytes, hasher
from ..records.model import BlobKind, ChunkLoc, ObjectId
from .interface import BlobInfo

FICLONE = 0x40049409  # _IOW(0x94, 9, int) from linux/fs.h
FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap) from linux/fs.h
_FIEMAP_FLAG_SYNC = 0x1
_FIEMAP_EXTENT_LAST = 0x1
# Extents whose physical address says nothing certain about their bytes.
_FIEMAP_VAGUE = 0x2 | 0x4 | 0x8 | 0x100 | 0x200 | 0x400 | 0x800
_FIEMAP_HEAD = struct.Struct("=QQIIII")
_FIEMAP_EXTENT = struct.Struct("=QQQQQIIII")
_FIEMAP_BATCH = 256

# Errnos meaning "this filesystem cannot clone", as opposed to a real failure.
NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS,
              errno.EPERM}

PACK_TARGET = 64 << 20


def fan_out(root: str, oid: bytes) -> str:
    h = oid.hex()
    return os.path.join(root, h[:2], h[2:])


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ObjectStore:
    """Paths and writes of blobs under one repository's ``.vfs`` directory."""

    def __init__(self, vfs_dir: str):
        self.objects = os.path.join(vfs_dir, "objects")
        self.packs = os.path.join(vfs_dir, "packs")
        self.tmp = os.path.join(vfs_dir, "tmp")
        self._reflink: bool | None = None

    def blob_path(self, kind: BlobKind, blob: bytes) -> str:
        return fan_out(self.objects if kind is BlobKind.OBJECT else self.packs, blob)

    def tmp_path(self, tag: str) -> str:
        return os.path.join(self.tmp, f"{tag}-{os.getpid()}-{os.urandom(8).hex()}")

    # -- reflinks -------------------------------------------------------
    def reflinks(self) -> bool:
        """Whether tmp/ (and so objects/) can clone files; probed once."""
        if self._reflink is None:
            src, dst = self.tmp_path("probe"), self.tmp_path("probe")
            try:
                with open(src, "wb") as f:
                    f.write(b"versionfs reflink probe")
                self._reflink = clone_file(src, dst)
            finally:
                for p in (src, dst):
                    try:
                        os.unlink(p)
                    except FileNotFoundError:
                        pass
        return self._reflink

    def clone_to_tmp(self, src_fd: int) -> str | None:
        """Clone an open file into tmp/; None when the filesystem cannot clone."""
        dst = self.tmp_path("clone")
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            fcntl.ioctl(dfd, FICLONE, src_fd)
        except OSError as exc:
            os.close(dfd)
            os.unlink(dst)
            if exc.errno in NO_REFLINK:
                return None
            raise from_oserror(exc, "cloning a file into the cache") from None
        os.close(dfd)
        return dst

    def clone_object(self, oid: bytes, dst_fd: int, size: int) -> bool:
        """Clone the whole-file blob objects/<oid> of ``size`` bytes into ``dst_fd``.

        False when there is no such blob (or its size differs) or the filesystem
        cannot clone between the two (no reflinks, another filesystem): the caller
        then copies chunk by chunk. The clone shares extents copy-on-write, so
        writing to the copy never changes the blob. Thread-safe (own fd).
        """
        try:
            sfd = os.open(fan_out(self.objects, oid), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise from_oserror(exc, f"opening blob {ObjectId(oid).short}") from None
        try:
            if os.fstat(sfd).st_size != size:
                return False
            fcntl.ioctl(dst_fd, FICLONE, sfd)
            return True
        except OSError as exc:
            if exc.errno in NO_REFLINK:
                return False
            raise from_oserror(exc, "cloning a blob out of the cache") from None
        finally:
            os.close(sfd)

    def shared_with_object(self, fd: int, oid: bytes) -> list[tuple[int, int]]:
        """Byte ranges ``[start, end)`` where open file ``fd`` and object ``oid`` use
        the very same disk blocks at the same offsets, so hold the same bytes.

        Empty when the object is absent or the filesystem cannot tell (FIEMAP).
        """
        try:
            ofd = os.open(fan_out(self.objects, oid), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return []
        try:
            return shared_ranges(extents(fd), extents(ofd))
        except OSError:
            return []
        finally:
            os.close(ofd)

    def install_object(self, tmp: str, oid: bytes) -> bool:
        """Rename a finished tmp blob to objects/; False if it already existed."""
        return self._install(tmp, fan_out(self.objects, oid))

    def _install(self, tmp: str, final: str) -> bool:
        parent = os.path.dirname(final)
        if os.path.exists(final):
            os.unlink(tmp)
            return False
        os.makedirs(parent, exist_ok=True)
        os.rename(tmp, final)
        return True

    def pack_writer(self) -> PackWriter:
        return PackWriter(self)

    def remove_blob(self, kind: BlobKind, blob: bytes) -> int:
        """Delete a blob; returns the bytes it occupied (0 if it was absent)."""
        path = self.blob_path(kind, blob)
        try:
            size = os.stat(path).st_blocks * 512
            os.unlink(path)
        except FileNotFoundError:
            return 0
        return size

    def blob_infos(self):
        """Every installed blob as a ``BlobInfo`` (kind, id, size, allocated)."""
        for kind, blob in self.iter_blobs():
            try:
                st = os.stat(self.blob_path(kind, blob))
            except FileNotFoundError:  # removed since the listing
                continue
            yield BlobInfo(kind, blob, st.st_size, st.st_blocks * 512)

    def iter_blobs(self):
        """Every installed blob as ``(kind, ObjectId)``."""
        for kind, root in ((BlobKind.OBJECT, self.objects), (BlobKind.PACK, self.packs)):
            try:
                fans = sorted(os.listdir(root))
            except FileNotFoundError:
                continue
            for fan in fans:
                d = os.path.join(root, fan)
                for rest in sorted(os.listdir(d)):
                    try:
                        yield kind, ObjectId.from_hex(fan + rest)
                    except ValueError:
                        continue


def extents(fd: int) -> list[tuple[int, int, int]]:
    """``(logical, physical, length)`` of each mapped extent of a file (FIEMAP).

    Extents whose physical address is not a fact about their bytes (delayed
    allocation, inline, encoded, unwritten...) are left out.
    """
    out = []
    start = 0
    while True:
        buf = bytearray(_FIEMAP_HEAD.size + _FIEMAP_EXTENT.size * _FIEMAP_BATCH)
        _FIEMAP_HEAD.pack_into(buf, 0, start, (1 << 64) - 1 - start, _FIEMAP_FLAG_SYNC, 0,
                               _FIEMAP_BATCH, 0)
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
        mapped = _FIEMAP_HEAD.unpack_from(buf, 0)[3]
        if mapped == 0:
            return out
        for i in range(mapped):
            logical, physical, length, _, _, flags, _, _, _ = _FIEMAP_EXTENT.unpack_from(
                buf, _FIEMAP_HEAD.size + i * _FIEMAP_EXTENT.size)
            if not flags & _FIEMAP_VAGUE:
                out.append((logical, physical, length))
            if flags & _FIEMAP_EXTENT_LAST:
                return out
        start = logical + length


def shared_ranges(a, b) -> list[tuple[int, int]]:
    """Logical ranges where two extent lists map to the same physical bytes."""
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        la, pa, na = a[i]
        lb, pb, nb = b[j]
        lo, hi = max(la, lb), min(la + na, lb + nb)
        if lo < hi and pa - la == pb - lb:
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        if la + na <= lb + nb:
            i += 1
        else:
            j += 1
    return out


def clone_file(src: str, dst: str) -> bool:
    """Clone ``src`` to a new file ``dst``; False when the filesystem cannot."""
    sfd = os.open(src, os.O_RDONLY)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            fcntl.ioctl(dfd, FICLONE, sfd)
            return True
        except OSError as exc:
            if exc.errno in NO_REFLINK:
                return False
            raise
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


class PackWriter:
    """Appends chunks to packs in tmp/; ``finish`` makes them durable and visible.

    ``add`` returns the chunk's location as it will be once finished. Small chunks are
    gathered in memory and written in large blocks; packs roll over at about 64 MiB so
    gc can drop or rewrite them piecewise. Sealed packs are fsynced together in
    ``finish`` rather than one by one, so the disk is never idle waiting for a sync.
    """

    FLUSH = 8 << 20     # gather small chunks up to this much per write
    DIRECT = 256 << 10  # chunks from this size are written as they come (no copy)

    def __init__(self, store: ObjectStore):
        self.store = store
        self._fd: int | None = None
        self._tmp = ""
        self._name = None
        self._size = 0
        self._buf = bytearray()
        self._sealed: list[tuple[int, str, ObjectId]] = []
        self.bytes_written = 0

    def _open(self) -> None:
        self._tmp = self.store.tmp_path("pack")
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                           0o444)
        self._name = ObjectId(os.urandom(32))
        self._size = 0

    def add(self, data) -> ChunkLoc:
        if self._fd is None:
            self._open()
        loc = ChunkLoc(BlobKind.PACK, self._name, self._size, len(data))
        if len(data) >= self.DIRECT:
            self._flush()
            self._write(data)
        else:
            self._buf += data
            if len(self._buf) >= self.FLUSH:
                self._flush()
        self._size += len(data)
        self.bytes_written += len(data)
        if self._size >= PACK_TARGET:
            self._seal()
        return loc

    def _write(self, data) -> None:
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            raise from_oserror(exc, "writing a pack file") from None

    def _flush(self) -> None:
        if self._buf:
            self._write(self._buf)
            self._buf = bytearray()

    def _seal(self) -> None:
        self._flush()
        self._sealed.append((self._fd, self._tmp, self._name))
        self._fd = None

    def finish(self) -> list[ObjectId]:
        """fsync and rename every pack into packs/; returns their ids."""
        if self._fd is not None:
            self._seal()
        names = []
        dirs = set()
        try:
            for fd, _, _ in self._sealed:
                try:
                    os.fsync(fd)
                except OSError as exc:
                    raise from_oserror(exc, "syncing a pack file") from None
            for fd, tmp, name in self._sealed:
                final = fan_out(self.store.packs, name)
                dirs.add(os.path.dirname(final))
                self.store._install(tmp, final)
                names.append(name)
            for d in dirs:
                fsync_dir(d)
        finally:
            for fd, _, _ in self._sealed:
                os.close(fd)
            self._sealed.clear()
        return names

    def abort(self) -> None:
        """Forget everything not yet finished and delete its temporary files."""
        if self._fd is not None:
            self._buf = bytearray()
            self._sealed.append((self._fd, self._tmp, self._name))
            self._fd = None
        for fd, tmp, _ in self._sealed:
            os.close(fd)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self._sealed.clear()


class _OpenBlob:
    """An fd with a count of reads in flight, so eviction never closes it under one."""

    __slots__ = ("fd", "users", "evicted")

    def __init__(self, fd: int):
        self.fd = fd
        self.users = 0
        self.evicted = False


class BlobReader:
    """Reads chunk bytes from blobs through a small cache of open fds.

    An fd evicted from the cache while a thread is reading through it is closed only
    when that read ends: closing it earlier would let the number be reused by another
    open file, and the read would return that file's bytes.
    """

    def __init__(self, store: ObjectStore, max_fds: int = 128):
        self.store = store
        self._fds: OrderedDict[tuple[int, bytes], _OpenBlob] = OrderedDict()
        self._max = max_fds
        self._lock = threading.Lock()

    def _acquire(self, kind: BlobKind, blob: bytes) -> _OpenBlob:
        key = (kind, blob)
        with self._lock:
            held = self._fds.get(key)
            if held is not None:
                self._fds.move_to_end(key)
                held.users += 1
                return held
        path = self.store.blob_path(kind, blob)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise MissingObject(
                f"blob {ObjectId(blob).short} is missing from the cache ({path}); "
                "run 'vfs fsck'"
            ) from None
        with self._lock:
            held = self._fds.get(key)
            if held is not None:
                os.close(fd)
            else:
                held = self._fds[key] = _OpenBlob(fd)
                while len(self._fds) > self._max:
                    _, victim = self._fds.popitem(last=False)
                    victim.evicted = True
                    if victim.users == 0:
                        os.close(victim.fd)
            held.users += 1
            return held

    def _release(self, held: _OpenBlob) -> None:
        with self._lock:
            held.users -= 1
            if held.evicted and held.users == 0:
                os.close(held.fd)

    def forget(self, kind: BlobKind, blob: bytes) -> None:
        """Close the cached fd of a blob that was deleted (once no read uses it),
        so the deleted file's disk space is given back now, not at fd eviction."""
        with self._lock:
            held = self._fds.pop((kind, blob), None)
            if held is not None:
                held.evicted = True
                if held.users == 0:
                    os.close(held.fd)

    def pread(self, loc: ChunkLoc, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of a chunk (or of a range inside it), unverified."""
        if length is None:
            length = loc.length - offset
        held = self._acquire(loc.blob_kind, loc.blob)
        try:
            data = os.pread(held.fd, length, loc.offset + offset)
        finally:
            self._release(held)
        if len(data) != length:
            raise CorruptObject(
                f"blob {loc.blob.short} is truncated (wanted {length} bytes at "
                f"{loc.offset + offset}, got {len(data)}); run 'vfs fsck --verify-data'"
            )
        return data

    def read_verified(self, cid: bytes, loc: ChunkLoc) -> bytes:
        """A whole chunk, checked against its id."""
        data = self.pread(loc)
        if hash_bytes(data) != cid:
            raise CorruptObject(
                f"chunk {ObjectId(cid).short} in blob {loc.blob.short} is damaged "
                "(its bytes do not match its id); run 'vfs fsck --verify-data'"
            )
        return data

    def close(self) -> None:
        with self._lock:
            for held in self._fds.values():
                held.evicted = True
                if held.users == 0:
                    os.close(held.fd)
            self._fds.clear()


__all__ = ["ObjectStore", "PackWriter", "BlobReader", "clone_file", "fan_out",
           "fsync_dir", "hasher"]
