"""Writing a planned checkout into a directory tree, safely.

``Apply`` carries out a list of actions ``(op, path, tree entry)`` made by
``checkout``'s planning: write a file or symlink, set metadata, remove, make or
remove a directory. A file is written under a temporary name in its directory and
renamed over: never a torn file. Large files whose whole-file blob is in objects/
are cloned (FICLONE); other content is copied chunk by chunk, each chunk checked
against its id. Every operation goes through directory fds opened with
``O_NOFOLLOW``, so a symlink in the tree cannot redirect a write outside it. Modes
(without set-id bits) and mtimes come from the entries; directories' are set last,
deepest first, once every file is written. Files are written by worker threads,
many at once (each is a few system calls that wait on the file system).

Thread-safety: one ``Apply`` per checkout; it writes files on its own worker
threads (large and small files on separate pools) and joins them before returning;
only the thread that calls ``run`` counts, records and sets directories' metadata.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import stat
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from ..errors import CorruptObject, VfsError, from_oserror
from .ignore import TMP_PREFIX
from ..records.model import Kind, TreeEntry
from ..repo.repository import Repo
from .scan import RACY_NS, cache_key, cache_value

# Mode bits a checkout restores: permissions and sticky, never set-user/group-id.
MODE_MASK = 0o1777
LARGE_WORKERS = 2  # threads writing large files (copying is I/O and GIL-free hashing)
# Threads writing small files, and how many may be in flight. Each file is a few
# system calls that wait on the file system (create, rename over the old file, which
# frees it; on cold caches each may wait for a metadata read), so several at once
# keep the disk busy. 10,000 files at 1M, warm, under load 4-10: 1 thread 8-12 s,
# 2: 4.3-6.0 s, 8: 2.7-3.3 s, 16: 2.6-2.8 s; cold, 8: 6.8-9.1 s, 16: 3.8-6.4 s.
SMALL_WORKERS = 16
SMALL_WINDOW = 512
# Files written between two releases of the index's mapped pages (locating a chunk
# maps a page of the chunk index: 4,096 files map up to 16 MB).
RELEASE_EVERY = 4096
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# plan operations
WRITE, META, UNLINK, RMDIR, RMTREE, MKDIR, DIRMETA = range(7)



class Apply:
    """Carries out a plan through directory fds; counts what it did.

    Large files are written by ``LARGE_WORKERS`` threads while this thread goes on
    with the rest; a directory's mode and mtime are set only once every file below
    it is done.
    """

    def __init__(self, repo: Repo, root: str, actions: list, warn, progress_factory):
        self.repo = repo
        self.actions = actions
        self.warn = warn
        self.fds = _DirFds(root)
        self.threshold = repo.params.threshold
        self.touched: set[bytes] = set()     # stat cache keys written over or removed
        self.removed_trees: list[bytes] = []  # stat cache key prefixes of removed dirs
        self.cache: dict[bytes, bytes] = {}   # new stat cache entries
        self.kept: list[str] = []
        self.counts = dict.fromkeys(("written", "updated", "removed", "dirs_created",
                                     "dirs_removed", "bytes", "cloned"), 0)
        self._names = itertools.count(1)
        self._pool: ThreadPoolExecutor | None = None
        # files being written: (path, entry, future, the worker's directory fd, order)
        self._pending: list[tuple[str, TreeEntry, Future, int, int]] = []
        self._small_pool: ThreadPoolExecutor | None = None
        self._small: deque[tuple[str, TreeEntry, Future, int, int]] = deque()
        self._seq = itertools.count()
        self._dirmeta: list[tuple[str, TreeEntry]] = []
        self._where = ""  # the path being written, for error messages
        total = sum(e.size for op, _, e in actions if op == WRITE and e.kind is Kind.FILE)
        self.progress = progress_factory(total) if progress_factory and total else None

    def run(self) -> None:
        """Every action in order, but files are written by worker threads and each
        directory's mode and mtime set at the end (in plan order: deepest first),
        once every file is done."""
        try:
            for op, rel, entry in self.actions:
                self._where = rel
                if op == DIRMETA:
                    self._dirmeta.append((rel, entry))
                else:
                    self._do(op, rel, entry)
            self._wait("")
            for rel, entry in self._dirmeta:
                self._where = rel
                fd = self.fds.get(rel)
                os.fchmod(fd, entry.mode & MODE_MASK)
                os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        except OSError as exc:
            raise from_oserror(exc, f"checking out {self._where or '.'}") from None
        except VfsError as exc:
            raise _stopped(exc, self._where) from None
        finally:
            for pool in (self._pool, self._small_pool):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
            for queue in (self._small, self._pending):
                for item in queue:  # never started: its descriptor is still ours
                    if item[2].cancelled():
                        os.close(item[3])
            self.fds.close()
            if self.progress is not None and hasattr(self.progress, "close"):
                self.progress.close()

    def _do(self, op: int, rel: str, e: TreeEntry | None) -> None:
        parent, _, name = rel.rpartition("/")
        dfd = self.fds.get(parent)
        bname = _fs(name)
        if op == WRITE:
            self._write(dfd, bname, rel, e)
        elif op == META:
            self._meta(dfd, bname, e)
            self.counts["updated"] += 1
            self.touched.add(cache_key(rel))
        elif op == UNLINK:
            os.unlink(bname, dir_fd=dfd)
            self.counts["removed"] += 1
            self.touched.add(cache_key(rel))
        elif op == MKDIR:
            os.mkdir(bname, 0o700, dir_fd=dfd)
            self.counts["dirs_created"] += 1
        elif op == RMDIR:
            self._wait(rel)
            self._rmdir(dfd, bname, rel)
        elif op == RMTREE:
            self._wait(rel)
            self.fds.drop(rel)
            shutil.rmtree(bname, dir_fd=dfd)
            self.removed_trees.append(cache_key(rel) + b"/")
            self.counts["dirs_removed"] += 1

    def _rmdir(self, dfd: int, bname: bytes, rel: str) -> None:
        self.fds.drop(rel)
        try:
            os.rmdir(bname, dir_fd=dfd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            self.kept.append(rel)
            self.warn(f"kept {rel}/: it holds untracked or ignored files")
            return
        self.counts["dirs_removed"] += 1

    # -- files ----------------------------------------------------------------------
    def _write(self, dfd: int, bname: bytes, rel: str, e: TreeEntry) -> None:
        self.touched.add(cache_key(rel))
        if e.kind is Kind.SYMLINK:
            self._write_symlink(dfd, bname, e)
            self.counts["written"] += 1
        elif e.size >= self.threshold:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(LARGE_WORKERS, thread_name_prefix="vfs-co")
            own = os.dup(dfd)  # the fd cache may close dfd before the worker is done
            self._pending.append((rel, e, self._pool.submit(self._write_own, own, bname, e),
                                  own, next(self._seq)))
        else:
            if self._small_pool is None:
                self._small_pool = ThreadPoolExecutor(SMALL_WORKERS,
                                                      thread_name_prefix="vfs-co-small")
            if len(self._small) >= SMALL_WINDOW:
                self._finish(self._small.popleft())
            own = os.dup(dfd)
            self._small.append((rel, e, self._small_pool.submit(self._write_own, own,
                                                                  bname, e),
                                own, next(self._seq)))

    def _write_own(self, dfd: int, bname: bytes, e: TreeEntry):
        """``_write_file`` through ``dfd``, a descriptor of the worker's own."""
        try:
            return self._write_file(dfd, bname, e)
        finally:
            os.close(dfd)

    def _finish(self, item: tuple) -> None:
        self._where = item[0]  # errors are about this file
        self._done(item[0], item[1], *item[2].result())
        if item[4] % RELEASE_EVERY == RELEASE_EVERY - 1:
            self.repo.index.release_pages()  # the chunk index pages the reads mapped

    def _wait(self, rel: str) -> None:
        """Finish the pending files below directory ``rel`` ("" for all), in plan
        order, so that of several failures the first planned is the one reported."""
        prefix = rel + "/" if rel else ""
        due = []
        for queue in (self._small, self._pending):
            due += [item for item in queue if item[0].startswith(prefix)]
            keep = [item for item in queue if not item[0].startswith(prefix)]
            queue.clear()
            queue.extend(keep)
        due.sort(key=lambda item: item[4])
        try:
            for item in due:
                self._finish(item)
        except BaseException:
            self._pending.extend(due)  # so that ``run`` closes what never started
            raise

    def _done(self, rel: str, e: TreeEntry, st: os.stat_result, copied: int,
              cloned: int) -> None:
        self.counts["written"] += 1
        self.counts["bytes"] += copied
        self.counts["cloned"] += cloned
        if st.st_mtime_ns < time.time_ns() - RACY_NS:
            self.cache[cache_key(rel)] = cache_value(st, e.id)

    def _make_tmp(self, make) -> tuple:
        """A new temporary name made with ``make(name)``; skips leftovers."""
        while True:
            tmp = f"{TMP_PREFIX}{os.getpid()}-{next(self._names)}".encode()
            try:
                return tmp, make(tmp)
            except FileExistsError:  # left by a crashed process with our pid
                continue

    def _write_symlink(self, dfd: int, bname: bytes, e: TreeEntry) -> None:
        tmp, _ = self._make_tmp(lambda t: os.symlink(e.target, t, dir_fd=dfd))
        try:
            os.utime(tmp, ns=(e.mtime_ns, e.mtime_ns), dir_fd=dfd, follow_symlinks=False)
            os.rename(tmp, bname, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            _unlink_quietly(tmp, dfd)
            raise

    def _write_file(self, dfd: int, bname: bytes, e: TreeEntry):
        """Write a file under a temporary name and rename it over ``bname``.

        Returns its stat after the rename (which sets the ctime), the bytes copied
        and the bytes cloned.
        """
        tmp, fd = self._make_tmp(lambda t: os.open(t, _CREATE, 0o600, dir_fd=dfd))
        try:
            try:
                copied, cloned = self._fill(fd, e)
                os.fchmod(fd, e.mode & MODE_MASK)
                os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
                os.rename(tmp, bname, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                _unlink_quietly(tmp, dfd)
                raise
            return os.fstat(fd), copied, cloned
        finally:
            os.close(fd)

    def _fill(self, fd: int, e: TreeEntry) -> tuple[int, int]:
        if e.size == 0:
            return 0, 0
        if e.size >= self.threshold:
            if self.repo.store.clone_object(e.id, fd, e.size):
                self._tick(e.size)
                return 0, e.size
            _preallocate(fd, e.size)
        done = 0
        for ref in self.repo.chunks(e):
            data = self.repo.read_chunk(ref.id)
            _write_all(fd, data)
            done += len(data)
            self._tick(len(data))
        if done != e.size:
            raise CorruptObject(f"file {e.id.short} has {done} bytes in its chunks but "
                                f"its entry says {e.size}; run 'vfs fsck'")
        return done, 0

    def _meta(self, dfd: int, bname: bytes, e: TreeEntry) -> None:
        if e.kind is Kind.SYMLINK:  # a symlink's own mode cannot be set on Linux
            os.utime(bname, ns=(e.mtime_ns, e.mtime_ns), dir_fd=dfd, follow_symlinks=False)
            return
        try:
            fd = os.open(bname, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dfd)
        except PermissionError:  # unreadable (mode 000): the planner saw a regular file
            os.chmod(bname, e.mode & MODE_MASK, dir_fd=dfd)
            os.utime(bname, ns=(e.mtime_ns, e.mtime_ns), dir_fd=dfd, follow_symlinks=False)
            return
        try:
            os.fchmod(fd, e.mode & MODE_MASK)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        finally:
            os.close(fd)

    def _tick(self, n: int) -> None:
        if self.progress is not None:
            self.progress(n)


class _DirFds:
    """Open directory fds along the current path (plans are depth first).

    Each directory below the root is opened relative to its parent with
    ``O_NOFOLLOW``, so nothing a checkout does can land outside the root.
    """

    def __init__(self, root: str):
        self.fds = {"": os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)}
        self.root_user = os.geteuid() == 0

    def get(self, rel: str) -> int:
        fd = self.fds.get(rel)
        if fd is not None:
            return fd
        for key in [k for k in self.fds if k and not rel.startswith(k + "/")]:
            os.close(self.fds.pop(key))
        parent, _, name = rel.rpartition("/")
        pfd = self.get(parent)
        fd = os.open(_fs(name), _OPEN_DIR, dir_fd=pfd)
        self.fds[rel] = fd
        if not self.root_user:  # make room to write; the plan's DIRMETA restores the mode
            mode = os.fstat(fd).st_mode
            if mode & 0o700 != 0o700:
                os.fchmod(fd, stat.S_IMODE(mode) | 0o700)
        return fd

    def drop(self, rel: str) -> None:
        for key in [k for k in self.fds if k == rel or k.startswith(rel + "/")]:
            os.close(self.fds.pop(key))

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _fs(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _preallocate(fd: int, size: int) -> None:
    """Reserve a large file's blocks up front: on ext4 this makes the copy and the
    rename over the old file (which flushes delayed allocations) several times
    faster, and a full disk fails here, before any copying."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink_quietly(name: bytes, dfd: int) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass


def _stopped(exc: VfsError, rel: str) -> VfsError:
    """The same error, saying which path the checkout was writing."""
    new = type(exc)(f"{exc.message} (while checking out {rel or '.'})")
    new.errno = exc.errno
    return new
