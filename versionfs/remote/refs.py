"""A remote's refs: list them, read one, and move one by compare-and-swap.

A ref is the object ``refs/heads/NAME`` or ``refs/tags/NAME`` holding 64 hex digits.
It moves only by compare-and-swap, so two pushers never lose each other's commits:
read it (with its version tag), decide (``decide`` raises when the move would drop
commits), write it only if it still holds what was read; when another writer got
there first, read again and decide again. Stores that honour conditional writes do
the swap atomically (``cas = "conditional"``); for others every move holds the
remote's lock object with a lease (``cas = "lock"``), as ``vfs remote add`` decided.

Thread-safety: functions only.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import RemoteBusy, RemoteMissing
from ..records.chunking import ChunkParams
from ..records.model import ObjectId
from . import layout

TRIES = 20


def list_refs(backend) -> dict[str, ObjectId]:
    """Every ref: ``heads/main`` → commit id."""
    out = {}
    for name, _size in backend.list(layout.REFS):
        ref = name[len(layout.REFS):]
        out[ref] = layout.decode_ref(backend.read(name), name)
    return out


def read_ref(backend, ref: str) -> ObjectId | None:
    got = backend.read_tagged(layout.ref_name(ref))
    return None if got is None else layout.decode_ref(got[0], ref)


def move_ref(backend, ref: str, new: bytes, decide: Callable[[ObjectId | None], None],
             *, cas: str = "conditional") -> ObjectId | None:
    """Point remote ref ``ref`` at ``new`` when ``decide(current)`` allows it; returns
    the value it held before (equal to ``new`` when there was nothing to do)."""
    name = layout.ref_name(ref)
    if cas != "conditional":
        with backend.locked(layout.LOCK):
            return _swap_once(backend, name, ref, new, decide)
    for _ in range(TRIES):
        try:
            return _swap_once(backend, name, ref, new, decide)
        except _Lost:
            continue
    raise RemoteBusy(f"remote ref {ref} kept changing while this push ran ({TRIES} "
                     "tries); run the push again")


class _Lost(Exception):
    pass


def _swap_once(backend, name: str, ref: str, new: bytes, decide) -> ObjectId | None:
    got = backend.read_tagged(name)
    old = None if got is None else layout.decode_ref(got[0], ref)
    if old is not None and bytes(old) == bytes(new):
        return old
    decide(old)
    if not backend.write_if(name, layout.encode_ref(bytes(new)),
                            None if got is None else got[1]):
        raise _Lost()
    return old


def delete_ref(backend, ref: str, *, cas: str = "conditional") -> bool:
    name = layout.ref_name(ref)
    if cas != "conditional":
        with backend.locked(layout.LOCK):
            got = backend.read_tagged(name)
            return got is not None and backend.delete_if(name, got[1])
    for _ in range(TRIES):
        got = backend.read_tagged(name)
        if got is None:
            return False
        if backend.delete_if(name, got[1]):
            return True
    raise RemoteBusy(f"remote ref {ref} kept changing; run the command again")


def describe(backend) -> tuple[ChunkParams, str | None]:
    """The remote's chunking parameters and default branch (``heads/NAME`` or None);
    ``RemoteMissing`` when ``backend`` holds no versionfs remote."""
    try:
        params = layout.decode_format(backend.read(layout.FORMAT_FILE))
    except RemoteMissing:
        raise RemoteMissing(f"no versionfs remote at {backend.url} (no "
                            f"{layout.FORMAT_FILE}); check the URL, or push to it first"
                            ) from None
    head = None
    if backend.size(layout.HEAD_FILE) is not None:
        head = backend.read(layout.HEAD_FILE).decode("utf-8", "replace").strip() or None
    return params, head
