"""Commands that create and inspect versions: init, snapshot, status, log, show, ls,
cat, tag, branch."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import time

import click

from ..errors import IsADirectory, UsageError
from ..records.model import Kind
from .base import (
    cli, emit_json, info, open_repo, progress_factory, warn, workspace_path,
)
from .format import fmt_bytes, fmt_time, plural, short_summary


@cli.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))
@click.option("--bare", is_flag=True, help="Create a repository with no workspace "
              "(a place to push to, or to serve mounts from).")
@click.pass_context
def init(ctx, path: str, bare: bool) -> None:
    """Create an empty repository in PATH (default: the current directory, or the
    directory given with -C).

    PATH becomes the workspace and its data lives in PATH/.vfs; with --bare, PATH
    itself is the repository.
    """
    from ..repo.repository import Repo
    repo = Repo.init(os.path.join(ctx.obj["path"], path), bare=bare)
    where = repo.vfs_dir
    repo.close()
    click.echo(f"initialized empty versionfs repository in {where}")


@cli.command("snapshot")
@click.argument("paths", nargs=-1)
@click.option("-m", "--message", default="", help="Describe the version.")
@click.option("-t", "--tag", default=None, help="Also tag the new commit NAME.")
@click.option("--allow-empty", is_flag=True,
              help="Record a commit even when nothing changed since HEAD.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def snapshot_cmd(ctx, paths, message, tag, allow_empty, as_json) -> None:
    """Record the workspace (or only PATHS) as a new commit.

    Unchanged files are recognized by their stat data and not read again; new
    content is cloned (reflink filesystems) or packed as chunks. Prints the commit
    id and what changed. With nothing changed, no commit is made (HEAD is printed).
    """
    from ..ops.diff import diff_trees
    from ..ops.snapshot import snapshot
    repo = open_repo(ctx)
    t0 = time.monotonic()
    if paths and repo.workspace is None:
        raise UsageError("a bare repository has no workspace to snapshot")
    rel_paths = [workspace_path(repo, p) for p in paths] or None
    res = snapshot(repo, rel_paths, message=message, tag=tag, allow_empty=allow_empty,
                   warn=warn, progress_factory=progress_factory("snapshot"), on_wait=info)
    elapsed = time.monotonic() - t0
    changes = None
    if res.created and res.parent is not None:
        changes = diff_trees(repo, repo.commit(res.parent).tree,
                             repo, repo.commit(res.commit).tree)
    if as_json:
        emit_json({
            "commit": res.commit.hex(), "parent": res.parent.hex() if res.parent else None,
            "created": res.created, "tag": res.tag, "files": res.files,
            "files_read": res.files_read, "bytes_read": res.bytes_read,
            "bytes_stored": res.bytes_stored, "skipped": list(res.skipped),
            "seconds": round(elapsed, 3),
            "changes": short_summary(changes) if changes else None,
        })
        return
    if not res.created:
        click.echo(f"nothing changed since HEAD {res.commit.hex()[:12]}"
                   + (f"; tagged it {tag}" if tag else ""))
        return
    click.echo(res.commit.hex())
    if changes is not None:
        s = short_summary(changes)
        what = f"{s['added']} added, {s['modified']} modified, {s['removed']} removed" + (
            f", {s['renamed']} renamed" if s["renamed"] else "")
    else:
        what = plural(res.files, "file")
    click.echo(f"{what}; read {fmt_bytes(res.bytes_read)} in {plural(res.files_read, 'file')}, "
               f"stored {fmt_bytes(res.bytes_stored)} new, {elapsed:.2f} s"
               + (f"; tagged {tag}" if tag else ""), err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the changes as JSON.")
@click.pass_context
def status(ctx, as_json: bool) -> None:
    """Show what changed in the workspace since HEAD.

    Fast: files whose stat data matches the last snapshot are not read.
    """
    repo = open_repo(ctx)
    changes = repo.status(warn=warn, progress_factory=progress_factory("status"))
    head = repo.head()
    branch = repo.head_ref()
    where = f"on branch {branch.split('/', 1)[1]}" if branch else \
        f"HEAD detached at {head.hex()[:12]}" if head else "no commits yet"
    if as_json:
        from ..ops.diff import to_json
        out = to_json(changes)
        out["head"] = head.hex() if head else None
        out["branch"] = branch
        emit_json(out)
        return
    click.echo(where)
    lines = _change_lines(changes)
    if not lines:
        click.echo("nothing changed")
    for line in lines:
        click.echo(line)


def _change_lines(changes) -> list[str]:
    out = [f"  added:    {c.path}" for c in changes.added]
    out += [f"  modified: {c.path}" for c in changes.modified]
    out += [f"  removed:  {c.path}" for c in changes.removed]
    out += [f"  renamed:  {a} -> {b}" for a, b in changes.renamed]
    return out


@cli.command()
@click.argument("rev", default="HEAD")
@click.option("-n", "--max-count", type=int, default=None, help="Show at most N commits.")
@click.option("--oneline", is_flag=True, help="One line per commit.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of commits.")
@click.pass_context
def log(ctx, rev: str, max_count, oneline: bool, as_json: bool) -> None:
    """List commits from REV (default HEAD) back along first parents."""
    repo = open_repo(ctx)
    entries = repo.log(rev, limit=max_count)
    if as_json:
        from ..ops.results import log_entry
        emit_json([log_entry(e) for e in entries])
        return
    if not entries:
        click.echo("no commits yet; run 'vfs snapshot -m MESSAGE'", err=True)
        return
    head = repo.head()
    for e in entries:
        refs = list(e.refs)
        if e.id == head:
            refs.insert(0, "HEAD")
        deco = f" ({', '.join(refs)})" if refs else ""
        first = e.commit.message.splitlines()[0] if e.commit.message else ""
        if oneline:
            click.echo(f"{e.id.hex()[:12]}{deco} {first}")
            continue
        st = e.commit.stats
        click.echo(f"commit {e.id.hex()}{deco}")
        click.echo(f"Author: {e.commit.author}")
        click.echo(f"Date:   {fmt_time(e.commit.time_ns)}")
        if st:
            click.echo(f"Files:  {st.get('files', '?')} ({fmt_bytes(st.get('bytes', 0))})")
        click.echo("")
        for line in (e.commit.message or "(no message)").splitlines():
            click.echo(f"    {line}")
        click.echo("")


@cli.command()
@click.argument("spec", default="HEAD")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def show(ctx, spec: str, as_json: bool) -> None:
    """Describe a commit (REV) or an entry in it (REV:PATH)."""
    from ..ops.diff import diff_trees
    from ..ops.results import entry as _entry_json
    repo = open_repo(ctx)
    cid, path = repo.split_rev_path(spec)
    if ":" in spec:
        entry = repo.entry(cid, path)
        info_ = _entry_json(repo, path, entry)
        info_["commit"] = cid.hex()
        if as_json:
            emit_json(info_)
        else:
            for k, v in info_.items():
                click.echo(f"{k + ':':<9} {v}")
        return
    c = repo.commit(cid)
    changes = diff_trees(repo, repo.commit(c.parents[0]).tree if c.parents else None,
                         repo, c.tree)
    if as_json:
        from ..ops.results import commit as commit_json
        emit_json(commit_json(cid, c, changes))
        return
    click.echo(f"commit {cid.hex()}")
    click.echo(f"Tree:   {c.tree.hex()}")
    for p in c.parents:
        click.echo(f"Parent: {p.hex()}")
    click.echo(f"Author: {c.author}")
    click.echo(f"Date:   {fmt_time(c.time_ns)}")
    if c.run:
        click.echo(f"Run:    {c.run.hex()}")
    click.echo("")
    for line in (c.message or "(no message)").splitlines():
        click.echo(f"    {line}")
    click.echo("")
    for line in _change_lines(changes):
        click.echo(line)


@cli.command("ls")
@click.argument("spec", default="HEAD")
@click.option("-l", "long", is_flag=True, help="Long listing: mode, size, mtime, id.")
@click.option("-r", "--recursive", is_flag=True, help="List everything below.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of entries.")
@click.pass_context
def ls_cmd(ctx, spec: str, long: bool, recursive: bool, as_json: bool) -> None:
    """List a directory of a commit: REV[:PATH] (default HEAD, the root)."""
    repo = open_repo(ctx)
    cid, path = repo.split_rev_path(spec)
    entry = repo.entry(cid, path)
    if entry.is_dir:
        prefix = f"{path}/" if path else ""
        rows = list(repo.walk(entry.id, prefix)) if recursive else \
            [(prefix + e.name, e) for e in repo.tree(entry.id).entries]
        if not recursive:
            rows = [(r[0][len(prefix):], r[1]) for r in rows]
    else:
        rows = [(path, entry)]
    if as_json:
        from ..ops.results import entry as entry_json
        emit_json([entry_json(repo, p, e) for p, e in rows])
        return
    for p, e in rows:
        name = p + ("/" if e.is_dir else "")
        if long:
            kind = {Kind.FILE: "-", Kind.DIR: "d", Kind.SYMLINK: "l"}[e.kind]
            link = f" -> {os.fsdecode(e.target)}" if e.kind is Kind.SYMLINK else ""
            click.echo(f"{kind}{stat.filemode(e.st_mode)[1:]} {e.size:>12} "
                       f"{fmt_time(e.mtime_ns)} {e.id.hex()[:12]}  {name}{link}")
        else:
            click.echo(name)


@cli.command()
@click.argument("spec")
@click.pass_context
def cat(ctx, spec: str) -> None:
    """Write a file of a commit to standard output: REV:PATH.

    Every chunk is checked against its id; damaged data is an error, never output.
    """
    repo = open_repo(ctx)
    if ":" not in spec:
        raise UsageError(f"'vfs cat' needs REV:PATH (got {spec!r}); e.g. vfs cat HEAD:data.csv")
    rev, _, path = spec.partition(":")
    with repo.open(rev or "HEAD", path) as f:
        if f.entry.is_dir:
            raise IsADirectory(f"{path!r} is a directory; use 'vfs ls {spec}'")
        out = sys.stdout.buffer
        shutil.copyfileobj(f, out, 1 << 20)
        out.flush()


def _ref_command(kind: str):
    @click.pass_context
    def command(ctx, name, rev, delete, force, as_json, delete_force=False):
        from ..ops import refs as ref_ops
        repo = open_repo(ctx)
        if name is None:
            listed = ref_ops.list_refs(repo, kind)
            if as_json:
                emit_json({r.name: r.commit.hex() for r in listed})
                return
            for r in listed:
                mark = ("* " if r.head else "  ") if kind == "branch" else ""
                click.echo(f"{mark}{r.name:<24} {r.commit.hex()[:12]}")
            return
        if delete or delete_force:
            res = ref_ops.delete(repo, kind, name, force=force or delete_force, on_wait=info)
        else:
            res = ref_ops.create(repo, kind, name, rev, force=force, on_wait=info)
        if as_json:
            emit_json(res.to_dict())
        elif res.action == "deleted":
            click.echo(f"deleted {kind} {name} (was {res.previous.hex()[:12]})")
        else:
            click.echo(f"{kind} {name} -> {res.commit.hex()[:12]}")

    return command


def _add_ref_command(kind: str, doc: str) -> None:
    cmd = _ref_command(kind)
    cmd.__doc__ = doc
    cmd = click.option("--json", "as_json", is_flag=True,
                       help=f"Print as JSON (the {kind}s, or what changed).")(cmd)
    if kind == "branch":
        cmd = click.option("-D", "delete_force", is_flag=True,
                           help="Delete the branch NAME even if nothing else reaches "
                           "its commits.")(cmd)
        force_help = "Move an existing branch; with -d, delete it like -D."
    else:
        force_help = "Move an existing tag."
    cmd = click.option("-f", "--force", is_flag=True, help=force_help)(cmd)
    cmd = click.option("-d", "--delete", is_flag=True, help=f"Delete the {kind} NAME.")(cmd)
    cmd = click.argument("rev", default="HEAD")(cmd)
    cmd = click.argument("name", required=False)(cmd)
    cli.command(kind)(cmd)


_add_ref_command("tag", """Create, list or delete tags: names for commits.

\b
  vfs tag                 list tags
  vfs tag NAME [REV]      tag REV (default HEAD)
  vfs tag -d NAME         delete a tag
""")
_add_ref_command("branch", """Create, list or delete branches.

\b
  vfs branch              list branches (* marks HEAD's)
  vfs branch NAME [REV]   create a branch at REV (default HEAD)
  vfs branch -d NAME      delete a branch whose commits another ref or HEAD reaches
  vfs branch -D NAME      delete a branch anyway (its own commits are left for gc)
Switch with 'vfs checkout NAME'; snapshots advance the branch HEAD is on.
""")
