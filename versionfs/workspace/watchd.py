"""The change journal's watcher process: one per workspace, until SIGTERM.

``serve`` takes ``.vfs/watch.pid`` (the pid, under an ``flock`` held for the
process's life: a second watcher is refused, and a killed one's files are told
apart), crawls the workspace (``watcher.Watcher``), then listens on
``.vfs/watch.sock`` and answers one request per connection (the protocol is in
docs/format.md), reading the inotify queue as events come and before every answer,
and ``/proc/self/mountinfo`` when it changes. SIGTERM, SIGINT or SIGHUP (``vfs watch
stop``) removes the socket and pid file and exits; so does the watcher's end (its
workspace or repository gone).

Constants: ``REQUEST_TIMEOUT`` (2 s) for a connected client to send its request line
(scans send it at once; one that does not cannot hold the others up for long);
``MAX_REQUEST`` (64 KiB) bounds it.

Thread-safety: one thread; requests are answered one at a time, in order.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import time
from collections.abc import Callable

from .journal import LOGFILE, PIDFILE, PROTOCOL, SOCKET, bind
from .watcher import Watcher, log

REQUEST_TIMEOUT = 2.0
MAX_REQUEST = 1 << 16


class AlreadyWatched(Exception):
    """Another watcher holds the workspace's pid file lock."""

    def __init__(self, pid: int | None):
        super().__init__(pid)
        self.pid = pid


def lock_pidfile(vfs_dir: str) -> int:
    """The pid file, locked and holding our pid; raises ``AlreadyWatched``."""
    path = os.path.join(vfs_dir, PIDFILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = read_pid(fd)
        os.close(fd)
        raise AlreadyWatched(pid) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def serve(workspace: str, vfs_dir: str, ready: Callable[[dict], None]) -> int:
    """Watch ``workspace`` until SIGTERM (or SIGINT, SIGHUP) or until it goes away;
    ``ready`` is called once, with the start figures or ``{"error": text}``.
    Returns an exit code."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    try:
        pid_fd = lock_pidfile(vfs_dir)
    except AlreadyWatched as exc:
        ready({"error": f"a watcher is already running for this workspace (pid {exc.pid})"})
        return 1
    sock_path = os.path.join(vfs_dir, SOCKET)
    watcher = sock = None
    told = False

    def tell(figures: dict) -> None:
        nonlocal told
        if not told:
            told = True
            ready(figures)

    try:
        t0 = time.monotonic()
        _unlink(sock_path)  # a dead watcher's (we hold the pid file lock), before we
        # watch .vfs/ for our socket's removal
        watcher = Watcher(workspace, vfs_dir)
        watcher.crawl("")
        sock = _listen(sock_path)
        figures = {"pid": os.getpid(), "watched": len(watcher.rel_wd),
                   "unwatched": len(watcher.unwatched),
                   "seconds": round(time.monotonic() - t0, 3)}
        log(f"watching {workspace}: {figures['watched']} directories in "
            f"{figures['seconds']} s ({figures['unwatched']} unwatched)")
        tell(figures)
        _loop(watcher, sock)
        log(f"stopping: {watcher.ended}")
        return 0
    except SystemExit:
        log("stopping: asked to")
        tell({"error": "the watcher was stopped before it was ready"})
        return 0
    except OSError as exc:
        log(f"failed: {exc}")
        tell({"error": f"the watcher failed: {exc}"})
        return 1
    finally:
        if sock is not None:
            sock.close()
            _unlink(sock_path)
        if watcher is not None:
            watcher.close()
        _unlink(os.path.join(vfs_dir, PIDFILE))
        os.close(pid_fd)


def _stop(signum, frame):
    raise SystemExit(0)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _listen(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    bind(sock, path)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


def _loop(watcher: Watcher, sock: socket.socket) -> None:
    poll = select.poll()
    poll.register(sock.fileno(), select.POLLIN)
    mountinfo = open("/proc/self/mountinfo", "rb")
    mountinfo.read()
    poll.register(mountinfo.fileno(), select.POLLPRI)
    registered = None
    try:
        while watcher.ended is None:
            if registered != watcher.ino.fd:  # a reset made a new instance
                if registered is not None:
                    poll.unregister(registered)
                registered = watcher.ino.fd
                poll.register(registered, select.POLLIN)
            for fd, _ in poll.poll():
                if fd == mountinfo.fileno():
                    mountinfo.seek(0)
                    mountinfo.read()
                    watcher.check_mounts()
                elif fd == registered:
                    watcher.drain()
                elif fd == sock.fileno():
                    _answer(watcher, sock, poll, mountinfo)
    finally:
        mountinfo.close()


def _answer(watcher: Watcher, sock: socket.socket, poll, mountinfo) -> None:
    try:
        conn, _ = sock.accept()
    except OSError:
        return
    with conn:
        conn.settimeout(REQUEST_TIMEOUT)
        try:
            line = _read_line(conn)
            req = json.loads(line)
            if any(fd == mountinfo.fileno() for fd, _ in poll.poll(0)):
                mountinfo.seek(0)  # a mount just now: seen before answering
                mountinfo.read()
                watcher.check_mounts()
            reply = _dispatch(watcher, req)
        except (OSError, ValueError) as exc:
            reply = {"error": f"bad request: {exc}"}
        try:
            conn.sendall(json.dumps({"v": PROTOCOL, **reply}).encode() + b"\n")
        except OSError:
            pass


def _read_line(conn: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        data = conn.recv(4096)
        if not data:
            break
        buf += data
        if len(buf) > MAX_REQUEST:
            raise ValueError("request too long")
    return buf


def _dispatch(watcher: Watcher, req) -> dict:
    if not isinstance(req, dict) or req.get("v") != PROTOCOL:
        return {"error": f"protocol version {PROTOCOL} expected"}
    op = req.get("op")
    if op == "since":
        return watcher.since(req.get("token"))
    if op == "status":
        return watcher.status()
    return {"error": f"unknown request {op!r}"}


def log_path(vfs_dir: str) -> str:
    return os.path.join(vfs_dir, LOGFILE)
