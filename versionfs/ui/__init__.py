"""``vfs ui``: a read-only local web app over a repository (docs/ui.md).

``UiApp(repo, token=..., hosts=...)`` is the ASGI app; ``UiServer(app, host, port)``
serves it with uvicorn; ``pages`` computes what each page and its JSON twin show.
"""

from .app import UiApp, UiServer

__all__ = ["UiApp", "UiServer"]
