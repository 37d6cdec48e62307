"""Open repositories for the fsspec filesystem: look paths up, read verified bytes.

``OpenedRepo`` is one open repository with its verified chunk cache
(``view.chunks.ChunkCache``, the mount's): it resolves revisions, looks paths up
in a version (following symbolic links that stay inside it), lists directories and
reads byte ranges, every byte through the repository's one read path
(``repo.reader``): each chunk is checked against its id the first time it is read,
a damaged one is ``CorruptObject``, never bytes.

``RepoPool`` keeps at most ``max_open`` repositories open, least recently used
closed first, each only once nobody uses it (``lease``/``release``: an open file
holds its repository's lease until it is closed). Local repositories are keyed by
their ``.vfs`` directory, remote ones by URL; a revision is resolved on every call,
so a branch that moves is seen to move, while an open file keeps the content it
opened.

Thread-safety: both classes may be used by any number of threads at once.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict
from collections.abc import Callable

from ..errors import IsADirectory, NotADirectory, PathNotFound
from ..records.model import Kind, ObjectId, TreeEntry
from ..repo.repository import Repo
from ..view.chunks import ChunkCache, Content

MAX_LINKS = 40            # symbolic links followed in one lookup (Linux's limit)
MEMORY_CACHE = 64 << 20   # verified chunks kept in memory per repository (as a mount)
# chunks of a long read loaded (read, verified) ahead on threads. A 256 MiB file in
# the page cache, best of 5: 1 MiB reads of fs.open 0.171 s with none, 0.113 s with 2
# (Repo.open: 0.105 s); one cat_file of it 0.37 s -> 0.28 s
READ_AHEAD = 2


class LinkOutside(PathNotFound):
    """A symbolic link whose target leaves the version (absolute, or ``..`` past
    its root): it is listed as a link but not followed."""


class OpenedRepo:
    """One open repository and its chunk cache."""

    def __init__(self, repo: Repo, *, verify: str = "chunk"):
        self.repo = repo
        self.cache = ChunkCache(repo, MEMORY_CACHE, workers=READ_AHEAD, verify=verify)
        self.leases = 0

    def close(self) -> None:
        self.cache.close()
        self.repo.close()

    def commit(self, rev: str | None) -> ObjectId:
        return self.repo.resolve(rev or "HEAD")

    def lookup(self, cid: ObjectId, path: str, *, follow: bool = True) -> TreeEntry:
        """The entry at ``path`` (normalized; ``""`` is the root) of commit ``cid``.

        Links met on the way are followed, and the last one too if ``follow``;
        a link leaving the version is ``LinkOutside``, a missing name
        ``PathNotFound``, a file used as a directory ``NotADirectory``."""
        pending = path.split("/")[::-1] if path else []
        dirs = [self.repo.root_entry(cid)]   # the directories walked, root first
        hops = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":                 # only link targets bring these
                dirs.pop()
                if not dirs:
                    raise LinkOutside(f"a symbolic link in {path!r} points outside "
                                      f"version {cid.short}; only links inside a "
                                      "version are followed")
                continue
            here = dirs[-1]
            if not here.is_dir:
                raise NotADirectory(f"{here.name!r} is not a directory in {cid.short} "
                                    f"(looking up {path!r})")
            entry = self.repo.tree(here.id).get(part)
            if entry is None:
                raise PathNotFound(f"path {path!r} does not exist in version {cid.short}; "
                                   "ls its parent to see what it has")
            if entry.kind is Kind.SYMLINK and (pending or follow):
                hops += 1
                pending.extend(_link_parts(entry, hops, path, cid))
                continue
            dirs.append(entry)
        return dirs[-1]

    def entries(self, entry: TreeEntry) -> tuple[TreeEntry, ...]:
        """The entries of directory ``entry``, sorted by name."""
        return self.repo.tree(entry.id).entries

    def content(self, entry: TreeEntry, path: str) -> Content:
        """The chunks of file ``entry`` (at ``path``, for the message)."""
        if entry.kind is Kind.DIR:
            raise IsADirectory(f"{path!r} is a directory; list it instead of reading it")
        return Content(entry.size, self.repo.chunks(entry))

    def read(self, content: Content, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``content`` (clipped to its size), verified."""
        end = min(end, content.size)
        if start >= end:
            return b""
        i = bisect.bisect_right(content.starts, start) - 1
        parts, pos, cache = [], start, self.cache
        while pos < end:
            first, ref = content.starts[i], content.chunks[i]
            if end - first > ref.length:  # more chunks to come: load them meanwhile
                cache.prefetch(_until(content, i + 1, end, READ_AHEAD))
            lo, hi = pos - first, min(end - first, ref.length)
            data = cache.peek(ref)
            part = None if data is not None else cache.read_range(ref, lo, hi - lo)
            if part is None:
                data = data if data is not None else cache.get(ref)
                part = memoryview(data)[lo:hi]
            parts.append(part)
            pos, i = first + hi, i + 1
        return b"".join(parts)


def _until(content: Content, i: int, end: int, n: int):
    """Up to ``n`` chunks from the ``i``-th that start before ``end``."""
    stop = bisect.bisect_left(content.starts, end, i, min(i + n, len(content.starts)))
    return content.chunks[i:stop]


def _link_parts(link: TreeEntry, hops: int, path: str, cid: ObjectId) -> list[str]:
    """The parts of a relative link's target, last first (to push on the stack)."""
    target = os.fsdecode(link.target)
    if target.startswith("/") or hops > MAX_LINKS:
        why = "points outside" if hops <= MAX_LINKS else "loops in"
        raise LinkOutside(f"symbolic link {link.name!r} (-> {target}) in {path!r} "
                          f"{why} version {cid.short}; only links inside a version "
                          "are followed")
    return target.split("/")[::-1]


class RepoPool:
    """At most ``max_open`` open repositories, shared by the callers that lease them."""

    def __init__(self, opener: Callable[[str], OpenedRepo], max_open: int = 4):
        self._opener = opener
        self.max_open = max_open
        self._open: OrderedDict[str, OpenedRepo] = OrderedDict()
        self._lock = threading.Lock()

    def lease(self, key: str) -> OpenedRepo:
        """The open repository for ``key``, opened if needed; ``release`` it after."""
        with self._lock:
            opened = self._open.get(key)
            if opened is not None:
                self._open.move_to_end(key)
                opened.leases += 1
                return opened
        fresh = self._opener(key)   # outside the lock: opening may be slow (remote)
        with self._lock:
            opened = self._open.get(key)
            if opened is None:
                opened, fresh = fresh, None
                self._open[key] = opened
            opened.leases += 1
            idle = self._evict()
        for old in ([fresh] if fresh is not None else []) + idle:
            old.close()
        return opened

    def release(self, opened: OpenedRepo) -> None:
        with self._lock:
            opened.leases -= 1
            gone = opened.leases <= 0 and opened not in self._open.values()
            idle = self._evict()
        for old in ([opened] if gone else []) + idle:
            old.close()

    def _evict(self) -> list[OpenedRepo]:
        """Drop idle repositories beyond ``max_open`` (caller holds the lock)."""
        idle = []
        for key in list(self._open):
            if len(self._open) <= self.max_open:
                break
            if self._open[key].leases <= 0:
                idle.append(self._open.pop(key))
        return idle

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        """Close every repository nobody uses now; the others close when released.
        The pool stays usable: a later lease opens again."""
        with self._lock:
            leased = {k: o for k, o in self._open.items() if o.leases > 0}
            idle = [o for k, o in self._open.items() if k not in leased]
            self._open.clear()
        for opened in idle:
            opened.close()

