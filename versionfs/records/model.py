"""Frozen records of versionfs and their canonical encoding.

Records are plain values: trees, files, commits, chunk locations. Each has one
canonical byte encoding (msgpack of a fixed-shape list, ints in their shortest form),
and the id of a tree, a chunked file or a commit is the BLAKE3 of that encoding, so
equal content always has equal ids. Decoding validates what could harm a reader
(tree entry names above all). Thread-safe: nothing here is mutable.
"""

from __future__ import annotations

import enum
import os
import stat
import struct
from dataclasses import dataclass, field

import msgpack

from ..errors import CorruptObject
from .hashing import hash_bytes

ID_LEN = 32


class ObjectId(bytes):
    """A 32-byte BLAKE3 digest: of content (chunk, small file) or of a record."""

    __slots__ = ()

    @classmethod
    def from_hex(cls, text: str) -> ObjectId:
        raw = bytes.fromhex(text)
        if len(raw) != ID_LEN:
            raise ValueError(f"an object id is {ID_LEN * 2} hex digits, got {len(text)}")
        return cls(raw)

    @property
    def short(self) -> str:
        return self.hex()[:12]

    def __repr__(self) -> str:
        return f"ObjectId({self.hex()[:16]}…)"


class Kind(enum.IntEnum):
    FILE = 1
    DIR = 2
    SYMLINK = 3


_KINDS = {int(k): k for k in Kind}   # decoding: a dict lookup is 10x cheaper than Kind(n)


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One name in a directory.

    ``id`` is the file id (FILE), the tree id (DIR) or the BLAKE3 of the target
    (SYMLINK, whose target bytes are kept inline in ``target``). ``mode`` holds
    the permission bits only (``0o7777``); the kind gives the file type.
    """

    name: str
    kind: Kind
    mode: int
    size: int
    mtime_ns: int
    id: ObjectId
    target: bytes = b""

    @property
    def st_mode(self) -> int:
        ftype = {Kind.FILE: stat.S_IFREG, Kind.DIR: stat.S_IFDIR, Kind.SYMLINK: stat.S_IFLNK}
        return ftype[self.kind] | self.mode

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR


@dataclass(frozen=True, slots=True)
class Tree:
    """A directory: entries sorted by the bytes of their names."""

    entries: tuple[TreeEntry, ...]

    def get(self, name: str) -> TreeEntry | None:
        lo, hi = 0, len(self.entries)
        key = _name_key(name)
        while lo < hi:
            mid = (lo + hi) // 2
            mk = _name_key(self.entries[mid].name)
            if mk < key:
                lo = mid + 1
            elif mk > key:
                hi = mid
            else:
                return self.entries[mid]
        return None


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of a file: its id and length (offsets follow from the order)."""

    id: ObjectId
    length: int


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A chunked file: total size and its chunks in order."""

    size: int
    chunks: tuple[ChunkRef, ...]


class BlobKind(enum.IntEnum):
    OBJECT = 0  # objects/ab/cdef…: a whole-file clone (reflink) or copy
    PACK = 1    # packs/ab/cdef…: many chunks appended
    # chunks/ab/cdef… of a disk chunk cache (remote.cache): one fetched chunk per file,
    # named by the chunk id. Answered by a lazy store's locate, never written to an index.
    CACHE = 2


@dataclass(frozen=True, slots=True)
class ChunkLoc:
    """Where a chunk's bytes live: a blob, an offset in it and a length."""

    blob_kind: BlobKind
    blob: ObjectId
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Commit:
    tree: ObjectId
    parents: tuple[ObjectId, ...]
    time_ns: int
    author: str
    message: str
    run: ObjectId | None = None
    stats: dict = field(default_factory=dict, compare=False, hash=False)


# --------------------------------------------------------------------------
# canonical encoding


