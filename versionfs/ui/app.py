"""The web app of ``vfs ui``: Starlette routes over ``ui.pages``, a token guard, and
a server that binds before it starts (so port 0 works and the real port is known).

Every page ``/X`` has a JSON twin ``/api/X`` that returns what the page shows; both
call one function of ``pages``. The app is read-only: only GET, nothing is written.
Bytes of files come only through the repository's verified read path, so no URL can
reach a file outside the repository (paths are names inside a commit; ``..`` is
refused; symlinks in a commit are described, never followed).

Security: bound to 127.0.0.1, requests must name a loopback host in ``Host`` (a web
page elsewhere cannot reach the app through DNS rebinding). Bound to any other
address the app requires a token (``?token=``, then a cookie, or ``Authorization:
Bearer``): without one 401, with a wrong one 403.
Thread-safety: Starlette runs the sync endpoints in its thread pool; the repository
is shared by them for reading, which it allows.
"""

from __future__ import annotations

import hmac
import os
import socket
import threading
from urllib.parse import quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import (
    AmbiguousRevision, IsADirectory, MissingObject, NotADirectory, PathNotFound,
    UnknownRevision, UsageError, VfsError,
)
from . import pages, svg

HERE = os.path.dirname(os.path.abspath(__file__))
COOKIE = "vfs_ui_token"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_NOT_FOUND = (UnknownRevision, PathNotFound, NotADirectory, IsADirectory, MissingObject)
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def status_of(exc: VfsError) -> int:
    if isinstance(exc, _NOT_FOUND):
        return 404
    if isinstance(exc, (UsageError, AmbiguousRevision)):
        return 400
    return 500


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(HERE, "templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.globals.update(svg=svg, url=_url, short=lambda h: (h or "")[:12])
    env.filters["cell"] = _cell
    return env


def _url(base: str, /, **params) -> str:
    q = urlencode({k: v for k, v in params.items() if v is not None and v != ""}, doseq=True)
    return quote(base) + (f"?{q}" if q else "")


def _cell(v) -> str:
    if v is None:
        return "–"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


class _Page:
    """A page and its JSON twin from one ``pages`` function of the query."""

    def __init__(self, app: UiApp, template: str, fn):
        self.app, self.template, self.fn = app, template, fn

    def data(self, request: Request) -> dict:
        return self.fn(self.app.repo, request.query_params)

    def html(self, request: Request) -> Response:
        try:
            data = self.data(request)
        except VfsError as exc:
            return self.app.error_page(request, status_of(exc), str(exc))
        return self.app.render(request, self.template, data=data)

    def json(self, request: Request) -> Response:
        try:
            return JSONResponse(self.data(request), headers=HEADERS)
        except VfsError as exc:
            return JSONResponse({"error": str(exc), "type": type(exc).__name__},
                                status_code=status_of(exc), headers=HEADERS)


def _q(params, name: str, default: str = "") -> str:
    return params.get(name) or default


def _ids(params) -> list[str]:
    return [i for v in params.getlist("ids") for i in v.split(",") if i.strip()]


PAGES = {  # path: (template, data of the query)
    "/": ("history.html", lambda repo, p: pages.history(
        repo, *pages.page_args(p.get("offset"), p.get("limit")))),
    "/tree": ("tree.html", lambda repo, p: pages.tree(
        repo, _q(p, "rev", "HEAD"), _q(p, "path"), *pages.page_args(p.get("offset"),
                                                                     p.get("limit")))),
    "/file": ("file.html", lambda repo, p: pages.file(repo, _q(p, "rev", "HEAD"),
                                                       _q(p, "path"))),
    "/diff": ("diff.html", lambda repo, p: pages.diff(
        repo, _q(p, "a", "HEAD~1"), _q(p, "b", "HEAD"),
        *pages.page_args(p.get("offset"), p.get("limit")))),
    "/diff/file": ("diff_file.html", lambda repo, p: pages.diff_file(
        repo, _q(p, "a", "HEAD~1"), _q(p, "b", "HEAD"), _q(p, "path"))),
    "/runs": ("runs.html", lambda repo, p: pages.runs(
        repo, q=_q(p, "q"), status=p.get("status") or None, sort=_q(p, "sort", "start"),
        desc=p.get("desc", "1") != "0", **dict(zip(("offset", "limit"), pages.page_args(
            p.get("offset"), p.get("limit")))))),
    "/run": ("run.html", lambda repo, p: pages.run(repo, _q(p, "id"))),
    "/compare": ("compare.html", lambda repo, p: pages.compare(repo, _ids(p))),
    "/lineage": ("lineage.html", lambda repo, p: pages.lineage(
        repo, _q(p, "rev", "HEAD"), _q(p, "path"))),
    "/dag": ("dag.html", lambda repo, p: pages.dag(repo)),
}


class UiApp:
    """The ASGI app over an open repository. ``token``: required on every request
    when set. ``hosts``: the ``Host`` names accepted (None: any)."""

    def __init__(self, repo, *, token: str | None = None, hosts: tuple[str, ...] | None = None):
        self.repo, self.token, self.hosts = repo, token, hosts
        self.templates = _env()
        routes = []
        for path, (template, fn) in PAGES.items():
            page = _Page(self, template, fn)
            routes.append(Route(path, page.html, name=f"page:{path}"))
            routes.append(Route("/api" + (path if path != "/" else "/history"), page.json))
        routes.append(Route("/raw", self.raw))
        routes.append(Mount("/static", StaticFiles(directory=os.path.join(HERE, "static")),
                            name="static"))
        self.starlette = Starlette(routes=routes, exception_handlers={
            HTTPException: self._http_error})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            refused = self._refuse(Request(scope))
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.starlette(scope, receive, send)

    # -- the guard ---------------------------------------------------------------------
    def _refuse(self, request: Request) -> Response | None:
        if request.method not in ("GET", "HEAD"):
            return self._plain(405, "vfs ui is read-only: only GET requests")
        if self.hosts is not None:
            host = request.headers.get("host", "").rsplit(":", 1)[0].strip("[]")
            if host not in self.hosts:
                return self._plain(403, f"host {host!r} is not served; open the URL "
                                   "vfs ui printed")
        if self.token is None:
            return None
        given = request.query_params.get("token") or request.cookies.get(COOKIE) or \
            request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not given:
            return self._plain(401, "this vfs ui needs its token: open the URL it "
                               "printed (…?token=…)")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return self._plain(403, "wrong token for this vfs ui")
        return None

    @staticmethod
    def _plain(status: int, text: str) -> Response:
        return Response(text + "\n", status_code=status, media_type="text/plain",
                        headers=HEADERS)

    # -- responses ---------------------------------------------------------------------
    def render(self, request: Request, template: str, status: int = 200, **ctx) -> Response:
        body = self.templates.get_template(template).render(
            request=request, path=request.url.path, q=request.query_params, **ctx)
        resp = HTMLResponse(body, status_code=status, headers=HEADERS)
        if self.token is not None and request.query_params.get("token"):
            resp.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        return resp

    def error_page(self, request: Request, status: int, message: str) -> Response:
        return self.render(request, "error.html", status=status, message=message,
                           code=status)

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        what = f"no page {request.url.path!r}" if exc.status_code == 404 else exc.detail
        return self.error_page(request, exc.status_code, what)

    def raw(self, request: Request) -> Response:
        """An image file's bytes, for the file page's ``<img>``."""
        try:
            ctype, f = pages.raw_image(self.repo, request.query_params.get("rev") or "HEAD",
                                       request.query_params.get("path") or "")
        except VfsError as exc:
            return self._plain(status_of(exc), str(exc))

        def body():
            with f:
                while block := f.read(1 << 20):
                    yield block
        return StreamingResponse(body(), media_type=ctype, headers={
            **HEADERS, "Content-Security-Policy": "sandbox; default-src 'none'",
            "Content-Length": str(f.size)})


# -- serving ---------------------------------------------------------------------------


class UiServer:
    """uvicorn serving ``app`` on a socket bound at construction (``port`` 0 picks a
    free one: see ``port`` and ``url``). ``run()`` serves in this thread until
    interrupted; ``start()``/``stop()`` serve in a background thread."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}; "
                             "choose another --port or --host") from None
        self.sock.listen(128)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                                    access_log=False, lifespan="off"))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="vfs-ui", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join()
