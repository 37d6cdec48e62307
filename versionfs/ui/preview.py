"""Previews of one file of a commit, from the head of its bytes only.

Every byte comes through the repository's verified read path (``repo.open``), so a
preview can show nothing but the commit's own content: a symlink is described, never
followed. Text-like files (CSV, JSON, YAML, text) are read up to ``HEAD_BYTES``;
Parquet reads its footer and the first batch of rows; HDF5 and ``.npy`` read only
their metadata. The readers of Parquet, HDF5 and NumPy are optional: without the
package the preview says so.
Thread-safe: each call opens its own file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath

from ..records.model import Kind

HEAD_BYTES = 64 << 10       # text shown of a text-like file: a few screens
TABLE_ROWS = 50             # rows of a CSV/Parquet head
MAX_COLUMNS = 64            # columns shown of a table
HDF5_ITEMS = 200            # groups and datasets listed
HEX_BYTES = 512             # bytes of an unknown binary file shown as hex
IMAGE_MAX = 32 << 20        # largest image served to the browser

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".webp": "image/webp", ".bmp": "image/bmp"}
_TEXT = {".txt", ".md", ".rst", ".log", ".py", ".sh", ".toml", ".ini", ".cfg", ".xml",
         ".html", ".css", ".js", ".c", ".h", ".r", ".sql", ".tex", ".jsonl", ".ndjson"}


def kind_of(path: str) -> str:
    """The preview kind for a file name: table, parquet, json, yaml, text, image,
    hdf5, npy or binary (decided by content later)."""
    ext = posixpath.splitext(path.lower())[1]
    return {".csv": "table", ".tsv": "table", ".parquet": "parquet", ".pq": "parquet",
            ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".h5": "hdf5",
            ".hdf5": "hdf5", ".hdf": "hdf5", ".npy": "npy"}.get(
        ext, "image" if ext in IMAGE_TYPES else "text" if ext in _TEXT else "binary")


def preview(repo, commit: str, path: str, entry) -> dict:
    """The preview of ``path`` in ``commit`` (an entry of kind file or symlink):
    ``{"type": ..., ...}`` with the fields of that type, and ``"error"`` when the
    content could not be parsed as its name says."""
    if entry.kind is Kind.SYMLINK:
        return {"type": "symlink", "target": os.fsdecode(entry.target)}
    kind = kind_of(path)
    try:
        with repo.open(commit, path) as f:
            return _READERS[kind](f, entry.size, path)
    except _PARSE_ERRORS as exc:
        return {"type": "binary", "error": f"not readable as {kind}: {exc}",
                **_hex(repo, commit, path)}


def _hex(repo, commit: str, path: str) -> dict:
    with repo.open(commit, path) as f:
        data = f.read(HEX_BYTES)
    return {"hex": [f"{i:08x}  {data[i:i + 16].hex(' ')}" for i in range(0, len(data), 16)]}


def _head(f, size: int) -> tuple[str, bool]:
    data = f.read(HEAD_BYTES)
    truncated = size > len(data)
    if truncated:  # never show half a character
        data = data[: len(data) - 4] + data[len(data) - 4:].decode(
            "utf-8", "ignore").encode()
    return data.decode("utf-8", "replace"), truncated


def _text(f, size: int, path: str) -> dict:
    data = f.read(HEAD_BYTES)
    if b"\0" in data[:8192]:
        return {"type": "binary", "hex": [f"{i:08x}  {data[i:i + 16].hex(' ')}"
                                          for i in range(0, min(len(data), HEX_BYTES), 16)]}
    f.seek(0)
    text, truncated = _head(f, size)
    return {"type": "text", "text": text, "truncated": truncated}


def _binary(f, size: int, path: str) -> dict:
    head = f.read(8192)
    f.seek(0)
    if head and b"\0" not in head:
        try:
            head.decode("utf-8")
            return _text(f, size, path)
        except UnicodeDecodeError:
            pass
    data = head[:HEX_BYTES]
    return {"type": "binary",
            "hex": [f"{i:08x}  {data[i:i + 16].hex(' ')}" for i in range(0, len(data), 16)]}


def _json(f, size: int, path: str) -> dict:
    text, truncated = _head(f, size)
    if not truncated:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    return {"type": "text", "format": "json", "text": text, "truncated": truncated}


def _yaml(f, size: int, path: str) -> dict:
    text, truncated = _head(f, size)
    if not truncated:
        import yaml
        yaml.safe_load(text)  # a YAML error is shown next to the raw text
    return {"type": "text", "format": "yaml", "text": text, "truncated": truncated}


def _table(f, size: int, path: str) -> dict:
    text, truncated = _head(f, size)
    lines = text.splitlines()
    if truncated and lines:
        lines = lines[:-1]  # the last line may be cut
    delim = "\t" if path.lower().endswith(".tsv") else None
    if delim is None:
        try:
            delim = csv.Sniffer().sniff("\n".join(lines[:20]), ",;\t|").delimiter
        except csv.Error:
            delim = ","
    rows = list(csv.reader(io.StringIO("\n".join(lines[: TABLE_ROWS + 1])), delimiter=delim))
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    return {"type": "table", "columns": header[:MAX_COLUMNS],
            "rows": [r[:MAX_COLUMNS] for r in body], "truncated": truncated
            or len(lines) > TABLE_ROWS + 1}


def _parquet(f, size: int, path: str) -> dict:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return {"type": "message", "message": "previewing Parquet needs pyarrow "
                "(pip install pyarrow)"}
    pf = pq.ParquetFile(f)
    names = pf.schema_arrow.names
    cols = names[:MAX_COLUMNS]
    rows: list[list[str]] = []
    if pf.metadata.num_rows:
        batch = next(pf.iter_batches(batch_size=TABLE_ROWS, columns=cols))
        data = batch.to_pydict()
        rows = [[_cell(data[c][i]) for c in cols] for i in range(batch.num_rows)]
    return {"type": "table", "format": "parquet", "columns": cols, "rows": rows,
            "num_rows": pf.metadata.num_rows, "truncated": pf.metadata.num_rows > len(rows),
            "schema": [{"name": fld.name, "type": str(fld.type)}
                       for fld in pf.schema_arrow][:MAX_COLUMNS]}


def _cell(v) -> str:
    text = str(v)
    return text if len(text) <= 200 else text[:197] + "..."


def _hdf5(f, size: int, path: str) -> dict:
    try:
        import h5py
    except ImportError:
        return {"type": "message", "message": "previewing HDF5 needs h5py (pip install h5py)"}
    items: list[dict] = []
    with h5py.File(f, "r") as h5:
        def visit(name, obj):
            if len(items) >= HDF5_ITEMS:
                return True
            if isinstance(obj, h5py.Dataset):
                items.append({"name": name, "kind": "dataset", "shape": list(obj.shape),
                              "dtype": str(obj.dtype)})
            else:
                items.append({"name": name, "kind": "group", "members": len(obj)})
            return None
        h5.visititems(visit)
    return {"type": "hdf5", "items": items, "truncated": len(items) >= HDF5_ITEMS}


def _npy(f, size: int, path: str) -> dict:
    try:
        from numpy.lib import format as npformat
    except ImportError:
        return {"type": "message", "message": "previewing .npy needs numpy (pip install numpy)"}
    version = npformat.read_magic(f)
    read = npformat.read_array_header_1_0 if version == (1, 0) else \
        npformat.read_array_header_2_0
    shape, fortran, dtype = read(f)
    return {"type": "npy", "shape": list(shape), "dtype": str(dtype),
            "fortran_order": bool(fortran), "version": f"{version[0]}.{version[1]}"}


def _image(f, size: int, path: str) -> dict:
    ext = posixpath.splitext(path.lower())[1]
    if size > IMAGE_MAX:
        return {"type": "message", "message": f"image of {size} bytes: too large to show"}
    return {"type": "image", "content_type": IMAGE_TYPES[ext]}


_READERS = {"table": _table, "parquet": _parquet, "json": _json, "yaml": _yaml,
            "text": _text, "image": _image, "hdf5": _hdf5, "npy": _npy, "binary": _binary}

# What a malformed file raises in the readers: bad CSV/JSON/YAML, pyarrow's
# ArrowInvalid (a ValueError), h5py's OSError, numpy's ValueError.
_PARSE_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, csv.Error,
                                                  StopIteration, KeyError)
try:
    import yaml as _yaml_mod
    _PARSE_ERRORS += (_yaml_mod.YAMLError,)
except ImportError:  # pragma: no cover - pyyaml is a dependency
    pass
