"""The lock object of a remote whose store ignores write conditions.

A ``Lease`` is one attempt to hold ``{owner, host, pid, expires}`` (JSON) at a name
of a ``Backend``: taken when absent or expired, renewed by a background thread while
held, deleted on release only if still ours. On a store that honours conditions
(``cas == "conditional"``) taking and renewing are compare-and-swaps; elsewhere the
last writer wins, so the taker writes, waits ``min(1 s, lease/10)`` and owns the lock
only if the token it reads back is its own: best effort, as good as such a store
allows. ``Backend.locked()`` is the way to use it.

Thread-safe: one holder thread plus its renewal thread.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..errors import RemoteBusy, RemoteError


class LockStore(Protocol):
    """What a lease needs of a ``Backend``."""

    url: str
    cas: str

    def read_tagged(self, name: str) -> tuple[bytes, str] | None: ...
    def write_if(self, name: str, data: bytes, expect: str | None) -> bool: ...
    def delete_if(self, name: str, expect: str) -> bool: ...


class Lease:
    """A held (or wanted) lock object: ``{owner, host, pid, expires}`` as JSON.

    ``lost`` turns True when a renewal finds the lock taken over (the lease ran out
    while this process was stalled); ``check()`` raises ``RemoteBusy`` then, so a
    holder can verify before its final write."""

    def __init__(self, backend: LockStore, name: str, lease: float, *,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.backend, self.name, self.lease = backend, name, lease
        self._clock, self._sleep = clock, sleep
        self.where = f"{backend.url.rstrip('/')}/{name}"
        self.token = secrets.token_hex(16)
        self.lost = False
        self._holder: dict = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"owner": self.token, "host": socket.gethostname(),
                           "pid": os.getpid(),
                           "expires": self._clock() + self.lease}).encode()

    def _current(self) -> tuple[dict, str] | None:
        got = self.backend.read_tagged(self.name)
        if got is None:
            return None
        try:
            info = json.loads(got[0])
            float(info["expires"])
        except (ValueError, KeyError, TypeError):
            info = {"owner": None, "expires": 0.0}  # unreadable: as good as expired
        return info, got[1]

    def try_take(self) -> bool:
        current = self._current()
        if current is not None:
            self._holder = current[0]
            if float(current[0]["expires"]) > self._clock():
                return False
        if not self.backend.write_if(self.name, self._body(), current and current[1]):
            return False
        if self.backend.cas != "conditional":
            # the store ignored the condition: the last writer wins; read back twice
            self._sleep(min(1.0, self.lease / 10))
            mine = self._current()
            if mine is None or mine[0].get("owner") != self.token:
                return False
        return True

    def holder_text(self) -> str:
        h = self._holder
        left = float(h.get("expires", 0)) - self._clock()
        return (f"{h.get('host', '?')} pid {h.get('pid', '?')} (lease ends in "
                f"{max(0, left):.0f} s)")

    def renew(self) -> bool:
        """Push the expiry forward; False (and ``lost``) when the lock is not ours."""
        current = self._current()
        if current is None or current[0].get("owner") != self.token:
            self.lost = True
            return False
        if not self.backend.write_if(self.name, self._body(), current[1]):
            self.lost = True
            return False
        return True

    def check(self) -> None:
        """Raise ``RemoteBusy`` if the lock was lost."""
        if self.lost:
            raise RemoteBusy(f"the lock {self.where} was taken over "
                             f"while held (the lease ran out); run the command again",
                             op="locking", path=self.where)

    def start_renewing(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.lease / 3):
                try:
                    if not self.renew():
                        return
                except RemoteError:
                    continue  # the next renewal may reach the store again
        self._thread = threading.Thread(target=loop, name="vfs-remote-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing; delete the lock object if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = self._current()
        if current is not None and current[0].get("owner") == self.token:
            self.backend.delete_if(self.name, current[1])
