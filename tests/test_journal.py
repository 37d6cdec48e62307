"""The change journal: a real watcher process (``vfs watch start``) on a real
workspace, and scans that reuse what it vouches for.

Every check compares a scan with the journal against a scan without it
(``VFS_JOURNAL=0``: the plain walk) — same root tree, same totals — and looks at what
the journal scan listed (``stats.dirs`` counts listed directories, the journal names
them). The scans ask the watcher, which reads its inotify queue before it answers:
that is the synchronisation, no sleeps. Losses are made for real: an overflow by
stopping the watcher (SIGSTOP) while more events than the kernel's queue holds
happen, unwatchable directories by a user namespace with a small
``max_inotify_watches``, a dead watcher by SIGKILL.
"""

from __future__ import annotations

import json
import mmap
import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from versionfs import Repo
from versionfs.workspace import journal as journal_mod
from versionfs.workspace.journal import DirRecord
from versionfs.workspace.scan import scan_workspace

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
TREE = {f"{d}/{name}": f"{d}/{name} v1\n" for d in ("a", "b", "c", "a/sub", "b/sub",
                                                      "c/sub")
        for name in ("f1", "f2", "f3")}


def make_tree(ws: Path) -> None:
    for rel, text in TREE.items():
        p = ws / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def kill_and_wait(pid: int, sig=signal.SIGKILL) -> None:
    """Send ``sig`` and wait until the process has ended (a pidfd, not a sleep)."""
    fd = os.pidfd_open(pid)
    try:
        os.kill(pid, sig)
        assert select.select([fd], [], [], 30)[0], f"pid {pid} outlived signal {sig}"
    finally:
        os.close(fd)


class Watched:
    """A workspace with a watcher; scans and snapshots in this process."""

    def __init__(self, ws: Path, cli, monkeypatch):
        self.ws = ws
        self.cli = cli
        self.mp = monkeypatch
        self.repo = Repo.open(str(ws))
        self.warnings: list[str] = []

    @property
    def pid(self) -> int:
        return json.loads(self.cli("watch", "status", "--json", cwd=self.ws).stdout)["pid"]

    def scan(self):
        """A scan with the journal, checked against one without it."""
        work = scan_workspace(self.repo, warn=self.warnings.append)
        with self.mp.context() as m:
            m.setenv("VFS_JOURNAL", "0")
            plain = scan_workspace(self.repo)
        assert plain.journal is None
        assert work.root == plain.root, "the journal scan differs from a plain walk"
        s, p = work.stats, plain.stats
        assert (s.files, s.symlinks, s.tree_bytes) == (p.files, p.symlinks, p.tree_bytes)
        return work

    def snapshot(self, msg: str = "") -> None:
        self.repo.snapshot(message=msg)

    def close(self) -> None:
        self.repo.close()


def listed(work) -> set[str]:
    """The directories a vouched journal scan listed."""
    assert work.journal is not None and work.journal.state == "vouched", \
        (work.journal and work.journal.why)
    return work.journal.listed_dirs


@pytest.fixture
def watched(tmp_path, cli, monkeypatch):
    ws = tmp_path / "ws"
    make_tree(ws)
    cli("init", cwd=ws)
    cli("watch", "start", cwd=ws)
    w = Watched(ws, cli, monkeypatch)
    pid = w.pid
    try:
        yield w
    finally:
        w.close()
        cli("watch", "stop", cwd=ws, check=False)
        if not process_gone(pid):
            kill_and_wait(pid)


def recorded(w: Watched) -> None:
    """Snapshot, then a scan that must list nothing."""
    w.snapshot()
    work = w.scan()
    assert work.stats.dirs == 0 and listed(work) == set()
    assert work.journal.reused_dirs == 7


# -- nothing changed --------------------------------------------------------------------


