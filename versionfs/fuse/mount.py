"""The life of a mount: check, mount, serve, announce readiness, unmount.

``mount`` checks everything a user can get wrong (mountpoint, FUSE, repository,
revision) before mounting, each with a one-line ``VfsError``. By default it forks a
daemon and returns only when the daemon has mounted *and* listed the root through
the mount (reported back over a pipe). ``serve`` runs the mount in the current
process: ``pyfuse3.main`` on trio, plus a task that stops it on SIGINT, SIGTERM or
SIGHUP. Whatever ends the loop — ``versionfs umount``, a signal, a crash — the
``finally`` unmounts if the mount is still there, so a daemon never leaves a dead
mount behind. Thread-safety: one mount per process (pyfuse3 is a singleton).
"""

from __future__ import annotations

import logging
import os
import re
import select
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pyfuse3
import trio

from ..errors import MountError, VfsError
from ..repo import Repo
from ..view import View
from . import mounts
from .ops import Operations

log = logging.getLogger("versionfs.fuse")

READY_TIMEOUT = 60.0
READ_AHEAD_KB = 8192   # see docs/mount.md "Performance": 128 KiB default → 8 MiB


@dataclass(frozen=True, slots=True)
class MountRequest:
    repo: str            # the repository path as given (resolved by Repo.open)
    rev: str | None      # None: every version side by side
    mountpoint: str      # canonical
    commit: str | None = None  # the commit rev named when checked (hex)
    allow_other: bool = False
    debug: bool = False
    verify: str = "chunk"  # "off": no BLAKE3 check of what is read (docs/mount.md)


def parse_spec(spec: str, default_repo: str = ".") -> tuple[str, str | None]:
    """``REPO[@REV]`` → ``(repo, rev)``: split at the last ``@`` whose right part is
    non-empty and has no ``/``, unless the whole spec names an existing directory
    and the left part does not (a repository path may contain ``@``)."""
    for i in range(len(spec) - 1, -1, -1):
        if spec[i] == "@" and spec[i + 1:] and "/" not in spec[i + 1:]:
            repo, rev = spec[:i] or default_repo, spec[i + 1:]
            if os.path.isdir(spec) and not os.path.isdir(repo):
                return spec, None
            return repo, rev
    return spec or default_repo, None


def prepare(spec: str, mountpoint: str, *, default_repo: str = ".", allow_other=False,
            debug=False, verify="chunk") -> tuple[MountRequest, str | None]:
    """Check everything before mounting; returns the request and the commit id
    (hex, None for the all-versions view). Raises a one-line ``VfsError``."""
    repo_path, rev = parse_spec(spec, default_repo)
    mp = mounts.canonical(mountpoint)
    mounts.check_mountpoint(mp)
    mounts.check_fuse()
    # readonly=True would suit, but Index(readonly=True) opens its databases in a
    # read transaction, which leaves the handles invalid (mdb_get: EINVAL).
    with Repo.open_repo(repo_path) as repo:
        commit = repo.resolve(rev).hex() if rev is not None else None
        where = repo.workspace or repo.vfs_dir
    return MountRequest(where, rev, mp, commit, allow_other, debug, verify), commit


def fuse_options(req: MountRequest) -> set[str]:
    # the source column of the mount table: what is mounted, in safe characters
    spec = req.repo if req.rev is None else f"{req.repo}@{req.rev}"
    fsname = "versionfs:" + re.sub(r"[^A-Za-z0-9._/@~:+-]", "_", spec)
    opts = set(pyfuse3.default_options) | {f"fsname={fsname}", "subtype=versionfs", "ro"}
    if req.allow_other:
        opts.add("allow_other")
    if req.debug:
        opts.add("debug")
    return opts


def serve(req: MountRequest, on_ready: Callable[[VfsError | None], None] | None = None,
          *, read_threads: int = 8) -> None:
    """Mount and serve until unmounted or signalled; ``on_ready(None)`` once the
    root answers through the mount, ``on_ready(error)`` if it never does."""
    repo = Repo.open_repo(req.repo)
    # the commit checked before mounting, even if a snapshot moved HEAD since
    view = View(repo, req.commit or req.rev, verify=req.verify)
    stop = _Stop()
    saved = {signum: signal.signal(signum, stop.handler) for signum in _SIGNALS}
    try:
        ops = Operations(view, read_threads=read_threads)
        try:
            pyfuse3.init(ops, req.mountpoint, fuse_options(req))
        except RuntimeError:
            raise MountError(f"the kernel refused to mount {req.mountpoint} (is FUSE "
                             "usable here? --debug shows why)") from None
        state = mounts.MountState(
            req.mountpoint, req.repo, req.rev,
            view.commit_id.hex() if view.commit_id else None, os.getpid(),
            mounts.state_base(req.mountpoint) + ".log")
        try:
            trio.run(_main, req.mountpoint, on_ready, state, stop)
        finally:
            stop.requested = True
            mounts.remove_state(req.mountpoint, os.getpid())
            still = mounts.find_mount(req.mountpoint) is not None
            pyfuse3.close(unmount=still)
            log.info("unmounted %s", req.mountpoint)
    finally:
        view.close()
        repo.close()
        for signum, handler in saved.items():
            signal.signal(signum, handler)


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stop:
    """Whether the mount is stopping. A signal that comes before trio listens
    still ends in ``serve``'s ``finally`` (which unmounts); one that comes once
    stopping has begun — trio re-delivers those that arrive as its receiver
    closes — is ignored rather than turned into a second, noisy exit."""

    requested = False

    def handler(self, signum, frame):
        if self.requested:
            return
        self.requested = True
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)


