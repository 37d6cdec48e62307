"""Consistency check: find and name every damaged or missing object.

``fsck`` checks, in one read transaction, that every root (the providers of
``roots``: refs, HEAD, live mounts, ...) names a decodable commit; that commits' trees and parents exist; that trees decode (unsafe names such as
``..`` are reported, not followed), are sorted and hold sane entries; that every file
entry's record and chunks exist; that every chunk location points into an existing
blob and fits inside it; that block hash entries fit their chunks; and that
statcache entries name data that exists. With ``verify_data`` it also re-hashes
every chunk the index knows (reading each blob in offset order, a few blobs at a
time) and each of its 16 KiB blocks against its block hash, and checks every record
against the hash of its stored encoding. Problems name the object (chunk, blob, record) and, for data,
the commits and paths that use it. Unreferenced blobs, tmp/ leftovers and unreachable
records are notes: harmless, and ``vfs gc`` removes them.

Thread-safety: read-only and lock-free; safe beside readers and a writer (a concurrent
snapshot can at worst produce a note about a blob it has not referenced yet).
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import reach, roots
from ..errors import CorruptObject, VfsError
from ..records.hashing import BLOCK_DIGEST, BLOCK_SHIFT, block_hashes, hash_bytes
from ..records.model import BlobKind, ChunkLoc, ObjectId, commit_id, decode_chunkloc, file_id, tree_id
from .reach import Progress, statcache_file_id
from ..repo.repository import FORMAT_VERSION
from ..store import blocks

__all__ = ["FsckCounts", "FsckResult", "Problem", "fsck"]

_VERIFY_BATCH = 64 << 20
_VERIFY_THREADS = 4
_SHOW = 3  # how many chunk ids / users a message lists


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: its kind (``ref``, ``head``, ``commit``, ``tree``, ``file``,
    ``entry``, ``chunk``, ``blocks``, ``blob``, ``record``, ``statcache``,
    ``format``; notes use ``unreferenced-blob``, ``tmp``, ``unreachable``), the
    object it is about (hex id, ref name or path) and a sentence for a human."""

    kind: str
    object: str
    message: str


@dataclass(frozen=True, slots=True)
class FsckCounts:
    commits: int = 0
    trees: int = 0
    files: int = 0
    chunks: int = 0
    blobs: int = 0
    bytes_verified: int = 0


@dataclass(frozen=True, slots=True)
class FsckResult:
    problems: tuple[Problem, ...]
    notes: tuple[Problem, ...]
    checked: FsckCounts
    verified: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(slots=True)
class _Damage:
    """Chunk-level damage found after the walk, reported once users are known."""

    chunks: dict[bytes, tuple[ChunkLoc | None, str]] = field(default_factory=dict)
    blocks: dict[bytes, tuple[ChunkLoc, str]] = field(default_factory=dict)
    missing_blobs: dict[tuple[BlobKind, bytes], list[bytes]] = field(
        default_factory=lambda: defaultdict(list))


def fsck(repo, *, verify_data: bool = False, progress: Progress | None = None) -> FsckResult:
    """Check the repository; never raises for damage, returns it as problems.

    ``progress(phase, done, total)`` is called now and then (total may be None).
    """
    problems: list[Problem] = []
    notes: list[Problem] = []

    def report(kind: str, obj: str, message: str) -> None:
        problems.append(Problem(kind, obj, message))

    blobs = _blob_sizes(repo)
    damage = _Damage()
    with repo.index.read() as txn:
        _check_format(txn, report)
        root_ids = roots.collect(repo, txn, report).all
        live = reach.mark(txn, root_ids, repo.params.threshold, report=report,
                          progress=progress)
        locs, used_blobs = _check_locations(txn, blobs, damage)
        notes += _check_blocks(txn, damage)
        _check_statcache(txn, report)
        notes += _unreachable_notes(txn, live)
        if verify_data:
            _verify_records(txn, report, progress)
    verified = 0
    if verify_data:
        verified = _verify_chunks(repo, locs, damage, progress)
    if damage.chunks or damage.blocks or damage.missing_blobs:
        with repo.index.read() as txn:
            bad = set(damage.chunks) | set(damage.blocks) | \
                {c for cs in damage.missing_blobs.values() for c in cs}
            users = reach.users_of(txn, root_ids, bad, repo.params.threshold, limit=_SHOW)
        problems += _damage_problems(damage, users)
    notes += _blob_notes(repo, blobs, used_blobs)
    counts = FsckCounts(len(live.commits), len(live.trees), len(live.files),
                        len(locs), len(blobs), verified)
    return FsckResult(tuple(problems), tuple(notes), counts, verify_data)