def test_nothing_changed_lists_no_directory(watched):
    first = watched.scan()
    assert first.journal.state == "walked"
    assert first.journal.why == "no earlier snapshot with this watcher"
    assert first.stats.dirs == 7
    watched.snapshot("v1")
    again = watched.scan()
    assert again.stats.dirs == 0
    assert again.stats.files == len(TREE)
    assert again.journal.reused_dirs == 7
    # the snapshot of nothing changed records nothing and keeps reusing
    watched.snapshot()
    assert watched.scan().stats.dirs == 0


# -- every kind of change ---------------------------------------------------------------


def _rewrite(ws):
    (ws / "a/f1").write_text("a/f1 v2\n")  # same size


def _append(ws):
    with open(ws / "a/f2", "a") as f:
        f.write("more\n")


def _truncate(ws):
    os.truncate(ws / "a/f3", 0)


def _chmod(ws):
    os.chmod(ws / "a/f1", 0o600)


def _touch(ws):
    os.utime(ws / "a/f1", ns=(1_600_000_000_000_000_000,) * 2)


def _create(ws):
    (ws / "b/new").write_text("new\n")


def _delete(ws):
    os.unlink(ws / "b/f1")


def _rename_within(ws):
    os.rename(ws / "a/f1", ws / "a/f1-renamed")


def _rename_between(ws):
    os.rename(ws / "a/f2", ws / "b/f2-moved")


def _new_dir(ws):
    (ws / "a/new/deeper").mkdir(parents=True)
    (ws / "a/new/x").write_text("x\n")
    (ws / "a/new/deeper/y").write_text("y\n")


def _rmdir(ws):
    shutil.rmtree(ws / "a/sub")


def _rename_dir_within(ws):
    os.rename(ws / "a/sub", ws / "a/sub-renamed")


def _rename_dir_between(ws):
    os.rename(ws / "a/sub", ws / "b/sub-from-a")


def _symlink(ws):
    os.symlink("f1", ws / "b/link")


def _chmod_dir(ws):
    os.chmod(ws / "a/sub", 0o700)


def _touch_dir(ws):
    os.utime(ws / "a/sub", ns=(1_600_000_000_000_000_000,) * 2)


def _file_to_dir(ws):
    os.unlink(ws / "b/f3")
    (ws / "b/f3").mkdir()
    (ws / "b/f3/inside").write_text("i\n")


def _dir_to_file(ws):
    shutil.rmtree(ws / "b/sub")
    (ws / "b/sub").write_text("now a file\n")


def _deep(ws):
    (ws / "a/sub/f1").write_text("deep change\n")


def _mmap(ws):
    fd = os.open(ws / "a/f1", os.O_RDWR)
    try:
        m = mmap.mmap(fd, 4)
    finally:
        os.close(fd)  # the mapping keeps the file open; its close is reported
    m[:4] = b"MMAP"
    m.close()


