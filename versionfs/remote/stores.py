"""The primitives of one kind of remote store, below ``remote.backend``.

A ``RemoteStore`` does one request per call and says nothing about retries or
messages: ``Backend`` retries what ``classify`` calls transient and words every
error. Two implementations live here (S3 has its own module, ``remote.s3``):

* ``DirStore`` — a directory (``file:///dir`` or a plain path). A new object is
  written to ``.vfs-remote-tmp/``, fsynced and hard-linked to its name (``link``
  fails when the name exists, so create-if-absent is atomic); compare-and-swap
  holds an ``flock`` on ``.vfs-remote-lock`` around read, compare and rename. The
  tag is the BLAKE3 of the content. Both internal names are hidden from ``list``.
* ``FsspecStore`` — any other fsspec filesystem through its generic methods.
  ``memory://`` is atomic (one process; all its mutations hold one lock);
  elsewhere the check and the write are separate requests (``atomic_cas`` False),
  so such a remote falls back to a lock object.

Names are '/'-separated and relative to the store's root (``Backend`` checks them).
Thread-safe: every method may be called from many threads at once.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import inspect
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

from ..records.hashing import hash_bytes


class Failure(enum.Enum):
    """What an exception from a store means (``RemoteStore.classify``)."""

    TRANSIENT = "transient"  # connection, timeout, 5xx, throttling: try again
    AUTH = "auth"            # credentials or permission refused
    MISSING = "missing"      # the object is absent
    INVALID = "invalid"      # the remote itself is unusable (no such bucket, bad name)
    OTHER = "other"          # any other refusal by the store: worded, not retried


class RemoteStore(Protocol):
    """One request per call. Absent objects raise ``FileNotFoundError`` where a
    method has no other answer for them."""

    atomic_cas: bool  # the store honours put_if/delete_if atomically

    def get(self, name: str) -> bytes: ...
    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes; fewer only when the object is shorter."""
    def get_tagged(self, name: str) -> tuple[bytes, str] | None: ...
    def head(self, name: str) -> tuple[int, float] | None:
        """(size, last-modified unix seconds), None when absent."""
    def list(self, prefix: str) -> list[tuple[str, int]]: ...
    def put_new(self, name: str, data: bytes, conditional: bool) -> None:
        """Write unless the name exists (``conditional``: ask the store to refuse
        an existing name; else look first)."""
    def put_if(self, name: str, data: bytes, expect: str | None) -> bool: ...
    def delete(self, name: str) -> None: ...
    def delete_if(self, name: str, expect: str) -> bool: ...
    def classify(self, exc: BaseException) -> Failure | None:
        """What ``exc`` means; None when it is no store failure (a bug: re-raised)."""
    def close(self) -> None: ...


# errnos of a local or network filesystem worth another try (NFS, FUSE stores)
_TRANSIENT_ERRNOS = {errno.ETIMEDOUT, errno.ESTALE, errno.EAGAIN, errno.ECONNRESET,
                     errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                     errno.ECONNABORTED}


def classify_oserror(exc: BaseException) -> Failure | None:
    """The meaning of a builtin exception raised by a filesystem or fsspec."""
    if isinstance(exc, FileNotFoundError):
        return Failure.MISSING
    if isinstance(exc, PermissionError):
        return Failure.AUTH
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return Failure.TRANSIENT
    if isinstance(exc, OSError):
        return Failure.TRANSIENT if exc.errno in _TRANSIENT_ERRNOS else Failure.OTHER
    return None


def content_tag(data: bytes) -> str:
    """The version tag of stores without one of their own: BLAKE3 of the content."""
    return hash_bytes(data).hex()


def _timestamp(value) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return None


def coerce_options(options: dict | None, cls: type) -> dict:
    """fsspec keyword arguments from ``--option key=value`` strings.

    A string becomes the type of the parameter's default in ``cls.__init__`` (bool
    from true/false/1/0/yes/no, int, float); ``a.b=v`` fills the dict argument ``a``
    (``client_kwargs.region_name=eu-west-1``); other values are kept as given.
    """
    params = inspect.signature(cls.__init__).parameters
    out: dict = {}
    for key, value in (options or {}).items():
        if "." in key and isinstance(value, str):
            outer, inner = key.split(".", 1)
            out.setdefault(outer, {})[inner] = _literal(value)
            continue
        default = params[key].default if key in params else None
        out[key] = _as_type(value, default) if isinstance(value, str) else value
    return out


_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


def _as_type(value: str, default):
    if isinstance(default, bool):
        low = value.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError(f"expected true or false, got {value!r}")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


def _literal(value: str):
    low = value.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(value)
    except ValueError:
        return value


# -- a directory ------------------------------------------------------------------

TMP_DIR = ".vfs-remote-tmp"
LOCK_FILE = ".vfs-remote-lock"


def _tagged(store, name: str) -> tuple[bytes, str] | None:
    """The object and its tag (the BLAKE3 of its bytes), for stores whose only
    version of an object is its content."""
    try:
        data = store.get(name)
    except FileNotFoundError:
        return None
    return data, content_tag(data)


