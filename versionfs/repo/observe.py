"""Which files a process tree opened through versionfs mounts: the observer's side.

``Observer(root_pid)`` connects to the control socket of every live versionfs mount
(named in its state file, see ``mounts``) and asks each daemon to record the opens
of every strict descendant of ``root_pid``; ``stop`` collects them as
``ObservedRead``s and ends the tracking. A daemon keeps a tracker exactly as long as
its connection, so a dead observer leaves nothing behind. A file opened for reading
counts as read, whether or not any byte of it was then read, and however it was
read (``read``, ``mmap``, the page cache): the daemon records opens, since a read
served from the page cache never reaches it. The protocol is in ``fuse/control.py``.

Limits: mounts started after ``start`` are not observed; processes that do not
descend from ``root_pid`` (a server started before, a process re-parented out of the
tree when no subreaper catches it) are not counted; an observer in another pid
namespace than a daemon is refused by it (with a warning here). ``start`` makes the
calling process a child subreaper (``PR_SET_CHILD_SUBREAPER``) until ``stop``, so
orphaned grandchildren re-parent to it and stay in the tree; it then inherits their
zombies, which it must reap. FUSE-free; imports neither pyfuse3 nor trio.

Thread-safety: one ``Observer`` per thread; distinct observers are independent.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Self

from . import mounts

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
TIMEOUT = 10.0  # seconds a daemon may take to answer one request


@dataclass(frozen=True, slots=True, order=True)
class ObservedRead:
    """One distinct file opened by the observed tree through one mount.

    ``repo`` is the repository directory the mount serves (as in its state file),
    ``commit`` and ``id`` are hex, ``path`` is inside that commit (``/`` between
    names, no leading slash). ``exact`` is False when the daemon could reach the
    same inode (one per content: id, mode, mtime, size) through another path or
    commit too: FUSE names only the inode at open, so ``commit`` and ``path`` are
    then one of several that hold exactly these bytes."""

    repo: str
    commit: str
    path: str
    id: str
    mountpoint: str
    size: int
    exact: bool = True


class ProcStat(NamedTuple):
    ppid: int
    start: int  # clock ticks after boot: field 22 of /proc/PID/stat


def proc_stat(pid: int) -> ProcStat | None:
    """Parent and start time of process or thread ``pid``; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return ProcStat(int(fields[1]), int(fields[19]))  # fields[0] is field 3


class _Link(NamedTuple):
    state: mounts.MountState
    sock: socket.socket
    lines: object  # the socket's reading file


class Observer:
    """Records which files the descendants of ``root_pid`` open through mounts.

    Use as a context manager (``with Observer() as obs: ...; reads = obs.stop()``)
    or call ``start`` and ``stop``.

    Error handling: nothing about a mount raises; a mount that cannot be observed
    (no state file, a daemon that predates observation, an unreachable socket, a
    refusal) is skipped with a message to ``warn``. ``start`` raises
    ``ProcessLookupError`` if ``root_pid`` is not running.
    """

    def __init__(self, root_pid: int | None = None, *,
                 warn: Callable[[str], None] | None = None, timeout: float = TIMEOUT,
                 subreaper: bool = True):
        self.root_pid = os.getpid() if root_pid is None else root_pid
        # False when the root is itself a subreaper (``vfs run``'s launcher is):
        # orphans of the tree then stay below the root without the caller's help
        self.subreaper = subreaper
        self.warn = warn or (lambda message: None)
        self.timeout = timeout
        self._links: list[_Link] = []
        self._subreaper: int | None = None  # the caller's setting before start

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> list[str]:
        """Begin observing every live mount; returns the mountpoints observed."""
        st = proc_stat(self.root_pid)
        if st is None:
            raise ProcessLookupError(f"process {self.root_pid} is not running")
        if self.subreaper:
            self._set_subreaper()
        for entry, state in mounts.active_mounts():
            link = self._connect(entry.mountpoint, state, st.start)
            if link is not None:
                self._links.append(link)
        return [link.state.mountpoint for link in self._links]

    def stop(self) -> list[ObservedRead]:
        """Collect what was opened, end the tracking; sorted, each read once."""
        found: set[ObservedRead] = set()
        links, self._links = self._links, []
        for link in links:
            try:
                reply = self._ask(link, {"op": "collect"})
                repo, mp = link.state.repo, link.state.mountpoint
                found.update(ObservedRead(repo, commit, path, oid, mp, int(size),
                                          bool(exact))
                             for commit, path, oid, size, exact in reply["reads"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.warn(f"{link.state.mountpoint}: could not collect what was read "
                          f"({exc}); its reads are not recorded")
            finally:
                _close(link)
        self._restore_subreaper()
        return sorted(found, key=_order)

    def _connect(self, mountpoint: str, state: mounts.MountState | None,
                 start: int) -> _Link | None:
        why = None
        if state is None:
            why = ("no state file of ours names it (another user's mount, or a "
                   "killed daemon's)")
        elif not mounts.alive(state.pid):
            why = f"its daemon (pid {state.pid}) is not running"
        elif state.control is None:
            why = "its daemon predates observed reads; remount it"
        if why:
            self.warn(f"{mountpoint} is not observed: {why}")
            return None
        link = None
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            link = _Link(state, sock, sock.makefile("rb"))
            sock.connect(state.control)
            self._ask(link, {"op": "track", "pid": self.root_pid, "start": start,
                             "client": os.getpid()})
            return link
        except (OSError, ValueError, KeyError) as exc:
            self.warn(f"{mountpoint} is not observed: {exc}")
            _close(link)
            return None

    def _ask(self, link: _Link, request: dict) -> dict:
        link.sock.sendall(json.dumps(request).encode() + b"\n")
        line = link.lines.readline()
        if not line:
            raise ConnectionError("the daemon closed the control connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise ValueError(reply.get("error", "refused"))
        return reply

    def _set_subreaper(self) -> None:
        if self._subreaper is not None:
            return
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        old = ctypes.c_int(0)
        if prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(old), 0, 0, 0) == 0 and \
                prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
            self._subreaper = old.value
        else:
            self.warn("cannot become a child subreaper: orphaned processes leave the "
                      f"observed tree ({os.strerror(ctypes.get_errno())})")

    def _restore_subreaper(self) -> None:
        if self._subreaper is not None:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER,
                                                    self._subreaper, 0, 0, 0)
            self._subreaper = None


def _order(r: ObservedRead) -> tuple:
    return (r.repo, r.commit, r.path, r.mountpoint, r.id)


def _close(link: _Link | None) -> None:
    if link is not None:
        link.lines.close()
        link.sock.close()