CHANGES = {
    "rewrite in place": (_rewrite, {"", "a"}),
    "append": (_append, {"", "a"}),
    "truncate": (_truncate, {"", "a"}),
    "chmod": (_chmod, {"", "a"}),
    "touch": (_touch, {"", "a"}),
    "create": (_create, {"", "b"}),
    "delete": (_delete, {"", "b"}),
    "rename within a directory": (_rename_within, {"", "a"}),
    "rename between directories": (_rename_between, {"", "a", "b"}),
    "new directory with files": (_new_dir, {"", "a", "a/new", "a/new/deeper"}),
    "rmdir": (_rmdir, {"", "a"}),
    "rename a directory": (_rename_dir_within, {"", "a", "a/sub-renamed"}),
    "move a directory": (_rename_dir_between, {"", "a", "b", "b/sub-from-a"}),
    "symlink": (_symlink, {"", "b"}),
    "chmod a directory": (_chmod_dir, {"", "a"}),
    "touch a directory": (_touch_dir, {"", "a"}),
    "file replaced by a directory": (_file_to_dir, {"", "b", "b/f3"}),
    "directory replaced by a file": (_dir_to_file, {"", "b"}),
    "deep change": (_deep, {"", "a", "a/sub"}),
    "write through mmap": (_mmap, {"", "a"}),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_every_kind_of_change_is_seen(watched, name):
    change, must_list = CHANGES[name]
    recorded(watched)
    change(watched.ws)
    work = watched.scan()
    seen = listed(work)
    assert must_list <= seen
    assert not seen & {"c", "c/sub"}, "an unchanged directory was listed"
    # recorded again, the next scan lists nothing and still equals the walk
    watched.snapshot()
    again = watched.scan()
    assert again.stats.dirs == 0


def test_stale_entries_of_listed_directories_go_skipped_ones_stay(watched):
    recorded(watched)
    _rmdir(watched.ws)
    _delete(watched.ws)
    watched.snapshot()
    with watched.repo.index.read() as txn:
        keys = {k.decode() for k in txn.keys("statcache")}
        dirs = {k.decode() for k in txn.keys("dircache")}
    assert not any(k.startswith("a/sub/") for k in keys) and "b/f1" not in keys
    assert "a/sub" not in dirs
    # the entries of the directories reused unlisted are all still there
    assert {k for k in TREE if k.startswith("c/")} <= keys
    assert {"c", "c/sub", "b/sub", "a", "b", "."} <= dirs


def test_a_directory_made_after_the_watcher_started(watched):
    recorded(watched)
    late = watched.ws / "late"
    late.mkdir()
    (late / "x").write_text("x\n")
    assert {"", "late"} <= listed(watched.scan())
    watched.snapshot()
    assert watched.scan().stats.dirs == 0
    (late / "x").write_text("changed\n")
    (late / "inner").mkdir()
    (late / "inner/y").write_text("y\n")
    assert {"", "late", "late/inner"} <= listed(watched.scan())
    watched.snapshot()
    (late / "inner/y").write_text("y again\n")
    assert listed(watched.scan()) == {"", "late", "late/inner"}


def test_a_change_after_the_token_is_seen_by_the_next_scan(watched, monkeypatch):
    """The token is taken before the walk: a change made after it — before the walk
    (the scan may reuse the directory as it was at the token), or after the
    directory was listed and built — is found by the next scan."""
    recorded(watched)
    ws = watched.ws
    (ws / "b/new").write_text("makes b listed\n")
    real_begin = journal_mod.Journal.begin
    real_built = journal_mod.Journal.built

    def begin(self, txn):
        ok = real_begin(self, txn)
        (ws / "a/f1").write_text("before the walk\n")
        return ok

    def built(self, rel, *args):
        real_built(self, rel, *args)
        if rel == "b":
            (ws / "b/f1").write_text("after b was listed\n")

    with monkeypatch.context() as m:
        m.setattr(journal_mod.Journal, "begin", begin)
        m.setattr(journal_mod.Journal, "built", built)
        watched.snapshot()
    head = watched.repo.head()
    assert watched.repo.entry(head, "a/f1").size == len("a/f1 v1\n")  # reused
    assert watched.repo.entry(head, "b/f1").size == len("b/f1 v1\n")  # read before
    assert watched.repo.entry(head, "b/new").size == len("makes b listed\n")
    work = watched.scan()
    assert {"", "a", "b"} <= listed(work)
    assert not listed(work) & {"c", "c/sub"}
    watched.snapshot()
    head = watched.repo.head()
    assert watched.repo.entry(head, "a/f1").size == len("before the walk\n")
    assert watched.repo.entry(head, "b/f1").size == len("after b was listed\n")


def test_a_streamed_snapshot_reuses_across_its_flushes(watched, monkeypatch):
    """A snapshot renews the walk's read transaction after each flush of records:
    the journal looks its records up in the current one. Renewed here before every
    directory, and flushes every 2 records."""
    from versionfs.workspace import scan
    monkeypatch.setattr(scan, "FLUSH_AT", 2)
    walk_dir = scan.Scanner._walk_dir

    def renewing(self, *args, **kw):
        self._renew()
        return walk_dir(self, *args, **kw)

    monkeypatch.setattr(scan.Scanner, "_walk_dir", renewing)
    recorded(watched)
    for rel in ("a/f1", "a/f2", "a/sub/f1", "b/f3", "b/sub/f2"):
        (watched.ws / rel).write_text(f"{rel} streamed\n")
    watched.snapshot("streamed")
    head = watched.repo.commit(watched.repo.head()).tree
    work = watched.scan()
    assert work.root == head and work.stats.dirs == 0
    assert watched.repo.entry(watched.repo.head(), "b/sub/f2").size == \
        len("b/sub/f2 streamed\n")


def test_hard_links(watched):
    """A directory holding a file with several links is never reused: a write
    through another name is reported to that name's directory only."""
    recorded(watched)
    os.link(watched.ws / "a/f1", watched.ws / "b/hard")
    work = watched.scan()
    assert work.journal.state == "walked" and "hard link" in work.journal.why
    watched.snapshot()
    with open(watched.ws / "b/hard", "a") as f:
        f.write("through the other name\n")
    seen = listed(watched.scan())
    assert {"", "a", "b"} <= seen and not seen & {"c", "c/sub"}


def test_ignore_rules_changes(watched):
    recorded(watched)
    (watched.ws / ".vfsignore").write_text("b/sub/\n")
    work = watched.scan()
    assert work.journal.state == "walked" and "ignore rules" in work.journal.why
    watched.snapshot()
    assert watched.scan().stats.dirs == 0
    (watched.ws / "b/sub/f1").write_text("ignored change\n")
    watched.scan()
    watched.snapshot()
    (watched.ws / ".vfsignore").write_text("")  # b/sub is back, with its change
    work = watched.scan()
    assert work.journal.state == "walked"
    watched.snapshot()
    assert watched.repo.entry(watched.repo.head(), "b/sub/f1").size == \
        len("ignored change\n")
    assert watched.scan().stats.dirs == 0


def test_a_dircache_tree_that_is_gone_is_not_reused(watched):
    """gc deletes the records of trees it deletes; a record naming a missing tree
    (a concurrent gc) is walked."""
    recorded(watched)
    with watched.repo.index.write() as txn:
        for key in (b".", b"c"):
            rec = DirRecord.decode(txn.get("dircache", key))
            txn.put("dircache", key, DirRecord(bytes(32), *[getattr(rec, k) for k in (
                "files", "dirs", "symlinks", "bytes", "stat")]).encode())
    assert listed(watched.scan()) == {"", "c"}


def test_gc_forgets_records_of_trees_it_deletes(watched, cli):
    recorded(watched)
    cli("branch", "exp", cwd=watched.ws)
    cli("checkout", "exp", cwd=watched.ws)
    (watched.ws / "a/f1").write_text("on exp\n")
    watched.snapshot("exp")
    cli("checkout", "main", cwd=watched.ws)
    cli("branch", "-D", "exp", cwd=watched.ws)
    cli("gc", cwd=watched.ws)
    with watched.repo.index.read() as txn:
        missing = [k for k, v in txn.items("dircache") if not txn.has("trees", v[:32])]
    assert missing == []
    assert watched.repo.entry(watched.repo.head(), "a/f1").size == len("a/f1 v1\n")
    watched.scan()


# -- when the watcher cannot vouch -----------------------------------------------------


def test_overflow_walks_then_vouches_again(watched):
    recorded(watched)
    pid = watched.pid
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        limit = int(f.read())
    fds = [os.open(watched.ws / "b" / name, os.O_WRONLY | os.O_APPEND)
           for name in ("f1", "f2")]
    os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(limit + 100):  # alternating files: the kernel merges no two
            os.write(fds[i % 2], b"x")
    finally:
        os.kill(pid, signal.SIGCONT)
        for fd in fds:
            os.close(fd)
    work = watched.scan()
    assert work.journal.state == "walked" and "overflow" in work.journal.why
    assert work.stats.dirs == 7
    st = json.loads(watched.cli("watch", "status", "--json", cwd=watched.ws).stdout)
    assert st["overflows"] == 1 and st["resets"] == 1
    watched.snapshot()
    assert watched.scan().stats.dirs == 0


def test_a_killed_watcher_means_walking(watched):
    recorded(watched)
    kill_and_wait(watched.pid)
    (watched.ws / "a/f1").write_text("while nobody watched\n")
    work = watched.scan()
    assert work.journal.state == "walked" and "not running" in work.journal.why
    assert work.stats.dirs == 7
    assert any("change journal cannot help" in w for w in watched.warnings)
    out = watched.cli("watch", "status", cwd=watched.ws).stdout
    assert "no watcher is running" in out and "removed the files" in out
    assert not (watched.ws / ".vfs" / journal_mod.SOCKET).exists()
    assert watched.scan().journal is None  # nothing started: no journal, no warning
    watched.cli("watch", "start", cwd=watched.ws)
    work = watched.scan()
    assert work.journal.state == "walked" and "another watcher" in work.journal.why
    recorded(watched)


@pytest.mark.parametrize("what", ["workspace", "repository", "socket"])
def test_the_watcher_ends_when_its_workspace_goes(tmp_path, cli, what):
    """A watcher nobody can reach any more exits: its workspace deleted (after an
    overflow too: the start-over finds no root), its .vfs deleted, its socket
    removed."""
    ws = tmp_path / "ws"
    make_tree(ws)
    cli("init", cwd=ws)
    cli("watch", "start", cwd=ws)
    pid = int((ws / ".vfs" / journal_mod.PIDFILE).read_text())
    fd = os.pidfd_open(pid)
    try:
        if what == "workspace":
            os.kill(pid, signal.SIGSTOP)  # an overflow first: then the root is gone
            try:
                with open("/proc/sys/fs/inotify/max_queued_events") as f:
                    limit = int(f.read())
                with open(ws / "a/f1", "ab") as f1, open(ws / "a/f2", "ab") as f2:
                    for i in range(limit // 2 + 10):
                        for f in (f1, f2):
                            f.write(b"x")
                            f.flush()
                shutil.rmtree(ws)
            finally:
                os.kill(pid, signal.SIGCONT)
        elif what == "repository":
            shutil.rmtree(ws / ".vfs", ignore_errors=True)  # it removes its files too
        else:
            os.unlink(ws / ".vfs" / journal_mod.SOCKET)
        assert select.select([fd], [], [], 30)[0], "the watcher did not exit"
    finally:
        os.close(fd)
        if not process_gone(pid):
            kill_and_wait(pid)


def _can_unshare() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare"
    proc = subprocess.run(["unshare", "-U", "-r", "sh", "-c",
                           "echo 3 > /proc/sys/user/max_inotify_watches"],
                          capture_output=True, text=True)
    return None if proc.returncode == 0 else f"unshare -U -r: {proc.stderr.strip()}"


def test_directories_it_cannot_watch_are_walked(tmp_path, cli, monkeypatch):
    why = _can_unshare()
    if why:
        msg = f"needs a user namespace with its own inotify limits: {why}"
        if IN_CI:
            pytest.fail(msg + " (CI=true: a missing capability is a failure here)",
                        pytrace=False)
        pytest.skip(msg)
    ws = tmp_path / "ws"
    make_tree(ws)
    cli("init", cwd=ws)
    # 5 watches (.vfs/ and 4 of the 7 directories): the others fail with ENOSPC, as
    # at fs.inotify.max_user_watches
    subprocess.run(["unshare", "-U", "-r", "sh", "-c",
                    'echo 5 > /proc/sys/user/max_inotify_watches && '
                    'exec "$0" -m versionfs watch start', sys.executable],
                   cwd=ws, check=True, capture_output=True)
    w = Watched(ws, cli, monkeypatch)
    pid = w.pid
    try:
        st = json.loads(cli("watch", "status", "--json", cwd=ws).stdout)
        assert st["watched"] == 4 and st["unwatched_count"] >= 1
        assert all("watch limit" in why for why in st["unwatched"].values())
        unwatched = set(st["unwatched"])
        below = {d for d in ("a", "b", "c", "a/sub", "b/sub", "c/sub")
                 if any(d == u or d.startswith(u + "/") for u in unwatched)}
        above = {d.rpartition("/")[0] for d in below} | {""}
        w.snapshot()
        work = w.scan()
        assert listed(work) == below | above
        for d in sorted(below):
            (ws / d / "f1").write_text(f"{d} changed unwatched\n")
        work = w.scan()
        assert listed(work) >= below | above
        w.snapshot()
        for d in sorted(below):
            assert w.repo.entry(w.repo.head(), f"{d}/f1").size == \
                len(f"{d} changed unwatched\n")
    finally:
        w.close()
        cli("watch", "stop", cwd=ws, check=False)
        if not process_gone(pid):
            kill_and_wait(pid)


# -- the commands -----------------------------------------------------------------------


def test_watch_commands(tmp_path, cli):
    ws = tmp_path / "ws"
    make_tree(ws)
    cli("init", cwd=ws)
    out = cli("watch", "status", cwd=ws).stdout
    assert "no watcher is running" in out
    assert json.loads(cli("watch", "status", "--json", cwd=ws).stdout)["running"] is False
    started = cli("watch", "start", cwd=ws)
    assert "watching" in started.stdout and "7 directories" in started.stdout
    pid = int((ws / ".vfs" / journal_mod.PIDFILE).read_text())
    try:
        again = cli.fail("watch", "start", cwd=ws, code=2)
        assert f"already running for this workspace (pid {pid})" in again.stderr
        st = json.loads(cli("watch", "status", "--json", cwd=ws).stdout)
        assert st["running"] and st["pid"] == pid and st["watched"] == 7
        cli("snapshot", "-m", "v1", cwd=ws)
        (ws / "c/sub/f2").write_text("seen by status\n")
        assert "modified: c/sub/f2" in cli("status", cwd=ws).stdout
        cli("snapshot", "-m", "v2", cwd=ws)
        assert "nothing changed" in cli("status", cwd=ws).stdout
        out = cli("watch", "stop", cwd=ws).stdout
        assert f"stopped the watcher (pid {pid})" in out
        assert process_gone(pid)
        assert not (ws / ".vfs" / journal_mod.SOCKET).exists()
        assert not (ws / ".vfs" / journal_mod.PIDFILE).exists()
        assert "no watcher was running" in cli("watch", "stop", cwd=ws).stdout
    finally:
        if not process_gone(pid):
            kill_and_wait(pid)


def test_watch_refuses_a_bare_repository(tmp_path, cli):
    cli("init", "--bare", str(tmp_path / "bare"))
    res = cli.fail("watch", "start", cwd=tmp_path / "bare", code=2)
    assert "a bare repository has no workspace to watch" in res.stderr


def test_a_long_workspace_path(tmp_path, cli, monkeypatch):
    """Unix socket addresses are limited to 108 bytes: a deeper .vfs still works."""
    ws = tmp_path / ("x" * 60) / ("y" * 60)
    make_tree(ws)
    cli("init", cwd=ws)
    cli("watch", "start", cwd=ws)
    w = Watched(ws, cli, monkeypatch)
    pid = w.pid
    try:
        recorded(w)
    finally:
        w.close()
        cli("watch", "stop", cwd=ws)
    assert process_gone(pid)
