"""versionfs: version datasets like git versions code; serve any version read-only.

The public API is ``Repo`` (open or create a repository, then snapshot, diff,
checkout, log, resolve, open files of any version) and the ``VfsError`` hierarchy.
"""

from .api import Repo
from .errors import VfsError

__all__ = ["Repo", "VfsError"]
__version__ = "0.1.0"
