"""The diff command: what changed between two revisions, or a revision and the workspace."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from ..errors import NotADirectory, PathNotFound, UnknownRevision, UsageError
from ..records.model import Kind
from ..repo.repository import Repo
from .base import cli, emit_json, open_repo, progress_factory, warn, workspace_path
from .format import fmt_bytes

if TYPE_CHECKING:
    from ..ops.diff import DiffResult


class _DiffCommand(click.Command):
    """Records how many arguments came before ``--`` (click drops the ``--``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            before = args[: args.index("--")]
            # diff's options are all flags, so every other word before -- is a revision
            ctx.meta["vfs.diff.revs"] = sum(1 for a in before
                                            if a == "-" or not a.startswith("-"))
        return super().parse_args(ctx, args)


@cli.command("diff", cls=_DiffCommand)
@click.argument("args", nargs=-1, metavar="[A] [B] [--] [PATH]...")
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
    The first arguments that name revisions are A and B; the rest are paths (write
    ./NAME for a path that looks like a revision, or put revisions before '--' and
    paths after it). Without '--' an argument that is neither a revision nor a path
    in the workspace or in the compared commits is an error. Paths are relative to
    the current directory inside the workspace, else to the repository root.
    """
    if as_stat and as_json:
        raise UsageError("--stat and --json exclude each other; pick one")
    repo = open_repo(ctx)
    a, b, paths = _split_args(repo, args, ctx.meta.get("vfs.diff.revs"))
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


def _split_args(repo: Repo, args, revs: int | None = None
                ) -> tuple[str, str | None, list[str]]:
    """``(A, B or None, paths)`` from the positional arguments; ``revs`` is the
    number of them before ``--`` (None without one).

    Without ``--`` the leading arguments that resolve are A and B, and every other
    one must be a path that exists in the workspace or in A or B: a mistyped
    revision is then an error, never an empty diff of a path that does not exist.
    """
    if revs is not None:
        if revs > 2:
            raise UsageError(f"diff takes at most two revisions before '--', got "
                             f"{revs}: {' '.join(args[:revs])}")
        for rev in args[:revs]:
            repo.resolve(rev)  # an unknown one fails here, with the resolver's hint
        a = args[0] if revs else "HEAD"
        b = args[1] if revs == 2 else None
        return a, b, [workspace_path(repo, p) for p in args[revs:]]
    if not args:
        return "HEAD", None, []
    rest = list(args)
    found = []  # the leading arguments that are revisions, at most two
    unknown: dict[str, str] = {}  # argument -> the resolver's hint
    while rest and len(found) < 2:
        try:
            repo.resolve(rest[0])
        except UnknownRevision as exc:
            hint = _unknown_hint(rest[0], exc)
            if hint is None:  # a revision, but a bad one ('HEAD~9', 'no commit yet')
                raise
            unknown[rest[0]] = hint
            break
        found.append(rest.pop(0))
    a = found[0] if found else "HEAD"
    b = found[1] if len(found) > 1 else None
    paths = [(p, workspace_path(repo, p)) for p in rest]
    if paths:
        commits = [repo.resolve(a)] + ([repo.resolve(b)] if b is not None else [])
        for arg, path in paths:
            if not _path_exists(repo, path, commits):
                hint = unknown.get(arg)
                if hint is None:
                    if _is_revision(repo, arg):
                        raise UsageError(f"diff compares two revisions and {arg!r} is a "
                                         f"third; write ./{arg} for a path of that name")
                    hint = "; 'vfs log' lists commits and 'vfs tag' lists tags"
                raise UnknownRevision(f"unknown revision {arg!r} and no such path in "
                                      f"the workspace or the compared commits{hint}")
    return a, b, [path for _, path in paths]


def _unknown_hint(arg: str, exc: UnknownRevision) -> str | None:
    """The resolver's advice for a name that matched nothing (e.g. "; did you mean
    v1?"), or None when ``exc`` says something else about a valid-looking name."""
    prefix = f"unknown revision {arg.strip()!r}"
    text = str(exc)
    return text[len(prefix):] if text.startswith(prefix) else None


def _is_revision(repo: Repo, arg: str) -> bool:
    try:
        repo.resolve(arg)
        return True
    except UnknownRevision:
        return False


def _path_exists(repo: Repo, path: str, commits) -> bool:
    """Whether ``path`` names something on disk in the workspace or in one of
    ``commits`` (as git, which looks at the working tree even for two revisions)."""
    if not path:
        return True  # the root
    if repo.workspace is not None and \
            os.path.lexists(os.path.join(repo.workspace, path)):
        return True
    for cid in commits:
        try:
            repo.entry(cid, path)
            return True
        except (PathNotFound, NotADirectory):
            pass
    return False


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
