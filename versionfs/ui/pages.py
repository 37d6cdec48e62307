"""What each page of ``vfs ui`` shows, as JSON-ready dicts: the same result objects
the CLI's ``--json`` prints (``ops.results``, ``RunRecord.to_dict``,
``RunComparison.to_dict``, ``Lineage.to_dict``), with paging around them.

Everything is paged or bounded so a repository of a million files and ten thousand
runs stays quick: history walks only as far as the page, a tree is one directory
per request, a diff lists one page of each kind of change, file contents are read
only at their head (``preview``). Errors are the repository's ``VfsError``s; the app
turns them into 404 (unknown revision, path, run) or 400 pages.
Thread-safe: each call reads through a repository that may be shared by threads.
"""

from __future__ import annotations

import difflib
import heapq
import shlex

from ..errors import IsADirectory, NotADirectory, PathNotFound, UsageError
from ..ops import results as R
from ..ops.diff import diff_trees
from ..records.model import Kind
from ..repo.repository import LogEntry, normalize_path
from . import preview as P

PAGE = 100            # rows per page (history, tree, diff, runs)
MAX_PAGE = 1000
DIFF_TEXT = 256 << 10  # bytes of each side of a text diff
DIFF_LINES = 2000      # rows of a side-by-side diff


def page_args(offset, limit) -> tuple[int, int]:
    try:
        off, lim = int(offset or 0), int(limit or PAGE)
    except ValueError:
        raise UsageError("offset and limit must be whole numbers") from None
    return max(0, off), min(max(1, lim), MAX_PAGE)


def _paged(total: int, offset: int, limit: int) -> dict:
    return {"offset": offset, "limit": limit, "total": total,
            "next_offset": offset + limit if offset + limit < total else None}


# -- history ---------------------------------------------------------------------------


def history(repo, offset: int = 0, limit: int = PAGE) -> dict:
    """Commits reachable from every branch, tag, remote branch and HEAD, newest
    first, with the lanes of the graph; ``commits`` are ``vfs log --json`` items."""
    names: dict[bytes, list[str]] = {}
    for name, target in repo.refs().items():
        names.setdefault(bytes(target), []).append(name)
    head = repo.head()
    tips = {bytes(t) for t in names} | ({bytes(head)} if head else set())
    heap, seen = [], set()
    for t in tips:
        c = repo.commit(t)
        heapq.heappush(heap, (-c.time_ns, t, c))
        seen.add(t)
    lanes: list[bytes | None] = []
    rows, width, n = [], 1, 0
    while heap and n < offset + limit:
        _, cid, c = heapq.heappop(heap)
        graph = _lane_step(lanes, cid, c.parents[0] if c.parents else None)
        width = max(width, len(lanes))
        if n >= offset:
            e = LogEntry(_oid(cid), c, tuple(sorted(names.get(cid, ()))))
            rows.append({**R.log_entry(e), "graph": graph})
        n += 1
        for p in c.parents:
            if bytes(p) not in seen:
                seen.add(bytes(p))
                pc = repo.commit(p)
                heapq.heappush(heap, (-pc.time_ns, bytes(p), pc))
    return {"commits": rows, "head": head.hex() if head else None,
            "branch": repo.head_ref(), "graph_width": width,
            "offset": offset, "limit": limit,
            "next_offset": offset + limit if heap else None}


def _oid(raw: bytes):
    from ..records.model import ObjectId
    return ObjectId(raw)


def _lane_step(lanes: list, cid: bytes, parent) -> dict:
    """Place commit ``cid`` in the lanes (each lane waits for the commit it leads
    to) and say what this row draws."""
    mine = [i for i, want in enumerate(lanes) if want == cid]
    from_above = bool(mine)
    if not mine:
        free = [i for i, want in enumerate(lanes) if want is None]
        mine = [free[0] if free else len(lanes)]
        if mine[0] == len(lanes):
            lanes.append(None)
    node = mine[0]
    through = [i for i, want in enumerate(lanes) if want is not None and i not in mine]
    for i in mine[1:]:
        lanes[i] = None
    lanes[node] = bytes(parent) if parent is not None else None
    while lanes and lanes[-1] is None:
        lanes.pop()
    return {"lane": node, "through": through, "joins": mine[1:],
            "from_above": from_above, "below": parent is not None}


# -- trees and files ----------------------------------------------------------------------


def _path(path: str | None) -> str:
    return normalize_path(path or "")


def _entry(repo, cid, rev: str, path: str):
    """The entry at ``path`` of commit ``cid``, or ``PathNotFound`` naming the path
    asked for (not only its first missing part)."""
    try:
        return repo.entry(cid, path)
    except (PathNotFound, NotADirectory):
        raise PathNotFound(f"no path {path!r} in {rev} (commit {cid.short})") from None


