"""``diff``: what changed between two trees (two commits, or a commit and the workspace).

Both trees are walked together and a subtree whose id is equal on both sides is
skipped without being read, so two large commits that differ in one file are
compared in a few tree reads. Two trees that are read are compared as their raw
rows (set difference of msgpack tuples, in C); entries are made only for the rows
that differ, so the cost is the bytes of the trees that differ plus the changes,
and nothing is cached. A *source* is anything with ``tree_bytes(tree_id) -> bytes``
(or only ``tree(tree_id) -> Tree``) and ``chunks(entry) -> tuple[ChunkRef, ...]``
(``Repo`` and the workspace scanner's ``WorkTree`` both are), so one side may be a
commit and the other the workspace.

What is listed:

* files and symlinks, by workspace-relative path (``a/b.csv``);
* a directory only when it is added or removed *and empty* (``a/empty/``, with a
  trailing ``/``): a directory holding files is implied by them, and a directory that
  exists on both sides is never listed, whatever its mode or content;
* *modified*: the same path holds different content (id), mode bits, kind (file ↔
  symlink) or symlink target. A changed mtime alone is not a modification. A path that
  turns from a directory into a file (or back) is removed and added;
* *renamed*: a removed and an added path of the same kind with the same content id
  (empty files excepted: all empty files look alike). Each removed path pairs with at
  most one added path: first those with the same base name, then in path order.

Thread-safety: pure functions over the given sources, which must allow reads from
several threads at once (``Repo`` and ``WorkTree`` do): trees are read ahead on a
pool of threads.
"""

from __future__ import annotations

import enum
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from ..errors import VfsError

from ..records.model import (
    Kind, Tree, TreeEntry, changed_rows, decode_tree_rows, encode_tree, row_entry, tree_id,
)

__all__ = ["EMPTY_TREE", "Change", "ChangeKind", "DiffResult", "DiffStats", "diff_trees",
           "to_json"]

EMPTY_TREE = tree_id(encode_tree(Tree(())))


class ChangeKind(str, enum.Enum):
    ADDED = "added"
    REMOVED = "removed"
    MODIFIED = "modified"


@dataclass(frozen=True, slots=True)
class Change:
    """One listed path: ``old`` is None when added, ``new`` is None when removed."""

    path: str
    kind: ChangeKind
    old: TreeEntry | None
    new: TreeEntry | None

    @property
    def reasons(self) -> tuple[str, ...]:
        """For a modification, what differs: ``content``, ``mode``, ``kind``, ``target``."""
        o, n = self.old, self.new
        if o is None or n is None:
            return ()
        out = []
        if o.kind is not n.kind:
            out.append("kind")
        elif o.kind is Kind.SYMLINK and o.target != n.target:
            out.append("target")
        elif o.id != n.id:
            out.append("content")
        if o.mode != n.mode:
            out.append("mode")
        return tuple(out)


@dataclass(frozen=True, slots=True)
class DiffStats:
    """Counts and bytes of each kind of change. ``changed_bytes`` is, over the
    modified files, the length of the new version's chunks that the old version did
    not have: what a new snapshot actually has to store."""

    added: int = 0
    removed: int = 0
    modified: int = 0
    renamed: int = 0
    added_bytes: int = 0
    removed_bytes: int = 0
    modified_bytes: int = 0
    renamed_bytes: int = 0
    changed_bytes: int = 0


@dataclass(frozen=True, slots=True)
class DiffResult:
    added: tuple[Change, ...]
    removed: tuple[Change, ...]
    modified: tuple[Change, ...]
    renamed: tuple[tuple[str, str], ...]   # (from path, to path)
    stats: DiffStats

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.modified or self.renamed)


# --------------------------------------------------------------------------
# walking

_INSIDE, _ABOVE, _OUTSIDE = 2, 1, 0
# Trees are read ahead of the walk by this many threads (see workspace.lookahead for
# the measurements), holding at most this many differing rows.
READERS = 16
AHEAD_LIMIT = 200_000


