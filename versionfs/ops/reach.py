"""Reachability: which records and chunks the repository's roots keep alive.

The roots (every ref, HEAD, the commits live mounts serve, ...) come from the root
providers of ``ops.roots``. ``mark`` walks commits (all parents), trees, file records
and chunks from the roots, visiting each distinct object once, and reports what it
cannot follow through a callback, so ``gc`` can refuse to sweep a damaged repository
while ``fsck`` lists the damage and carries on. ``users_of`` answers the reverse question for a few bad
ids: which commits and paths use them; ``ancestors`` walks commit parents only.

Thread-safety: functions only; each works inside the one transaction it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import CorruptObject
from ..records.hashing import hash_bytes
from ..records.model import (
    Kind, ObjectId, decode_statcache, decode_chunkloc, decode_commit, decode_file, decode_tree,
)

EMPTY_ID = ObjectId(hash_bytes(b""))

# Kinds of problem after which the mark is incomplete (something could not be walked).
BLOCKING = frozenset({"ref", "head", "commit", "tree", "file"})

Progress = Callable[[str, int, "int | None"], None]
Report = Callable[[str, str, str], None]


@dataclass(slots=True)
class Reachable:
    """Ids kept alive by the roots. ``files`` holds the id of every file entry (a
    small file's id is its chunk's id); ``records`` those that have a ``files``
    record (chunked files)."""

    commits: set[bytes] = field(default_factory=set)
    trees: set[bytes] = field(default_factory=set)
    files: set[bytes] = field(default_factory=set)
    records: set[bytes] = field(default_factory=set)
    chunks: set[bytes] = field(default_factory=set)


def statcache_file_id(value: bytes) -> bytes | None:
    """The file id a statcache value ends with, or None when it is malformed.

    A statcache value is the packed stat (``<QQQqqI``: dev, ino, size, mtime_ns,
    ctime_ns, st_mode; 44 bytes) followed by the 32-byte file id.
    """
    rec = decode_statcache(value)
    return bytes(rec[1]) if rec is not None else None


def mark(txn, root_ids: dict[bytes, str], threshold: int, *, report: Report,
         progress: Progress | None = None) -> Reachable:
    """Walk everything reachable from ``root_ids``; problems go to ``report``.

    ``report(kind, object, message)``: kinds in ``BLOCKING`` mean the walk could
    not follow something, so the result misses whatever lies beyond it.
    """
    live = Reachable()
    tree_stack = _mark_commits(txn, root_ids, live, report)
    _mark_trees(txn, tree_stack, threshold, live, report, progress)
    return live


def _mark_commits(txn, root_ids, live: Reachable, report: Report) -> list:
    stack = [(cid, where) for cid, where in root_ids.items()]
    trees: list[tuple[bytes, str]] = []
    while stack:
        cid, where = stack.pop()
        if cid in live.commits:
            continue
        live.commits.add(cid)
        short = ObjectId(cid).short
        raw = txn.get("commits", cid)
        if raw is None:
            report("commit", cid.hex(), f"commit {short} (from {where}) is missing")
            continue
        try:
            c = decode_commit(raw)
        except CorruptObject as exc:
            report("commit", cid.hex(), f"commit {short} (from {where}): {exc}")
            continue
        trees.append((bytes(c.tree), f"{short}:"))
        for p in c.parents:
            stack.append((bytes(p), f"parent of {short}"))
    return trees


def _mark_trees(txn, stack, threshold, live: Reachable, report: Report,
                progress: Progress | None) -> None:
    while stack:
        tid, where = stack.pop()
        if tid in live.trees:
            continue
        live.trees.add(tid)
        if progress and len(live.trees) % 1000 == 0:
            progress("mark", len(live.trees), None)
        tree = _load_tree(txn, tid, where, report)
        if tree is None:
            continue
        for e in tree.entries:
            path = f"{where}{e.name}"
            if e.kind is Kind.DIR:
                if e.id not in live.trees:
                    stack.append((bytes(e.id), path + "/"))
            elif e.kind is Kind.FILE:
                _mark_file(txn, e, path, threshold, live, report)
            elif hash_bytes(e.target) != e.id:
                report("entry", path, f"symlink {path}: its id is not the hash of its target")


def _load_tree(txn, tid, where, report: Report):
    raw = txn.get("trees", tid)
    short = ObjectId(tid).short
    if raw is None:
        report("tree", tid.hex(), f"tree {short} (at {where}) is missing")
        return None
    try:
        tree = decode_tree(raw)
    except CorruptObject as exc:
        report("tree", tid.hex(), f"tree {short} (at {where}): {exc}")
        return None
    keys = [e.name.encode("utf-8", "surrogateescape") for e in tree.entries]
    if any(a >= b for a, b in zip(keys, keys[1:])):
        report("tree", tid.hex(), f"tree {short} (at {where}): entries are not sorted "
               "or a name repeats")
    return tree


def _mark_file(txn, e, path, threshold, live: Reachable, report: Report) -> None:
    fid = bytes(e.id)
    if fid in live.files:
        return
    live.files.add(fid)
    if e.size == 0:
        if fid != EMPTY_ID:
            report("entry", path, f"file {path} is empty but its id is not the empty hash")
        return
    if e.size < threshold:
        _mark_chunk(txn, fid, e.size, path, live, report)
        return
    raw = txn.get("files", fid)
    if raw is None:
        report("file", fid.hex(), f"file record {e.id.short} (of {path}) is missing")
        return
    live.records.add(fid)
    try:
        rec = decode_file(raw)
    except CorruptObject as exc:
        report("file", fid.hex(), f"file record {e.id.short} (of {path}): {exc}")
        return
    total = sum(c.length for c in rec.chunks)
    if rec.size != e.size or total != e.size:
        report("file", fid.hex(), f"file record {e.id.short} (of {path}) says {rec.size} "
               f"bytes in chunks of {total} bytes, the tree says {e.size}")
    for c in rec.chunks:
        _mark_chunk(txn, bytes(c.id), c.length, path, live, report)


def _mark_chunk(txn, cid: bytes, length: int, path: str, live: Reachable,
                report: Report) -> None:
    if cid in live.chunks:
        return
    live.chunks.add(cid)
    raw = txn.get("chunks", cid)
    short = ObjectId(cid).short
    if raw is None:
        report("chunk", cid.hex(), f"chunk {short} (of {path}) has no location")
        return
    try:
        loc = decode_chunkloc(raw)
    except (CorruptObject, ValueError):
        return  # fsck's pass over every chunk location reports it, with its users
    if loc.length != length:
        report("chunk", cid.hex(), f"chunk {short} (of {path}) is {loc.length} bytes in "
               f"the index but {length} bytes where it is used")


def users_of(txn, root_ids, bad: set[bytes], threshold: int,
             limit: int = 3) -> dict[bytes, list[str]]:
    """For each id in ``bad`` (file, record or chunk ids), up to ``limit`` places
    ``commit:path`` that use it. Cost: one walk of the distinct trees."""
    memo: dict[bytes, list[tuple[str, bytes]]] = {}
    files: dict[bytes, list[bytes]] = {}
    out: dict[bytes, list[str]] = {b: [] for b in bad}
    commits = ancestors(txn, root_ids)
    for cid in sorted(commits):
        raw = txn.get("commits", cid)
        try:
            tree = decode_commit(raw).tree if raw else None
        except CorruptObject:
            tree = None
        if tree is None:
            continue
        for path, hit in _tree_hits(txn, bytes(tree), bad, threshold, memo, files):
            if len(out[hit]) < limit:
                out[hit].append(f"{ObjectId(cid).short}:{path}")
    return out


def ancestors(txn, root_ids) -> set[bytes]:
    """The commits ``root_ids`` reach through parents (themselves included); commits
    that are missing or do not decode end their line of the walk."""
    seen: set[bytes] = set()
    stack = [bytes(c) for c in root_ids]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        raw = txn.get("commits", cid)
        if raw is None:
            continue
        try:
            stack.extend(bytes(p) for p in decode_commit(raw).parents)
        except CorruptObject:
            continue
    return seen


def _tree_hits(txn, tid, bad, threshold, memo, files) -> list[tuple[str, bytes]]:
    if tid in memo:
        return memo[tid]
    memo[tid] = []  # guards against a (hostile) cycle
    raw = txn.get("trees", tid)
    try:
        tree = decode_tree(raw) if raw else None
    except CorruptObject:
        tree = None
    hits: list[tuple[str, bytes]] = []
    for e in tree.entries if tree else ():
        if e.kind is Kind.DIR:
            hits += [(f"{e.name}/{p}", h)
                     for p, h in _tree_hits(txn, bytes(e.id), bad, threshold, memo, files)]
        elif e.kind is Kind.FILE:
            hits += [(e.name, h) for h in _file_hits(txn, e, bad, threshold, files)]
    memo[tid] = hits
    return hits


def _file_hits(txn, e, bad, threshold, files) -> list[bytes]:
    fid = bytes(e.id)
    hits = [fid] if fid in bad else []
    if e.size >= threshold:
        if fid not in files:
            raw = txn.get("files", fid)
            try:
                files[fid] = [bytes(c.id) for c in decode_file(raw).chunks] if raw else []
            except CorruptObject:
                files[fid] = []
        hits += [c for c in files[fid] if c in bad]
    return hits
