"""``versionfs.Run`` (a block of Python recorded as a run), ``run.save`` and
``versionfs.load`` through the materializers, ``Repo.runs``/``Repo.run``, and the
example of docs/python-runs.md run as written.

The runs happen in this process (that is the feature); objects are loaded back after
the workspace copies are deleted, so only the repository can provide them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import versionfs
from versionfs import materializers
from versionfs.api import Repo
from versionfs.errors import PathNotFound, UsageError
from versionfs.ops.run import RunFailed
from versionfs.records.model import ObjectId

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Path:
    w = tmp_path / "ws"
    w.mkdir()
    repo = Repo.init(str(w))
    (w / "data").mkdir()
    (w / "data" / "in.txt").write_text("1\n2\n3\n")
    repo.snapshot(message="inputs")
    repo.close()
    monkeypatch.chdir(w)
    return w


@pytest.fixture
def repo(ws):
    with Repo.open(str(ws)) as r:
        yield r


@pytest.fixture
def registry():
    """The materializer registry as it was, restored after the test."""
    saved = list(materializers._registered)
    yield
    materializers._registered[:] = saved


def _train(name="train", lr=0.5, **kw):
    with versionfs.Run(name, **kw) as run:
        with open(run.input("data/in.txt")) as f:
            rows = [int(x) for x in f]
        lr = run.param("lr", lr)
        run.param("net", {"layers": 2, "act": "relu"})
        with open(run.output("model.txt"), "w") as f:
            f.write(f"{sum(rows) * lr}\n")
        run.metric("loss", np.float32(0.25))
        run.label("stage", "dev")
    return run


def _read(repo, commit: str, path: str) -> bytes:
    with repo.open(commit, path) as f:
        return f.read()


def test_a_block_is_recorded_with_its_inputs_params_outputs_metrics_labels(repo):
    head_before = repo.head()
    run = _train()
    rec = run.record
    assert rec.id == run.result.record.id and rec.status == "succeeded"
    assert rec.name == "train" and rec.argv == tuple(sys.argv) and rec.cwd == ""
    assert rec.exit_code == 0 and rec.message == "" and rec.log == ""
    assert rec.params == {"python": {"lr": 0.5, "net.layers": 2, "net.act": "relu"}}
    assert rec.metrics == {"python": {"loss": 0.25}}
    assert rec.labels == {"stage": "dev"}
    assert rec.env["python"] and rec.env["executable"] == sys.executable
    assert rec.end_ns >= rec.start_ns
    # the commit names the run and holds the outputs and the declared input
    commit = repo.commit(repo.head())
    assert repo.head() != head_before and commit.parents == (head_before,)
    assert commit.run == ObjectId.from_hex(rec.id)
    assert commit.message.startswith("run train: ")
    assert rec.commit == repo.head().hex()
    assert _read(repo, rec.commit, "model.txt") == b"3.0\n"
    (dep,) = rec.deps
    assert (dep.path, dep.origin, dep.commit) == ("data/in.txt", "workspace", rec.commit)
    assert dep.id == repo.entry(repo.head(), "data/in.txt").id.hex()
    (out,) = rec.outs
    assert out.path == "model.txt" and out.id == repo.entry(repo.head(), "model.txt").id.hex()
    assert not rec.changed and rec.cacheable


def test_the_cli_shows_a_python_run(repo, ws, cli):
    rec = _train().record
    shown = cli("runs", "show", rec.short, cwd=ws).stdout
    assert "name:     train" in shown and "python:lr = 0.5" in shown
    assert "python:loss = 0.25" in shown and "model.txt" in shown
    listed = json.loads(cli("runs", "--json", cwd=ws).stdout)
    assert [r["id"] for r in listed] == [rec.id]


def test_an_exception_records_a_failed_run_reraises_and_commits_nothing(repo):
    head = repo.head()
    with pytest.raises(ValueError, match="lr must be positive"):
        with versionfs.Run("train") as run:
            run.input("data/in.txt")
            run.param("lr", -1)
            with open(run.output("model.txt"), "w") as f:
                f.write("half")
            raise ValueError("lr must be positive\nsecond line")
    rec = run.record
    assert rec.status == "failed" and rec.exit_code == 1
    assert rec.message == "ValueError: lr must be positive"
    assert rec.commit is None and rec.outs == () and not rec.cacheable
    assert rec.params == {"python": {"lr": -1}}
    assert repo.head() == head
    assert [r.id for r in repo.runs(status="failed")] == [rec.id]


def test_keyboard_interrupt_records_an_interrupted_run(repo):
    head = repo.head()
    with pytest.raises(KeyboardInterrupt), versionfs.Run("train") as run:
        run.output("model.txt")
        raise KeyboardInterrupt
    rec = run.record
    assert (rec.status, rec.exit_code, rec.commit) == ("interrupted", 130, None)
    assert "KeyboardInterrupt" in rec.message
    assert repo.head() == head


def test_sys_exit_zero_is_a_success_and_a_nonzero_exit_a_failure(repo, ws):
    with pytest.raises(SystemExit), versionfs.Run("ok") as run:
        (ws / "out.txt").write_text("x")
        run.output("out.txt")
        sys.exit(0)
    assert run.record.status == "succeeded" and run.record.commit == repo.head().hex()
    with pytest.raises(SystemExit), versionfs.Run("bad") as run2:
        sys.exit(3)
    assert (run2.record.status, run2.record.exit_code) == ("failed", 3)


def test_a_missing_output_fails_the_run(repo):
    head = repo.head()
    with pytest.raises(RunFailed, match="did not write declared output model.txt"):
        with versionfs.Run("train") as run:
            run.output("model.txt")
    assert run.record is None  # no result: the error says what happened
    (rec,) = repo.runs()
    assert rec.status == "failed" and rec.message == "missing output model.txt"
    assert repo.head() == head


def test_outputs_are_not_removed_before_the_block(repo, ws):
    (ws / "log.txt").write_text("old\n")
    repo.snapshot(message="log")
    with versionfs.Run("append") as run, open(run.output("log.txt"), "a") as f:
        f.write("new\n")                       # after the old content, still there
    assert _read(repo, run.record.commit, "log.txt") == b"old\nnew\n"


def test_an_input_changed_during_the_block_is_recorded_and_not_cacheable(repo, ws):
    warnings = []
    with versionfs.Run("train", warn=warnings.append) as run:
        run.input("data/in.txt")
        (ws / "data" / "in.txt").write_text("changed\n")
        (ws / "m.txt").write_text("m")
        run.output("m.txt")
    assert run.record.changed == ("data/in.txt",) and not run.record.cacheable
    assert any("data/in.txt changed while the run ran" in w for w in warnings)


def test_bad_declarations_are_one_line_errors(repo, ws, tmp_path):
    with versionfs.Run("train") as run:
        with pytest.raises(PathNotFound, match="input nope.txt does not exist"):
            run.input("nope.txt")
        run.input("data")
        with pytest.raises(UsageError, match="both an input and an output"):
            run.output("data/in.txt")
        with pytest.raises(UsageError, match="not inside the workspace"):
            run.output(str(tmp_path / "outside.txt"))
        with pytest.raises(UsageError, match="bad object name"):
            run.save("a/b", [1])
        with pytest.raises(UsageError, match="no materializer for a builtins.tuple"):
            run.save("t", (1, 2))
        with pytest.raises(UsageError, match="no materializer for a builtins.set"):
            run.save("s", {1})
        (ws / "o.txt").write_text("o")
        run.output("o.txt")
    with pytest.raises(UsageError, match="is not running"):
        run.input("data")
    with pytest.raises(UsageError, match="already entered"), run:
        pass


def test_a_run_from_outside_the_workspace_records_its_cwd_relative(ws, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    with versionfs.Run("train", repo=str(ws)) as run:
        run.input("ws/data/in.txt")
        (ws / "out.txt").write_text("x")
        run.output("ws/out.txt")
    rec = run.record
    assert rec.cwd == ".." and [d.path for d in rec.deps] == ["data/in.txt"]
    assert [o.path for o in rec.outs] == ["out.txt"] and rec.status == "succeeded"


def test_cached_finds_an_equal_earlier_run(repo):
    first = _train().record
    with versionfs.Run("train") as run:
        run.input("data/in.txt")
        run.param("lr", 0.5)
        run.param("net", {"layers": 2, "act": "relu"})
        run.output("model.txt")
        assert run.cached() == first
        run.param("lr", 0.6)
        assert run.cached() is None
        with open("model.txt", "w") as f:
            f.write("other\n")


def test_repo_runs_filters_and_run_finds_by_prefix(repo):
    a = _train("train").record
    b = _train("eval").record
    with pytest.raises(RuntimeError), versionfs.Run("train"):
        raise RuntimeError("boom")
    assert [r.id for r in repo.runs()][:2] == [a.id, b.id] and len(repo.runs()) == 3
    assert [r.name for r in repo.runs(name="train")] == ["train", "train"]
    assert [r.id for r in repo.runs(name="train", status="succeeded")] == [a.id]
    assert repo.run(b.id[:8]) == b
    with pytest.raises(versionfs.VfsError, match="no run"):
        repo.run("ffffffff")


# -- objects ----------------------------------------------------------------------------


def _save_all(objects: dict, name="make", **kw):
    with versionfs.Run(name) as run:
        paths = {k: run.save(k, v, **kw) for k, v in objects.items()}
    return run, paths


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


def test_objects_round_trip_through_a_commit(repo, ws):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    value = {"lr": 0.5, "layers": [1, 2, 3], "name": "net", "ok": True, "none": None}
    run, paths = _save_all({"weights": arr, "config": value})
    _, pickled = _save_all({"point": Point(1, 2)}, name="pick", pickle=True)
    assert paths == {"weights": str(ws / "artifacts/make/weights.npy"),
                     "config": str(ws / "artifacts/make/config.json")}
    assert pickled["point"].endswith("artifacts/pick/point.pkl")
    outs = {o.path for o in run.record.outs}
    assert outs == {"artifacts/make/weights.npy", "artifacts/make/weights.vfsobj.json",
                    "artifacts/make/config.json", "artifacts/make/config.vfsobj.json"}
    side = json.loads(_read(repo, run.record.commit, "artifacts/make/weights.vfsobj.json"))
    assert side == {"v": 1, "name": "weights", "materializer": "numpy", "format": "npy",
                    "type": "numpy.ndarray", "file": "weights.npy"}
    shutil.rmtree(ws / "artifacts")
    got = versionfs.load(f"{ws}@HEAD", "weights")
    assert got.dtype == np.float32 and np.array_equal(got, arr)
    assert versionfs.load(str(ws), "config") == value
    assert versionfs.load(str(ws), "point") == Point(1, 2)
    assert np.array_equal(versionfs.load(repo, "artifacts/make/weights"), arr)


def test_load_finds_the_version_asked_for(repo, ws):
    first, _ = _save_all({"w": np.zeros(3)}, name="train")
    _save_all({"w": np.ones(3)}, name="train")
    (ws / "later.txt").write_text("unrelated")
    repo.snapshot(message="a later commit no run made")
    shutil.rmtree(ws / "artifacts")
    assert np.array_equal(versionfs.load(str(ws), "w"), np.ones(3))          # by the runs
    assert np.array_equal(versionfs.load(f"{ws}@{first.record.commit}", "w"), np.zeros(3))
    assert np.array_equal(versionfs.load(str(ws), "w", run=first.record.id[:8]),
                          np.zeros(3))
    assert np.array_equal(versionfs.load(f"{ws}@HEAD~1", "w", run=first.record.id),
                          np.ones(3))  # that run's object, as REV holds it
    with pytest.raises(PathNotFound, match="no object 'nope'"):
        versionfs.load(str(ws), "nope")
    with pytest.raises(PathNotFound, match="no object 'w'"):
        versionfs.load(f"{ws}@HEAD~3", "w")   # before any run saved it
    with pytest.raises(PathNotFound, match="saved no object 'x'"):
        versionfs.load(str(ws), "x", run=first.record.id)


def test_dataframes_round_trip_as_parquet_and_as_csv(repo, ws, monkeypatch):
    import pandas as pd  # pandas and pyarrow are in the test extras
    df = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5], "c": ["x", "y", "z"]},
                      index=pd.Index([10, 20, 30], name="id"))
    assert materializers._has_pyarrow()
    _, paths = _save_all({"table": df}, name="pq")
    assert paths["table"].endswith(".parquet")
    shutil.rmtree(ws / "artifacts")
    pd.testing.assert_frame_equal(versionfs.load(str(ws), "table"), df)
    monkeypatch.setattr(materializers, "_has_pyarrow", lambda: False)
    _, paths = _save_all({"table2": df}, name="csv")
    assert paths["table2"].endswith(".csv")
    shutil.rmtree(ws / "artifacts")
    pd.testing.assert_frame_equal(versionfs.load(str(ws), "table2"), df)


def test_a_registered_materializer_saves_and_loads_its_type(repo, ws, registry):
    versionfs.register_materializer(
        Point, lambda p, f: f.write(f"{p.x},{p.y}".encode()),
        lambda f: Point(*map(int, f.read().decode().split(","))), ext=".pt")
    _, paths = _save_all({"p": Point(3, 4)})
    assert paths["p"].endswith("artifacts/make/p.pt")
    assert (ws / "artifacts/make/p.pt").read_text() == "3,4"
    shutil.rmtree(ws / "artifacts")
    assert versionfs.load(str(ws), "p") == Point(3, 4)
    materializers._registered.clear()          # another process, without it
    with pytest.raises(UsageError, match="not registered here"):
        versionfs.load(str(ws), "p")


def test_a_registered_materializer_goes_before_the_built_in_ones(repo, ws, registry):
    versionfs.register_materializer(dict, lambda d, f: f.write(b"custom"),
                                    lambda f: {"custom": f.read().decode()}, ext="cd",
                                    name="mine")
    _save_all({"d": {"a": 1}})
    assert versionfs.load(str(ws), "d") == {"custom": "custom"}


def test_object_arrays_need_pickle(repo, ws):
    with pytest.raises(UsageError, match="pass pickle=True"), versionfs.Run("obj") as run:
        run.save("a", np.array([{"x": 1}], dtype=object))
    assert not list((ws / "artifacts/obj").iterdir())  # no half-written file
    assert repo.runs()[-1].status == "failed"


# -- the docs --------------------------------------------------------------------------


def _blocks(md: str) -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", md, flags=re.DOTALL)


def test_the_docs_example_runs_as_written(tmp_path):
    """Shell blocks run with bash (the first one makes demo/, the others run in
    it); a Python block is saved under the name its first line gives and run,
    unless a later shell block runs it."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep
           + os.environ.get("PATH", "")}
    src = os.environ.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + src if src else "")
    blocks = _blocks((ROOT / "docs" / "python-runs.md").read_text())
    cwd, out = tmp_path, {}
    for i, (lang, body) in enumerate(blocks):
        if lang == "sh":
            argv, key = ["bash", "-euc", body], f"sh{i}"
        else:
            key = body.splitlines()[0].removeprefix("# ").strip()
            (cwd / key).write_text(body)
            if any(f"python {key}" in b for lg, b in blocks[i:] if lg == "sh"):
                continue
            argv = [sys.executable, key]
        p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=300, check=False)
        assert p.returncode == 0, f"{lang} block failed:\n{body}\n{p.stdout}\n{p.stderr}"
        out[key] = p.stdout
        cwd = tmp_path / "demo"
    runs = out["sh2"]
    assert re.search(r"succeeded .* train +lr=0\.1 loss=", runs)
    assert re.search(r"succeeded .* train +lr=0\.2 loss=", runs)
    assert "run train: train.py 0.2" in runs
    assert "{'lr': 0.1, 'rows': 100}" in out["analyze.py"]
    assert out["custom.py"].strip() == "['a', 'b', 'c']"


def test_saving_and_loading_json_imports_neither_numpy_nor_pandas(ws):
    code = ("import sys, versionfs\n"
            "with versionfs.Run('j') as run:\n"
            "    run.save('v', {'a': [1, 2]})\n"
            "assert versionfs.load('.', 'v') == {'a': [1, 2]}\n"
            "print(sorted(m for m in ('numpy', 'pandas', 'pyarrow') if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], cwd=ws, env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
