"""The command line end to end, in subprocesses: every command's help, the
init → snapshot → log/show/ls/cat/tag/branch/diff/status flow, JSON shapes, and the
revision syntax (HEAD, HEAD~N, id prefixes, tags, branches, REV:PATH).

A three-commit history is built once per module through the command line and only
read afterwards; tests that change refs work on their own repository.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from versionfs.api import Repo
from versionfs.records.model import Commit, commit_id, encode_commit

HEX64 = re.compile(r"^[0-9a-f]{64}$")
COMMANDS = {"init", "snapshot", "status", "log", "show", "ls", "cat", "tag", "branch",
            "diff", "gc", "fsck", "checkout"}


def run(*args, cwd, check=True, env=None) -> subprocess.CompletedProcess:
    """The CLI in a subprocess (module-scoped fixtures cannot use ``cli``)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run([sys.executable, "-m", "versionfs", *map(str, args)],
                              cwd=cwd, env={**os.environ, **(env or {})},
                              stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              text=True, timeout=120)
        out.seek(0)
        err.seek(0)
        res = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
    if check and res.returncode != 0:
        pytest.fail(f"vfs {' '.join(map(str, args))} exited {res.returncode}\n"
                    f"{res.stdout}\n{res.stderr}", pytrace=False)
    return res


class History:
    """c1 → c2 → c3 on main; the workspace holds c3 plus uncommitted changes."""

    def __init__(self, ws: Path):
        self.ws = ws
        self.c: list[str] = []

    def __call__(self, *args, **kw):
        return run(*args, cwd=self.ws, **kw)

    def json(self, *args):
        return json.loads(self(*args).stdout)


@pytest.fixture(scope="module")
def hist(tmp_path_factory) -> History:
    ws = tmp_path_factory.mktemp("cli") / "ws"
    h = History(ws)
    res = run("init", ws, cwd=ws.parent)
    assert res.stdout.strip() == f"initialized empty versionfs repository in {ws / '.vfs'}"
    (ws / "data" / "sub").mkdir(parents=True)
    (ws / "empty").mkdir()
    (ws / "a.txt").write_text("alpha\n")
    (ws / "data" / "b.csv").write_text("x,y\n1,2\n")
    (ws / "data" / "sub" / "c.bin").write_bytes(bytes(range(256)) * 40)
    (ws / "run.sh").write_text("#!/bin/sh\necho run\n")
    os.chmod(ws / "run.sh", 0o755)
    os.symlink("a.txt", ws / "link")
    h.c.append(h("snapshot", "-m", "first").stdout.strip())
    (ws / "a.txt").write_text("alpha two\n")
    (ws / "new.txt").write_text("new file\n")
    (ws / "data" / "b.csv").unlink()
    (ws / "moved").mkdir()
    os.rename(ws / "data" / "sub" / "c.bin", ws / "moved" / "c.bin")
    h.c.append(h("snapshot", "-m", "second\n\nwith a body").stdout.strip())
    (ws / "c3.txt").write_text("third\n")
    h.c.append(h("snapshot", "-m", "third").stdout.strip())
    # uncommitted: one modified, one added, one removed
    (ws / "new.txt").write_text("new file, changed\n")
    (ws / "untracked.txt").write_text("u")
    (ws / "c3.txt").unlink()
    assert all(HEX64.match(c) for c in h.c) and len(set(h.c)) == 3
    return h


# -- help ------------------------------------------------------------------------------


def test_every_command_has_help(tmp_path):
    top = run("--help", cwd=tmp_path)
    assert top.stdout.startswith("Usage:")
    listed = re.findall(r"^  ([a-z-]+)\s{2,}", top.stdout.split("Commands:")[1],
                        re.MULTILINE)
    assert COMMANDS <= set(listed), COMMANDS - set(listed)
    for name in listed:
        res = run(name, "--help", cwd=tmp_path)
        assert res.stdout.startswith(f"Usage: vfs {name}"), (name, res.stdout)
        assert res.stderr == ""
    assert run("snapshot", "-h", cwd=tmp_path).stdout.startswith("Usage: vfs snapshot")
    assert run("-h", cwd=tmp_path).stdout == top.stdout
    assert re.search(r"\d+\.\d+", run("--version", cwd=tmp_path).stdout)


