"""Which process trees opened which files: attributing a mount's opens to trackers.

A *tracker* stands for one observed run: a root process, named by its pid and its
start time (field 22 of ``/proc/PID/stat``, so a reused pid never matches), whose
strict descendants' opens are recorded; the root's own are not. ``Tracking.owners``
answers, for the pid of a FUSE request, which trackers it belongs to: it walks the
parent links in ``/proc/PID/stat`` up to pid 0, checking that every parent started
no later than its child (a parent that exited and whose pid was reused by a younger
process is not the parent). Answers are cached per pid, each with a pidfd
(``pidfd_open``, ``PIDFD_THREAD``: FUSE names the *thread* that asked); an entry is
stale once its pidfd is readable (the process exited), so a cached answer costs one
``select`` rather than re-reading ``/proc``. A new pid usually resolves in one step,
its parent being cached. The cache holds at most ``MAX_CACHED`` pids and is emptied
whenever the set of trackers changes; with no tracker it holds nothing, and the
caller's test of ``trackers`` is the only cost of an open.

Once a process is counted in a tree it stays counted until it exits, even if it
is re-parented out of it (the observer makes itself a child subreaper, so orphans
normally stay inside). A pid of 0 (a process in a pid namespace the daemon cannot
see) belongs to no tree.

Thread-safety: one ``Tracking`` per mount, used from the mount's trio thread; only
``name`` (given what ``entries`` copied) may run on another thread.
"""

from __future__ import annotations

import errno
import itertools
import os
import select
from collections import OrderedDict
from typing import NamedTuple, Protocol

from ..repo.observe import proc_stat
from .records import OpenedFile

MAX_CACHED = 1024   # pidfds held at most (the daemon also keeps up to 128 blob fds)
MAX_DEPTH = 4096    # parent links followed at most (a loop in /proc cannot happen)
PIDFD_THREAD = os.O_EXCL  # linux/pidfd.h; Linux 6.9+, so older kernels fall back


class Places(Protocol):
    """What ``Tracking`` needs of a view (``View`` is one)."""

    def place(self, ino: int) -> tuple[int, int, bool]: ...
    def dir_place(self, ino: int) -> tuple[str, str, bytes]: ...
    def opened(self, commit: str, prefix: str, tree_id: bytes, idx: int,
               exact: bool) -> OpenedFile: ...


class Tracker:
    """One observed run: its root process and the distinct entries its tree opened,
    as ``(directory inode, index) → exact``; ``Tracking.reads`` names them."""

    __slots__ = ("id", "pid", "reads", "start")

    def __init__(self, tid: int, pid: int, start: int):
        self.id, self.pid, self.start = tid, pid, start
        self.reads: dict[tuple[int, int], bool] = {}


class _Entry(NamedTuple):
    fd: int
    pid: int
    start: int
    owners: tuple[Tracker, ...]


