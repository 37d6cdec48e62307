"""``vfs lineage``: which runs made a file version, from what, upstream."""

from __future__ import annotations

import json

import click

from .base import cli, emit_json, open_repo, workspace_path
from .format import fmt_time


@cli.command("lineage")
@click.argument("target", metavar="PATH[@REV]")
@click.option("--json", "fmt", flag_value="json", help="Print the lineage as JSON.")
@click.option("--dot", "fmt", flag_value="dot", help="Print a Graphviz DOT graph.")
@click.option("--mermaid", "fmt", flag_value="mermaid", help="Print a Mermaid flowchart.")
@click.option("--prov", "fmt", flag_value="prov",
              help="Print a W3C PROV-JSON document (entities, activities, agents).")
@click.option("--depth", type=click.IntRange(min=0), default=None,
              help="Follow at most this many runs upstream (default 32).")
@click.pass_context
def lineage_cmd(ctx, target, fmt, depth) -> None:
    """Show the run that produced PATH (at REV, default HEAD), its inputs, the runs
    that produced those, and so on upstream.

    \b
    Examples:
      vfs lineage model.pkl              # as a tree
      vfs lineage model.pkl@v1 --prov    # W3C PROV-JSON
      vfs lineage v1:model.pkl --dot | dot -Tsvg > lineage.svg

    A file inside a directory a run output was made by that run; a directory no
    run made lists the entries inside it that runs made.
    """
    from ..ops import lineage as L
    repo = open_repo(ctx)
    rev, _, path = L.resolve_target(repo, target, lambda p: workspace_path(repo, p))
    lin = L.lineage(repo, rev, path, depth=L.DEFAULT_DEPTH if depth is None else depth)
    if fmt in ("prov", "dot", "mermaid"):
        from ..ops import lineage_formats as F
        if fmt == "prov":
            click.echo(json.dumps(F.to_prov(lin), indent=2))
        else:
            click.echo(F.to_dot(lin) if fmt == "dot" else F.to_mermaid(lin), nl=False)
    elif fmt == "json":
        emit_json(lin.to_dict())
    else:
        for line in tree_lines(lin):
            click.echo(line)


def tree_lines(lin) -> list[str]:
    """The lineage as an indented tree, the file asked about first."""
    root = lin.root
    head = f"{root.path or '.'}  {root.id[:12]}  ({lin.rev} {lin.commit[:12]})"
    if not root.produced_by and not root.members:
        return [head + ": not produced by a recorded run"]
    out = [head]
    shown: set[str] = set()
    _children(lin, _art_children(lin, root), "", out, shown)
    if lin.truncated:
        out.append(f"(stopped {lin.depth} runs deep or at a large directory; "
                   "raise --depth to see more)")
    return out


def _art_children(lin, a) -> list[tuple[str, str]]:
    if a.produced_by:
        return [("run", a.produced_by)]
    return [("art", m) for m in a.members]


def _children(lin, items, prefix: str, out: list[str], shown: set[str]) -> None:
    for n, (kind, key) in enumerate(items):
        last = n == len(items) - 1
        branch, more = ("└─ ", "   ") if last else ("├─ ", "│  ")
        if kind == "run":
            s = lin.steps[key]
            r = s.run
            label = f"run {r.short} {r.name}  {fmt_time(r.start_ns)}  {s.command}"
            if key in shown:
                out.append(prefix + branch + f"run {r.short} {r.name} (shown above)")
                continue
            shown.add(key)
            out.append(prefix + branch + label)
            if not s.expanded:
                out.append(prefix + more + "└─ … inputs not followed (depth limit)")
                continue
            _children(lin, [("input", k + "\0" + role) for k, role in s.inputs],
                      prefix + more, out, shown)
        else:
            k, _, role = key.partition("\0")
            a = lin.artifacts[k]
            notes = [a.kind] if a.kind != "file" else []
            if role == "observed":
                notes.append("observed")
            if a.part_of:
                notes.append(f"in output {lin.artifacts[a.part_of].path}")
            sub = _art_children(lin, a)
            if not sub and kind == "input":
                notes.append("not produced by a recorded run")
            text = f"{a.path}  {a.id[:12]}" + (f"  [{', '.join(notes)}]" if notes else "")
            out.append(prefix + branch + text)
            _children(lin, sub, prefix + more, out, shown)
