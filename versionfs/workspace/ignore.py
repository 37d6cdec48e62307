"""Ignore rules: which workspace paths a snapshot leaves out.

Rules come from ``.vfsignore`` at the workspace root, in gitignore syntax (matched
by pathspec). ``.vfs/`` is always ignored, and so are ``.vfs-tmp-*`` files: the
temporary names checkout writes under before renaming, left behind only by a killed
checkout. Thread-safe: an ``Ignore`` is immutable
after construction.
"""

from __future__ import annotations

import os

from ..errors import from_oserror

IGNORE_FILE = ".vfsignore"
TMP_PREFIX = ".vfs-tmp-"


class Ignore:
    def __init__(self, lines: list[str]):
        self._spec = None
        self.lines = tuple(lines)
        if lines:
            import pathspec  # only workspaces with ignore rules pay for it
            self._spec = pathspec.GitIgnoreSpec.from_lines(lines)

    @classmethod
    def load(cls, workspace: str) -> Ignore:
        path = os.path.join(workspace, IGNORE_FILE)
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                return cls(f.read().splitlines())
        except FileNotFoundError:
            return cls([])
        except OSError as exc:
            raise from_oserror(exc, f"reading {path}") from None

    @property
    def has_rules(self) -> bool:
        """Whether ``.vfsignore`` has rules: without them only ``.vfs`` and names
        starting with ``.`` can be ignored."""
        return self._spec is not None

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether workspace-relative ``rel`` is left out of snapshots."""
        if rel.startswith(".vfs") and (rel == ".vfs" or rel.startswith(".vfs/")):
            return True
        if not is_dir and TMP_PREFIX in rel and rel.rpartition("/")[2].startswith(TMP_PREFIX):
            return True
        if self._spec is None:
            return False
        return self._spec.match_file(rel + "/" if is_dir else rel)
