"""Inspecting runs: ``vfs lineage`` in every format, ``vfs runs compare``, and the
provenance attributes of mounted files (the view called directly, then a real mount).

The pipeline is made by real ``vfs run`` subprocesses: *prepare* reads
``data/raw.csv`` and writes ``features.csv`` and the directory ``data/split``;
*train* reads ``features.csv`` and the directory ``data`` (which then holds both the
raw file and prepare's split) and writes ``model.txt`` and ``metrics.json``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from versionfs.api import Repo
from versionfs.repo import mounts
from versionfs.view import ROOT_INO, View

PY = sys.executable
PREPARE = """\
import os
rows = [int(x) for x in open("data/raw.csv")]
open("features.csv", "w").write("".join(f"{r},{r * r}\\n" for r in rows))
os.makedirs("data/split", exist_ok=True)
open("data/split/train.csv", "w").write("".join(f"{r}\\n" for r in rows[:8]))
open("data/split/test.csv", "w").write("".join(f"{r}\\n" for r in rows[8:]))
"""
TRAIN = """\
import json
p = json.load(open("params.json"))
n = sum(int(line.split(",")[0]) for line in open("features.csv"))
n += sum(1 for _ in open("data/split/train.csv"))
open("model.txt", "w").write(f"{n * p['lr']}\\n")
json.dump({"loss": 1 / p["lr"], "n": n}, open("metrics.json", "w"))
"""


def _prepare(cli, ws, *extra):
    cli("run", "-n", "prepare", "-d", "data/raw.csv", "-d", "prepare.py",
        "-o", "features.csv", "-o", "data/split", *extra, "--", PY, "prepare.py", cwd=ws)


def _train(cli, ws):
    cli("run", "-n", "train", "-d", "features.csv", "-d", "data", "-d", "train.py",
        "-p", "params.json", "-o", "model.txt", "-M", "metrics.json", "--",
        PY, "train.py", cwd=ws)


def _runs(cli, ws) -> list[dict]:
    return json.loads(cli("runs", "--json", cwd=ws).stdout)


@pytest.fixture
def chain(tmp_path, cli):
    """A workspace after prepare → train; ``chain.prepare``/``chain.train`` are the
    run ids."""
    class Chain:
        pass
    c = Chain()
    c.ws = ws = tmp_path / "ws"
    ws.mkdir()
    cli("init", cwd=ws)
    (ws / "data").mkdir()
    (ws / "data" / "raw.csv").write_text("".join(f"{i}\n" for i in range(1, 11)))
    (ws / "prepare.py").write_text(PREPARE)
    (ws / "train.py").write_text(TRAIN)
    (ws / "params.json").write_text('{"lr": 0.5, "epochs": 3}\n')
    cli("snapshot", "-m", "inputs", cwd=ws)
    _prepare(cli, ws)
    _train(cli, ws)
    c.prepare, c.train = (r["id"] for r in _runs(cli, ws))
    return c


def _lineage(cli, ws, *args) -> dict:
    return json.loads(cli("lineage", *args, "--json", cwd=ws).stdout)


def _by_path(lin: dict) -> dict:
    return {e["path"]: e for e in lin["entities"]}


# -- lineage ----------------------------------------------------------------------------


def test_the_tree_shows_both_runs_and_the_raw_input(cli, chain):
    out = cli("lineage", "model.txt", cwd=chain.ws).stdout
    lines = out.splitlines()
    assert lines[0].startswith("model.txt  ") and "(HEAD " in lines[0]
    assert re.search(rf"└─ run {chain.train[:12]} train .* train\.py$", lines[1])
    prep = [i for i, line in enumerate(lines) if f"run {chain.prepare[:12]} prepare" in line]
    assert prep, out
    raw = [line for line in lines if "data/raw.csv" in line]
    assert raw and all("not produced by a recorded run" in line for line in raw), out
    # prepare appears once in full; a second way to it says so instead of repeating
    assert sum(1 for line in lines if "prepare.py  " in line) == 1, out
    assert f"run {chain.prepare[:12]} prepare (shown above)" in out
    assert lines[prep[0]].index("run") > lines[1].index("run")  # one level deeper


def test_json_links_outputs_to_runs_and_runs_to_inputs(cli, chain):
    lin = _lineage(cli, chain.ws, "model.txt")
    ents = _by_path(lin)
    repo = Repo.open(str(chain.ws))
    try:
        head = repo.resolve("HEAD")
        assert lin["commit"] == head.hex()
        assert ents["model.txt"]["id"] == repo.entry(head, "model.txt").id.hex()
    finally:
        repo.close()
    assert lin["target"] == ents["model.txt"]["key"]
    assert ents["model.txt"]["produced_by"] == chain.train
    assert ents["metrics.json"]["produced_by"] == chain.train
    assert ents["features.csv"]["produced_by"] == chain.prepare        # rule 1
    assert ents["data/raw.csv"]["produced_by"] is None
    assert ents["train.py"]["produced_by"] is None
    # the directory input 'data' was not made by a run, but holds prepare's split
    assert ents["data"]["produced_by"] is None
    assert ents["data"]["members"] == [ents["data/split"]["key"]]      # rule 3
    assert ents["data/split"]["produced_by"] == chain.prepare
    runs = {r["id"]: r for r in lin["runs"]}
    assert list(runs) == [chain.train, chain.prepare]
    assert {i["entity"] for i in runs[chain.train]["inputs"]} == \
        {ents[p]["key"] for p in ("features.csv", "data", "train.py")}
    assert {i["entity"] for i in runs[chain.prepare]["inputs"]} == \
        {ents[p]["key"] for p in ("data/raw.csv", "prepare.py")}
    assert runs[chain.train]["params"] == {"params.json": {"lr": 0.5, "epochs": 3}}
    assert lin["truncated"] is False


def test_prov_json_is_a_closed_w3c_document(cli, chain):
    doc = json.loads(cli("lineage", "model.txt", "--prov", cwd=chain.ws).stdout)
    ents, acts, agents = doc["entity"], doc["activity"], doc["agent"]
    assert set(doc["prefix"]) == {"vfs", "run"}
    assert set(acts) == {f"run:{chain.train}", f"run:{chain.prepare}"}
    for a in acts.values():
        start = datetime.fromisoformat(a["prov:startTime"])
        assert start <= datetime.fromisoformat(a["prov:endTime"])
    assert acts[f"run:{chain.train}"]["vfs:command"].endswith("train.py")
    by_path = {e["vfs:path"]: k for k, e in ents.items()}
    ref = {"prov:entity": ents, "prov:activity": acts, "prov:agent": agents,
           "prov:collection": ents}
    for kind in ("used", "wasGeneratedBy", "wasAssociatedWith", "hadMember"):
        for rel in doc[kind].values():      # every relation names declared things
            for field, table in ref.items():
                if field in rel:
                    assert rel[field] in table, (kind, rel)

    def pairs(kind, a, b):
        return {(r[a], r[b]) for r in doc[kind].values()}
    gen = pairs("wasGeneratedBy", "prov:entity", "prov:activity")
    assert (by_path["model.txt"], f"run:{chain.train}") in gen
    assert (by_path["features.csv"], f"run:{chain.prepare}") in gen
    assert not any(e == by_path["data/raw.csv"] for e, _ in gen)
    used = pairs("used", "prov:activity", "prov:entity")
    assert (f"run:{chain.prepare}", by_path["data/raw.csv"]) in used
    assert (f"run:{chain.train}", by_path["features.csv"]) in used
    assert (by_path["data"], by_path["data/split"]) in \
        pairs("hadMember", "prov:collection", "prov:entity")
    assert {r["prov:activity"] for r in doc["wasAssociatedWith"].values()} == set(acts)
    assert ents[by_path["data"]]["prov:type"] == {"$": "prov:Collection",
                                                  "type": "prov:QUALIFIED_NAME"}


def test_dot_and_mermaid_declare_every_node_they_connect(cli, chain):
    lin = _lineage(cli, chain.ws, "model.txt")
    n_nodes = len(lin["entities"]) + len(lin["runs"])
    dot = cli("lineage", "model.txt", "--dot", cwd=chain.ws).stdout
    assert dot.startswith("digraph lineage {") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}") == 1
    declared = set(re.findall(r"^  ([er]\d+) \[", dot, re.M))
    edges = re.findall(r"^  (\w+) -> (\w+)", dot, re.M)
    assert len(declared) == n_nodes
    assert edges and {n for e in edges for n in e} <= declared
    assert sum(1 for line in dot.splitlines() if "shape=box" in line) == 2
    assert f'label="run {chain.prepare[:12]} prepare"' in dot

    mer = cli("lineage", "model.txt", "--mermaid", cwd=chain.ws).stdout
    lines = mer.splitlines()
    assert lines[0] == "flowchart LR"
    declared = set(re.findall(r"^  (\w+)\[", mer, re.M))
    edges = re.findall(r"^  (\w+) (?:-->|-\.-|-\. observed \.->) (\w+)$", mer, re.M)
    assert len(declared) == n_nodes
    assert len(edges) == len(lines) - 1 - n_nodes   # every other line is an edge
    assert {n for e in edges for n in e} <= declared
    assert f'[["run {chain.train[:12]} train"]]' in mer


def test_a_file_inside_an_output_directory_was_made_by_that_run(cli, chain):
    lin = _lineage(cli, chain.ws, "data/split/test.csv@HEAD")
    ents = _by_path(lin)
    assert ents["data/split/test.csv"]["produced_by"] == chain.prepare   # rule 2
    assert ents["data/split/test.csv"]["part_of"] == ents["data/split"]["key"]
    assert [r["id"] for r in lin["runs"]] == [chain.prepare]
    out = cli("lineage", "data/split/test.csv", cwd=chain.ws).stdout
    assert f"run {chain.prepare[:12]} prepare" in out


def test_target_forms_and_errors(cli, chain):
    want = _lineage(cli, chain.ws, "model.txt")
    assert _lineage(cli, chain.ws, "HEAD:model.txt")["target"] == want["target"]
    assert _lineage(cli, chain.ws, "model.txt@HEAD")["target"] == want["target"]
    # a path relative to the current directory
    sub = _lineage(cli, chain.ws / "data", "split/test.csv@HEAD")
    assert sub["target"].startswith("data/split/test.csv@")
    bad = cli.fail("lineage", "model.txt@nosuch", cwd=chain.ws, code=4)
    assert bad.stderr.strip() == ("error: unknown revision 'nosuch'; 'vfs log' lists "
                                  "commits and 'vfs tag' lists tags")
    bad = cli.fail("lineage", "missing.txt", cwd=chain.ws, code=5)
    assert bad.stderr.startswith("error: path 'missing.txt' does not exist in commit")
    assert len(bad.stderr.splitlines()) == 1
    # HEAD~1 is prepare's commit: model.txt did not exist yet
    cli.fail("lineage", "model.txt@HEAD~1", cwd=chain.ws, code=5)


def test_a_file_no_run_made_says_so(cli, chain):
    res = cli("lineage", "data/raw.csv", cwd=chain.ws)
    assert res.stdout.strip().endswith(": not produced by a recorded run")
    lin = _lineage(cli, chain.ws, "data/raw.csv")
    assert lin["runs"] == [] and _by_path(lin)["data/raw.csv"]["produced_by"] is None
    doc = json.loads(cli("lineage", "data/raw.csv", "--prov", cwd=chain.ws).stdout)
    assert len(doc["entity"]) == 1 and "activity" not in doc


def test_depth_limits_how_far_upstream(cli, chain):
    lin = _lineage(cli, chain.ws, "model.txt", "--depth", "1")
    runs = {r["id"]: r for r in lin["runs"]}
    assert runs[chain.train]["expanded"] and not runs[chain.prepare]["expanded"]
    assert runs[chain.prepare]["inputs"] == [] and lin["truncated"]
    assert "data/raw.csv" not in _by_path(lin)
    out = cli("lineage", "model.txt", "--depth", "1", cwd=chain.ws).stdout
    assert "inputs not followed (depth limit)" in out


def test_a_later_run_making_the_same_content_is_not_the_producer(cli, chain):
    _prepare(cli, chain.ws, "--force")    # same content again, after train ran
    again = _runs(cli, chain.ws)[-1]["id"]
    assert again not in (chain.prepare, chain.train)
    ents = _by_path(_lineage(cli, chain.ws, "model.txt"))
    assert ents["features.csv"]["produced_by"] == chain.prepare   # train read the old
    # asked at HEAD (the re-run's commit), the re-run is the one that made it there
    assert _by_path(_lineage(cli, chain.ws, "features.csv"))["features.csv"][
        "produced_by"] == again
    assert _by_path(_lineage(cli, chain.ws, "features.csv@HEAD~1"))["features.csv"][
        "produced_by"] == chain.prepare


# -- runs compare -------------------------------------------------------------------------


def test_compare_marks_a_changed_param_and_the_metrics_it_moved(cli, chain):
    (chain.ws / "params.json").write_text('{"lr": 0.25, "epochs": 3}\n')
    _train(cli, chain.ws)
    second = _runs(cli, chain.ws)[-1]["id"]
    cmp = json.loads(cli("runs", "compare", chain.train[:8], second[:8], "--json",
                         cwd=chain.ws).stdout)
    assert cmp["a"]["id"] == chain.train and cmp["b"]["id"] == second
    assert cmp["changed"] is True
    params = {r["key"]: r for r in cmp["params"]}
    assert params["lr"] == {"file": "params.json", "key": "lr", "old": 0.5, "new": 0.25,
                            "change": -0.25, "state": "changed"}
    assert params["epochs"]["state"] == "same" and params["epochs"]["change"] == 0
    metrics = {r["key"]: r for r in cmp["metrics"]}
    assert metrics["loss"]["old"] == 2.0 and metrics["loss"]["new"] == 4.0
    assert metrics["loss"]["change"] == 2.0 and metrics["n"]["state"] == "same"
    assert {r["path"] for r in cmp["outputs"]} == {"model.txt", "metrics.json"}
    assert cmp["inputs"] == [] and "command" not in cmp["other"]

    text = cli("runs", "compare", chain.train, second, cwd=chain.ws).stdout
    assert re.search(r"^\* params\.json:lr\s+0\.5\s+0\.25\s+-0\.25$", text, re.M), text
    assert "epochs" not in text                   # unchanged rows only with --all
    assert re.search(r"^\* metrics\.json:loss\s+2\s+4\s+\+2$", text, re.M), text
    assert "output changed: model.txt" in text
    full = cli("runs", "compare", "--all", chain.train, second, cwd=chain.ws).stdout
    assert re.search(r"^  params\.json:epochs\s+3\s+3$", full, re.M), full

    md = cli("runs", "compare", "--md", chain.train, second, cwd=chain.ws).stdout
    assert "| Path | Param | A | B | Change |" in md
    assert "| params.json | **lr** | 0.5 | 0.25 | -0.25 |" in md
    assert "| params.json | epochs | 3 | 3 |  |" in md


def test_compare_of_different_stages_and_unknown_runs(cli, chain):
    cmp = json.loads(cli("runs", "compare", chain.prepare, chain.train, "--json",
                         cwd=chain.ws).stdout)
    assert cmp["other"]["name"] == {"old": "prepare", "new": "train"}
    assert cmp["other"]["command"]["new"].endswith("train.py")
    assert {r["key"]: r["state"] for r in cmp["params"]} == {"lr": "added",
                                                            "epochs": "added"}
    states = {r["path"]: r["state"] for r in cmp["inputs"]}
    assert states["data/raw.csv"] == "removed" and states["features.csv"] == "added"
    bad = cli.fail("runs", "compare", chain.prepare, "abcdef0123", cwd=chain.ws, code=4)
    assert bad.stderr.strip() == "error: no run 'abcdef0123'; 'vfs runs' lists the runs"


# -- provenance attributes ------------------------------------------------------------------


def _view_path(view: View, path: str) -> int:
    ino = ROOT_INO
    for part in path.split("/"):
        ino = view.lookup(ino, part.encode()).ino
    return ino


def test_view_names_the_run_that_made_each_files_content(chain):
    repo = Repo.open(str(chain.ws))
    view = View(repo, "HEAD")
    try:
        assert repo.commit(repo.resolve("HEAD")).run.hex() == chain.train
        prep_cmd = f"{PY} prepare.py".encode()
        for path, run, stage in [("model.txt", chain.train, b"train"),
                                 ("features.csv", chain.prepare, b"prepare"),
                                 ("data/split", chain.prepare, b"prepare"),
                                 ("data/split/test.csv", chain.prepare, b"prepare")]:
            ino = _view_path(view, path)
            assert view.getxattr(ino, b"user.versionfs.run") == run.encode(), path
            assert view.getxattr(ino, b"user.versionfs.stage") == stage, path
        ino = _view_path(view, "features.csv")
        assert view.getxattr(ino, b"user.versionfs.cmd") == prep_cmd
        for path in ("data/raw.csv", "data", "train.py"):
            ino = _view_path(view, path)
            assert b"user.versionfs.run" not in view.listxattr(ino), path
    finally:
        view.close()
        repo.close()


_HAS_FUSE = os.geteuid() == 0 and os.path.exists("/dev/fuse") and shutil.which("fusermount3")


@pytest.fixture
def mount_head(cli, tmp_path):
    """Mount a workspace's HEAD with ``versionfs mount``; always unmounted after."""
    made = []

    def mount(ws: Path) -> Path:
        mp = tmp_path / f"mnt{len(made)}"
        mp.mkdir()
        made.append([mp, None])
        cli("mount", f"{ws}@HEAD", mp)
        state = mounts.read_state(str(mp))
        made[-1][1] = state.pid if state else None
        return mp

    yield mount
    for mp, pid in made:
        if mounts.find_mount(str(mp)) is not None:
            subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True)
        if pid and mounts.alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while mounts.alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)  # waiting for an exit, bounded: not synchronisation
            if mounts.alive(pid):
                os.kill(pid, signal.SIGKILL)
        assert mounts.find_mount(str(mp)) is None, f"{mp} still mounted"


