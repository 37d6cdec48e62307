"""diff: pure units over in-memory trees, then real commits, the workspace and the CLI."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest

from repo_helpers import make_repo, snap, write
from versionfs.ops.diff import EMPTY_TREE, ChangeKind, DiffStats, diff_trees, to_json
from versionfs.records.hashing import hash_bytes
from versionfs.records.model import (
    ChunkRef, Commit, FileRecord, commit_id, encode_commit, Kind, ObjectId, TreeEntry, encode_file, encode_tree, file_id,
    make_tree, tree_id,
)
from versionfs.repo.repository import Repo
from versionfs.workspace.scan import scan_workspace

# -- an in-memory source ----------------------------------------------------------------


@dataclass
class File:
    data: bytes = b""
    mode: int = 0o644
    mtime: int = 0
    chunks: list[bytes] | None = None  # a chunked file: its chunks' bytes


@dataclass
class Link:
    target: str


class Source:
    """``tree_bytes``, ``tree`` and ``chunks`` over dicts; counts tree reads."""

    def __init__(self):
        self.trees = {}
        self.records = {}
        self.reads = []

    def tree(self, tid):
        self.reads.append(bytes(tid))
        return self.trees[bytes(tid)]

    def tree_bytes(self, tid):
        self.reads.append(bytes(tid))
        return encode_tree(self.trees[bytes(tid)])

    def chunks(self, entry):
        if entry.id in self.records:
            return self.records[entry.id]
        return (ChunkRef(entry.id, entry.size),) if entry.size else ()

    def build(self, spec: dict) -> ObjectId:
        entries = [self._entry(name, value) for name, value in spec.items()]
        tree = make_tree(entries)
        tid = tree_id(encode_tree(tree))
        self.trees[bytes(tid)] = tree
        return tid

    def _entry(self, name, v) -> TreeEntry:
        if isinstance(v, dict):
            return TreeEntry(name, Kind.DIR, 0o755, 0, 0, self.build(v))
        if isinstance(v, Link):
            t = v.target.encode()
            return TreeEntry(name, Kind.SYMLINK, 0o777, len(t), 0, ObjectId(hash_bytes(t)), t)
        if isinstance(v, bytes):
            v = File(v)
        if v.chunks is not None:
            refs = tuple(ChunkRef(ObjectId(hash_bytes(c)), len(c)) for c in v.chunks)
            size = sum(len(c) for c in v.chunks)
            fid = file_id(encode_file(FileRecord(size, refs)))
            self.records[fid] = refs
            return TreeEntry(name, Kind.FILE, v.mode, size, v.mtime, fid)
        return TreeEntry(name, Kind.FILE, v.mode, len(v.data), v.mtime,
                         ObjectId(hash_bytes(v.data)))


def diff(old: dict, new: dict, **kw):
    src = Source()
    return diff_trees(src, src.build(old), src, src.build(new), **kw)


def paths(changes):
    return [c.path for c in changes]


# -- units ------------------------------------------------------------------------------


def test_identical_trees_read_nothing():
    src = Source()
    root = src.build({"a": {"b": b"x"}})
    src.reads.clear()
    r = diff_trees(src, root, src, root)
    assert r.empty and src.reads == []
    assert r.stats == DiffStats()


def test_added_removed_modified_in_nested_directories():
    r = diff({"top.txt": b"1", "a": {"b": {"c.txt": b"old", "gone.txt": b"bye"}}},
             {"top.txt": b"1", "a": {"b": {"c.txt": b"new", "d": {"e.txt": b"hi"}}}})
    assert paths(r.added) == ["a/b/d/e.txt"]
    assert paths(r.removed) == ["a/b/gone.txt"]
    assert paths(r.modified) == ["a/b/c.txt"]
    assert r.modified[0].kind is ChangeKind.MODIFIED and r.modified[0].reasons == ("content",)
    assert r.added[0].old is None and r.added[0].new.name == "e.txt"
    assert r.removed[0].new is None and r.removed[0].old.size == 3
    assert r.renamed == ()


def test_mode_change_is_a_modification_mtime_is_not():
    r = diff({"run.sh": File(b"#!", 0o644, mtime=1), "t.txt": File(b"x", mtime=1)},
             {"run.sh": File(b"#!", 0o755, mtime=1), "t.txt": File(b"x", mtime=999)})
    assert paths(r.modified) == ["run.sh"]
    assert r.modified[0].reasons == ("mode",)
    assert r.stats.changed_bytes == 0


def test_symlink_changes():
    r = diff({"l": Link("a"), "k": Link("same"), "f": b"a", "g": Link("x")},
             {"l": Link("b"), "k": Link("same"), "f": Link("a"), "g": b"x"})
    assert paths(r.modified) == ["f", "g", "l"]
    reasons = {c.path: c.reasons for c in r.modified}
    assert reasons == {"l": ("target",), "f": ("kind", "mode"), "g": ("kind", "mode")}
    assert r.stats.changed_bytes == 1 + 1 + 1  # new target "b", symlink "a", file "x"


def test_a_directory_replaced_by_a_file_is_removed_and_added():
    r = diff({"d": {"x": b"1", "y": {"z": b"2"}}}, {"d": b"now a file"})
    assert paths(r.removed) == ["d/x", "d/y/z"]
    assert paths(r.added) == ["d"]
    assert r.modified == ()


def test_empty_directories_are_listed_with_a_slash_when_they_come_or_go():
    r = diff({"gone": {}, "filled": {}, "emptied": {"f": b"1"}, "same": {}},
             {"new": {}, "filled": {"f": b"2"}, "emptied": {}, "same": {},
              "deep": {"er": {}}})
    assert paths(r.added) == ["deep/er/", "filled/f", "new/"]
    assert paths(r.removed) == ["emptied/f", "gone/"]
    assert r.added[0].new.kind is Kind.DIR
    assert to_json(r)["added"] == ["deep/er/", "filled/f", "new/"]


def test_renames():
    r = diff({"a": {"data.csv": b"rows"}, "old.txt": b"text", "l": Link("t")},
             {"b": {"data.csv": b"rows"}, "new.txt": b"text", "m": Link("t")})
    assert r.renamed == (("a/data.csv", "b/data.csv"), ("l", "m"), ("old.txt", "new.txt"))
    assert r.added == r.removed == ()
    assert r.stats.renamed == 3 and r.stats.renamed_bytes == 4 + 1 + 4


def test_rename_pairing_prefers_the_same_name_and_is_deterministic():
    same = b"identical content"
    old = {"x": {"a.bin": same, "b.bin": same, "c.bin": same}}
    new = {"y": {"b.bin": same, "q.bin": same}}
    r = diff(old, new)
    assert r.renamed == (("x/a.bin", "y/q.bin"), ("x/b.bin", "y/b.bin"))
    assert paths(r.removed) == ["x/c.bin"]
    assert diff(old, new) == r


def test_no_renames_between_kinds_or_for_empty_files():
    r = diff({"f": b"target", "e1": b""}, {"l": Link("target"), "e2": b""})
    assert r.renamed == ()
    assert paths(r.added) == ["e2", "l"] and paths(r.removed) == ["e1", "f"]


def test_identical_subtrees_are_skipped():
    src = Source()
    big = {f"f{i}": str(i).encode() for i in range(200)}
    old = src.build({"shared": {"deep": big}, "changed": {"x": b"1"}})
    new = src.build({"shared": {"deep": big}, "changed": {"x": b"2"}})
    src.reads.clear()
    r = diff_trees(src, old, src, new)
    assert paths(r.modified) == ["changed/x"]
    assert len(src.reads) == 4  # two roots and two "changed", never "shared"


class TreeOnly(Source):
    """A source offering only ``tree`` (no raw rows), as an in-memory one may."""

    tree_bytes = None


def test_a_source_without_tree_bytes_is_read_through_tree():
    old, new = {"d": {"x": b"1", "y": b"1"}, "e": {"f": b"1"}}, {"d": {"x": b"2", "y": b"1"}}
    src = TreeOnly()
    r = diff_trees(src, src.build(old), src, src.build(new))
    assert paths(r.modified) == ["d/x"] and paths(r.removed) == ["e/f"]
    assert r == diff(old, new)


def test_rows_that_differ_only_in_mtime_or_a_directory_s_metadata_list_nothing():
    r = diff({"d": {"f": File(b"x", mtime=1)}, "e": {}},
             {"d": {"f": File(b"x", mtime=2)}, "e": {}})
    assert r.empty
    src = Source()
    old = src.build({"d": {"f": b"x"}})
    new_tree = make_tree([TreeEntry("d", Kind.DIR, 0o700, 0, 5,
                                    src.trees[bytes(old)].entries[0].id)])
    new = tree_id(encode_tree(new_tree))
    src.trees[bytes(new)] = new_tree
    assert diff_trees(src, old, src, new).empty  # same subtree id: not descended


def test_type_changes_between_file_symlink_and_directory():
    r = diff({"a": b"file", "b": Link("t"), "c": {"x": b"1"}, "d": b"f", "e": {}},
             {"a": {"in": b"2"}, "b": {}, "c": Link("u"), "d": Link("f"), "e": b""})
    assert paths(r.added) == ["a/in", "b/", "c", "e"]
    assert paths(r.removed) == ["a", "b", "c/x", "e/"]
    assert paths(r.modified) == ["d"] and r.modified[0].reasons == ("kind", "mode")


def test_renames_across_directories_and_into_new_ones():
    r = diff({"a": {"x.bin": b"one", "y.bin": b"two"}, "b": {"z.bin": b"three"}},
             {"a": {"y.bin": b"two"}, "b": {"z.bin": b"three", "x.bin": b"one"},
              "c": {"d": {"moved": b"three"}}})
    assert r.renamed == (("a/x.bin", "b/x.bin"),)
    assert paths(r.added) == ["c/d/moved"] and r.removed == ()


def test_paths_filter_with_changes_at_every_level():
    old = {"a": {"b": {"c": b"1", "gone": {"g": b"g"}}, "x": b"1"}, "ab": b"1"}
    new = {"a": {"b": {"c": b"2", "new": {"n": b"n"}}, "x": b"2"}, "ab": b"2",
           "q": {"r": b"r"}}
    r = diff(old, new, paths=["a/b"])
    assert (paths(r.modified), paths(r.added), paths(r.removed)) == \
        (["a/b/c"], ["a/b/new/n"], ["a/b/gone/g"])
    r = diff(old, new, paths=["a/b/gone/g", "q/r", "ab"])
    assert (paths(r.modified), paths(r.added), paths(r.removed)) == \
        (["ab"], ["q/r"], ["a/b/gone/g"])
    assert diff(old, new, paths=["a/"]) == diff(old, new, paths=["a"])


def test_corrupt_rows_are_refused():
    from versionfs.errors import CorruptObject

    class Bad(Source):
        def tree_bytes(self, tid):
            return self.bad

    src = Bad()
    root = src.build({"a": b"1"})
    for bad in (b"\xc1", msgpack_packb({"not": "rows"}), msgpack_packb([[]]),
                msgpack_packb([[{"x": 1}]]), msgpack_packb([[b"..", 1, 0, 0, 0, b"i", b""]]),
                msgpack_packb([[b"n", 9, 0, 0, 0, b"i", b""]])):
        src.bad = bad
        with pytest.raises(CorruptObject, match="tree"):
            diff_trees(src, root, src, EMPTY_TREE)


def test_a_missing_tree_met_while_reading_ahead_is_reported_by_the_walk():
    from versionfs.errors import MissingObject

    class Lossy(Source):
        lost = None

        def tree_bytes(self, tid):
            if bytes(tid) == self.lost:
                raise MissingObject(f"tree {tid.hex()[:12]} is missing; run 'vfs fsck'")
            return super().tree_bytes(tid)

    src = Lossy()
    old = src.build({"a": {"x": b"1"}, "b": {"deep": {"y": b"1"}}})
    new = src.build({"a": {"x": b"2"}, "b": {"deep": {"y": b"2"}}})
    src.lost = bytes(src.trees[bytes(new)].get("b").id)
    with pytest.raises(MissingObject, match="missing"):
        diff_trees(src, old, src, new)
    assert paths(diff_trees(src, old, src, new, paths=["a"]).modified) == ["a/x"]


def msgpack_packb(obj) -> bytes:
    import msgpack
    return msgpack.packb(obj, use_bin_type=True)


def test_chunk_level_stats():
    a, b, c, x = (bytes([i]) * 1000 for i in range(4))
    r = diff({"big": File(chunks=[a, b, c]), "small": b"12345", "gone": b"123"},
             {"big": File(chunks=[a, x, c, x]), "small": b"123456", "new": b"1234567"})
    s = r.stats
    assert (s.added, s.removed, s.modified, s.renamed) == (1, 1, 2, 0)
    assert (s.added_bytes, s.removed_bytes) == (7, 3)
    assert s.modified_bytes == 4000 + 6
    assert s.changed_bytes == 2000 + 6  # x (twice) in big, all of small


def test_paths_limit_the_walk():
    old = {"a": {"b": {"c": b"1", "d": b"1"}, "e": b"1"}, "z": b"1", "f": b"1"}
    new = {"a": {"b": {"c": b"2", "d": b"2"}, "e": b"2"}, "z": b"2", "f": {"g": b"1"}}
    assert paths(diff(old, new, paths=["a/b"]).modified) == ["a/b/c", "a/b/d"]
    assert paths(diff(old, new, paths=["a/b/c", "z"]).modified) == ["a/b/c", "z"]
    r = diff(old, new, paths=["f/g"])
    assert paths(r.added) == ["f/g"] and r.removed == ()
    assert diff(old, new, paths=["nope"]).empty


def test_empty_roots():
    src = Source()
    root = src.build({"a": b"1", "d": {}})
    assert paths(diff_trees(src, None, src, root).added) == ["a", "d/"]
    assert paths(diff_trees(src, root, src, EMPTY_TREE).removed) == ["a", "d/"]


def test_json_shape():
    r = diff({"a": b"1", "m": b"1", "r": b"moved"}, {"m": b"2", "s": b"moved", "n": b"3"})
    assert to_json(r) == {
        "added": ["n"], "removed": ["a"], "modified": ["m"],
        "renamed": [{"from": "r", "to": "s"}],
        "stats": {"added": 1, "removed": 1, "modified": 1, "renamed": 1,
                  "added_bytes": 1, "removed_bytes": 1, "modified_bytes": 1,
                  "renamed_bytes": 5, "changed_bytes": 1},
    }
    json.dumps(to_json(r))


# -- real commits and the workspace ------------------------------------------------------


@pytest.fixture
def history(storage):
    ws = storage / "ws"
    repo = make_repo(ws)
    big = bytearray(os.urandom(400_000))
    write(ws, "data/big.bin", bytes(big))
    write(ws, "data/old.csv", "a,b\n")
    write(ws, "run.sh", "#!/bin/sh\n", mode=0o644)
    os.symlink("data/old.csv", ws / "latest")
    v1 = snap(repo, "v1", tag="v1")
    big[200_000:200_010] = b"0123456789"
    write(ws, "data/big.bin", bytes(big))
    os.rename(ws / "data/old.csv", ws / "data/renamed.csv")
    (ws / "run.sh").chmod(0o755)
    os.remove(ws / "latest")
    os.symlink("data/renamed.csv", ws / "latest")
    write(ws, "docs/new.md", "# new")
    v2 = snap(repo, "v2", tag="v2")
    return ws, repo, v1, v2


def test_two_commits(history):
    ws, repo, v1, v2 = history
    repo._trees.clear()
    r = diff_trees(repo, repo.commit(v1).tree, repo, repo.commit(v2).tree)
    assert not repo._trees  # rows compared raw: no decoded tree kept (memory at scale)
    assert paths(r.added) == ["docs/new.md"]
    assert paths(r.modified) == ["data/big.bin", "latest", "run.sh"]
    assert r.renamed == (("data/old.csv", "data/renamed.csv"),)
    # a 10-byte edit in a 400 kB file costs about one chunk (4-64 KiB), not the file
    assert 0 < r.stats.changed_bytes < 130_000
    assert r.stats.modified_bytes == 400_000 + len("data/renamed.csv") + len("#!/bin/sh\n")


def test_commit_against_workspace(history):
    ws, repo, v1, v2 = history
    write(ws, "docs/new.md", "# changed")
    os.remove(ws / "run.sh")
    (ws / "empty").mkdir()
    work = scan_workspace(repo)
    r = diff_trees(repo, repo.commit(v2).tree, work, work.root)
    assert paths(r.modified) == ["docs/new.md"]
    assert paths(r.removed) == ["run.sh"]
    assert paths(r.added) == ["empty/"]
    r = diff_trees(repo, repo.commit(v1).tree, work, work.root)
    assert "data/big.bin" in paths(r.modified) and r.stats.changed_bytes > 0


def test_cli_diff(cli, history):
    ws, repo, v1, v2 = history
    repo.close()
    out = cli("diff", "v1", "v2", cwd=ws).stdout.splitlines()
    assert out[:-1] == [
        "M data/big.bin",
        "R data/old.csv -> data/renamed.csv",
        "A docs/new.md",
        "M latest  (-> data/renamed.csv)",
        "M run.sh  (mode 0644 -> 0755)",
    ]
    assert out[-1].startswith("1 added, 3 modified, 1 renamed (+5 B, ")
    data = json.loads(cli("diff", "v1", "v2", "--json", cwd=ws).stdout)
    assert data["renamed"] == [{"from": "data/old.csv", "to": "data/renamed.csv"}]
    assert data["stats"]["modified"] == 3
    stat = cli("diff", "v1", "v2", "--stat", cwd=ws).stdout
    assert "changed at chunk level" in stat and "3 paths" in stat
    # paths after the revisions; relative to the current directory
    out = cli("diff", "v1", "v2", "data", "--json", cwd=ws).stdout
    assert json.loads(out)["modified"] == ["data/big.bin"]
    out = cli("diff", "v1", "v2", "big.bin", "--json", cwd=ws / "data").stdout
    assert json.loads(out)["modified"] == ["data/big.bin"]


def test_cli_diff_against_workspace(cli, history):
    ws, repo, v1, v2 = history
    repo.close()
    assert cli("diff", cwd=ws).stdout == "no changes\n"
    write(ws, "docs/new.md", "# edited")
    assert cli("diff", cwd=ws).stdout.splitlines()[0] == "M docs/new.md"
    out = json.loads(cli("diff", "v1", "--json", cwd=ws).stdout)
    assert "docs/new.md" in out["added"] and "data/big.bin" in out["modified"]
    out = json.loads(cli("diff", "v2", "docs", "--json", cwd=ws).stdout)
    assert out["modified"] == ["docs/new.md"] and out["added"] == []


def test_cli_diff_of_commits_changed_at_every_depth(cli, storage):
    """Changes spread over many directories and levels (the trees are read ahead
    breadth first): every kind of change, with and without paths."""
    ws = storage / "ws"
    repo = make_repo(ws)
    for a in range(6):
        for b in range(5):
            for i in range(4):
                write(ws, f"a{a}/b{b}/f{i}.txt", f"{a} {b} {i}")
    write(ws, "a0/turns_into_dir", "file")
    write(ws, "a1/b1/gone/x.txt", "gone")
    snap(repo, "v1", tag="v1")
    for a in range(6):
        write(ws, f"a{a}/b{a % 5}/f0.txt", f"changed {a}")
    os.remove(ws / "a0/turns_into_dir")
    write(ws, "a0/turns_into_dir/inside.txt", "now a directory")
    for name in os.listdir(ws / "a1/b1/gone"):
        os.remove(ws / "a1/b1/gone" / name)
    os.rmdir(ws / "a1/b1/gone")
    os.rename(ws / "a2/b3/f3.txt", ws / "a5/b4/moved.txt")
    (ws / "a3/b2/f1.txt").chmod(0o755)
    snap(repo, "v2", tag="v2")
    repo.close()
    out = json.loads(cli("diff", "v1", "v2", "--json", cwd=ws).stdout)
    assert out["modified"] == sorted([f"a{a}/b{a % 5}/f0.txt" for a in range(6)] +
                                     ["a3/b2/f1.txt"])
    assert out["added"] == ["a0/turns_into_dir/inside.txt"]
    assert out["removed"] == ["a0/turns_into_dir", "a1/b1/gone/x.txt"]
    assert out["renamed"] == [{"from": "a2/b3/f3.txt", "to": "a5/b4/moved.txt"}]
    out = json.loads(cli("diff", "v1", "v2", "a0", "a5/b4", "--json", cwd=ws).stdout)
    assert (out["modified"], out["added"], out["removed"], out["renamed"]) == (
        ["a0/b0/f0.txt"], ["a0/turns_into_dir/inside.txt", "a5/b4/moved.txt"],
        ["a0/turns_into_dir"], [])  # the rename's other side is outside the paths
    lines = cli("diff", "v1", "v2", "--stat", cwd=ws).stdout.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["added", "1", "path"], ["removed", "2", "paths"], ["modified", "7", "paths"],
        ["renamed", "1", "path"]]


def test_cli_diff_errors(cli, tmp_path, history):
    ws, repo, v1, v2 = history
    repo.close()
    r = cli.fail("diff", "nosuchrev", cwd=ws, code=4)
    assert "unknown revision 'nosuchrev'" in r.stderr
    r = cli.fail("diff", "v1", "--stat", "--json", cwd=ws, code=2)
    assert "exclude each other" in r.stderr
    bare = tmp_path / "bare"
    Repo.init(str(bare), bare=True).close()
    r = cli.fail("-C", bare, "diff", code=4)
    assert "no commit yet" in r.stderr
    with Repo.open(str(bare)) as b:  # a commit of the empty tree
        enc = encode_commit(Commit(EMPTY_TREE, (), 1, "t", "empty"))
        with b.index.write() as txn:
            txn.put("commits", commit_id(enc), enc)
            txn.set_ref("heads/main", commit_id(enc))
    r = cli.fail("-C", bare, "diff", "HEAD", code=2)
    assert "bare repository has no workspace" in r.stderr
    assert cli("-C", bare, "diff", "HEAD", "HEAD").stdout == "no changes\n"
