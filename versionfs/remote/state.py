"""A local copy of a remote's index: which chunks it holds and where, its records,
and which of its index and record files are already merged.

Push asks it what the remote lacks and pull where to fetch from, with no request per
chunk or record: ``sync`` lists ``index/`` and ``records/`` (two listings) and reads
only the files it has not merged yet, each checked against the id in its name. A
remote's files are written once and never change, so what was merged stays true —
unless ``vfs gc --remote`` consolidated and removed some: a listed-before file that
is gone makes ``sync`` start over from the files that are there.

The state is a cache: deleting ``.vfs/remotes/NAME/`` loses nothing (the next sync
reads everything again). One LMDB environment (``store.index.Index`` with its own
databases): ``chunks`` chunk id → pack id (32) + offset (u64 LE) + length (u32 LE);
``records`` kind letter + id → encoding; ``seen`` object name → ``b""``.

Thread-safety: any number of threads; LMDB serialises writers.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from ..errors import CorruptObject, RemoteCorrupt
from ..store.index import Index
from . import layout
from .layout import PackEntry

DBS = ("meta", "chunks", "records", "seen")
KIND_LETTER = {"commits": b"c", "trees": b"t", "files": b"f", "runs": b"r"}


def _chunk_value(pid: bytes, e: PackEntry) -> bytes:
    return pid + e.offset.to_bytes(8, "little") + e.length.to_bytes(4, "little")


def decode_chunk_value(raw: bytes) -> tuple[bytes, int, int]:
    """``(pack id, offset, length)`` of a ``chunks`` value."""
    return bytes(raw[:32]), int.from_bytes(raw[32:40], "little"), \
        int.from_bytes(raw[40:44], "little")


class RemoteState:
    """What one remote holds, as far as its index and record files say."""

    def __init__(self, path: str):
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.index = Index(path, names=DBS)
        self.was_reset = False   # the last sync started over (files had gone)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> RemoteState:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- questions ----------------------------------------------------------------
    def chunk(self, cid: bytes) -> tuple[bytes, int, int] | None:
        with self.index.read() as txn:
            raw = txn.get("chunks", cid)
        return None if raw is None else decode_chunk_value(raw)

    def view(self):
        """A read transaction for many questions in a row (``StateView``)."""
        return _StateView(self.index)

    def pack_entries(self) -> dict[bytes, list[PackEntry]]:
        """Every pack the index files name, with its chunks in offset order."""
        out: dict[bytes, list[PackEntry]] = {}
        with self.index.read() as txn:
            for cid, raw in txn.items("chunks"):
                pid, off, length = decode_chunk_value(raw)
                out.setdefault(pid, []).append(PackEntry(bytes(cid), off, length))
        for entries in out.values():
            entries.sort(key=lambda e: e.offset)
        return out

    def counts(self) -> dict[str, int]:
        with self.index.read() as txn:
            return {"chunks": txn.count("chunks"), "records": txn.count("records"),
                    "files": txn.count("seen")}

    # -- keeping it current ---------------------------------------------------------
    def sync(self, backend, *, workers: int = 8) -> int:
        """Merge the remote's index and record files not merged yet; returns how many
        were read. ``RemoteCorrupt`` when one does not match its name."""
        listed = [n for n, _ in backend.list(layout.INDEX) + backend.list(layout.RECORDS)
                  if layout.name_id(n) is not None]
        names = set(listed)
        with self.index.read() as txn:
            seen = {k.decode() for k in txn.keys("seen")}
        self.was_reset = bool(seen - names)
        if self.was_reset:        # consolidated by a remote gc: start over
            self._reset()
            seen = set()
        new = sorted(names - seen)
        if not new:
            return 0
        with ThreadPoolExecutor(min(workers, len(new))) as pool:
            bodies = list(pool.map(lambda n: (n, backend.read(n)), new))
        with self.index.write() as txn:
            for name, data in bodies:
                if layout.content_id(data) != layout.name_id(name):
                    raise RemoteCorrupt(
                        f"remote object {name} does not match its name (damaged or "
                        "tampered); restore it from a good copy, or delete it and push again",
                        object_id=None)
                try:
                    if name.startswith(layout.INDEX):
                        self._merge_index(txn, layout.decode_index(data))
                    else:
                        self._merge_records(txn, layout.decode_records(data))
                except CorruptObject as exc:
                    raise RemoteCorrupt(f"remote object {name}: {exc}") from None
                txn.put("seen", name.encode(), b"")
        return len(new)

    def _reset(self) -> None:
        with self.index.write() as txn:
            for db in DBS:
                for k in list(txn.keys(db)):
                    txn.delete(db, k)

    @staticmethod
    def _merge_index(txn, packs) -> None:
        for pid, (_size, entries) in packs.items():
            for e in entries:
                txn.put("chunks", e.cid, _chunk_value(pid, e), overwrite=False)

    @staticmethod
    def _merge_records(txn, records) -> None:
        for kind, rows in records.items():
            letter = KIND_LETTER[kind]
            for rid, enc in rows:
                txn.put("records", letter + rid, enc, overwrite=False)

    def add_packs(self, packs: dict[bytes, tuple[int, list[PackEntry]]],
                  index_file: str) -> None:
        """Remember packs this process uploaded with their index file."""
        with self.index.write() as txn:
            self._merge_index(txn, packs)
            txn.put("seen", index_file.encode(), b"")

    def add_records(self, records: dict[str, dict[bytes, bytes]], bundle: str) -> None:
        with self.index.write() as txn:
            self._merge_records(txn, {k: list(v.items()) for k, v in records.items()})
            txn.put("seen", bundle.encode(), b"")


class _StateView:
    """``known``/``get``/``chunk`` answered inside one read transaction."""

    def __init__(self, index: Index):
        self._index = index
        self._cm = None
        self._txn = None

    def __enter__(self) -> _StateView:
        self._cm = self._index.read()
        self._txn = self._cm.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._cm.__exit__(*exc)

    def known(self, kind: str, oid: bytes) -> bool:
        return self._txn.has("records", KIND_LETTER[kind] + oid)

    def get(self, kind: str, oid: bytes) -> bytes | None:
        return self._txn.get("records", KIND_LETTER[kind] + oid)

    def has_chunk(self, cid: bytes) -> bool:
        return self._txn.has("chunks", cid)

    def chunk(self, cid: bytes) -> tuple[bytes, int, int] | None:
        raw = self._txn.get("chunks", cid)
        return None if raw is None else decode_chunk_value(raw)

    def records(self, kind: str):
        """``(id, encoding)`` of every record of ``kind`` the remote holds."""
        letter = KIND_LETTER[kind]
        for k, v in self._txn.items("records", letter):
            yield bytes(k[1:]), bytes(v)

    def runs(self):
        """``(run id, encoding)`` of every run record the remote holds."""
        return self.records("runs")
