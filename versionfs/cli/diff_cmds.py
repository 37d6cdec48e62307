"""The diff command: what changed between two revisions, or a revision and the workspace."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from ..errors import UnknownRevision, UsageError
from ..records.model import Kind
from ..repo.repository import Repo
from .base import cli, emit_json, open_repo, progress_factory, warn, workspace_path
from .format import fmt_bytes

if TYPE_CHECKING:
    from ..ops.diff import DiffResult


@cli.command("diff")
@click.argument("args", nargs=-1, metavar="[A] [B] [PATH]...")
@click.option("--stat", "as_stat", is_flag=True, help="Only print counts and sizes.")
@click.option("--json", "as_json", is_flag=True, help="Print the changes as JSON.")
@click.pass_context
def diff_cmd(ctx: click.Context, args: tuple[str, ...], as_stat: bool, as_json: bool) -> None:
    """Show what changed from revision A (default HEAD) to revision B (default: the
    workspace), optionally only below PATHs.

    \b
    Lines read:  A path   added        D path   removed
                 M path   modified     R old -> new   renamed (same content)
    A directory is listed (path/) only when it appears or disappears empty.
    Arguments after A that name a revision are B; the rest are paths (write
    ./NAME for a path that looks like a revision). Paths are relative to the
    current directory inside the workspace, else to the repository root.
    """
    if as_stat and as_json:
        raise UsageError("--stat and --json exclude each other; pick one")
    repo = open_repo(ctx)
    a, b, paths = _split_args(repo, args)
    old_root = repo.commit(repo.resolve(a)).tree
    if b is None:
        new_src, new_root = _workspace(repo, paths)
    else:
        new_src, new_root = repo, repo.commit(repo.resolve(b)).tree
    from ..ops.diff import diff_trees, to_json
    result = diff_trees(repo, old_root, new_src, new_root, paths=paths or None)
    if as_json:
        emit_json(to_json(result))
    elif as_stat:
        for line in stat_lines(result):
            click.echo(line)
    else:
        for line in change_lines(result):
            click.echo(line)
        click.echo(summary(result))


def _split_args(repo: Repo, args) -> tuple[str, str | None, list[str]]:
    """``(A, B or None, paths)`` from the positional arguments."""
    if not args:
        return "HEAD", None, []
    a, rest = args[0], list(args[1:])
    b = None
    if rest:
        try:
            repo.resolve(rest[0])
            b = rest.pop(0)
        except UnknownRevision:
            pass
    return a, b, [workspace_path(repo, p) for p in rest]


def _workspace(repo: Repo, paths: list[str]):
    if repo.workspace is None:
        raise UsageError("a bare repository has no workspace: give two revisions, "
                         "as in 'vfs diff v1 v2'")
    from ..workspace.scan import scan_workspace
    # Scanning only PATHS is quicker, but possible only when they all exist there.
    scan_paths = paths if paths and all(
        os.path.lexists(os.path.join(repo.workspace, p)) for p in paths) else None
    work = scan_workspace(repo, paths=scan_paths, warn=warn,
                          progress_factory=progress_factory("scanning"))
    return work, work.root


# --------------------------------------------------------------------------
# output


def _detail(c) -> str:
    o, n = c.old, c.new
    bits = []
    for why in c.reasons:
        if why == "mode":
            bits.append(f"mode {o.mode:04o} -> {n.mode:04o}")
        elif why == "kind":
            bits.append(f"{o.kind.name.lower()} -> {n.kind.name.lower()}")
        elif why == "target" and n.kind is Kind.SYMLINK:
            bits.append(f"-> {os.fsdecode(n.target)}")
    return f"  ({', '.join(bits)})" if bits else ""


def change_lines(r: DiffResult) -> list[str]:
    """One line per change, in path order: ``A``/``D``/``M path``, ``R old -> new``."""
    rows = [(c.path, f"A {c.path}") for c in r.added]
    rows += [(c.path, f"D {c.path}") for c in r.removed]
    rows += [(c.path, f"M {c.path}{_detail(c)}") for c in r.modified]
    rows += [(a, f"R {a} -> {b}") for a, b in r.renamed]
    rows.sort(key=lambda row: row[0].encode("utf-8", "surrogateescape"))
    return [line for _, line in rows]


def _n(count: int, what: str = "path") -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def summary(r: DiffResult) -> str:
    s = r.stats
    if r.empty:
        return "no changes"
    parts = [f"{n} {what}" for n, what in ((s.added, "added"), (s.removed, "removed"),
                                             (s.modified, "modified"), (s.renamed, "renamed"))
             if n]
    sizes = []
    if s.added:
        sizes.append(f"+{fmt_bytes(s.added_bytes)}")
    if s.removed:
        sizes.append(f"-{fmt_bytes(s.removed_bytes)}")
    if s.modified:
        sizes.append(f"{fmt_bytes(s.changed_bytes)} changed in modified files")
    return f"{', '.join(parts)}" + (f" ({', '.join(sizes)})" if sizes else "")


def stat_lines(r: DiffResult) -> list[str]:
    s = r.stats
    return [
        f"added     {_n(s.added):>14}  {fmt_bytes(s.added_bytes):>11}",
        f"removed   {_n(s.removed):>14}  {fmt_bytes(s.removed_bytes):>11}",
        f"modified  {_n(s.modified):>14}  {fmt_bytes(s.modified_bytes):>11}"
        f"  ({fmt_bytes(s.changed_bytes)} changed at chunk level)",
        f"renamed   {_n(s.renamed):>14}  {fmt_bytes(s.renamed_bytes):>11}",
    ]
