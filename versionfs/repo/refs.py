"""Refs and HEAD: the one module that reads their encoding and the only one that writes them.

HEAD is stored in the ``meta`` db under ``HEAD`` as ``heads/NAME`` (on a branch) or as
64 hex digits (detached); branches and tags live in the ``refs`` db as ``heads/NAME``
and ``tags/NAME`` → 32-byte commit id (docs/format.md). ``parse_head`` is the only
reader of HEAD's text; ``set_ref``, ``delete_ref``, ``set_head`` and ``advance_head``
are the only writers of refs and HEAD.

Every write is a compare-and-swap inside the caller's LMDB write transaction:
``expect`` is the value the caller saw before deciding to write: an ``ObjectId``,
``None`` ("must not exist") or ``ANY`` (unconditional). When the stored value differs
the write raises ``RefChanged`` and the caller's transaction is aborted, so a writer
that ignored the repository lock can never make another one lose a commit.

Thread-safety: functions only; each works inside the one transaction it is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import CorruptObject, RefChanged, UsageError
from ..records.model import ID_LEN, ObjectId
from ..store.index import Txn

HEAD_KEY = b"HEAD"
BRANCH_PREFIX = "heads/"
TAG_PREFIX = "tags/"
REMOTE_PREFIX = "remotes/"   # remotes/NAME/BRANCH: where a remote's branch was last seen

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+/-]*$")
_FULL_HEX = re.compile(r"^[0-9a-f]{64}$")


class _Any:
    """The ``expect`` of an unconditional write."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()


@dataclass(frozen=True, slots=True)
class Head:
    """What HEAD names: a branch (``branch="heads/main"``, which may have no commit
    yet), a detached commit (``detached``), or nothing (a repository without HEAD)."""

    branch: str | None = None
    detached: ObjectId | None = None

    @property
    def value(self) -> str:
        """HEAD as stored: the branch's ref name, the hex id, or ``""``."""
        if self.branch is not None:
            return self.branch
        return self.detached.hex() if self.detached is not None else ""

    def __str__(self) -> str:
        return self.value or "nothing"


def check_ref_name(name: str, what: str = "tag") -> None:
    """Raise ``UsageError`` unless ``name`` may name a tag or branch (``what``)."""
    if not _NAME_RE.match(name) or name.endswith("/") or "//" in name or ".." in name \
            or name == "HEAD" or re.fullmatch(r"[0-9a-f]{4,64}", name):
        raise UsageError(
            f"invalid {what} name {name!r}: use letters, digits and . _ + - / "
            "starting with a letter, digit or _ (not HEAD, not a hex commit id)")


def parse_head(raw: bytes | None) -> Head:
    """HEAD's stored bytes as a ``Head``; ``CorruptObject`` when they are neither a
    branch nor a full commit id."""
    text = (raw or b"").decode("utf-8", "replace").strip()
    if not text:
        return Head()
    if text.startswith(BRANCH_PREFIX) and len(text) > len(BRANCH_PREFIX):
        return Head(branch=text)
    if _FULL_HEX.match(text):
        return Head(detached=ObjectId.from_hex(text))
    raise CorruptObject(f"HEAD is neither a branch nor a commit id: {text!r}; "
                        "check out a branch or commit ('vfs checkout NAME') to reset it",
                        object_id="HEAD")


def read_head(txn: Txn) -> Head:
    """HEAD as it is in ``txn``."""
    return parse_head(txn.meta("HEAD"))


def head_commit(txn: Txn, head: Head | None = None) -> ObjectId | None:
    """The commit HEAD (or the given ``head``) stands on; None before the first commit."""
    head = read_head(txn) if head is None else head
    if head.branch is not None:
        return read_ref(txn, head.branch)
    return head.detached


def read_ref(txn: Txn, name: str) -> ObjectId | None:
    """The commit of ref ``name`` (``heads/x``, ``tags/x``), or None when absent."""
    return txn.ref(name)


