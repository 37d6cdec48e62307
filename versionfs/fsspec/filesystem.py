"""``VersionFileSystem``: any version of a repository as a read-only fsspec filesystem.

Two ways to name files (grammar in ``fsspec.urls``):

* by URL, each path carrying its repository and version:
  ``fsspec.open("versionfs:///data/repo@v1/train.csv")``, ``pandas.read_csv`` of the
  same URL; one filesystem instance serves every repository and version;
* rooted: ``fsspec.filesystem("versionfs", repo="/data/repo", rev="v1")``, with
  paths relative to the version's root (``"train.csv"``).

Names returned (``ls``, ``find``, ``info``) are spelled as the paths given, so they
can be passed back. Entries are ``{"name", "size", "type", "mode", "mtime", "id",
"islink"}`` (``"destination"`` for links). ``ls`` shows a symbolic link as type
``"link"`` (so ``walk``/``find`` never loop through links); ``info``, ``open`` and
``cat`` follow a link that stays inside the version, and a link leaving it is only a
link. Every write is a ``PermissionError``; errors are the builtin ``OSError``
classes (``fsspec.oserrors``). ``ukey`` is the entry's content id (hex, as ``vfs ls
-l``/``vfs show`` print it): equal ids, equal bytes.

Storage options: ``repo``, ``rev`` (rooted mode), ``verify`` (``"chunk"``, the
default: every chunk checked against its id; ``"off"``), and for remote
repositories ``remote_options`` (given to the remote's fsspec filesystem, e.g.
``{"endpoint_url": ...}``), ``cache_dir`` and ``cache_size`` (the local chunk
cache of the lazily fetched remote store).

Resources: at most ``MAX_OPEN`` repositories open per filesystem instance, each
with a 64 MiB cache of verified chunks, closed by ``close()`` or when the instance
is collected (fsspec keeps instances until ``clear_instance_cache()``; a closed
instance reopens on its next use). Thread-safety: any number of threads at once.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import weakref
from collections.abc import Iterator

from fsspec.spec import AbstractFileSystem

from ..errors import UsageError
from ..records.model import Kind, ObjectId, TreeEntry
from ..remote.lazy import open_remote
from ..repo.repository import Repo
from ..view.chunks import VERIFY_MODES
from .files import VersionFile
from .opened import LinkOutside, OpenedRepo, RepoPool
from .oserrors import read_only, translated
from .urls import VersionUrl, parse_url, rooted

MAX_OPEN = 4  # repositories open at once per filesystem instance
_TYPES = {Kind.FILE: "file", Kind.DIR: "directory", Kind.SYMLINK: "link"}


def _entry_info(name: str, e: TreeEntry) -> dict:
    info = {"name": name, "size": e.size, "type": _TYPES[e.kind], "mode": e.st_mode,
            "mtime": e.mtime_ns / 1e9, "id": e.id.hex(), "islink": e.kind is Kind.SYMLINK}
    if e.kind is Kind.SYMLINK:
        info["destination"] = os.fsdecode(e.target)
    return info


def _open_repo(key: str, *, verify: str, options: dict, cache_dir: str | None,
               cache_size: int | None) -> OpenedRepo:
    """Open the repository of a pool key (see ``VersionFileSystem._key``)."""
    if key.startswith("local:"):
        return OpenedRepo(Repo.open_repo(key[len("local:"):]), verify=verify)
    return OpenedRepo(open_remote(key, options, cache_dir, cache_size), verify=verify)


class VersionFileSystem(AbstractFileSystem):
    """Read-only access to the versions of versionfs repositories (module docstring)."""

    protocol = "versionfs"
    root_marker = ""

    def __init__(self, repo: str | None = None, rev: str | None = None, *,
                 verify: str = "chunk", remote_options: dict | None = None,
                 cache_dir: str | None = None, cache_size: int | None = None,
                 **storage_options):
        super().__init__(**storage_options)
        if verify not in VERIFY_MODES:
            raise UsageError(f"verify must be one of {', '.join(VERIFY_MODES)}, "
                             f"not {verify!r}")
        if rev is not None and repo is None:
            raise UsageError("rev= needs repo= too (or name the version in the URL: "
                             "versionfs://REPO@REV/PATH)")
        self.repo, self.rev, self.verify = repo, rev, verify
        self.remote_options = dict(remote_options or {})
        self.cache_dir, self.cache_size = cache_dir, cache_size
        # the pool must not refer to self, or the finalizer would keep self alive
        opener = functools.partial(_open_repo, verify=verify, options=self.remote_options,
                                   cache_dir=cache_dir, cache_size=cache_size)
        self._pool = RepoPool(opener, MAX_OPEN)
        self._finalizer = weakref.finalize(self, self._pool.close)

    # -- repositories ------------------------------------------------------------
    def _url(self, path: str) -> VersionUrl:
        path = self._strip_protocol(path)
        if self.repo is not None:
            return rooted(self.repo, self.rev, path)
        return parse_url(path)

    @staticmethod
    def _key(url: VersionUrl) -> str:
        return url.repo if url.remote else "local:" + os.path.realpath(url.repo)

    @contextlib.contextmanager
    def _using(self, path: str) -> Iterator[tuple[VersionUrl, OpenedRepo, ObjectId]]:
        """``(url, leased repository, commit id)`` for the block, versionfs errors
        raised as ``OSError``s."""
        opened = None
        try:
            with translated():
                url = self._url(path)
                opened = self._pool.lease(self._key(url))
                yield url, opened, opened.commit(url.rev)
        finally:
            if opened is not None:
                self._pool.release(opened)

    def close(self) -> None:
        """Close the repositories not in use (open files keep theirs until closed)."""
        self._pool.close()

    # -- reading -------------------------------------------------------------------
    def ls(self, path, detail=True, **kwargs):
        with self._using(path) as (url, opened, cid):
            entry = opened.lookup(cid, url.path)
            if entry.is_dir:
                out = [_entry_info(url.child(e.name), e) for e in opened.entries(entry)]
            else:
                out = [self._info(url, opened, cid)]
        return out if detail else [o["name"] for o in out]

    def info(self, path, **kwargs):
        with self._using(path) as (url, opened, cid):
            return self._info(url, opened, cid)

    @staticmethod
    def _info(url: VersionUrl, opened: OpenedRepo, cid) -> dict:
        entry = opened.lookup(cid, url.path, follow=False)
        if entry.kind is not Kind.SYMLINK:
            return _entry_info(url.name(), entry)
        try:
            target = opened.lookup(cid, url.path)
        except LinkOutside:
            return _entry_info(url.name(), entry)
        info = _entry_info(url.name(), target)
        info.update(islink=True, destination=os.fsdecode(entry.target))
        return info

    def ukey(self, path):
        """The content id (hex) of the file or directory at ``path``."""
        with self._using(path) as (url, opened, cid):
            return opened.lookup(cid, url.path).id.hex()

    def checksum(self, path):
        return int(self.ukey(path), 16)

    def modified(self, path):
        return datetime.datetime.fromtimestamp(self.info(path)["mtime"],
                                               tz=datetime.timezone.utc)

    def cat_file(self, path, start=None, end=None, **kwargs):
        with self._using(path) as (url, opened, cid):
            content = opened.content(opened.lookup(cid, url.path), url.path)
            lo, hi, _ = slice(start, end).indices(content.size)
            return opened.read(content, lo, hi)

    def _open(self, path, mode="rb", block_size=None, autocommit=True,
              cache_options=None, **kwargs):
        if mode != "rb":
            raise read_only()
        opened = None
        try:
            with translated():
                url = self._url(path)
                opened = self._pool.lease(self._key(url))
                cid = opened.commit(url.rev)
                content = opened.content(opened.lookup(cid, url.path), url.path)
                details = self._info(url, opened, cid)
            return VersionFile(self, path, pool=self._pool, opened=opened,
                               content=content, details=details, block_size=block_size,
                               cache_options=cache_options, **kwargs)
        except BaseException:
            if opened is not None:
                self._pool.release(opened)
            raise

    # -- writing: refused ----------------------------------------------------------
    def _refuse(self, *args, **kwargs):
        raise read_only()

    mkdir = makedirs = rmdir = rm_file = _rm = rm = touch = _refuse
    pipe_file = put_file = cp_file = mv = _refuse

