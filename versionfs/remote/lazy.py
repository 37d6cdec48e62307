"""A remote repository read lazily: its records here, its chunks fetched on first read.

``open_remote(url)`` gives a ``Repo`` whose records (commits, trees, file and run
records, refs, HEAD) were copied from the remote when it opened, and whose store is a
``LazyStore``: ``exists`` asks the remote's index (the local ``RemoteState``),
``locate``/``load`` the local disk chunk cache (``remote.cache``), and ``fetch``
brings missing chunks into that cache by byte range (neighbours coalesced, every
chunk verified, each chunk fetched once however many readers want it). The mount,
``versionfs://`` and ``Repo.open`` read it through the same one read path as a local
repository (``store.reader.ChunkReader`` with this store as its fetcher).

On disk, under the cache directory (default ``$XDG_CACHE_HOME/versionfs``, else
``~/.cache/versionfs``):

    chunks/ab/<chunk id>       the chunk cache, shared by every remote and version
    remotes/<key>/repo/        a bare repository holding the records (no chunks)
    remotes/<key>/state.lmdb/  the remote's index (``remote.state``)
    remotes/<key>/lock         held while records are copied in

``<key>`` is derived from the URL and options. The chunk cache is keyed by chunk id,
so it is never stale and mounts of different versions share it.

Thread-safety: ``LazyStore`` may be used by any number of threads.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from collections.abc import Iterator

from ..errors import MissingObject, UsageError
from ..records.hashing import hash_bytes
from ..records.model import ObjectId
from ..repo import refs
from ..repo.repository import Repo
from ..store.blocks import BlockTable
from ..store.reader import ChunkReader
from . import refs as rrefs
from .cache import ChunkDiskCache
from .plan import Plan, check_records
from .state import RemoteState
from .transfer import download

DEFAULT_CACHE_SIZE = 10 << 30


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "versionfs")


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote_url(spec: str) -> bool:
    """Whether a repository argument names a remote (``s3://…``, ``file://…``,
    ``memory://…``: a scheme and ``://``) rather than a local path."""
    return bool(_SCHEME.match(spec))


class LazyStore:
    """Chunks that exist on a remote, here once read (see the module docstring)."""

    def __init__(self, state: RemoteState, cache: ChunkDiskCache, backend, *,
                 workers: int = 8):
        self.state = state
        self.cache = cache
        self.backend = backend
        self.workers = workers
        self._inflight: dict[bytes, threading.Event] = {}
        self._lock = threading.Lock()
        self.fetched_bytes = 0

    # -- ChunkIndex ----------------------------------------------------------------
    def exists(self, cid: bytes) -> bool:
        return self.state.chunk(cid) is not None

    def locate(self, cid: bytes):
        return self.cache.locate(cid)

    @contextlib.contextmanager
    def chunk_view(self) -> Iterator[LazyStore]:
        yield self

    # -- BlobStore (read side only: a lazy repository is never written) -------------
    def load(self, loc, offset: int = 0, length: int | None = None) -> bytes:
        return self.cache.load(loc, offset, length)

    def is_local(self, loc) -> bool:
        return True

    def blobs(self):
        return iter(())

    def new_pack(self):
        raise UsageError("a remote repository opened lazily is read-only; clone it "
                         "('vfs clone URL') to write")

    def remove(self, kind, blob) -> int:
        raise UsageError("a remote repository opened lazily is read-only")

    # -- Fetcher ------------------------------------------------------------------------
    def pin(self, cid: bytes):
        return self.cache.pin(cid)

    def fetch(self, cids: list[bytes]) -> None:
        """Bring ``cids`` into the chunk cache: the ones no other thread is fetching
        in one coalesced download, then wait for the ones others are."""
        mine, theirs = [], []
        with self._lock:
            for cid in dict.fromkeys(bytes(c) for c in cids):
                if self.cache.locate(cid) is not None:
                    continue
                ev = self._inflight.get(cid)
                if ev is not None:
                    theirs.append(ev)
                else:
                    self._inflight[cid] = threading.Event()
                    mine.append(cid)
        try:
            if mine:
                wanted = []
                for cid in mine:
                    where = self.state.chunk(cid)
                    if where is None:
                        raise MissingObject(
                            f"chunk {ObjectId(cid).short} is not on the remote "
                            f"{self.backend.url}; the remote is incomplete", object_id=cid)
                    wanted.append((cid, *where))
                got = download(self.backend, wanted, self.cache.put, workers=self.workers)
                with self._lock:
                    self.fetched_bytes += got
        finally:
            with self._lock:
                for cid in mine:
                    self._inflight.pop(cid).set()
        for ev in theirs:
            ev.wait()

    def close(self) -> None:
        self.cache.close()
        self.state.close()
        self.backend.close()


def _key(url: str, options: dict) -> str:
    text = url + "\0" + "\0".join(f"{k}={v}" for k, v in sorted(options.items()))
    return hash_bytes(text.encode()).hex()[:24]


def open_remote(url: str, options: dict | None = None, cache_dir: str | None = None,
                cache_size: int | None = None, *, workers: int = 8,
                repo_cls: type[Repo] = Repo) -> Repo:
    """The remote repository at ``url`` as a read-only ``Repo`` whose chunks are
    fetched on first read (see the module docstring). ``RemoteMissing`` when there
    is no versionfs remote at ``url``."""
    from .backend import Backend
    options = dict(options or {})
    cache_dir = os.path.abspath(cache_dir or default_cache_dir())
    backend = Backend(url, options)
    try:
        params, head = rrefs.describe(backend)
        base = os.path.join(cache_dir, "remotes", _key(backend.url, options))
        os.makedirs(base, exist_ok=True)
        with open(os.path.join(base, "lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)   # one copier at a time; brief
            repo_dir = os.path.join(base, "repo")
            if not os.path.isdir(os.path.join(repo_dir, "index.lmdb")):
                Repo.init(repo_dir, bare=True, params=params).close()
            repo = repo_cls.open_repo(repo_dir)
            state = RemoteState(os.path.join(base, "state.lmdb"))
            try:
                state.sync(backend, workers=workers)
                _copy_records(repo, state, backend, head)
            except BaseException:
                state.close()
                repo.close()
                raise
    except BaseException:
        backend.close()
        raise
    cache = ChunkDiskCache(cache_dir, cache_size or DEFAULT_CACHE_SIZE)
    lazy = LazyStore(state, cache, backend, workers=workers)
    repo.store.close()
    repo.store = lazy
    repo.reader = ChunkReader(lazy, lazy, fetcher=lazy, blocks=BlockTable(repo.index))
    repo.remote_url = backend.url
    return repo


def _copy_records(repo: Repo, state: RemoteState, backend, head: str | None) -> None:
    """The remote's records this copy lacks, its refs and HEAD, in one transaction
    (each commit, tree and file record checked against its id)."""
    plan = Plan()
    with state.view() as sv, repo.index.read() as txn:
        for kind in ("commits", "trees", "files", "runs"):
            for oid, enc in sv.records(kind):
                if not txn.has(kind, oid):
                    plan.records[kind][oid] = enc
    check_records(plan)
    remote_refs = rrefs.list_refs(backend)
    with repo.lock():
        with repo.index.write() as txn:
            for kind, recs in plan.records.items():
                for oid, enc in recs.items():
                    txn.put(kind, oid, enc, overwrite=False)
            for ref in list(refs.list_refs(txn)):
                if ref not in remote_refs:
                    refs.delete_ref(txn, ref, expect=refs.ANY)
            for ref, cid in remote_refs.items():
                if txn.has("commits", bytes(cid)):
                    refs.set_ref(txn, ref, bytes(cid), expect=refs.ANY)
            if head and head.startswith(refs.BRANCH_PREFIX) and head in remote_refs:
                refs.set_head(txn, head)
