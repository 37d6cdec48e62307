"""Remotes as verbs: add, list and remove them; push, fetch, pull and clone.

Each verb works from the remote's local state (``remote.state``, synced first: two
listings and the files not seen before), so deciding what to move costs no request
per chunk or record, and a push with nothing new makes a handful of requests.

**Push** walks the commits to send down to what the remote holds (``remote.plan``),
then uploads in the order that keeps the remote consistent however it is
interrupted: packs, then the index file naming them, then the record bundle, then
the refs (compare-and-swap, ``remote.refs``). Run records go along when every commit
they name is on the remote. Running a killed push again completes it.

**Fetch** brings every remote branch (as ``remotes/NAME/BRANCH``) and tag, with the
records and chunks they reach and the run records whose commits arrive; **pull**
fetches one branch (or tag, or commit) and fast-forwards the current branch to it,
updating the workspace in the same step as ``checkout`` does. Fetched data is
written like a snapshot: packs durable first, then one index transaction with the
chunk locations, records, run records and refs. Every chunk and record is checked
against its id before it is stored.

Thread-safety: one verb at a time per repository for the writing ones (they take
the repository lock to commit).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import (
    RemoteCorrupt, RemoteMissing, RemoteRejected,
    UnknownRevision, UsageError,
)
from ..records import runs as rr
from ..records.hashing import BLOCK_SIZE, block_hashes
from ..records.model import ObjectId
from ..remote import config as rconfig
from ..remote import layout
from ..remote import refs as rrefs
from ..remote.plan import carried_runs, check_records, missing
from ..remote.state import RemoteState
from ..remote.transfer import download, upload
from ..repo import refs
from ..repo.repository import Repo
from ..store import blocks
from .checkout import checkout
from .reach import ancestors
from .run import put_record

Warn = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


# -- configuration ---------------------------------------------------------------------


def open_backend(conf: rconfig.RemoteConfig):
    from ..remote.backend import Backend
    return Backend(conf.url, conf.options)


def add_remote(repo: Repo, name: str, url: str, options: dict[str, str] | None = None,
               *, on_wait=None) -> rconfig.RemoteConfig:
    """Add remote ``name``: checks the URL answers, that it holds a versionfs remote of
    our format or nothing (then marks it as one), and which compare-and-swap the store
    honours."""
    rconfig.check_name(name)
    options = dict(options or {})
    rconfig.check_options(options)
    with repo.lock(on_wait=on_wait):
        remotes = rconfig.load(repo.vfs_dir)
        if name in remotes:
            raise UsageError(f"remote {name!r} exists already ({remotes[name].url}); "
                             f"'vfs remote remove {name}' first to change it")
        backend = open_backend(rconfig.RemoteConfig(name, url, options))
        try:
            cas = backend.probe_cas()
            _ensure_format(backend, repo)
        finally:
            backend.close()
        conf = rconfig.RemoteConfig(name, backend.url, options, cas)
        remotes[name] = conf
        rconfig.save(repo.vfs_dir, remotes)
    return conf


def remove_remote(repo: Repo, name: str, *, on_wait=None) -> rconfig.RemoteConfig:
    """Forget remote ``name``, its local state and its ``remotes/NAME/`` refs (the
    remote itself is not touched)."""
    import shutil
    with repo.lock(on_wait=on_wait):
        remotes = rconfig.load(repo.vfs_dir)
        conf = rconfig.get(repo.vfs_dir, name)
        del remotes[name]
        rconfig.save(repo.vfs_dir, remotes)
        with repo.index.write() as txn:
            for ref in list(refs.list_refs(txn, f"{refs.REMOTE_PREFIX}{name}/")):
                refs.delete_ref(txn, ref, expect=refs.ANY)
        shutil.rmtree(os.path.dirname(rconfig.state_path(repo.vfs_dir, name)),
                      ignore_errors=True)
    return conf


def list_remotes(repo: Repo) -> list[rconfig.RemoteConfig]:
    return [r for _, r in sorted(rconfig.load(repo.vfs_dir).items())]


def _ensure_format(backend, repo: Repo) -> None:
    """The remote's ``versionfs.toml`` must be ours; an empty remote gets one."""
    try:
        layout.decode_format(backend.read(layout.FORMAT_FILE))
    except RemoteMissing:
        if backend.list(layout.REFS) or backend.list(layout.PACKS):
            raise RemoteCorrupt(f"{backend.url} holds versionfs objects but no "
                                f"{layout.FORMAT_FILE}; it is damaged") from None
        backend.write_if(layout.FORMAT_FILE, layout.encode_format(repo.params), None)


