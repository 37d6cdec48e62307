"""The change journal, as a scan uses it: which directories may be taken as they were.

With a watcher running (``vfs watch start``; the process is ``workspace/watchd.py``)
a full scan asks it, over ``.vfs/watch.sock``, which directories changed since the
token the last snapshot recorded, *before* it walks. The answer is either a set of
changed ("dirty") directories or "cannot vouch" (another watcher generation, lost
events, ...). A directory that is not dirty, has no dirty directory below it, is not
below one the watcher could not watch, and whose own stat still equals the one
recorded, keeps the tree the last scan made for it (the ``dircache`` table) without
being listed; everything else is walked as without a journal. The snapshot then
records, in its one transaction, the tree of every directory it listed and the token
taken before the walk, so a change during the walk makes the next scan look again.

What a reused directory needs: its tree id (in the index: checked), the totals the
commit's stats count (files, directories, links, bytes), and nothing from the stat
cache or the dir state, whose entries for it stay as they are (the walk looks for
stale entries only in the directories it lists). ``write`` drops the records of
directories gone from the listed ones (``Txn.children``).

A directory holding a file with more than one link is never recorded (nor are the
directories above it): a write through another name of the file is reported to
that name's directory only.

Constants, and why: ``ASK_TIMEOUT`` (30 s) bounds a scan's wait for a watcher that is
recrawling after an overflow (about 1 s per million files) or hung; then the scan
walks.

Thread-safety: a ``Journal`` serves one scan in one thread; ``ask`` may be called
from any thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..records.model import ObjectId, stat_bytes

SOCKET = "watch.sock"
PIDFILE = "watch.pid"
LOGFILE = "watch.log"
PROTOCOL = 1
ASK_TIMEOUT = 30.0
META_KEY = b"journal"
ROOT_KEY = b"."   # LMDB keys cannot be empty
OFF_VALUES = ("0", "off", "no", "false")

# dircache value: tree id, then the subtree's files, directories, symlinks and bytes
# (file sizes plus link target lengths), then the directory's packed stat.
_TOTALS = struct.Struct("<QQQQ")
_STAT_AT = 32 + _TOTALS.size


class NotRunning(Exception):
    """No watcher answered (none started, it died, or it did not answer in time)."""


@dataclass(frozen=True, slots=True)
class DirRecord:
    """What a scan produced for one directory (a ``dircache`` value)."""

    tree: ObjectId
    files: int
    dirs: int
    symlinks: int
    bytes: int
    stat: bytes   # ``records.model.stat_bytes`` of the directory

    def encode(self) -> bytes:
        return bytes(self.tree) + _TOTALS.pack(self.files, self.dirs, self.symlinks,
                                               self.bytes) + self.stat

    @classmethod
    def decode(cls, raw: bytes) -> DirRecord | None:
        if len(raw) <= _STAT_AT:
            return None
        files, dirs, links, size = _TOTALS.unpack_from(raw, 32)
        return cls(ObjectId(raw[:32]), files, dirs, links, size, raw[_STAT_AT:])


def dir_key(rel: str) -> bytes:
    """The ``dircache`` key of workspace directory ``rel`` ("" is the root)."""
    return _fs_name(rel) if rel else ROOT_KEY


def rules_digest(source: str) -> str:
    """A short digest of ``.vfsignore``'s text: records made under other rules are
    never reused."""
    return hashlib.blake2b(source.encode("utf-8", "surrogateescape"),
                           digest_size=12).hexdigest()


# -- talking to the watcher -------------------------------------------------------------


@contextlib.contextmanager
def _address(path: str):
    """``path`` as a Unix socket address: a long one (over the ~108-byte limit) goes
    through ``/proc/self/fd`` of its directory."""
    if len(os.fsencode(path)) < 100:
        yield path
        return
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


def bind(sock: socket.socket, path: str) -> None:
    with _address(path) as addr:
        sock.bind(addr)


def ask(vfs_dir: str, request: dict, timeout: float = ASK_TIMEOUT) -> dict:
    """Send one request to the workspace's watcher; its reply.

    Error handling: ``NotRunning`` when no watcher answers (no socket, a stale one,
    no answer within ``timeout``, a malformed answer)."""
    path = os.path.join(vfs_dir, SOCKET)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        with _address(path) as addr:
            sock.connect(addr)
        sock.sendall(json.dumps({"v": PROTOCOL, **request}).encode() + b"\n")
        chunks = []
        while True:
            data = sock.recv(1 << 16)
            if not data:
                break
            chunks.append(data)
            if data.endswith(b"\n"):
                break
    except FileNotFoundError:
        raise NotRunning("no watcher has been started") from None
    except ConnectionRefusedError:
        raise NotRunning("its socket is stale (the watcher died)") from None
    except TimeoutError:
        raise NotRunning(f"it did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise NotRunning(f"its socket failed: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise NotRunning("it sent a malformed answer") from None
    if not isinstance(reply, dict) or reply.get("v") != PROTOCOL:
        raise NotRunning("it speaks another protocol version (restart it)")
    if "error" in reply:
        raise NotRunning(str(reply["error"]))
    return reply


# -- one scan's view --------------------------------------------------------------------


def for_scan(repo, ignore, warn: Callable[[str], None]) -> Journal | None:
    """The journal for a full scan of ``repo``'s workspace, or None when no watcher
    was started there (or ``VFS_JOURNAL=0``)."""
    if os.environ.get("VFS_JOURNAL", "").strip().lower() in OFF_VALUES:
        return None
    if not os.path.exists(os.path.join(repo.vfs_dir, SOCKET)):
        return None
    return Journal(repo.vfs_dir, rules_digest("\n".join(ignore.lines)), warn)


class Journal:
    """What the watcher vouches for during one scan, and what the scan produced.

    ``state`` is "vouched" (unchanged directories were reused) or "walked", ``why``
    says why not, ``reused_dirs`` counts the directories taken without listing.
    """

    def __init__(self, vfs_dir: str, rules: str, warn: Callable[[str], None]):
        self.vfs_dir = vfs_dir
        self.rules = rules
        self.warn = warn
        self.state = "walked"
        self.why = ""
        self.token: str | None = None    # taken before the walk; None: record nothing
        self.stored: str | None = None   # the token the index held
        self.reused_dirs = 0
        self._walking = False            # vouched, and the walk is on
        self._closure: set[str] = set()  # dirty directories and every one above them
        self._tainted: tuple[str, ...] = ()  # unwatched: they and all below
        self.records: dict[str, DirRecord] = {}
        self.reused: dict[str, DirRecord] = {}
        self.unrecordable: set[str] = set()
        self._subdirs: dict[str, set[bytes]] = {}  # listed dir -> its subdirs' names

    # -- before the walk -------------------------------------------------------------
    def begin(self, txn) -> bool:
        """Take the token and the dirty set (the walk's read transaction ``txn``);
        whether unchanged directories may be reused."""
        raw = txn.meta(META_KEY.decode())
        stored_token = stored_rules = None
        if raw is not None:
            parts = raw.decode(errors="replace").split()
            if len(parts) == 4 and parts[0] == "1":
                stored_token, stored_rules = f"{parts[1]}:{parts[2]}", parts[3]
        self.stored = stored_token
        same_rules = stored_rules == self.rules
        try:
            reply = ask(self.vfs_dir, {"op": "since",
                                       "token": stored_token if same_rules else None})
        except NotRunning as exc:
            self.why = f"the watcher is not running: {exc}"
            self.warn(f"the change journal cannot help ({exc}); walking the whole "
                      "workspace; see 'vfs watch status'")
            return False
        self.token = reply.get("token")
        if reply.get("rules") != self.rules:
            self.why = "the ignore rules changed as the scan started"
        elif stored_token is None:
            self.why = "no earlier snapshot with this watcher"
        elif not same_rules:
            self.why = "the ignore rules changed since the last snapshot"
        elif not reply.get("vouch"):
            self.why = reply.get("why") or "the watcher cannot vouch"
        else:
            return self._vouch(txn, reply)
        return False

    def _vouch(self, txn, reply: dict) -> bool:
        dirty = reply.get("dirty", [])
        unwatched = reply.get("unwatched", [])
        closure = self._closure
        for rel in (*dirty, *unwatched):
            while rel not in closure:
                closure.add(rel)
                if not rel:
                    break
                rel = rel.rpartition("/")[0]
        self._tainted = tuple(u + "/" for u in unwatched if u)
        if "" in unwatched:
            self._tainted = ("",)
        self._walking = True
        self.state = "vouched"
        return True

    # -- during the walk -------------------------------------------------------------
    def reuse(self, rel: str, st: os.stat_result, stats, txn) -> ObjectId | None:
        """The tree id of directory ``rel`` (stat ``st``) if it may be taken unlisted
        (looked up in the walk's read transaction ``txn``, renewed after each of the
        snapshot's flushes); its totals are added to ``stats`` (``ScanStats``)."""
        if not self._walking or rel in self._closure:
            return None
        if self._tainted and any(rel.startswith(t) for t in self._tainted):
            return None
        raw = txn.get("dircache", dir_key(rel))
        rec = DirRecord.decode(raw) if raw is not None else None
        if rec is None or rec.stat != stat_bytes(st) \
                or not txn.has("trees", bytes(rec.tree)):
            return None
        stats.files += rec.files
        stats.symlinks += rec.symlinks
        stats.tree_bytes += rec.bytes
        self.reused[rel] = rec
        self.reused_dirs += rec.dirs
        return rec.tree

    def built(self, rel: str, st: os.stat_result, tid: bytes, files: int, links: int,
              size: int, subdirs: list[str], linked: bool) -> None:
        """Directory ``rel`` (stat ``st``), listed, gave tree ``tid``: ``files``
        regular files and ``links`` symlinks of ``size`` bytes in all (target lengths
        for links), and the subdirectories ``subdirs`` (their ``rel``, each reported
        before); ``linked``: one of its files has several links, so it is not
        recorded (nor is any directory above it)."""
        if self.token is None:
            return
        if self.state == "vouched":
            self._subdirs[rel] = {_fs_name(sub.rpartition("/")[2]) for sub in subdirs}
        if linked or rel in self.unrecordable:
            self.unrecordable.add(rel)
            return
        dirs, total = 1, size
        for sub in subdirs:
            rec = self.records.get(sub) or self.reused.get(sub)
            if rec is None:
                self.unrecordable.add(rel)
                return
            files += rec.files
            dirs += rec.dirs
            links += rec.symlinks
            total += rec.bytes
        self.records[rel] = DirRecord(ObjectId(tid), files, dirs, links, total,
                                      stat_bytes(st))

    def end_walk(self) -> None:
        self._walking = False

    @property
    def listed_dirs(self) -> set[str]:
        """The directories a vouched scan listed (every one it did not reuse)."""
        return set(self._subdirs)

    # -- in the snapshot's transaction ----------------------------------------------
    @property
    def pending(self) -> bool:
        """Whether ``write`` has anything to write."""
        return self.token is not None and bool(
            self.token != self.stored or self.records or self.unrecordable)

    def write(self, txn) -> None:
        """Record what this full scan produced, in the snapshot's write transaction
        ``txn``; in a vouched scan also delete the records of directories the listed
        ones no longer hold."""
        if self.token is None:
            return
        if self.state == "vouched":
            for rel, subdirs in self._subdirs.items():
                self._forget_gone(txn, rel, subdirs)
        else:  # every directory was listed: the records replace the table
            keep = {dir_key(rel) for rel in self.records}
            for key in [k for k in txn.keys("dircache") if k not in keep]:
                txn.delete("dircache", key)
        for rel in self.unrecordable:
            txn.delete("dircache", dir_key(rel))
        for rel, rec in self.records.items():
            txn.put("dircache", dir_key(rel), rec.encode())
        gen, _, seq = self.token.partition(":")
        txn.put("meta", META_KEY, f"1 {gen} {seq} {self.rules}".encode())

    @staticmethod
    def _forget_gone(txn, rel: str, subdirs: set[bytes]) -> None:
        prefix = _fs_name(rel) + b"/" if rel else b""
        n = len(prefix)
        gone = []
        for key, deeper in txn.children("dircache", prefix):
            name = key[n:-1] if deeper else key[n:]
            if key != ROOT_KEY and name not in subdirs:
                gone.extend(txn.keys("dircache", key) if deeper else (key,))
        for key in gone:
            txn.delete("dircache", key)


def _fs_name(rel: str) -> bytes:
    return rel.encode("utf-8", "surrogateescape")
