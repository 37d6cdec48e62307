"""An open file of a version, as fsspec's buffered file.

``VersionFile`` is an ``AbstractBufferedFile`` in mode ``"rb"`` whose
``_fetch_range`` reads through ``OpenedRepo.read`` (verified chunks, the
repository's one read path). It keeps the content it was opened with, so a branch
that moves meanwhile does not change what it reads, and it holds its repository's
lease in the pool until it is closed (or collected).

Thread-safety: like any file object, one reader at a time; many files may be read
from many threads at once.
"""

from __future__ import annotations

from fsspec.spec import AbstractBufferedFile

from ..errors import VfsError
from ..view.chunks import Content
from .opened import OpenedRepo, RepoPool
from .oserrors import to_oserror


class VersionFile(AbstractBufferedFile):
    """A read-only, seekable file of a version."""

    def __init__(self, fs, path: str, *, pool: RepoPool, opened: OpenedRepo,
                 content: Content, details: dict, block_size=None,
                 cache_type: str = "readahead", cache_options=None, **kwargs):
        self._pool, self._opened, self._content = pool, opened, content
        super().__init__(fs, path, "rb", block_size=block_size, cache_type=cache_type,
                         cache_options=cache_options, size=content.size, **kwargs)
        self.details = details

    def _fetch_range(self, start: int, end: int) -> bytes:
        if self._opened is None:
            raise ValueError("I/O operation on a closed versionfs file")
        try:
            return self._opened.read(self._content, start, end)
        except VfsError as exc:
            raise to_oserror(exc) from exc

    def close(self) -> None:
        try:
            super().close()
        finally:
            opened, self._opened = self._opened, None
            if opened is not None:
                self._pool.release(opened)
