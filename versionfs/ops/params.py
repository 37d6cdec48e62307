"""Values of params and metrics files: YAML, JSON or TOML, whole or by keys.

``-p params.yaml:train.lr,seed`` names keys of a file; nested maps are flattened to
dotted keys (``train.lr``), lists stay values. A file is parsed by its extension
(``.yaml``/``.yml``, ``.json``, ``.toml``), else tried as YAML (which reads JSON
too). Thread-safe: pure functions.
"""

from __future__ import annotations

import json
import os
import tomllib

from ..errors import PathNotFound, UsageError


def parse_spec(spec: str) -> tuple[str, list[str] | None]:
    """``FILE[:KEY,...]`` as (file, keys or None for the whole file)."""
    path, sep, keys = spec.partition(":")
    if not path:
        raise UsageError(f"bad params spec {spec!r}: expected FILE or FILE:KEY,KEY")
    if not sep:
        return path, None
    names = [k.strip() for k in keys.split(",") if k.strip()]
    if not names:
        raise UsageError(f"bad params spec {spec!r}: no keys after ':'")
    return path, names


def load_file(path: str) -> dict:
    """The file's values, flattened to dotted keys."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise PathNotFound(f"{path} does not exist (named as a params or metrics "
                           "file); create it or fix the name", path=path) from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", path=path) from None
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".json":
            data = json.loads(raw)
        elif ext == ".toml":
            data = tomllib.loads(raw.decode())
        else:
            import yaml  # PyYAML: loaded only when a YAML file is read
            data = yaml.safe_load(raw)
    except Exception as exc:  # each parser raises its own types
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"cannot parse {path}: {first}", path=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path} holds a {type(data).__name__}, not a map of names "
                         "to values", path=path)
    return flatten(data)


def flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in data.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, name + "."))
        else:
            out[name] = _plain(v)
    return out


def _plain(v):
    """A value msgpack and JSON both keep (dates and the like become text)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return str(v)


def select(path: str, values: dict, keys: list[str] | None) -> dict:
    """``values`` limited to ``keys`` (a key may name a nested map: its leaves)."""
    if keys is None:
        return values
    out = {}
    for key in keys:
        hit = {k: v for k, v in values.items() if k == key or k.startswith(key + ".")}
        if not hit:
            raise UsageError(f"{path} has no key {key!r}"
                             + (f" (it has: {', '.join(sorted(values)[:8])})" if values else ""),
                             path=path)
        out.update(hit)
    return out


def read_params(specs: list[str], base: str) -> dict[str, dict]:
    """``{file: {key: value}}`` for ``-p`` specs, files relative to ``base``."""
    out: dict[str, dict] = {}
    for spec in specs:
        path, keys = parse_spec(spec)
        values = load_file(os.path.join(base, path))
        out.setdefault(path, {}).update(select(path, values, keys))
    return out


def numeric(values: dict) -> dict:
    """The entries of a flattened map that are numbers (bools excluded)."""
    return {k: v for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