def _name_key(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _packb(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpackb(data: bytes, what: str, use_list: bool = True):
    try:
        return msgpack.unpackb(data, raw=False, use_list=use_list, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CorruptObject(f"cannot decode {what}: {exc}; run 'vfs fsck'") from None


def check_name(name: str) -> None:
    """Refuse names that could escape a directory or break a path."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise CorruptObject(
            f"invalid name {name!r} in a tree: the repository is damaged or hostile; "
            "run 'vfs fsck'"
        )


def encode_tree(tree: Tree) -> bytes:
    return encode_tree_rows([
        [_name_key(e.name), int(e.kind), e.mode, e.size, e.mtime_ns, bytes(e.id), e.target]
        for e in tree.entries
    ])


def encode_tree_rows(rows: list[list]) -> bytes:
    """The tree encoding of rows ``[name bytes, kind, mode, size, mtime_ns, id, target]``
    (lists or tuples: both encode as arrays) already sorted by name bytes, with names that need no checking (they come from
    the filesystem). The scanner uses this to skip building ``TreeEntry`` objects."""
    return _packb(rows)


def decode_tree_columns(data: bytes) -> tuple[tuple, ...]:
    """A tree record as seven columns (names as bytes, kinds, modes, sizes,
    mtimes, ids, targets), each a tuple with an item per entry, checked as
    ``decode_tree`` checks entries but a column at a time and without building
    ``TreeEntry`` objects: for readers that keep trees packed (the mount's view).
    Only the kinds, names, ids and targets are checked here; a reader packing the
    integer columns finds a bad one itself (TypeError, OverflowError)."""
    rows = _unpackb(data, "tree", use_list=False)  # tuples: ~40 % less to build
    if not rows:
        return ((),) * 7
    try:
        if set(map(len, rows)) != {7}:
            raise ValueError("an entry of other than 7 fields")
        names, kinds, modes, sizes, mtimes, oids, targets = zip(*rows)
        blob = b"".join(names)
        if (b"/" in blob or b"\0" in blob or min(map(len, names)) == 0
                or b"." in names or b".." in names):
            raise ValueError("an empty name, '.', '..', or a name with '/' or NUL")
        if not set(kinds) <= _KINDS.keys():
            raise ValueError(f"kinds {sorted(set(kinds) - _KINDS.keys())}")
        if set(map(len, oids)) != {ID_LEN} or len(b"".join(oids)) != ID_LEN * len(oids):
            raise ValueError("an id that is not 32 bytes")
        b"".join(targets)
    except (TypeError, ValueError) as exc:
        raise CorruptObject(f"malformed tree record: {exc!r}; run 'vfs fsck'") from None
    return names, kinds, modes, sizes, mtimes, oids, targets


def decode_tree(data: bytes) -> Tree:
    rows = _unpackb(data, "tree")
    entries = []
    try:
        for raw_name, kind, mode, size, mtime_ns, oid, target in rows:
            name = raw_name.decode("utf-8", "surrogateescape")
            check_name(name)
            entries.append(TreeEntry(name, _KINDS[kind], mode, size, mtime_ns, ObjectId(oid),
                                     target))
    except (TypeError, ValueError, KeyError) as exc:
        raise CorruptObject(f"malformed tree record: {exc!r}; run 'vfs fsck'") from None
    return Tree(tuple(entries))


def decode_tree_rows(data: bytes) -> tuple:
    """A tree's rows ``(name bytes, kind, mode, size, mtime_ns, id, target)`` as
    tuples, as stored and not yet checked: two trees are compared row by row (equal
    rows are equal entries) without a ``TreeEntry`` per name. ``row_entry`` checks a
    row and makes its entry."""
    try:
        rows = msgpack.unpackb(data, raw=False, use_list=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CorruptObject(f"cannot decode tree: {exc}; run 'vfs fsck'") from None
    if type(rows) is not tuple:
        raise CorruptObject("malformed tree record: not a list of entries; run 'vfs fsck'")
    return rows


def row_entry(row) -> TreeEntry:
    """The entry of one row of ``decode_tree_rows``, checked as ``decode_tree`` does."""
    try:
        raw_name, kind, mode, size, mtime_ns, oid, target = row
        name = raw_name.decode("utf-8", "surrogateescape")
        check_name(name)
        return TreeEntry(name, _KINDS[kind], mode, size, mtime_ns, ObjectId(oid), target)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CorruptObject(f"malformed tree record: {exc!r}; run 'vfs fsck'") from None


def changed_rows(old: tuple, new: tuple) -> tuple[dict, dict]:
    """The rows of ``old`` not in ``new`` and those of ``new`` not in ``old`` (rows of
    ``decode_tree_rows``), each by name bytes. Whole rows are compared as tuples, in
    C: a directory of 1,000 entries where ten differ costs two set builds and ten
    pairs of entries, not 2,000 entries. Any field that differs counts, the mtime
    included; the caller decides what matters."""
    try:
        so, sn = set(old), set(new)
        return {r[0]: r for r in so - sn}, {r[0]: r for r in sn - so}
    except (TypeError, IndexError) as exc:  # unhashable or empty rows: not a tree
        raise CorruptObject(f"malformed tree record: {exc!r}; run 'vfs fsck'") from None


def row_pairs(old: tuple, new: tuple) -> list[tuple[str, TreeEntry | None, TreeEntry | None]]:
    """``(name, old entry, new entry)`` for each name whose rows differ between two
    trees' rows (``changed_rows``): ``new``'s names in tree order, then those only in
    ``old``; the side without the name has None. Only these rows become entries."""
    gone, came = changed_rows(old, new)
    if not gone and not came:
        return []
    out = []
    for k in sorted(came):
        b = row_entry(came[k])
        a = gone.get(k)
        out.append((b.name, None if a is None else row_entry(a), b))
    for k in sorted(gone.keys() - came.keys()):
        a = row_entry(gone[k])
        out.append((a.name, a, None))
    return out


def make_tree(entries) -> Tree:
    """A tree from entries in any order, sorted canonically; names validated."""
    ordered = sorted(entries, key=lambda e: _name_key(e.name))
    for a, b in zip(ordered, ordered[1:]):
        if a.name == b.name:
            raise ValueError(f"duplicate name {a.name!r} in a tree")
    for e in ordered:
        check_name(e.name)
    return Tree(tuple(ordered))


def tree_id(data: bytes) -> ObjectId:
    return ObjectId(hash_bytes(b"vfs-tree\0" + data))


def encode_file(rec: FileRecord) -> bytes:
    return _packb([rec.size, [[bytes(c.id), c.length] for c in rec.chunks]])


def decode_file(data: bytes) -> FileRecord:
    size, rows = _unpackb(data, "file record")
    try:
        chunks = tuple(ChunkRef(ObjectId(cid), length) for cid, length in rows)
    except (TypeError, ValueError) as exc:
        raise CorruptObject(f"malformed file record: {exc}; run 'vfs fsck'") from None
    return FileRecord(size, chunks)


def file_id(data: bytes) -> ObjectId:
    return ObjectId(hash_bytes(b"vfs-file\0" + data))


def encode_chunkloc(loc: ChunkLoc) -> bytes:
    return bytes([loc.blob_kind]) + loc.blob + loc.offset.to_bytes(8, "little") + \
        loc.length.to_bytes(4, "little")


def decode_chunkloc(data: bytes) -> ChunkLoc:
    if len(data) != 1 + ID_LEN + 12:
        raise CorruptObject("malformed chunk location; run 'vfs fsck'")
    return ChunkLoc(
        BlobKind(data[0]),
        ObjectId(data[1:33]),
        int.from_bytes(data[33:41], "little"),
        int.from_bytes(data[41:45], "little"),
    )


def encode_commit(c: Commit) -> bytes:
    return _packb([
        bytes(c.tree), [bytes(p) for p in c.parents], c.time_ns, c.author, c.message,
        bytes(c.run) if c.run else None, c.stats,
    ])


def decode_commit(data: bytes) -> Commit:
    row = _unpackb(data, "commit")
    try:
        tree, parents, time_ns, author, message, run, stats = row
        return Commit(
            ObjectId(tree), tuple(ObjectId(p) for p in parents), time_ns, author, message,
            ObjectId(run) if run else None, stats or {},
        )
    except (TypeError, ValueError) as exc:
        raise CorruptObject(f"malformed commit record: {exc}; run 'vfs fsck'") from None


def commit_id(data: bytes) -> ObjectId:
    return ObjectId(hash_bytes(b"vfs-commit\0" + data))


# --------------------------------------------------------------------------
# stat cache values: the packed stat of a workspace file, then its file id

_STAT = struct.Struct("<QQQqqI")   # dev, ino, size, mtime_ns, ctime_ns, st_mode
STAT_LEN = _STAT.size
STAT_PACK = _STAT.pack   # (dev, ino, size, mtime_ns, ctime_ns, st_mode) -> packed stat
STATCACHE_VALUE_LEN = STAT_LEN + ID_LEN


def stat_bytes(st: os.stat_result) -> bytes:
    """The packed stat a stat cache value starts with."""
    return _STAT.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                      st.st_mode)


def encode_statcache(st: os.stat_result, fid: bytes) -> bytes:
    return stat_bytes(st) + bytes(fid)


def decode_statcache(raw: bytes | None) -> tuple[bytes, ObjectId] | None:
    """``(packed stat, file id)``, or None for an absent or malformed value."""
    if raw is None or len(raw) != STATCACHE_VALUE_LEN:
        return None
    return raw[:STAT_LEN], ObjectId(raw[STAT_LEN:])


# dir state values (the ``dirstate`` table): a digest of the directory's listing, the
# tree id it gave, the directory's own packed stat, the ignore rules' salt

DIRSTATE_DIGEST_LEN = 16
DIRSTATE_SALT_LEN = 8
DIRSTATE_TREE = slice(DIRSTATE_DIGEST_LEN, DIRSTATE_DIGEST_LEN + ID_LEN)
DIRSTATE_STAT = slice(DIRSTATE_TREE.stop, DIRSTATE_TREE.stop + STAT_LEN)
DIRSTATE_SALT = slice(DIRSTATE_STAT.stop, DIRSTATE_STAT.stop + DIRSTATE_SALT_LEN)
