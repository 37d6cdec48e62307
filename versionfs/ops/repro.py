"""``vfs repro``: bring a pipeline's outputs up to date, running only what changed.

Stages go in dependency order, each through the machinery of ``vfs run``
(``prepare`` → ``find_cached`` → ``run``), so every stage that runs leaves an
ordinary run record named after it. A stage whose cache key matches a stored run
is **up to date** when the workspace already holds that run's outputs (decided by
their ids through the stat cache: nothing is re-hashed, nothing restored), else
**cached** (the outputs are restored). Only stages whose inputs, params, command or
code changed **ran**. A stage is prepared only once its upstream stages are done,
since their outputs are its inputs. A failed stage stops its downstream stages
(**skipped**); others already running finish. ``dry_run`` prepares what it can and
says what would run and why (which dep or param changed since the stage's last run).

Thread-safety: with ``jobs > 1`` stages run in worker threads (``ops.run.run`` holds
the repository lock only to commit); signals reach the main thread, which passes
them to the running commands (``run.interrupt_running``) and starts nothing more.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from ..errors import PathNotFound, VfsError
from ..records.model import ObjectId
from ..repo.repository import Repo
from ..workspace.scan import scan_workspace
from . import pipeline as pl
from . import run as R

__all__ = ["StageResult", "ReproResult", "repro", "spec_of", "why_run"]

# statuses
RAN, CACHED, UP_TO_DATE, FAILED, SKIPPED = "ran", "cached", "up to date", "failed", "skipped"
INTERRUPTED = "interrupted"
WOULD_RUN, WOULD_RESTORE, WOULD_FAIL = "would run", "would restore", "would fail"
OK = (RAN, CACHED, UP_TO_DATE)


@dataclass(frozen=True, slots=True)
class StageResult:
    stage: str
    status: str
    reason: str = ""                 # why it ran / failed / was skipped
    run_id: str | None = None        # the run that made (or restored) its outputs
    exit_code: int | None = None
    duration: float = 0.0

    def to_dict(self) -> dict:
        return {"stage": self.stage, "status": self.status, "reason": self.reason,
                "run": self.run_id, "exit_code": self.exit_code,
                "duration": round(self.duration, 3)}


@dataclass(frozen=True, slots=True)
class ReproResult:
    stages: tuple[StageResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.status not in (FAILED, SKIPPED, INTERRUPTED, WOULD_FAIL)
                   for r in self.stages)

    def by_name(self) -> dict[str, StageResult]:
        return {r.stage: r for r in self.stages}


def spec_of(stage: pl.Stage, workspace: str, *, force: bool = False) -> R.RunSpec:
    """The ``vfs run`` spec of a stage (paths as written, relative to its wdir)."""
    return R.RunSpec(argv=list(stage.argv), name=stage.name, deps=list(stage.spec_deps),
                     outs=list(stage.spec_outs), params=list(stage.params),
                     metrics=list(stage.spec_metrics),
                     cwd=os.path.join(workspace, stage.wdir) if stage.wdir else workspace,
                     force=force, labels={"pipeline": stage.source})


def repro(repo: Repo, names: list[str] | None = None, *, jobs: int = 1,
          force: bool = False, dry_run: bool = False,
          warn: Callable[[str], None] = lambda m: None,
          info: Callable[[str], None] = lambda m: None,
          on_stage: Callable[[StageResult], None] = lambda r: None,
          stdout=None, stderr=None) -> ReproResult:
    """Reproduce the named stages (all when none) and their upstream stages.

    ``on_stage`` is called (from the main thread) as each stage ends. Commands'
    output goes to ``stdout``/``stderr`` (binary streams; default this process's).

    Error handling: ``PipelineInvalid`` for a bad ``vfs.yaml`` or a dep that is
    neither present nor any stage's output, before anything runs; a stage's own
    errors make it ``failed``; ``run.Interrupted`` after SIGINT/SIGTERM (running
    commands get the signal; nothing more starts).
    """
    if repo.workspace is None:
        raise VfsError("vfs repro needs a workspace; this is a bare repository")
    ws = repo.workspace
    pipe = pl.load(ws)
    stages = pipe.select(names)
    pl.check_inputs(pipe, stages, ws)
    if dry_run:
        return _dry(repo, pipe, stages, force, warn, on_stage)
    sched = _Scheduler(repo, pipe, stages, jobs, force, warn, info, on_stage,
                       stdout, stderr)
    return sched.run()


class _Scheduler:
    """Starts each stage once its upstream stages succeeded, at most ``jobs`` at once."""

    def __init__(self, repo, pipe, stages, jobs, force, warn, info, on_stage, stdout,
                 stderr):
        self.repo, self.pipe, self.jobs, self.force = repo, pipe, max(1, jobs), force
        self.warn, self.info, self.on_stage = warn, info, on_stage
        self.stdout, self.stderr = stdout, stderr
        self.pending = list(stages)
        self.selected = {s.name for s in stages}
        self.results: dict[str, StageResult] = {}
        self.order = [s.name for s in stages]
        self.stop: int | None = None   # the signal that stopped us

    def run(self) -> ReproResult:
        if self.jobs == 1:
            self._inline()
        else:
            self._threaded()
        out = tuple(self.results[n] for n in self.order if n in self.results)
        if self.stop is not None:
            raise R.Interrupted(f"repro interrupted by {signal.Signals(self.stop).name}; "
                                "running stages were stopped, nothing more started",
                                op="repro")
        return ReproResult(out)

    def _ready(self) -> list[pl.Stage]:
        """Stages whose upstream stages all succeeded; those below a failure are
        marked skipped."""
        ready = []
        for s in list(self.pending):
            ups = [u for u in self.pipe.upstream_of(s.name) if u in self.selected]
            bad = [u for u in ups if u in self.results and self.results[u].status not in OK]
            if bad:
                self.pending.remove(s)
                self._done(StageResult(s.name, SKIPPED, f"upstream stage {bad[0]} "
                                       f"{self.results[bad[0]].status}"))
            elif all(u in self.results for u in ups):
                ready.append(s)
        return ready

    def _done(self, res: StageResult) -> None:
        self.results[res.stage] = res
        self.on_stage(res)

    def _inline(self) -> None:
        while self.pending and self.stop is None:
            ready = self._ready()
            if not ready:
                break
            s = ready[0]
            self.pending.remove(s)
            try:
                self._done(self._one(s))
            except R.Interrupted:
                self._done(StageResult(s.name, INTERRUPTED, "interrupted"))
                self.stop = signal.SIGINT
        self._skip_rest()

    def _threaded(self) -> None:
        main = threading.current_thread() is threading.main_thread()
        saved = {}
        if main:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                saved[signum] = signal.signal(signum, self._on_signal)
        running: dict = {}
        try:
            with ThreadPoolExecutor(self.jobs, thread_name_prefix="vfs-stage") as pool:
                while (self.pending and self.stop is None) or running:
                    if self.stop is None:
                        for s in self._ready():
                            if len(running) >= self.jobs:
                                break
                            self.pending.remove(s)
                            running[pool.submit(self._one, s)] = s
                    if not running:
                        break
                    finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for fut in finished:
                        s = running.pop(fut)
                        try:
                            self._done(fut.result())
                        except R.Interrupted:
                            self._done(StageResult(s.name, INTERRUPTED, "interrupted"))
                            self.stop = self.stop or signal.SIGINT
        finally:
            for signum, handler in saved.items():
                signal.signal(signum, handler)
        self._skip_rest()

    def _on_signal(self, signum, frame) -> None:
        self.stop = signum
        R.interrupt_running(signal.SIGTERM if signum == signal.SIGHUP else signum)

    def _skip_rest(self) -> None:
        for s in self.pending:
            if s.name not in self.results:
                why = "interrupted" if self.stop is not None else "upstream stage failed"
                self._done(StageResult(s.name, SKIPPED, why))
        self.pending = []

    def _one(self, stage: pl.Stage) -> StageResult:
        """Prepare, then skip, restore or run one stage."""
        t0 = time.monotonic()
        repo, ws = self.repo, self.repo.workspace
        spec = spec_of(stage, ws, force=self.force)
        try:
            prep = R.prepare(repo, spec, self.warn)
            if not self.force:
                hit = R.find_cached(repo, prep)
                if hit is not None and outputs_in_place(repo, hit):
                    return StageResult(stage.name, UP_TO_DATE, "outputs match run "
                                       + hit.short, hit.id, 0, time.monotonic() - t0)
            reason = "forced" if self.force else why_run(repo, stage, prep)
            if self.stop is not None:   # a signal came while this stage was prepared
                raise R.Interrupted("interrupted before the stage started", op="repro")
            res = R.run(repo, spec, prepared=prep, warn=self.warn, info=self.info,
                        on_wait=self.info, stdout=self.stdout, stderr=self.stderr)
        except R.Interrupted:
            raise
        except VfsError as exc:
            return StageResult(stage.name, FAILED, str(exc), None, exc.exit_code,
                               time.monotonic() - t0)
        took = time.monotonic() - t0
        if res.record is None:
            return StageResult(stage.name, CACHED, "restored from run " + res.cached.short,
                               res.cached.id, 0, took)
        if res.exit_code == 0:
            return StageResult(stage.name, RAN, reason, res.record.id, 0, took)
        return StageResult(stage.name, FAILED, res.record.message, res.record.id,
                           res.exit_code, took)


outputs_in_place = R.outputs_in_place  # shared with vfs run


# -- why ---------------------------------------------------------------------------------


def why_run(repo: Repo, stage: pl.Stage, prep: R.Prepared) -> str:
    """What changed since the stage's last successful run, in one phrase."""
    last = [r for r in R.list_runs(repo, name=stage.name, status="succeeded")]
    if not last:
        return "never ran"
    rec = last[-1]
    if list(rec.argv) != list(prep.spec.argv):
        return "command changed"
    changes = _param_changes(rec.params, prep.params)
    old = {d.path: d.id for d in rec.deps}
    new = {d.path: d.id for d in prep.deps}
    changes += [f"dep {p} changed" for p in new if p in old and old[p] != new[p]]
    changes += [f"dep {p} added" for p in new if p not in old]
    changes += [f"dep {p} removed" for p in old if p not in new]
    if changes:
        return ", ".join(changes[:4]) + (f" and {len(changes) - 4} more"
                                         if len(changes) > 4 else "")
    if [o.path for o in rec.outs] != list(prep.outs):
        return "outputs changed"
    git = rec.env.get("git") or {}
    code = prep.code or {}
    if git.get("commit") != code.get("commit") or git.get("dirty") != code.get("dirty"):
        return "code version changed (git)"
    return "its last run's outputs are no longer stored"


def _param_changes(old: dict, new: dict) -> list[str]:
    out = []
    for f in sorted(set(old) | set(new)):
        a, b = old.get(f, {}), new.get(f, {})
        for k in sorted(set(a) | set(b)):
            if a.get(k, "∅") != b.get(k, "∅"):
                out.append(f"param {f}:{k} {_v(a, k)} -> {_v(b, k)}")
    return out


def _v(values: dict, k: str) -> str:
    return repr(values[k]) if k in values else "(none)"


# -- dry run -----------------------------------------------------------------------------


def _dry(repo, pipe, stages, force, warn, on_stage) -> ReproResult:
    results: dict[str, StageResult] = {}
    ws = repo.workspace
    for s in stages:
        ups = [u for u in pipe.upstream_of(s.name) if u in results
               and results[u].status in (WOULD_RUN, WOULD_RESTORE, WOULD_FAIL)]
        if ups:
            res = StageResult(s.name, WOULD_RUN,
                              f"after upstream stage {ups[0]} (its outputs change)")
        else:
            res = _dry_one(repo, s, ws, force, warn)
        results[s.name] = res
        on_stage(res)
    return ReproResult(tuple(results[s.name] for s in stages))


def _dry_one(repo, s, ws, force, warn) -> StageResult:
    try:
        prep = R.prepare(repo, spec_of(s, ws, force=force), warn)
    except PathNotFound as exc:
        return StageResult(s.name, WOULD_RUN, f"an input is missing ({exc})")
    except VfsError as exc:
        return StageResult(s.name, WOULD_FAIL, str(exc), exit_code=exc.exit_code)
    if force:
        return StageResult(s.name, WOULD_RUN, "forced")
    hit = R.find_cached(repo, prep)
    if hit is not None:
        if outputs_in_place(repo, hit, remember=False):
            return StageResult(s.name, UP_TO_DATE, "outputs match run " + hit.short, hit.id)
        return StageResult(s.name, WOULD_RESTORE, "cached run " + hit.short, hit.id)
    return StageResult(s.name, WOULD_RUN, why_run(repo, s, prep))
