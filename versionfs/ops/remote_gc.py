"""``vfs gc --remote NAME``: delete what no ref of a remote reaches, without racing a push.

Live: every commit, tree, file record and chunk the remote's refs reach, and every
run record with the commits it names (a run record is a root, as locally). Dead:
packs none of whose chunks is live (also orphans of a killed push, which no index
names), and records nothing live reaches.

A push uploads packs, index, records, and only then moves a ref, so a dead-looking
object may be part of a push under way. gc therefore deletes only what it found
dead at least ``grace`` seconds earlier too: the first run *condemns* (writes
``gc/condemned``: name → when first found dead), a later run deletes what is still
condemned and still dead after the grace. Deleting goes: write one consolidated
index file (every pack that stays) and one consolidated record bundle (every record
that stays), then delete the dead packs, then the index and record files that the
consolidated ones replace (only those this run listed: newer ones are left alone).
A push that relied on a removed file notices (its state starts over when a file it
had seen is gone) and sends what went before it moves its refs.

Holds the remote's ``locks/gc`` lease lock, so two gcs never run at once.
Thread-safety: one call at a time per remote.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgpack

from ..errors import CorruptObject
from ..records import runs as rr
from ..remote import config as rconfig
from ..remote import layout
from ..remote import refs as rrefs
from ..remote.plan import missing
from ..remote.state import RemoteState
from ..repo.repository import Repo
from .remote import open_backend

CONDEMNED = "gc/condemned"
GC_LOCK = "locks/gc"
DEFAULT_GRACE = 3600.0


@dataclass(frozen=True, slots=True)
class RemoteGcResult:
    remote: str
    packs_deleted: int
    bytes_freed: int
    records_dropped: int
    files_replaced: int
    condemned: int          # dead, waiting out the grace
    kept_packs: int
    dry_run: bool

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


def gc_remote(repo: Repo, name: str | None = None, *, grace: float = DEFAULT_GRACE,
              dry_run: bool = False, now: float | None = None) -> RemoteGcResult:
    conf = rconfig.get(repo.vfs_dir, name)
    backend = open_backend(conf)
    now = time.time() if now is None else now
    try:
        with backend.locked(GC_LOCK), \
                RemoteState(rconfig.state_path(repo.vfs_dir, conf.name)) as state:
            return _collect(conf, backend, state, grace, dry_run, now)
    finally:
        backend.close()


def _collect(conf, backend, state: RemoteState, grace, dry_run, now) -> RemoteGcResult:
    state.sync(backend)
    listed_files = [n for n, _ in backend.list(layout.INDEX) + backend.list(layout.RECORDS)
                    if layout.name_id(n) is not None]
    packs_listed = {n: size for n, size in backend.list(layout.PACKS)
                    if layout.name_id(n) is not None}
    remote_refs = rrefs.list_refs(backend)
    with state.view() as sv:
        roots = [bytes(c) for c in remote_refs.values()]
        records = {kind: dict(sv.records(kind)) for kind in ("commits", "trees", "files",
                                                               "runs")}
        for rid, raw in records["runs"].items():
            try:
                roots += [bytes.fromhex(c) for c in rr.decode_run(rid, raw).commits()]
            except CorruptObject:
                continue
        roots = [c for c in roots if c in records["commits"]]
        live = missing(roots, sv.get, lambda k, i: False)
    chunks_of = state.pack_entries()
    live_chunks = live.chunks
    dead_packs = [n for n in packs_listed
                  if not any(e.cid in live_chunks for e in chunks_of.get(layout.name_id(n), ()))]
    dead_records = [f"{kind}:{oid.hex()}" for kind in ("commits", "trees", "files")
                    for oid in records[kind] if oid not in live.records[kind]]
    condemned = _read_condemned(backend)
    ripe = {n for n in dead_packs + dead_records
            if n in condemned and now - condemned[n] >= grace}
    waiting = {n: condemned.get(n, now) for n in dead_packs + dead_records if n not in ripe}
    gone_packs = [n for n in dead_packs if n in ripe]
    gone_records = {n for n in dead_records if n in ripe}
    freed = sum(packs_listed[n] for n in gone_packs)
    replaced = 0
    if not dry_run:
        if ripe:
            replaced = _consolidate(backend, state, records, gone_records, chunks_of,
                                    packs_listed, set(gone_packs), listed_files)
        backend.write_if(CONDEMNED, msgpack.packb(waiting), _tag(backend, CONDEMNED))
    return RemoteGcResult(conf.name, len(gone_packs), freed, len(gone_records), replaced,
                          len(waiting), len(packs_listed) - len(gone_packs), dry_run)


def _consolidate(backend, state, records, gone_records, chunks_of, packs_listed,
                 gone_packs, listed_files) -> int:
    keep_packs = {}
    for name, size in packs_listed.items():
        pid = layout.name_id(name)
        if name not in gone_packs and pid in chunks_of:
            keep_packs[pid] = (size, chunks_of[pid])
    index = layout.encode_index(keep_packs)
    bundle = layout.encode_records({
        kind: [(oid, enc) for oid, enc in recs.items()
               if f"{kind}:{oid.hex()}" not in gone_records]
        for kind, recs in records.items()})
    index_name = layout.index_name(layout.content_id(index))
    bundle_name = layout.records_name(layout.content_id(bundle))
    backend.write(index_name, index)
    backend.write(bundle_name, bundle)
    for name in sorted(gone_packs):
        backend.delete(name)
    replaced = 0
    for name in listed_files:
        if name not in (index_name, bundle_name):
            backend.delete(name)
            replaced += 1
    state.sync(backend)   # starts over: its files are gone
    return replaced


def _read_condemned(backend) -> dict[str, float]:
    got = backend.read_tagged(CONDEMNED)
    if got is None:
        return {}
    try:
        return {str(k): float(v) for k, v in msgpack.unpackb(got[0], raw=False).items()}
    except (ValueError, TypeError, AttributeError, msgpack.UnpackException):
        return {}


def _tag(backend, name: str) -> str | None:
    got = backend.read_tagged(name)
    return None if got is None else got[1]

