"""The remotes a repository knows: ``.vfs/remotes.toml`` (name, URL, fsspec options,
how refs move) and where each remote's local state lives.

Credentials never go here: fsspec finds them in its usual places (environment, config
files); ``vfs remote add`` refuses options that look like secrets. Thread-safety:
functions only; writers hold the repository lock.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field

from ..errors import CorruptObject, UsageError
from ..repo.repository import write_text_atomic

FILE = "remotes.toml"
STATE_DIR = "remotes"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
SECRET_WORDS = ("secret", "password", "token", "credential", "passwd")
SECRET_KEYS = {"key", "access_key", "aws_access_key_id", "account_key", "sas_token"}


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    name: str
    url: str
    options: dict[str, str] = field(default_factory=dict)
    cas: str = "conditional"    # or "lock": see remote.backend.probe_cas

    def to_dict(self) -> dict:
        return {"name": self.name, "url": self.url, "options": dict(self.options),
                "cas": self.cas}


def check_name(name: str) -> None:
    if not _NAME.match(name) or name in ("HEAD",):
        raise UsageError(f"remote name {name!r} is not allowed: use letters, digits, "
                         "'.', '_' and '-'")


def check_options(options: dict[str, str]) -> None:
    for k in options:
        low = k.lower()
        if low in SECRET_KEYS or any(w in low for w in SECRET_WORDS):
            raise UsageError(
                f"option {k!r} looks like a credential; versionfs never stores those: "
                "put it in the environment (e.g. AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) "
                "or your fsspec/cloud config files")


def parse_options(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings → a dict (``UsageError`` on a malformed one)."""
    out = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k.strip():
            raise UsageError(f"option {p!r} is not KEY=VALUE")
        out[k.strip()] = v
    return out


def load(vfs_dir: str) -> dict[str, RemoteConfig]:
    path = os.path.join(vfs_dir, FILE)
    try:
        with open(path, "rb") as f:
            conf = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise CorruptObject(f"{path} is not valid TOML ({exc}); fix or remove it") from None
    out = {}
    for name, body in conf.get("remote", {}).items():
        out[name] = RemoteConfig(name, str(body["url"]),
                                 {str(k): str(v) for k, v in body.get("options", {}).items()},
                                 str(body.get("cas", "conditional")))
    return out


def save(vfs_dir: str, remotes: dict[str, RemoteConfig]) -> None:
    """Write every remote (atomically: tmp, fsync, rename)."""
    lines = ["# versionfs remotes (vfs remote add|remove); no credentials here", ""]
    for name in sorted(remotes):
        r = remotes[name]
        lines += [f"[remote.{_q(name)}]", f"url = {_q(r.url)}", f"cas = {_q(r.cas)}"]
        if r.options:
            lines.append(f"[remote.{_q(name)}.options]")
            lines += [f"{_q(k)} = {_q(v)}" for k, v in sorted(r.options.items())]
        lines.append("")
    write_text_atomic(os.path.join(vfs_dir, FILE), "\n".join(lines))


def _q(s: str) -> str:
    return json.dumps(s)  # a JSON string is a TOML basic string


def get(vfs_dir: str, name: str | None) -> RemoteConfig:
    """The remote ``name``, or the only/`origin` one when ``name`` is None."""
    remotes = load(vfs_dir)
    if name is None:
        if "origin" in remotes:
            return remotes["origin"]
        if len(remotes) == 1:
            return next(iter(remotes.values()))
        if not remotes:
            raise UsageError("this repository has no remote; add one with "
                             "'vfs remote add NAME URL'")
        raise UsageError(f"which remote? this repository has {', '.join(sorted(remotes))}; "
                         "name one")
    try:
        return remotes[name]
    except KeyError:
        known = ", ".join(sorted(remotes)) or "none"
        raise UsageError(f"no remote named {name!r} (known: {known}); "
                         "'vfs remote add NAME URL' adds one") from None


def state_path(vfs_dir: str, name: str) -> str:
    return os.path.join(vfs_dir, STATE_DIR, name, "state.lmdb")
