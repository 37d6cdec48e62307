"""Pipelines end to end, in subprocesses: ``vfs.yaml`` validation (every refusal, by
its one-line message), ``vfs repro`` (order, only changed stages run, cache and "up
to date", failures stop downstream stages, ``-j 2`` really runs two stages at once,
``--dry-run`` runs nothing), ``vfs dag`` in every format, stages declared in Python,
and the example of docs/pipelines.md as written.

Concurrency is proved without timing: each of two stages waits for a file the other
creates (a generous deadline only matters when something is broken), so they can
only both succeed if they ran at the same time.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

PY = sys.executable
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "pipeline"
# the example's commands say `python3`: make that this interpreter (it has PyYAML)
ENV = {"PATH": os.path.dirname(PY) + os.pathsep + os.environ.get("PATH", "")}


@pytest.fixture
def ws(tmp_path, cli) -> Path:
    w = tmp_path / "ws"
    w.mkdir()
    cli("init", cwd=w)
    return w


def write(ws: Path, yaml_text: str) -> None:
    (ws / "vfs.yaml").write_text(yaml_text)


def repro(cli, ws, *args, check=True):
    res = cli("repro", "--json", *args, cwd=ws, check=check, env=ENV)
    return res, {s["stage"]: s for s in json.loads(res.stdout)["stages"]}


def runs(cli, ws) -> list[dict]:
    return json.loads(cli("runs", "--json", cwd=ws).stdout)


def names_run(cli, ws) -> list[str]:
    return [r["name"] for r in runs(cli, ws)]


# -- validation ------------------------------------------------------------------------

BAD = {
    "unknown key": ("stages:\n  train:\n    cmd: 'true'\n    dep: [x]\n",
                    "stage train: unknown key 'dep' (did you mean 'deps'?)"),
    "missing cmd": ("stages:\n  train:\n    outs: [m]\n",
                    "stage train: no cmd; give the command to run"),
    "cycle": ("stages:\n  a:\n    cmd: 'true'\n    deps: [y]\n    outs: [x]\n"
              "  b:\n    cmd: 'true'\n    deps: [x]\n    outs: [y]\n",
              "stages form a cycle: a -> b -> a"),
    "duplicate output": ("stages:\n  a:\n    cmd: 'true'\n    outs: [m]\n"
                         "  b:\n    cmd: 'true'\n    outs: [m]\n",
                         "stage a and stage b both declare output m"),
    "overlapping outputs": ("stages:\n  a:\n    cmd: 'true'\n    outs: [out]\n"
                            "  b:\n    cmd: 'true'\n    outs: [out/m]\n",
                            "stage a and stage b declare overlapping outputs out and out/m"),
    "unknown top-level key": ("stage:\n  a:\n    cmd: 'true'\n",
                              "vfs.yaml: unknown key 'stage' (did you mean 'stages'?)"),
    "dep is own output": ("stages:\n  a:\n    cmd: 'true'\n    deps: [d]\n    outs: [d/x]\n",
                          "stage a: d is both a dep and an output"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_pipeline_is_refused_naming_the_stage(cli, ws, case):
    text, message = BAD[case]
    write(ws, text)
    for verb in ("repro", "dag"):
        res = cli.fail(verb, cwd=ws, code=2)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        assert message in lines[0]
    assert runs(cli, ws) == []


def test_a_missing_dep_nobody_makes_is_refused_before_anything_runs(cli, ws, tmp_path):
    marker = tmp_path / "ran"
    write(ws, f"stages:\n  first:\n    cmd: touch {marker}; echo 1 > one\n    outs: [one]\n"
              "  second:\n    cmd: cat one data.csv > two\n"
              "    deps: [one, data.csv]\n    outs: [two]\n")
    res = cli.fail("repro", cwd=ws, code=2)
    assert "stage second: dep data.csv does not exist and no stage outputs it" in res.stderr
    assert not marker.exists() and runs(cli, ws) == []


def test_no_vfs_yaml_is_one_line(cli, ws):
    res = cli.fail("repro", cwd=ws, code=2)
    assert "no vfs.yaml in the workspace" in res.stderr


def test_an_unknown_stage_name_is_refused_with_a_suggestion(cli, ws):
    write(ws, "stages:\n  train:\n    cmd: echo x > m\n    outs: [m]\n")
    res = cli.fail("repro", "trian", cwd=ws, code=2)
    assert "no stage 'trian' in vfs.yaml; did you mean 'train'?" in res.stderr


# -- repro -------------------------------------------------------------------------------

CHAIN = """\
stages:
  c:
    cmd: cat b.txt > c.txt; echo c >> {log}
    deps: [b.txt]
    outs: [c.txt]
  b:
    cmd: [sh, -c, "cat a.txt > b.txt; echo b >> {log}"]
    deps: [a.txt]
    outs: [b.txt]
  a:
    cmd: cat src.txt > a.txt; echo a >> {log}
    deps: [src.txt]
    outs: [a.txt]
