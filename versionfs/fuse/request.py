"""A mount request: parse ``REPO[@REV]`` (``repo.revisions.parse_spec``), check
everything, and say what to serve.

``prepare`` checks what a user can get wrong (mountpoint, FUSE, repository, revision)
with one-line ``VfsError``s before anything is mounted; the checked ``MountRequest``
travels to the daemon as JSON. Imports neither pyfuse3 nor trio. Thread-safe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UsageError
from ..remote.layout import FORMAT_FILE
from ..remote.lazy import is_remote_url, open_remote
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
    # a remote repository read lazily: {"options": {...}, "cache_dir": ..., "cache_size": ...}
    remote: dict | None = None


def prepare(spec: str, mountpoint: str, *, default_repo: str = ".", allow_other=False,
            debug=False, verify="chunk", remote_options: dict | None = None,
            cache_dir: str | None = None, cache_size: int | None = None
            ) -> tuple[MountRequest, str | None]:
    """Check everything before mounting; returns the request and the commit id
    (hex, None for the all-versions view). Raises a one-line ``VfsError``.

    A ``spec`` whose repository part is a URL (``s3://bucket/repo@v1``) mounts that
    remote repository lazily (``remote.lazy``): records fetched now, chunks on read
    into the chunk cache at ``cache_dir`` (bounded by ``cache_size`` bytes)."""
    repo_path, rev = parse_spec(spec, default_repo)
    mp = mounts.canonical(mountpoint)
    mounts.check_mountpoint(mp)
    mounts.check_fuse()
    if is_remote_url(repo_path) or os.path.isfile(os.path.join(repo_path, FORMAT_FILE)):
        # a URL, or a directory remote given as a plain path
        remote = {"options": dict(remote_options or {}), "cache_dir": cache_dir,
                  "cache_size": cache_size}
        with open_remote(repo_path, **remote) as repo:
            commit = repo.resolve(rev).hex() if rev is not None else None
            url = repo.remote_url
        return MountRequest(url, rev, mp, commit, allow_other, debug, verify, remote), commit
    if remote_options or cache_dir or cache_size:
        raise UsageError("--option, --cache-dir and --cache-size are for remote "
                         "repositories (a URL such as s3://bucket/repo@v1)")
    # readonly=True would suit, but Index(readonly=True) opens its databases in a
    # read transaction, which leaves the handles invalid (mdb_get: EINVAL).
    with Repo.open_repo(repo_path) as repo:
        commit = repo.resolve(rev).hex() if rev is not None else None
        where = repo.workspace or repo.vfs_dir
    return MountRequest(where, rev, mp, commit, allow_other, debug, verify), commit
