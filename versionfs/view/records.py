"""The records a view answers with, and its constants.

Thread-safety: immutable values only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

ROOT_INO = 1
XATTR_ID = b"user.versionfs.id"
XATTR_COMMIT = b"user.versionfs.commit"
XATTR_RUN = b"user.versionfs.run"      # the run that produced this content
XATTR_CMD = b"user.versionfs.cmd"      # that run's command line (shell-quoted)
XATTR_STAGE = b"user.versionfs.stage"  # that run's name


class Attr(NamedTuple):
    """The attributes of one inode. ``stable`` is False where a name follows a
    moving ref (``HEAD``, ``tags/x``, ``heads/x`` and their parents), so a
    caller must not cache it for long.

    A NamedTuple rather than a frozen dataclass: one is built per directory entry
    listed, and a frozen dataclass costs four times as much to construct."""

    ino: int
    mode: int
    size: int
    mtime_ns: int
    nlink: int
    blocks: int
    stable: bool = True


@dataclass(frozen=True, slots=True)
class FsStats:
    block_size: int
    blocks: int
    files: int
    name_max: int = 255


class DirEntry(NamedTuple):
    name: bytes
    attr: Attr
    next_offset: int


@dataclass(frozen=True, slots=True, order=True)
class OpenedFile:
    """A file as opened through a view: the commit and the path inside it (``/``
    between names, no leading slash; names not UTF-8 are surrogate-escaped), its
    content id (hex) and size.

    ``exact`` is False when the same inode (one per content: id, mode, mtime, size)
    was also handed to the kernel through another directory entry of this view
    (looked up, or listed with attributes), another path or another commit: FUSE's
    open names only the inode, so the open may have come through any of them. An
    entry listed by name only cannot have been opened before it was looked up.
    ``id`` and ``size`` are exact either way."""

    commit: str
    path: str
    id: str
    size: int
    exact: bool = True