def tree(repo, rev: str, path: str = "", offset: int = 0, limit: int = PAGE) -> dict:
    """One directory of ``rev``: its entry and one page of its entries (``vfs ls
    --json`` items, named relative to the directory)."""
    cid = repo.resolve(rev)
    path = _path(path)
    entry = _entry(repo, cid, rev, path)
    if not entry.is_dir:
        raise UsageError(f"{path!r} is a file in {cid.short}, not a directory")
    entries = repo.tree(entry.id).entries
    page = entries[offset: offset + limit]
    c = repo.commit(cid)
    return {"rev": rev, "commit": cid.hex(), "path": path,
            "message": c.message, "entries": [R.entry(repo, e.name, e) for e in page],
            **_paged(len(entries), offset, limit)}


def file(repo, rev: str, path: str) -> dict:
    """A file of ``rev``: its ``vfs show REV:PATH --json`` object and a preview."""
    cid = repo.resolve(rev)
    path = _path(path)
    if not path:
        raise IsADirectory("the root is a directory; open it as a tree")
    entry = _entry(repo, cid, rev, path)
    if entry.is_dir:
        raise IsADirectory(f"{path!r} is a directory in {cid.short}; open it as a tree")
    out = R.entry(repo, path, entry)
    out.update(rev=rev, commit=cid.hex(), preview=P.preview(repo, cid.hex(), path, entry))
    return out


def raw_image(repo, rev: str, path: str):
    """``(content type, file)`` of an image file of ``rev`` for the browser; only
    raster image types, never a symlink, at most ``preview.IMAGE_MAX`` bytes."""
    cid = repo.resolve(rev)
    path = _path(path)
    entry = _entry(repo, cid, rev, path)
    if entry.kind is not Kind.FILE or P.kind_of(path) != "image" or \
            entry.size > P.IMAGE_MAX:
        raise PathNotFound(f"{path!r} in {cid.short} is not an image file that can be shown")
    return P.IMAGE_TYPES[path.lower()[path.rfind("."):]], repo.open(cid.hex(), path)


# -- diffs ----------------------------------------------------------------------------------


def diff(repo, a: str, b: str, offset: int = 0, limit: int = PAGE) -> dict:
    """``vfs diff A B --json`` with each list paged, and per modified file on the
    page its sizes and the bytes of new chunks (what the change costs to store)."""
    ca, cb = repo.resolve(a), repo.resolve(b)
    res = diff_trees(repo, repo.commit(ca).tree, repo, repo.commit(cb).tree)
    out = R.diff_to_json(res)
    total = max(len(res.added), len(res.removed), len(res.modified), len(res.renamed))
    for k in ("added", "removed", "modified", "renamed"):
        out[k] = out[k][offset: offset + limit]
    out["chunks"] = [_chunk_change(repo, c) for c in res.modified[offset: offset + limit]]
    out.update(a=a, b=b, commit_a=ca.hex(), commit_b=cb.hex(), **_paged(total, offset, limit))
    return out


def _chunk_change(repo, c) -> dict:
    o, n = c.old, c.new
    row = {"path": c.path, "old_size": o.size, "new_size": n.size,
           "reasons": list(c.reasons)}
    if o.kind is Kind.FILE and n.kind is Kind.FILE:
        old = {r.id for r in repo.chunks(o)}
        new = repo.chunks(n)
        row.update(old_chunks=len(old), new_chunks=len(new),
                   changed_bytes=sum(r.length for r in new if r.id not in old))
    return row


def diff_file(repo, a: str, b: str, path: str) -> dict:
    """One file side by side between ``a`` and ``b``: the first ``DIFF_TEXT``
    bytes of each version, line by line (``rows``: op, old line no, old text, new
    line no, new text); a binary file gets only its sizes."""
    path = _path(path)
    sides = [_side(repo, rev, path) for rev in (a, b)]
    if all(s is None for s in sides):
        raise PathNotFound(f"path {path!r} is in neither {a} nor {b}")
    out = {"path": path, "a": a, "b": b,
           "old_size": sides[0][1] if sides[0] else None,
           "new_size": sides[1][1] if sides[1] else None}
    texts = [s[0] if s else "" for s in sides]
    if any(t is None for t in texts):
        return {**out, "binary": True, "rows": []}
    old, new = texts[0].splitlines(), texts[1].splitlines()
    rows = []
    sm = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        for k in range(max(i2 - i1, j2 - j1)):
            i, j = i1 + k, j1 + k
            rows.append([op, i + 1 if i < i2 else None, old[i] if i < i2 else "",
                         j + 1 if j < j2 else None, new[j] if j < j2 else ""])
            if len(rows) >= DIFF_LINES:
                break
    truncated = any(s and s[2] for s in sides) or len(rows) >= DIFF_LINES
    return {**out, "binary": False, "rows": rows, "truncated": truncated}


