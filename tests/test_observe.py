"""Observed reads: which files a process tree opened through versionfs mounts.

Pure units of the pid attribution (``view.observe.Tracking``) against real
processes, then real mounts: a run's tree (child, grandchild, an orphan whose
parent exits before it reads) observed while an unrelated process reads the same
mount, a second repository, the all-versions view, and the daemon dropping a
tracker when its client dies. Every wait is for a pipe, a file or a process exit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_mount import _put, ds, mounter  # noqa: F401  (fixtures)

from versionfs.ops.snapshot import snapshot
from versionfs.repo import mounts
from versionfs.repo.observe import ObservedRead, Observer, proc_stat
from versionfs.repo.repository import Repo
from versionfs.view import Tracking

pytestmark = pytest.mark.mount

SRC = str(Path(__file__).resolve().parent.parent)
ENV = {**os.environ, "PYTHONPATH": SRC}


def _xattr_id(path) -> str:
    return os.getxattr(path, "user.versionfs.id").decode()


def _ask(control: str, request: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(control)
        s.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(s.makefile("rb").readline())


# -- attribution without a mount ---------------------------------------------------


def _sleeper() -> subprocess.Popen:
    """A child that waits for its stdin to close."""
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)


def test_descendants_are_tracked_and_the_root_is_not():
    tracking = Tracking(None)
    me = proc_stat(os.getpid())
    assert tracking.owners(os.getpid()) == ()   # nobody observes: nothing is looked up
    assert tracking.cached() == 0
    child = _sleeper()
    try:
        t = tracking.track(os.getpid(), me.start)
        assert tracking.owners(child.pid) == (t,)
        assert tracking.owners(os.getpid()) == ()     # the root itself is not
        assert tracking.owners(me.ppid) == ()         # nor its parent
        assert tracking.owners(0) == ()               # another pid namespace
        assert tracking.cached() >= 1
        assert tracking.owners(child.pid) == (t,)     # from the cache
        inner = tracking.track(child.pid, proc_stat(child.pid).start)
        grandchild = subprocess.Popen(
            ["sh", "-c", f"exec {sys.executable} -c 'import sys; sys.stdin.read()'"],
            stdin=subprocess.PIPE)
        try:
            assert set(tracking.owners(grandchild.pid)) == {t}   # not under child
        finally:
            grandchild.stdin.close()
            grandchild.wait()
        tracking.untrack(inner)
    finally:
        child.stdin.close()
        child.wait()
    # the exited child's pidfd is readable: its entry is dropped, never trusted
    assert tracking.owners(child.pid) == ()
    tracking.untrack(t)
    assert tracking.cached() == 0 and not tracking.trackers


def test_a_root_whose_start_time_differs_is_refused():
    tracking = Tracking(None)
    with pytest.raises(ProcessLookupError, match="is not running"):
        tracking.track(os.getpid(), proc_stat(os.getpid()).start + 1)
    assert not tracking.trackers


def test_threads_count_as_their_process():
    tracking = Tracking(None)
    code = textwrap.dedent("""
        import sys, threading
        def run():
            sys.stdout.write(f"{threading.get_native_id()}\\n"); sys.stdout.flush()
            sys.stdin.read()
        t = threading.Thread(target=run); t.start(); t.join()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        tid = int(child.stdout.readline())
        assert tid != child.pid
        t = tracking.track(os.getpid(), proc_stat(os.getpid()).start)
        assert tracking.owners(tid) == (t,)
        assert tracking.owners(tid) == (t,)
    finally:
        child.stdin.close()
        child.wait()
    assert tracking.owners(tid) == ()
    tracking.untrack(t)


def test_old_state_files_without_control_still_read(tmp_path):
    mp = str(tmp_path / "mnt")
    state = mounts.MountState(mp, "/repo", None, None, os.getpid(), "/x.log")
    mounts.write_state(state)
    try:
        path = mounts.state_base(mp) + ".json"
        with open(path) as f:
            raw = json.load(f)
        del raw["control"]
        with open(path, "w") as f:
            json.dump(raw, f)
        assert mounts.read_state(mp) == state and state.control is None
    finally:
        os.unlink(mounts.state_base(mp) + ".json")


# -- real mounts -------------------------------------------------------------------

