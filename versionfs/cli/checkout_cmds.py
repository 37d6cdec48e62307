"""``vfs checkout``: materialize a version into the workspace or a directory."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from ..errors import UsageError
from .base import cli, emit_json, info, open_repo, progress_factory, warn
from .format import fmt_bytes

if TYPE_CHECKING:
    from ..ops.checkout import CheckoutResult


@cli.command("checkout")
@click.argument("rev")
@click.argument("dir_arg", metavar="[DIR]", required=False)
@click.option("--into", "into", metavar="DIR", default=None,
              help="Write the version into DIR (empty or new) instead of the workspace; "
                   "HEAD does not move.")
@click.option("-f", "--force", is_flag=True,
              help="Discard uncommitted changes (or write over a non-empty DIR).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def checkout_cmd(ctx, rev: str, dir_arg: str | None, into: str | None, force: bool,
                 as_json: bool) -> None:
    """Make the workspace (or DIR) hold version REV.

    Only files whose content or metadata differ are written; large files are
    cloned from the cache where the filesystem can (reflinks), copied otherwise,
    never linked to it. Uncommitted changes that would be lost are refused,
    naming the files, unless --force. REV naming a branch puts HEAD on it; any
    other REV detaches HEAD (snapshots then move HEAD only).
    """
    if dir_arg is not None and into is not None:
        raise UsageError("give DIR either as an argument or with --into, not both")
    into = into if into is not None else dir_arg
    repo = open_repo(ctx)
    t0 = time.monotonic()
    from ..ops.checkout import checkout
    res = checkout(repo, rev, into=into, force=force, warn=warn,
                   progress_factory=progress_factory("checkout"), on_wait=info)
    elapsed = time.monotonic() - t0
    if as_json:
        emit_json(_to_json(res, elapsed))
        return
    click.echo(_where(res))
    click.echo(_summary(res, elapsed), err=True)
    if res.forced:
        more = f" and {len(res.forced) - 5} more" if len(res.forced) > 5 else ""
        warn(f"discarded changes in {', '.join(res.forced[:5])}{more}")


def _where(res: CheckoutResult) -> str:
    short = res.commit.hex()[:12]
    if res.into is not None:
        return f"checked out {short} into {res.into}"
    if res.head.startswith("heads/"):
        return f"HEAD is now at {short} on branch {res.head.split('/', 1)[1]}"
    return f"HEAD is now at {short} (detached)"


def _summary(res: CheckoutResult, elapsed: float) -> str:
    parts = [f"{_n(res.files_written, 'file')} written", f"{res.files_removed} removed"]
    if res.files_updated:
        parts.append(f"{res.files_updated} with metadata updated")
    if res.dirs_created or res.dirs_removed:
        parts.append(f"{_n(res.dirs_created, 'dir')} created, {res.dirs_removed} removed")
    data = f"copied {fmt_bytes(res.bytes_written)}"
    if res.bytes_cloned:
        data += f", cloned {fmt_bytes(res.bytes_cloned)}"
    return f"{', '.join(parts)}; {data}; {elapsed:.2f} s"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _to_json(res: CheckoutResult, elapsed: float) -> dict:
    return {
        "commit": res.commit.hex(), "head": res.head, "into": res.into,
        "files_written": res.files_written, "files_updated": res.files_updated,
        "files_removed": res.files_removed, "dirs_created": res.dirs_created,
        "dirs_removed": res.dirs_removed, "bytes_written": res.bytes_written,
        "bytes_cloned": res.bytes_cloned, "forced": list(res.forced),
        "kept": list(res.kept), "seconds": round(elapsed, 3),
    }