def _key(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class _Walk:
    def __init__(self, old_src, new_src, paths):
        self.old_src = old_src
        self.new_src = new_src
        self.paths = None if paths is None else [p.strip("/") for p in paths]
        self.added: list[Change] = []
        self.removed: list[Change] = []
        self.modified: list[Change] = []
        self.ahead: dict[tuple, tuple[dict, dict]] = {}  # (old tid, new tid) -> changed

    def read_ahead(self, old_root, new_root, limit: int = AHEAD_LIMIT) -> None:
        """Compare the pairs of trees the walk will descend into, breadth first, on
        ``READERS`` threads (each reads its two trees: on cold caches the reads
        overlap), keeping what differs for ``dirs``; stops going deeper once
        ``limit`` rows are held. A read that fails is left to the walk, which then
        reports it where it meets it."""
        level = [(old_root, new_root)]
        held = 0
        with ThreadPoolExecutor(READERS, thread_name_prefix="vfs-diff") as pool:
            while level and held < limit:
                try:
                    found = list(pool.map(self._changed, level))
                except VfsError:
                    return
                nxt = []
                for key, (gone, came) in zip(level, found):
                    self.ahead[key] = gone, came
                    held += len(gone) + len(came)
                    for k, n in came.items():
                        o = gone.get(k)
                        if o is not None and _is_dir(o) and _is_dir(n):
                            nxt.append((o[5], n[5]))
                level = nxt

    def _changed(self, pair) -> tuple[dict, dict]:
        return changed_rows(tree_rows(self.old_src, pair[0]), tree_rows(self.new_src, pair[1]))

    def _where(self, path: str) -> int:
        """Whether ``path`` is inside the PATHS filter, above one of them, or outside."""
        if self.paths is None:
            return _INSIDE
        if any(not p or path == p or path.startswith(p + "/") for p in self.paths):
            return _INSIDE
        if any(p.startswith(path + "/") for p in self.paths):
            return _ABOVE
        return _OUTSIDE

    def dirs(self, old_tid, new_tid, prefix: str, inside: bool) -> None:
        if old_tid == new_tid:
            return
        got = self.ahead.pop((old_tid, new_tid), None)
        gone, came = got if got is not None else self._changed((old_tid, new_tid))
        for k in sorted(gone.keys() | came.keys()):
            o, n = gone.get(k), came.get(k)
            o = None if o is None else row_entry(o)
            n = None if n is None else row_entry(n)
            path = prefix + (o or n).name
            where = _INSIDE if inside else self._where(path)
            if where == _OUTSIDE:
                continue
            if o is not None and n is not None and o.is_dir and n.is_dir:
                self.dirs(o.id, n.id, path + "/", where == _INSIDE)
            elif where == _ABOVE:
                self._above(o, n, path)
            elif o is not None and n is not None:
                if o.is_dir or n.is_dir:
                    self._gone(o, path, True)
                    self._came(n, path, True)
                elif _differs(o, n):
                    self.modified.append(Change(path, ChangeKind.MODIFIED, o, n))
            elif o is not None:
                self._gone(o, path, True)
            else:
                self._came(n, path, True)

    def _above(self, o, n, path) -> None:
        """A path above a PATHS filter: only directories can hold what is wanted."""
        if o is not None and o.is_dir:
            self._gone(o, path, False)
        if n is not None and n.is_dir:
            self._came(n, path, False)

    def _gone(self, entry, path, inside) -> None:
        for p, e in self._leaves(self.old_src, entry, path, inside):
            self.removed.append(Change(p, ChangeKind.REMOVED, e, None))

    def _came(self, entry, path, inside) -> None:
        for p, e in self._leaves(self.new_src, entry, path, inside):
            self.added.append(Change(p, ChangeKind.ADDED, None, e))

    def _leaves(self, src, entry: TreeEntry, path: str, inside: bool):
        """Files, symlinks and empty directories at or below ``entry``."""
        if not entry.is_dir:
            if inside:
                yield path, entry
            return
        rows = tree_rows(src, entry.id)
        if not rows:
            if inside:
                yield path + "/", entry
            return
        for row in rows:
            e = row_entry(row)
            sub = f"{path}/{e.name}"
            where = _INSIDE if inside else self._where(sub)
            if where != _OUTSIDE:
                yield from self._leaves(src, e, sub, where == _INSIDE)


def _is_dir(row) -> bool:
    """Whether a (not yet checked) row is a directory's: the look-ahead descends there."""
    return type(row) is tuple and len(row) == 7 and row[1] == 2 and type(row[5]) is bytes


def tree_rows(src, tid) -> tuple:
    """The rows of tree ``tid`` of ``src`` (``records.model.decode_tree_rows``); a
    tree id of None or the empty tree's has none. A source without ``tree_bytes``
    (an in-memory one) is asked for ``tree(tid)``."""
    if tid is None or tid == EMPTY_TREE:
        return ()
    get = getattr(src, "tree_bytes", None)
    return decode_tree_rows(get(tid) if get is not None else encode_tree(src.tree(tid)))


def _differs(o: TreeEntry, n: TreeEntry) -> bool:
    return o.kind is not n.kind or o.id != n.id or o.mode != n.mode or o.target != n.target


# --------------------------------------------------------------------------
# renames and stats


def _pair_renames(removed: list[Change], added: list[Change]):
    """Pairs (removed, added) with equal kind and content id; deterministic."""
    gone = defaultdict(list)
    for c in removed:
        if c.old.kind is not Kind.DIR and not (c.old.kind is Kind.FILE and c.old.size == 0):
            gone[(c.old.kind, c.old.id)].append(c)
    came = defaultdict(list)
    for c in added:
        if (c.new.kind, c.new.id) in gone:
            came[(c.new.kind, c.new.id)].append(c)
    pairs = []
    for key in sorted(came, key=lambda k: (k[0], bytes(k[1]))):
        olds, news = sorted(gone[key], key=_by_path), sorted(came[key], key=_by_path)
        for o in list(olds):  # same base name first
            match = next((n for n in news if _base(n.path) == _base(o.path)), None)
            if match is not None:
                pairs.append((o, match))
                olds.remove(o)
                news.remove(match)
        pairs += list(zip(olds, news))
    return sorted(pairs, key=lambda p: _by_path(p[0]))


def _by_path(c: Change) -> bytes:
    return _key(c.path)


def _base(path: str) -> str:
    return os.path.basename(path.rstrip("/"))


def _size(e: TreeEntry | None) -> int:
    return 0 if e is None or e.is_dir else e.size


def _changed_bytes(old_src, new_src, c: Change) -> int:
    o, n = c.old, c.new
    if n.kind is Kind.SYMLINK:
        return len(n.target) if o.kind is not Kind.SYMLINK or o.target != n.target else 0
    if o.kind is not Kind.FILE:
        return n.size
    if o.id == n.id:
        return 0
    before = {r.id for r in old_src.chunks(o)}
    return sum(r.length for r in new_src.chunks(n) if r.id not in before)


def diff_trees(old_src, old_root, new_src, new_root, *, paths=None) -> DiffResult:
    """Changes from tree ``old_root`` (read from ``old_src``) to ``new_root``.

    A root of None (or the empty tree's id) is an empty tree. ``paths`` limits the
    result to those workspace-relative paths and what is below them.

    Error handling: what the sources raise (``MissingObject``, ``CorruptObject``).
    """
    w = _Walk(old_src, new_src, paths)
    if paths is None and old_root != new_root:
        w.read_ahead(old_root, new_root)
    w.dirs(old_root, new_root, "", paths is None)
    pairs = _pair_renames(w.removed, w.added)
    paired = {id(c) for pair in pairs for c in pair}
    added = sorted((c for c in w.added if id(c) not in paired), key=_by_path)
    removed = sorted((c for c in w.removed if id(c) not in paired), key=_by_path)
    modified = sorted(w.modified, key=_by_path)
    stats = DiffStats(
        added=len(added), removed=len(removed), modified=len(modified), renamed=len(pairs),
        added_bytes=sum(_size(c.new) for c in added),
        removed_bytes=sum(_size(c.old) for c in removed),
        modified_bytes=sum(_size(c.new) for c in modified),
        renamed_bytes=sum(_size(o.old) for o, _ in pairs),
        changed_bytes=sum(_changed_bytes(old_src, new_src, c) for c in modified),
    )
    renamed = tuple((o.path, n.path) for o, n in pairs)
    return DiffResult(tuple(added), tuple(removed), tuple(modified), renamed, stats)


def to_json(result: DiffResult) -> dict:
    """The result as plain JSON types: path lists, rename objects and the stats."""
    return {
        "added": [c.path for c in result.added],
        "removed": [c.path for c in result.removed],
        "modified": [c.path for c in result.modified],
        "renamed": [{"from": a, "to": b} for a, b in result.renamed],
        "stats": asdict(result.stats),
    }