# The run: an observer in its own process (the root, a child subreaper), which
# starts a child that reads and starts a grandchild that reads, and a double fork
# whose middle process exits before the orphan reads. Each reader gets its files
# on the command line; the root waits for every one of them and prints the reads.
RUN = textwrap.dedent("""
    import json, os, select, subprocess, sys
    from versionfs.repo.observe import Observer

    def read(paths):
        for p in paths:
            with open(p, "rb") as f:
                f.read()

    spec = json.loads(sys.argv[1])
    warnings = []
    obs = Observer(warn=warnings.append)
    tracked = obs.start()
    print(json.dumps({"tracked": tracked}), flush=True)
    sys.stdin.readline()  # go
    child = os.fork()
    if child == 0:
        read(spec["child"])
        g = subprocess.run([sys.executable, "-c",
                            "import sys; [open(p, 'rb').read() for p in sys.argv[1:]]",
                            *spec["grandchild"]])
        os._exit(g.returncode)
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        orphan = os.fork()
        if orphan == 0:
            # wait until the middle process has exited (and we were re-parented)
            fd = os.pidfd_open(os.getppid())
            os.write(w, b"x")
            select.select([fd], [], [])
            os.write(w, str(os.getppid()).encode())
            read(spec["orphan"])
            os._exit(0)
        os.read(r, 1)
        os._exit(0)
    os.waitpid(middle, 0)
    os.close(w)
    adopted = b""
    while (chunk := os.read(r, 64)):   # EOF: the orphan has read and exited
        adopted += chunk
    assert os.waitpid(child, 0)[1] == 0
    os.waitpid(-1, 0)   # the adopted orphan's zombie is ours now
    reads = obs.stop()
    print(json.dumps({"observed": [[r.repo, r.commit, r.path, r.id, r.mountpoint,
                                    r.size, r.exact] for r in reads],
                      "adopted_by": int(adopted.lstrip(b"x")), "warnings": warnings}), flush=True)
""")


