"""Commands that run and inspect pipeline runs: run, runs (list, show, rm)."""

from __future__ import annotations

import sys

import click

from .base import cli, emit_json, info, open_repo, warn
from .format import fmt_time


@cli.command("run", context_settings={"ignore_unknown_options": True,
                                      "allow_interspersed_args": False})
@click.option("-n", "--name", default="", help="Name the run (default: the command's "
              "program name).")
@click.option("-d", "--dep", "deps", multiple=True, metavar="PATH",
              help="An input the command reads (repeatable). Its content id is recorded "
              "and checked again at the end; it must exist before the run.")
@click.option("-o", "--out", "outs", multiple=True, metavar="PATH",
              help="An output the command writes (repeatable), inside the workspace. "
              "Removed before the run (only if committed), snapshotted after it.")
@click.option("-p", "--params", "params", multiple=True, metavar="FILE[:KEY,...]",
              help="Record values of a YAML/JSON/TOML params file, whole or by keys "
              "(repeatable). The values are part of the cache key.")
@click.option("-M", "--metrics", "metrics", multiple=True, metavar="FILE",
              help="A metrics file (YAML/JSON/TOML) the command writes; an output "
              "whose values are recorded (repeatable).")
@click.option("--force", is_flag=True, help="Run even if a cached result exists.")
@click.option("--no-observe", is_flag=True,
              help="Do not record which files the command reads through versionfs mounts.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run_cmd(ctx, name, deps, outs, params, metrics, force, no_observe, command) -> None:
    """Run COMMAND and record the run: argv, params, inputs (declared, and those
    it read through versionfs mounts), outputs, metrics, environment, log.

    \b
    Example:
      vfs run -n train -d data/train.csv -p params.yaml:lr -o model.pkl \\
              -M metrics.json -- python train.py

    When a successful run with the same command, params, input ids, code version
    (git HEAD and uncommitted changes) and outputs exists and its outputs are
    still stored, they are restored instead (`cached: run ID`). On success the
    outputs, the workspace inputs and the metrics files are snapshotted in one
    commit that names the run. The command's exit status is passed through; a
    failed or interrupted run is recorded, never cached. Put the command after
    `--` when it has options of its own.
    """
    from ..ops.run import RunSpec, run
    repo = open_repo(ctx)
    spec = RunSpec(argv=list(command), name=name, deps=list(deps), outs=list(outs),
                   params=list(params), metrics=list(metrics), force=force,
                   observe=not no_observe)
    result = run(repo, spec, warn=warn, info=info, on_wait=info)
    rec = result.record
    if rec is not None:
        if result.undeclared:
            names = ", ".join(f"{i.path}" for i in result.undeclared[:5])
            more = f" and {len(result.undeclared) - 5} more" if len(result.undeclared) > 5 else ""
            warn(f"the run read files it did not declare with -d: {names}{more} "
                 f"(see 'vfs runs show {rec.short}')")
        if rec.status == "succeeded":
            info(f"run {rec.short} succeeded in {rec.duration:.2f} s; outputs in commit "
                 f"{rec.commit[:12]}")
        else:
            info(f"run {rec.short} {rec.status}: {rec.message}")
    sys.exit(result.exit_code)


@cli.group("runs", invoke_without_command=True)
@click.option("--name", default=None, help="Only runs with this name.")
@click.option("--status", type=click.Choice(["succeeded", "failed", "interrupted"]),
              default=None, help="Only runs that ended so.")
@click.option("-n", "--max-count", type=int, default=None, help="Show the newest N.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of runs.")
@click.pass_context
def runs_group(ctx, name, status, max_count, as_json) -> None:
    """List recorded runs, newest last: id, name, status, time, duration, params
    and metrics. Subcommands show one run or remove records."""
    if ctx.invoked_subcommand is not None:
        return
    from ..ops.run import list_runs
    repo = open_repo(ctx)
    recs = list_runs(repo, name=name, status=status)
    if max_count is not None:
        recs = recs[-max_count:] if max_count > 0 else []
    if as_json:
        emit_json([summary(r) for r in recs])
        return
    if not recs:
        info("no runs recorded yet; start one with 'vfs run -- COMMAND'")
        return
    for r in recs:
        vals = {**_flat(r.params), **_flat(r.metrics)}
        shown = " ".join(f"{k}={_short(v)}" for k, v in list(vals.items())[:6])
        click.echo(f"{r.short}  {fmt_time(r.start_ns)}  {r.status:<11} "
                   f"{r.duration:8.2f}s  {r.name:<16} {shown}".rstrip())


def summary(r) -> dict:
    """One run as ``vfs runs --json`` prints it (``ops.results``, shared with vfs ui)."""
    from ..ops.results import run_summary
    return run_summary(r)


def _flat(groups: dict) -> dict:
    """``{file: {key: v}}`` as ``{key: v}`` (``file:key`` where keys repeat)."""
    seen: dict = {}
    for values in groups.values():
        for k in values:
            seen[k] = seen.get(k, 0) + 1
    out = {}
    for f, values in groups.items():
        for k, v in values.items():
            out[k if seen[k] == 1 else f"{f}:{k}"] = v
    return out


def _short(v) -> str:
    text = f"{v:.4g}" if isinstance(v, float) else str(v)
    return text if len(text) <= 24 else text[:21] + "..."


@runs_group.command("show")
@click.argument("run_id")
@click.option("--log", "show_log", is_flag=True, help="Print the run's output log too.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
@click.pass_context
def runs_show(ctx, run_id, show_log, as_json) -> None:
    """Show one run: command, environment, params, declared and observed inputs,
    outputs, metrics (and with --log its output)."""
    from ..ops.run import get_run
    repo = open_repo(ctx)
    r = get_run(repo, run_id)
    if as_json:
        emit_json(r.to_dict())
        return
    import shlex
    click.echo(f"run {r.id}")
    click.echo(f"name:     {r.name}")
    click.echo(f"command:  {shlex.join(r.argv)}")
    click.echo(f"cwd:      {r.cwd or '.'}")
    click.echo(f"status:   {r.status} (exit {r.exit_code})"
               + (f": {r.message}" if r.message and r.status != "succeeded" else ""))
    click.echo(f"started:  {fmt_time(r.start_ns)}   duration {r.duration:.2f} s")
    if r.commit:
        click.echo(f"commit:   {r.commit}")
    env = r.env
    git = env.get("git")
    click.echo(f"env:      python {env.get('python')} on {env.get('host')} "
               f"({env.get('platform')})")
    if git:
        click.echo(f"code:     git {git['commit'][:12]}{' (dirty)' if git['dirty'] else ''}")
    for title, groups in (("params", r.params), ("metrics", r.metrics)):
        if groups:
            click.echo(f"{title}:")
            for f, values in groups.items():
                for k, v in values.items():
                    click.echo(f"  {f}:{k} = {v}")
    for title, items in (("inputs", r.deps), ("observed", r.observed)):
        if items:
            click.echo(f"{title}:")
            for i in items:
                where = f"  [{i.origin}{' ' + i.commit[:12] if i.commit else ''}]"
                click.echo(f"  {i.id[:12]}  {i.path}{where}")
    if r.changed:
        click.echo("changed during the run: " + ", ".join(r.changed))
    if r.outs:
        click.echo("outputs:")
        for o in r.outs:
            click.echo(f"  {o.id[:12]}  {o.path}")
    if show_log:
        click.echo("log:" + (f" ({r.log_dropped} bytes not kept)" if r.log_dropped else ""))
        click.echo(r.log, nl=False)


@runs_group.command("rm")
@click.argument("run_ids", nargs=-1, required=True)
@click.pass_context
def runs_rm(ctx, run_ids) -> None:
    """Remove run records; 'vfs gc' can then free outputs nothing else keeps."""
    from ..ops.run import get_run, remove_runs
    repo = open_repo(ctx)
    recs = [get_run(repo, i) for i in run_ids]
    remove_runs(repo, recs, on_wait=info)
    for r in recs:
        info(f"removed run {r.short} ({r.name})")


# -- vfs runs compare (two runs side by side) -------------------------------------------


@runs_group.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "fmt", flag_value="json", help="Print the comparison as JSON.")
@click.option("--md", "fmt", flag_value="md", help="Print Markdown tables.")
@click.option("--all", "show_all", is_flag=True,
              help="Show unchanged params and metrics too (text output).")
@click.pass_context
def runs_compare(ctx, run_a, run_b, fmt, show_all) -> None:
    """Compare run A (old) with run B (new): params and metrics side by side with
    the change of numbers (changed rows marked *), then what else differs
    (command, working directory, code version, inputs, outputs, status)."""
    from ..ops.compare import compare_runs
    from ..ops.run import get_run
    repo = open_repo(ctx)
    cmp = compare_runs(get_run(repo, run_a), get_run(repo, run_b))
    if fmt == "json":
        emit_json(cmp.to_dict())
    elif fmt == "md":
        click.echo("\n".join(_compare_md(cmp)))
    else:
        click.echo("\n".join(_compare_text(cmp, show_all)))


_MARK = {"same": " ", "changed": "*", "added": "+", "removed": "-"}


def _cell(v, missing: bool = False) -> str:
    if missing:
        return "-"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _value_cells(row) -> list[str]:
    change = "" if row.change is None or row.change == 0 else \
        (f"{row.change:+.6g}" if isinstance(row.change, float) else f"{row.change:+d}")
    return [f"{row.file}:{row.key}", _cell(row.old, row.state == "added"),
            _cell(row.new, row.state == "removed"), change]


def _brief_lines(cmp) -> list[str]:
    out = []
    for name, (old, new) in cmp.other.items():
        out.append(f"{name}: {old} -> {new}")
    for title, rows in (("inputs", cmp.inputs), ("outputs", cmp.outputs)):
        for r in rows:
            ids = f"{(r.old or '-')[:12]} -> {(r.new or '-')[:12]}"
            out.append(f"{title[:-1]} {r.state}: {r.path}  {ids}")
    return out


def _compare_text(cmp, show_all: bool) -> list[str]:
    a, b = cmp.a, cmp.b
    out = [f"A: run {a.short} {a.name}  {fmt_time(a.start_ns)}",
           f"B: run {b.short} {b.name}  {fmt_time(b.start_ns)}"]
    for title, rows in (("params", cmp.params), ("metrics", cmp.metrics)):
        shown = [r for r in rows if show_all or r.changed]
        if not rows:
            continue
        if not shown:
            out.append(f"{title}: {len(rows)} unchanged")
            continue
        cells = [[title, "A", "B", "change"]] + [_value_cells(r) for r in shown]
        marks = [" "] + [_MARK[r.state] for r in shown]
        widths = [max(len(c[i]) for c in cells) for i in range(4)]
        for mark, row in zip(marks, cells):
            out.append(f"{mark} " + "  ".join(c.ljust(w) for c, w in zip(row, widths))
                       .rstrip())
    brief = _brief_lines(cmp)
    out += brief or ["same command, code version, inputs and outputs"]
    return out


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _compare_md(cmp) -> list[str]:
    out = [f"Run A: `{cmp.a.short}` {cmp.a.name}; run B: `{cmp.b.short}` {cmp.b.name}", ""]
    for title, rows in (("Param", cmp.params), ("Metric", cmp.metrics)):
        if not rows:
            continue
        out += [f"| Path | {title} | A | B | Change |", "|---|---|---|---|---|"]
        for r in rows:
            key, old, new, change = _value_cells(r)
            if r.changed:
                key = f"**{key.split(':', 1)[1]}**"
            else:
                key = key.split(":", 1)[1]
            out.append("| " + " | ".join(_md_escape(c) for c in
                                         (r.file, key, old, new, change)) + " |")
        out.append("")
    brief = _brief_lines(cmp)
    out += [f"- {_md_escape(line)}" for line in brief] or \
        ["- same command, code version, inputs and outputs"]
    return out