def _state(repo: Repo, name: str) -> RemoteState:
    return RemoteState(rconfig.state_path(repo.vfs_dir, name))


# -- push ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefUpdate:
    ref: str               # heads/main, tags/v1
    old: str | None        # hex, None when the remote had none
    new: str
    status: str            # "updated", "created", "up to date", "forced"

    def to_dict(self) -> dict:
        return {"ref": self.ref, "old": self.old, "new": self.new, "status": self.status}


@dataclass(frozen=True, slots=True)
class TransferResult:
    remote: str
    url: str
    refs: tuple[RefUpdate, ...]
    commits: int
    records: int
    chunks: int
    bytes: int             # chunk bytes moved
    packs: int
    runs: int
    seconds: float
    checkout: dict | None = None

    def to_dict(self) -> dict:
        return {"remote": self.remote, "url": self.url,
                "refs": [r.to_dict() for r in self.refs], "commits": self.commits,
                "records": self.records, "chunks": self.chunks, "bytes": self.bytes,
                "packs": self.packs, "runs": self.runs, "seconds": round(self.seconds, 3),
                "checkout": self.checkout}


def _local_refs_to_push(repo: Repo, revs: list[str] | None, all_refs: bool) -> dict[str, bytes]:
    with repo.index.read() as txn:
        local = refs.list_refs(txn)
        head = refs.read_head(txn)
    if all_refs:
        out = {r: bytes(c) for r, c in local.items()
               if r.startswith((refs.BRANCH_PREFIX, refs.TAG_PREFIX))}
        if not out:
            raise UsageError("nothing to push: this repository has no branch or tag yet")
        return out
    if not revs:
        if head.branch is None:
            raise UsageError("HEAD is not on a branch; name the branch or tag to push "
                             "(vfs push REMOTE NAME)")
        revs = [refs.short_name(head.branch)]
    out = {}
    for rev in revs:
        for ref in ((rev,) if rev.startswith((refs.BRANCH_PREFIX, refs.TAG_PREFIX))
                    else (refs.BRANCH_PREFIX + rev, refs.TAG_PREFIX + rev)):
            if ref in local:
                out[ref] = bytes(local[ref])
                break
        else:
            if rev == "HEAD" and head.branch in local:
                out[head.branch] = bytes(local[head.branch])
                continue
            raise UnknownRevision(f"no branch or tag named {rev!r} here to push; "
                                  "'vfs branch' and 'vfs tag' list them")
    return out


def push(repo: Repo, remote: str | None = None, revs: list[str] | None = None, *,
         all_refs: bool = False, force: bool = False, progress_factory=None,
         warn: Warn = _quiet, workers: int = 4) -> TransferResult:
    """Send branches and tags (default: the current branch) and what they reach."""
    t0 = time.monotonic()
    conf = rconfig.get(repo.vfs_dir, remote)
    to_push = _local_refs_to_push(repo, revs, all_refs)
    backend = open_backend(conf)
    try:
        with _state(repo, conf.name) as state:
            state.sync(backend)
            if not state.counts()["files"]:
                _ensure_format(backend, repo)
            current = _refuse_early(repo, backend, conf, to_push, force)
            sent = _Sent()
            for _ in range(_RESEND_TRIES):
                before = sent.records + sent.chunks
                _send(repo, backend, state, to_push, sent, progress_factory, workers)
                if sent.records + sent.chunks == before and current == to_push:
                    break   # nothing sent, every ref already there: nothing relied on
                # a remote gc may have consolidated files this push relied on while
                # it ran: then the state starts over and what went is sent again
                if not state.sync(backend) or not state.was_reset:
                    break
            updates = _move_remote_refs(repo, backend, conf, to_push, force)
        _track(repo, conf.name, {u.ref: bytes.fromhex(u.new) for u in updates})
        if any(r.startswith(refs.BRANCH_PREFIX) for r in to_push) and \
                backend.size(layout.HEAD_FILE) is None:
            first = sorted(r for r in to_push if r.startswith(refs.BRANCH_PREFIX))[0]
            backend.write_if(layout.HEAD_FILE, (first + "\n").encode(), None)
    finally:
        backend.close()
    return TransferResult(conf.name, conf.url, tuple(updates), sent.commits, sent.records,
                          sent.chunks, sent.bytes, sent.packs, sent.runs,
                          time.monotonic() - t0)


