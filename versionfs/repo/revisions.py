"""Where a revision is named inside a spec: ``REPO@REV`` (a mount) and
``REPO@REV/PATH`` (a ``versionfs://`` URL).

One rule, shared by ``vfs mount`` (``fuse/request``) and the fsspec filesystem
(``fsspec/urls``): an ``@`` may split a spec when a non-empty revision without ``/``
follows it, running to the end of the spec (``REPO@REV``) or to the next ``/``
(``REPO@REV/PATH``). Which of the possible splits is meant is the caller's choice:
a mount takes the last, a URL the first whose left part is a repository. Pure string
work plus the directory probe of ``parse_spec``; thread-safe.
"""

from __future__ import annotations

import os


def rev_splits(spec: str, *, path: bool = False) -> list[tuple[str, str, str]]:
    """Every reading of ``spec`` as ``(repo, rev, path)``, left to right.

    Each ``@`` followed by a non-empty revision without ``/`` gives one; the
    revision must run to the end of ``spec``, or (``path=True``) may also stop at a
    ``/``, after which comes the path (``""`` when none)."""
    out = []
    at = spec.find("@")
    while at >= 0:
        slash = spec.find("/", at + 1)
        end = len(spec) if slash < 0 else slash
        rev = spec[at + 1:end]
        if rev and (path or slash < 0):
            out.append((spec[:at], rev, spec[end + 1:]))
        at = spec.find("@", at + 1)
    return out


def parse_spec(spec: str, default_repo: str = ".") -> tuple[str, str | None]:
    """``REPO[@REV]`` → ``(repo, rev)``: split at the last ``@`` whose right part is
    non-empty and has no ``/``, unless the whole spec names an existing directory
    and the left part does not (a repository path may contain ``@``)."""
    splits = rev_splits(spec)
    if not splits:
        return spec or default_repo, None
    repo, rev, _ = splits[-1]
    repo = repo or default_repo
    if os.path.isdir(spec) and not os.path.isdir(repo):
        return spec, None
    return repo, rev
