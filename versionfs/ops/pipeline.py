"""Pipelines: ``vfs.yaml`` parsed and checked into stages and the graph between them.

``vfs.yaml`` in the workspace root::

    stages:
      train:
        cmd: python train.py          # a string runs under `sh -c`; a list is argv
        deps: [data/prepared, train.py]
        outs: [model.json]
        params: [params.yaml:train]   # FILE, FILE:KEY,KEY or {FILE: [KEY, ...]}
        metrics: [train.json]
        wdir: .                       # where cmd runs and paths start (default: root)
    python: [stages.py]               # modules declaring stages with @versionfs.stage

A stage depends on another when one of its deps equals, lies inside or contains one
of the other's outputs (outputs include metrics files). Refused, naming the stage:
an unknown key, a missing or empty cmd, an output claimed by two stages (or lying
inside another's), a dep that is also the stage's own output, a cycle (named), and,
before ``repro`` runs anything, a dep nobody outputs that does not exist
(``check_inputs``). Nothing here runs a stage: see ``ops/repro``.
Thread-safety: pure functions over frozen values (loading Python stages imports
user code, so ``load`` belongs to one thread).
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass

from ..errors import PipelineInvalid, UsageError
from ..pystage import load_module
from . import params as P

__all__ = ["FILENAME", "Stage", "Edge", "Pipeline", "load", "parse", "param_specs",
           "check_inputs", "overlaps"]

FILENAME = "vfs.yaml"
TOP_KEYS = ("stages", "python")
STAGE_KEYS = ("cmd", "deps", "outs", "params", "metrics", "wdir")
RUNNER = "versionfs.stage_runner"


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage. ``deps``/``outs``/``metrics`` are workspace-relative (resolved
    against ``wdir``); ``spec_*`` keep them as written, relative to ``wdir``."""

    name: str
    argv: tuple[str, ...]
    wdir: str                     # workspace-relative, "" is the root
    deps: tuple[str, ...]
    outs: tuple[str, ...]         # declared outs, metrics files not included
    metrics: tuple[str, ...]
    params: tuple[str, ...]       # "FILE[:KEY,...]" relative to wdir
    spec_deps: tuple[str, ...]
    spec_outs: tuple[str, ...]
    spec_metrics: tuple[str, ...]
    source: str = FILENAME        # where it was declared
    cmd: str = ""                 # the command as written, for display

    @property
    def products(self) -> tuple[str, ...]:
        return self.outs + self.metrics


@dataclass(frozen=True, slots=True)
class Edge:
    """``downstream`` reads ``paths`` that ``upstream`` outputs (or lie around them)."""

    upstream: str
    downstream: str
    paths: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Pipeline:
    stages: tuple[Stage, ...]     # in dependency order (declaration order among equals)
    edges: tuple[Edge, ...]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        names = [s.name for s in self.stages]
        close = difflib.get_close_matches(name, names, 1)
        raise UsageError(f"no stage {name!r} in {FILENAME}"
                         + (f"; did you mean {close[0]!r}?" if close else
                            f" (stages: {', '.join(names) or 'none'})"))

    def upstream_of(self, name: str) -> list[str]:
        return [e.upstream for e in self.edges if e.downstream == name]

    def select(self, names: list[str] | None) -> list[Stage]:
        """The named stages and everything upstream of them, in order (all when
        ``names`` is empty)."""
        if not names:
            return list(self.stages)
        want: set[str] = set()
        todo = [self.stage(n).name for n in names]
        while todo:
            n = todo.pop()
            if n not in want:
                want.add(n)
                todo += self.upstream_of(n)
        return [s for s in self.stages if s.name in want]


def overlaps(a: str, b: str) -> bool:
    """Whether workspace paths ``a`` and ``b`` are equal or one lies inside the other."""
    return a == b or not a or not b or a.startswith(b + "/") or b.startswith(a + "/")


# -- loading --------------------------------------------------------------------------


def load(workspace: str) -> Pipeline:
    """The pipeline of ``workspace/vfs.yaml`` (and the Python modules it names)."""
    path = os.path.join(workspace, FILENAME)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise PipelineInvalid(f"no {FILENAME} in the workspace {workspace}; write one "
                              "naming the stages (see docs/pipelines.md)",
                              path=FILENAME) from None
    except OSError as exc:
        raise PipelineInvalid(f"cannot read {path}: {exc.strerror}", path=FILENAME) from None
    return parse(text, workspace)