_RESEND_TRIES = 3


@dataclass(slots=True)
class _Sent:
    commits: int = 0
    records: int = 0
    chunks: int = 0
    bytes: int = 0
    packs: int = 0
    runs: int = 0


def _send(repo: Repo, backend, state: RemoteState, to_push: dict[str, bytes], sent: _Sent,
          progress_factory, workers: int) -> None:
    """Upload what the remote lacks for ``to_push``: packs, their index file, the
    record bundle (in that order)."""
    with repo.index.read() as txn, state.view() as sv:
        plan = missing(to_push.values(), lambda k, i: txn.get(k, i), sv.known)
        runs = carried_runs(txn.items("runs"), lambda r: sv.known("runs", r),
                            lambda c: sv.known("commits", c), plan)
        chunks = [(c, n) for c, n in plan.chunks.items() if not sv.has_chunk(c)]
    plan.records["runs"].update(runs)
    total = sum(n for _, n in chunks)
    bar = progress_factory(total) if progress_factory and total else None
    try:
        packs = upload(backend, chunks, lambda c: repo.reader.read(c, own_thread=True),
                       progress=bar, workers=workers) if chunks else {}
    finally:
        if bar is not None:
            bar.close()
    if packs:
        data = layout.encode_index(packs)
        name = layout.index_name(layout.content_id(data))
        backend.write(name, data)
        state.add_packs(packs, name)
    if plan.count():
        data = layout.encode_records({k: list(v.items()) for k, v in plan.records.items()})
        name = layout.records_name(layout.content_id(data))
        backend.write(name, data)
        state.add_records(plan.records, name)
    sent.commits += len(plan.records["commits"])
    sent.records += plan.count()
    sent.chunks += len(chunks)
    sent.bytes += total
    sent.packs += len(packs)
    sent.runs += len(runs)


def _refuse_early(repo: Repo, backend, conf, to_push: dict[str, bytes],
                  force: bool) -> dict[str, bytes]:
    """Refuse a push that cannot land before uploading anything for it (the move
    itself decides again, by compare-and-swap, at the end). Returns the refs the
    remote already holds at the pushed commit."""
    same = {}
    for ref, new in sorted(to_push.items()):
        old = rrefs.read_ref(backend, ref)
        if old is not None and bytes(old) == new:
            same[ref] = new
        elif old is not None:
            _decider(repo, conf, ref, new, force, {})(old)
    return same


def _decider(repo: Repo, conf, ref: str, new: bytes, force: bool, status: dict):
    """``decide(old)`` for moving remote ``ref`` from ``old`` to ``new``: raises
    ``RemoteRejected`` when that would drop commits; notes what it did in ``status``."""
    def decide(old):
        if old is None:
            status["s"] = "created"
            return
        if force:
            status["s"] = "forced"
            return
        if ref.startswith(refs.TAG_PREFIX):
            raise RemoteRejected(
                f"tag {refs.short_name(ref)} is at {old.short} on {conf.name}, here at "
                f"{ObjectId(new).short}; tags do not move: push --force to move it")
        with repo.index.read() as txn:
            if txn.get("commits", bytes(old)) is None:
                raise RemoteRejected(
                    f"{conf.name} has {refs.short_name(ref)} at {old.short}, a commit "
                    "this repository does not have: 'vfs pull' first, or push "
                    "--force to drop the remote's commits")
            if bytes(old) not in ancestors(txn, [new]):
                raise RemoteRejected(
                    f"{conf.name}'s {refs.short_name(ref)} ({old.short}) is not an "
                    f"ancestor of {ObjectId(new).short}: the push would drop its "
                    "commits; 'vfs pull' first, or push --force")
        status["s"] = "updated"
    return decide


