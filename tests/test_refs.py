"""Refs and HEAD: parsed in one place, written only by compare-and-swap; tags and
branches as verbs that the CLI and the Python API share."""

from __future__ import annotations

import json

import pytest

from versionfs.api import Repo
from versionfs.errors import CorruptObject, RefChanged, UsageError
from versionfs.ops import snapshot as snapshot_mod
from versionfs.records.model import ObjectId
from versionfs.repo import refs

A, B = ObjectId(b"\xaa" * 32), ObjectId(b"\xbb" * 32)


@pytest.fixture
def repo(tmp_path):
    with Repo.init(str(tmp_path / "ws")) as r:
        yield r


def test_parse_head():
    assert refs.parse_head(b"heads/main") == refs.Head(branch="heads/main")
    assert refs.parse_head(A.hex().encode()) == refs.Head(detached=A)
    assert refs.parse_head(None) == refs.Head() and refs.parse_head(b"") == refs.Head()
    assert refs.Head(branch="heads/x").value == "heads/x" and refs.Head(detached=A).value == A.hex()
    for bad in (b"tags/v1", b"heads/", b"abc", b"xyz" * 30):
        with pytest.raises(CorruptObject, match="HEAD is neither a branch nor a commit id"):
            refs.parse_head(bad)


def test_set_ref_is_a_compare_and_swap(repo):
    with repo.index.write() as txn:
        refs.set_ref(txn, "tags/v1", A, expect=None)
        with pytest.raises(RefChanged, match=r"ref tags/v1 changed .*expected absent, "
                           rf"found {A.short}.*retry") as info:
            refs.set_ref(txn, "tags/v1", B, expect=None)
        assert info.value.retryable and info.value.object_id == A.hex()
        with pytest.raises(RefChanged, match=f"expected {B.short}, found {A.short}"):
            refs.set_ref(txn, "tags/v1", B, expect=B)
        refs.set_ref(txn, "tags/v1", B, expect=A)
        refs.set_ref(txn, "tags/v1", A, expect=refs.ANY)
        assert refs.read_ref(txn, "tags/v1") == A
        with pytest.raises(RefChanged, match="expected absent"):
            refs.delete_ref(txn, "tags/v1", expect=None)
        with pytest.raises(RefChanged, match=f"expected {B.short}, found absent"):
            refs.delete_ref(txn, "tags/nope", expect=B)
        assert refs.delete_ref(txn, "tags/v1", expect=A)
        assert not refs.delete_ref(txn, "tags/v1", expect=refs.ANY)
        with pytest.raises(UsageError, match="invalid tag name"):
            refs.set_ref(txn, "tags/HEAD", A, expect=None)
        with pytest.raises(UsageError, match="needs a kind"):
            refs.set_ref(txn, "main", A, expect=None)


def test_set_head_and_advance_head(repo):
    main = refs.Head(branch="heads/main")
    with repo.index.write() as txn:
        assert refs.read_head(txn) == main
        assert refs.advance_head(txn, A, expect=None) == main  # first commit on main
        assert refs.read_ref(txn, "heads/main") == A
        with pytest.raises(RefChanged, match="ref heads/main changed"):
            refs.advance_head(txn, B, expect=None)
        with pytest.raises(RefChanged, match="HEAD changed"):
            refs.set_head(txn, B, expect=refs.Head(branch="heads/dev"))
        assert refs.set_head(txn, B.hex(), expect=main) == refs.Head(detached=B)
        assert refs.head_commit(txn) == B
        with pytest.raises(RefChanged, match=f"HEAD changed .*expected {A.short}"):
            refs.advance_head(txn, A, expect=A)
        refs.advance_head(txn, A, expect=B)
        assert refs.read_head(txn) == refs.Head(detached=A)
        assert refs.read_ref(txn, "heads/main") == A  # a detached HEAD moves alone
        refs.set_head(txn, "heads/main")


def test_a_snapshot_cannot_lose_a_commit_of_a_writer_that_ignored_the_lock(repo, monkeypatch):
    ws = repo.workspace
    with open(f"{ws}/f.txt", "w") as f:
        f.write("one")
    first = repo.snapshot(message="one").commit
    real_scan = snapshot_mod.scan_workspace

    def scan_then_someone_moves_main(*args, **kw):
        work = real_scan(*args, **kw)
        with repo.index.write() as txn:  # a writer that does not take the lock
            refs.set_ref(txn, "heads/main", B, expect=first)
        return work

    monkeypatch.setattr(snapshot_mod, "scan_workspace", scan_then_someone_moves_main)
    with open(f"{ws}/f.txt", "w") as f:
        f.write("two")
    with pytest.raises(RefChanged, match=f"ref heads/main changed .*expected {first.short}, "
                       f"found {B.short}"):
        repo.snapshot(message="two")
    assert repo.refs("heads/") == {"heads/main": B}  # the other writer's commit stays