# --------------------------------------------------------------------------
# structure


def _check_format(txn, report) -> None:
    fmt = txn.meta("format")
    if fmt != str(FORMAT_VERSION).encode():
        report("format", "meta/format",
               f"the index says format {fmt!r}, expected {FORMAT_VERSION}")


def _blob_sizes(repo) -> dict[tuple[BlobKind, bytes], int]:
    return {(b.kind, bytes(b.id)): b.size for b in repo.store.blobs()}


def _check_locations(txn, blobs, damage: _Damage):
    """Every chunk location must point inside an existing blob. Returns the
    decodable locations and the set of blobs they use."""
    locs: list[tuple[bytes, ChunkLoc]] = []
    used: set[tuple[BlobKind, bytes]] = set()
    for cid, raw in txn.items("chunks"):
        try:
            loc = decode_chunkloc(raw)
        except (CorruptObject, ValueError):
            damage.chunks[cid] = (None, "has a malformed location record")
            continue
        key = (loc.blob_kind, bytes(loc.blob))
        used.add(key)
        size = blobs.get(key)
        if size is None:
            damage.missing_blobs[key].append(cid)
            continue
        if loc.offset + loc.length > size:
            damage.chunks[cid] = (loc, f"lies at {loc.offset}+{loc.length}, past the end "
                                  f"of {_blob_name(loc.blob_kind, loc.blob)} ({size} bytes)")
            continue
        locs.append((cid, loc))
    return locs, used


def _check_blocks(txn, damage: _Damage) -> list[Problem]:
    """Every block hash entry must fit its chunk (``store.blocks``); entries whose
    chunk is gone are a note (a mount may record one as gc deletes its chunk)."""
    orphans = 0
    for cid, raw in txn.items(blocks.DB):
        if cid in damage.chunks:
            continue  # its location is malformed: reported already
        loc = txn.chunk_loc(cid)
        if loc is None:
            orphans += 1
            continue
        why = blocks.problem(raw, loc.length)
        if why is not None:
            damage.blocks[cid] = (loc, f"has a block hash entry that {why}")
    if not orphans:
        return []
    return [Problem("unreachable", blocks.DB, f"{orphans} block hash entries name "
                    "chunks the repository no longer has; 'vfs gc' removes them")]


def _check_statcache(txn, report) -> None:
    for path, value in txn.items("statcache"):
        shown = path.decode("utf-8", "replace")
        fid = statcache_file_id(value)
        if fid is None:
            report("statcache", shown, f"statcache entry {shown!r} is malformed")
        elif fid != reach.EMPTY_ID and not txn.has("files", fid) and \
                not txn.has("chunks", fid):
            report("statcache", shown,
                   f"statcache entry {shown!r} names file {ObjectId(fid).short}, whose "
                   "data is not in the repository; 'vfs gc' drops such entries")


def _unreachable_notes(txn, live) -> list[Problem]:
    out = []
    for db, keep in (("commits", live.commits), ("trees", live.trees),
                     ("files", live.records), ("chunks", live.chunks)):
        n = sum(1 for k in txn.keys(db) if k not in keep)
        if n:
            out.append(Problem("unreachable", db, f"{n} {db} records are unreachable "
                               "from any ref; 'vfs gc' removes them"))
    return out


def _blob_notes(repo, blobs, used) -> list[Problem]:
    out = [Problem("unreferenced-blob", blob.hex(),
                   f"{_blob_name(kind, blob)} is not referenced by any chunk; "
                   "'vfs gc' removes it")
           for kind, blob in sorted(blobs) if (kind, blob) not in used]
    leftovers = [name for name, _ in repo.store.leftovers()]
    out += [Problem("tmp", name, f"tmp/{name} is a leftover of an interrupted write; "
                    "'vfs gc' removes it") for name in leftovers]
    return out


# --------------------------------------------------------------------------
# data


def _verify_records(txn, report, progress) -> None:
    checks = (("commits", "commit", commit_id), ("trees", "tree", tree_id),
              ("files", "file record", file_id))
    for db, what, make_id in checks:
        for n, (key, raw) in enumerate(txn.items(db)):
            if make_id(raw) != key:
                report("record", key.hex(), f"{what} {ObjectId(key).short} is damaged: "
                       "its stored encoding does not hash to its id")
            if progress and n % 10000 == 0:
                progress(f"verify {db}", n, None)


