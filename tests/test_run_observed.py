"""``vfs run`` records the files its command read through versionfs mounts.

The HDF5 example of docs/runs.md (examples/hdf5: dantro-style ``sim_*/params.yml``
and ``sim_*/data.h5``): a run analysing a mounted version reads every params file
but only the data of the simulations it selects, and exactly those are its observed
inputs — also when another run of a different selection reads the same mount at the
same time, and while an unrelated process reads other files there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_mount import mounter  # noqa: F401  (fixture)

pytestmark = pytest.mark.mount

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "hdf5"
PY = sys.executable


@pytest.fixture
def sims(cli, tmp_path) -> Path:
    """A repository of 4 simulations, tagged v1."""
    pytest.importorskip("h5py", reason="h5py (test extras) is needed for this example")
    root = tmp_path / "sims"
    root.mkdir()
    cli("init", cwd=root)
    subprocess.run([PY, str(EXAMPLES / "make_sims.py"), str(root), "4"], check=True,
                   capture_output=True)
    cli("snapshot", "-m", "simulations", "--tag", "v1", cwd=root)
    return root


def _analysis(ws: Path, mp: Path, low: float, out: str, name: str) -> list:
    return [PY, "-m", "versionfs", "run", "-n", name, "-o", out, "--",
            PY, str(EXAMPLES / "analyze.py"), str(mp), str(low), out]


def _observed(cli, ws: Path, name: str) -> list[dict]:
    (run,) = [r for r in json.loads(cli("runs", "--json", cwd=ws).stdout)
              if r["name"] == name]
    return json.loads(cli("runs", "show", run["id"], "--json", cwd=ws).stdout)["observed"]


def test_a_run_records_exactly_the_files_it_read_through_a_mount(cli, sims, mounter,
                                                                 tmp_path):
    mp = mounter(f"{sims}@v1")
    ws = tmp_path / "analysis"
    ws.mkdir()
    cli("init", cwd=ws)
    # an unrelated reader of the same mount, running the whole time
    bystander = subprocess.Popen(
        [PY, "-c", "import sys, time\n"
                   "while sys.stdin.readline():\n"
                   f"    open({str(mp / 'sim_00' / 'data.h5')!r}, 'rb').read()\n"
                   "    print('ok', flush=True)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        bystander.stdin.write("go\n")
        bystander.stdin.flush()
        assert bystander.stdout.readline() == "ok\n"
        # two runs at once, reading different simulations of the same mount
        procs = [subprocess.Popen(_analysis(ws, mp, low, out, name), cwd=ws,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for low, out, name in ((1.0, "hot.json", "hot"), (0.0, "all.json", "all"))]
        for _ in range(20):  # the bystander keeps reading while they run
            bystander.stdin.write("go\n")
            bystander.stdin.flush()
            assert bystander.stdout.readline() == "ok\n"
        results = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], results
    finally:
        bystander.stdin.close()
        bystander.wait(timeout=30)
    head = subprocess.run([PY, "-m", "versionfs", "show", "v1", "--json"], cwd=sims,
                          capture_output=True, text=True, check=True)
    v1 = json.loads(head.stdout)["id"]
    params = {f"sim_{i:02d}/params.yml" for i in range(4)}
    hot = _observed(cli, ws, "hot")
    # temperatures 0.5, 0.75, 1.0, 1.25: the hot analysis opened two data files
    assert {o["path"] for o in hot} == params | {"sim_02/data.h5", "sim_03/data.h5"}
    every = _observed(cli, ws, "all")
    assert {o["path"] for o in every} == params | {f"sim_{i:02d}/data.h5" for i in range(4)}
    for o in hot + every:
        assert o["commit"] == v1 and o["origin"] == "mount"
        assert o["id"] == os.getxattr(mp / o["path"], "user.versionfs.id").decode()
        assert os.path.realpath(o["repo"]) == os.path.realpath(sims)


def test_undeclared_reads_are_reported_and_declared_ones_are_not(cli, sims, mounter,
                                                                 tmp_path):
    mp = mounter(f"{sims}@v1")
    ws = tmp_path / "analysis"
    ws.mkdir()
    cli("init", cwd=ws)
    res = cli(*_analysis(ws, mp, 1.0, "hot.json", "hot")[3:], cwd=ws)
    assert "did not declare with -d" in res.stderr and "sim_02/data.h5" in res.stderr
    # declaring the mounted directory covers every read below it
    res = cli("run", "-n", "declared", "-d", str(mp), "-o", "d.json", "--", PY,
              str(EXAMPLES / "analyze.py"), str(mp), "1.0", "d.json", cwd=ws)
    assert "did not declare" not in res.stderr
    assert len(_observed(cli, ws, "declared")) == 6


def test_no_observe_records_no_reads(cli, sims, mounter, tmp_path):
    mp = mounter(f"{sims}@v1")
    ws = tmp_path / "analysis"
    ws.mkdir()
    cli("init", cwd=ws)
    cli("run", "--no-observe", "-n", "blind", "-o", "x.json", "--", PY,
        str(EXAMPLES / "analyze.py"), str(mp), "1.0", "x.json", cwd=ws)
    assert _observed(cli, ws, "blind") == []
