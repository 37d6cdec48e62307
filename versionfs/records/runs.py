"""Run records: what one ``vfs run`` did, as a value, and its encoding.

A run record says what was run (argv, working directory, params), on what (declared
inputs with their content ids, and the files it was *observed* to read through
versionfs mounts), with what result (exit status, outputs with their ids, the commit
holding them, metrics, a bounded log), where (environment, code version) and when.
Its id is fixed when the run starts (``new_run_id``), so the commit that holds the
outputs can name the run and the record can name the commit.

Encoding: msgpack of a map with text keys, written with sorted keys (one value has
one encoding), ids as 64 lowercase hex digits. Unknown keys are kept when decoding,
so a newer writer's fields survive an older reader. The cache key (``cache_key``) is
the BLAKE3 of a canonical encoding of what decides a result: argv, working
directory, params, input ids, code version and declared output paths.
Thread-safe: records are frozen values.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, fields

import msgpack

from ..errors import CorruptObject
from .hashing import hash_bytes

RECORD_VERSION = 1

# run states
SUCCEEDED, FAILED, INTERRUPTED = "succeeded", "failed", "interrupted"
STATES = (SUCCEEDED, FAILED, INTERRUPTED)

# where an input came from
WORKSPACE, MOUNT, EXTERNAL = "workspace", "mount", "external"


@dataclass(frozen=True, slots=True)
class Input:
    """A declared (``-d``) or observed input.

    ``path``: workspace-relative for a workspace input, the path inside ``commit``
    for a mount input, absolute for an external one. ``id``: the content id (a
    file id or tree id; for an external directory the BLAKE3 of its listing).
    ``repo``/``commit``: the repository and commit holding those bytes, when known.
    """

    path: str
    kind: str            # "file", "dir", "symlink"
    id: str
    origin: str = WORKSPACE
    repo: str | None = None
    commit: str | None = None
    size: int = 0


@dataclass(frozen=True, slots=True)
class Output:
    """A declared output, as committed: workspace-relative path, kind, content id."""

    path: str
    kind: str
    id: str
    size: int = 0


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    name: str
    argv: tuple[str, ...]
    cwd: str                     # workspace-relative ("" is the root)
    start_ns: int
    end_ns: int
    status: str                  # SUCCEEDED, FAILED, INTERRUPTED
    exit_code: int | None
    key: str                     # cache key (hex)
    env: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)     # {file: {dotted key: value}}
    deps: tuple[Input, ...] = ()
    observed: tuple[Input, ...] = ()
    outs: tuple[Output, ...] = ()
    metrics: dict = field(default_factory=dict)    # {file: {dotted key: value}}
    labels: dict = field(default_factory=dict)
    commit: str | None = None    # the commit holding the outputs (hex)
    changed: tuple[str, ...] = ()  # declared inputs that changed while the run ran
    message: str = ""            # why it failed, in one line, when it did
    log: str = ""                # the output, bounded (see ``bound_log``)
    log_dropped: int = 0         # bytes of output not kept
    extra: dict = field(default_factory=dict, compare=False)  # unknown keys, kept

    @property
    def duration(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9

    @property
    def short(self) -> str:
        return self.id[:12]

    @property
    def cacheable(self) -> bool:
        return self.status == SUCCEEDED and not self.changed and self.commit is not None

    def commits(self) -> set[str]:
        """Commits of this repository the record refers to (its gc roots)."""
        out = {self.commit} if self.commit else set()
        out.update(i.commit for i in self.deps if i.commit and i.origin == WORKSPACE)
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d["argv"] = list(self.argv)
        d["duration"] = round(self.duration, 3)
        return d


_LISTS = {"deps": Input, "observed": Input, "outs": Output}
_NAMES = {f.name for f in fields(RunRecord)} - {"id", "extra"}


def encode_run(rec: RunRecord) -> bytes:
    d = {k: v for k, v in asdict(rec).items() if k not in ("id", "extra")}
    d["argv"] = list(rec.argv)
    d["changed"] = list(rec.changed)
    d.update(rec.extra)
    d["v"] = RECORD_VERSION
    return msgpack.packb(_sorted(d), use_bin_type=True)


def decode_run(run_id: str | bytes, data: bytes) -> RunRecord:
    rid = run_id.hex() if isinstance(run_id, (bytes, bytearray)) else run_id
    try:
        d = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if not isinstance(d, dict):
            raise TypeError("not a map")
        d.pop("v", None)
        extra = {k: d.pop(k) for k in list(d) if k not in _NAMES}
        for name, cls in _LISTS.items():
            d[name] = tuple(cls(**x) for x in d.get(name, ()))
        d["argv"] = tuple(d["argv"])
        d["changed"] = tuple(d.get("changed", ()))
        return RunRecord(id=rid, extra=extra, **d)
    except (TypeError, ValueError, KeyError, msgpack.UnpackException) as exc:
        raise CorruptObject(f"malformed run record {rid[:12]}: {exc}; run 'vfs fsck'",
                            object_id=rid) from None


def _sorted(obj):
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [_sorted(x) for x in obj]
    return obj


def canonical(obj) -> bytes:
    """One encoding per value (maps with sorted keys), for hashing."""
    return msgpack.packb(_sorted(obj), use_bin_type=True)


def new_run_id(argv, start_ns: int) -> bytes:
    """A fresh run id: BLAKE3 of what the run is, when and where it started, and
    16 random bytes (two runs of one command in the same nanosecond differ)."""
    seed = canonical([list(argv), start_ns, os.getpid(), os.uname().nodename,
                      os.urandom(16)])
    return hash_bytes(b"vfs-run\0" + seed)


def cache_key(*, argv, cwd: str, params: dict, inputs: list[tuple[str, str]],
              code: str | None, outs: list[str]) -> bytes:
    """The run cache key: equal keys promise equal results of a deterministic
    command. ``inputs`` are (path, content id) pairs; ``code`` names the code
    version (git commit, plus a hash of uncommitted changes), or None."""
    return hash_bytes(b"vfs-runkey\0" + canonical({
        "argv": list(argv), "cwd": cwd, "params": params,
        "inputs": sorted([p, i] for p, i in inputs), "code": code,
        "outs": sorted(outs),
    }))


# -- the run cache: key -> run ids, newest last -------------------------------------

CACHE_PREFIX = b"k"    # b"k" + cache key -> msgpack list of run ids (newest last)
OUTPUT_PREFIX = b"o"   # b"o" + content id -> msgpack list of run ids that output it
MAX_PER_KEY = 16       # results kept per key (the newest)


def encode_ids(ids: list[bytes]) -> bytes:
    return msgpack.packb([bytes(i) for i in ids], use_bin_type=True)


def decode_ids(raw: bytes | None) -> list[bytes]:
    if not raw:
        return []
    try:
        ids = msgpack.unpackb(raw, raw=False)
        return [bytes(i) for i in ids if isinstance(i, bytes) and len(i) == 32]
    except (TypeError, ValueError, msgpack.UnpackException):
        return []


def append_id(raw: bytes | None, run_id: bytes, limit: int = MAX_PER_KEY) -> bytes:
    ids = [i for i in decode_ids(raw) if i != run_id] + [bytes(run_id)]
    return encode_ids(ids[-limit:])


# -- the log: the start and the end of the output, never more ----------------------

LOG_HEAD = 16 << 10
LOG_TAIL = 240 << 10


def bound_log(head: bytes, tail: bytes, dropped: int) -> tuple[str, int]:
    """The text kept of a run's output: its first ``LOG_HEAD`` and last
    ``LOG_TAIL`` bytes, with a marker where ``dropped`` bytes were left out."""
    text = head.decode("utf-8", "replace")
    if dropped:
        text += f"\n[... {dropped} bytes of output not kept ...]\n"
    return text + tail.decode("utf-8", "replace"), dropped


def now_ns() -> int:
    return time.time_ns()