def _batches(locs: list[tuple[bytes, ChunkLoc]]) -> list[list[tuple[bytes, ChunkLoc]]]:
    """Chunks grouped by blob in offset order, cut into batches of about 64 MiB."""
    ordered = sorted(locs, key=lambda x: (x[1].blob_kind, x[1].blob, x[1].offset))
    out: list[list] = []
    size = 0
    for cid, loc in ordered:
        if not out or size >= _VERIFY_BATCH or out[-1][-1][1].blob != loc.blob:
            out.append([])
            size = 0
        out[-1].append((cid, loc))
        size += loc.length
    return out


def _verify_batch(repo, batch) -> tuple[list, list]:
    """(damaged chunks, chunks whose block hashes do not match their bytes), each
    as ``(chunk id, location, why)``."""
    bad, bad_blocks = [], []
    with repo.index.read() as txn:
        entries = {cid: txn.get(blocks.DB, cid) for cid, _ in batch}
    for cid, loc in batch:
        try:
            data = repo.store.load(loc)
        except VfsError as exc:
            bad.append((cid, loc, f"cannot be read ({exc})"))
            continue
        except OSError as exc:
            bad.append((cid, loc, f"cannot be read ({exc.strerror or exc})"))
            continue
        if hash_bytes(data) != cid:
            bad.append((cid, loc, "is damaged: its bytes do not match its id"))
            continue
        why = _blocks_mismatch(entries[cid], data)
        if why is not None:
            bad_blocks.append((cid, loc, why))
    return bad, bad_blocks


def _blocks_mismatch(raw: bytes | None, data: bytes) -> str | None:
    """Why the block hash entry ``raw`` disagrees with a chunk's (verified) bytes."""
    if raw is None or blocks.problem(raw, len(data)) is not None:
        return None  # none, or malformed (reported by the structure check)
    want, have = blocks.decode(raw), block_hashes(data)
    if want is None or want == have:
        return None
    k = next(i for i in range(len(have) // BLOCK_DIGEST)
             if have[i * BLOCK_DIGEST:(i + 1) * BLOCK_DIGEST] !=
             want[i * BLOCK_DIGEST:(i + 1) * BLOCK_DIGEST])
    return (f"matches its id, but its block hash for bytes {k << BLOCK_SHIFT}-"
            f"{min((k + 1) << BLOCK_SHIFT, len(data))} does not")


def _verify_chunks(repo, locs, damage: _Damage, progress) -> int:
    batches = _batches(locs)
    total = sum(loc.length for _, loc in locs)
    done = 0
    with ThreadPoolExecutor(max_workers=_VERIFY_THREADS) as pool:
        for batch, (bad, bad_blocks) in zip(
                batches, pool.map(lambda b: _verify_batch(repo, b), batches)):
            for cid, loc, why in bad:
                damage.chunks[cid] = (loc, why)
            for cid, loc, why in bad_blocks:
                damage.blocks[cid] = (loc, why)
            done += sum(loc.length for _, loc in batch)
            if progress:
                progress("verify data", done, total)
    return done


def _blob_name(kind: BlobKind, blob: bytes) -> str:
    return f"{'pack' if kind is BlobKind.PACK else 'object'} {ObjectId(blob).short}"


def _used_by(ids, users) -> str:
    places = []
    for i in ids:
        places += [p for p in users.get(i, ()) if p not in places]
    if not places:
        return "not used by any commit ('vfs gc' removes it)"
    more = ", …" if len(places) > _SHOW else ""
    return "used by " + ", ".join(places[:_SHOW]) + more


def _damage_problems(damage: _Damage, users) -> list[Problem]:
    out = []
    for (kind, blob), cids in sorted(damage.missing_blobs.items()):
        shown = ", ".join(ObjectId(c).short for c in cids[:_SHOW])
        more = ", …" if len(cids) > _SHOW else ""
        out.append(Problem("blob", blob.hex(),
                           f"{_blob_name(kind, blob)} is missing; {len(cids)} chunk(s) point "
                           f"into it ({shown}{more}), {_used_by(cids, users)}"))
    for cid, (loc, why) in sorted(damage.chunks.items()):
        where = f" at offset {loc.offset} in {_blob_name(loc.blob_kind, loc.blob)}" \
            if loc else ""
        out.append(Problem("chunk", cid.hex(), f"chunk {ObjectId(cid).short}{where} {why}; "
                           f"{_used_by([cid], users)}"))
    for cid, (loc, why) in sorted(damage.blocks.items()):
        out.append(Problem(
            "blocks", cid.hex(),
            f"chunk {ObjectId(cid).short} at offset {loc.offset} in "
            f"{_blob_name(loc.blob_kind, loc.blob)} {why}: the index is damaged (reads "
            "of the chunk fall back to verifying it whole, so they still return right "
            f"bytes); {_used_by([cid], users)}"))
    return out
