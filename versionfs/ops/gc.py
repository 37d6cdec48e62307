"""Garbage collection: remove what no root (ref, HEAD, live mount, ...) reaches.

``gc`` marks every commit (with all parents), tree, file record and chunk reachable
from the roots (the providers of ``roots``; the walk is ``reach``), then:

1. in ONE write transaction deletes every unreachable record, every statcache
   entry whose file id is no longer reachable (a later snapshot trusting such an
   entry would reference deleted data), every dircache entry (the change
   journal's) whose tree is no longer reachable, and the block hashes of every
   chunk it deletes (or that is gone already);
2. deletes blobs that no remaining chunk points into;
3. rewrites packs whose live bytes are under half their size: live chunks are copied
   into new packs (fsynced and renamed by ``PackWriter.finish``), the chunks'
   locations move to them in a transaction, and only then the old pack is deleted;
4. removes leftovers in tmp/ of processes that are gone.

Every step leaves the repository consistent if the process dies after it: at worst an
orphan blob or pack remains, for the next gc. Nothing live is ever referenced from
something deleted, because records go before the blobs they point into and chunk
locations move before the old pack goes. A repository whose walk meets a missing or
undecodable commit, tree or file record is refused: whatever lies beyond it would be
swept; ``vfs fsck`` names the damage.

Thread-safety: run from one thread; holds the repository lock (except ``dry_run``).
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import reach, roots
from ..errors import CorruptObject, LockBusy, VfsError
from ..records.model import DIRSTATE_TREE, BlobKind, ChunkLoc, decode_chunkloc
from .reach import Progress, statcache_file_id
from ..store import blocks

__all__ = ["GcResult", "gc"]

# A pack is rewritten when less than this share of its bytes is still used.
REWRITE_BELOW = 0.5

RECORD_DBS = (("commits", "commits"), ("trees", "trees"), ("files", "records"),
              ("chunks", "chunks"))


@dataclass(frozen=True, slots=True)
class GcResult:
    """What gc removed (or, with ``dry_run``, would remove)."""

    commits: int = 0
    trees: int = 0
    files: int = 0
    chunks: int = 0
    statcache: int = 0
    blobs: int = 0
    packs_rewritten: int = 0
    tmp_files: int = 0
    bytes_freed: int = 0
    dry_run: bool = False
    warnings: tuple[str, ...] = ()


def gc(repo, *, dry_run: bool = False, progress: Progress | None = None,
       on_wait: Callable[[str], None] | None = None, keep: Iterable[bytes] = ()) -> GcResult:
    """Remove unreachable records, blobs and tmp leftovers; compact sparse packs.

    The roots are those of every provider in ``roots`` (refs, HEAD, the commits
    that live mounts of this repository serve, and any a feature registered);
    ``keep`` adds more commit ids (unknown ids are ignored).

    Error handling: raises ``CorruptObject`` (and removes nothing) when the walk
    from the roots meets a missing or undecodable commit, tree or file record;
    ``LockBusy`` if the roots change under it (a writer that ignored the lock).
    A damaged chunk met while rewriting a pack leaves that pack as it is and adds
    a warning to the result.
    """
    keep = {bytes(k): "kept by the caller" for k in keep}
    if dry_run:
        return _plan_only(repo, progress, keep)
    with repo.lock(on_wait=on_wait):
        return _collect(repo, progress, keep)


# --------------------------------------------------------------------------
# marking


def _mark(repo, txn, progress, keep) -> tuple[dict[bytes, str], reach.Reachable]:
    blocking: list[str] = []

    def report(kind: str, obj: str, message: str) -> None:
        if kind in reach.BLOCKING:
            blocking.append(message)

    found = roots.collect(repo, txn, report)
    root_ids = found.index  # compared again before the sweep; the others are kept
    keep = {k: why for k, why in keep.items() if txn.has("commits", k)}  # gone: nothing to keep
    live = reach.mark(txn, {**found.outside, **keep, **root_ids}, repo.params.threshold,
                      report=report, progress=progress)
    if blocking:
        more = f" (and {len(blocking) - 1} more)" if len(blocking) > 1 else ""
        raise CorruptObject(
            f"gc refused: {blocking[0]}{more}; nothing was removed. Run 'vfs fsck' "
            "to list the damage"
        )
    if progress:
        progress("mark", len(live.trees), len(live.trees))
    return root_ids, live


def _dead_keys(txn, live: reach.Reachable) -> dict[str, list[bytes]]:
    dead = {}
    for db, attr in RECORD_DBS:
        keep = getattr(live, attr)
        dead[db] = [k for k in txn.keys(db) if k not in keep]
    return dead


def _dead_statcache(txn, live: reach.Reachable) -> list[bytes]:
    return [k for k, v in txn.items("statcache") if statcache_file_id(v) not in live.files]


def _dead_dirstate(txn, live: reach.Reachable) -> list[bytes]:
    """Dir states naming a tree gc removes (a scan would not reuse them anyway)."""
    return [k for k, v in txn.items("dirstate") if v[DIRSTATE_TREE] not in live.trees]


def _dead_dircache(txn, live: reach.Reachable) -> list[bytes]:
    """The change journal's directory records whose tree goes (a scan would reuse
    it for an unchanged directory)."""
    return [k for k, v in txn.items("dircache") if v[:32] not in live.trees]


# --------------------------------------------------------------------------
# blobs


@dataclass(slots=True)
class _BlobUse:
    live: dict[tuple[BlobKind, bytes], int]       # blob → bytes its chunks use
    sizes: dict[tuple[BlobKind, bytes], tuple[int, int]]  # blob → (size, allocated)


def _blob_use(repo, txn, keep: Callable[[bytes], bool]) -> _BlobUse:
    live: dict[tuple[BlobKind, bytes], int] = defaultdict(int)
    for cid, raw in txn.items("chunks"):
        if keep(cid):
            loc = decode_chunkloc(raw)
            live[(loc.blob_kind, bytes(loc.blob))] += loc.length
    sizes = {(b.kind, bytes(b.id)): (b.size, b.allocated) for b in repo.store.blobs()}
    return _BlobUse(dict(live), sizes)


def _unused_blobs(use: _BlobUse) -> list[tuple[BlobKind, bytes]]:
    return sorted(b for b in use.sizes if b not in use.live)


def _sparse_packs(use: _BlobUse) -> list[bytes]:
    return sorted(blob for (kind, blob), (size, _) in use.sizes.items()
                  if kind is BlobKind.PACK and (kind, blob) in use.live
                  and use.live[(kind, blob)] < size * REWRITE_BELOW)


def _rewrite_packs(repo, packs: list[bytes], progress) -> tuple[int, int, list[str]]:
    """Move the live chunks of ``packs`` into new packs; returns (packs removed,
    bytes freed, warnings)."""
    if not packs:
        return 0, 0, []
    wanted = set(packs)
    with repo.index.read() as txn:
        moving: dict[bytes, list[tuple[bytes, ChunkLoc]]] = defaultdict(list)
        for cid, raw in txn.items("chunks"):
            loc = decode_chunkloc(raw)
            if loc.blob_kind is BlobKind.PACK and bytes(loc.blob) in wanted:
                moving[bytes(loc.blob)].append((cid, loc))
    writer = repo.store.new_pack()
    new_locs: dict[bytes, tuple[ChunkLoc, ChunkLoc]] = {}
    done: list[bytes] = []
    warnings: list[str] = []
    try:
        for i, pack in enumerate(packs):
            moved = _copy_pack(repo, writer, sorted(moving[pack], key=lambda x: x[1].offset))
            if isinstance(moved, str):
                warnings.append(moved)
            else:
                new_locs.update(moved)
                done.append(pack)
            if progress:
                progress("rewrite packs", i + 1, len(packs))
        writer.finish()  # new packs durable and in place before any location moves
    except BaseException:
        writer.abort()
        raise
    with repo.index.write() as txn:
        for cid, (old, new) in new_locs.items():
            if txn.chunk_loc(cid) == old:
                txn.put_chunk_loc(cid, new)
    freed = sum(repo.store.remove(BlobKind.PACK, p) for p in done)
    return len(done), freed - writer.bytes_written, warnings


def _copy_pack(repo, writer, chunks) -> dict | str:
    """Copy a sparse pack's live chunks to ``writer``; each is verified first, and a
    pack with a damaged chunk is left whole (nothing of it is copied)."""
    datas = []
    for cid, loc in chunks:  # live bytes are under half a pack: at most ~34 MiB
        try:
            datas.append(repo.reader.read_at(cid, loc))
        except VfsError as exc:  # damaged or missing: keep the old pack as it is
            return f"pack {loc.blob.short} was not rewritten: {exc}"
    return {cid: (loc, writer.add(data)) for (cid, loc), data in zip(chunks, datas)}


# --------------------------------------------------------------------------
# tmp/


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tmp_leftovers(repo) -> list[tuple[str, int]]:
    """Entries of tmp/ whose writer is gone: ``tag-PID-random`` names whose process
    no longer exists, and any name without a pid."""
    out = []
    for name, path in repo.store.leftovers():
        parts = name.split("-")
        pid = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        out.append((path, st.st_blocks * 512))
    return out


def _remove_tmp(leftovers) -> int:
    freed = 0
    for path, size in leftovers:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            freed += size
        except FileNotFoundError:
            continue
    return freed


# --------------------------------------------------------------------------
# the two modes


def _plan_only(repo, progress, keep) -> GcResult:
    with repo.index.read() as txn:
        _, live = _mark(repo, txn, progress, keep)
        dead = _dead_keys(txn, live)
        stale = _dead_statcache(txn, live)
        use = _blob_use(repo, txn, live.chunks.__contains__)
    unused = _unused_blobs(use)
    sparse = _sparse_packs(use)
    tmp = _tmp_leftovers(repo)
    freed = sum(use.sizes[b][1] for b in unused) + sum(size for _, size in tmp)
    freed += sum(use.sizes[(BlobKind.PACK, p)][0] - use.live[(BlobKind.PACK, p)]
                 for p in sparse)
    return GcResult(
        commits=len(dead["commits"]), trees=len(dead["trees"]), files=len(dead["files"]),
        chunks=len(dead["chunks"]), statcache=len(stale), blobs=len(unused),
        packs_rewritten=len(sparse), tmp_files=len(tmp), bytes_freed=freed, dry_run=True,
    )


def _collect(repo, progress, keep) -> GcResult:
    with repo.index.read() as txn:
        root_ids, live = _mark(repo, txn, progress, keep)
    with repo.index.write() as txn:
        if roots.index_roots(repo, txn) != root_ids:
            raise LockBusy("the repository's refs changed while gc ran (a writer that "
                           "does not take the lock?); nothing was removed, retry")
        dead = _dead_keys(txn, live)
        stale = _dead_statcache(txn, live)
        for db, keys in dead.items():
            for key in keys:
                txn.delete(db, key)
        for key in stale:
            txn.delete("statcache", key)
        for key in _dead_dirstate(txn, live):
            txn.delete("dirstate", key)
        for key in _dead_dircache(txn, live):
            txn.delete("dircache", key)
        for key in [k for k in txn.keys(blocks.DB) if k not in live.chunks]:
            txn.delete(blocks.DB, key)
    if progress:
        progress("sweep", 1, 1)
    # Records are gone (committed); blobs only they pointed into can go now.
    with repo.index.read() as txn:
        use = _blob_use(repo, txn, lambda _cid: True)
    freed = 0
    unused = _unused_blobs(use)
    for i, (kind, blob) in enumerate(unused):
        freed += repo.store.remove(kind, blob)
        if progress:
            progress("remove blobs", i + 1, len(unused))
    rewritten, rfreed, warnings = _rewrite_packs(repo, _sparse_packs(use), progress)
    tmp = _tmp_leftovers(repo)
    freed += rfreed + _remove_tmp(tmp)
    return GcResult(
        commits=len(dead["commits"]), trees=len(dead["trees"]), files=len(dead["files"]),
        chunks=len(dead["chunks"]), statcache=len(stale), blobs=len(unused),
        packs_rewritten=rewritten, tmp_files=len(tmp), bytes_freed=max(freed, 0),
        warnings=tuple(warnings),
    )
