"""The public Python API: ``versionfs.Repo`` with one method per operation.

This is the repository core (``repo.Repo``) plus the verbs (snapshot, diff, status,
checkout, tags and branches, gc, fsck), which live in their own modules below this
one. Use it as::

    from versionfs import Repo
    repo = Repo.init("data")                    # or Repo.open("data")
    repo.snapshot(message="raw import", tag="v1")
    repo.add_remote("origin", "s3://bucket/data"); repo.push()
    remote = Repo.open_remote("s3://bucket/data")   # read any version, lazily
    repo.branch("experiment")                   # a branch at HEAD
    changes = repo.diff("v1")                   # v1 against the workspace
    with repo.open("v1", "images/0001.png") as f:
        header = f.read(16)

Each verb's module is imported when the verb is first used, so opening a repository
to read it does not load the snapshot, checkout or gc machinery.

Thread-safety: as ``repo.Repo``; writing verbs take the repository lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .repo import repository as _repo

if TYPE_CHECKING:
    from .ops.diff import DiffResult
    from .ops.refs import RefChange, RefInfo
    from .ops.snapshot import SnapshotResult
    from .records.runs import RunRecord


class Repo(_repo.Repo):
    """A versionfs repository; see ``Repo.init`` and ``Repo.open``."""

    def snapshot(self, paths: list[str] | None = None, *, message: str = "",
                 tag: str | None = None, **kw) -> SnapshotResult:
        """Record the workspace (or ``paths`` in it) as a commit; see ``snapshot``."""
        from .ops.snapshot import snapshot
        return snapshot(self, paths, message=message, tag=tag, **kw)

    def diff(self, a: str = "HEAD", b: str | None = None, **scan_kw) -> DiffResult:
        """Changes from revision ``a`` to revision ``b`` (default: the workspace)."""
        from .ops.diff import diff_trees
        old = self.commit(self.resolve(a)).tree
        if b is None:
            from .workspace.scan import scan_workspace
            work = scan_workspace(self, **scan_kw)
            return diff_trees(self, old, work, work.root)
        return diff_trees(self, old, self, self.commit(self.resolve(b)).tree)

    def status(self, **scan_kw) -> DiffResult:
        """Changes in the workspace since HEAD (everything is added before a commit)."""
        from .ops.diff import diff_trees
        from .workspace.scan import scan_workspace
        work = scan_workspace(self, **scan_kw)
        head = self.head()
        return diff_trees(self, self.commit(head).tree if head else None,
                                work, work.root)

    def checkout(self, rev: str, *, into: str | None = None, force: bool = False, **kw):
        """Materialize ``rev`` into the workspace (or ``into``); see ``checkout``."""
        from .ops.checkout import checkout
        return checkout(self, rev, into=into, force=force, **kw)

    # -- tags and branches (see ops/refs.py) ------------------------------------------
    def tags(self) -> tuple[RefInfo, ...]:
        """Every tag, by name."""
        from .ops.refs import list_refs
        return list_refs(self, "tag")

    def branches(self) -> tuple[RefInfo, ...]:
        """Every branch, by name (``head`` marks the one HEAD is on)."""
        from .ops.refs import list_refs
        return list_refs(self, "branch")

    def tag(self, name: str, rev: str = "HEAD", *, force: bool = False, **kw) -> RefChange:
        """Tag ``rev`` as ``name``; ``force`` moves an existing tag."""
        from .ops.refs import create
        return create(self, "tag", name, rev, force=force, **kw)

    def delete_tag(self, name: str, **kw) -> RefChange:
        """Delete tag ``name``."""
        from .ops.refs import delete
        return delete(self, "tag", name, **kw)

    def branch(self, name: str, rev: str = "HEAD", *, force: bool = False,
               **kw) -> RefChange:
        """Create branch ``name`` at ``rev``; ``force`` moves an existing branch."""
        from .ops.refs import create
        return create(self, "branch", name, rev, force=force, **kw)

    def delete_branch(self, name: str, *, force: bool = False, **kw) -> RefChange:
        """Delete branch ``name``; refused (``UsageError``) for the branch HEAD is on,
        and for one whose commits nothing else reaches unless ``force``."""
        from .ops.refs import delete
        return delete(self, "branch", name, force=force, **kw)

    # -- runs (see ops/run.py; record them with versionfs.Run or vfs run) --------------
    def runs(self, name: str | None = None, status: str | None = None) -> list[RunRecord]:
        """The recorded runs, oldest first; ``name``/``status`` ("succeeded",
        "failed", "interrupted") keep only those."""
        from .ops.run import list_runs
        return list_runs(self, name=name, status=status)

    def run(self, run_id: str) -> RunRecord:
        """The run with this id or unique prefix (4 or more hex digits)."""
        from .ops.run import get_run
        return get_run(self, run_id)

    def gc(self, **kw):
        """Delete what no root (ref, HEAD, live mount, ...) reaches; see ``gc``."""
        from .ops.gc import gc
        return gc(self, **kw)

    def fsck(self, *, verify_data: bool = False, **kw):
        """Check the repository (and with ``verify_data`` every byte); see ``fsck``."""
        from .ops.fsck import fsck
        return fsck(self, verify_data=verify_data, **kw)

    # -- remotes (see ops/remote.py and docs/remotes.md) -------------------------------
    def add_remote(self, name: str, url: str, options: dict | None = None, **kw):
        """Add remote ``name`` at any fsspec ``url`` (``options`` go to fsspec)."""
        from .ops.remote import add_remote
        return add_remote(self, name, url, options, **kw)

    def remotes(self):
        """The remotes, by name."""
        from .ops.remote import list_remotes
        return list_remotes(self)

    def push(self, remote: str | None = None, revs: list[str] | None = None, **kw):
        """Send branches and tags (default: the current branch); see ``push``."""
        from .ops.remote import push
        return push(self, remote, revs, **kw)

    def fetch(self, remote: str | None = None, **kw):
        """Bring every branch (as ``REMOTE/BRANCH``) and tag of a remote."""
        from .ops.remote import fetch
        return fetch(self, remote, **kw)

    def pull(self, remote: str | None = None, rev: str | None = None, **kw):
        """Fetch a branch and fast-forward the current branch and workspace to it."""
        from .ops.remote import pull
        return pull(self, remote, rev, **kw)

    @classmethod
    def clone(cls, url: str, dest: str, **kw) -> Repo:
        """A new repository at ``dest`` from the remote at ``url``."""
        from .ops.remote import clone
        repo, _ = clone(url, dest, **kw)
        repo.close()
        return cls.open_repo(dest)

    @classmethod
    def open_remote(cls, url: str, options: dict | None = None, *,
                    cache_dir: str | None = None, cache_size: int | None = None) -> Repo:
        """The remote repository at ``url``, read-only, its chunks fetched on first
        read into the local chunk cache (docs/remotes.md)."""
        from .remote.lazy import open_remote
        return open_remote(url, options, cache_dir, cache_size, repo_cls=cls)
