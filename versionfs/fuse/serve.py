"""Serving one mount in this process: ``pyfuse3.init``, the trio loop, readiness,
signals, unmount.

``serve`` runs ``pyfuse3.main`` on trio, plus a task that stops it on SIGINT,
SIGTERM or SIGHUP, the control socket through which runs observe what their
processes open (``control``), and a task that probes the new mount and reports
readiness.
Whatever ends the loop — ``versionfs umount``, a signal, a crash — the ``finally``
unmounts if the mount is still there, so a daemon never leaves a dead mount behind.
This is the only module of the mount's life that imports pyfuse3 and trio (about
150 ms): ``mount`` imports it in the forked daemon, while the command checks its
arguments. Thread-safety: one mount per process (pyfuse3 is a singleton).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
from collections.abc import Callable

import pyfuse3
import trio

from ..errors import MountError, VfsError
from ..remote.lazy import open_remote
from ..repo.repository import Repo
from ..view import Tracking, View
from ..repo import mounts
from .control import serve_control
from .request import MountRequest
from .ops import Operations

log = logging.getLogger("versionfs.fuse")

READ_AHEAD_KB = 8192   # see docs/mount.md "Performance": 128 KiB default → 8 MiB


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
    repo = open_remote(req.repo, **req.remote) if req.remote is not None \
        else Repo.open_repo(req.repo)
    # the commit checked before mounting, even if a snapshot moved HEAD since
    view = View(repo, req.commit or req.rev, verify=req.verify)
    stop = _Stop()
    saved = {signum: signal.signal(signum, stop.handler) for signum in _SIGNALS}
    try:
        tracking = Tracking(view)
        ops = Operations(view, read_threads=read_threads, tracking=tracking)
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
            trio.run(_main, req.mountpoint, on_ready, state, stop, tracking)
        finally:
            stop.requested = True
            tracking.clear_cache()
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


async def _main(mountpoint: str, on_ready, state: mounts.MountState, stop: _Stop,
                tracking: Tracking) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signals, stop)
        # listening before the state file names it, so a run finds it at once
        control = await nursery.start(serve_control, mounts.control_path(mountpoint),
                                      tracking)
        state = dataclasses.replace(state, control=control)
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