def _move_remote_refs(repo: Repo, backend, conf, to_push: dict[str, bytes],
                      force: bool) -> list[RefUpdate]:
    out = []
    for ref, new in sorted(to_push.items()):
        status: dict = {}
        decide = _decider(repo, conf, ref, new, force, status)
        old = rrefs.move_ref(backend, ref, new, decide, cas=conf.cas)
        s = "up to date" if old is not None and bytes(old) == new else status.get("s", "updated")
        out.append(RefUpdate(ref, None if old is None else old.hex(), new.hex(), s))
    return out


def _track(repo: Repo, remote: str, remote_refs: dict[str, bytes]) -> None:
    """Remember where the remote's branches are: ``remotes/NAME/BRANCH``."""
    heads = {f"{refs.REMOTE_PREFIX}{remote}/{refs.short_name(r)}": c
             for r, c in remote_refs.items() if r.startswith(refs.BRANCH_PREFIX)}
    if not heads:
        return
    with repo.lock():
        with repo.index.write() as txn:
            for ref, cid in heads.items():
                refs.set_ref(txn, ref, cid, expect=refs.ANY)


# -- fetch and pull ---------------------------------------------------------------------


def fetch(repo: Repo, remote: str | None = None, *, progress_factory=None,
          warn: Warn = _quiet, workers: int = 8) -> TransferResult:
    """Bring every branch (as ``remotes/NAME/BRANCH``) and tag of the remote, with
    what they reach."""
    t0 = time.monotonic()
    conf = rconfig.get(repo.vfs_dir, remote)
    backend = open_backend(conf)
    try:
        with _state(repo, conf.name) as state:
            state.sync(backend)
            remote_refs = rrefs.list_refs(backend)
            wanted = {r: bytes(c) for r, c in remote_refs.items()}
            res = _bring(repo, conf, backend, state, wanted, progress_factory, warn, workers)
    finally:
        backend.close()
    updates = tuple(RefUpdate(r, None, c.hex(), "fetched") for r, c in sorted(wanted.items()))
    return TransferResult(conf.name, conf.url, updates, *res, time.monotonic() - t0)


def pull(repo: Repo, remote: str | None = None, rev: str | None = None, *,
         progress_factory=None, warn: Warn = _quiet, workers: int = 8,
         on_wait=None) -> TransferResult:
    """Fetch one branch (default: the one named like the current branch), tag or
    commit of the remote and fast-forward the current branch (and the workspace) to
    it."""
    t0 = time.monotonic()
    conf = rconfig.get(repo.vfs_dir, remote)
    with repo.index.read() as txn:
        head = refs.read_head(txn)
        local = refs.head_commit(txn, head)
    backend = open_backend(conf)
    try:
        with _state(repo, conf.name) as state:
            state.sync(backend)
            ref, target = _remote_rev(backend, state, conf, rev, head)
            res = _bring(repo, conf, backend, state, {ref: target} if ref else {},
                         progress_factory, warn, workers, extra=[target])
    finally:
        backend.close()
    done = _fast_forward(repo, conf, head, local, target, progress_factory, warn, on_wait)
    return TransferResult(conf.name, conf.url,
                          (RefUpdate(ref or ObjectId(target).hex(),
                                     None if local is None else local.hex(),
                                     ObjectId(target).hex(), done["status"]),),
                          *res, time.monotonic() - t0, done.get("checkout"))