def test_no_command_prints_usage(tmp_path):
    res = run(cwd=tmp_path, check=False)
    assert "Usage:" in res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_option_is_a_usage_error(cli, tmp_path):
    res = cli.fail("log", "--no-such-option", code=2)
    assert "--no-such-option" in res.stderr


# -- log ----------------------------------------------------------------------------------


def test_log(hist):
    out = hist("log").stdout
    blocks = out.split("commit ")[1:]
    assert len(blocks) == 3
    assert blocks[0].startswith(f"{hist.c[2]} (HEAD, heads/main)")
    assert blocks[1].startswith(hist.c[1])
    assert "    second\n    \n    with a body" in blocks[1] or \
        "    second\n\n    with a body" in blocks[1]
    for b in blocks:
        assert "\nAuthor: " in b and "\nDate:   " in b


def test_log_oneline(hist):
    lines = hist("log", "--oneline").stdout.splitlines()
    assert lines == [f"{hist.c[2][:12]} (HEAD, heads/main) third",
                     f"{hist.c[1][:12]} second",
                     f"{hist.c[0][:12]} first"]
    assert hist("log", "--oneline", "-n", "1").stdout.splitlines() == lines[:1]


def test_log_json(hist):
    log = hist.json("log", "--json")
    assert [e["id"] for e in log] == list(reversed(hist.c))
    assert [e["message"] for e in log] == ["third", "second\n\nwith a body", "first"]
    assert log[0]["parents"] == [hist.c[1]] and log[2]["parents"] == []
    assert log[0]["refs"] == ["heads/main"]
    for e in log:
        assert set(e) >= {"id", "parents", "time", "time_ns", "author", "message", "refs",
                          "run", "stats"}
        assert isinstance(e["time_ns"], int) and e["run"] is None
    assert log[2]["stats"]["files"] == 4  # regular files: a.txt, b.csv, c.bin, run.sh
    assert log[2]["stats"]["bytes"] == 6 + 8 + 256 * 40 + 19 + len("a.txt")  # + the link
    assert log[0]["time_ns"] >= log[1]["time_ns"] >= log[2]["time_ns"]


# -- show, ls, cat -----------------------------------------------------------------------------


def test_show_commit(hist):
    out = hist("show", "HEAD~1").stdout
    assert out.startswith(f"commit {hist.c[1]}\n")
    assert f"Parent: {hist.c[0]}" in out
    assert "    second" in out
    assert "  modified: a.txt" in out and "  added:    new.txt" in out
    assert "  removed:  data/b.csv" in out
    assert "  renamed:  data/sub/c.bin -> moved/c.bin" in out
    js = hist.json("show", "--json", "HEAD~1")
    assert js["id"] == hist.c[1] and js["parents"] == [hist.c[0]]
    assert HEX64.match(js["tree"])
    assert js["changes"]["renamed"] == [{"from": "data/sub/c.bin", "to": "moved/c.bin"}]


def test_show_entry(hist):
    js = hist.json("show", "--json", "HEAD:run.sh")
    assert js["path"] == "run.sh" and js["kind"] == "file" and js["mode"] == "0o755"
    assert js["size"] == len("#!/bin/sh\necho run\n") and js["commit"] == hist.c[2]
    assert js["chunks"] == 1 and HEX64.match(js["id"])
    link = hist.json("show", "--json", "HEAD:link")
    assert link["kind"] == "symlink" and link["target"] == "a.txt"
    d = hist.json("show", "--json", "HEAD:moved")
    assert d["kind"] == "dir" and d["entries"] == 1
    text = hist("show", "HEAD:a.txt").stdout
    assert re.search(r"^kind:\s+file$", text, re.MULTILINE)
    assert re.search(r"^size:\s+10$", text, re.MULTILINE)


def test_ls(hist):
    assert hist("ls").stdout.splitlines() == [
        "a.txt", "c3.txt", "data/", "empty/", "link", "moved/", "new.txt", "run.sh"]
    assert hist("ls", "HEAD~2").stdout.splitlines() == [
        "a.txt", "data/", "empty/", "link", "run.sh"]
    assert hist("ls", "HEAD~2:data").stdout.splitlines() == ["b.csv", "sub/"]
    assert hist("ls", "HEAD:a.txt").stdout.splitlines() == ["a.txt"]


