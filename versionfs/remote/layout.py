"""The remote layout: the names and byte encodings of what a remote holds.

A remote is a directory of objects under one root URL (docs/format.md "Remotes"):

    versionfs.toml          the format and the chunking parameters (written once)
    HEAD                    ``heads/NAME``: the branch a clone checks out
    packs/ab/<id>           chunk bytes back to back, then a footer index of them
    index/<id>              which chunks each pack holds and where (write once)
    records/<id>            a bundle of commit, tree, file and run records (write once)
    refs/heads/NAME         64 hex digits and a newline; moved by compare-and-swap
    refs/tags/NAME

Every object but the refs, HEAD and the lock is named by the BLAKE3 of its bytes, so
writing one twice is harmless and a reader never needs it to change. Readers take
the union of every index and record file: a push adds files, never rewrites one.

Pure values and codecs: no I/O here. Thread-safe.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

import msgpack

from ..errors import CorruptObject
from ..records.chunking import ChunkParams
from ..records.hashing import hash_bytes
from ..records.model import ID_LEN, ObjectId

FORMAT = 1
FORMAT_FILE = "versionfs.toml"
HEAD_FILE = "HEAD"
PACKS = "packs/"
INDEX = "index/"
RECORDS = "records/"
REFS = "refs/"
LOCK = "locks/refs"

PACK_MAGIC = b"VFSPACK\x01"
_TRAILER = 4 + len(PACK_MAGIC)

# record kinds in a bundle, and their databases in a local index
RECORD_DBS = {"commits": "commits", "trees": "trees", "files": "files", "runs": "runs"}


def pack_name(pid: bytes) -> str:
    h = pid.hex()
    return f"{PACKS}{h[:2]}/{h}"


def index_name(iid: bytes) -> str:
    return f"{INDEX}{iid.hex()}"


def records_name(rid: bytes) -> str:
    return f"{RECORDS}{rid.hex()}"


def ref_name(ref: str) -> str:
    """``heads/main`` → ``refs/heads/main``."""
    return REFS + ref


def name_id(name: str) -> bytes | None:
    """The id in an object's name (``packs/ab/<hex>``, ``index/<hex>``), or None
    for a name that is not one of ours (a leftover, a stranger's file)."""
    h = name.rsplit("/", 1)[-1]
    if len(h) != 2 * ID_LEN:
        return None
    try:
        return bytes.fromhex(h)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class PackEntry:
    """One chunk in a remote pack."""

    cid: bytes
    offset: int
    length: int


# -- packs ------------------------------------------------------------------------


def pack_footer(entries: list[PackEntry]) -> bytes:
    """What follows a pack's chunks: their table, its length and the magic.

    With it a pack describes itself: a reader that lost the index files can still
    find every chunk by byte range."""
    table = msgpack.packb([[e.cid, e.offset, e.length] for e in entries],
                          use_bin_type=True)
    return table + len(table).to_bytes(4, "little") + PACK_MAGIC


def read_footer(tail: bytes, pack_size: int) -> list[PackEntry]:
    """The chunk table of a pack from its last bytes (at least the whole footer)."""
    if len(tail) < _TRAILER or tail[-len(PACK_MAGIC):] != PACK_MAGIC:
        raise CorruptObject("a remote pack has no versionfs footer")
    n = int.from_bytes(tail[-_TRAILER:-len(PACK_MAGIC)], "little")
    if n > len(tail) - _TRAILER:
        raise CorruptObject("a remote pack's footer is cut short")
    table = tail[len(tail) - _TRAILER - n: len(tail) - _TRAILER]
    return _entries(msgpack.unpackb(table, raw=False), pack_size - _TRAILER - n)


def _entries(rows, limit: int) -> list[PackEntry]:
    out = []
    try:
        for cid, off, length in rows:
            if len(cid) != ID_LEN or off < 0 or length <= 0 or off + length > limit:
                raise CorruptObject("a remote chunk table names bytes outside its pack")
            out.append(PackEntry(bytes(cid), int(off), int(length)))
    except (TypeError, ValueError) as exc:
        raise CorruptObject(f"a remote chunk table is malformed ({exc})") from None
    return out


# -- index files -------------------------------------------------------------------


def encode_index(packs: dict[bytes, tuple[int, list[PackEntry]]]) -> bytes:
    """An index file: for each pack id, its size and its chunks."""
    rows = [[pid, size, [[e.cid, e.offset, e.length] for e in entries]]
            for pid, (size, entries) in sorted(packs.items())]
    return msgpack.packb({"v": FORMAT, "packs": rows}, use_bin_type=True)


def decode_index(data: bytes) -> dict[bytes, tuple[int, list[PackEntry]]]:
    try:
        obj = msgpack.unpackb(data, raw=False)
        out = {}
        for pid, size, rows in obj["packs"]:
            if len(pid) != ID_LEN:
                raise CorruptObject("a remote index file names a malformed pack id")
            out[bytes(pid)] = (int(size), _entries(rows, int(size)))
        return out
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise CorruptObject(f"a remote index file is malformed ({exc})") from None


# -- record bundles ----------------------------------------------------------------


def encode_records(records: dict[str, list[tuple[bytes, bytes]]]) -> bytes:
    """A bundle: ``{kind: [(id, encoding), ...]}`` for kinds of ``RECORD_DBS``."""
    body = {"v": FORMAT}
    for kind in RECORD_DBS:
        body[kind] = [[k, v] for k, v in sorted(records.get(kind, ()))]
    return msgpack.packb(body, use_bin_type=True)


def decode_records(data: bytes) -> dict[str, list[tuple[bytes, bytes]]]:
    try:
        obj = msgpack.unpackb(data, raw=False)
        out = {}
        for kind in RECORD_DBS:
            rows = obj.get(kind, [])
            out[kind] = [(bytes(k), bytes(v)) for k, v in rows]
            if any(len(k) != ID_LEN for k, _ in out[kind]):
                raise CorruptObject("a remote record bundle has a malformed id")
        return out
    except (AttributeError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise CorruptObject(f"a remote record bundle is malformed ({exc})") from None


def content_id(data: bytes) -> bytes:
    """The name-giving id of an index file, record bundle or pack."""
    return hash_bytes(data)


# -- small text objects ---------------------------------------------------------------


def encode_ref(cid: bytes) -> bytes:
    return cid.hex().encode() + b"\n"


def decode_ref(data: bytes, name: str) -> ObjectId:
    text = data.decode("ascii", "replace").strip()
    try:
        return ObjectId.from_hex(text)
    except (ValueError, TypeError):
        raise CorruptObject(f"remote ref {name} is malformed ({text[:20]!r})") from None


def encode_format(params: ChunkParams) -> bytes:
    lines = ["# a versionfs remote (docs/format.md, Remotes)", "[versionfs]",
             f"format = {FORMAT}", "", "[chunking]",
             *(f"{k} = {v}" for k, v in params.as_dict().items()), ""]
    return "\n".join(lines).encode()


def decode_format(data: bytes) -> ChunkParams:
    from ..errors import UnsupportedFormat
    try:
        conf = tomllib.loads(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CorruptObject(f"the remote's {FORMAT_FILE} is not valid TOML ({exc})") from None
    fmt = conf.get("versionfs", {}).get("format")
    if fmt != FORMAT:
        raise UnsupportedFormat(
            f"the remote has format {fmt!r}, this versionfs reads format {FORMAT}; "
            "upgrade versionfs")
    c = conf.get("chunking", {})
    return ChunkParams(**{k: int(v) for k, v in c.items()}) if c else ChunkParams()