def _side(repo, rev: str, path: str):
    """``(text or None if binary, size, truncated)`` of ``path`` in ``rev``, or None
    when the path is not a file there."""
    cid = repo.resolve(rev)
    try:
        entry = repo.entry(cid, path)
    except PathNotFound:
        return None
    if entry.kind is Kind.DIR:
        raise IsADirectory(f"{path!r} is a directory in {cid.short}")
    with repo.open(cid.hex(), path) as f:
        data = f.read(DIFF_TEXT)
    if b"\0" in data:
        return None, entry.size, False
    return data.decode("utf-8", "replace"), entry.size, entry.size > len(data)


# -- runs ------------------------------------------------------------------------------------


def flat(groups: dict) -> dict:
    """``{file: {key: value}}`` as ``{"file:key": value}``."""
    return {f"{f}:{k}": v for f, vals in groups.items() for k, v in vals.items()}


def runs(repo, *, q: str = "", status: str | None = None, sort: str = "start",
         desc: bool = True, offset: int = 0, limit: int = PAGE) -> dict:
    """The runs table: ``vfs runs --json`` items filtered by ``q`` (words that
    must all appear in the id, name, status, command, or as ``key=value`` in the
    params and metrics) and ``status``, sorted by ``start``, ``name``, ``status``,
    ``duration`` or a param/metric column (``params.FILE:KEY``,
    ``metrics.FILE:KEY``); numbers sort as numbers, missing values last."""
    from ..ops.run import list_runs
    recs = list_runs(repo, status=status or None)
    words = q.lower().split()
    if words:
        recs = [r for r in recs if all(w in _haystack(r) for w in words)]
    params = sorted({k for r in recs for k in flat(r.params)})
    metrics = sorted({k for r in recs for k in flat(r.metrics)})
    recs.sort(key=_sort_key(sort), reverse=desc)
    if desc:  # missing values last in both directions
        recs.sort(key=lambda r: _sort_key(sort)(r)[0] != 0)
    page = recs[offset: offset + limit]
    return {"runs": [R.run_summary(r) for r in page], "params": params,
            "metrics": metrics, "q": q, "status": status, "sort": sort, "desc": desc,
            **_paged(len(recs), offset, limit)}


def _haystack(r) -> str:
    kv = " ".join(f"{k}={v}" for k, v in {**flat(r.params), **flat(r.metrics)}.items())
    return f"{r.id} {r.name} {r.status} {shlex.join(r.argv)} {kv}".lower()


def _sort_key(sort: str):
    """A key of ``(missing, is text, value)``: numbers before text, missing last."""
    if sort in ("start", "duration"):
        return lambda r: (0, 0, r.start_ns if sort == "start" else r.duration)
    if sort in ("name", "status"):
        return lambda r: (0, 1, getattr(r, sort))
    group, _, key = sort.partition(".")
    if group not in ("params", "metrics") or not key:
        raise UsageError(f"cannot sort by {sort!r}: use start, name, status, duration, "
                         "params.FILE:KEY or metrics.FILE:KEY")

    def by_value(r):
        v = flat(getattr(r, group)).get(key)
        if v is None:
            return (1, 0, 0)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return (0, 0, v)
        return (0, 1, str(v))
    return by_value


def run(repo, run_id: str) -> dict:
    """One run: ``vfs runs show --json``."""
    from ..ops.run import get_run
    return get_run(repo, run_id).to_dict()


def compare(repo, ids: list[str]) -> dict:
    """Runs side by side: every param and metric with each run's value and whether
    any differs from the first run's, plots of the numeric metrics, and for two runs
    or more the ``vfs runs compare FIRST LAST --json`` object (``pair``)."""
    from ..ops.compare import compare_runs
    from ..ops.run import get_run
    if not ids:
        raise UsageError("choose runs to compare (give ids=ID,ID,...)")
    recs = [get_run(repo, i) for i in ids]
    table = {}
    for group in ("params", "metrics"):
        values = [flat(getattr(r, group)) for r in recs]
        keys = sorted({k for v in values for k in v})
        table[group] = [{"key": k, "values": [v.get(k) for v in values],
                         "changed": len({repr(v.get(k)) for v in values}) > 1}
                        for k in keys]
    for row in table["metrics"]:  # the values to plot across the runs, if numbers
        nums = [float(v) if _is_number(v) else None for v in row["values"]]
        row["plot"] = nums if any(v is not None for v in nums) else None
    return {"runs": [R.run_summary(r) for r in recs], **table,
            "pair": compare_runs(recs[0], recs[-1]).to_dict() if len(recs) > 1 else None}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def lineage(repo, rev: str, path: str) -> dict:
    """``vfs lineage PATH@REV --json``."""
    from ..ops import lineage as L
    return L.lineage(repo, rev, _path(path), depth=L.DEFAULT_DEPTH).to_dict()


def dag(repo) -> dict:
    """``vfs dag --json`` of the workspace's vfs.yaml."""
    from ..ops.pipeline import load
    if repo.workspace is None:
        raise UsageError("a bare repository has no workspace, so no vfs.yaml pipeline")
    return R.pipeline(load(repo.workspace))