def list_refs(txn: Txn, prefix: str = "") -> dict[str, ObjectId]:
    """Every ref whose name starts with ``prefix``, in name order."""
    return txn.refs(prefix)


def short_name(ref: str) -> str:
    """``heads/main`` → ``main``."""
    return ref.split("/", 1)[1] if "/" in ref else ref


# -- writes: compare-and-swap ---------------------------------------------------------


def _shown(value) -> str:
    if value is None:
        return "absent"
    if isinstance(value, Head):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return ObjectId(bytes(value)).short if len(value) == ID_LEN else repr(bytes(value))
    return str(value)


def _changed(name: str, expect, found) -> RefChanged:
    return RefChanged(
        f"{name} changed while this operation ran: expected {_shown(expect)}, found "
        f"{_shown(found)} (another writer that ignored the lock?); nothing was changed, "
        "retry", object_id=bytes(found).hex()
        if isinstance(found, (bytes, bytearray)) and len(found) == ID_LEN else None)


def expect_ref(txn: Txn, name: str, expect) -> bytes | None:
    """Raise ``RefChanged`` unless ref ``name`` holds ``expect``; returns what it holds."""
    found = txn.get("refs", name.encode())
    if expect is ANY:
        return found
    if (None if found is None else bytes(found)) != (None if expect is None else bytes(expect)):
        raise _changed(f"ref {name}", expect, found)
    return found


def _check_full_name(name: str) -> None:
    kind, sep, short = name.partition("/")
    if not sep or not kind:
        raise UsageError(f"ref name {name!r} needs a kind: heads/NAME or tags/NAME")
    check_ref_name(short, {"heads": "branch", "tags": "tag"}.get(kind, "ref"))


def set_ref(txn: Txn, name: str, new: bytes, *, expect) -> None:
    """Point ref ``name`` at commit ``new`` if it holds ``expect`` (``RefChanged``
    otherwise)."""
    _check_full_name(name)
    if len(new) != ID_LEN:
        raise ValueError(f"a ref names a {ID_LEN}-byte commit id, got {len(new)} bytes")
    expect_ref(txn, name, expect)
    txn.set_ref(name, new)


def delete_ref(txn: Txn, name: str, *, expect) -> bool:
    """Delete ref ``name`` if it holds ``expect``; False when there was none (only
    possible with ``expect=ANY``)."""
    expect_ref(txn, name, expect)
    return txn.delete("refs", name.encode())


def set_head(txn: Txn, target: str | bytes, *, expect=ANY) -> Head:
    """Make HEAD name ``target``: a branch's ref name (``heads/x``) or a commit id
    (raw or hex, detached), if HEAD is still ``expect`` (a ``Head``, or ``ANY``)."""
    if isinstance(target, str) and not target.startswith(BRANCH_PREFIX):
        target = ObjectId.from_hex(target)
    if isinstance(target, str):
        check_ref_name(short_name(target), "branch")
        new = Head(branch=target)
    else:
        new = Head(detached=ObjectId(bytes(target)))
    if expect is not ANY:
        raw = txn.meta("HEAD")
        try:
            found = parse_head(raw)
        except CorruptObject:
            raise _changed("HEAD", expect, raw) from None
        if found != expect:
            raise _changed("HEAD", expect, found)
    txn.put("meta", HEAD_KEY, new.value.encode())
    return new


def advance_head(txn: Txn, new: bytes, *, expect) -> Head:
    """What a snapshot does: move the branch HEAD is on (or the detached HEAD) to
    commit ``new``, if it stands on ``expect`` (the parent the snapshot read; None
    for a first commit). Returns HEAD (unchanged when it is on a branch)."""
    head = read_head(txn)
    if head.branch is not None:
        set_ref(txn, head.branch, new, expect=expect)
        return head
    if expect is not ANY and head.detached != (None if expect is None else ObjectId(bytes(expect))):
        raise _changed("HEAD", expect, head.detached)
    return set_head(txn, bytes(new))