def _two_branches(repo):
    """main at c1; dev at c2, a commit only dev reaches; HEAD on main."""
    ws = repo.workspace
    with open(f"{ws}/f.txt", "w") as f:
        f.write("one")
    c1 = repo.snapshot(message="one").commit
    assert repo.branch("dev").action == "created"
    repo.checkout("dev")
    with open(f"{ws}/f.txt", "w") as f:
        f.write("two")
    c2 = repo.snapshot(message="two").commit
    repo.checkout("main")
    return c1, c2


def test_api_refs(repo):
    c1, c2 = _two_branches(repo)
    assert [(b.name, b.commit, b.head) for b in repo.branches()] == \
        [("dev", c2, False), ("main", c1, True)]
    assert repo.tag("v1", "dev").to_dict() == {
        "kind": "tag", "name": "v1", "action": "created", "commit": c2.hex(),
        "previous": None, "unreachable": 0}
    with pytest.raises(UsageError, match="tag 'v1' already exists"):
        repo.tag("v1")
    assert repo.tag("v1", force=True).action == "moved"
    assert [(t.name, t.commit) for t in repo.tags()] == [("v1", c1)]
    assert repo.delete_tag("v1").previous == c1
    with pytest.raises(UsageError, match="no tag named 'v1'"):
        repo.delete_tag("v1")
    with pytest.raises(UsageError, match="HEAD is on it"):
        repo.delete_branch("main")
    with pytest.raises(UsageError, match=r"branch 'dev' has 1 commit\(s\) that no other "
                       r"branch, tag or HEAD reaches.*vfs branch -D dev"):
        repo.delete_branch("dev")
    repo.tag("keep", "dev")  # now a tag reaches dev's commit: -d is enough
    assert repo.delete_branch("dev").unreachable == 0
    repo.branch("dev", "keep")
    repo.delete_tag("keep")
    res = repo.delete_branch("dev", force=True)
    assert (res.action, res.previous, res.unreachable) == ("deleted", c2, 1)
    assert [b.name for b in repo.branches()] == ["main"]


def test_cli_branch_d_refuses_an_unmerged_branch_and_D_deletes_it(cli, repo):
    c1, c2 = _two_branches(repo)
    ws = repo.workspace
    listed = json.loads(cli("branch", "--json", cwd=ws).stdout)
    assert listed == {b.name: b.commit.hex() for b in repo.branches()} == \
        {"dev": c2.hex(), "main": c1.hex()}
    res = cli.fail("branch", "-d", "dev", cwd=ws, code=2)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "1 commit(s)" in lines[0] and "-D" in lines[0]
    with pytest.raises(UsageError) as info:  # the API says the same
        repo.delete_branch("dev")
    assert str(info.value) in lines[0]
    assert cli("branch", "-D", "dev", cwd=ws).stdout.strip() == \
        f"deleted branch dev (was {c2.hex()[:12]})"
    assert [b.name for b in repo.branches()] == ["main"]
    # --force with -d does the same; --json prints what changed
    cli("branch", "dev", c2.hex(), cwd=ws)
    out = json.loads(cli("branch", "-d", "--force", "--json", "dev", cwd=ws).stdout)
    assert out == {"kind": "branch", "name": "dev", "action": "deleted", "commit": None,
                   "previous": c2.hex(), "unreachable": 1}
    assert json.loads(cli("branch", "--json", cwd=ws).stdout) == {"main": c1.hex()}


def test_only_repo_refs_writes_refs_and_head():
    """No module but repo/refs.py (and the index's own typed helper it uses) writes
    the ``refs`` db or ``meta/HEAD``."""
    import re
    from pathlib import Path
    root = Path(refs.__file__).resolve().parent.parent
    writes = re.compile(r'(?<!refs)\.set_ref\(|\.(put|delete)\(\s*"refs"'
                        r'|\.put\(\s*"meta",\s*(b?"HEAD"|HEAD_KEY)')
    allowed = {root / "repo" / "refs.py", root / "store" / "index.py"}
    bad = [f"{p.relative_to(root)}:{n}" for p in sorted(root.rglob("*.py")) if p not in allowed
           for n, line in enumerate(p.read_text().splitlines(), 1) if writes.search(line)]
    assert not bad, "refs or HEAD written outside versionfs/repo/refs.py: " + ", ".join(bad)
