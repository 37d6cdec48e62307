"""versionfs: version datasets like git versions code; serve any version read-only.

The public API is ``Repo`` (open or create a repository, then snapshot, diff,
checkout, log, resolve, open files of any version, list runs), ``Run`` (record a
block of Python as a run), ``load`` and ``register_materializer`` (objects a run
saved), ``stage`` (declare a pipeline stage in Python), and the ``VfsError``
hierarchy. All are loaded on first use, so importing a submodule (the CLI, the
mount) does not pay for the whole package.
"""

__all__ = ["Repo", "Run", "VfsError", "load", "register_materializer", "stage"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Repo":
        from .api import Repo
        return Repo
    if name in ("Run", "load"):
        from . import runapi
        return getattr(runapi, name)
    if name == "register_materializer":
        from .materializers import register
        return register
    if name == "stage":
        from .pystage import stage
        return stage
    if name == "VfsError":
        from .errors import VfsError
        return VfsError
    raise AttributeError(f"module 'versionfs' has no attribute {name!r}")
