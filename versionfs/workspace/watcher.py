"""The change journal's watcher: one process per workspace that tells scans which
directories changed.

It watches every directory the scan would walk (not ignored, on the workspace's
filesystem) with inotify (``workspace/inotify.py``), and keeps a generation (random,
new per start), a sequence number, and for each directory the last sequence at which
something in it changed. A scan asks over ``.vfs/watch.sock`` "what changed since
token GEN:SEQ" (the protocol is in docs/format.md); the watcher first reads its
inotify queue until it is empty — the kernel queued every change completed before
the question in the system call that made it, so nothing finished earlier can be
missed — then answers with the directories changed since SEQ and the new token, or
"cannot vouch" with the reason:

* another generation (the watcher restarted, or the token is from no watcher);
* events were lost since SEQ: the inotify queue overflowed (it then starts over with
  a fresh instance and a full crawl), a filesystem was mounted or unmounted inside
  the workspace (``/proc/self/mountinfo`` polls), or a hard link was made to a file
  (its other names may be in directories the event did not name).

Directories it could not watch (ENOSPC: ``fs.inotify.max_user_watches`` reached;
another filesystem; EACCES) go in every answer as "unwatched": the scan walks them
and everything below. A directory created after the crawl is watched when its
creation is read (then listed, for directories created in it meanwhile) and counts
as changed. ``.vfsignore`` edits reload the rules and watch what they no longer
ignore. The workspace root deleted or moved (or gone when it starts over), the
repository directory or the watcher's socket or pid file removed: each ends the
watcher (a watcher nobody can reach would otherwise live on).

The process around it (pid file, socket, the loop) is ``workspace/watchd.py``.

Thread-safety: a ``Watcher`` belongs to one thread.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import sys
import time

from . import inotify
from .ignore import IGNORE_FILE, Ignore
from .journal import PIDFILE, SOCKET, rules_digest

# In .vfs/: only its own end, and that of the watcher's files, matter.
VFS_DIR_MASK = (inotify.DELETE | inotify.MOVED_FROM | inotify.DELETE_SELF
                | inotify.MOVE_SELF | inotify.ONLYDIR | inotify.DONT_FOLLOW)
OWN_FILES = (SOCKET.encode(), PIDFILE.encode())



def log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} vfs-watch[{os.getpid()}] {msg}",
          file=sys.stderr, flush=True)


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _parent(rel: str) -> str:
    return rel.rpartition("/")[0]


class Watcher:
    """The watches of one workspace and what they reported."""

    def __init__(self, workspace: str, vfs_dir: str):
        self.ws = os.path.realpath(workspace)
        self.vfs_dir = vfs_dir
        self.generation = secrets.token_hex(16)
        self.seq = 0
        self.lost_seq = 0   # tokens below this cannot be vouched for
        self.lost_why = ""
        self.dirty: dict[str, int] = {}
        self.unwatched: dict[str, str] = {}
        self.events = self.overflows = self.resets = 0
        self.started = time.time()
        self.ignore = Ignore.load(self.ws)
        self.rules = rules_digest("\n".join(self.ignore.lines))
        self.dev = os.lstat(self.ws).st_dev
        self.mounts = mounts_under(self.ws)
        self.ended: str | None = None  # why the watcher must stop
        self._new_instance()

    def _new_instance(self) -> None:
        self.ino = inotify.Inotify()
        self.wd_rel: dict[int, str] = {}
        self.rel_wd: dict[str, int] = {}
        self.kids: dict[str, set[str]] = {}
        # The repository directory: its removal (or of our socket) ends the watcher.
        try:
            self.vfs_wd = self.ino.add_watch(os.fsencode(self.vfs_dir), VFS_DIR_MASK)
        except OSError as exc:
            self.vfs_wd = None
            self.ended = f"the repository directory cannot be watched: {exc.strerror}"

    def close(self) -> None:
        self.ino.close()

    def _path(self, rel: str) -> bytes:
        return os.fsencode(os.path.join(self.ws, rel) if rel else self.ws)

    # -- watches -------------------------------------------------------------------
    def crawl(self, top: str) -> None:
        """Watch directory ``top`` and every directory below it the scan would walk,
        each marked changed now (watched before being listed, so what is created in
        it meanwhile is either listed or reported)."""
        stack = [top]
        while stack:
            rel = stack.pop()
            path = self._path(rel)
            try:
                st = os.lstat(path)
            except OSError:
                if not rel:
                    self.ended = "the workspace directory is gone"
                continue  # gone again: its parent's event says so
            if not stat.S_ISDIR(st.st_mode):
                continue
            self.dirty[rel] = self.seq
            if st.st_dev != self.dev:
                self._unwatched(rel, "another filesystem is mounted there")
                continue
            try:
                wd = self.ino.add_watch(path)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue
                self._unwatched(rel, _why_unwatched(exc))
                continue
            old = self.wd_rel.get(wd)
            if old is not None and old != rel:  # one inode met under a new name
                self._forget(old)
            self.wd_rel[wd] = rel
            self.rel_wd[rel] = wd
            if rel:
                self.kids.setdefault(_parent(rel), set()).add(rel)
            self.unwatched.pop(rel, None)
            try:
                with os.scandir(path) as it:
                    subdirs = [de.name for de in it if de.is_dir(follow_symlinks=False)]
            except OSError:
                continue
            for name in subdirs:
                sub = _join(rel, os.fsdecode(name))
                if not self.ignore.ignored(sub, True):
                    stack.append(sub)

    def _unwatched(self, rel: str, why: str) -> None:
        if rel not in self.unwatched:
            log(f"cannot watch {rel or '.'}: {why}; scans walk it and all below")
        self.unwatched[rel] = why

    def _forget(self, rel: str) -> None:
        """Forget the watch of ``rel`` (not removing it)."""
        wd = self.rel_wd.pop(rel, None)
        if wd is not None and self.wd_rel.get(wd) == rel:
            del self.wd_rel[wd]
        if rel:
            sibs = self.kids.get(_parent(rel))
            if sibs is not None:
                sibs.discard(rel)

    def _drop(self, top: str) -> None:
        """``top`` went away (deleted, moved out or renamed): remove the watches of it
        and everything below, and its unwatched marks."""
        stack = [top]
        while stack:
            rel = stack.pop()
            stack.extend(self.kids.pop(rel, ()))
            wd = self.rel_wd.get(rel)
            self._forget(rel)
            if wd is not None:
                self.ino.rm_watch(wd)
            self.dirty[rel] = self.seq
        pre = top + "/"
        for rel in [u for u in self.unwatched if u == top or u.startswith(pre)]:
            del self.unwatched[rel]

    # -- events --------------------------------------------------------------------
    def drain(self) -> None:
        """Read and apply every queued event."""
        buf = self.ino.read()
        if not buf:
            return
        self.seq += 1
        rules = False
        while buf:
            applied = self._apply(buf)
            if applied is None:  # overflow: the instance was replaced
                return
            rules |= applied
            buf = self.ino.read()
        if rules:
            self._reload_rules()

    def _apply(self, buf: bytes) -> bool | None:
        """Apply the events in ``buf``; whether ``.vfsignore`` changed; None after an
        overflow (the rest of the queue is dropped with the old instance)."""
        seq = self.seq
        dirty = self.dirty
        wd_rel = self.wd_rel
        rules = False
        for wd, mask, name in inotify.events(buf):
            self.events += 1
            if mask & inotify.Q_OVERFLOW:
                self.overflows += 1
                self.reset("events were lost: the inotify queue overflowed (raise "
                           "fs.inotify.max_queued_events)")
                return None
            rel = wd_rel.get(wd)
            if rel is None:
                if wd == self.vfs_wd and (not name or name in OWN_FILES):
                    self.ended = "the repository directory or the watcher's socket was " \
                                 "removed"
                continue  # a watch already dropped
            if not name:
                self._self_event(wd, rel, mask)
                continue
            dirty[rel] = seq
            if mask & inotify.ISDIR:
                child = _join(rel, os.fsdecode(name))
                if mask & (inotify.DELETE | inotify.MOVED_FROM):
                    self._drop(child)
                if mask & (inotify.CREATE | inotify.MOVED_TO) \
                        and not self.ignore.ignored(child, True):
                    self.crawl(child)
            elif not rel and name == IGNORE_FILE.encode():
                rules = True
            elif mask & inotify.CREATE:
                self._check_links(rel, name)
        return rules

    def _self_event(self, wd: int, rel: str, mask: int) -> None:
        if mask & inotify.IGNORED:  # the kernel removed the watch
            self._forget(rel)
            self.dirty[rel] = self.seq
            if rel and os.path.isdir(self._path(rel)):
                self.crawl(rel)  # e.g. after an unmount: watch what is there now
            elif not rel:
                self.ended = "the workspace directory was deleted or unmounted"
        elif not rel and mask & (inotify.DELETE_SELF | inotify.MOVE_SELF):
            self.ended = "the workspace directory was deleted or moved"
        elif rel and mask & inotify.ATTRIB:
            self.dirty[rel] = self.dirty[_parent(rel)] = self.seq

    def _check_links(self, rel: str, name: bytes) -> None:
        """A new name for a file with other names: the directories holding those
        were told nothing, and may hold a record of it."""
        try:
            st = os.lstat(os.path.join(self._path(rel), name))
        except OSError:
            return
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            self.lost(f"a hard link was made ({_join(rel, os.fsdecode(name))}): its "
                      "other names' directories were not told")

    def lost(self, why: str) -> None:
        """Nothing before now can be vouched for."""
        self.lost_seq = self.seq
        self.lost_why = why

    def reset(self, why: str) -> None:
        """Start over: a fresh inotify instance and a full crawl; tokens from before
        cannot be vouched for."""
        log(f"starting over: {why}")
        self.resets += 1
        self.ino.close()
        self._new_instance()
        self.seq += 1
        self.unwatched.clear()
        self._reload_rules(crawl=False)
        self.crawl("")
        self.lost(why)

    def _reload_rules(self, crawl: bool = True) -> None:
        try:
            ignore = Ignore.load(self.ws)
        except Exception as exc:  # an unreadable .vfsignore fails the scans, not us
            log(f"cannot read {IGNORE_FILE}: {exc}")
            return
        digest = rules_digest("\n".join(ignore.lines))
        if digest != self.rules:
            self.ignore, self.rules = ignore, digest
            if crawl:
                log(f"{IGNORE_FILE} changed: watching what it no longer ignores")
                self.crawl("")

    def check_mounts(self) -> None:
        now = mounts_under(self.ws)
        if now != self.mounts:
            self.mounts = now
            self.reset("a filesystem was mounted or unmounted in the workspace")

    # -- answers -------------------------------------------------------------------
    def since(self, token: str | None) -> dict:
        """The answer to "what changed since ``token``" (after draining the queue)."""
        self.drain()
        reply = {"token": f"{self.generation}:{self.seq}", "rules": self.rules}
        gen, _, seq = (token or "").partition(":")
        why = None
        if not token:
            why = "no token"
        elif gen != self.generation:
            why = "the token is from another watcher (it was restarted)"
        elif not seq.isdigit() or int(seq) > self.seq:
            why = "the token is malformed"
        elif int(seq) < self.lost_seq:
            why = self.lost_why
        if why is not None:
            return {**reply, "vouch": False, "why": why}
        after = int(seq)
        return {**reply, "vouch": True,
                "dirty": [rel for rel, s in self.dirty.items() if s > after],
                "unwatched": sorted(self.unwatched)}

    def status(self) -> dict:
        self.drain()
        return {
            "pid": os.getpid(), "workspace": self.ws, "generation": self.generation,
            "seq": self.seq, "started": self.started, "watched": len(self.rel_wd),
            "unwatched": dict(sorted(self.unwatched.items())[:50]),
            "unwatched_count": len(self.unwatched), "events": self.events,
            "overflows": self.overflows, "resets": self.resets,
            "last_loss": self.lost_why, "rss": _rss(),
        }


def _why_unwatched(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return ("the inotify watch limit is reached (raise fs.inotify.max_user_watches, "
                "then restart the watcher)")
    return exc.strerror or str(exc)


def mounts_under(root: str) -> frozenset[str]:
    """Mount points at or below ``root`` (from ``/proc/self/mountinfo``)."""
    pre = root.rstrip("/") + "/"
    found = set()
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                point = _unescape(line.split(b" ", 5)[4])
                if point == root or point.startswith(pre):
                    found.add(point)
    except OSError:
        pass
    return frozenset(found)


def _unescape(field: bytes) -> str:
    # mountinfo escapes space, tab, newline and backslash as \\ooo
    return os.fsdecode(field.decode("unicode_escape").encode("latin-1")) \
        if b"\\" in field else os.fsdecode(field)


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
