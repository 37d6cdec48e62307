"""A mount request: parse ``REPO[@REV]`` (``repo.revisions.parse_spec``), check
everything, and say what to serve.

``prepare`` checks what a user can get wrong (mountpoint, FUSE, repository, revision)
with one-line ``VfsError``s before anything is mounted; the checked ``MountRequest``
travels to the daemon as JSON. Imports neither pyfuse3 nor trio. Thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..repo import mounts
from ..repo.revisions import parse_spec
from ..repo.repository import Repo


@dataclass(frozen=True, slots=True)
class MountRequest:
    repo: str            # the repository path as given (resolved by Repo.open)
    rev: str | None      # None: every version side by side
    mountpoint: str      # canonical
    commit: str | None = None  # the commit rev named when checked (hex)
    allow_other: bool = False
    debug: bool = False
    verify: str = "chunk"  # "off": no BLAKE3 check of what is read (docs/mount.md)


def prepare(spec: str, mountpoint: str, *, default_repo: str = ".", allow_other=False,
            debug=False, verify="chunk") -> tuple[MountRequest, str | None]:
    """Check everything before mounting; returns the request and the commit id
    (hex, None for the all-versions view). Raises a one-line ``VfsError``."""
    repo_path, rev = parse_spec(spec, default_repo)
    mp = mounts.canonical(mountpoint)
    mounts.check_mountpoint(mp)
    mounts.check_fuse()
    # readonly=True would suit, but Index(readonly=True) opens its databases in a
    # read transaction, which leaves the handles invalid (mdb_get: EINVAL).
    with Repo.open_repo(repo_path) as repo:
        commit = repo.resolve(rev).hex() if rev is not None else None
        where = repo.workspace or repo.vfs_dir
    return MountRequest(where, rev, mp, commit, allow_other, debug, verify), commit