def parse(text: str, workspace: str) -> Pipeline:
    import yaml
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise PipelineInvalid(f"{FILENAME} is not valid YAML: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PipelineInvalid(f"{FILENAME} must be a map with 'stages:'")
    _known(data, TOP_KEYS, f"{FILENAME}")
    raw = data.get("stages") or {}
    if not isinstance(raw, dict):
        raise PipelineInvalid(f"{FILENAME}: 'stages' must map stage names to stages")
    stages = [_stage(str(name), body, workspace) for name, body in raw.items()]
    for mod in _strings(data.get("python") or [], f"{FILENAME}: python"):
        stages += _python_stages(workspace, mod, {s.name for s in stages})
    return build(stages)


def _known(body: dict, keys, where: str) -> None:
    for k in body:
        if k not in keys:
            close = difflib.get_close_matches(str(k), keys, 1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(keys)}"
            raise PipelineInvalid(f"{where}: unknown key {k!r} ({hint})")


def _stage(name: str, body, workspace: str) -> Stage:
    where = f"stage {name}"
    if not name or any(c.isspace() or c in "/:" for c in name):
        raise PipelineInvalid(f"{where}: a stage name may not be empty or hold spaces, "
                              "'/' or ':'")
    if not isinstance(body, dict):
        raise PipelineInvalid(f"{where}: must be a map with at least 'cmd'")
    _known(body, STAGE_KEYS, where)
    cmd = body.get("cmd")
    if cmd is None or cmd == "" or cmd == []:
        raise PipelineInvalid(f"{where}: no cmd; give the command to run "
                              "(e.g. cmd: python train.py)")
    if isinstance(cmd, str):
        argv, shown = ("sh", "-c", cmd), cmd
    elif isinstance(cmd, list) and all(isinstance(a, (str, int, float)) for a in cmd):
        argv = tuple(str(a) for a in cmd)
        import shlex
        shown = shlex.join(argv)
    else:
        raise PipelineInvalid(f"{where}: cmd must be a string (run by sh -c) or a list "
                              "of arguments")
    wdir = body.get("wdir") or ""
    if not isinstance(wdir, str):
        raise PipelineInvalid(f"{where}: wdir must be a path relative to the workspace")
    wdir = _ws_path(wdir, "", where, "wdir", allow_root=True)
    deps = _strings(body.get("deps") or [], f"{where}: deps")
    outs = _strings(body.get("outs") or [], f"{where}: outs")
    metrics = _strings(body.get("metrics") or [], f"{where}: metrics")
    params = param_specs(body.get("params") or [], where)
    return Stage(name, argv, wdir,
                 tuple(_ws_path(p, wdir, where, "dep", allow_root=True) for p in deps),
                 tuple(_ws_path(p, wdir, where, "output") for p in outs),
                 tuple(_ws_path(p, wdir, where, "metrics file") for p in metrics),
                 tuple(params), tuple(deps), tuple(outs), tuple(metrics), FILENAME, shown)


def _strings(value, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PipelineInvalid(f"{where} must be a list of paths")
    return list(value)


def _ws_path(p: str, wdir: str, where: str, what: str, *, allow_root=False) -> str:
    """``p`` (relative to ``wdir``) as a workspace-relative path."""
    if os.path.isabs(p):
        raise PipelineInvalid(f"{where}: {what} {p} must be relative (to the stage's "
                              "wdir, itself relative to the workspace root)")
    full = os.path.normpath(os.path.join(wdir, p))
    if full == ".":
        full = ""
    if full == ".." or full.startswith("../") or (not full and not allow_root):
        raise PipelineInvalid(f"{where}: {what} {p} is not inside the workspace")
    return full


def param_specs(value, where: str) -> list[str]:
    """Params as ``vfs run -p`` specs: a list of ``FILE``/``FILE:KEY,KEY`` strings
    and ``{FILE: [KEY, ...]}`` maps (a map alone is taken as one such item)."""
    items = [value] if isinstance(value, (dict, str)) else value
    if not isinstance(items, (list, tuple)):
        raise PipelineInvalid(f"{where}: params must be a list of FILE[:KEY,...] or "
                              "{FILE: [KEY, ...]}")
    out = []
    for item in items:
        if isinstance(item, str):
            try:
                P.parse_spec(item)
            except UsageError as exc:
                raise PipelineInvalid(f"{where}: {exc}") from None
            out.append(item)
        elif isinstance(item, dict):
            for f, keys in item.items():
                if keys is None:
                    out.append(str(f))
                elif isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys):
                    out.append(f"{f}:{','.join(keys)}")
                else:
                    raise PipelineInvalid(f"{where}: params {f}: give a list of keys, "
                                          "or nothing for the whole file")
        else:
            raise PipelineInvalid(f"{where}: params must be a list of FILE[:KEY,...] or "
                                  "{FILE: [KEY, ...]}")
    return out


def _python_stages(workspace: str, rel: str, taken: set[str]) -> list[Stage]:
    mod = _ws_path(rel, "", f"{FILENAME}: python", "module")
    out = []
    for d in load_module(os.path.join(workspace, mod), mod):
        where = f"stage {d.name} ({mod})"
        if d.name in taken:
            raise PipelineInvalid(f"{where}: a stage of that name is already declared; "
                                  "rename one (@stage(name=...))")
        taken.add(d.name)
        argv = (sys.executable, "-m", RUNNER, f"{mod}:{d.func}")
        deps = (mod, *d.deps)
        out.append(Stage(
            d.name, argv, "",
            tuple(_ws_path(p, "", where, "dep", allow_root=True) for p in deps),
            tuple(_ws_path(p, "", where, "output") for p in d.outs),
            tuple(_ws_path(p, "", where, "metrics file") for p in d.metrics),
            tuple(param_specs(list(d.params), where)), deps, d.outs, d.metrics, mod,
            f"python -m {RUNNER} {mod}:{d.func}"))
    return out


# -- the graph ----------------------------------------------------------------------


def build(stages: list[Stage]) -> Pipeline:
    """Check outputs and deps, find the edges, order the stages (or name a cycle)."""
    owner: list[tuple[str, str]] = []   # (output, stage)
    for s in stages:
        for o in s.products:
            for other, name in owner:
                if not overlaps(o, other):
                    continue
                if name == s.name:
                    raise PipelineInvalid(f"stage {s.name}: outputs {other} and {o} "
                                          "overlap; declare each path once")
                what = f"both declare output {o}" if o == other else \
                    f"declare overlapping outputs {other} and {o}"
                raise PipelineInvalid(f"stage {name} and stage {s.name} {what}; a path "
                                      "may have only one producer")
            owner.append((o, s.name))
        for d in s.deps:
            for o in s.products:
                if overlaps(d, o):
                    raise PipelineInvalid(f"stage {s.name}: {d or '.'} is both a dep and an "
                                          f"output ({o}); a stage must not overwrite "
                                          "what it reads")
    edges = []
    for down in stages:
        for up in stages:
            if up is down:
                continue
            paths = sorted({d for d in down.deps for o in up.products if overlaps(d, o)})
            if paths:
                edges.append(Edge(up.name, down.name, tuple(paths)))
    ordered = _order(stages, edges)
    at = {s.name: i for i, s in enumerate(ordered)}
    edges.sort(key=lambda e: (at[e.upstream], at[e.downstream]))
    return Pipeline(tuple(ordered), tuple(edges))


def _order(stages: list[Stage], edges: list[Edge]) -> list[Stage]:
    """Kahn's topological sort, stable in declaration order; a cycle is named."""
    ups = {s.name: {e.upstream for e in edges if e.downstream == s.name} for s in stages}
    done: list[Stage] = []
    placed: set[str] = set()
    while len(done) < len(stages):
        ready = [s for s in stages if s.name not in placed and ups[s.name] <= placed]
        if not ready:
            cycle = _cycle({n: u - placed for n, u in ups.items() if n not in placed})
            raise PipelineInvalid("stages form a cycle: " + " -> ".join(cycle)
                                  + " (each reads an output of the one before); "
                                  "remove one of those deps")
        done.append(ready[0])
        placed.add(ready[0].name)
    return done


def _cycle(ups: dict[str, set[str]]) -> list[str]:
    """A cycle in a graph where every node has an upstream, in reading order:
    ``a -> b -> a`` means b reads a's output and a reads b's."""
    start = min(ups)
    path, seen = [start], {start: 0}
    while True:
        nxt = min(ups[path[-1]])
        if nxt in seen:
            loop = path[seen[nxt]:] + [nxt]
            return list(reversed(loop))
        seen[nxt] = len(path)
        path.append(nxt)


def check_inputs(pipeline: Pipeline, stages: list[Stage], workspace: str) -> None:
    """Refuse a dep of ``stages`` that no stage outputs and that does not exist."""
    products = [o for s in pipeline.stages for o in s.products]
    for s in stages:
        for d, shown in zip(s.deps, s.spec_deps):
            if any(overlaps(d, o) for o in products):
                continue
            if not os.path.lexists(os.path.join(workspace, d)):
                raise PipelineInvalid(
                    f"stage {s.name}: dep {shown} does not exist and no stage outputs it; "
                    "create it or add the stage that makes it", path=d)
