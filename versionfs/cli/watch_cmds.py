"""``vfs watch start|stop|status``: the change journal's watcher (docs/journal.md)."""

from __future__ import annotations

import sys
import time

import click

from .base import cli, emit_json, info, open_repo
from .format import fmt_bytes, plural


@cli.group("watch")
def watch() -> None:
    """Keep a change journal so snapshot and status look only at what changed.

    \b
    vfs watch start     start a watcher for this workspace (Linux inotify)
    vfs watch status    is it running, how many directories it watches
    vfs watch stop      stop it
    With a watcher running, snapshot and status reuse every directory nothing
    changed in (after one snapshot has recorded them) instead of listing it;
    where the watcher cannot vouch for a directory, it is walked as without one.
    """


@watch.command("start")
@click.option("-f", "--foreground", is_flag=True,
              help="Stay in the foreground (log to stderr) until Ctrl-C or SIGTERM, "
                   "e.g. under systemd.")
@click.option("--json", "as_json", is_flag=True, help="Print the watcher's figures as JSON.")
@click.option("--ready-fd", type=int, default=None, hidden=True)
@click.pass_context
def start_cmd(ctx, foreground: bool, as_json: bool, ready_fd) -> None:
    """Start watching this workspace; returns once every directory is watched."""
    from ..ops import watch as ops
    repo = open_repo(ctx)
    if foreground or ready_fd is not None:
        sys.exit(ops.run_foreground(repo, ready_fd=ready_fd, say=info))
    st = ops.start(repo)
    if as_json:
        emit_json(st.to_dict())
        return
    click.echo(f"watching {st.workspace}: {_dirs(st.watched)} "
               f"(pid {st.pid}); 'vfs watch stop' stops it")
    if st.unwatched_count:
        info(f"warning: {_dirs(st.unwatched_count)} could not be watched "
             "and will always be walked; see 'vfs watch status'")
    info("the next snapshot walks the workspace once; later ones list only what changed")


@watch.command("stop")
@click.pass_context
def stop_cmd(ctx) -> None:
    """Stop this workspace's watcher (scans then walk the whole workspace)."""
    from ..ops import watch as ops
    pid = ops.stop(open_repo(ctx))
    click.echo("no watcher was running" if pid is None else
               f"stopped the watcher (pid {pid})")


@watch.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_context
def status_cmd(ctx, as_json: bool) -> None:
    """Whether a watcher runs for this workspace, and what it watches."""
    from ..ops import watch as ops
    st = ops.status(open_repo(ctx))
    if as_json:
        emit_json(st.to_dict())
        return
    if not st.running:
        click.echo("no watcher is running; 'vfs watch start' starts one"
                   + (f" ({st.note})" if st.note else ""))
        return
    if st.note:
        click.echo(f"watcher pid {st.pid} is running but {st.note}")
        return
    up = time.time() - st.started if st.started else 0
    click.echo(f"watcher pid {st.pid}, up {_duration(up)}, {fmt_bytes(st.rss)} resident")
    click.echo(f"  watched:   {_dirs(st.watched)}")
    click.echo(f"  unwatched: {_dirs(st.unwatched_count)} (always walked)")
    for rel, why in st.unwatched.items():
        click.echo(f"    {rel or '.'}: {why}")
    click.echo(f"  events:    {st.events} read, {plural(st.overflows, 'overflow')}, "
               f"{plural(st.resets, 'fresh start')}")
    if st.last_loss:
        click.echo(f"  last time it could not vouch for earlier tokens: {st.last_loss}")


def _dirs(n: int) -> str:
    return f"{n} directory" if n == 1 else f"{n} directories"


def _duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
