"""Bad input gets one clear line on stderr, a non-zero exit code and no traceback.

Each case runs the real command line in a subprocess (the ``cli`` fixture; its
``fail`` method already rejects a success, a wrong exit code and a traceback) and
checks the message by its text: it must name the problem and say what to do.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from versionfs.api import Repo

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
NOBODY = 65534


def one_line(stderr: str) -> str:
    """The single line of an error message; fails when there is more than one."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def ws(tmp_path) -> Path:
    """A workspace with two commits (tag release1 on the second), made through the
    Python API to keep the tests quick; the commands under test run in subprocesses."""
    ws = tmp_path / "ws"
    ws.mkdir()
    with Repo.init(str(ws)) as repo:
        (ws / "a.txt").write_text("one\n")
        (ws / "dir").mkdir()
        (ws / "dir" / "b.txt").write_text("bee\n")
        repo.snapshot(message="first")
        (ws / "a.txt").write_text("two\n")
        repo.snapshot(message="second", tag="release1")
    return ws


# -- not a repository ------------------------------------------------------------------


def test_not_a_repository(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (("log",), ("status",), ("snapshot", "-m", "x"), ("cat", "HEAD:x"),
                 ("ls",), ("fsck",)):
        res = cli.fail(*args, cwd=empty, code=3)
        line = one_line(res.stderr)
        assert "not a versionfs repository" in line, args
        assert str(empty) in line
        assert "vfs init" in line  # what to do


def test_not_a_repository_with_dash_c(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli.fail("-C", empty, "log", code=3)
    assert "not a versionfs repository" in one_line(res.stderr)


def test_init_twice_is_refused(cli, ws):
    res = cli.fail("init", cwd=ws, code=3)
    line = one_line(res.stderr)
    assert "already exists" in line and ".vfs" in line


# -- revisions and paths -----------------------------------------------------------------


def test_unknown_revision_suggests_close_names(cli, ws):
    for args in (("cat", "relase1:a.txt"), ("log", "relase1"), ("show", "relase1"),
                 ("ls", "relase1")):
        res = cli.fail(*args, cwd=ws, code=4)
        line = one_line(res.stderr)
        assert "unknown revision" in line and "'relase1'" in line, args
        assert "release1" in line, "the message must suggest the close tag name"
    assert "main" in one_line(cli.fail("log", "mian", cwd=ws, code=4).stderr)


def test_unknown_revision_without_close_name_says_where_to_look(cli, ws):
    res = cli.fail("show", "zzzzzzzzqqq", cwd=ws, code=4)
    line = one_line(res.stderr)
    assert "zzzzzzzzqqq" in line
    assert "vfs log" in line or "vfs tag" in line


def test_revision_before_the_first_commit(cli, ws):
    res = cli.fail("log", "HEAD~5", cwd=ws, code=4)
    line = one_line(res.stderr)
    assert "HEAD~5" in line and "first commit" in line


def test_head_without_commits(cli, tmp_path):
    ws = tmp_path / "new"
    ws.mkdir()
    cli("init", cwd=ws)
    res = cli.fail("cat", "HEAD:x", cwd=ws, code=4)
    line = one_line(res.stderr)
    assert "HEAD" in line and "vfs snapshot" in line
    # an empty history is not an error for log
    res = cli("log", cwd=ws)
    assert res.stdout == ""
    assert "no commits yet" in res.stderr


def test_missing_path_in_a_commit(cli, ws):
    res = cli.fail("cat", "HEAD:nope", cwd=ws, code=5)
    line = one_line(res.stderr)
    assert "'nope'" in line and "does not exist" in line
    assert "vfs ls" in line
    res = cli.fail("ls", "HEAD:dir/nope", cwd=ws, code=5)
    assert "dir/nope" in one_line(res.stderr)
    res = cli.fail("show", "HEAD:nope", cwd=ws, code=5)
    assert "nope" in one_line(res.stderr)


def test_path_through_a_file(cli, ws):
    res = cli.fail("cat", "HEAD:a.txt/x", cwd=ws, code=5)
    line = one_line(res.stderr)
    assert "a.txt" in line and "not a directory" in line


def test_cat_of_a_directory(cli, ws):
    res = cli.fail("cat", "HEAD:dir", cwd=ws, code=5)
    line = one_line(res.stderr)
    assert "'dir'" in line and "directory" in line


def test_cat_without_a_path(cli, ws):
    res = cli.fail("cat", "HEAD", cwd=ws, code=2)
    line = one_line(res.stderr)
    assert "REV:PATH" in line


def test_dotdot_in_a_path_is_refused(cli, ws):
    res = cli.fail("cat", "HEAD:dir/../../etc/passwd", cwd=ws, code=5)
    assert "'..'" in one_line(res.stderr)


def test_snapshot_of_a_missing_path(cli, ws):
    head = cli("log", "--json", cwd=ws).stdout
    res = cli.fail("snapshot", "nope", "-m", "x", cwd=ws, code=5)
    line = one_line(res.stderr)
    assert "'nope'" in line and "workspace" in line
    assert cli("log", "--json", cwd=ws).stdout == head  # no commit was made


def test_snapshot_of_a_path_outside_the_workspace(cli, ws, tmp_path):
    res = cli.fail("snapshot", str(tmp_path), "-m", "x", cwd=ws, code=2)
    line = one_line(res.stderr)
    assert "outside the workspace" in line


# -- tags -------------------------------------------------------------------------------


def test_invalid_tag_name(cli, ws):
    for name in ["bad name", "a..b", "HEAD", "abcdef12", "x/", "a//b", "tab\tname",
                 "ü"]:
        res = cli.fail("tag", name, cwd=ws, code=2)
        line = one_line(res.stderr)
        assert "invalid tag name" in line and repr(name) in line, name
        assert "letters, digits" in line  # what to do
    assert json.loads(cli("tag", "--json", cwd=ws).stdout).keys() == {"release1"}


def test_invalid_tag_name_on_snapshot(cli, ws):
    (ws / "new.txt").write_text("new")
    head = cli("log", "--json", cwd=ws).stdout
    res = cli.fail("snapshot", "-m", "x", "--tag", "bad name", cwd=ws, code=2)
    assert "invalid tag name" in one_line(res.stderr)
    assert cli("log", "--json", cwd=ws).stdout == head


def test_existing_tag(cli, ws):
    before = json.loads(cli("tag", "--json", cwd=ws).stdout)
    res = cli.fail("tag", "release1", "HEAD~1", cwd=ws, code=2)
    line = one_line(res.stderr)
    assert "'release1' already exists" in line and "--force" in line
    assert json.loads(cli("tag", "--json", cwd=ws).stdout) == before


def test_existing_tag_on_snapshot(cli, ws):
    (ws / "new.txt").write_text("new")
    head = cli("log", "--json", cwd=ws).stdout
    res = cli.fail("snapshot", "-m", "x", "--tag", "release1", cwd=ws, code=2)
    line = one_line(res.stderr)
    assert "'release1' already exists" in line and "vfs tag -d release1" in line
    assert cli("log", "--json", cwd=ws).stdout == head


def test_deleting_a_missing_tag(cli, ws):
    res = cli.fail("tag", "-d", "nosuch", cwd=ws, code=2)
    line = one_line(res.stderr)
    assert "'nosuch'" in line and "vfs tag" in line


# -- format version ------------------------------------------------------------------------


def test_unknown_format_version(cli, ws):
    config = ws / ".vfs" / "config.toml"
    text = config.read_text()
    assert "format = 1" in text
    config.write_text(text.replace("format = 1", "format = 99"))
    for args in (("log",), ("status",), ("cat", "HEAD:a.txt"), ("snapshot", "-m", "x")):
        res = cli.fail(*args, cwd=ws, code=3)
        line = one_line(res.stderr)
        assert "format 99" in line and "upgrade" in line, args
    config.write_text(text)
    assert cli("cat", "HEAD:a.txt", cwd=ws).stdout == "two\n"


def test_unreadable_config(cli, ws):
    config = ws / ".vfs" / "config.toml"
    config.write_text("[versionfs\nformat = = 1\n")
    res = cli.fail("log", cwd=ws)
    line = one_line(res.stderr)
    assert "config.toml" in line


# -- permission denied ----------------------------------------------------------------------


@pytest.fixture
def shared_dir():
    """A directory every user can reach, owned by nobody (pytest's tmp_path is
    private to root, so another user could not even enter it)."""
    path = tempfile.mkdtemp(prefix="vfs-perm-", dir="/var/tmp")
    try:
        os.chmod(path, 0o755)
        os.chown(path, NOBODY, NOBODY)
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_as_nobody(args, cwd) -> subprocess.CompletedProcess:
    """The CLI as user nobody. setpriv, not a preexec_fn calling setuid: here the
    interpreter lives below /root, which only setpriv's exec still reaches."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        msg = "needs root and setpriv to run the CLI as another user"
        if IN_CI:
            pytest.fail(msg + " (CI=true: a missing capability is a failure here)")
        pytest.skip(msg)
    env = {**os.environ, "HOME": str(cwd), "PYTHONUNBUFFERED": "1"}
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            sys.executable, "-m", "versionfs", *map(str, args)]
    return subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


def test_permission_denied_on_an_unreadable_file(shared_dir):
    ws = shared_dir
    assert run_as_nobody(["init"], ws).returncode == 0
    (ws / "ok.txt").write_text("readable")
    os.chown(ws / "ok.txt", NOBODY, NOBODY)
    first = run_as_nobody(["snapshot", "-m", "first"], ws)
    assert first.returncode == 0, first.stderr
    (ws / "secret.txt").write_text("root only")
    os.chmod(ws / "secret.txt", 0o600)  # owned by root: nobody cannot read it
    res = run_as_nobody(["snapshot", "-m", "second"], ws)
    assert res.returncode == 11, res.stderr
    line = one_line(res.stderr)
    assert "permission denied" in line and "secret.txt" in line
    assert "permissions" in line  # what to do
    log = run_as_nobody(["log", "--json"], ws)
    assert len(json.loads(log.stdout)) == 1  # nothing half-written
    fsck = run_as_nobody(["fsck"], ws)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_permission_denied_on_an_unreadable_directory(shared_dir):
    ws = shared_dir
    assert run_as_nobody(["init"], ws).returncode == 0
    (ws / "private").mkdir(mode=0o700)
    (ws / "private" / "x").write_text("x")
    res = run_as_nobody(["snapshot", "-m", "x"], ws)
    assert res.returncode == 11, res.stderr
    line = one_line(res.stderr)
    assert "permission denied" in line and "private" in line


# -- disk full ------------------------------------------------------------------------------


def test_disk_full_leaves_the_repository_consistent(cli, small_fs):
    ws = small_fs / "ws"
    ws.mkdir()
    cli("init", cwd=ws)
    (ws / "first.txt").write_bytes(b"the first commit\n")
    cli("snapshot", "-m", "first", cwd=ws)
    # ~15 MiB of new data on a ~24 MiB filesystem: storing a copy cannot fit
    chunk = os.urandom(1 << 20)
    for i in range(15):
        (ws / f"big{i}.bin").write_bytes(chunk[i:] + chunk[:i])
    res = cli.fail("snapshot", "-m", "too big", cwd=ws, code=10)
    line = one_line(res.stderr)
    assert "no space" in line
    assert "free some space" in line
    log = json.loads(cli("log", "--json", cwd=ws).stdout)
    assert [e["message"] for e in log] == ["first"]
    assert cli("cat", "HEAD:first.txt", cwd=ws).stdout == "the first commit\n"
    fsck = cli("fsck", "--verify-data", cwd=ws, check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    # after freeing space, a snapshot works again
    for i in range(15):
        (ws / f"big{i}.bin").unlink()
    (ws / "second.txt").write_text("ok")
    cli("snapshot", "-m", "second", cwd=ws)
    assert cli("cat", "HEAD:second.txt", cwd=ws).stdout == "ok"
    assert cli("cat", "HEAD~1:first.txt", cwd=ws).stdout == "the first commit\n"


# -- structured fields of the error classes --------------------------------------------


def test_error_fields_default_to_none_and_keep_the_message():
    from versionfs import errors
    err = errors.VfsError("something broke; run 'vfs fsck'")
    assert str(err) == err.message == "something broke; run 'vfs fsck'"
    assert (err.op, err.path, err.object_id, err.cause) == (None, None, None, None)
    assert err.retryable is False
    cause = ValueError("bad")
    err = errors.MissingObject("gone", op="snapshot", path="a/b", object_id=b"\x01" * 32,
                               cause=cause)
    assert err.object_id == "01" * 32 and err.cause is cause
    d = err.to_dict()
    assert d == {"error": "MissingObject", "message": "gone", "exit_code": 9,
                 "errno": errno.EIO, "retryable": False, "op": "snapshot", "path": "a/b",
                 "object_id": "01" * 32, "cause": "ValueError: bad"}
    json.dumps(d)  # JSON-ready


def test_retryable_by_class_and_by_instance():
    from versionfs import errors
    for cls in (errors.LockBusy, errors.FileChanged, errors.RefChanged):
        assert cls.retryable and cls("x").retryable, cls
    for cls in (errors.VfsError, errors.UsageError, errors.CorruptObject,
                errors.StorageFull, errors.Conflict, errors.RepositoryDamaged):
        assert not cls.retryable and not cls("x").retryable, cls
    assert errors.StorageFull("x", retryable=True).retryable
    assert not errors.LockBusy("x", retryable=False).retryable
    assert errors.LockBusy.retryable  # the class default is untouched


def test_from_oserror_keeps_errno_filename_and_cause():
    from versionfs import errors
    cases = [(errno.ENOSPC, errors.StorageFull), (errno.EDQUOT, errors.StorageFull),
             (errno.EACCES, errors.AccessDenied), (errno.EPERM, errors.AccessDenied),
             (errno.ENOENT, errors.PathNotFound), (errno.EROFS, errors.AccessDenied),
             (errno.EIO, errors.VfsError), (errno.EXDEV, errors.VfsError)]
    for code, cls in cases:
        exc = OSError(code, os.strerror(code), "/data/x.csv")
        err = errors.from_oserror(exc, "reading data/x.csv", op="snapshot")
        assert type(err) is cls, code
        assert err.errno == code and err.filename == "/data/x.csv", code
        assert err.path == "/data/x.csv" and err.cause is exc and err.op == "snapshot"
        assert "reading data/x.csv" in str(err) and "\n" not in str(err)
    err = errors.from_oserror(OSError(errno.ENOENT, "No such file", b"/raw\xff"), "x")
    assert err.filename == b"/raw\xff" and err.path == os.fsdecode(b"/raw\xff")
    err = errors.from_oserror(OSError("no errno at all"), "doing y")
    assert err.errno == errno.EIO and err.filename is None and err.path is None


def test_subclasses_with_their_own_init_take_the_fields():
    from versionfs import errors
    err = errors.NoSuchAttribute("no such attribute", errno.EOPNOTSUPP, path="f.txt")
    assert err.errno == errno.EOPNOTSUPP and err.path == "f.txt"
    assert errors.NoSuchAttribute("none").errno == errno.ENODATA


def test_missing_records_name_their_id(tmp_path):
    from versionfs import errors
    with Repo.init(str(tmp_path / "ws")) as repo:
        with pytest.raises(errors.MissingObject) as info:
            repo.commit(b"\x02" * 32)
        assert info.value.object_id == "02" * 32
        with pytest.raises(errors.MissingObject) as info:
            repo.tree(b"\x03" * 32)
        assert info.value.object_id == "03" * 32


def test_repository_damaged_is_an_error_class():
    from versionfs.errors import RepositoryDamaged, VfsError
    assert issubclass(RepositoryDamaged, VfsError) and RepositoryDamaged.exit_code == 1
