"""The command line: ``vfs`` and ``versionfs`` are this one program.

Each command group lives in its own module and registers on ``main``. This package is
the only place that turns ``VfsError`` into a one-line message and an exit code.
"""

from __future__ import annotations

import sys

import click

from ..errors import VfsError, from_oserror
from .base import cli


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``vfs`` and ``versionfs`` console scripts."""
    from . import commands  # noqa: F401  (registers the commands on ``cli``)
    try:
        cli.main(args=argv, prog_name=_prog_name(), standalone_mode=False)
    except VfsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as exc:
        # The filesystem refused something no command wrapped (a full disk under
        # stdout, say): one line, like every other error, not a traceback.
        err = from_oserror(exc, f"writing {exc.filename}" if exc.filename else "running the command")
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)


def _prog_name() -> str:
    import os
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "vfs"
    return name if name in ("vfs", "versionfs") else "vfs"
