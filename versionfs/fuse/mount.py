"""The life of a mount as a command: check, fork a daemon, wait until it serves.

``mount`` checks everything a user can get wrong (mountpoint, FUSE, repository,
revision) before mounting, each with a one-line ``VfsError``. By default it returns
only when a daemon has mounted *and* listed the root through the mount (reported
back over a pipe). The daemon is forked first thing, so that it imports the server
(``serve``: pyfuse3 and trio, most of a mount's start-up) while this process runs
the checks; it then receives the checked request over a pipe, or end-of-file if a
check failed, and exits without touching anything. This module imports neither
pyfuse3 nor trio. Thread-safety: call from one thread; one mount per daemon.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import select
import signal
import sys
from collections.abc import Callable

from ..errors import MountError, VfsError
from ..repo import mounts
from .request import MountRequest, prepare

log = logging.getLogger("versionfs.fuse")

READY_TIMEOUT = 60.0


# -- the command: foreground or detached ------------------------------------------------


def mount(spec: str, mountpoint: str, *, default_repo: str = ".", foreground=False,
          allow_other=False, debug=False, verify="chunk", remote_options=None,
          cache_dir=None, cache_size=None, say: Callable[[str], None] = print) -> None:
    """``versionfs mount``: returns once the mount serves (or, in the foreground,
    once it is unmounted). Error handling: a one-line ``VfsError`` for every bad
    input, checked before anything is mounted."""
    check = functools.partial(prepare, spec, mountpoint, default_repo=default_repo,
                              allow_other=allow_other, debug=debug, verify=verify,
                              remote_options=remote_options, cache_dir=cache_dir,
                              cache_size=cache_size)
    if foreground:
        req, commit = check()
        _setup_logging(debug)
        failed: list[VfsError] = []

        def ready(err):
            if err is None:
                say(f"mounted {_what(req, commit)} at {req.mountpoint}; Ctrl-C unmounts")
            else:
                failed.append(err)

        from .serve import serve
        serve(req, ready)
        if failed:
            raise failed[0]
        return
    daemon = _Daemon()  # imports the server while we check
    try:
        req, commit = check()
    except BaseException:
        daemon.cancel()
        raise
    pid = daemon.start(req)
    say(f"mounted {_what(req, commit)} at {req.mountpoint} (daemon pid {pid}; "
        f"'versionfs umount {req.mountpoint}' unmounts)")


def _what(req: MountRequest, commit: str | None) -> str:
    return req.repo + (f"@{req.rev} ({commit[:12]})" if req.rev else " (all versions)")


class _Warnings(logging.Handler):
    """Counts what was logged at WARNING or above: a clean daemon leaves no log."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _setup_logging(debug: bool) -> _Warnings:
    """Log to stderr (the terminal, or the daemon's log file)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    warnings = _Warnings()
    root = logging.getLogger()
    root.handlers[:] = [handler, warnings]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    return warnings


class _Daemon:
    """A forked daemon: it imports the server at once, then waits for the request
    (``start``) or for the news that there is none (``cancel``)."""

    def __init__(self):
        req_r, self._req_w = os.pipe()
        self._reply_r, reply_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the daemon: never returns
            code = 1
            try:
                os.close(self._req_w)
                os.close(self._reply_r)
                code = _daemon(req_r, reply_w)
            finally:
                os._exit(code)
        os.close(req_r)
        os.close(reply_w)

    def cancel(self) -> None:
        """No mount after all: the daemon exits without touching anything."""
        os.close(self._req_w)
        os.close(self._reply_r)
        os.waitpid(self.pid, 0)

    def start(self, req: MountRequest) -> int:
        """Send the request; return the daemon's pid once it reports the mount ready."""
        try:
            os.write(self._req_w, json.dumps(dataclasses.asdict(req)).encode() + b"\n")
        except BrokenPipeError:  # it died already: the reply says so
            pass
        os.close(self._req_w)
        with os.fdopen(self._reply_r, "rb") as pipe:
            reply = _read_reply(pipe, self.pid, mounts.state_base(req.mountpoint) + ".log")
        if reply != "ok":
            raise MountError(reply)
        if mounts.find_mount(req.mountpoint) is None:
            raise MountError(f"the daemon reported {req.mountpoint} mounted, but it is not")
        return self.pid


def _read_reply(pipe, pid: int, logpath: str) -> str:
    ready, _, _ = select.select([pipe], [], [], READY_TIMEOUT)
    if not ready:
        os.kill(pid, signal.SIGTERM)
        return f"the mount did not answer within {READY_TIMEOUT:g} s; see {logpath}"
    line = pipe.readline().decode(errors="replace").strip()
    if not line:
        return "the mount daemon exited before the mount was ready (--foreground --debug shows why)"
    return line


def _daemon(req_fd: int, wfd: int) -> int:
    """The forked daemon: detach, import the server, read the request, log to the
    mountpoint's log file, serve. End-of-file instead of a request: exit 0."""
    _detach(keep=(req_fd, wfd))
    try:
        from . import serve
    except BaseException as exc:  # reported once there is someone to tell
        serve = exc
    with os.fdopen(req_fd, "rb") as pipe:
        line = pipe.readline()
    if not line:
        return 0
    req = MountRequest(**json.loads(line))
    logpath = _log_to_file(req.mountpoint)
    warnings = _setup_logging(req.debug)
    if isinstance(serve, BaseException):
        log.error("cannot load the server", exc_info=serve)
        os.write(wfd, f"the mount daemon failed; see {logpath}\n".encode())
        return 1
    code = _serve_reporting(serve.serve, req, wfd, logpath)
    if code == 0 and warnings.count == 0:
        try:
            os.unlink(logpath)
        except OSError:
            pass
    return code


def _detach(keep: tuple[int, ...]) -> None:
    """A session of its own, no directory held busy, stdio on /dev/null (the
    command's caller may be waiting for its pipes to close), no other fds."""
    os.setsid()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def _log_to_file(mountpoint: str) -> str:
    """Point stdout and stderr at the mountpoint's (fresh) log; returns its path."""
    logpath = mounts.state_base(mountpoint) + ".log"
    try:
        os.makedirs(mounts.state_dir(), mode=0o700, exist_ok=True)
        out = os.open(logpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        return logpath
    for fd in (1, 2):
        os.dup2(out, fd)
    os.close(out)
    return logpath


def _serve_reporting(serve, req: MountRequest, wfd: int, logpath: str) -> int:
    """``serve``, telling the waiting command over ``wfd`` how the start went."""
    reported = False

    def ready(err):
        nonlocal reported
        reported = True
        os.write(wfd, b"ok\n" if err is None else f"{err}\n".encode())
        os.close(wfd)

    try:
        serve(req, ready)
    except VfsError as exc:
        log.error("%s", exc)
        if not reported:
            ready(exc)
        return exc.exit_code
    except SystemExit as exc:  # a signal before the loop listened for it
        log.info("stopped before serving (exit %s)", exc.code)
        if not reported:
            ready(MountError("the mount daemon was stopped by a signal before it served"))
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("the mount daemon failed")
        if not reported:
            ready(MountError(f"the mount daemon failed; see {logpath}"))
        return 1
    if not reported:  # the loop ended before the probe answered
        ready(MountError(f"the mount ended before it served; see {logpath}"))
        return 1
    return 0
