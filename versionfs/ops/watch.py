"""``vfs watch start|stop|status``: the life of a workspace's change journal watcher.

``start`` runs the watcher (``workspace/watchd.py``) as a detached process (its own session, its
output in ``.vfs/watch.log``) and returns once it watches every directory and
listens on ``.vfs/watch.sock`` (it reports over a pipe), or runs it in this process
(``foreground``). ``stop`` sends SIGTERM to the pid in ``.vfs/watch.pid`` and waits
for the process to end (a pidfd, no polling); ``status`` asks the watcher. A watcher
is running exactly when ``.vfs/watch.pid`` is ``flock``-ed, so files left by a killed
one are told apart and removed.

Constants: ``STOP_TIMEOUT`` (10 s) for a watcher to exit on SIGTERM before SIGKILL
(it exits at once unless a crawl of millions of directories is under way).

Thread-safety: call from one thread.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ..errors import UsageError, VfsError
from ..repo.repository import Repo
from ..workspace import journal, watchd

__all__ = ["WatchStatus", "run_foreground", "start", "status", "stop"]

STOP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class WatchStatus:
    """What a watcher reports about itself (``running`` False: none is)."""

    running: bool
    workspace: str
    pid: int | None = None
    watched: int = 0              # directories with a watch
    unwatched_count: int = 0      # directories it could not watch (scans walk them)
    unwatched: dict[str, str] = field(default_factory=dict)  # some of them, and why
    events: int = 0
    overflows: int = 0
    resets: int = 0               # fresh starts (overflow, mounts changed)
    last_loss: str = ""           # why tokens before the last start-over are refused
    started: float | None = None  # epoch seconds
    rss: int = 0
    generation: str = ""
    seq: int = 0
    note: str = ""                # e.g. not answering, or stale files removed

    def to_dict(self) -> dict:
        return asdict(self)


def _workspace(repo: Repo) -> str:
    if repo.workspace is None:
        raise UsageError("a bare repository has no workspace to watch")
    return repo.workspace


def running_pid(vfs_dir: str) -> int | None:
    """The pid of the workspace's watcher, or None when none holds the pid file."""
    path = os.path.join(vfs_dir, journal.PIDFILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = watchd.read_pid(fd)
            if pid is None:
                raise VfsError("a watcher is starting for this workspace; retry in a "
                               "moment") from None
            return pid
        return None
    finally:
        os.close(fd)


def _remove_stale(vfs_dir: str) -> bool:
    """Remove a dead watcher's socket and pid file; whether there were any."""
    found = False
    for name in (journal.SOCKET, journal.PIDFILE):
        try:
            os.unlink(os.path.join(vfs_dir, name))
            found = True
        except FileNotFoundError:
            pass
    return found


def status(repo: Repo) -> WatchStatus:
    """The watcher's figures, or ``running=False``."""
    ws = _workspace(repo)
    pid = running_pid(repo.vfs_dir)
    if pid is None:
        note = "removed the files a stopped watcher left" if _remove_stale(repo.vfs_dir) \
            else ""
        return WatchStatus(False, ws, note=note)
    try:
        reply = journal.ask(repo.vfs_dir, {"op": "status"}, timeout=5.0)
    except journal.NotRunning as exc:
        return WatchStatus(True, ws, pid=pid, note=f"not answering: {exc}")
    known = {f.name for f in WatchStatus.__dataclass_fields__.values()}
    fields = {k: v for k, v in reply.items() if k in known and k != "workspace"}
    return WatchStatus(True, ws, **fields)


def start(repo: Repo) -> WatchStatus:
    """Start a detached watcher; returns once it watches and answers.

    Error handling: ``UsageError`` for a bare repository or when a watcher already
    runs; ``VfsError`` when it fails to start (the message quotes its log)."""
    ws = _workspace(repo)
    pid = running_pid(repo.vfs_dir)
    if pid is not None:
        raise UsageError(f"a watcher is already running for this workspace (pid {pid}); "
                         "'vfs watch stop' stops it")
    logpath = watchd.log_path(repo.vfs_dir)
    rfd, wfd = os.pipe()
    try:
        with open(logpath, "wb") as logf:
            subprocess.Popen(
                [sys.executable, "-m", "versionfs", "-C", os.path.abspath(ws), "watch", "start",
                 "--foreground", "--ready-fd", str(wfd)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, pass_fds=(wfd,),
                start_new_session=True, cwd="/")
    except OSError as exc:
        os.close(rfd)
        raise VfsError(f"cannot start the watcher: {exc}") from None
    finally:
        os.close(wfd)
    with os.fdopen(rfd, "rb") as pipe:
        line = pipe.readline()  # the watcher's report, or EOF if it died first
    try:
        figures = json.loads(line) if line.strip() else {"error": _last_line(logpath)}
    except ValueError:
        figures = {"error": "it reported nonsense"}
    if "error" in figures:
        raise VfsError(f"the watcher did not start: {figures['error']}; see {logpath}")
    return status(repo)


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return (lines[-1] if lines else "it exited before it was ready").strip()


def run_foreground(repo: Repo, *, ready_fd: int | None = None,
                   say: Callable[[str], None] = print) -> int:
    """Run the watcher in this process until SIGTERM or Ctrl-C; its exit code.
    ``ready_fd``: report the start there (as ``start`` expects) instead of to ``say``.
    """
    ws = _workspace(repo)

    def ready(figures: dict) -> None:
        if ready_fd is not None:
            os.write(ready_fd, json.dumps(figures).encode() + b"\n")
            os.close(ready_fd)
        elif "error" in figures:
            say(f"error: {figures['error']}")
        else:
            say(f"watching {ws}: {figures['watched']} directories "
                f"({figures['unwatched']} unwatched); Ctrl-C stops")

    vfs_dir = repo.vfs_dir
    repo.close()  # the watcher reads no index
    return watchd.serve(ws, vfs_dir, ready)


def stop(repo: Repo, *, timeout: float = STOP_TIMEOUT) -> int | None:
    """Stop the workspace's watcher; its pid, or None when none was running.

    Error handling: ``VfsError`` when it outlives SIGTERM and SIGKILL."""
    _workspace(repo)
    pid = running_pid(repo.vfs_dir)
    if pid is None:
        _remove_stale(repo.vfs_dir)
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:  # it ended just now
        _remove_stale(repo.vfs_dir)
        return pid
    try:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if select.select([pidfd], [], [], wait)[0]:
                break
        else:
            raise VfsError(f"the watcher (pid {pid}) did not stop after SIGKILL")
    finally:
        os.close(pidfd)
    if running_pid(repo.vfs_dir) is None:
        _remove_stale(repo.vfs_dir)
    return pid
