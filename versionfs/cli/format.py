"""Human-readable formatting shared by the commands: sizes, times, summaries."""

from __future__ import annotations

import datetime as _dt


def fmt_bytes(n: int) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    value = float(n)
    for unit in units:
        if abs(value) < 1024 or unit == units[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def fmt_time(ns: int, *, iso: bool = False) -> str:
    t = _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.timezone.utc).astimezone()
    return t.isoformat(timespec="seconds") if iso else t.strftime("%Y-%m-%d %H:%M:%S %z")


def short_summary(changes) -> dict:
    """Counts of a ``DiffResult``, for one-line summaries and JSON."""
    return {"added": len(changes.added), "modified": len(changes.modified),
            "removed": len(changes.removed), "renamed": len(changes.renamed)}


def plural(n: int, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``512M``, ``20G``, ``1.5GiB``, ``4096`` → bytes (binary units);
    ``UsageError`` otherwise."""
    import re
    from ..errors import UsageError
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", text or "")
    if not m:
        raise UsageError(f"size {text!r} is not understood: write e.g. 512M, 20G or 4096")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
