"""Reading ahead of a checkout's plan: tree pairs and workspace probes, on threads.

A switch from HEAD's tree to the target's visits, depth first, every name whose tree
rows differ, and probes the workspace there (``lstat``, then the stat cache of a
regular file). One at a time, on cold caches, each of those is a random read that
waits for the disk: at 1,000,000 files (10,000 of them differing in all 1,000
directories) reading the 2,000 trees took 2.4 s, the 10,000 ``lstat`` 1.8 s and
their stat cache lookups 0.9 s one after the other, and 0.6-0.8 s, 0.8 s and 0.5 s
with 16 threads (LMDB's lookups and the page faults of copying a value run without
the GIL, as ``lstat`` does).

``Lookahead.switch(h_root, t_root)`` does that walk breadth first before the plan
runs: each pair of trees is read and compared by a worker, and every path found is
probed by the workers while the walk goes on (cold, at 1M files under load 11:
3.8-4.3 s for the look-ahead, against 4.7-7.0 s when the probes waited for the
walk's end). Reading the target's small files ahead as well was tried and dropped:
it moved about as much time into the look-ahead as it saved the writers. The plan
takes the results (``pairs``, ``probe``) instead of reading, and reads for itself
whatever is not here: the look-ahead stops after ``LIMIT`` entries, so what it
holds stays bounded whatever the change. It decides nothing: a result is what the
same read would have answered a moment earlier, and the plan runs under the
repository lock either way (the workspace may change under a checkout at any time;
the plan's conflict rules are unchanged).

Thread-safety: one ``Lookahead`` per plan, filled by ``switch`` and then read by
the planning thread; the workers share only the repository's read paths.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import Future, ThreadPoolExecutor

from ..errors import VfsError
from ..records.model import TreeEntry, decode_tree_rows, row_pairs
from ..repo.repository import Repo
from .scan import cache_key

# Threads reading ahead: enough requests in flight to keep a disk busy (measured
# cold at 1M files: trees 2.4 s with one thread, 1.2 s with 4, 0.9 s with 8, 0.6-0.8
# s with 16 to 64); the work between reads holds the GIL, so more only wait.
THREADS = 16
LIMIT = 200_000  # entries read ahead before the walk stops going deeper (~250 B each)
# Pairs of trees compared between two releases of the index's mapped pages: 128
# pairs of 1,000-entry trees map about 18 MB (``Index.release_pages``).
BATCH = 128
MISSING = object()  # not read ahead: the caller reads for itself


class Lookahead:
    """Tree pairs and workspace probes for a switch, read before the plan needs them."""

    def __init__(self, repo: Repo, root: str, *, threads: int | None = None,
                 limit: int | None = None):
        self.repo = repo
        self.root = root
        self.threads = THREADS if threads is None else threads
        self.limit = LIMIT if limit is None else limit
        self._pairs: dict[tuple, list] = {}
        self._probes: dict[str, tuple] = {}

    def switch(self, h_root, t_root) -> None:
        """Read ahead for a switch from tree ``h_root`` to ``t_root``."""
        with ThreadPoolExecutor(self.threads, thread_name_prefix="vfs-ahead") as pool:
            probes = self._walk(pool, h_root, t_root)
            for rel, fut in probes:
                got = fut.result()
                if got is not MISSING:
                    self._probes[rel] = got
        self.repo.index.release_pages()

    def pairs(self, a_tid, b_tid) -> list | None:
        """``row_pairs`` of trees ``a`` and ``b`` (ids or None), if read ahead."""
        return self._pairs.pop((a_tid, b_tid), None)

    def probe(self, rel: str):
        """``(lstat or None when absent, stat cache value or None)`` of workspace path
        ``rel`` as read ahead (the value only for a regular file), or ``MISSING``."""
        return self._probes.pop(rel, MISSING)

    def _walk(self, pool, h_root, t_root) -> list[tuple[str, Future]]:
        """Compare the trees level by level, probing each path to probe as soon as
        it is found (the probes' reads overlap the next level's); the probes, in
        walk order. A read that fails stops the walk: the plan reads that tree
        itself and fails there, with the same error it would have met without a
        look-ahead.

        Paths below a directory HEAD does not have are not probed (the plan creates
        them without looking); no deeper level is read once ``limit`` entries are
        held."""
        level = [("", h_root, t_root)]
        probes: list[tuple[str, Future]] = []
        held = 0
        while level and held < self.limit:
            nxt = []
            for i in range(0, len(level), BATCH):
                batch = level[i:i + BATCH]
                try:
                    found = list(pool.map(self._compare, [(a, b) for _, a, b in batch]))
                except VfsError:  # a missing or damaged tree: the plan meets it there
                    return probes
                self.repo.index.release_pages()
                for (rel, a, b), pairs in zip(batch, found):
                    held += self._keep(pool, rel, a, b, pairs, probes, nxt)
            level = nxt
        return probes

    def _keep(self, pool, rel: str, a, b, pairs: list, probes: list, nxt: list) -> int:
        """Note one compared pair of trees: probe its paths (below a directory
        HEAD has) and queue the pairs of subtrees to compare next. Returns how many
        entries it holds."""
        self._pairs[(a, b)] = pairs
        prefix = f"{rel}/" if rel else ""
        for name, x, y in pairs:
            sub = prefix + name
            if a is not None and len(probes) < self.limit:
                probes.append((sub, pool.submit(self._probe, sub)))
            xa, yb = _sub(x), _sub(y)
            if xa != yb:
                nxt.append((sub, xa, yb))
        return len(pairs)

    def _compare(self, pair) -> list:
        a, b = pair
        return row_pairs(self._rows(a), self._rows(b))

    def _rows(self, tid) -> tuple:
        return () if tid is None else decode_tree_rows(self.repo.tree_bytes(tid))

    def _probe(self, rel: str):
        try:
            st = os.lstat(os.path.join(self.root, rel))
        except FileNotFoundError:
            return None, None
        except OSError:
            return MISSING  # the plan's own lstat raises it, with its message
        raw = None
        if stat.S_ISREG(st.st_mode):
            with self.repo.index.read() as txn:
                raw = txn.get("statcache", cache_key(rel))
        return st, raw


def _sub(e: TreeEntry | None):
    return e.id if e is not None and e.is_dir else None