class DirStore:
    """A remote that is a directory on this machine (or a network mount)."""

    atomic_cas = True

    def __init__(self, root: str):
        self.root = root

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/"))

    def get(self, name: str) -> bytes:
        with open(self._path(name), "rb") as f:
            return f.read()

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            parts, got = [], 0
            while got < length:
                part = os.pread(fd, length - got, offset + got)
                if not part:
                    break
                parts.append(part)
                got += len(part)
            return b"".join(parts)
        finally:
            os.close(fd)

    def get_tagged(self, name: str) -> tuple[bytes, str] | None:
        return _tagged(self, name)

    def head(self, name: str) -> tuple[int, float] | None:
        try:
            st = os.stat(self._path(name))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (st.st_size, st.st_mtime) if stat.S_ISREG(st.st_mode) else None

    def list(self, prefix: str) -> list[tuple[str, int]]:
        return sorted(self._walk(self.root, "", prefix))

    def _walk(self, path: str, rel: str, prefix: str) -> Iterator[tuple[str, int]]:
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if not rel and entry.name in (TMP_DIR, LOCK_FILE):
                continue
            name = rel + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    sub = name + "/"
                    if sub.startswith(prefix) or prefix.startswith(sub):
                        yield from self._walk(entry.path, sub, prefix)
                elif entry.is_file(follow_symlinks=False) and name.startswith(prefix):
                    yield name, entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:  # deleted while listed
                continue

    def _write_tmp(self, data: bytes) -> str:
        tmp_dir = os.path.join(self.root, TMP_DIR)
        os.makedirs(tmp_dir, exist_ok=True)
        tmp = os.path.join(tmp_dir, secrets.token_hex(12))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def _fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put_new(self, name: str, data: bytes, conditional: bool) -> None:
        final = self._path(name)
        if os.path.lexists(final):
            return
        tmp = self._write_tmp(data)
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            try:
                os.link(tmp, final)
            except FileExistsError:
                return  # written meanwhile by someone else: same name, same bytes
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                os.replace(tmp, final)  # no hard links here: same bytes if it races
            self._fsync_dir(os.path.dirname(final))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    @contextlib.contextmanager
    def _cas_lock(self) -> Iterator[None]:
        os.makedirs(self.root, exist_ok=True)
        fd = os.open(os.path.join(self.root, LOCK_FILE),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # per open file: threads exclude each other too
            yield
        finally:
            os.close(fd)

    def _matches(self, name: str, expect: str | None) -> bool:
        current = self.get_tagged(name)
        return current is None if expect is None else \
            current is not None and current[1] == expect

    def put_if(self, name: str, data: bytes, expect: str | None) -> bool:
        with self._cas_lock():
            if not self._matches(name, expect):
                return False
            final = self._path(name)
            tmp = self._write_tmp(data)
            try:
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.replace(tmp, final)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            self._fsync_dir(os.path.dirname(final))
            return True

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(name))

    def delete_if(self, name: str, expect: str) -> bool:
        with self._cas_lock():
            if not self._matches(name, expect):
                return False
            self.delete(name)
            return True

    def classify(self, exc: BaseException) -> Failure | None:
        if isinstance(exc, NotADirectoryError):
            return Failure.MISSING  # a name below a file cannot exist
        return classify_oserror(exc)

    def close(self) -> None:
        pass


# -- any fsspec filesystem ---------------------------------------------------------

# MemoryFileSystem keeps one store per process (a class attribute), so one lock for
# all of its mutations makes its compare-and-swap atomic across Backend instances.
MEMORY_LOCK = threading.Lock()


class FsspecStore:
    """A remote reached through the generic methods of an fsspec filesystem."""

    def __init__(self, fs, root: str, *, atomic: bool, lock: threading.Lock | None = None):
        self.fs = fs
        self.root = root.rstrip("/")
        self.atomic_cas = atomic
        self._lock = lock or threading.Lock()

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if self.root else name

    def get(self, name: str) -> bytes:
        return self.fs.cat_file(self._path(name))

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self.fs.cat_file(self._path(name), start=offset, end=offset + length)

    def get_tagged(self, name: str) -> tuple[bytes, str] | None:
        return _tagged(self, name)

    def head(self, name: str) -> tuple[int, float] | None:
        try:
            info = self.fs.info(self._path(name))
        except FileNotFoundError:
            return None
        if info.get("type") != "file":
            return None
        for key in ("mtime", "LastModified", "modified", "last_modified", "created"):
            when = _timestamp(info.get(key))
            if when is not None:
                return int(info["size"]), when
        return int(info["size"]), 0.0

    def list(self, prefix: str) -> list[tuple[str, int]]:
        folder = prefix.rpartition("/")[0]
        try:
            found = self.fs.find(self._path(folder) if folder else self.root or "/",
                                 detail=True)
        except FileNotFoundError:
            return []
        start = len(self.root) + 1 if self.root else 0
        out = []
        for path, info in found.items():
            name = self.fs._strip_protocol(path)[start:]
            if info.get("type") == "file" and name.startswith(prefix):
                out.append((name, int(info["size"])))
        return sorted(out)

    def _pipe(self, name: str, data: bytes) -> None:
        path = self._path(name)
        parent = path.rpartition("/")[0]
        if parent and not self.atomic_cas:  # object stores need no directories
            self.fs.makedirs(parent, exist_ok=True)
        self.fs.pipe_file(path, data)

    def put_new(self, name: str, data: bytes, conditional: bool) -> None:
        with self._lock:
            if not self.fs.exists(self._path(name)):
                self._pipe(name, data)

    def _matches(self, name: str, expect: str | None) -> bool:
        current = self.get_tagged(name)
        return current is None if expect is None else \
            current is not None and current[1] == expect

    def put_if(self, name: str, data: bytes, expect: str | None) -> bool:
        with self._lock:
            if not self._matches(name, expect):
                return False
            self._pipe(name, data)
            return True

    def delete(self, name: str) -> None:
        with self._lock, contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(name))

    def delete_if(self, name: str, expect: str) -> bool:
        with self._lock:
            if not self._matches(name, expect):
                return False
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._path(name))
            return True

    def classify(self, exc: BaseException) -> Failure | None:
        return classify_oserror(exc)

    def close(self) -> None:
        pass