@pytest.mark.mount
@pytest.mark.skipif(not _HAS_FUSE, reason="needs root, /dev/fuse and fusermount3")
def test_mounted_file_made_by_an_earlier_run_names_that_run(cli, chain, mount_head):
    mp = mount_head(chain.ws)
    assert os.getxattr(mp, "user.versionfs.commit") == \
        _lineage(cli, chain.ws, "model.txt")["commit"].encode()
    # features.csv is unchanged in the commit of run 2 (train), made by run 1
    assert os.getxattr(mp / "features.csv", "user.versionfs.run") == chain.prepare.encode()
    assert os.getxattr(mp / "features.csv", "user.versionfs.stage") == b"prepare"
    assert os.getxattr(mp / "features.csv", "user.versionfs.cmd") == \
        f"{PY} prepare.py".encode()
    assert os.getxattr(mp / "data" / "split" / "train.csv", "user.versionfs.run") == \
        chain.prepare.encode()
    assert os.getxattr(mp / "model.txt", "user.versionfs.run") == chain.train.encode()
    names = set(os.listxattr(mp / "model.txt"))
    assert names == {"user.versionfs.id", "user.versionfs.commit", "user.versionfs.run",
                     "user.versionfs.cmd", "user.versionfs.stage"}
    assert set(os.listxattr(mp / "data" / "raw.csv")) == {"user.versionfs.id",
                                                          "user.versionfs.commit"}
    with pytest.raises(OSError) as err:
        os.getxattr(mp / "data" / "raw.csv", "user.versionfs.run")
    assert err.value.errno == errno.ENODATA