def _remote_rev(backend, state, conf, rev: str | None, head) -> tuple[str | None, bytes]:
    if rev is None:
        if head.branch is None:
            raise UsageError("HEAD is not on a branch; name what to pull "
                             "(vfs pull REMOTE BRANCH)")
        rev = refs.short_name(head.branch)
    for ref in ((rev,) if rev.startswith((refs.BRANCH_PREFIX, refs.TAG_PREFIX))
                else (refs.BRANCH_PREFIX + rev, refs.TAG_PREFIX + rev)):
        cid = rrefs.read_ref(backend, ref)
        if cid is not None:
            return ref, bytes(cid)
    low = rev.lower()
    if len(low) == 64:
        try:
            cid = bytes.fromhex(low)
        except ValueError:
            cid = None
        if cid is not None:
            with state.view() as sv:
                if sv.known("commits", cid):
                    return None, cid
    names = ", ".join(sorted(refs.short_name(r) for r in rrefs.list_refs(backend))) or "none"
    raise UnknownRevision(f"{conf.name} has no branch or tag {rev!r} (it has: {names}); "
                          "a commit must be given as its full 64-digit id")


def _fast_forward(repo: Repo, conf, head, local, target: bytes, progress_factory, warn,
                  on_wait) -> dict:
    if local is not None and bytes(local) == target:
        return {"status": "up to date"}
    with repo.index.read() as txn:
        if local is not None and bytes(local) in ancestors(txn, [target]):
            kind = "fast-forward"
        elif local is not None and target in ancestors(txn, [local]):
            return {"status": "ahead"}  # the remote's is older: nothing to do
        elif local is None:
            kind = "created"
        else:
            raise RemoteRejected(
                f"{refs.short_name(head.branch) if head.branch else 'HEAD'} "
                f"({ObjectId(local).short}) and {conf.name}'s ({ObjectId(target).short}) "
                "have diverged; versionfs does not merge: check out one of them "
                f"('vfs checkout {ObjectId(target).short}') or push --force")
    advance = (head.branch, None if local is None else bytes(local)) if head.branch else None
    if repo.workspace is None:
        with repo.lock(on_wait=on_wait):
            with repo.index.write() as txn:
                if advance:
                    refs.set_ref(txn, advance[0], target, expect=advance[1])
                else:
                    refs.set_head(txn, target)
        return {"status": kind}
    res = checkout(repo, ObjectId(target).hex(), warn=warn, progress_factory=progress_factory,
                   on_wait=on_wait, advance=advance)
    return {"status": kind, "checkout": {"files_written": res.files_written,
                                         "files_removed": res.files_removed,
                                         "bytes_written": res.bytes_written,
                                         "bytes_cloned": res.bytes_cloned}}


