"""``versionfs://``: any version of a repository as a read-only fsspec filesystem,
with no FUSE (macOS, Windows, notebooks), for pandas, pyarrow, dask and any other
fsspec user: ``pandas.read_csv("versionfs:///data/repo@v1/train.csv")``.

Registered through the ``fsspec.specs`` entry point (``pyproject.toml``), so
``fsspec.filesystem("versionfs")`` finds it once versionfs is installed. The URL
grammar is in ``fsspec.urls``, the filesystem in ``fsspec.filesystem``; users'
documentation is docs/fsspec.md. Only this package and ``remote/`` import fsspec.
"""

from .filesystem import VersionFileSystem
from .urls import VersionUrl, parse_url

__all__ = ["VersionFileSystem", "VersionUrl", "parse_url"]
