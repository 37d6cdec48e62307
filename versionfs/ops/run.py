"""``vfs run``: run a command, record what it ran on and what it made, skip it when
an equal run already made its outputs.

A run goes: **prepare** (every declared input exists and gets its content id —
workspace files through the stat cache, files in a versionfs mount from their
``user.versionfs.*`` attributes, anything else by hashing; params are read; the code
version is asked of git; the cache key is computed) → **cache** (a successful run with
the same key whose outputs are still stored restores them instead of running) →
**execute** (declared outputs that hold committed content are removed first, the
command runs in its own process group with its output shown live and kept bounded,
files its process tree opens through versionfs mounts are observed) → **record** (on
success the outputs, the declared workspace inputs and the metrics files are
snapshotted in one commit that names the run, and the run record is written in the
same transaction; a failed or interrupted run is recorded without a commit and never
cached).
``record`` is that last step alone, fed an ``Outcome`` by whatever executed the run:
the command here, or a block of Python in ``versionfs.Run`` (``runapi``).

The repository lock is held only while committing, never while the command runs, so
several runs proceed at once. Thread-safety: ``run`` may be called from several
threads at once (``vfs repro -j``); signal handling is installed only from the main
thread.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..errors import (
    AmbiguousRevision, Interrupted, PathNotFound, RunFailed, UnknownRevision, UsageError,
    VfsError, from_oserror,
)
from ..records import runs as rr
from ..records.hashing import hash_bytes, hasher
from ..records.model import Kind, ObjectId
from ..repo import mounts
from ..repo.repository import Repo, normalize_path
from ..workspace.ignore import Ignore
from ..workspace.scan import scan_workspace
from . import params as P
from . import snapshot as snap
from .checkout import restore_paths

__all__ = ["RunSpec", "RunResult", "Prepared", "prepare", "run", "get_run", "list_runs",
           "remove_runs", "runs_producing", "outputs_in_place",
           "find_cached", "Outcome", "record", "resolve_inputs", "output_paths",
           "assemble", "interrupt_running"]

_KIND = {Kind.FILE: "file", Kind.DIR: "dir", Kind.SYMLINK: "symlink"}
GRACE_S = 5.0   # after SIGTERM to the command's group, SIGKILL follows this late
# runcache: b"d" + tree id -> that directory's content key (32 bytes), a memo written
# with each run record: a no-op `vfs repro` over a 100,000-file input spent 0.45 s
# recomputing it (decoding and re-encoding every tree below).
DIRKEY_PREFIX = b"d"


@dataclass
class RunSpec:
    """What to run. Paths are relative to ``cwd`` (default: the process's)."""

    argv: list[str]
    name: str = ""
    deps: list[str] = field(default_factory=list)
    outs: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)    # FILE or FILE:KEY,KEY
    metrics: list[str] = field(default_factory=list)
    cwd: str | None = None
    force: bool = False
    observe: bool = True
    labels: dict = field(default_factory=dict)
    env: dict | None = None      # extra environment variables for the command


@dataclass
class Prepared:
    """A run's inputs resolved, before anything ran."""

    spec: RunSpec
    cwd_rel: str
    deps: list[rr.Input]
    params: dict
    outs: list[str]              # workspace-relative, metrics files included
    metrics: list[str]           # workspace-relative
    ws_deps: list[str]           # the workspace-relative declared inputs
    code: dict | None
    key: bytes
    content_keys: dict = field(default_factory=dict)  # input path -> content key

    @property
    def name(self) -> str:
        return self.spec.name or os.path.basename(self.spec.argv[0])


@dataclass(frozen=True)
class RunResult:
    record: rr.RunRecord | None      # the new record (None on a cache hit)
    cached: rr.RunRecord | None      # the run whose outputs were restored
    exit_code: int
    undeclared: tuple[rr.Input, ...] = ()

    @property
    def run(self) -> rr.RunRecord:
        return self.record or self.cached


# -- reading records ------------------------------------------------------------------


