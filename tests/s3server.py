"""A real S3-protocol server for the tests: moto's ``ThreadedMotoServer`` on
127.0.0.1, with a WSGI middleware in front of moto's app that

* counts requests, the bytes sent in GET response bodies and the bytes received in
  PUT request bodies (``Traffic.requests``, ``get_bytes``, ``put_bytes``), so a test or
  a benchmark can show what a read or a write moved; ``reset()`` zeroes;
* injects failures deterministically: ``fail_next(n, status)`` fails the next ``n``
  requests (optionally only of some methods), ``fail_fraction(p, seed)`` fails each
  request with probability ``p`` from a seeded RNG; a failure is a real S3 error
  response (503 ``SlowDown`` or 500 ``InternalError``) after the request body is read;
* serialises mutating requests (PUT, POST, DELETE): moto checks ``If-None-Match`` /
  ``If-Match`` and then stores, two steps a threaded server could interleave, while
  S3 evaluates a condition and writes atomically;
* can make moto check credentials (``auth_enforced()``: moto's IAM authentication,
  on for the block; ``iam_user()`` makes a user whose key passes it).

Nothing reaches AWS: the fixtures in conftest.py (and tools/bench/bench_remote.py) set
the dummy ``AWS_ENV`` variables, unset ``AWS_UNSET``, and point every client at this
server. Thread-safe: counters and plans hold one lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from moto import settings as moto_settings
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (DomainDispatcherApplication, MotoRequestHandler,
                                           create_backend_app)
from werkzeug.serving import make_server

_ERRORS = {
    500: ("500 Internal Server Error", "InternalError",
          "We encountered an internal error. Please try again."),
    503: ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
}
_MUTATING = {"PUT", "POST", "DELETE"}

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "AWS_EC2_METADATA_DISABLED": "true"}
AWS_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
             "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@dataclass(frozen=True)
class Request:
    method: str
    path: str          # /bucket/key
    query: str
    range: str | None  # the Range header of a GET
    status: int
    injected: bool     # a failure made by the plan, not moto's answer


class Traffic:
    """The middleware: counters, a failure plan, and the write lock."""

    def __init__(self, app):
        self.app = app
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.reset()
        self.stop_failing()

    # -- what tests call ---------------------------------------------------------

    def reset(self) -> None:
        """Zero the counters (not the failure plan)."""
        with self._lock:
            self._requests: list[Request] = []
            self._get_bytes = 0
            self._put_bytes = 0

    @property
    def get_bytes(self) -> int:
        """Bytes sent in the bodies of GET responses since ``reset``."""
        with self._lock:
            return self._get_bytes

    @property
    def put_bytes(self) -> int:
        """Bytes received in the bodies of PUT requests since ``reset`` (as they came
        over the wire: any aws-chunked framing included)."""
        with self._lock:
            return self._put_bytes

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def count(self, method: str | None = None, path_contains: str = "",
              injected: bool | None = None) -> int:
        return sum(1 for r in self.requests
                   if (method is None or r.method == method) and path_contains in r.path
                   and (injected is None or r.injected == injected))

    def fail_next(self, n: int, status: int = 503, methods: set[str] | None = None) -> None:
        """Fail the next ``n`` requests (of ``methods``, default all) with ``status``."""
        with self._lock:
            self._fail_left, self._fail_status = n, status
            self._fail_methods = methods
            self._fail_rng = None

    def fail_fraction(self, p: float, seed: int = 0, status: int = 500) -> None:
        """Fail each request with probability ``p`` (a seeded RNG) until stopped."""
        with self._lock:
            self._fail_rng, self._fail_p, self._fail_status = random.Random(seed), p, status
            self._fail_left, self._fail_methods = 0, None

    def stop_failing(self) -> None:
        with self._lock:
            self._fail_left, self._fail_status, self._fail_methods = 0, 503, None
            self._fail_rng, self._fail_p = None, 0.0

    @contextlib.contextmanager
    def auth_enforced(self) -> Iterator[None]:
        """moto checks every request's access key and signature within the block."""
        old = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        try:
            yield
        finally:
            moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = old

    # -- the WSGI side -----------------------------------------------------------

    def _take_fault(self, method: str) -> int | None:
        with self._lock:
            if self._fail_rng is not None:
                return self._fail_status if self._fail_rng.random() < self._fail_p else None
            if self._fail_left > 0 and (self._fail_methods is None
                                        or method in self._fail_methods):
                self._fail_left -= 1
                return self._fail_status
            return None

    def _record(self, environ, status: int, sent: int, injected: bool,
                received: int = 0) -> None:
        method = environ["REQUEST_METHOD"]
        with self._lock:
            self._requests.append(Request(method, environ.get("PATH_INFO", ""),
                                          environ.get("QUERY_STRING", ""),
                                          environ.get("HTTP_RANGE"), status, injected))
            if method == "GET":
                self._get_bytes += sent
            elif method == "PUT":
                self._put_bytes += received

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        counted = _CountingInput(environ.get("wsgi.input"))
        environ["wsgi.input"] = counted
        fault = self._take_fault(method)
        if fault is not None:
            _drain(environ)
            line, code, message = _ERRORS[fault]
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    f'<Message>{message}</Message></Error>').encode()
            if method == "HEAD":
                body = b""
            start_response(line, [("Content-Type", "application/xml"),
                                  ("Content-Length", str(len(body)))])
            self._record(environ, fault, len(body), True, counted.n)
            return [body]
        seen = {}

        def capture(status, headers, exc_info=None):
            seen["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        lock = self._write_lock if method in _MUTATING else contextlib.nullcontext()
        with lock:
            result = self.app(environ, capture)
            try:
                body = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        self._record(environ, seen.get("status", 0), len(body), False, counted.n)
        return [body]


class _CountingInput:
    """The request body stream, counting the bytes read from it."""

    def __init__(self, stream):
        self._stream = stream
        self.n = 0

    def read(self, *args):
        data = self._stream.read(*args) if self._stream is not None else b""
        self.n += len(data)
        return data

    def readline(self, *args):
        data = self._stream.readline(*args) if self._stream is not None else b""
        self.n += len(data)
        return data

    def readinto(self, buf):
        got = self._stream.readinto(buf) if self._stream is not None else 0
        self.n += got or 0
        return got

    def __iter__(self):
        while line := self.readline():
            yield line

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _drain(environ) -> None:
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    if environ.get("wsgi.input_terminated"):
        stream.read()
        return
    length = int(environ.get("CONTENT_LENGTH") or 0)
    while length > 0:
        chunk = stream.read(min(length, 1 << 20))
        if not chunk:
            break
        length -= len(chunk)


class S3Server(ThreadedMotoServer):
    """moto's threaded server on 127.0.0.1 (a free port), its app behind ``Traffic``."""

    def __init__(self):
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.traffic = Traffic(DomainDispatcherApplication(create_backend_app))

    def _server_entry(self) -> None:
        # as ThreadedMotoServer's own, with the middleware in front of the app
        self._server = make_server(self._ip_address, self._port, self.traffic, True,
                                   request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def iam_user(self, name: str) -> tuple[str, str]:
        """(access key, secret) of a new IAM user allowed everything on S3; made
        before ``auth_enforced`` is entered."""
        import boto3
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="s3-all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]
