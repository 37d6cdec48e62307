"""The ``versionfs://`` URL grammar: which repository, which version, which path.

``versionfs://<repo>@<rev>/<path>`` (after fsspec strips ``versionfs://``:
``<repo>@<rev>/<path>``):

* ``<repo>`` is a local repository (a workspace or a bare repository; absolute, as
  in ``versionfs:///data/repo@v1/x.csv``, or relative to the current directory), or
  a remote given by its URL with its scheme (``versionfs://s3://bucket/prefix@v1/x``).
* ``<rev>`` is anything ``vfs`` accepts: a tag, a branch, a commit id or a unique
  prefix of one, ``HEAD``, ``HEAD~2``. The ``@`` that splits is the first one
  followed by a revision without ``/`` that ends at a ``/`` or the end
  (``repo.revisions.rev_splits``) *and*, for a local repository, whose left part is
  a repository: so ``/data/a@b/repo@v1/img@2x.png`` is the repository
  ``/data/a@b/repo``, version ``v1``, path ``img@2x.png``.
* Without ``@<rev>`` the version is ``HEAD``: locally, the repository is the
  nearest one enclosing the path (``/data/repo/sub/x.csv``); a remote URL without
  ``@`` names the root of its ``HEAD`` (write ``@HEAD`` to name a path in it). In a
  remote URL the first ``@`` splits, so a user name goes in ``remote_options``,
  not in the URL.

Each parsed URL keeps ``base``, the spelling of ``<repo>[@<rev>]`` as given, so the
names the filesystem returns (``base/path``) parse back to the same version.
Thread-safe: pure, apart from the probes of the local filesystem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import NotARepository
from ..remote.lazy import is_remote_url
from ..repo.repository import normalize_path, repo_at
from ..repo.revisions import rev_splits



@dataclass(frozen=True, slots=True)
class VersionUrl:
    """A parsed ``versionfs://`` path."""

    repo: str          # a local repository's directory (absolute), or a remote URL
    rev: str | None    # None: HEAD
    path: str          # inside the version, normalized; "" is its root
    base: str          # "<repo>[@<rev>]" as written: the prefix of returned names
    remote: bool

    def name(self, path: str | None = None) -> str:
        """The filesystem name of ``path`` (default: this URL's path)."""
        path = self.path if path is None else path
        if not self.base:
            return path
        return f"{self.base}/{path}" if path else self.base

    def child(self, name: str) -> str:
        """The filesystem name of entry ``name`` in this URL's directory."""
        return self.name(f"{self.path}/{name}" if self.path else name)


is_remote = is_remote_url  # a scheme and ``://`` (remote.lazy says what a remote URL is)


def parse_url(text: str) -> VersionUrl:
    """``<repo>[@<rev>][/<path>]`` (without ``versionfs://``) → ``VersionUrl``.

    Error handling: ``NotARepository`` when no repository is found for a local
    path; ``PathNotFound`` for a path with ``..``."""
    if is_remote(text):
        return _parse_remote(text)
    for left, rev, rest in rev_splits(text, path=True):
        if repo_at(left or ".") is not None:
            return VersionUrl(os.path.abspath(left or "."), rev, normalize_path(rest),
                              f"{left}@{rev}", False)
    return _enclosing(text)


def _parse_remote(text: str) -> VersionUrl:
    splits = rev_splits(text, path=True)
    if not splits:
        return VersionUrl(text.rstrip("/"), None, "", text.rstrip("/"), True)
    left, rev, rest = splits[0]
    return VersionUrl(left, rev, normalize_path(rest), f"{left}@{rev}", True)


def _enclosing(text: str) -> VersionUrl:
    """No revision: the nearest repository enclosing ``text``, at HEAD."""
    cut = len(text.rstrip("/"))
    while True:
        prefix = text[:cut]
        if repo_at(prefix or ("/" if text.startswith("/") else ".")) is not None:
            repo = os.path.abspath(prefix or ("/" if text.startswith("/") else "."))
            return VersionUrl(repo, None, normalize_path(text[cut:]), prefix, False)
        if cut == 0:
            break
        cut = max(text.rfind("/", 0, cut), 0)
    raise NotARepository(
        f"no versionfs repository in {text!r} (looked for REPO@REV and for a "
        "repository enclosing the path); write versionfs://PATH/TO/REPO@REV/FILE")


def rooted(repo: str, rev: str | None, path: str) -> VersionUrl:
    """A path of the filesystem made with ``repo=``/``rev=``: relative to the
    version's root, names without a prefix."""
    remote = is_remote(repo)
    where = repo if remote else os.path.abspath(repo)
    return VersionUrl(where, rev, normalize_path(path), "", remote)