"""


def test_stages_run_in_dependency_order_and_once(cli, ws, tmp_path):
    log = tmp_path / "log"
    write(ws, CHAIN.format(log=log))
    (ws / "src.txt").write_text("hello\n")
    res, st = repro(cli, ws)
    assert log.read_text().split() == ["a", "b", "c"]
    assert [s["stage"] for s in json.loads(res.stdout)["stages"]] == ["a", "b", "c"]
    assert {s["status"] for s in st.values()} == {"ran"}
    assert (ws / "c.txt").read_text() == "hello\n"
    assert names_run(cli, ws) == ["a", "b", "c"]     # run records carry the stage name
    _, st = repro(cli, ws)
    assert {s["status"] for s in st.values()} == {"up to date"}
    assert log.read_text().split() == ["a", "b", "c"]
    assert len(runs(cli, ws)) == 3


def test_only_stages_whose_inputs_changed_run_again(cli, ws, tmp_path):
    log = tmp_path / "log"
    write(ws, CHAIN.format(log=log) + "  other:\n    cmd: echo o > o.txt; echo o >> "
          f"{log}\n    deps: [src.txt]\n    outs: [o.txt]\n")
    (ws / "src.txt").write_text("one\n")
    repro(cli, ws)
    log.write_text("")
    (ws / "src.txt").write_text("two\n")
    _, st = repro(cli, ws, "c")       # c and its upstream only: not `other`
    assert log.read_text().split() == ["a", "b", "c"]
    assert "other" not in st
    assert st["a"]["reason"] == "dep src.txt changed"
    assert st["b"]["reason"] == "dep a.txt changed"
    log.write_text("")
    (ws / "src.txt").write_text("one\n")   # back: every output comes from the cache
    _, st = repro(cli, ws, "c")
    assert log.read_text() == ""
    assert {s["status"] for s in st.values()} == {"cached"}
    assert (ws / "c.txt").read_text() == "one\n"


def test_a_failed_stage_stops_its_downstream_stages_only(cli, ws, tmp_path):
    write(ws, "stages:\n"
              "  bad:\n    cmd: echo half > half.txt; exit 3\n    outs: [half.txt]\n"
              "  below:\n    cmd: cat half.txt > below.txt\n    deps: [half.txt]\n"
              "    outs: [below.txt]\n"
              "  fine:\n    cmd: echo ok > fine.txt\n    outs: [fine.txt]\n")
    res, st = repro(cli, ws, check=False)
    assert res.returncode == 1 and json.loads(res.stdout)["ok"] is False
    assert st["bad"]["status"] == "failed" and st["bad"]["exit_code"] == 3
    assert st["below"]["status"] == "skipped"
    assert st["below"]["reason"] == "upstream stage bad failed"
    assert st["fine"]["status"] == "ran"
    assert not (ws / "below.txt").exists()
    assert sorted(names_run(cli, ws)) == ["bad", "fine"]
    text = cli.fail("repro", cwd=ws, code=1)      # the summary table, without --json
    assert "bad" in text.stdout and "skipped" in text.stdout


def test_two_independent_stages_run_at_once_with_j2(cli, ws, tmp_path):
    sync = tmp_path / "sync"
    sync.mkdir()
    wait = ("import os, sys, time\n"
            "me, other, out = sys.argv[1:]\n"
            f"open(os.path.join({str(sync)!r}, me), 'w').close()\n"
            "deadline = time.monotonic() + 60\n"
            f"while not os.path.exists(os.path.join({str(sync)!r}, other)):\n"
            "    if time.monotonic() > deadline:\n"
            "        sys.exit('the other stage never started')\n"
            "    time.sleep(0.01)\n"
            "open(out, 'w').write(me)\n")
    (ws / "wait.py").write_text(wait)
    write(ws, "stages:\n"
              f"  left:\n    cmd: [{PY}, wait.py, left, right, l.txt]\n    deps: [wait.py]\n"
              "    outs: [l.txt]\n"
              f"  right:\n    cmd: [{PY}, wait.py, right, left, r.txt]\n    deps: [wait.py]\n"
              "    outs: [r.txt]\n")
    res, st = repro(cli, ws, "-j", "2")
    assert st["left"]["status"] == st["right"]["status"] == "ran"
    assert (ws / "l.txt").read_text() == "left" and (ws / "r.txt").read_text() == "right"
    recs = runs(cli, ws)
    assert sorted(r["name"] for r in recs) == ["left", "right"]
    assert all(r["status"] == "succeeded" for r in recs)


def test_dry_run_says_what_and_why_and_runs_nothing(cli, ws, tmp_path):
    log = tmp_path / "log"
    write(ws, CHAIN.format(log=log))
    (ws / "src.txt").write_text("x\n")
    _, st = repro(cli, ws, "--dry-run")
    assert [s["status"] for s in st.values()] == ["would run"] * 3
    assert st["a"]["reason"] == "never ran"
    assert st["b"]["reason"].startswith("after upstream stage a")
    assert not log.exists() and runs(cli, ws) == [] and not (ws / "a.txt").exists()
    repro(cli, ws)
    (ws / "src.txt").write_text("y\n")
    before = runs(cli, ws)
    _, st = repro(cli, ws, "--dry-run")
    assert st["a"] == {**st["a"], "status": "would run", "reason": "dep src.txt changed"}
    assert runs(cli, ws) == before and (ws / "a.txt").read_text() == "x\n"


def test_dry_run_names_the_changed_param(cli, ws):
    (ws / "params.yaml").write_text("lr: 0.1\nseed: 1\n")
    write(ws, "stages:\n  train:\n    cmd: echo trained > m\n    outs: [m]\n"
              "    params:\n      - params.yaml: [lr]\n")
    repro(cli, ws)
    (ws / "params.yaml").write_text("lr: 0.2\nseed: 2\n")
    _, st = repro(cli, ws, "--dry-run")
    assert st["train"]["reason"] == "param params.yaml:lr 0.1 -> 0.2"
    (ws / "params.yaml").write_text("lr: 0.1\nseed: 3\n")     # seed is not selected
    _, st = repro(cli, ws, "--dry-run")
    assert st["train"]["status"] == "up to date"


def test_wdir_runs_the_stage_there_with_paths_relative_to_it(cli, ws):
    (ws / "sub").mkdir()
    (ws / "sub" / "in.txt").write_text("in\n")
    write(ws, "stages:\n  s:\n    cmd: cat in.txt > out.txt; pwd > where.txt\n"
              "    wdir: sub\n    deps: [in.txt]\n    outs: [out.txt, where.txt]\n")
    _, st = repro(cli, ws)
    assert st["s"]["status"] == "ran"
    assert (ws / "sub" / "out.txt").read_text() == "in\n"
    assert (ws / "sub" / "where.txt").read_text().strip().endswith("/sub")


# -- dag ---------------------------------------------------------------------------------


def test_dag_formats(cli, ws, tmp_path):
    write(ws, CHAIN.format(log=tmp_path / "log"))
    text = cli("dag", cwd=ws).stdout
    assert text.splitlines() == ["a", "└── b  (reads a.txt)", "    └── c  (reads b.txt)"]
    graph = json.loads(cli("dag", "--json", cwd=ws).stdout)
    assert [s["name"] for s in graph["stages"]] == ["a", "b", "c"]
    assert graph["edges"] == [{"from": "a", "to": "b", "paths": ["a.txt"]},
                              {"from": "b", "to": "c", "paths": ["b.txt"]}]
    assert graph["stages"][2]["upstream"] == ["b"]
    dot = cli("dag", "--dot", cwd=ws).stdout
    assert dot.startswith("digraph pipeline {") and '"a" -> "b" [label="a.txt"];' in dot
    mermaid = cli("dag", "--mermaid", cwd=ws).stdout.splitlines()
    assert mermaid[0] == "flowchart TD"
    assert '  s0 -->|"a.txt"| s1' in mermaid and '  s1["b"]' in mermaid


def test_a_dep_inside_or_around_an_output_is_an_edge(cli, ws):
    write(ws, "stages:\n  make:\n    cmd: mkdir -p top/d; echo 1 > top/d/x\n"
              "    outs: [top/d]\n"
              "  inside:\n    cmd: cat top/d/x > i\n    deps: [top/d/x]\n    outs: [i]\n"
              "  around:\n    cmd: ls -R top > a\n    deps: [top]\n    outs: [a]\n")
    graph = json.loads(cli("dag", "--json", cwd=ws).stdout)
    edges = {(e["from"], e["to"]) for e in graph["edges"]}
    assert ("make", "inside") in edges and ("make", "around") in edges
    _, st = repro(cli, ws)
    assert list(st)[0] == "make" and {s["status"] for s in st.values()} == {"ran"}


# -- Python stages -------------------------------------------------------------------------

STAGES_PY = '''\
import json
from versionfs import stage


@stage(deps=["in.txt"], outs=["doubled.json"], params=["p.yaml:scale.factor"])
def double(factor):
    n = int(open("in.txt").read())
    json.dump({"value": n * factor}, open("doubled.json", "w"))


@stage(name="describe", deps=["doubled.json"], outs=["about.txt"],
       params=[{"p.yaml": ["scale"]}])
def write_description(params):
    value = json.load(open("doubled.json"))["value"]
    open("about.txt", "w").write(f"{value} {sorted(params)}\\n")
'''


def test_python_stages_run_as_ordinary_runs_of_the_same_pipeline(cli, ws, tmp_path):
    (ws / "stages.py").write_text(STAGES_PY)
    (ws / "in.txt").write_text("21\n")
    (ws / "p.yaml").write_text("scale:\n  factor: 2\n  note: x\n")
    write(ws, "stages:\n  upper:\n    cmd: tr a-z A-Z < about.txt > loud.txt\n"
              "    deps: [about.txt]\n    outs: [loud.txt]\npython: [stages.py]\n")
    graph = json.loads(cli("dag", "--json", cwd=ws).stdout)
    assert [s["name"] for s in graph["stages"]] == ["double", "describe", "upper"]
    assert graph["stages"][0]["deps"] == ["stages.py", "in.txt"]
    assert graph["stages"][0]["source"] == "stages.py"
    _, st = repro(cli, ws)
    assert [st[n]["status"] for n in ("double", "describe", "upper")] == ["ran"] * 3
    assert json.loads((ws / "doubled.json").read_text()) == {"value": 42}
    assert (ws / "about.txt").read_text() == "42 ['scale.factor', 'scale.note']\n"
    assert (ws / "loud.txt").read_text() == "42 ['SCALE.FACTOR', 'SCALE.NOTE']\n"
    rec = next(r for r in runs(cli, ws) if r["name"] == "double")
    assert rec["params"] == {"p.yaml": {"scale.factor": 2}}
    full = json.loads(cli("runs", "show", rec["id"], "--json", cwd=ws).stdout)
    assert full["argv"][1:] == ["-m", "versionfs.stage_runner", "stages.py:double"]
    # a param only `describe` reads: `double` stays up to date
    (ws / "p.yaml").write_text("scale:\n  factor: 2\n  note: y\n")
    _, st = repro(cli, ws)
    assert st["double"]["status"] == "up to date"
    assert st["describe"]["status"] == "ran" and st["upper"]["status"] == "up to date"
    # editing the module is a changed dep of its stages
    (ws / "stages.py").write_text(STAGES_PY + "\n# edited\n")
    _, st = repro(cli, ws, "--dry-run")
    assert st["double"]["reason"] == "dep stages.py changed"


def test_a_failing_python_stage_fails_with_its_traceback_logged(cli, ws):
    (ws / "stages.py").write_text("from versionfs import stage\n\n\n"
                                  "@stage(outs=['x'])\ndef boom():\n"
                                  "    raise ValueError('no data')\n")
    write(ws, "python: [stages.py]\n")
    res, st = repro(cli, ws, check=False)
    assert res.returncode == 1 and st["boom"]["status"] == "failed"
    assert "ValueError: no data" in res.stderr
    assert not (ws / "x").exists()


def test_a_python_stage_module_that_fails_to_import_is_one_line(cli, ws):
    (ws / "stages.py").write_text("import no_such_module_here\n")
    write(ws, "python: [stages.py]\n")
    res = cli.fail("dag", cwd=ws, code=2)
    assert "importing" in res.stderr and "No module named 'no_such_module_here'" in res.stderr


# -- the example of docs/pipelines.md --------------------------------------------------------


def test_the_documented_example_reruns_only_what_a_param_change_reaches(cli, tmp_path):
    ws = tmp_path / "pipeline"
    shutil.copytree(EXAMPLE, ws)
    cli("init", cwd=ws)
    _, st = repro(cli, ws)
    assert [st[n]["status"] for n in ("prepare", "train", "evaluate", "report")] == ["ran"] * 4
    assert (ws / "report.md").read_text().startswith("# Model")
    metrics = json.loads((ws / "eval.json").read_text())
    params = (ws / "params.yaml").read_text()
    assert "lr: 0.01" in params
    (ws / "params.yaml").write_text(params.replace("lr: 0.01", "lr: 0.02"))
    _, st = repro(cli, ws)
    assert st["prepare"]["status"] == "up to date"
    assert st["train"]["status"] == "ran"
    assert st["train"]["reason"] == "param params.yaml:train.lr 0.01 -> 0.02"
    assert st["evaluate"]["status"] == "ran" and st["report"]["status"] == "ran"
    assert json.loads((ws / "eval.json").read_text()) != metrics
    assert [r["name"] for r in runs(cli, ws)].count("prepare") == 1
    assert [r["name"] for r in runs(cli, ws)].count("train") == 2
    tree = cli("dag", cwd=ws).stdout
    assert tree.splitlines()[0] == "prepare"


def test_sigterm_to_repro_j2_terminates_both_running_stages(cli, ws, tmp_path):
    """Stages run in worker threads: the signal reaches the main thread, which
    passes it to both commands' process groups; both runs are recorded as
    interrupted, nothing is committed, nothing of theirs lives on."""
    import signal
    import subprocess
    import time
    pids = tmp_path / "pids"
    pids.mkdir()
    hold = ("import os, subprocess, sys, time\n"
            "g = subprocess.Popen(['sleep', '600'])\n"
            f"open(os.path.join({str(pids)!r}, sys.argv[1]), 'w')"
            ".write(f'{os.getpid()} {g.pid}\\n')\n"
            "time.sleep(600)\n")
    (ws / "hold.py").write_text(hold)
    write(ws, "stages:\n"
              f"  left:\n    cmd: [{PY}, hold.py, left]\n    outs: [l.txt]\n"
              f"  right:\n    cmd: [{PY}, hold.py, right]\n    outs: [r.txt]\n")
    proc = subprocess.Popen([PY, "-m", "versionfs", "repro", "-j", "2"], cwd=ws,
                            env={**os.environ, **ENV}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not all((pids / n).exists() and (pids / n).read_text().endswith("\n")
                      for n in ("left", "right")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the stages never started"
            time.sleep(0.01)
        procs = [int(p) for n in ("left", "right") for p in (pids / n).read_text().split()]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, (out, err)
    assert "versionfs/" not in err, err          # one line, no traceback of ours

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except FileNotFoundError:
            return False
    deadline = time.monotonic() + 30
    while any(alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(alive(p) for p in procs)
    recs = runs(cli, ws)
    assert sorted(r["name"] for r in recs) == ["left", "right"]
    assert all(r["status"] == "interrupted" and r["commit"] is None for r in recs)
