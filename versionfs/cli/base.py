"""The root click group and helpers shared by every command module."""

from __future__ import annotations

import json
import os
import sys

import click

from .. import __version__



@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-C", "repo_path", default=".", metavar="PATH",
              help="Run as if started in PATH (a workspace or a bare repository).")
@click.version_option(version=__version__, prog_name="versionfs")
@click.pass_context
def cli(ctx: click.Context, repo_path: str) -> None:
    """versionfs: version datasets like git versions code, and serve any version
    as a read-only directory.

    \b
    Start with:  vfs init; vfs snapshot -m "first"; vfs log
    Mount:       versionfs mount .@HEAD /mnt/data
    """
    ctx.obj = {"path": repo_path}


def open_repo(ctx: click.Context):
    """The repository (``versionfs.Repo``) for this command: ``-C PATH`` or the
    current directory.

    Command modules import what they need inside their commands, so ``vfs --help``
    and each command load only the layers they use.
    """
    from ..api import Repo
    repo = Repo.open(ctx.obj["path"])
    ctx.call_on_close(repo.close)
    return repo


def emit_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def warn(msg: str) -> None:
    click.echo(f"warning: {msg}", err=True)


def info(msg: str) -> None:
    click.echo(msg, err=True)


def progress_factory(what: str):
    """A factory of byte-progress callbacks for long work, or None off a terminal.

    The bar appears only after a moment (tqdm's ``delay``), so quick runs stay quiet.
    """
    if not sys.stderr.isatty():
        return None

    def factory(total: int):
        from tqdm import tqdm
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
                   delay=0.5, leave=False, file=sys.stderr)

        class _Progress:
            def __call__(self, n: int) -> None:
                bar.update(n)

            def close(self) -> None:
                bar.close()

        return _Progress()

    return factory


def workspace_path(repo, path: str) -> str:
    """A PATH argument as a workspace-relative path.

    An absolute path, or any path given from inside the workspace, names what it
    names on disk and must lie in the workspace; from outside (e.g. with ``-C``) a
    relative path is taken from the workspace root.
    """
    from ..errors import UsageError
    from ..repo.repository import normalize_path
    ws = repo.workspace
    if ws is None:
        return normalize_path(path)
    ws = os.path.abspath(ws)
    cwd = os.getcwd()
    if os.path.isabs(path) or cwd == ws or cwd.startswith(ws + os.sep):
        full = os.path.normpath(os.path.join(cwd, path))
        if full != ws and not full.startswith(ws + os.sep):
            raise UsageError(f"{path} is outside the workspace {ws}")
        return normalize_path(os.path.relpath(full, ws))
    return normalize_path(path)
