"""A mount's control socket: observers register process trees and collect their opens.

A unix stream socket (0600, in the owner's 0700 state directory; the peer's
``SO_PEERCRED`` uid must be the daemon's or root's) speaking newline-delimited JSON,
one reply per request::

    {"op": "track", "pid": P, "start": S, "client": C}  -> {"ok": true}
    {"op": "collect"}  -> {"ok": true, "reads": [[commit, path, id, size, exact],
                                                 ...]}
    {"op": "stats"}    -> {"ok": true, "trackers": N, "cached": M}
    anything wrong     -> {"ok": false, "error": "what is wrong"}

``track`` starts recording the opens of every strict descendant of process ``P``
(started at tick ``S``, field 22 of ``/proc/P/stat``); ``client`` is the caller's own
pid as it sees it, which must equal the pid the kernel reports for the peer: pids
from another pid namespace would name other processes here. A connection holds at
most one tracker, and the tracker lives exactly as long as the connection: when the
client closes it or dies, the daemon drops it. ``collect`` returns every distinct
file opened so far (it does not reset).

Error handling: a bad request is answered ``ok: false``; a client that goes away
ends its session; an unexpected exception is logged and closes that connection
only. Thread-safety: runs on the mount's trio loop, like ``ops.Operations``.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import socket
import struct

import trio

from ..errors import VfsError
from ..view import Tracker, Tracking

log = logging.getLogger("versionfs.fuse")

MAX_LINE = 64 << 10
_UCRED = struct.Struct("3i")  # pid, uid, gid


async def serve_control(path: str, tracking: Tracking, *,
                        task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Listen at ``path`` until cancelled; reports the path through
    ``task_status.started`` (None if it cannot listen: the mount still serves,
    unobservable), and removes the socket file when done."""
    try:
        sock, ino = _listen(path)
    except OSError as exc:
        log.warning("no control socket at %s (%s): runs cannot observe this mount",
                    path, exc.strerror or exc)
        task_status.started(None)
        return
    try:
        task_status.started(path)
        listener = trio.SocketListener(sock)
        await trio.serve_listeners(functools.partial(_session, tracking=tracking),
                                  [listener])
    finally:
        sock.close()
        try:
            if os.stat(path).st_ino == ino:  # not a successor's socket
                os.unlink(path)
        except OSError:
            pass


def _listen(path: str) -> tuple[trio.socket.SocketType, int]:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        os.unlink(path)  # left by a daemon that was killed: one daemon per mountpoint
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)  # binding a unix socket does not block
        os.chmod(path, 0o600)
        sock.listen(64)
        return trio.socket.from_stdlib_socket(sock), os.stat(path).st_ino
    except BaseException:
        sock.close()
        raise


async def _session(stream: trio.SocketStream, tracking: Tracking) -> None:
    tracker: Tracker | None = None
    try:
        pid, uid, _ = _UCRED.unpack(stream.socket.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        if uid not in (0, os.getuid()):
            log.warning("control socket: refused a connection from uid %d", uid)
            return
        async for line in _lines(stream):
            reply, tracker = await _answer(line, tracker, tracking, pid)
            await stream.send_all(json.dumps(reply).encode() + b"\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        log.debug("control socket: client gone (%s)", exc)
    except Exception:
        # like ops._translated: a bug ends this connection (and its tracker), never
        # the mount, whose nursery this task shares
        log.exception("unexpected error on the control socket; connection closed")
    finally:
        if tracker is not None:
            tracking.untrack(tracker)
        await stream.aclose()


async def _lines(stream: trio.SocketStream):
    buf = b""
    while True:
        data = await stream.receive_some(MAX_LINE)
        if not data:
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line
        if len(buf) > MAX_LINE:
            raise OSError(errno.EMSGSIZE, "request line too long")


async def _answer(line: bytes, tracker: Tracker | None, tracking: Tracking,
                  peer_pid: int) -> tuple[dict, Tracker | None]:
    try:
        req = json.loads(line)
        op = req["op"]
        if op == "track":
            return _track(req, tracker, tracking, peer_pid)
        if op == "collect":
            if tracker is None:
                return _error("nothing is tracked on this connection; send 'track' "
                              "first"), tracker
            # naming 20,000 files takes ~0.1 s: off the loop that serves the mount
            entries = tracking.entries(tracker)
            try:
                files = await trio.to_thread.run_sync(tracking.name, entries)
                reads = [[f.commit, f.path, f.id, f.size, f.exact] for f in files]
            except VfsError as exc:  # a tree record missing or damaged
                return _error(f"cannot name what was read: {exc}"), tracker
            return {"ok": True, "reads": reads}, tracker
        if op == "stats":
            return {"ok": True, "trackers": len(tracking.trackers),
                    "cached": tracking.cached()}, tracker
        return _error(f"unknown op {op!r}"), tracker
    except (ValueError, KeyError, TypeError) as exc:
        return _error(f"bad request ({exc.__class__.__name__}: {exc})"), tracker


def _track(req: dict, tracker: Tracker | None, tracking: Tracking,
           peer_pid: int) -> tuple[dict, Tracker | None]:
    if tracker is not None:
        return _error("this connection already tracks a process; open another"), tracker
    if int(req["client"]) != peer_pid:
        return _error(f"the observer's pid {req['client']} is {peer_pid} here: it runs "
                      "in another pid namespace, so its pids would name other "
                      "processes"), None
    try:
        tracker = tracking.track(int(req["pid"]), int(req["start"]))
    except ProcessLookupError as exc:
        return _error(str(exc)), None
    log.debug("tracking the descendants of pid %d", tracker.pid)
    return {"ok": True}, tracker


def _error(text: str) -> dict:
    return {"ok": False, "error": text}
