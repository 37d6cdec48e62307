"""The JSON form of what the inspecting commands return, shared by the CLI's
``--json`` and the web app (``vfs ui``): one implementation, so both always agree.

Each function takes the values the operations return (``LogEntry``, ``Commit``,
``TreeEntry``, ``RunRecord``, ``Pipeline``) and gives plain JSON types; times are
ISO 8601 in the local time zone (``iso_time``) next to their nanoseconds.
Thread-safe: pure functions (``entry`` reads records through the repository).
"""

from __future__ import annotations

import datetime as _dt
import os

from ..records.model import Kind
from .diff import to_json as diff_to_json


def iso_time(ns: int) -> str:
    """``ns`` since the epoch as ISO 8601 seconds in the local time zone."""
    t = _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.timezone.utc).astimezone()
    return t.isoformat(timespec="seconds")


def log_entry(e) -> dict:
    """One commit of ``vfs log --json`` (a ``repo.LogEntry``)."""
    c = e.commit
    return {"id": e.id.hex(), "parents": [p.hex() for p in c.parents],
            "time": iso_time(c.time_ns), "time_ns": c.time_ns, "author": c.author,
            "message": c.message, "refs": list(e.refs),
            "run": c.run.hex() if c.run else None, "stats": c.stats}


def commit(cid, c, changes) -> dict:
    """``vfs show REV --json``: commit ``cid`` (record ``c``) and its ``changes``
    from its first parent (a ``DiffResult``)."""
    return {"id": cid.hex(), "tree": c.tree.hex(), "parents": [p.hex() for p in c.parents],
            "author": c.author, "time": iso_time(c.time_ns), "message": c.message,
            "run": c.run.hex() if c.run else None, "stats": c.stats,
            "changes": diff_to_json(changes)}


def entry(repo, path: str, e) -> dict:
    """An entry of ``vfs ls --json`` / ``vfs show REV:PATH --json``: a file has its
    chunk count, a directory its entry count, a symlink its target."""
    out = {"path": path or "/", "kind": e.kind.name.lower(), "mode": oct(e.mode),
           "size": e.size, "mtime": iso_time(e.mtime_ns), "id": e.id.hex()}
    if e.kind is Kind.SYMLINK:
        out["target"] = os.fsdecode(e.target)
    elif e.kind is Kind.FILE:
        out["chunks"] = len(repo.chunks(e))
    else:
        out["entries"] = len(repo.tree(e.id).entries)
    return out


def run_summary(r) -> dict:
    """One run of ``vfs runs --json`` (``vfs runs show --json`` is ``r.to_dict()``)."""
    return {"id": r.id, "name": r.name, "status": r.status, "exit_code": r.exit_code,
            "start": iso_time(r.start_ns), "start_ns": r.start_ns,
            "duration": round(r.duration, 3), "commit": r.commit,
            "params": r.params, "metrics": r.metrics, "labels": r.labels}


def pipeline(pipe) -> dict:
    """``vfs dag --json``: the stages of a ``Pipeline`` and its edges."""
    return {
        "stages": [{"name": s.name, "cmd": s.cmd, "argv": list(s.argv), "wdir": s.wdir,
                    "deps": list(s.deps), "outs": list(s.outs),
                    "metrics": list(s.metrics), "params": list(s.params),
                    "source": s.source, "upstream": pipe.upstream_of(s.name)}
                   for s in pipe.stages],
        "edges": [{"from": e.upstream, "to": e.downstream, "paths": list(e.paths)}
                  for e in pipe.edges],
    }
