"""``vfs remote``, ``push``, ``fetch``, ``pull`` and ``clone``: share versions through
object storage (any fsspec URL: s3://, gs://, az://, a directory, ...)."""

from __future__ import annotations

import click

from .base import cli, emit_json, info, open_repo, progress_factory, warn
from .format import fmt_bytes as human_bytes

_OPTION_HELP = ("An fsspec option for the remote, e.g. endpoint_url=http://127.0.0.1:9000 "
                "(repeatable). Never credentials: those come from the environment or "
                "your cloud config files.")


@cli.group("remote")
def remote_group() -> None:
    """Manage remotes: where versions are pushed to and pulled from.

    \b
    vfs remote add origin s3://bucket/datasets/cifar
    vfs remote add nas /mnt/nas/vfs-remote
    vfs remote list
    """


@remote_group.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help=_OPTION_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the remote as JSON.")
@click.pass_context
def remote_add(ctx, name: str, url: str, options, as_json: bool) -> None:
    """Add remote NAME at URL (checks that it answers, and how its refs can move)."""
    from ..ops.remote import add_remote
    from ..remote.config import parse_options
    repo = open_repo(ctx)
    conf = add_remote(repo, name, url, parse_options(options), on_wait=info)
    if as_json:
        emit_json(conf.to_dict())
        return
    how = "conditional writes" if conf.cas == "conditional" else "a lock object (the " \
        "store ignores conditional writes)"
    click.echo(f"added remote {conf.name}: {conf.url} (refs move by {how})")


@remote_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def remote_list(ctx, as_json: bool) -> None:
    """List remotes with their URLs."""
    from ..ops.remote import list_remotes
    remotes = list_remotes(open_repo(ctx))
    if as_json:
        emit_json([r.to_dict() for r in remotes])
        return
    for r in remotes:
        opts = " ".join(f"{k}={v}" for k, v in sorted(r.options.items()))
        click.echo(f"{r.name}\t{r.url}" + (f"\t{opts}" if opts else ""))


@remote_group.command("remove")
@click.argument("name")
@click.pass_context
def remote_remove(ctx, name: str) -> None:
    """Forget remote NAME (its data on the remote is left alone)."""
    from ..ops.remote import remove_remote
    conf = remove_remote(open_repo(ctx), name, on_wait=info)
    click.echo(f"removed remote {conf.name} ({conf.url})")


def _report(res, verb: str, as_json: bool) -> None:
    if as_json:
        emit_json(res.to_dict())
        return
    for u in res.refs:
        old = u.old[:12] if u.old else "-"
        click.echo(f"{u.ref}\t{old} -> {u.new[:12]}\t{u.status}")
    moved = f"{res.chunks} chunks, {human_bytes(res.bytes)}"
    click.echo(f"{verb} {res.remote}: {res.commits} commits, {res.records} records, "
               f"{moved}, {res.runs} run records in {res.seconds:.2f}s", err=True)
    if res.checkout:
        c = res.checkout
        click.echo(f"workspace: {c.get('files_written', 0)} files written, "
                   f"{c.get('files_removed', 0)} removed", err=True)


@cli.command("push")
@click.argument("remote", required=False)
@click.argument("revs", nargs=-1, metavar="[BRANCH|TAG]...")
@click.option("--all", "all_refs", is_flag=True, help="Push every branch and tag.")
@click.option("--force", is_flag=True,
              help="Move remote branches even when that drops commits they had, and "
                   "move remote tags.")
@click.option("-j", "--jobs", default=4, show_default=True, help="Parallel uploads.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def push_cmd(ctx, remote, revs, all_refs, force, jobs, as_json) -> None:
    """Send branches and tags to REMOTE (default: origin, or the only remote): only the
    chunks and records it lacks. Without BRANCH|TAG: the current branch.

    Safe to interrupt: the remote never names data it does not hold; run the push
    again to finish. Two people pushing at once never lose each other's commits: a
    push that would drop the remote's commits is refused ('vfs pull' first)."""
    from ..ops.remote import push
    repo = open_repo(ctx)
    res = push(repo, remote, list(revs) or None, all_refs=all_refs, force=force,
               progress_factory=progress_factory("push"), warn=warn, workers=jobs)
    _report(res, "pushed to", as_json)


@cli.command("fetch")
@click.argument("remote", required=False)
@click.option("-j", "--jobs", default=8, show_default=True, help="Parallel downloads.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def fetch_cmd(ctx, remote, jobs, as_json) -> None:
    """Bring every branch and tag of REMOTE and what they reach, without touching
    your branches or workspace. Branches appear as REMOTE/BRANCH (e.g. origin/main:
    'vfs log origin/main', 'vfs diff main origin/main')."""
    from ..ops.remote import fetch
    repo = open_repo(ctx)
    res = fetch(repo, remote, progress_factory=progress_factory("fetch"), warn=warn,
                workers=jobs)
    _report(res, "fetched from", as_json)


@cli.command("pull")
@click.argument("remote", required=False)
@click.argument("rev", required=False, metavar="[BRANCH|TAG|COMMIT]")
@click.option("-j", "--jobs", default=8, show_default=True, help="Parallel downloads.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def pull_cmd(ctx, remote, rev, jobs, as_json) -> None:
    """Fetch a branch of REMOTE (default: the one named like yours) and fast-forward
    your branch and workspace to it. Local changes where the versions differ are
    refused, as 'vfs checkout' does; branches that diverged are refused (no merges)."""
    from ..ops.remote import pull
    repo = open_repo(ctx)
    res = pull(repo, remote, rev, progress_factory=progress_factory("pull"), warn=warn,
               workers=jobs, on_wait=info)
    _report(res, "pulled from", as_json)


@cli.command("clone")
@click.argument("url")
@click.argument("directory", required=False)
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help=_OPTION_HELP)
@click.option("--bare", is_flag=True, help="A bare repository (no workspace).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def clone_cmd(url, directory, options, bare, as_json) -> None:
    """Make a new repository from the remote at URL in DIRECTORY (default: the URL's
    last part), with the remote as origin and its default branch checked out."""
    from ..ops.remote import clone
    from ..remote.config import parse_options
    if directory is None:
        directory = url.rstrip("/").rsplit("/", 1)[-1].split(":")[-1] or "repo"
    repo, res = clone(url, directory, options=parse_options(options), bare=bare,
                      progress_factory=progress_factory("clone"), warn=warn)
    repo.close()
    _report(res, "cloned", as_json)
    if not as_json:
        click.echo(f"cloned into {directory}", err=True)
