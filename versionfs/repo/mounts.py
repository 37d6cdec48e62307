"""The mounts of this machine: which are versionfs, what they serve, how to stop them.

The kernel's mount table (``/proc/self/mountinfo``) says what is mounted where; every
versionfs daemon also leaves a small JSON state file (repository, revision, commit,
pid, log, control socket) in a per-user runtime directory and removes it when it
exits. Nothing here touches a mounted filesystem itself, so a dead mount (its daemon
killed) cannot hang these functions. Thread-safety: no shared state; files are written atomically.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from ..errors import MountError

FSTYPE = "fuse.versionfs"
FUSE_DEVICE = "/dev/fuse"
FUSERMOUNT = "fusermount3"
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class MountEntry:
    mountpoint: str
    fstype: str
    source: str


@dataclass(frozen=True, slots=True)
class MountState:
    """What a versionfs daemon serves, as recorded in its state file."""

    mountpoint: str
    repo: str
    rev: str | None
    commit: str | None
    pid: int
    log: str
    control: str | None = None  # the daemon's control socket (observed reads); None
    #                             for daemons that predate it

    @property
    def spec(self) -> str:
        return self.repo if self.rev is None else f"{self.repo}@{self.rev}"


def mount_table() -> list[MountEntry]:
    """Every mount visible to this process (later mounts last)."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            out.append(MountEntry(_unescape(fields[4]), fields[sep + 1], fields[sep + 2]))
    return out


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def find_mount(mountpoint: str) -> MountEntry | None:
    """The topmost mount at ``mountpoint`` (an absolute, normalized path), if any."""
    found = None
    for entry in mount_table():
        if entry.mountpoint == mountpoint:
            found = entry
    return found


def canonical(path: str) -> str:
    """An absolute path with symlinks of its parents resolved, without touching
    ``path`` itself (which may be a dead mount)."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    return os.path.join(os.path.realpath(parent), name) if name else path


# -- state files ------------------------------------------------------------------


def state_dir() -> str:
    if os.geteuid() == 0:
        return "/run/versionfs"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "versionfs") if runtime else f"/tmp/versionfs-{os.getuid()}"


def state_base(mountpoint: str) -> str:
    """The state file path of a mountpoint, without extension (``.json``, ``.log``)."""
    digest = hashlib.sha256(mountpoint.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", mountpoint.strip("/"))[-60:] or "root"
    return os.path.join(state_dir(), f"{tail}-{digest}")


def write_state(state: MountState) -> None:
    os.makedirs(state_dir(), mode=0o700, exist_ok=True)
    path = state_base(state.mountpoint) + ".json"
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"mountpoint": state.mountpoint, "repo": state.repo, "rev": state.rev,
                   "commit": state.commit, "pid": state.pid, "log": state.log,
                   "control": state.control}, f)
    os.rename(tmp, path)


def read_state(mountpoint: str) -> MountState | None:
    try:
        with open(state_base(mountpoint) + ".json") as f:
            raw = json.load(f)
        return MountState(raw["mountpoint"], raw["repo"], raw["rev"], raw["commit"],
                          int(raw["pid"]), raw["log"], raw.get("control"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def control_path(mountpoint: str) -> str:
    """Where the daemon of ``mountpoint`` serves its control socket: short, since a
    unix socket path holds at most 107 bytes."""
    digest = hashlib.sha256(mountpoint.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(state_dir(), f"{digest}.sock")


def remove_state(mountpoint: str, pid: int) -> None:
    """Remove the state file if it is still the one ``pid`` wrote."""
    state = read_state(mountpoint)
    if state is not None and state.pid == pid:
        try:
            os.unlink(state_base(mountpoint) + ".json")
        except FileNotFoundError:
            pass


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


# -- checks, listing, unmounting -------------------------------------------------------


def check_fuse() -> None:
    """Raise ``MountError`` unless the FUSE device and ``fusermount3`` are there."""
    if not os.path.exists(FUSE_DEVICE):
        raise MountError(
            f"{FUSE_DEVICE} is missing: load the fuse kernel module ('modprobe fuse'), "
            "or in a container pass the device (docker run --device /dev/fuse)")
    if shutil.which(FUSERMOUNT) is None:
        raise MountError(f"{FUSERMOUNT} not found on PATH: install FUSE 3 "
                         "(the 'fuse3' package on Debian, Ubuntu and Fedora)")


def check_mountpoint(mountpoint: str) -> None:
    """Raise ``MountError`` unless ``mountpoint`` is an empty, unmounted directory."""
    entry = find_mount(mountpoint)
    if entry is not None:
        hint = f"'versionfs umount {mountpoint}'" if entry.fstype == FSTYPE else \
            f"'umount {mountpoint}'"
        raise MountError(f"{mountpoint} is already mounted ({entry.fstype} from "
                         f"{entry.source}); unmount it first with {hint}")
    try:
        names = os.listdir(mountpoint)
    except FileNotFoundError:
        raise MountError(f"mountpoint {mountpoint} does not exist; create it first "
                         f"(mkdir -p {mountpoint})") from None
    except NotADirectoryError:
        raise MountError(f"mountpoint {mountpoint} is not a directory") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountError(f"{mountpoint} is a dead FUSE mount; clear it with "
                             f"'versionfs umount {mountpoint}'") from None
        raise MountError(f"cannot use mountpoint {mountpoint}: {exc.strerror}") from None
    if names:
        raise MountError(f"mountpoint {mountpoint} is not empty; "
                         "mount on an empty directory")


def active_mounts() -> list[tuple[MountEntry, MountState | None]]:
    """Every versionfs mount with its state (None when its state file is gone)."""
    return [(e, read_state(e.mountpoint)) for e in mount_table() if e.fstype == FSTYPE]


def umount(mountpoint: str, *, lazy: bool = False, wait: float = 10.0) -> MountState | None:
    """Unmount a versionfs mount and wait for its daemon to exit.

    Error handling: ``MountError`` when ``mountpoint`` is not a versionfs mount, when
    it is busy (unless ``lazy``), or when ``fusermount3`` fails or is missing.
    """
    mountpoint = canonical(mountpoint)
    entry = find_mount(mountpoint)
    if entry is None or entry.fstype != FSTYPE:
        what = "not mounted" if entry is None else f"a {entry.fstype} mount"
        raise MountError(f"{mountpoint} is not a versionfs mount ({what}); "
                         "'versionfs mounts' lists them")
    if shutil.which(FUSERMOUNT) is None:
        raise MountError(f"{FUSERMOUNT} not found on PATH: install FUSE 3 "
                         "(the 'fuse3' package)")
    state = read_state(mountpoint)
    argv = [FUSERMOUNT, "-u", *(["-z"] if lazy else []), mountpoint]
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        if "busy" in proc.stderr.lower():
            raise MountError(f"cannot unmount {mountpoint}: it is busy (a process has a "
                             "file open or its working directory there); stop it, or "
                             "use 'versionfs umount --lazy'")
        raise MountError(f"cannot unmount {mountpoint}: "
                         f"{proc.stderr.strip() or f'{FUSERMOUNT} failed'}")
    if state is not None:
        deadline = time.monotonic() + wait
        while alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not alive(state.pid):
            remove_state(mountpoint, state.pid)
    return state