def _bring(repo: Repo, conf, backend, state: RemoteState, wanted: dict[str, bytes],
           progress_factory, warn, workers, extra=()) -> tuple[int, int, int, int, int, int]:
    """Fetch what ``wanted`` (remote ref → commit) and ``extra`` commits reach and
    this repository lacks, and record it with the refs in one transaction.
    Returns (commits, records, chunks, bytes, packs, runs)."""
    roots = list(wanted.values()) + [bytes(c) for c in extra]
    with repo.index.read() as txn, state.view() as sv:
        plan = missing(roots, sv.get, lambda k, i: txn.has(k, i))
        runs = carried_runs(sv.runs(), lambda r: txn.has("runs", r),
                            lambda c: txn.has("commits", c), plan)
        fetch_list = []
        for cid, length in plan.chunks.items():
            if txn.has("chunks", cid):
                continue
            where = sv.chunk(cid)
            if where is None:
                raise RemoteMissing(
                    f"chunk {ObjectId(cid).short} is used by {conf.name}'s commits but no "
                    "index file of the remote lists it; the remote is incomplete "
                    "(push again from a complete copy)", object_id=cid)
            fetch_list.append((cid, *where))
    check_records(plan)
    total = sum(n for *_, n in fetch_list)
    bar = progress_factory(total) if progress_factory and total else None
    with repo.lock():
        sink = repo.store.new_pack()
        locs, digests = {}, {}

        def keep(cid: bytes, data: bytes) -> None:  # data matched cid (download)
            locs[cid] = sink.add(data)
            if len(data) > BLOCK_SIZE:
                digests[cid] = block_hashes(data)

        try:
            got = download(backend, fetch_list, keep, progress=bar,
                           workers=workers) if fetch_list else 0
            packs = sink.finish()
        except BaseException:
            sink.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
        with repo.index.write() as txn:
            for cid, loc in locs.items():
                if not txn.has("chunks", cid):
                    txn.put_chunk_loc(cid, loc)
                    blocks.record(txn, cid, digests.get(cid, b""))
            for kind in ("files", "trees", "commits"):
                for oid, enc in plan.records[kind].items():
                    txn.put(kind, oid, enc, overwrite=False)
            for rid, raw in runs.items():
                put_record(txn, rr.decode_run(rid, raw))
            for ref, cid in wanted.items():
                if ref.startswith(refs.BRANCH_PREFIX):
                    refs.set_ref(txn, f"{refs.REMOTE_PREFIX}{conf.name}/{refs.short_name(ref)}",
                                 cid, expect=refs.ANY)
                elif ref.startswith(refs.TAG_PREFIX):
                    have = refs.read_ref(txn, ref)
                    if have is None:
                        refs.set_ref(txn, ref, cid, expect=None)
                    elif bytes(have) != cid:
                        warn(f"tag {refs.short_name(ref)} is at {ObjectId(cid).short} on "
                             f"{conf.name} but at {have.short} here; kept this one")
    return (len(plan.records["commits"]), plan.count() + len(runs), len(fetch_list), got,
            len(packs), len(runs))


def _with_checkout(res: TransferResult, checkout_info: dict) -> TransferResult:
    import dataclasses
    return dataclasses.replace(res, checkout=checkout_info)


# -- clone ----------------------------------------------------------------------------------


def clone(url: str, dest: str, *, options: dict[str, str] | None = None, bare: bool = False,
          name: str = "origin", progress_factory=None, warn: Warn = _quiet) -> tuple[Repo, TransferResult]:
    """A new repository at ``dest`` with the remote's chunking parameters, the remote
    as ``name``, every branch and tag fetched, and its HEAD branch checked out."""
    from ..remote.backend import Backend
    options = dict(options or {})
    rconfig.check_options(options)
    backend = Backend(url, options)
    try:
        params, head = rrefs.describe(backend)
        cas = backend.probe_cas()
    finally:
        backend.close()
    existed = os.path.exists(dest)
    repo = Repo.init(dest, bare=bare, params=params)
    try:
        remotes = {name: rconfig.RemoteConfig(name, backend.url, options, cas)}
        rconfig.save(repo.vfs_dir, remotes)
        res = fetch(repo, name, progress_factory=progress_factory, warn=warn)
        branch = head if head and head.startswith(refs.BRANCH_PREFIX) else None
        tracked = f"{refs.REMOTE_PREFIX}{name}/{refs.short_name(branch)}" if branch else None
        cid = repo.refs(refs.REMOTE_PREFIX).get(tracked) if tracked else None
        if cid is not None and repo.workspace is None:
            with repo.lock():
                with repo.index.write() as txn:
                    refs.set_ref(txn, branch, bytes(cid), expect=None)
                    refs.set_head(txn, branch)
        elif cid is not None:
            # HEAD names a branch with no commit yet: checkout writes everything and
            # creates the branch in the transaction that moves HEAD onto it
            out = checkout(repo, ObjectId(cid).hex(), warn=warn,
                           progress_factory=progress_factory, advance=(branch, None))
            res = _with_checkout(res, {"files_written": out.files_written,
                                       "bytes_written": out.bytes_written,
                                       "bytes_cloned": out.bytes_cloned})
    except BaseException:
        repo.close()
        if not existed:   # a failed clone leaves nothing behind (a retry starts clean)
            import shutil
            shutil.rmtree(dest, ignore_errors=True)
        raise
    return repo, res
