"""versionfs: version datasets like git versions code; serve any version read-only."""

from .errors import VfsError
from .repo import Repo

__all__ = ["Repo", "VfsError"]
__version__ = "0.1.0"
