"""Materializers: how a Python object becomes a file of a run's outputs and back.

``save(obj, dir, name)`` writes ``dir/NAME.EXT`` and a small JSON sidecar
``dir/NAME.vfsobj.json`` (the materializer, the format, the object's type and the
data file's name); ``load(repo, commit, sidecar_path)`` reads both back through the
repository (``Repo.open_file``), never through the workspace. Built in, tried in
this order after the registered ones:

* ``numpy``: a NumPy array as ``.npy`` (``allow_pickle=False``: object arrays need
  ``pickle=True``);
* ``pandas``: a DataFrame as ``.parquet`` when pyarrow can be imported, else as
  ``.csv`` (the index as the first column; CSV keeps values, not dtypes); the sidecar
  says which, so a reader without pyarrow still learns why it cannot read a parquet;
* ``json``: a value that survives ``json.dumps``/``json.loads`` unchanged (dicts
  with text keys, lists, text, numbers, booleans, None; a tuple does not, it would
  come back a list) as ``.json``;
* ``pickle``: anything, as ``.pkl``, only when asked for (``pickle=True``): a pickle
  runs code when loaded, so load only what you trust.

NumPy and pandas are never imported here unless the object is one of theirs (its
module is already loaded). ``register(type, save_fn, load_fn, ext)`` adds one:
``save_fn(obj, f)`` writes a binary file object, ``load_fn(f)`` reads a seekable
binary file object. Thread-safe: the registry is guarded by a lock; a save writes a
temporary name (``.vfs-tmp-*``, which snapshots ignore) and renames it.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .errors import PathNotFound, UsageError, from_oserror
from .workspace.ignore import TMP_PREFIX

SIDECAR = ".vfsobj.json"
SIDECAR_VERSION = 1


@dataclass(frozen=True)
class Materializer:
    name: str                          # recorded in the sidecar; found by it on load
    matches: Callable[[object], bool]
    save: Callable[[object, io.BufferedIOBase], None]
    load: Callable[[io.BufferedIOBase], object]
    ext: str                           # without the dot
    format: str = ""                   # recorded; default: ext


_lock = threading.Lock()
_registered: list[Materializer] = []   # newest first


def register(cls: type, save_fn, load_fn, ext: str, *, name: str | None = None) -> None:
    """Save instances of ``cls`` with ``save_fn(obj, f)`` as ``NAME.ext``, load them
    with ``load_fn(f)``. A later registration for the same name replaces it and is
    tried before every earlier one and before the built-in materializers."""
    if not isinstance(cls, type):
        raise UsageError(f"register_materializer needs a type, not {cls!r}")
    ext = ext.lstrip(".")
    if not ext or "/" in ext:
        raise UsageError(f"bad extension {ext!r} for a materializer; give e.g. 'h5'")
    key = name or _type_name(cls)
    m = Materializer(key, lambda obj: isinstance(obj, cls), save_fn, load_fn, ext)
    with _lock:
        _registered[:] = [m] + [r for r in _registered if r.name != key]


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# -- the built-in ones ----------------------------------------------------------------


def _is_ndarray(obj) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.ndarray)


def _npy_save(obj, f) -> None:
    import numpy as np
    try:
        np.save(f, obj, allow_pickle=False)
    except ValueError:
        raise UsageError("an array of Python objects cannot be saved as .npy; pass "
                         "pickle=True") from None


def _npy_load(f):
    import numpy as np
    return np.load(f, allow_pickle=False)


def _is_dataframe(obj) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(obj, pd.DataFrame)


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401  (only whether it is there)
    except ImportError:
        return False
    return True


def _parquet_save(obj, f) -> None:
    obj.to_parquet(f)


def _parquet_load(f):
    import pandas as pd
    if not _has_pyarrow():
        raise UsageError("this object is a parquet file and pyarrow cannot be imported "
                         "here; pip install pyarrow")
    return pd.read_parquet(f)


def _csv_save(obj, f) -> None:
    text = io.TextIOWrapper(f, encoding="utf-8", newline="")
    obj.to_csv(text)
    text.flush()
    text.detach()  # leave ``f`` open: the caller closes it


def _csv_load(f):
    import pandas as pd
    return pd.read_csv(f, index_col=0)


def _is_json(obj) -> bool:
    try:
        return json.loads(json.dumps(obj, allow_nan=False)) == obj
    except (TypeError, ValueError, RecursionError):
        return False


def _json_save(obj, f) -> None:
    f.write(json.dumps(obj, indent=1, sort_keys=True, allow_nan=False).encode() + b"\n")


def _json_load(f):
    return json.loads(f.read())


def _pickle_save(obj, f) -> None:
    import pickle
    pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def _pickle_load(f):
    import pickle
    return pickle.load(f)


NUMPY = Materializer("numpy", _is_ndarray, _npy_save, _npy_load, "npy")
PARQUET = Materializer("pandas", _is_dataframe, _parquet_save, _parquet_load, "parquet")
CSV = Materializer("pandas", _is_dataframe, _csv_save, _csv_load, "csv")
JSON = Materializer("json", _is_json, _json_save, _json_load, "json")
PICKLE = Materializer("pickle", lambda obj: True, _pickle_save, _pickle_load, "pkl")
_BY_FORMAT = {(m.name, m.ext): m for m in (NUMPY, PARQUET, CSV, JSON, PICKLE)}


def choose(obj, *, pickle: bool = False) -> Materializer:
    """The materializer for ``obj``; ``UsageError`` when none fits."""
    if pickle:
        return PICKLE
    with _lock:
        found = next((m for m in _registered if m.matches(obj)), None)
    if found is not None:
        return found
    if _is_ndarray(obj):
        return NUMPY
    if _is_dataframe(obj):
        return PARQUET if _has_pyarrow() else CSV
    if _is_json(obj):
        return JSON
    raise UsageError(f"no materializer for a {_type_name(type(obj))}; pass pickle=True, "
                     "or register one with versionfs.register_materializer")


def _for_sidecar(meta: dict, where: str) -> Materializer:
    key, ext = meta.get("materializer"), meta.get("format")
    with _lock:
        found = next((m for m in _registered if m.name == key), None)
    found = found or _BY_FORMAT.get((key, ext))
    if found is None:
        raise UsageError(f"{where} was saved by materializer {key!r}, which is not "
                         "registered here; call versionfs.register_materializer for "
                         f"{key} first")
    return found


# -- save and load --------------------------------------------------------------------


def check_name(name: str) -> None:
    if (not isinstance(name, str) or not name or "/" in name or "\0" in name
            or name.startswith(".") or name.endswith(SIDECAR.removesuffix(".json"))):
        raise UsageError(f"bad object name {name!r}: use a plain file name without "
                         "'/', not starting with '.'")


def save(obj, directory: str, name: str, *, pickle: bool = False) -> tuple[str, str]:
    """Write ``obj`` into ``directory``; returns (data file, sidecar) paths."""
    check_name(name)
    m = choose(obj, pickle=pickle)
    data = os.path.join(directory, f"{name}.{m.ext}")
    side = os.path.join(directory, name + SIDECAR)
    meta = {"v": SIDECAR_VERSION, "name": name, "materializer": m.name,
            "format": m.ext, "type": _type_name(type(obj)), "file": f"{name}.{m.ext}"}
    try:
        os.makedirs(directory, exist_ok=True)
        _write(data, lambda f: m.save(obj, f))
        _write(side, lambda f: f.write(json.dumps(meta, indent=1, sort_keys=True)
                                       .encode() + b"\n"))
    except OSError as exc:
        raise from_oserror(exc, f"saving object {name} in {directory}") from None
    return data, side


def _write(path: str, fill) -> None:
    d, base = os.path.split(path)
    tmp = os.path.join(d, f"{TMP_PREFIX}{os.getpid()}-{base}")
    try:
        with open(tmp, "wb") as f:
            fill(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load(repo, commit: str, sidecar: str):
    """The object whose sidecar is at ``sidecar`` in ``commit`` (hex), read
    through the repository."""
    where = f"{sidecar} in {commit[:12]}"
    with repo.open_file(commit, sidecar) as f:
        try:
            meta = json.loads(f.read())
            file = meta["file"]
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"{where} is not an object sidecar; was it written by "
                             "run.save?") from None
    m = _for_sidecar(meta, where)
    path = f"{os.path.dirname(sidecar)}/{file}".lstrip("/")
    try:
        raw = repo.open_file(commit, path)
    except PathNotFound:
        raise PathNotFound(f"object {meta.get('name')}: {path} is missing from "
                           f"{commit[:12]} though its sidecar is there", path=path) from None
    with io.BufferedReader(raw, 1 << 20) as f:
        return m.load(f)
