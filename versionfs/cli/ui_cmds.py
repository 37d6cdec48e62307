"""``vfs ui``: serve the read-only web app over this repository (docs/ui.md)."""

from __future__ import annotations

import click

from .base import cli, open_repo

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@cli.command("ui")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="TCP port (0 picks a free one; the URL printed names it).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Any address other than loopback needs the "
              "token printed at start on every request.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@click.pass_context
def ui_cmd(ctx, port: int, host: str, open_browser: bool) -> None:
    """Browse the repository in a web browser: history, files with previews, diffs,
    runs and their comparison, lineage and the pipeline. Read-only; stop with Ctrl-C.

    \b
    Every page has a JSON twin under /api (the objects 'vfs ... --json' prints).
    """
    import secrets
    from ..ui import UiApp, UiServer
    repo = open_repo(ctx)
    local = host in _LOOPBACK
    token = None if local else secrets.token_urlsafe(24)
    hosts = _LOOPBACK if local else None
    server = UiServer(UiApp(repo, token=token, hosts=hosts), host, port)
    url = server.url + (f"?token={token}" if token else "")
    click.echo(f"vfs ui: serving {repo.workspace or repo.vfs_dir} at {url}", err=False)
    if token:
        click.echo("vfs ui: listening beyond this machine; every request needs the "
                   "token above", err=True)
    click.echo("vfs ui: press Ctrl-C to stop", err=True)
    if open_browser:
        import webbrowser
        webbrowser.open(url)
    import sys
    sys.stdout.flush()
    server.run()