def test_ls_recursive(hist):
    assert hist("ls", "-r", "HEAD~2").stdout.splitlines() == [
        "a.txt", "data/", "data/b.csv", "data/sub/", "data/sub/c.bin", "empty/", "link",
        "run.sh"]
    assert hist("ls", "-r", "HEAD~2:data").stdout.splitlines() == [
        "data/b.csv", "data/sub/", "data/sub/c.bin"]


def test_ls_long(hist):
    rows = {line.split()[-1] if " -> " not in line else line.split()[-3]: line
            for line in hist("ls", "-l", "HEAD~2").stdout.splitlines()}
    assert set(rows) == {"a.txt", "data/", "empty/", "link", "run.sh"}
    assert rows["run.sh"].startswith("-rwxr-xr-x ")
    assert rows["a.txt"].startswith("-rw-r--r-- ")
    assert rows["data/"].startswith("d")
    assert rows["link"].startswith("l") and rows["link"].endswith("link -> a.txt")
    assert re.search(r"\s6\s", rows["a.txt"])  # size of "alpha\n"
    ids = hist.json("ls", "--json", "HEAD~2")
    by_path = {e["path"]: e for e in ids}
    assert by_path["a.txt"]["id"][:12] in rows["a.txt"]


def test_cat(hist):
    assert hist("cat", "HEAD:a.txt").stdout == "alpha two\n"
    assert hist("cat", "HEAD~2:a.txt").stdout == "alpha\n"
    assert hist("cat", ":a.txt").stdout == "alpha two\n"  # empty REV is HEAD
    raw = subprocess.run([sys.executable, "-m", "versionfs", "cat", "HEAD:moved/c.bin"],
                         cwd=hist.ws, capture_output=True, check=True).stdout
    assert raw == bytes(range(256)) * 40
    assert hist("cat", "HEAD:link").stdout == "a.txt"  # a link's target, not followed
    assert hist("cat", "HEAD:./data/../a.txt", check=False).returncode != 0


def test_dash_c_runs_elsewhere(hist, tmp_path):
    assert run("-C", hist.ws, "cat", "HEAD:a.txt", cwd=tmp_path).stdout == "alpha two\n"
    assert run("-C", hist.ws / "data", "log", "--oneline", "-n", "1",
               cwd=tmp_path).stdout.startswith(hist.c[2][:12])


# -- revisions -------------------------------------------------------------------------------


def test_revision_syntax(hist):
    c1, c2, c3 = hist.c

    def rev(spec: str) -> str:
        return hist.json("show", "--json", spec)["id"]

    assert rev("HEAD") == c3
    assert rev("HEAD~") == c2
    assert rev("HEAD~1") == c2
    assert rev("HEAD~2") == c1
    assert rev("main") == c3
    assert rev("main~2") == c1
    assert rev(c1) == c1
    assert rev(c1[:8]) == c1
    assert rev(c1[:10].upper()) == c1
    assert rev(f"{c2[:12]}~1") == c1
    assert hist.json("show", "--json", f"{c2[:12]}:a.txt")["commit"] == c2
    assert hist("cat", f"{c1[:12]}:a.txt").stdout == "alpha\n"
    assert hist("cat", "HEAD~2:data/b.csv").stdout == "x,y\n1,2\n"