def _unrelated_reader(paths: list[str]) -> subprocess.Popen:
    """Reads ``paths`` in a loop, printing a line after each round, until its stdin
    closes; it is the test's child, not the run's."""
    code = textwrap.dedent("""
        import os, select, sys
        while True:
            for p in sys.argv[1:]:
                with open(p, "rb") as f:
                    f.read()
            print("round", flush=True)
            if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.read():
                break
    """)
    return subprocess.Popen([sys.executable, "-c", code, *paths], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


@pytest.fixture
def second_repo(tmp_path):
    ws = tmp_path / "other"
    _put(ws / "labels.csv", b"a,b\n1,2\n")
    _put(ws / "deep" / "er" / "x.bin", os.urandom(5000))
    repo = Repo.init(str(ws))
    snapshot(repo, message="other")
    yield ws, repo
    repo.close()


def test_a_run_sees_exactly_its_trees_reads(ds, mounter, second_repo):  # noqa: F811
    mp = mounter("@v1", cwd=ds.ws)
    ws2, repo2 = second_repo
    mp2 = mounter("@HEAD", cwd=ws2)
    spec = {"child": [f"{mp}/small.txt", f"{mp}/data/medium.bin"],
            "grandchild": [f"{mp}/bin/tool.sh", f"{mp2}/deep/er/x.bin"],
            "orphan": [f"{mp}/data/empty", f"{mp}/arr.npy"]}
    unrelated_files = [f"{mp}/table.db", f"{mp}/data/big.bin", f"{mp2}/labels.csv"]
    run = subprocess.Popen([sys.executable, "-c", RUN, json.dumps(spec)], env=ENV,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    other = _unrelated_reader(unrelated_files)
    try:
        assert set(json.loads(run.stdout.readline())["tracked"]) >= {str(mp), str(mp2)}
        assert other.stdout.readline() == "round\n"   # reading while the run is tracked
        run.stdin.write("go\n")
        run.stdin.flush()
        out = json.loads(run.stdout.readline())
        assert run.wait(timeout=60) == 0
        other.stdin.close()
        assert other.wait(timeout=60) == 0
    finally:
        for p in (run, other):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert out["adopted_by"] == run.pid   # the orphan read as the root's child
    # other mounts of this machine may be unobservable; ours never are
    assert not [w for w in out["warnings"] if str(mp) in w or str(mp2) in w]
    got = {ObservedRead(*r) for r in out["observed"]}
    v1 = ds.repo.resolve("v1").hex()
    head2 = repo2.resolve("HEAD").hex()
    want = set()
    for path in spec["child"] + spec["grandchild"] + spec["orphan"]:
        m = mp2 if path.startswith(str(mp2)) else mp
        commit, repo_dir = (head2, str(ws2)) if m == mp2 else (v1, str(ds.ws))
        want.add(ObservedRead(repo_dir, commit, os.path.relpath(path, m), _xattr_id(path),
                              str(m), os.path.getsize(path), True))
    assert got == want
    # the ids are the content ids: b3sum of a small file
    from versionfs.records.hashing import hash_bytes
    small = next(r for r in got if r.path == "small.txt")
    assert small.id == hash_bytes((ds.v1 / "small.txt").read_bytes()).hex()


def _client(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env=ENV, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_the_daemon_drops_a_tracker_when_its_client_dies(ds, mounter):  # noqa: F811
    mp = mounter("@v1", cwd=ds.ws)
    control = mounts.read_state(str(mp)).control
    assert os.stat(control).st_mode & 0o777 == 0o600
    client = _client("from versionfs.repo.observe import Observer\n"
                     "import sys\nobs = Observer()\nprint(obs.start(), flush=True)\n"
                     "sys.stdin.read()")
    try:
        assert str(mp) in client.stdout.readline()
        stats = _ask(control, {"op": "stats"})
        assert stats["ok"] and stats["trackers"] == 1
        client.kill()
        client.wait()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    # the daemon notices the closed connection on its own loop: wait for it
    _wait_for(lambda: _ask(control, {"op": "stats"})["trackers"] == 0,
              what="the daemon to drop the tracker")
    assert _ask(control, {"op": "stats"})["cached"] == 0
    reply = _ask(control, {"op": "collect"})   # a new connection tracks nothing
    assert not reply["ok"] and "send 'track' first" in reply["error"]
    mounts.umount(str(mp))
    assert not os.path.exists(control)   # the daemon removes its socket as it exits


def test_protocol_errors_are_answered(ds, mounter):  # noqa: F811
    mp = mounter("@v1", cwd=ds.ws)
    control = mounts.read_state(str(mp)).control
    start = proc_stat(os.getpid()).start
    bad = _ask(control, {"op": "track", "pid": os.getpid(), "start": start,
                         "client": os.getpid() + 1})
    assert not bad["ok"] and "another pid namespace" in bad["error"]
    gone = _ask(control, {"op": "track", "pid": os.getpid(), "start": start + 1,
                          "client": os.getpid()})
    assert not gone["ok"] and "is not running" in gone["error"]
    assert "unknown op" in _ask(control, {"op": "nope"})["error"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(control)
        s.sendall(b"not json\n")
        assert "bad request" in json.loads(s.makefile("rb").readline())["error"]
    assert _ask(control, {"op": "stats"})["trackers"] == 0


def test_all_versions_paths_are_inside_their_commit(ds, mounter):  # noqa: F811
    mp = mounter("", cwd=ds.ws)
    v1 = ds.repo.resolve("v1").hex()
    head = ds.repo.resolve("HEAD").hex()
    # twin1 and twin2 (same bytes, mode, mtime): both names known to the kernel (a
    # listing may give names only: a stat looks each up)
    for twin in ("twin1", "twin2"):
        os.stat(mp / "tags" / "v1" / twin)
    files = [mp / "tags" / "v1" / "twin1", mp / "commits" / head / "data" / "medium.bin",
             mp / "HEAD" / "new.txt"]
    with Observer() as obs:
        code = "import sys; [open(p, 'rb').read() for p in sys.argv[1:]]"
        subprocess.run([sys.executable, "-c", code, *map(str, files)], check=True)
        reads = obs.stop()
    by_path = {(r.commit, r.path): r for r in reads}
    assert set(by_path) == {(v1, "twin1"), (head, "data/medium.bin"), (head, "new.txt")}
    # twin1's inode is twin2's too: the open could have come through either name
    assert not by_path[(v1, "twin1")].exact
    assert by_path[(head, "new.txt")].exact
    assert by_path[(head, "new.txt")].id == _xattr_id(files[2])


def test_unobservable_mounts_are_skipped_with_a_warning(ds, mounter):  # noqa: F811
    mp = mounter("@v1", cwd=ds.ws)
    state = mounts.read_state(str(mp))
    # a daemon of an older version: its state file names no socket
    mounts.write_state(mounts.MountState(state.mountpoint, state.repo, state.rev,
                                         state.commit, state.pid, state.log))
    warnings: list[str] = []
    try:
        with Observer(warn=warnings.append) as obs:
            assert obs.stop() == []
    finally:
        mounts.write_state(state)
    assert any(str(mp) in w and "predates" in w for w in warnings)
