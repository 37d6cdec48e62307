"""What one side lacks: the records and chunks reachable from some commits that the
other side does not hold.

Both directions walk the same way: push walks the local index and asks the remote's
state what it knows; pull walks the remote's records and asks the local index. The
walk stops at anything the other side holds, which is sound because both sides keep
the same invariant (a commit, tree or file record is written only after everything
it references): a known commit brings its ancestors and its whole tree, a known tree
its subtree, a known file record its chunks.

Pure: it reads through two callables and does no I/O itself. Thread-safety: functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import CorruptObject, MissingObject, RemoteCorrupt
from ..records.runs import decode_run
from ..records.model import (
    Kind, ObjectId, commit_id, decode_commit, decode_file, decode_tree, file_id, tree_id,
)

# get(kind, id) -> encoding or None; known(kind, id) -> whether the other side has it.
# kind is one of "commits", "trees", "files".
Get = Callable[[str, bytes], "bytes | None"]
Known = Callable[[str, bytes], bool]


@dataclass(slots=True)
class Plan:
    """Records to send (id → encoding, per kind) and the chunks they use (id →
    length), in the order they were met."""

    records: dict[str, dict[bytes, bytes]] = field(
        default_factory=lambda: {"commits": {}, "trees": {}, "files": {}, "runs": {}})
    chunks: dict[bytes, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.chunks and not any(self.records.values())

    def count(self) -> int:
        return sum(len(v) for v in self.records.values())


def missing(roots, get: Get, known: Known, plan: Plan | None = None) -> Plan:
    """Add to ``plan`` what the other side lacks to hold every commit in ``roots``
    (``MissingObject`` when this side lacks a record it should have)."""
    plan = plan or Plan()
    commits, trees = plan.records["commits"], plan.records["trees"]
    stack = [bytes(r) for r in roots]
    tree_stack: list[bytes] = []
    while stack:
        cid = stack.pop()
        if cid in commits or known("commits", cid):
            continue
        raw = _need(get, "commits", cid, "commit")
        commits[cid] = raw
        c = decode_commit(raw)
        stack.extend(bytes(p) for p in c.parents)
        tree_stack.append(bytes(c.tree))
    while tree_stack:
        tid = tree_stack.pop()
        if tid in trees or known("trees", tid):
            continue
        raw = _need(get, "trees", tid, "tree")
        trees[tid] = raw
        for e in decode_tree(raw).entries:
            if e.kind == Kind.DIR:
                tree_stack.append(bytes(e.id))
            elif e.kind == Kind.FILE and e.size > 0:
                _file(plan, get, known, bytes(e.id), e.size)
    return plan


def _file(plan: Plan, get: Get, known: Known, fid: bytes, size: int) -> None:
    files = plan.records["files"]
    if fid in files or fid in plan.chunks:
        return
    raw = get("files", fid)
    if raw is None:        # a file below the chunking threshold: its id is its one chunk
        plan.chunks[fid] = size
        return
    if known("files", fid):
        return
    files[fid] = raw
    for c in decode_file(raw).chunks:
        plan.chunks.setdefault(bytes(c.id), c.length)


def _need(get: Get, kind: str, oid: bytes, what: str) -> bytes:
    raw = get(kind, oid)
    if raw is None:
        raise MissingObject(f"{what} {ObjectId(oid).short} is missing; run 'vfs fsck'",
                            object_id=oid)
    return raw


def carried_runs(candidates, have_run, have_commit, plan: Plan) -> dict:
    """Run records to carry along: of ``candidates`` (run id, encoding), those the
    other side lacks (``have_run``) whose every commit it will hold (``have_commit``,
    or among ``plan``'s): run id → encoding. Undecodable ones are left behind."""
    out = {}
    for rid, raw in candidates:
        rid = bytes(rid)
        if have_run(rid):
            continue
        try:
            rec = decode_run(rid, raw)
        except CorruptObject:
            continue
        if all(bytes.fromhex(c) in plan.records["commits"] or have_commit(bytes.fromhex(c))
               for c in rec.commits()):
            out[rid] = bytes(raw)
    return out


def check_records(plan: Plan) -> None:
    """Every commit, tree and file record received must hash to its id and decode
    (``RemoteCorrupt`` naming it otherwise): a tampered bundle is never stored."""
    for kind, ident, decode in (("commits", commit_id, decode_commit),
                                ("trees", tree_id, decode_tree),
                                ("files", file_id, decode_file)):
        for oid, enc in plan.records[kind].items():
            try:
                ok = ident(enc) == oid
                decode(enc)
            except CorruptObject:
                ok = False
            if not ok:
                raise RemoteCorrupt(
                    f"{kind[:-1]} record {ObjectId(oid).short} from the remote does not "
                    "match its id (tampered or damaged); nothing was stored",
                    object_id=oid)