def test_tags_and_branches_as_revisions(cli, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    with Repo.init(str(ws)) as repo:
        (ws / "f.txt").write_text("1")
        c1 = repo.snapshot(message="1").commit.hex()
        (ws / "f.txt").write_text("2")
        c2 = repo.snapshot(message="2").commit.hex()
    assert cli("tag", "v1", "HEAD~1", cwd=ws).stdout.strip() == f"tag v1 -> {c1[:12]}"
    cli("tag", "v2", cwd=ws)
    assert cli("tag", cwd=ws).stdout.split() == ["v1", c1[:12], "v2", c2[:12]]
    assert json.loads(cli("tag", "--json", cwd=ws).stdout) == {"v1": c1, "v2": c2}
    assert cli("cat", "v1:f.txt", cwd=ws).stdout == "1"
    assert cli("cat", "tags/v1:f.txt", cwd=ws).stdout == "1"
    assert cli("cat", "v2~1:f.txt", cwd=ws).stdout == "1"
    # move and delete
    cli.fail("tag", "v1", "HEAD", cwd=ws, code=2)
    assert cli("tag", "-f", "v1", "HEAD", cwd=ws).stdout.strip() == f"tag v1 -> {c2[:12]}"
    out = cli("tag", "-d", "v1", cwd=ws).stdout.strip()
    assert out == f"deleted tag v1 (was {c2[:12]})"
    assert json.loads(cli("tag", "--json", cwd=ws).stdout) == {"v2": c2}
    assert "did you mean v2" in cli.fail("cat", "v1:f.txt", cwd=ws, code=4).stderr
    # branches
    assert cli("branch", "dev", "HEAD~1", cwd=ws).stdout.strip() == f"branch dev -> {c1[:12]}"
    assert cli("branch", cwd=ws).stdout.splitlines() == [
        f"  dev{' ' * 21} {c1[:12]}", f"* main{' ' * 20} {c2[:12]}"]
    assert json.loads(cli("branch", "--json", cwd=ws).stdout) == {"dev": c1, "main": c2}
    assert cli("cat", "dev:f.txt", cwd=ws).stdout == "1"
    assert cli("cat", "heads/dev:f.txt", cwd=ws).stdout == "1"
    assert cli("log", "--oneline", "dev", cwd=ws).stdout.splitlines() == [
        f"{c1[:12]} (heads/dev) 1"]
    # a snapshot advances the branch HEAD is on, not the others
    (ws / "f.txt").write_text("3")
    c3 = cli("snapshot", "-m", "3", cwd=ws).stdout.strip()
    assert json.loads(cli("branch", "--json", cwd=ws).stdout) == {"dev": c1, "main": c3}
    assert "HEAD is on it" in cli.fail("branch", "-d", "main", cwd=ws, code=2).stderr
    cli("branch", "-d", "dev", cwd=ws)
    assert json.loads(cli("branch", "--json", cwd=ws).stdout) == {"main": c3}


def test_ambiguous_prefix(cli, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    with Repo.init(str(ws)) as repo:
        (ws / "f.txt").write_text("1")
        head = repo.snapshot(message="1").commit
        base = repo.commit(head)
        # two commit records whose ids share their first 4 hex digits
        seen: dict[str, tuple[bytes, bytes]] = {}
        pair = None
        for i in range(200_000):
            c = Commit(base.tree, (head,), base.time_ns + i, "t", f"m{i}")
            enc = encode_commit(c)
            cid = commit_id(enc)
            key = cid.hex()[:4]
            if key in seen and key != head.hex()[:4]:
                pair = (seen[key], (cid, enc))
                break
            seen[key] = (cid, enc)
        assert pair is not None
        with repo.index.write() as txn:
            for cid, enc in pair:
                txn.put("commits", cid, enc)
    (a, _), (b, _) = pair
    prefix = a.hex()[:4]
    res = cli.fail("show", prefix, cwd=ws, code=4)
    line = res.stderr.strip()
    assert "ambiguous" in line and f"'{prefix}'" in line
    assert a.hex()[:12] in line and b.hex()[:12] in line
    assert "more hex digits" in line
    # a longer prefix is unique again
    common = os.path.commonprefix([a.hex(), b.hex()])
    got = json.loads(cli("show", "--json", a.hex()[: len(common) + 1], cwd=ws).stdout)
    assert got["id"] == a.hex()
    # too short to be a prefix: an unknown revision
    cli.fail("show", a.hex()[:3], cwd=ws, code=4)


# -- diff and status ------------------------------------------------------------------------------


def _check_diff_shape(js: dict) -> None:
    assert set(js) >= {"added", "removed", "modified", "renamed", "stats"}
    for key in ("added", "removed", "modified"):
        assert isinstance(js[key], list) and all(isinstance(p, str) for p in js[key])
    for item in js["renamed"]:
        assert set(item) == {"from", "to"}
    assert {"added", "removed", "modified", "renamed"} <= set(js["stats"])


def test_diff_json(hist):
    js = hist.json("diff", "--json", "HEAD~2", "HEAD~1")
    _check_diff_shape(js)
    assert js["added"] == ["new.txt"]
    assert js["removed"] == ["data/b.csv"]
    assert js["modified"] == ["a.txt"]
    assert js["renamed"] == [{"from": "data/sub/c.bin", "to": "moved/c.bin"}]
    s = js["stats"]
    assert (s["added"], s["removed"], s["modified"], s["renamed"]) == (1, 1, 1, 1)
    back = hist.json("diff", "--json", "HEAD~1", "HEAD~2")
    assert back["added"] == ["data/b.csv"] and back["removed"] == ["new.txt"]
    assert back["renamed"] == [{"from": "moved/c.bin", "to": "data/sub/c.bin"}]
    same = hist.json("diff", "--json", "HEAD", "main")
    assert same["added"] == same["removed"] == same["modified"] == same["renamed"] == []


def test_diff_text_and_stat(hist):
    out = hist("diff", "HEAD~2", "HEAD~1").stdout.splitlines()
    assert "A new.txt" in out and "D data/b.csv" in out and "M a.txt" in out
    assert "R data/sub/c.bin -> moved/c.bin" in out
    assert out[-1].startswith("1 added, 1 removed, 1 modified, 1 renamed")
    stat = hist("diff", "--stat", "HEAD~2", "HEAD~1").stdout
    assert re.search(r"^added\s+1 path\s", stat, re.MULTILINE)
    assert re.search(r"^renamed\s+1 path\s", stat, re.MULTILINE)


def test_diff_against_the_workspace(hist):
    js = hist.json("diff", "--json", "HEAD")
    _check_diff_shape(js)
    assert js["added"] == ["untracked.txt"]
    assert js["modified"] == ["new.txt"]
    assert js["removed"] == ["c3.txt"]
    assert hist.json("diff", "--json", "HEAD~1", "HEAD", "c3.txt")["added"] == ["c3.txt"]


@pytest.fixture
def tagged(cli, tmp_path):
    """A workspace with commits tagged v1 and v2 (v2 adds b.txt, edits a.txt) and an
    uncommitted edit of a.txt; returns a runner in it."""
    ws = tmp_path / "ws"
    ws.mkdir()
    cli("init", cwd=ws)
    (ws / "a.txt").write_text("one\n")
    (ws / "sub").mkdir()
    (ws / "sub" / "s.txt").write_text("s\n")
    cli("snapshot", "-m", "one", "-t", "v1", cwd=ws)
    (ws / "a.txt").write_text("two\n")
    (ws / "b.txt").write_text("b\n")
    cli("snapshot", "-m", "two", "-t", "v2", cwd=ws)
    (ws / "a.txt").write_text("three\n")

    def run_in(*args, fail=None):
        if fail is None:
            return cli(*args, cwd=ws)
        return cli.fail(*args, cwd=ws, code=fail)
    run_in.ws = ws
    return run_in


def _one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_diff_an_unknown_revision_or_path_is_an_error(tagged):
    """A mistyped revision must not read as 'no changes' (a path of that name does
    not exist either): exit 4, one line naming it, like git's 'unknown revision or
    path not in the working tree'."""
    for args in (("v1", "zzzz"), ("zzzz",), ("v1", "v2", "zzzz"), ("v1", "a.txt", "zzzz")):
        res = tagged("diff", *args, fail=4)
        line = _one_line(res)
        assert "'zzzz'" in line and "unknown revision" in line and "no such path" in line
        assert "vfs log" in line
        assert res.stdout == ""
    # the resolver's close matches are kept
    line = _one_line(tagged("diff", "v1", "v3", fail=4))
    assert "'v3'" in line and "did you mean" in line and "v1" in line
    # a third revision is not taken for a path
    line = _one_line(tagged("diff", "v1", "v2", "main", fail=2))
    assert "'main'" in line and "./main" in line


def test_diff_paths_that_exist_still_work(tagged):
    assert tagged("diff", "v1", "v2", "a.txt").stdout.splitlines()[0] == "M a.txt"
    assert tagged("diff", "v1", "v2", "sub").stdout == "no changes\n"
    # a path only in the workspace, or only in a compared commit
    (tagged.ws / "new.txt").write_text("n")
    assert tagged("diff", "v2", "new.txt").stdout.splitlines()[0] == "A new.txt"
    os.remove(tagged.ws / "b.txt")
    assert tagged("diff", "v2", "b.txt").stdout.splitlines()[0] == "D b.txt"
    assert tagged("diff", "v1", "v2", "b.txt").stdout.splitlines()[0] == "A b.txt"
    # without a revision: HEAD against the workspace, below the path
    assert tagged("diff", "a.txt").stdout.splitlines()[0] == "M a.txt"
    assert tagged("diff", "./v1", fail=4).stderr.count("'./v1'") == 1


def test_diff_double_dash_separates_revisions_from_paths(tagged):
    assert tagged("diff", "v1", "v2", "--", "a.txt").stdout.splitlines()[0] == "M a.txt"
    assert tagged("diff", "v1", "--", "a.txt").stdout.splitlines()[0] == "M a.txt"
    assert tagged("diff", "--", "a.txt").stdout.splitlines()[0] == "M a.txt"
    js = json.loads(tagged("diff", "--json", "v1", "--", "b.txt").stdout)
    assert js["added"] == ["b.txt"]
    # after --, a path that exists nowhere is simply an empty diff (as in git) ...
    assert tagged("diff", "v1", "--", "zzzz").stdout == "no changes\n"
    # ... and a name before it must be a revision
    line = _one_line(tagged("diff", "zzzz", "--", "a.txt", fail=4))
    assert "unknown revision 'zzzz'" in line
    line = _one_line(tagged("diff", "v1", "v2", "v1", "--", "a.txt", fail=2))
    assert "at most two revisions" in line


def test_status(hist):
    js = hist.json("status", "--json")
    _check_diff_shape(js)
    assert js["added"] == ["untracked.txt"]
    assert js["modified"] == ["new.txt"]
    assert js["removed"] == ["c3.txt"]
    assert js["renamed"] == []
    assert js["head"] == hist.c[2] and js["branch"] == "heads/main"
    text = hist("status").stdout.splitlines()
    assert text[0] == "on branch main"
    assert "  added:    untracked.txt" in text and "  removed:  c3.txt" in text
    assert "  modified: new.txt" in text


def test_status_of_a_fresh_repository(cli, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    cli("init", cwd=ws)
    (ws / "f.txt").write_text("x")
    js = json.loads(cli("status", "--json", cwd=ws).stdout)
    assert js["added"] == ["f.txt"] and js["head"] is None and js["branch"] == "heads/main"
    text = cli("status", cwd=ws).stdout.splitlines()
    assert text == ["on branch main", "  added:    f.txt"]


# -- init ---------------------------------------------------------------------------------------


def test_init_variants(cli, tmp_path):
    res = cli("init", "new/ws", cwd=tmp_path)
    assert (tmp_path / "new" / "ws" / ".vfs" / "config.toml").is_file()
    assert str(tmp_path / "new" / "ws" / ".vfs") in res.stdout
    bare = cli("init", "--bare", "bare.vfs", cwd=tmp_path)
    assert (tmp_path / "bare.vfs" / "config.toml").is_file()
    assert not (tmp_path / "bare.vfs" / ".vfs").exists()
    assert str(tmp_path / "bare.vfs") in bare.stdout
    assert cli("log", cwd=tmp_path / "bare.vfs").stdout == ""
    res = cli.fail("snapshot", "-m", "x", cwd=tmp_path / "bare.vfs")
    assert "bare" in res.stderr
    # a command run in a subdirectory finds the workspace above it
    sub = tmp_path / "new" / "ws" / "deep" / "er"
    sub.mkdir(parents=True)
    (sub / "f.txt").write_text("deep")
    cli("snapshot", "-m", "from below", cwd=sub)
    assert cli("cat", "HEAD:deep/er/f.txt", cwd=tmp_path / "new" / "ws").stdout == "deep"


def test_fsck_and_gc_on_a_healthy_repository(hist):
    res = hist("fsck")
    assert "no problems" in res.stdout
    js = hist.json("fsck", "--json", "--verify-data")
    assert js["ok"] is True and js["problems"] == [] and js["verified_data"] is True
    assert js["checked"]["commits"] == 3
    dry = hist.json("gc", "--dry-run", "--json")
    assert dry["dry_run"] is True and dry["commits"] == 0


def test_init_honours_dash_c(cli, tmp_path):
    """`vfs -C DIR init` creates the repository in DIR, not in the current directory."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    here = tmp_path / "here"
    here.mkdir()
    cli("-C", str(target), "init", cwd=here)
    assert (target / ".vfs" / "config.toml").is_file()
    assert not (here / ".vfs").exists()
