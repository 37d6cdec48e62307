"""Two runs side by side: params and metrics value by value, and in brief what else
differs (command, working directory, code version, inputs, outputs, status).

Like ``dvc params diff`` / ``dvc metrics diff``: every key of either run is a row with
the old value (run A), the new value (run B) and, for two numbers, the change (B - A);
a row whose values differ, or that only one run has, is marked. Inputs and outputs are
compared by path: a path whose content id differs is *modified*, one only B has is
*added*, one only A has *removed*.

Pure: works on two ``RunRecord`` values and touches no repository.
Thread-safety: frozen values and functions only.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from ..records.runs import RunRecord

__all__ = ["ValueRow", "PathRow", "RunComparison", "compare_runs"]

SAME, CHANGED, ADDED, REMOVED = "same", "changed", "added", "removed"


@dataclass(frozen=True, slots=True)
class ValueRow:
    """One param or metric: ``old`` is run A's value, ``new`` run B's (None where a
    run has no such key: see ``state``); ``change`` is ``new - old`` for numbers."""

    file: str
    key: str
    old: Any
    new: Any
    state: str            # SAME, CHANGED, ADDED (only B has it), REMOVED (only A)
    change: float | int | None = None

    @property
    def changed(self) -> bool:
        return self.state != SAME

    def to_dict(self) -> dict:
        return {"file": self.file, "key": self.key, "old": self.old, "new": self.new,
                "change": self.change, "state": self.state}


@dataclass(frozen=True, slots=True)
class PathRow:
    """An input or output path whose content differs between the runs."""

    path: str
    old: str | None       # content id in run A (None: A has no such path)
    new: str | None
    state: str            # CHANGED, ADDED, REMOVED

    def to_dict(self) -> dict:
        return {"path": self.path, "old": self.old, "new": self.new, "state": self.state}


@dataclass(frozen=True, slots=True)
class RunComparison:
    a: RunRecord
    b: RunRecord
    params: tuple[ValueRow, ...]
    metrics: tuple[ValueRow, ...]
    inputs: tuple[PathRow, ...]     # only the paths that differ
    outputs: tuple[PathRow, ...]
    # (A's, B's) for each of these that differs; absent when equal
    other: dict

    @property
    def changed(self) -> bool:
        """Whether the runs differ in anything compared (params, metrics, ...)."""
        return bool(any(r.changed for r in self.params + self.metrics)
                    or self.inputs or self.outputs or self.other)

    def to_dict(self) -> dict:
        def run(r: RunRecord) -> dict:
            return {"id": r.id, "name": r.name, "status": r.status,
                    "start_ns": r.start_ns, "duration": round(r.duration, 3),
                    "commit": r.commit, "command": command_line(r)}
        return {"a": run(self.a), "b": run(self.b), "changed": self.changed,
                "params": [r.to_dict() for r in self.params],
                "metrics": [r.to_dict() for r in self.metrics],
                "inputs": [r.to_dict() for r in self.inputs],
                "outputs": [r.to_dict() for r in self.outputs],
                "other": {k: {"old": v[0], "new": v[1]} for k, v in self.other.items()}}


def compare_runs(a: RunRecord, b: RunRecord) -> RunComparison:
    """Run ``a`` (old) against run ``b`` (new)."""
    other = {}
    for name, get in _OTHER.items():
        va, vb = get(a), get(b)
        if va != vb:
            other[name] = (va, vb)
    return RunComparison(
        a, b, _values(a.params, b.params), _values(a.metrics, b.metrics),
        _paths({i.path: i.id for i in a.deps + a.observed},
               {i.path: i.id for i in b.deps + b.observed}),
        _paths({o.path: o.id for o in a.outs}, {o.path: o.id for o in b.outs}),
        other)


def command_line(r: RunRecord) -> str:
    return shlex.join(r.argv)


def _code(r: RunRecord) -> str | None:
    git = r.env.get("git")
    if not git:
        return None
    return git.get("commit", "") + (" (dirty)" if git.get("dirty") else "")


_OTHER = {
    "name": lambda r: r.name,
    "command": command_line,
    "cwd": lambda r: r.cwd,
    "code": _code,
    "status": lambda r: r.status,
    "exit_code": lambda r: r.exit_code,
}

_MISSING = object()


def _values(old: dict, new: dict) -> tuple[ValueRow, ...]:
    """Rows for every ``(file, key)`` of either ``{file: {key: value}}``, in file
    then key order."""
    rows = []
    for f in sorted(set(old) | set(new)):
        ka, kb = old.get(f, {}), new.get(f, {})
        for k in sorted(set(ka) | set(kb)):
            va, vb = ka.get(k, _MISSING), kb.get(k, _MISSING)
            if va is _MISSING:
                rows.append(ValueRow(f, k, None, vb, ADDED))
            elif vb is _MISSING:
                rows.append(ValueRow(f, k, va, None, REMOVED))
            else:
                same = va == vb and type(va) is type(vb)
                rows.append(ValueRow(f, k, va, vb, SAME if same else CHANGED,
                                     _delta(va, vb)))
    return tuple(rows)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _delta(a, b):
    if not (_number(a) and _number(b)):
        return None
    d = b - a
    return round(d, 12) if isinstance(d, float) else d


def _paths(old: dict[str, str], new: dict[str, str]) -> tuple[PathRow, ...]:
    rows = []
    for p in sorted(set(old) | set(new)):
        a, b = old.get(p), new.get(p)
        if a == b:
            continue
        state = ADDED if a is None else REMOVED if b is None else CHANGED
        rows.append(PathRow(p, a, b, state))
    return tuple(rows)
