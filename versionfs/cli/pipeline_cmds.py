"""Commands for pipelines (``vfs.yaml``): repro, dag."""

from __future__ import annotations

import sys

import click

from .base import cli, emit_json, info, open_repo, warn


@cli.command("repro")
@click.argument("stages", nargs=-1)
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Run up to N independent stages at once.")
@click.option("--force", is_flag=True, help="Run every selected stage, cached or not.")
@click.option("--dry-run", is_flag=True,
              help="Say what would run and why, without running or restoring anything.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the stages' results as JSON (commands' output goes to stderr).")
@click.pass_context
def repro_cmd(ctx, stages, jobs, force, dry_run, as_json) -> None:
    """Bring the outputs of vfs.yaml's stages up to date: STAGE... and the stages
    upstream of them (default: all), in dependency order.

    \b
    Each stage is a `vfs run` with the stage's cmd, deps, outs, params and
    metrics: a stage whose inputs match a stored run is "up to date" (its
    outputs are in place) or "cached" (they are restored); only stages whose
    deps, params, command or code changed run again. A failed stage stops the
    stages below it; the exit status is then 1. See docs/pipelines.md.
    """
    import gc
    # Scanning a stage's deps allocates a few objects per file and no cycles; the
    # default gen-0 threshold (700) made a no-op repro over 100,000 files run
    # collections for 0.25 s of its ~1.2 s. A short-lived command can wait.
    gc.set_threshold(200_000, 20, 20)
    from ..ops.repro import repro
    repo = open_repo(ctx)
    out = sys.stderr.buffer if as_json else None
    result = repro(repo, list(stages), jobs=jobs, force=force, dry_run=dry_run,
                   warn=warn, info=info, on_stage=_report, stdout=out)
    if as_json:
        emit_json({"ok": result.ok, "dry_run": dry_run,
                   "stages": [r.to_dict() for r in result.stages]})
    else:
        _table(result.stages)
    sys.exit(0 if result.ok else 1)


def _report(r) -> None:
    took = f" in {r.duration:.2f} s" if r.status in ("ran", "failed") else ""
    why = f": {r.reason}" if r.reason else ""
    info(f"stage {r.stage}: {r.status}{took}{why}")


def _table(results) -> None:
    if not results:
        click.echo("no stages")
        return
    w = max(5, *(len(r.stage) for r in results))
    click.echo(f"{'stage':<{w}}  {'status':<13} {'run':<12}  reason")
    for r in results:
        click.echo(f"{r.stage:<{w}}  {r.status:<13} {(r.run_id or '-')[:12]:<12}  "
                   f"{r.reason}".rstrip())


@cli.command("dag")
@click.option("--dot", "fmt", flag_value="dot", help="Graphviz dot.")
@click.option("--mermaid", "fmt", flag_value="mermaid", help="A Mermaid flowchart.")
@click.option("--json", "fmt", flag_value="json", help="Stages and edges as JSON.")
@click.pass_context
def dag_cmd(ctx, fmt) -> None:
    """Show the pipeline of vfs.yaml: its stages and which reads what another
    makes (a tree from the stages that depend on no other, by default)."""
    from ..ops.pipeline import load
    repo = open_repo(ctx)
    if repo.workspace is None:
        from ..errors import UsageError
        raise UsageError("vfs dag needs a workspace; this is a bare repository")
    pipe = load(repo.workspace)
    if fmt == "json":
        from ..ops.results import pipeline as pipeline_json
        emit_json(pipeline_json(pipe))
    elif fmt == "dot":
        click.echo(_dot(pipe))
    elif fmt == "mermaid":
        click.echo(_mermaid(pipe))
    else:
        click.echo(_tree(pipe))


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot(pipe) -> str:
    lines = ["digraph pipeline {", "  rankdir=TB;", "  node [shape=box];"]
    lines += [f"  {_q(s.name)};" for s in pipe.stages]
    lines += [f"  {_q(e.upstream)} -> {_q(e.downstream)} [label={_q(', '.join(e.paths))}];"
              for e in pipe.edges]
    return "\n".join(lines + ["}"])


def _mermaid(pipe) -> str:
    ids = {s.name: f"s{i}" for i, s in enumerate(pipe.stages)}
    lines = ["flowchart TD"]
    lines += [f'  {ids[s.name]}["{s.name}"]' for s in pipe.stages]
    lines += [f'  {ids[e.upstream]} -->|"{", ".join(e.paths)}"| {ids[e.downstream]}'
              for e in pipe.edges]
    return "\n".join(lines)


def _tree(pipe) -> str:
    """Each stage with no upstream, its downstream stages below it (via the paths
    they read); a stage already shown is not expanded again."""
    if not pipe.stages:
        return "(no stages)"
    down: dict[str, list] = {s.name: [] for s in pipe.stages}
    for e in pipe.edges:
        down[e.upstream].append(e)
    lines: list[str] = []
    shown: set[str] = set()

    def walk(name: str, prefix: str) -> None:
        kids = down[name]
        for i, e in enumerate(kids):
            last = i == len(kids) - 1
            again = e.downstream in shown
            lines.append(f"{prefix}{'└── ' if last else '├── '}{e.downstream}  "
                         f"(reads {', '.join(e.paths)}){' ...' if again and down[e.downstream] else ''}")
            if not again:
                shown.add(e.downstream)
                walk(e.downstream, prefix + ("    " if last else "│   "))

    for s in pipe.stages:
        if not pipe.upstream_of(s.name):
            lines.append(s.name)
            shown.add(s.name)
            walk(s.name, "")
    return "\n".join(lines)