class Tracking:
    """The trackers of one mount and the pid → trackers cache.

    Error handling: ``track`` raises ``ProcessLookupError`` when the root is not
    running (or its pid now names a younger process); nothing else raises.
    """

    def __init__(self, view: Places, max_cached: int = MAX_CACHED):
        self.view = view
        self.trackers: dict[int, Tracker] = {}  # falsy when nobody observes
        self.max_cached = max_cached
        self._roots: dict[tuple[int, int], list[Tracker]] = {}
        self._cache: OrderedDict[int, _Entry] = OrderedDict()
        self._dirs: dict[int, tuple[str, str, bytes]] = {}  # dir ino → dir_place
        self._ids = itertools.count(1)

    def track(self, pid: int, start: int) -> Tracker:
        st = proc_stat(pid)
        if st is None or st.start != start:
            raise ProcessLookupError(f"process {pid} (started at tick {start}) is not "
                                     "running")
        t = Tracker(next(self._ids), pid, start)
        self.trackers[t.id] = t
        self._changed()
        return t

    def untrack(self, tracker: Tracker) -> None:
        if self.trackers.pop(tracker.id, None) is not None:
            self._changed()
        if not self.trackers:
            self._dirs.clear()

    def _changed(self) -> None:
        self.clear_cache()
        self._roots = {}
        for t in self.trackers.values():
            self._roots.setdefault((t.pid, t.start), []).append(t)

    def clear_cache(self) -> None:
        for entry in self._cache.values():
            os.close(entry.fd)
        self._cache.clear()

    def cached(self) -> int:
        return len(self._cache)

    def record(self, pid: int, ino: int) -> int:
        """Count an open of file ``ino`` by ``pid`` for every tracker
        ``pid`` belongs to; returns how many. Cheap: where the entry is goes into
        the trackers, what it is (commit, path, id) only when ``reads`` asks."""
        owners = self.owners(pid)
        if owners:
            d, idx, exact = self.view.place(ino)
            if d not in self._dirs:  # directory inodes are never reused by a view
                self._dirs[d] = self.view.dir_place(d)
            for t in owners:
                if not t.reads.get((d, idx), False):
                    t.reads[(d, idx)] = exact
        return len(owners)

    def reads(self, tracker: Tracker) -> list[OpenedFile]:
        """The distinct files ``tracker``'s tree opened so far, sorted."""
        return self.name(self.entries(tracker))

    def entries(self, tracker: Tracker) -> list[tuple[tuple[str, str, bytes], int, bool]]:
        """What ``tracker`` saw, copied: ``name`` may then run on another thread."""
        dirs = self._dirs
        return [(dirs[d], idx, exact) for (d, idx), exact in tracker.reads.items()]

    def name(self, entries) -> list[OpenedFile]:
        """The files of ``entries``, sorted (reads trees: may run on any thread)."""
        return sorted({self.view.opened(commit, prefix, tree_id, idx, exact)
                       for (commit, prefix, tree_id), idx, exact in entries})

    def owners(self, pid: int) -> tuple[Tracker, ...]:
        """The trackers whose root ``pid`` (a process or thread) descends from."""
        if not self.trackers or pid <= 0:
            return ()
        hit = self._valid(pid)
        return hit.owners if hit is not None else self._resolve(pid)

    def _valid(self, pid: int) -> _Entry | None:
        entry = self._cache.get(pid)
        if entry is None:
            return None
        if select.select([entry.fd], [], [], 0)[0]:  # exited: its pid may be reused
            del self._cache[pid]
            os.close(entry.fd)
            return None
        self._cache.move_to_end(pid)
        return entry

    def _resolve(self, pid: int) -> tuple[Tracker, ...]:
        chain, above = self._walk(pid)
        if chain is None:
            return ()
        owners = above.owners if above is not None else ()
        parent = (above.pid, above.start) if above is not None else None
        for p, start in reversed(chain):
            owners = owners + tuple(self._roots.get(parent, ()))
            self._remember(p, start, owners)
            parent = (p, start)
        return owners

    def _walk(self, pid: int):
        """``(chain, above)``: ``chain`` lists ``(pid, start)`` from ``pid`` up to a
        process whose parent is cached (``above``) or is pid 0 (``above``
        None); ``(None, None)`` when
        the ancestry cannot be known (a process vanished as it was read)."""
        chain: list[tuple[int, int]] = []
        p, retried = pid, False
        for _ in range(MAX_DEPTH):
            st = proc_stat(p)
            if st is None or (chain and st.start > chain[-1][1]):
                # p exited (its pid maybe reused): its child was re-parented; ask it
                if not chain or retried:
                    return None, None
                retried = True
                child = proc_stat(chain[-1][0])
                if child is None or child.ppid == p:
                    return None, None
                p = child.ppid
                continue
            chain.append((p, st.start))
            if st.ppid <= 0:
                return chain, None
            hit = self._valid(st.ppid)
            if hit is not None and hit.start <= st.start:
                return chain, hit
            p, retried = st.ppid, False
        return None, None

    def _remember(self, pid: int, start: int, owners: tuple[Tracker, ...]) -> None:
        fd = _pidfd(pid)
        if fd < 0:
            return
        st = proc_stat(pid)  # still the process we walked (not exited and reused)?
        if st is None or st.start != start:
            os.close(fd)
            return
        old = self._cache.pop(pid, None)
        if old is not None:
            os.close(old.fd)
        self._cache[pid] = _Entry(fd, pid, start, owners)
        while len(self._cache) > self.max_cached:
            os.close(self._cache.popitem(last=False)[1].fd)


def _pidfd(pid: int) -> int:
    """A pidfd of thread or process ``pid``, or -1 (gone, no fd left, no pidfds)."""
    for flags in (PIDFD_THREAD, 0):
        try:
            return os.pidfd_open(pid, flags)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: flag unknown, or not a leader
                return -1
        except AttributeError:
            return -1
    return -1
