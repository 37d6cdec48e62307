"""Which recorded runs produced a content id: the reader of the run cache's output index.

``vfs run`` writes, for every declared output, ``runcache[b"o" + content id]`` = the
run ids that output that content, newest last (``records.runs.OUTPUT_PREFIX``). This
module reads that index and the run records it names, inside a transaction the caller
gives, so a mount can answer ``user.versionfs.run`` with one LMDB get and no import of
the run machinery (``ops.run``: snapshot, checkout, scanning), and ``ops.lineage`` can
batch many lookups in one transaction.

Only *declared* outputs are indexed: a file inside an output directory is found
through the directory (``enclosing``: the nearest ancestor whose tree id a run output).

Thread-safety: functions only; each works inside the transaction it is given.
"""

from __future__ import annotations

from ..records import runs as rr
from ..store.index import Txn


def producer_ids(txn: Txn, content_id: bytes) -> list[bytes]:
    """Ids of the runs that output ``content_id``, newest last (possibly empty)."""
    return rr.decode_ids(txn.get("runcache", rr.OUTPUT_PREFIX + bytes(content_id)))


def read_run(txn: Txn, run_id: bytes) -> rr.RunRecord | None:
    """The run record ``run_id``, or None when it was removed (``vfs runs rm``)."""
    raw = txn.get("runs", bytes(run_id))
    return None if raw is None else rr.decode_run(bytes(run_id), raw)


def producers(txn: Txn, content_id: bytes) -> list[rr.RunRecord]:
    """The run records that output ``content_id``, newest last."""
    out = []
    for rid in producer_ids(txn, content_id):
        rec = read_run(txn, rid)
        if rec is not None:
            out.append(rec)
    return out


def enclosing(txn: Txn, ancestors: list[tuple[str, bytes]]) -> tuple[str, bytes] | None:
    """The nearest of ``ancestors`` (``(path, tree id)``, nearest first) that some
    run output, as ``(path, tree id)``; None when none was."""
    for path, tid in ancestors:
        if txn.get("runcache", rr.OUTPUT_PREFIX + bytes(tid)) is not None:
            return path, tid
    return None
