"""Maintenance commands: gc (remove what nothing reaches) and fsck (check everything)."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from ..errors import RepositoryDamaged

if TYPE_CHECKING:
    from ..ops.fsck import FsckResult
    from ..ops.gc import GcResult
from .base import cli, emit_json, info, open_repo, warn
from .format import fmt_bytes

# Phases whose counts are bytes (shown as sizes), the others count objects.
_BYTE_PHASES = ("verify data",)


class PhaseBars:
    """A ``progress(phase, done, total)`` callback drawing one tqdm bar per phase,
    on stderr, only when stderr is a terminal."""

    def __init__(self):
        self.enabled = sys.stderr.isatty()
        self.phase = None
        self.bar = None

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if phase != self.phase:
            self.close()
            from tqdm import tqdm
            in_bytes = phase in _BYTE_PHASES
            self.bar = tqdm(total=total, desc=phase, unit="B" if in_bytes else " obj",
                            unit_scale=in_bytes, unit_divisor=1024, delay=0.5, leave=False,
                            file=sys.stderr)
            self.phase = phase
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.phase = None

    def __enter__(self) -> PhaseBars:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------
# gc


@cli.command("gc")
@click.option("-n", "--dry-run", is_flag=True,
              help="Only report what would be removed; change nothing.")
@click.option("--remote", "remote", default=None, metavar="NAME",
              help="Collect on remote NAME instead: delete what none of its refs or run "
                   "records reaches and what was already found unreachable at least "
                   "--grace ago (so a push under way is never broken).")
@click.option("--grace", default="1h", show_default=True, metavar="DURATION",
              help="With --remote: how long an object must have been found unreachable "
                   "before it is deleted (e.g. 0s, 30m, 1h, 2d).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def gc_cmd(ctx: click.Context, dry_run: bool, remote, grace: str, as_json: bool) -> None:
    """Remove commits, records and blobs that no branch, tag, HEAD or live mount reaches.

    Also compacts pack files that are mostly unused and removes leftovers of
    interrupted writes. Takes the repository lock; mounts are unaffected (the commits
    they serve are kept). With --remote NAME, collects on that remote (docs/remotes.md).
    """
    repo = open_repo(ctx)
    if remote is not None:
        from ..ops.remote_gc import gc_remote
        res = gc_remote(repo, remote, grace=_duration(grace), dry_run=dry_run)
        if as_json:
            emit_json(res.to_dict())
            return
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{res.remote}: {verb} {res.packs_deleted} packs "
                   f"({fmt_bytes(res.bytes_freed)}) and {res.records_dropped} records; "
                   f"{res.condemned} unreachable objects wait out the grace; "
                   f"{res.kept_packs} packs kept")
        return
    with PhaseBars() as bars:
        from ..ops.gc import gc
        result = gc(repo, dry_run=dry_run, progress=bars, on_wait=info)
    for w in result.warnings:
        warn(w)
    if as_json:
        emit_json(asdict(result))
        return
    click.echo(gc_summary(result))


def _duration(text: str) -> float:
    import re
    from ..errors import UsageError
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise UsageError(f"duration {text!r} is not understood: write e.g. 0s, 30m, 1h, 2d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def gc_summary(r: GcResult) -> str:
    parts = [f"{n} {what}" for n, what in (
        (r.commits, "commits"), (r.trees, "trees"), (r.files, "file records"),
        (r.chunks, "chunks"), (r.statcache, "stat cache entries"), (r.blobs, "blobs"),
        (r.tmp_files, "tmp leftovers")) if n]
    verb = "would remove" if r.dry_run else "removed"
    text = f"{verb} {', '.join(parts)}" if parts else \
        ("nothing to remove" if r.dry_run else "nothing removed")
    if r.packs_rewritten:
        text += f"; {'would rewrite' if r.dry_run else 'rewrote'} {r.packs_rewritten} " \
            "sparse pack(s)"
    freed = f"would free about {fmt_bytes(r.bytes_freed)}" if r.dry_run else \
        f"freed {fmt_bytes(r.bytes_freed)}"
    return f"{text}; {freed}"


# --------------------------------------------------------------------------
# fsck


@cli.command("fsck")
@click.option("--verify-data", is_flag=True,
              help="Also re-hash every chunk and record (reads all stored data).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def fsck_cmd(ctx: click.Context, verify_data: bool, as_json: bool) -> None:
    """Check that every ref, commit, tree, file and chunk is present and sound.

    Exits with status 1 when there is any problem, naming each damaged object and
    what uses it. Notes (unreferenced blobs, leftovers in tmp/) are not problems:
    'vfs gc' removes them.
    """
    repo = open_repo(ctx)
    with PhaseBars() as bars:
        from ..ops.fsck import fsck
        result = fsck(repo, verify_data=verify_data, progress=bars)
    if as_json:
        emit_json(fsck_json(result))
    else:
        for p in result.problems:
            click.echo(f"error: {p.kind} {p.object}: {p.message}")
        for n in result.notes:
            click.echo(f"note: {n.message}")
        click.echo(fsck_summary(result))
    if result.problems:
        raise RepositoryDamaged(
            f"fsck found {len(result.problems)} problem(s); restore the damaged data from "
            "a copy or a remote, or drop what uses it (delete the refs) and run 'vfs gc'"
        )


def fsck_json(r: FsckResult) -> dict:
    return {
        "ok": r.ok,
        "verified_data": r.verified,
        "problems": [asdict(p) for p in r.problems],
        "notes": [asdict(n) for n in r.notes],
        "checked": asdict(r.checked),
    }


def fsck_summary(r: FsckResult) -> str:
    c = r.checked
    what = (f"checked {c.commits} commits, {c.trees} trees, {c.files} files, "
            f"{c.chunks} chunks in {c.blobs} blobs")
    if r.verified:
        what += f", verified {fmt_bytes(c.bytes_verified)}"
    verdict = "no problems" if r.ok else f"{len(r.problems)} problem(s)"
    notes = f", {len(r.notes)} note(s)" if r.notes else ""
    return f"{what}: {verdict}{notes}"
