"""``versionfs mount``, ``umount`` and ``mounts``: serve versions as read-only directories.

pyfuse3 and trio are imported only when a mount starts, so other commands stay quick.
"""

from __future__ import annotations

import click

from .base import cli, emit_json, info


@cli.command("mount")
@click.argument("spec", metavar="REPO[@REV]")
@click.argument("mountpoint", type=click.Path())
@click.option("-f", "--foreground", is_flag=True,
              help="Stay in the foreground (log to stderr); Ctrl-C unmounts.")
@click.option("--allow-other", is_flag=True,
              help="Let other users see the mount (needs user_allow_other in "
                   "/etc/fuse.conf unless you are root).")
@click.option("--debug", is_flag=True,
              help="Log every FUSE request (to stderr with -f, else to the mount's log).")
@click.option("--verify", type=click.Choice(["chunk", "off"]), default="chunk",
              show_default=True,
              help="chunk: every byte is checked before it is returned, against its "
                   "chunk's BLAKE3 id or, for a small random read, its 16 KiB block's "
                   "hash (a damaged block fails with EIO; a 4 KiB read reads and "
                   "hashes 16 KiB, or the whole ~1 MiB chunk if it was stored by a "
                   "versionfs without block hashes). "
                   "off: read exactly the requested bytes with no check, for fast "
                   "random access on storage you trust; damage goes unnoticed.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="For a remote URL: an fsspec option (e.g. endpoint_url=...), "
                   "repeatable. Credentials come from the environment.")
@click.option("--cache-dir", type=click.Path(), default=None,
              help="For a remote URL: where fetched chunks are kept (default "
                   "~/.cache/versionfs; shared by every mount).")
@click.option("--cache-size", default=None, metavar="SIZE",
              help="For a remote URL: the chunk cache's bound, e.g. 20G or 512M "
                   "(default 10G; least recently used chunks go first).")
@click.pass_context
def mount_cmd(ctx: click.Context, spec: str, mountpoint: str, foreground: bool,
              allow_other: bool, debug: bool, verify: str, options, cache_dir,
              cache_size) -> None:
    """Mount a version of a repository read-only at MOUNTPOINT.

    \b
    REPO@REV serves one commit (REV: id or prefix, tag, branch, HEAD, HEAD~N);
    REPO alone serves every version side by side:
      HEAD/  tags/<name>/  heads/<name>/  commits/<full id>/
    REPO may be a remote URL (s3://bucket/repo@v1): served lazily, chunks
    fetched on first read into a bounded local cache (docs/remotes.md).
    Returns once the mount answers; 'versionfs umount MOUNTPOINT' unmounts.
    """
    from ..fuse.mount import mount
    from ..remote.config import parse_options
    from .format import parse_size
    mount(spec, mountpoint, default_repo=ctx.obj["path"], foreground=foreground,
          allow_other=allow_other, debug=debug, verify=verify,
          remote_options=parse_options(options) or None, cache_dir=cache_dir,
          cache_size=parse_size(cache_size) if cache_size else None, say=info)


@cli.command("umount")
@click.argument("mountpoint", type=click.Path())
@click.option("-z", "--lazy", is_flag=True,
              help="Detach now even if busy; the mount goes away when no longer used.")
def umount_cmd(mountpoint: str, lazy: bool) -> None:
    """Unmount a versionfs mount and wait for its daemon to exit."""
    from ..repo.mounts import umount
    umount(mountpoint, lazy=lazy)


@cli.command("mounts")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def mounts_cmd(as_json: bool) -> None:
    """List active versionfs mounts with their repository and revision."""
    from ..repo.mounts import active_mounts
    rows = []
    for entry, state in active_mounts():
        rows.append({
            "mountpoint": entry.mountpoint,
            "repo": state.repo if state else None,
            "rev": state.rev if state else None,
            "commit": state.commit if state else None,
            "pid": state.pid if state else None,
        })
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        rev = "(all versions)" if r["repo"] and r["rev"] is None else (r["rev"] or "?")
        commit = (r["commit"] or "")[:12]
        click.echo(f"{r['mountpoint']}\t{r['repo'] or '?'}\t{rev}\t{commit}\t"
                   f"pid {r['pid'] or '?'}")
