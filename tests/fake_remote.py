"""In-process remotes for tests that need control a real store does not give.

``FakeStore`` is a ``remote.stores.RemoteStore`` over a dict: create-if-absent and
compare-and-swap are atomic (one lock), tags are generation numbers (``g1``, ``g2``,
…: a rewrite with the same bytes gets a new tag, as an S3 ETag of a multipart
upload may). ``FakeStore(honour_conditions=False)`` is a store that ignores write
conditions, as some S3-compatible stores ignore ``If-None-Match``: every
``put_if``/``delete_if`` goes through, so ``probe_cas`` answers "lock" and writers
must use ``Backend.locked()``.

Hooks for deterministic interleavings: ``before_put(name)`` runs before each write
outside the lock (a test can pause a writer there with a ``threading.Event``, or
let another writer in); ``calls`` counts requests per method; ``fail_next(n)``
makes the next ``n`` requests raise ``ConnectionResetError`` (transient: the
Backend retries). ``FlakyStore(inner)`` adds the same ``fail_next`` to any store.

``fake_backend(...)`` gives a ``Backend`` over a new ``FakeStore``; ``Backend``'s
keyword arguments (``retries``, ``backoff``, ``clock``, ``sleep``) pass through.
Thread-safe.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable

from versionfs.remote.backend import Backend
from versionfs.remote.stores import Failure, classify_oserror

_names = itertools.count(1)


class _Faults:
    def __init__(self):
        self._fault_lock = threading.Lock()
        self._fail_left = 0
        self.calls: Counter[str] = Counter()

    def fail_next(self, n: int) -> None:
        """The next ``n`` requests raise ``ConnectionResetError``."""
        with self._fault_lock:
            self._fail_left = n

    def _request(self, method: str) -> None:
        with self._fault_lock:
            self.calls[method] += 1
            if self._fail_left > 0:
                self._fail_left -= 1
                raise ConnectionResetError(f"injected failure of {method}")


class FakeStore(_Faults):
    """Objects in a dict; see the module docstring."""

    def __init__(self, *, honour_conditions: bool = True,
                 clock: Callable[[], float] = time.time):
        super().__init__()
        self.honour_conditions = honour_conditions
        self.atomic_cas = honour_conditions
        self.objects: dict[str, tuple[bytes, str, float]] = {}
        self.before_put: Callable[[str], None] | None = None
        self._lock = threading.Lock()
        self._generation = itertools.count(1)
        self._clock = clock

    def _store(self, name: str, data: bytes) -> None:
        self.objects[name] = (bytes(data), f"g{next(self._generation)}", self._clock())

    def _hook(self, name: str) -> None:
        if self.before_put is not None:
            self.before_put(name)

    def get(self, name: str) -> bytes:
        self._request("get")
        with self._lock:
            if name not in self.objects:
                raise FileNotFoundError(name)
            return self.objects[name][0]

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        self._request("get_range")
        with self._lock:
            if name not in self.objects:
                raise FileNotFoundError(name)
            return self.objects[name][0][offset:offset + length]

    def get_tagged(self, name: str) -> tuple[bytes, str] | None:
        self._request("get_tagged")
        with self._lock:
            got = self.objects.get(name)
            return None if got is None else (got[0], got[1])

    def head(self, name: str) -> tuple[int, float] | None:
        self._request("head")
        with self._lock:
            got = self.objects.get(name)
            return None if got is None else (len(got[0]), got[2])

    def list(self, prefix: str) -> list[tuple[str, int]]:
        self._request("list")
        with self._lock:
            return sorted((n, len(v[0])) for n, v in self.objects.items()
                          if n.startswith(prefix))

    def put_new(self, name: str, data: bytes, conditional: bool) -> None:
        self._request("put_new")
        self._hook(name)
        with self._lock:
            if name not in self.objects:
                self._store(name, data)

    def _matches(self, name: str, expect: str | None) -> bool:
        got = self.objects.get(name)
        return got is None if expect is None else got is not None and got[1] == expect

    def put_if(self, name: str, data: bytes, expect: str | None) -> bool:
        self._request("put_if")
        self._hook(name)
        with self._lock:
            if self.honour_conditions and not self._matches(name, expect):
                return False
            self._store(name, data)
            return True

    def delete(self, name: str) -> None:
        self._request("delete")
        with self._lock:
            self.objects.pop(name, None)

    def delete_if(self, name: str, expect: str) -> bool:
        self._request("delete_if")
        with self._lock:
            if self.honour_conditions and not self._matches(name, expect):
                return False
            self.objects.pop(name, None)
            return True

    def classify(self, exc: BaseException) -> Failure | None:
        return classify_oserror(exc)

    def close(self) -> None:
        pass


class FlakyStore(_Faults):
    """Any store, with ``fail_next``: requests fail before they reach it."""

    _REQUESTS = {"get", "get_range", "get_tagged", "head", "list", "put_new", "put_if",
                 "delete", "delete_if"}

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.atomic_cas = inner.atomic_cas

    def __getattr__(self, attr):
        value = getattr(self.inner, attr)
        if attr not in self._REQUESTS:
            return value

        def request(*args):
            self._request(attr)
            return value(*args)
        return request


def fake_backend(*, honour_conditions: bool = True, **kwargs) -> Backend:
    """A Backend over a new FakeStore (``backend.store`` is the store)."""
    store = FakeStore(honour_conditions=honour_conditions,
                      clock=kwargs.get("clock", time.time))
    return Backend(f"fake://remote-{next(_names)}", store=store, **kwargs)
