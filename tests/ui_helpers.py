"""A generated repository for the ``vfs ui`` tests and a server over it.

``make_demo(root)`` builds a workspace with one file of every previewed kind (CSV,
Parquet, JSON, YAML, text, PNG, HDF5, .npy, binary), a symlink pointing to
/etc/passwd, three commits on main (tags v1, v2), a branch ``experiment`` with a
commit of its own (from v2), runs made with ``versionfs.Run`` (prepare → train ×3 with other
params and metrics, the last failed one), and a ``vfs.yaml`` pipeline.
``serve(repo, **kw)`` is a context manager giving a real uvicorn serving the app on
127.0.0.1 at a free port, stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import struct
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass

import numpy as np

VFS_YAML = """\
stages:
  prepare:
    cmd: python3 prepare.py
    deps: [raw.csv]
    outs: [clean.csv]
  train:
    cmd: python3 train.py --lr 0.1
    deps: [clean.csv]
    outs: [model.bin]
    metrics: [metrics.json]
"""


def png(width: int = 8, height: int = 8) -> bytes:
    """A tiny valid RGB PNG (a gradient)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(
            ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    rows = b"".join(b"\0" + bytes(v for x in range(width) for v in (x * 30, y * 30, 128))
                    for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                              8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@dataclass
class Demo:
    root: str
    commits: dict      # tag or name -> commit hex
    runs: dict         # name -> run id (train: the last of them)
    train_runs: list


def _write(root, rel, data):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def make_demo(root: str) -> Demo:
    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq
    from versionfs import Repo
    repo = Repo.init(root)
    rows = "\n".join(f"{i},{i * 0.5},name{i}" for i in range(200))
    _write(root, "raw.csv", "id,value,label\n" + rows + "\n")
    _write(root, "notes/readme.txt", "first line\nsecond line\nthird line\n")
    _write(root, "config.json", json.dumps({"lr": 0.1, "layers": [1, 2, 3]}))
    _write(root, "params.yaml", "train:\n  lr: 0.1\n  epochs: 3\n")
    _write(root, "img/pic.png", png())
    _write(root, "blob.bin", bytes(range(256)) * 4)
    np.save(os.path.join(root, "arr.npy"), np.zeros((3, 4), dtype="float32"))
    pq.write_table(pa.table({"a": list(range(100)), "b": [f"s{i}" for i in range(100)]}),
                   os.path.join(root, "table.parquet"))
    with h5py.File(os.path.join(root, "sim.h5"), "w") as h5:
        g = h5.create_group("run1")
        g.create_dataset("temperature", data=np.ones((10, 20), dtype="float64"))
        h5.create_dataset("grid", data=np.arange(6, dtype="int32"))
    os.symlink("/etc/passwd", os.path.join(root, "passwd-link"))
    _write(root, "vfs.yaml", VFS_YAML)
    commits = {"v1": repo.snapshot(message="raw import", tag="v1").commit.hex()}
    _write(root, "notes/readme.txt", "first line\nsecond line changed\nthird line\nfourth\n")
    _write(root, "blob.bin", bytes(range(256)) * 4 + b"more")
    os.rename(os.path.join(root, "config.json"), os.path.join(root, "settings.json"))
    commits["v2"] = repo.snapshot(message="edit notes", tag="v2").commit.hex()
    repo.branch("experiment")
    repo.checkout("experiment")  # a commit of its own: the history graph forks
    _write(root, "notes/idea.txt", "try a bigger model\n")
    commits["experiment"] = repo.snapshot(message="an idea").commit.hex()
    repo.checkout("main")
    runs = {}
    # the runs look as a user's scripts' would (argv is part of a run's record and of
    # its commit message; under pytest it would be pytest's own command line)
    saved_argv, sys.argv = sys.argv, ["prepare.py"]
    try:
        return _runs(repo, root, commits, runs)
    finally:
        sys.argv = saved_argv


def _runs(repo, root, commits, runs) -> Demo:
    from versionfs import Run
    with Run("prepare", repo) as run:
        run.input(os.path.join(root, "raw.csv"))
        _write(root, "clean.csv", "id,value\n" + "\n".join(f"{i},{i}" for i in range(50)))
        run.output(os.path.join(root, "clean.csv"))
    runs["prepare"] = run.record.id
    train = []
    sys.argv = ["train.py"]
    for i, lr in enumerate((0.1, 0.05, 0.01)):
        with Run("train", repo) as run:
            run.input(os.path.join(root, "clean.csv"))
            run.param("lr", lr)
            run.param("epochs", 3)
            _write(root, "model.bin", f"model lr={lr}".encode())
            run.output(os.path.join(root, "model.bin"))
            run.metric("loss", round(1.0 - lr * 5 - i * 0.1, 4))
            run.metric("accuracy", round(0.7 + i * 0.1, 4))
        train.append(run.record.id)
    runs["train"] = train[-1]
    try:
        with Run("train", repo) as run:
            run.param("lr", 1.0)
            raise RuntimeError("diverged")
    except RuntimeError:
        pass
    runs["failed"] = run.record.id
    commits["main"] = repo.head().hex()
    repo.close()
    return Demo(root, commits, runs, train)


class Server:
    def __init__(self, url: str):
        self.url = url

    def get(self, path: str, headers: dict | None = None):
        """``(status, headers, body bytes)`` of GET ``path`` (taken as is: no
        normalization, so encoded dots and slashes reach the server)."""
        req = urllib.request.Request(self.url.rstrip("/") + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def json(self, path: str):
        status, _, body = self.get(path)
        return status, json.loads(body)


@contextlib.contextmanager
def serve(root: str, **kw):
    """A real uvicorn serving ``vfs ui``'s app over the repository at ``root``."""
    from versionfs import Repo
    from versionfs.ui import UiApp, UiServer
    repo = Repo.open(root)
    server = UiServer(UiApp(repo, **kw), "127.0.0.1", 0)
    server.start()
    try:
        yield Server(server.url)
    finally:
        server.stop()
        repo.close()
