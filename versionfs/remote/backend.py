"""One remote root reached through fsspec: reads, range reads, listing, immutable
writes, compare-and-swap, a lock object, and the retries around all of them.

``Backend(url)`` picks the primitives for the URL (``remote.stores``, ``remote.s3``):
``s3://bucket/prefix``; ``file:///dir`` or a plain path (a directory); ``memory://x``
(one process); any other fsspec protocol through its generic methods. Names are
'/'-separated paths relative to the root (``packs/ab/abcdef…``, ``refs/heads/main``).

Retries: transient failures only (connection errors, timeouts, HTTP 5xx, throttling),
``retries`` tries in all, exponential backoff from ``backoff`` seconds with jitter;
never for 404/403/412. What still fails becomes one ``RemoteError`` subclass that
names the URL and object and says what to do. A retried conditional write whose
first try landed answers False (the second try finds its own write): callers re-read
and compare, as after any lost race.

``cas`` says whether the store honours write conditions atomically ("conditional")
or whether writers must serialise through ``locked()`` ("lock"); ``probe_cas``
measures it. Credentials come from fsspec's usual sources (or ``options``) and are
never written anywhere by this module.

Thread-safe: any number of threads may share one Backend; ``read_ranges`` runs its
requests on a pool of ``workers`` threads.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import (RemoteAuth, RemoteBusy, RemoteCorrupt, RemoteError, RemoteInvalid,
                      RemoteMissing, RemoteUnavailable)
from .lease import Lease
from .stores import MEMORY_LOCK, DirStore, Failure, FsspecStore, RemoteStore, coerce_options

# Ranges closer than this are fetched in one request: a request costs ~20-50 ms of
# S3 latency, in which ~1 MiB more arrives at 100-200 Mbit/s.
COALESCE_GAP = 1 << 20
PROBE_WRONG_TAG = '"00000000000000000000000000000000"'


@dataclass(frozen=True, slots=True)
class BackendStats:
    """Counts since the Backend was made: requests tried (retries included), retries,
    bytes received and sent."""

    requests: int
    retries: int
    bytes_read: int
    bytes_written: int


def _check_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad remote object name {name!r}: want a relative '/'-path")
    return name


def open_store(url: str, options: dict | None = None) -> tuple[str, RemoteStore, str]:
    """(normalised url, primitives, default cas) for a remote URL."""
    if "://" not in url:
        if not url:
            raise RemoteInvalid("empty remote URL; give s3://bucket/prefix, "
                                "file:///dir or a directory path")
        path = os.path.abspath(os.path.expanduser(url))
        return path, DirStore(path), "conditional"
    protocol, rest = url.split("://", 1)
    if protocol == "file":
        if not rest.startswith("/"):
            raise RemoteInvalid(f"{url}: a file:// URL needs an absolute path "
                                f"(file:///dir); give the full path")
        return url, DirStore(os.path.normpath(rest)), "conditional"
    if protocol in ("s3", "s3a"):
        return url, _s3_store(url, rest, options), "conditional"
    return _fsspec_store(url, protocol, options)


def _s3_store(url: str, rest: str, options: dict | None) -> RemoteStore:
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise RemoteInvalid(f"{url}: no bucket; give s3://BUCKET/prefix")
    try:
        from .s3 import S3Store
    except ImportError as exc:
        raise RemoteInvalid(f"{url}: s3:// needs the s3fs package ({exc}); "
                            f"pip install s3fs") from None
    try:
        return S3Store(bucket, prefix, options)
    except (TypeError, ValueError) as exc:
        raise RemoteInvalid(f"{url}: bad option ({exc}); check the --option "
                            f"names and values (s3fs's parameters)") from None


def _fsspec_store(url: str, protocol: str, options: dict | None):
    import fsspec
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise RemoteInvalid(f"{url}: unknown protocol {protocol}://; use s3://, "
                            f"file://, memory:// or a directory path") from None
    except ImportError as exc:
        raise RemoteInvalid(f"{url}: {protocol}:// needs a package that is not "
                            f"installed ({exc}); pip install it") from None
    try:
        kwargs = coerce_options(options, cls)
        fs = cls(skip_instance_cache=True, **kwargs)
    except (TypeError, ValueError) as exc:
        raise RemoteInvalid(f"{url}: bad option ({exc}); check the --option "
                            f"names and values") from None
    root = cls._strip_protocol(url)
    if protocol == "memory":
        return url, FsspecStore(fs, root, atomic=True, lock=MEMORY_LOCK), "conditional"
    return url, FsspecStore(fs, root, atomic=False), "lock"


def _reason(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        return f"{status} {response['Error'].get('Code', '')}".strip()
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class Backend:
    """One remote root. See the module docstring; every method may raise
    ``RemoteUnavailable``, ``RemoteAuth`` and ``RemoteInvalid`` besides what it names."""

    def __init__(self, url: str, options: dict[str, str] | None = None, *,
                 retries: int = 5, backoff: float = 0.2, workers: int = 8,
                 cas: str | None = None, store: RemoteStore | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        """``cas``: the answer of an earlier ``probe_cas`` (else the kind's default);
        ``store``: primitives to use instead of the URL's (fakes, fault injection);
        ``clock``/``sleep``: time for leases and backoff (tests pass a fake)."""
        if store is None:
            url, store, default_cas = open_store(url, options)
        else:
            default_cas = "conditional" if store.atomic_cas else "lock"
        if cas not in (None, "conditional", "lock"):
            raise ValueError(f"cas must be 'conditional' or 'lock', not {cas!r}")
        self.url = url
        self.cas = cas or default_cas
        self.retries = max(1, retries)
        self.backoff = backoff
        self.workers = max(1, workers)
        self._store = store
        self._clock, self._sleep = clock, sleep
        self._pool: ThreadPoolExecutor | None = None
        self._stats_lock = threading.Lock()
        self._stats = {"requests": 0, "retries": 0, "bytes_read": 0, "bytes_written": 0}

    @property
    def store(self) -> RemoteStore:
        """The primitives underneath (tests reach fakes and fault injection here)."""
        return self._store

    def __repr__(self) -> str:
        return f"Backend({self.url!r}, cas={self.cas!r})"

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- retries and errors ------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            for key, delta in deltas.items():
                self._stats[key] += delta

    def statistics(self) -> BackendStats:
        with self._stats_lock:
            return BackendStats(**self._stats)

    def _where(self, name: str | None) -> str:
        return f"{self.url.rstrip('/')}/{name}" if name else self.url

    def _call(self, doing: str, name: str | None, fn: Callable, *args):
        """``fn(*args)`` with retries; store failures become RemoteErrors."""
        for attempt in range(1, self.retries + 1):
            self._count(requests=1)
            try:
                return fn(*args)
            except Exception as exc:
                failure = self._store.classify(exc)
                if failure is None:
                    raise
                if failure is Failure.TRANSIENT and attempt < self.retries:
                    self._count(retries=1)
                    self._sleep(self.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
                    continue
                raise self._error(failure, exc, doing, name, attempt) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, failure: Failure, exc: BaseException, doing: str,
               name: str | None, tries: int) -> RemoteError:
        where, reason = self._where(name), _reason(exc)
        if failure is Failure.TRANSIENT:
            return RemoteUnavailable(
                f"could not reach {self.url} ({doing} {name or ''}): {reason} after "
                f"{tries} tries; check the network/endpoint and run the command again",
                op=doing, path=where, cause=exc)
        if failure is Failure.AUTH:
            return RemoteAuth(
                f"{self.url} refused access ({doing} {name or ''}): {reason}; set "
                f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or "
                f"--option profile=NAME / anon=true; for a directory, check its "
                f"permissions", op=doing, path=where, cause=exc)
        if failure is Failure.MISSING:
            return RemoteMissing(
                f"{where} does not exist on the remote; push it from a repository "
                f"that has it, or check the remote URL", op=doing, path=where, cause=exc)
        if failure is Failure.INVALID:
            return RemoteInvalid(
                f"{self.url} cannot be used ({doing} {name or ''}): {reason}; check the "
                f"URL and that the bucket exists", op=doing, path=where, cause=exc)
        return RemoteError(f"{self.url} failed {doing} {name or ''}: {reason}; see the "
                           f"store's message", op=doing, path=where, cause=exc)

    # -- reading -----------------------------------------------------------------

    def read(self, name: str) -> bytes:
        """The whole object; ``RemoteMissing`` when absent."""
        data = self._call("reading", name, self._store.get, _check_name(name))
        self._count(bytes_read=len(data))
        return data

    def read_ranges(self, name: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        """The bytes of each ``(offset, length)``, in the order given.

        Ranges less than ``COALESCE_GAP`` apart share one request; requests run in
        parallel. An object shorter than a range -> ``RemoteCorrupt``."""
        _check_name(name)
        groups = _coalesce(ranges)
        if len(groups) <= 1:
            fetched = [self._fetch(name, g) for g in groups]
        else:
            fetched = list(self._executor().map(lambda g: self._fetch(name, g), groups))
        out: list[bytes] = [b""] * len(ranges)
        for (start, _end, members), data in zip(groups, fetched):
            for i in members:
                offset, length = ranges[i]
                out[i] = data[offset - start:offset - start + length]
        return out

    def _fetch(self, name: str, group: tuple[int, int, list[int]]) -> bytes:
        start, end, _ = group
        data = self._call("reading", name, self._store.get_range, name, start, end - start)
        self._count(bytes_read=len(data))
        if len(data) != end - start:
            raise RemoteCorrupt(
                f"{self._where(name)} is shorter than expected: bytes {start}-{end} asked, "
                f"{len(data)} returned; the object is truncated or was replaced, run "
                f"`vfs fsck` on a repository that pushed it and push again",
                op="reading", path=self._where(name))
        return data

    def _executor(self) -> ThreadPoolExecutor:
        with self._stats_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="vfs-remote")
            return self._pool

    def size(self, name: str) -> int | None:
        head = self._call("checking", name, self._store.head, _check_name(name))
        return None if head is None else head[0]

    def modified(self, name: str) -> float | None:
        """Last-modified time in unix seconds, None when absent."""
        head = self._call("checking", name, self._store.head, _check_name(name))
        return None if head is None else head[1]

    def list(self, prefix: str) -> list[tuple[str, int]]:
        """Every object whose name starts with ``prefix`` (``'packs/'``), recursively,
        as ``(name, size)`` sorted by name; [] when there is none."""
        if prefix.startswith("/") or ".." in prefix.split("/"):
            raise ValueError(f"bad remote prefix {prefix!r}")
        return self._call("listing", prefix, self._store.list, prefix)

    # -- writing -----------------------------------------------------------------

    def write(self, name: str, data: bytes) -> None:
        """An immutable, content-named object: atomic, and left alone when the name
        exists already (same name, same bytes)."""
        self._call("writing", name, self._store.put_new, _check_name(name), data,
                   self.cas == "conditional")
        self._count(bytes_written=len(data))

    def delete(self, name: str) -> None:
        """Remove an object; absent is fine."""
        self._call("deleting", name, self._store.delete, _check_name(name))

    def read_tagged(self, name: str) -> tuple[bytes, str] | None:
        """The object and its version tag (S3: the ETag), None when absent."""
        got = self._call("reading", name, self._store.get_tagged, _check_name(name))
        if got is not None:
            self._count(bytes_read=len(got[0]))
        return got

    def write_if(self, name: str, data: bytes, expect: str | None) -> bool:
        """Write only if the current tag is ``expect`` (None: only if absent). True
        when written, False when someone else changed it first. With ``cas ==
        "lock"`` the condition is checked first, best effort: hold ``locked()``."""
        _check_name(name)
        if self.cas == "lock":
            current = self.read_tagged(name)
            if (current[1] if current else None) != expect:
                return False
        ok = self._call("writing", name, self._store.put_if, name, data, expect)
        if ok:
            self._count(bytes_written=len(data))
        return ok

    def delete_if(self, name: str, expect: str) -> bool:
        """Delete only if the current tag is ``expect``; False otherwise (or absent)."""
        _check_name(name)
        if self.cas == "lock":
            current = self.read_tagged(name)
            if current is None or current[1] != expect:
                return False
        return self._call("deleting", name, self._store.delete_if, name, expect)

    # -- compare-and-swap: probe and lock ------------------------------------------

    def probe_cas(self) -> str:
        """Whether the store honours write conditions: "conditional" or "lock".

        Under ``probe/<random>``: create twice (the second must be refused), write
        with a wrong tag (refused) and the right one (done), delete with the stale
        tag (refused) and the current one (done). Sets and returns ``self.cas``."""
        name = f"probe/{secrets.token_hex(8)}"
        store = self._store
        put = lambda data, expect: self._call("probing", name, store.put_if, name, data,
                                              expect)
        try:
            first = put(b"1", None)
            second = put(b"2", None)
            current = self._call("probing", name, store.get_tagged, name)
            ok = first and not second and current is not None and current[0] == b"1"
            ok = ok and not put(b"3", PROBE_WRONG_TAG) and put(b"4", current[1])
            latest = self._call("probing", name, store.get_tagged, name)
            ok = ok and latest is not None and latest[0] == b"4"
            ok = ok and not self._call("probing", name, store.delete_if, name, current[1])
            ok = ok and self._call("probing", name, store.delete_if, name, latest[1])
            ok = ok and self._call("probing", name, store.head, name) is None
        finally:
            self.delete(name)
        self.cas = "conditional" if ok and store.atomic_cas else "lock"
        return self.cas

    @contextlib.contextmanager
    def locked(self, name: str = "locks/refs", lease: float = 30.0, *,
               wait: float = 60.0) -> Iterator[Lease]:
        """Hold the lock object ``name`` (for stores that ignore conditions).

        Taken when absent or expired: conditional stores write it with a condition;
        others write it, read it back after a pause and own it only if the token read
        back is theirs (best effort). Renewed by a background thread every
        ``lease/3`` s while held; deleted on exit if still ours. Not taken within
        ``wait`` s -> ``RemoteBusy`` naming the holder."""
        lock = Lease(self, _check_name(name), lease, clock=self._clock, sleep=self._sleep)
        deadline = self._clock() + wait
        while not lock.try_take():
            if self._clock() >= deadline:
                raise RemoteBusy(
                    f"the lock {lock.where} is held by {lock.holder_text()}; wait "
                    f"for it to finish, or if that process is gone run the command again "
                    f"after the lease expires", op="locking", path=self._where(name))
            self._sleep(min(1.0, max(0.05, lease / 30)))
        lock.start_renewing()
        try:
            yield lock
        finally:
            lock.release()

    def close(self) -> None:
        """Stop the pool and the store's connections."""
        with self._stats_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._store.close()


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int, list[int]]]:
    """Groups ``(start, end, indices)`` of ranges less than COALESCE_GAP apart."""
    groups: list[tuple[int, int, list[int]]] = []
    for i in sorted(range(len(ranges)), key=lambda i: ranges[i][0]):
        offset, length = ranges[i]
        if offset < 0 or length < 0:
            raise ValueError(f"bad range {ranges[i]!r}")
        if length == 0:
            continue
        if groups and offset - groups[-1][1] <= COALESCE_GAP:
            start, end, members = groups[-1]
            groups[-1] = (start, max(end, offset + length), members + [i])
        else:
            groups.append((offset, offset + length, [i]))
    return groups