def get_run(repo: Repo, run_id: str) -> rr.RunRecord:
    """The run record with this id or unique prefix (>= 4 hex digits)."""
    low = run_id.strip().lower()
    if len(low) < 4 or any(c not in "0123456789abcdef" for c in low):
        raise UsageError(f"{run_id!r} is not a run id (give 4 or more hex digits; "
                         "'vfs runs' lists them)")
    with repo.index.read() as txn:
        if len(low) == 64:
            raw = txn.get("runs", bytes.fromhex(low))
            hits = [(bytes.fromhex(low), raw)] if raw else []
        else:
            prefix = bytes.fromhex(low[: len(low) // 2 * 2])
            hits = [(k, v) for k, v in txn.items("runs", prefix) if k.hex().startswith(low)]
    if not hits:
        raise UnknownRevision(f"no run {run_id!r}; 'vfs runs' lists the runs")
    if len(hits) > 1:
        raise AmbiguousRevision(f"run id {run_id!r} is ambiguous: "
                                + ", ".join(k.hex()[:12] for k, _ in hits[:5]))
    return rr.decode_run(hits[0][0], hits[0][1])


def list_runs(repo: Repo, *, name: str | None = None,
              status: str | None = None) -> list[rr.RunRecord]:
    """Every run record, oldest first (by start time)."""
    with repo.index.read() as txn:
        out = [rr.decode_run(k, v) for k, v in txn.items("runs")]
    if name is not None:
        out = [r for r in out if r.name == name]
    if status is not None:
        out = [r for r in out if r.status == status]
    out.sort(key=lambda r: (r.start_ns, r.id))
    return out


def runs_producing(repo: Repo, content_id: bytes) -> list[rr.RunRecord]:
    """The runs whose outputs include content ``content_id``, newest last."""
    with repo.index.read() as txn:
        ids = rr.decode_ids(txn.get("runcache", rr.OUTPUT_PREFIX + bytes(content_id)))
        raws = [(i, txn.get("runs", i)) for i in ids]
    return [rr.decode_run(i, raw) for i, raw in raws if raw is not None]


# -- prepare --------------------------------------------------------------------------


def prepare(repo: Repo, spec: RunSpec, warn: Callable[[str], None] = lambda m: None
            ) -> Prepared:
    """Resolve inputs, params, outputs and the cache key; nothing runs yet.

    Error handling: ``PathNotFound`` for a missing input or params file,
    ``UsageError`` for an output outside the workspace, an output that is also an
    input, or an empty command.
    """
    if not spec.argv:
        raise UsageError("no command given: put it after '--', e.g. vfs run -- python train.py")
    cwd = os.path.realpath(spec.cwd or os.getcwd())
    cwd_rel = _ws_rel(_workspace(repo), cwd)
    if cwd_rel is None:
        raise UsageError(f"the run's working directory {cwd} is outside the workspace "
                         f"{_workspace(repo)}; cd into it or use -C")
    outs = output_paths(repo, cwd, [*spec.outs, *spec.metrics])
    deps, ws_deps, content_keys = resolve_inputs(repo, spec.deps, cwd, outs, warn)
    values = P.read_params(spec.params, cwd)
    return assemble(spec, cwd_rel, deps, ws_deps, values, outs, len(spec.outs),
                    code_version(cwd), content_keys)


def _workspace(repo: Repo) -> str:
    if repo.workspace is None:
        raise UsageError("vfs run needs a workspace; this is a bare repository")
    return os.path.realpath(repo.workspace)


def output_paths(repo: Repo, cwd: str, paths: list[str]) -> list[str]:
    """Outputs (relative to ``cwd``) as workspace-relative paths, each inside the
    workspace, not ignored, and named once."""
    ws = _workspace(repo)
    outs = [_output_path(ws, cwd, p) for p in paths]
    if len(set(outs)) != len(outs):
        raise UsageError("an output is named twice: " + ", ".join(
            sorted({o for o in outs if outs.count(o) > 1})))
    return outs


def resolve_inputs(repo: Repo, paths: list[str], cwd: str, outs: list[str],
                   warn: Callable[[str], None] = lambda m: None
                   ) -> tuple[list[rr.Input], list[str], dict[str, str]]:
    """Declared inputs (relative to ``cwd``) with their content ids: ``(inputs,
    workspace-relative paths of those in the workspace, their content keys)``.

    Error handling: ``PathNotFound`` for a missing input, ``UsageError`` for one
    that overlaps an output in ``outs`` or is ignored.
    """
    ws = _workspace(repo)
    deps, ws_deps = [], []
    for p in paths:
        full = os.path.normpath(os.path.join(cwd, p))
        if not os.path.lexists(full):
            raise PathNotFound(f"input {p} does not exist; create it, or drop the -d",
                               path=p)
        rel = _ws_rel(ws, os.path.realpath(full) if not os.path.islink(full) else full)
        if rel is not None:
            for o in outs:
                if _overlaps(rel, o):
                    raise UsageError(f"{p} is both an input and an output ({o}); "
                                     "a run must not overwrite what it reads")
            ws_deps.append(rel)
        else:
            deps.append(_outside_input(full, warn))
    content_keys: dict[str, str] = {}
    if ws_deps:
        ws_deps = sorted(set(ws_deps))
        found, content_keys = _workspace_inputs(repo, ws_deps, warn)
        deps = found + deps
    return deps, ws_deps, content_keys


def assemble(spec: RunSpec, cwd_rel: str, deps: list[rr.Input], ws_deps: list[str],
             params: dict, outs: list[str], n_outs: int, code: dict | None,
             content_keys: dict[str, str]) -> Prepared:
    """A ``Prepared`` from resolved parts, with its cache key; ``outs[n_outs:]``
    are the metrics files."""
    key = rr.cache_key(
        argv=spec.argv, cwd=cwd_rel, params=params,
        inputs=[(d.path, content_keys.get(d.path, d.id)) for d in deps],
        code=code and code.get("key"), outs=outs)
    return Prepared(spec, cwd_rel, deps, params, outs, outs[n_outs:], ws_deps, code, key,
                    content_keys)


def _ws_rel(ws: str, full: str) -> str | None:
    if full == ws:
        return ""
    if full.startswith(ws + os.sep):
        return normalize_path(os.path.relpath(full, ws))
    return None


def _overlaps(a: str, b: str) -> bool:
    return a == b or not a or not b or a.startswith(b + "/") or b.startswith(a + "/")


def _output_path(ws: str, cwd: str, p: str) -> str:
    full = os.path.normpath(os.path.join(cwd, p))
    parent = os.path.realpath(os.path.dirname(full))
    rel = _ws_rel(ws, os.path.join(parent, os.path.basename(full)))
    if rel is None or rel == "":
        raise UsageError(f"output {p} is not inside the workspace {ws}; outputs are "
                         "snapshotted, so they must be")
    if rel.split("/")[0] == ".vfs" or Ignore.load(ws).ignored(rel, os.path.isdir(full)):
        raise UsageError(f"output {p} is ignored (.vfsignore or .vfs); it could not "
                         "be snapshotted")
    return rel


def _workspace_inputs(repo: Repo, rels: list[str], warn
                      ) -> tuple[list[rr.Input], dict[str, str]]:
    """Content ids of workspace inputs, through the stat cache (no commit yet), and
    the content keys the cache key uses (see ``content_key``; a directory's is
    looked up under ``DIRKEY_PREFIX`` first)."""
    work = scan_workspace(repo, paths=rels, warn=warn)
    out, keys, memo = [], {}, {}
    found = [(rel, entry_at(work, work.root, rel)) for rel in rels]
    dirs = [bytes(e.id) for _, e in found if e is not None and e.is_dir]
    if dirs:
        with repo.index.read() as txn:
            for tid in dirs:
                raw = txn.get("runcache", DIRKEY_PREFIX + tid)
                if raw is not None and len(raw) == 32:
                    memo[tid] = raw.hex()
    for rel, e in found:
        if e is None:  # ignored by .vfsignore: not part of any snapshot
            raise UsageError(f"input {rel} is ignored by .vfsignore, so no version can "
                             "hold it; un-ignore it or read it from outside the workspace")
        out.append(rr.Input(rel, _KIND[e.kind], e.id.hex(), rr.WORKSPACE, size=e.size))
        keys[rel] = content_key(work, e, memo)
    return out, keys


def content_key(src, e, memo: dict) -> str:
    """What of an input decides a result: a file's id; for a directory, the hash
    of its names, kinds, modes and their content keys — not mtimes, which a tree
    id includes (rewriting a file with the same bytes must not miss the cache)."""
    if not e.is_dir:
        return e.id.hex()
    hit = memo.get(e.id)
    if hit is None:
        rows = [[c.name, int(c.kind), c.mode, content_key(src, c, memo)]
                for c in src.tree(e.id).entries]
        hit = memo[e.id] = hash_bytes(b"vfs-dirkey\0" + rr.canonical(rows)).hex()
    return hit


def entry_at(src, root_tid, rel: str):
    """The tree entry at ``rel`` below tree ``root_tid`` of ``src`` (a Repo or a
    WorkTree), or None."""
    from ..records.model import TreeEntry
    e = TreeEntry("", Kind.DIR, 0, 0, 0, ObjectId(root_tid))
    for part in rel.split("/") if rel else ():
        if not e.is_dir:
            return None
        e = src.tree(e.id).get(part)
        if e is None:
            return None
    return e


def _outside_input(full: str, warn) -> rr.Input:
    """An input outside the workspace: in a versionfs mount (its attributes name
    repository, commit and id) or anywhere else (hashed)."""
    m = _mount_of(full)
    if m is not None:
        try:
            oid = os.getxattr(full, "user.versionfs.id").decode()
            cid = os.getxattr(full, "user.versionfs.commit").decode()
            st = os.lstat(full)
            state = mounts.read_state(m)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else \
                "symlink" if stat.S_ISLNK(st.st_mode) else "file"
            return rr.Input(os.path.relpath(full, m), kind, oid, rr.MOUNT,
                            repo=state.repo if state else None, commit=cid,
                            size=st.st_size if kind == "file" else 0)
        except OSError:
            pass  # a virtual directory of the mount: hash it like any other
    kind, oid, size = _hash_path(full)
    return rr.Input(full, kind, oid, rr.EXTERNAL, size=size)


def _mount_of(path: str) -> str | None:
    best = None
    for e in mounts.mount_table():
        if e.fstype == mounts.FSTYPE and (path == e.mountpoint or
                                          path.startswith(e.mountpoint.rstrip("/") + "/")):
            if best is None or len(e.mountpoint) > len(best):
                best = e.mountpoint
    return best


def _hash_path(path: str) -> tuple[str, str, int]:
    """(kind, BLAKE3 hex, size) of a file, symlink or directory outside versionfs;
    a directory's id is the hash of its sorted listing of (name, kind, id)."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return "symlink", hash_bytes(os.fsencode(os.readlink(path))).hex(), 0
        if stat.S_ISDIR(st.st_mode):
            rows = []
            for name in sorted(os.listdir(path)):
                kind, oid, _ = _hash_path(os.path.join(path, name))
                rows.append([name, kind, oid])
            return "dir", hash_bytes(rr.canonical(rows)).hex(), 0
        h = hasher()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return "file", h.digest().hex(), st.st_size
    except OSError as exc:
        raise from_oserror(exc, f"reading input {path}") from None


def code_version(cwd: str) -> dict | None:
    """The git commit of the work tree around ``cwd`` and whether tracked files
    differ from it (untracked files do not count: outputs and data would make every
    run dirty). ``key`` adds a hash of the uncommitted diff, so two different dirty
    states never share cache entries."""
    def git(*args) -> str | None:
        try:
            p = subprocess.run(["git", *args], cwd=cwd, capture_output=True,
                               stdin=subprocess.DEVNULL, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout.decode("utf-8", "replace") if p.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if head is None:
        return None
    head = head.strip()
    status = git("status", "--porcelain", "--untracked-files=no") or ""
    dirty = bool(status.strip())
    key = head
    if dirty:
        diff = git("diff", "HEAD", "--no-ext-diff", "--binary") or ""
        key += "+" + hash_bytes(diff.encode()).hex()[:16]
    root = (git("rev-parse", "--show-toplevel") or "").strip()
    return {"commit": head, "dirty": dirty, "root": root, "key": key}


def environment(code: dict | None) -> dict:
    from importlib.metadata import PackageNotFoundError, version
    try:
        __version__ = version("versionfs")
    except PackageNotFoundError:
        __version__ = "unknown"
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "host": platform.node(), "user": snap.default_author().split("@")[0],
           "versionfs": __version__, "executable": sys.executable}
    if code is not None:
        env["git"] = {k: v for k, v in code.items() if k != "key"}
    return env


# -- the cache --------------------------------------------------------------------------


def find_cached(repo: Repo, prep: Prepared) -> rr.RunRecord | None:
    """The newest successful run with ``prep``'s key whose outputs are all still
    stored (its commit exists and holds each output with the recorded id)."""
    with repo.index.read() as txn:
        ids = rr.decode_ids(txn.get("runcache", rr.CACHE_PREFIX + prep.key))
        raws = [(i, txn.get("runs", i)) for i in reversed(ids)]
    for rid, raw in raws:
        if raw is None:
            continue
        rec = rr.decode_run(rid, raw)
        if rec.cacheable and _outputs_stored(repo, rec):
            return rec
    return None


def _outputs_stored(repo: Repo, rec: rr.RunRecord) -> bool:
    try:
        commit = repo.commit(ObjectId.from_hex(rec.commit))
        for o in rec.outs:
            e = entry_at(repo, commit.tree, o.path)
            if e is None or e.id.hex() != o.id:
                return False
    except VfsError:
        return False
    return True


# -- run ----------------------------------------------------------------------------------


def run(repo: Repo, spec: RunSpec, *, warn: Callable[[str], None] = lambda m: None,
        info: Callable[[str], None] = lambda m: None, echo: bool = True,
        prepared: Prepared | None = None, on_wait=None, stdout=None, stderr=None,
        ) -> RunResult:
    """Run ``spec`` (or restore its outputs from the cache) and record it.

    ``echo``: copy the command's output to ``stdout``/``stderr`` (default: this
    process's) as it comes. Returns the result; the command's exit status is
    ``result.exit_code`` (127: not found; 128+N: killed by signal N).

    Error handling: ``prepare``'s errors before anything runs; ``RunFailed`` when a
    declared output is missing after the command succeeded (the run is recorded as
    failed); ``Interrupted`` after SIGINT/SIGTERM (recorded as interrupted, the
    command's process group terminated, no commit made).
    """
    prep = prepared or prepare(repo, spec, warn)
    if not spec.force:
        hit = find_cached(repo, prep)
        if hit is not None:
            if outputs_in_place(repo, hit):
                # in place, but maybe not committed (another branch, say): commit
                # them as a restore would (nothing is recorded if HEAD holds them)
                snap.snapshot(repo, [o.path for o in hit.outs],
                              message=f"run {hit.name}: outputs of run {hit.short}",
                              run=bytes.fromhex(hit.id), warn=warn, on_wait=on_wait)
                info(f"cached: run {hit.short} ({hit.name}); its outputs are in place")
            else:
                _restore(repo, prep, hit, warn, on_wait)
                info(f"cached: run {hit.short} ({hit.name}); outputs restored from "
                     f"commit {hit.commit[:12]}")
            return RunResult(None, hit, 0)
    _clear_outputs(repo, prep)
    rid = rr.new_run_id(spec.argv, rr.now_ns())
    info(f"run {rid.hex()[:12]} ({prep.name}): {shlex.join(spec.argv)}")
    ex = _Execution(repo, prep, rid, echo=echo, warn=warn, stdout=stdout, stderr=stderr)
    ex.start()
    ex.wait()
    result = record(repo, prep, ex.outcome(), warn=warn, on_wait=on_wait)
    if ex.interrupted:
        raise Interrupted(f"run {result.record.short} interrupted by "
                          f"{signal.Signals(ex.signalled).name}; the command's process "
                          "group was terminated and no commit was made", op="run")
    return result


def _clear_outputs(repo: Repo, prep: Prepared) -> None:
    """Remove declared outputs before the command runs, so one it fails to write
    cannot pass for new. Only outputs whose content is committed are removed
    (HEAD holds them, or they do not exist); anything else is refused, naming it."""
    ws = repo.workspace
    present = [o for o in prep.outs if os.path.lexists(os.path.join(ws, o))]
    if not present:
        return
    work = scan_workspace(repo, paths=present)
    head = repo.head()
    head_tree = repo.commit(head).tree if head else None
    dirty = []
    for o in present:
        we = entry_at(work, work.root, o)
        he = entry_at(repo, head_tree, o) if head_tree else None
        if we is not None and (he is None or he.id != we.id or he.kind != we.kind):
            if not _produced_before(repo, we.id):
                dirty.append(o)
    if dirty:
        raise UsageError(
            "output " + ", ".join(dirty[:5]) + " holds content no commit or run has "
            "stored; a run removes its outputs before it starts, so snapshot or move "
            "it first (vfs snapshot " + " ".join(dirty[:5]) + ")")
    for o in present:
        full = os.path.join(ws, o)
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
        except OSError as exc:
            raise from_oserror(exc, f"removing output {o} before the run") from None


def _produced_before(repo: Repo, oid: bytes) -> bool:
    with repo.index.read() as txn:
        return txn.get("runcache", rr.OUTPUT_PREFIX + bytes(oid)) is not None


def outputs_in_place(repo: Repo, hit: rr.RunRecord, *, remember: bool = True) -> bool:
    """Whether the workspace holds run ``hit``'s outputs already: their ids from the
    stat cache (directories compared by content, not mtimes). With ``remember``,
    files read to decide this (their content is what the run stored) get stat cache
    entries, so the next check reads nothing."""
    ws = repo.workspace
    paths = [o.path for o in hit.outs]
    if not all(os.path.lexists(os.path.join(ws, p)) for p in paths):
        return False
    work = scan_workspace(repo, paths=paths)
    tree = None
    memo: dict = {}
    for o in hit.outs:
        e = entry_at(work, work.root, o.path)
        if e is None:
            return False
        if e.id.hex() == o.id:
            continue
        if not e.is_dir:
            return False
        if tree is None:
            tree = repo.commit(ObjectId.from_hex(hit.commit)).tree
        stored = entry_at(repo, tree, o.path)
        if stored is None or content_key(repo, stored, memo) != content_key(work, e, {}):
            return False
    if remember and work.statcache:
        # every file here equals one the run stored: safe to remember
        with repo.lock():
            with repo.index.write() as txn:
                for key, value in work.statcache.items():
                    txn.put("statcache", key, value)
    return True


def _restore(repo: Repo, prep: Prepared, hit: rr.RunRecord, warn, on_wait) -> None:
    """Put the cached run's outputs in place and commit them (naming that run)."""
    _clear_outputs(repo, prep)
    restore_paths(repo, ObjectId.from_hex(hit.commit), [o.path for o in hit.outs],
                  warn=warn)
    snap.snapshot(repo, [o.path for o in hit.outs],
                  message=f"run {hit.name}: outputs restored from the cache of run "
                          f"{hit.short}",
                  run=bytes.fromhex(hit.id), warn=warn, on_wait=on_wait)


_LIVE: set = set()          # executions whose command is running (any thread)
_LIVE_LOCK = threading.Lock()


def interrupt_running(signum: int = signal.SIGINT) -> int:
    """Pass ``signum`` to every command ``run`` is running in this process, as a
    run in the main thread does by itself (``vfs repro -j`` runs them in worker
    threads, where signal handlers cannot be installed). Returns how many."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for ex in live:
        ex._on_signal(signum, None)
    return len(live)


class _Execution:
    """The command as a child process in its own process group, its output
    copied live and kept bounded, files it reads through mounts observed."""

    def __init__(self, repo, prep: Prepared, rid: bytes, *, echo, warn, stdout, stderr):
        self.repo, self.prep, self.rid, self.echo, self.warn = repo, prep, rid, echo, warn
        self.out = stdout if stdout is not None else sys.stdout.buffer
        self.err = stderr if stderr is not None else sys.stderr.buffer
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0
        self.log_lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.exit_code: int | None = None
        self.message = ""
        self.signalled: int | None = None
        self.observed: list = []
        self.start_ns = self.end_ns = 0
        self.observer = None
        self.tty: int | None = None

    def start(self) -> None:
        self.start_ns = rr.now_ns()
        cwd = os.path.join(self.repo.workspace, self.prep.cwd_rel)
        env = dict(os.environ)
        env["VFS_RUN_ID"] = self.rid.hex()
        env["VFS_REPO"] = self.repo.vfs_dir
        env.update(self.prep.spec.env or {})
        # The command starts under a small launcher (LAUNCHER): a child subreaper, so
        # the command's orphans stay in its tree, and held on a pipe until the mounts
        # track the launcher's descendants, so not one read escapes observation. Each
        # run has its own tree: parallel runs of one process are told apart.
        gate_r, gate_w = os.pipe()
        try:
            try:
                self.proc = subprocess.Popen(
                    [sys.executable, "-S", "-c", LAUNCHER, str(gate_r),
                     *self.prep.spec.argv],
                    cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    process_group=0, pass_fds=(gate_r,))
            except FileNotFoundError:  # the working directory went away
                self._no_command(127, f"cannot start in {cwd}")
                return
            os.close(gate_r)
            gate_r = -1
            if self.prep.spec.observe:
                self.observer = _start_observer(self.proc.pid, self.warn)
            self.tty = _give_terminal(self.proc.pid)
            os.write(gate_w, b"go")
        finally:
            os.close(gate_w)
            if gate_r >= 0:
                os.close(gate_r)
        self.threads = [threading.Thread(target=self._copy, args=(self.proc.stdout, self.out),
                                         daemon=True),
                        threading.Thread(target=self._copy, args=(self.proc.stderr, self.err),
                                         daemon=True)]
        for t in self.threads:
            t.start()
        with _LIVE_LOCK:
            _LIVE.add(self)

    def _launch_error(self) -> str:
        """The launcher's one line, when it could not start the command."""
        with self.log_lock:
            head = bytes(self.head[:4096])
        for line in head.decode("utf-8", "replace").splitlines():
            if line.startswith("vfs run: ") and ("command not found" in line or
                                                 "cannot execute" in line):
                return line[len("vfs run: "):]
        return ""

    def _no_command(self, code: int, why: str) -> None:
        self.exit_code = code
        self.message = f"{self.prep.spec.argv[0]}: {why}"
        self._log(f"vfs run: {self.message}\n".encode())
        self.err.write(f"vfs run: {self.message}\n".encode())
        self.err.flush()
        self.end_ns = rr.now_ns()
        self.proc = None

    def _copy(self, src, dst) -> None:
        fd = src.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            if self.echo:
                try:
                    dst.write(data)
                    dst.flush()
                except (OSError, ValueError):
                    pass  # our own stdout closed: keep logging
            self._log(data)
        src.close()

    def _log(self, data: bytes) -> None:
        with self.log_lock:
            room = rr.LOG_HEAD - len(self.head)
            if room > 0:
                self.head += data[:room]
                data = data[room:]
            if data:
                self.tail += data
                over = len(self.tail) - rr.LOG_TAIL
                if over > 0:
                    del self.tail[:over]
                    self.dropped += over

    def wait(self) -> None:
        if self.proc is None:
            self._stop_observer()
            return
        main = threading.current_thread() is threading.main_thread()
        saved = {}
        if main:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                saved[signum] = signal.signal(signum, self._on_signal)
        try:
            while True:
                try:
                    code = self.proc.wait()
                    break
                except KeyboardInterrupt:  # a handler elsewhere raised it
                    self._on_signal(signal.SIGINT, None)
            for t in self.threads:
                t.join()
        finally:
            if self.tty is not None:
                _take_terminal(self.tty)
            for signum, handler in saved.items():
                signal.signal(signum, handler)
            with _LIVE_LOCK:
                _LIVE.discard(self)
        if -code in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) and self.signalled is None:
            self.signalled = -code   # e.g. Ctrl-C at the terminal the command had
        self._reap_group()
        self.end_ns = rr.now_ns()
        self.exit_code = code if code >= 0 else 128 - code
        if self.exit_code in (126, 127) and not self.message:
            self.message = self._launch_error()
        self._stop_observer()

    def _on_signal(self, signum, frame) -> None:
        """Pass the signal to the command's process group; SIGKILL it if it has not
        gone after ``GRACE_S``."""
        if self.signalled is None:
            self.signalled = signum
        try:
            os.killpg(self.proc.pid, signal.SIGTERM if signum == signal.SIGHUP else signum)
        except ProcessLookupError:
            return
        timer = threading.Timer(GRACE_S, self._kill)
        timer.daemon = True
        timer.start()

    def _kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap_group(self) -> None:
        """After an interruption, nothing of the command's group may live on."""
        if self.signalled is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _stop_observer(self) -> None:
        if self.observer is not None:
            try:
                self.observed = self.observer.stop()
            except Exception as exc:  # observing must never lose a run
                self.warn(f"could not collect the files the run read: {exc}")
            self.observer = None

    @property
    def interrupted(self) -> bool:
        return self.signalled is not None

    def outcome(self) -> Outcome:
        log, dropped = self.log()
        return Outcome(self.rid, self.start_ns, self.end_ns or rr.now_ns(),
                       self.exit_code, message=self.message,
                       interrupted_by=(signal.Signals(self.signalled).name
                                       if self.interrupted else None),
                       log=log, log_dropped=dropped,
                       observed=tuple(_observed_inputs(self.observed)))

    def log(self) -> tuple[str, int]:
        with self.log_lock:
            return rr.bound_log(bytes(self.head), bytes(self.tail), self.dropped)


def _give_terminal(pgid: int) -> int | None:
    """Make the command's process group the terminal's foreground group when this
    process holds the terminal (so the command can read it, and Ctrl-C goes to the
    command as it would without ``vfs run``); the fd to hand it back, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        if not os.isatty(0) or os.tcgetpgrp(0) != os.getpgrp():
            return None
        os.tcsetpgrp(0, pgid)
        return 0
    except OSError:
        return None


def _take_terminal(fd: int) -> None:
    """Take the terminal back (from the background: SIGTTOU ignored meanwhile)."""
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, os.getpgrp())
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


def _start_observer(root: int, warn):
    """An observer of what ``root``'s descendants read through live versionfs
    mounts, or None when observing fails (it must never stop a run)."""
    from ..repo.observe import Observer
    obs = Observer(root, warn=warn, subreaper=False)
    try:
        obs.start()
    except Exception as exc:  # observing must never stop a run
        warn(f"cannot observe reads through versionfs mounts: {exc}")
        return None
    return obs


# The launcher the command runs under (``python -S``: ~10 ms). It makes itself a child
# subreaper, waits for the go on the pipe, forks the command, reaps whatever orphans
# come back to it, and exits with the command's status (127 not found, 126 not
# executable, 128+N killed by signal N). It ignores the signals ``vfs run`` passes
# to the group, so that it outlives the command and reports how it ended.
LAUNCHER = r"""
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
gate = int(sys.argv[1])
if os.read(gate, 2) != b"go":   # vfs run went away before the start: run nothing
    os._exit(125)
os.close(gate)
argv = sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        os.write(2, ("vfs run: %s: command not found\n" % argv[0]).encode())
        os._exit(127)
    except OSError as exc:
        os.write(2, ("vfs run: %s: cannot execute: %s\n" % (argv[0], exc.strerror)).encode())
        os._exit(126)
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
while True:
    try:
        done, status = os.waitpid(-1, 0)
    except ChildProcessError:
        os._exit(127)
    if done == pid:
        break
code = os.waitstatus_to_exitcode(status)
if -code in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(-code, signal.SIG_DFL)   # die of it too: vfs run sees how it ended
    os.kill(os.getpid(), -code)
os._exit(128 - code if code < 0 else code)
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one execution of a run did, whoever executed it (``_Execution`` runs a
    command; ``versionfs.Run`` is a block of the calling Python process)."""

    rid: bytes
    start_ns: int
    end_ns: int
    exit_code: int | None        # 0: succeeded
    message: str = ""            # why it failed, in one line
    interrupted_by: str | None = None   # the signal's name, e.g. "SIGINT"
    log: str = ""
    log_dropped: int = 0
    observed: tuple[rr.Input, ...] = ()
    metrics: dict = field(default_factory=dict)   # {group: {key: value}}, besides files


def record(repo: Repo, prep: Prepared, out: Outcome, *,
           warn: Callable[[str], None] = lambda m: None, on_wait=None) -> RunResult:
    """Record an executed run: on success snapshot its outputs and workspace inputs
    in one commit naming the run, with the record in the same transaction; a failed
    or interrupted run is recorded alone (no commit, never cached).

    Error handling: ``RunFailed`` when the execution succeeded but a declared output
    is missing or a metrics file cannot be read (recorded as failed); the
    snapshot's errors.
    """
    base = rr.RunRecord(
        id=out.rid.hex(), name=prep.name, argv=tuple(prep.spec.argv), cwd=prep.cwd_rel,
        start_ns=out.start_ns, end_ns=out.end_ns,
        status=rr.SUCCEEDED, exit_code=out.exit_code, key=prep.key.hex(),
        env=environment(prep.code), params=prep.params, deps=tuple(prep.deps),
        observed=out.observed, labels=dict(prep.spec.labels), message=out.message,
        log=out.log, log_dropped=out.log_dropped, metrics=dict(out.metrics))
    undeclared = tuple(_undeclared(prep, out.observed))
    if out.interrupted_by or out.exit_code != 0:
        status = rr.INTERRUPTED if out.interrupted_by else rr.FAILED
        if not out.message:
            base = replace(base, message=(
                f"interrupted by {out.interrupted_by}" if out.interrupted_by
                else f"exit status {out.exit_code}"))
        rec = replace(base, status=status)
        _write_alone(repo, rec, on_wait)
        return RunResult(rec, None, out.exit_code, undeclared)
    ws = repo.workspace
    missing = [o for o in prep.outs if not os.path.lexists(os.path.join(ws, o))]
    if missing:
        rec = replace(base, status=rr.FAILED,
                      message="missing output " + ", ".join(missing))
        _write_alone(repo, rec, on_wait)
        raise RunFailed(f"run {rec.short}: the command succeeded but did not write "
                        f"declared output {', '.join(missing)}; recorded as failed",
                        op="run", path=missing[0])
    try:
        metrics = {**out.metrics,
                   **{m: P.load_file(os.path.join(ws, m)) for m in prep.metrics}}
    except VfsError as exc:
        rec = replace(base, status=rr.FAILED, message=str(exc))
        _write_alone(repo, rec, on_wait)
        raise RunFailed(f"run {rec.short}: {exc}; recorded as failed", op="run") from None
    paths = sorted(set(prep.outs) | set(prep.ws_deps))
    done: dict = {}

    def on_write(txn, cid, work):
        changed, deps = [], []
        for d in prep.deps:
            if d.origin == rr.WORKSPACE:
                e = entry_at(work, work.root, d.path)
                if e is None or e.id.hex() != d.id:
                    changed.append(d.path)
                    d = replace(d, commit=None)
                else:
                    d = replace(d, commit=cid.hex(), repo=repo.vfs_dir)
            deps.append(d)
        outs = []
        for o in prep.outs:
            e = entry_at(work, work.root, o)
            outs.append(rr.Output(o, _KIND[e.kind], e.id.hex(), e.size))
        rec = replace(base, deps=tuple(deps), outs=tuple(outs), metrics=metrics,
                      commit=cid.hex(), changed=tuple(changed))
        put_record(txn, rec)
        for d in prep.deps:     # remember directory content keys (DIRKEY_PREFIX)
            if d.origin == rr.WORKSPACE and d.kind == "dir" and d.path in prep.content_keys:
                txn.put("runcache", DIRKEY_PREFIX + bytes.fromhex(d.id),
                        bytes.fromhex(prep.content_keys[d.path]))
        done["rec"] = rec

    label = prep.spec.name or prep.name
    snap.snapshot(repo, paths, message=f"run {label}: {shlex.join(prep.spec.argv)}",
                  run=out.rid, warn=warn, on_wait=on_wait, allow_empty=False,
                  on_write=on_write)
    rec = done["rec"]
    if rec.changed:
        warn(f"input {', '.join(rec.changed)} changed while the run ran; the run is "
             "recorded but will not be reused from the cache")
    return RunResult(rec, None, 0, undeclared)


def _observed_inputs(reads) -> list[rr.Input]:
    return [rr.Input(r.path, "file", r.id, rr.MOUNT, repo=r.repo, commit=r.commit,
                     size=r.size) for r in reads]


def _undeclared(prep: Prepared, observed) -> list[rr.Input]:
    """Observed reads no declared input covers (same mount file, or below a
    declared directory of the same commit)."""
    declared = [(d.repo, d.commit, d.path) for d in prep.deps if d.origin == rr.MOUNT]
    out = []
    for o in observed:
        if not any(repo == o.repo and commit == o.commit and _overlaps_path(path, o.path)
                   for repo, commit, path in declared):
            out.append(o)
    return out


def _overlaps_path(declared: str, path: str) -> bool:
    d = declared.strip("/")
    return d in ("", ".") or path == d or path.startswith(d + "/")


def put_record(txn, rec: rr.RunRecord) -> None:
    """Write a run record and its runcache entries (in the caller's transaction)."""
    rid = bytes.fromhex(rec.id)
    txn.put("runs", rid, rr.encode_run(rec))
    if rec.cacheable:
        k = rr.CACHE_PREFIX + bytes.fromhex(rec.key)
        txn.put("runcache", k, rr.append_id(txn.get("runcache", k), rid))
    for o in rec.outs:
        k = rr.OUTPUT_PREFIX + bytes.fromhex(o.id)
        txn.put("runcache", k, rr.append_id(txn.get("runcache", k), rid))


def _write_alone(repo: Repo, rec: rr.RunRecord, on_wait) -> None:
    with repo.lock(on_wait=on_wait):
        with repo.index.write() as txn:
            put_record(txn, rec)


def remove_runs(repo: Repo, recs: list[rr.RunRecord], *, on_wait=None) -> None:
    """Delete run records and their cache entries (the data they kept becomes
    collectable by ``vfs gc`` unless something else reaches it)."""
    with repo.lock(on_wait=on_wait):
        with repo.index.write() as txn:
            for rec in recs:
                rid = bytes.fromhex(rec.id)
                txn.delete("runs", rid)
                keys = [rr.CACHE_PREFIX + bytes.fromhex(rec.key)]
                keys += [rr.OUTPUT_PREFIX + bytes.fromhex(o.id) for o in rec.outs]
                for k in keys:
                    ids = [i for i in rr.decode_ids(txn.get("runcache", k)) if i != rid]
                    if ids:
                        txn.put("runcache", k, rr.encode_ids(ids))
                    else:
                        txn.delete("runcache", k)