async def _main(mountpoint: str, on_ready, state: mounts.MountState, stop: _Stop) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signals, stop)
        nursery.start_soon(_announce, mountpoint, on_ready, state)
        await pyfuse3.main(min_tasks=2, max_tasks=64)
        stop.requested = True
        nursery.cancel_scope.cancel()


async def _stop_on_signals(stop: _Stop) -> None:
    with trio.open_signal_receiver(*_SIGNALS) as sigs:
        async for signum in sigs:
            if not stop.requested:
                stop.requested = True
                log.info("%s: unmounting", signal.Signals(signum).name)
                pyfuse3.terminate()


async def _announce(mountpoint: str, on_ready, state: mounts.MountState) -> None:
    """Check the mount really serves its root, tune readahead, report readiness."""
    try:
        st = await trio.to_thread.run_sync(_probe, mountpoint)
    except OSError as exc:
        log.error("the new mount does not answer: %s", exc)
        if on_ready:
            on_ready(MountError(f"{mountpoint} was mounted but does not answer "
                                f"({exc.strerror}); see {state.log}"))
        pyfuse3.terminate()
        return
    _tune_readahead(st.st_dev)
    try:
        mounts.write_state(state)
    except OSError as exc:
        log.warning("cannot record the mount in %s: %s", mounts.state_dir(), exc)
    log.info("serving %s at %s", state.spec, mountpoint)
    if on_ready:
        on_ready(None)


def _probe(mountpoint: str) -> os.stat_result:
    os.listdir(mountpoint)
    return os.stat(mountpoint)


def _tune_readahead(dev: int) -> None:
    """Raise the kernel readahead of this mount (128 KiB by default): large
    sequential requests are what lets a FUSE daemon approach disk speed."""
    path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(READ_AHEAD_KB))
    except OSError as exc:  # not root, or no sysfs: slower, still correct
        log.debug("cannot set %s: %s", path, exc)


# -- the command: foreground or detached ------------------------------------------------


def mount(spec: str, mountpoint: str, *, default_repo: str = ".", foreground=False,
          allow_other=False, debug=False, verify="chunk",
          say: Callable[[str], None] = print) -> None:
    """``versionfs mount``: returns once the mount serves (or, in the foreground,
    once it is unmounted). Error handling: a one-line ``VfsError`` for every bad
    input, checked before anything is mounted."""
    req, commit = prepare(spec, mountpoint, default_repo=default_repo,
                          allow_other=allow_other, debug=debug, verify=verify)
    what = req.repo + (f"@{req.rev} ({commit[:12]})" if req.rev else " (all versions)")
    if foreground:
        _setup_logging(debug)
        failed: list[VfsError] = []

        def ready(err):
            if err is None:
                say(f"mounted {what} at {req.mountpoint}; Ctrl-C unmounts")
            else:
                failed.append(err)

        serve(req, ready)
        if failed:
            raise failed[0]
        return
    pid = _detach(req)
    say(f"mounted {what} at {req.mountpoint} (daemon pid {pid}; "
        f"'versionfs umount {req.mountpoint}' unmounts)")


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


def _detach(req: MountRequest) -> int:
    """Fork a daemon that mounts; return its pid once it reports the mount ready."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon: never returns
        os.close(rfd)
        code = 1
        try:
            code = _daemon(req, wfd)
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as pipe:
        reply = _read_reply(pipe, pid, mounts.state_base(req.mountpoint) + ".log")
    if reply != "ok":
        raise MountError(reply)
    if mounts.find_mount(req.mountpoint) is None:
        raise MountError(f"the daemon reported {req.mountpoint} mounted, but it is not")
    return pid


def _read_reply(pipe, pid: int, logpath: str) -> str:
    ready, _, _ = select.select([pipe], [], [], READY_TIMEOUT)
    if not ready:
        os.kill(pid, signal.SIGTERM)
        return f"the mount did not answer within {READY_TIMEOUT:g} s; see {logpath}"
    line = pipe.readline().decode(errors="replace").strip()
    if not line:
        return "the mount daemon exited before the mount was ready (--foreground --debug shows why)"
    return line


def _daemon(req: MountRequest, wfd: int) -> int:
    """The forked daemon: detach, log to the mountpoint's log file, serve."""
    os.setsid()
    os.chdir("/")  # hold no directory busy
    logpath = mounts.state_base(req.mountpoint) + ".log"
    try:
        os.makedirs(mounts.state_dir(), mode=0o700, exist_ok=True)
        out = os.open(logpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        out = os.open(os.devnull, os.O_WRONLY)
    null = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((0, null), (1, out), (2, out)):
        os.dup2(target, fd)
    os.closerange(3, wfd)
    os.closerange(wfd + 1, 1 << 16)
    warnings = _setup_logging(req.debug)
    code = _serve_reporting(req, wfd, logpath)
    if code == 0 and warnings.count == 0:
        try:
            os.unlink(logpath)
        except OSError:
            pass
    return code


def _serve_reporting(req: MountRequest, wfd: int, logpath: str) -> int:
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
