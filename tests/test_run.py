"""``vfs run`` end to end, in subprocesses: what a run records, the run cache, and
every bad input and fault the issue lists (missing input, unknown command, missing
output, failure, SIGTERM/SIGINT, gc, two runs at once, an input changed mid-run).

Synchronisation between a test and a running command goes through files the command
writes and the test waits for (with a generous deadline that only matters when
something is broken), never through sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from versionfs.api import Repo

PY = sys.executable
TRAIN = """\
import json, sys
lr = float(open("params.json").read().split(":")[1].strip(" }\\n"))
n = sum(int(x) for x in open("data/in.txt"))
open("model.txt", "w").write(f"{n * lr}\\n")
json.dump({"loss": 1 / lr, "n": n}, open("metrics.json", "w"))
with open(sys.argv[1], "a") as f:
    f.write("ran\\n")
print("trained", n)
"""


def _vfs_env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def ws(tmp_path, cli) -> Path:
    w = tmp_path / "ws"
    w.mkdir()
    cli("init", cwd=w)
    (w / "data").mkdir()
    (w / "data" / "in.txt").write_text("\n".join(map(str, range(1, 101))) + "\n")
    (w / "params.json").write_text('{"lr": 0.5}\n')
    (w / "train.py").write_text(TRAIN)
    cli("snapshot", "-m", "inputs", cwd=w)
    return w


def _train(cli, ws, counter, *extra, check=True):
    args = ["run", "-n", "train", "-d", "data", "-d", "train.py", "-p", "params.json",
            "-o", "model.txt", "-M", "metrics.json", *extra, "--", PY, "train.py",
            str(counter)]
    return cli(*args, cwd=ws, check=check)


def _runs(cli, ws) -> list[dict]:
    return json.loads(cli("runs", "--json", cwd=ws).stdout)


def _count(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_a_run_records_command_params_inputs_outputs_metrics_and_commit(cli, ws, tmp_path):
    counter = tmp_path / "count"
    res = _train(cli, ws, counter)
    assert "trained 5050" in res.stdout          # live output passes through
    assert _count(counter) == 1
    (run,) = _runs(cli, ws)
    assert run["name"] == "train" and run["status"] == "succeeded"
    assert run["params"] == {"params.json": {"lr": 0.5}}
    assert run["metrics"] == {"metrics.json": {"loss": 2.0, "n": 5050}}
    full = json.loads(cli("runs", "show", run["id"][:8], "--json", cwd=ws).stdout)
    assert full["argv"] == [PY, "train.py", str(counter)]
    assert full["exit_code"] == 0 and "trained 5050" in full["log"]
    assert {d["path"] for d in full["deps"]} == {"data", "train.py"}
    assert {o["path"] for o in full["outs"]} == {"model.txt", "metrics.json"}
    assert full["env"]["python"] and full["env"]["host"]
    with Repo.open(str(ws)) as repo:
        commit = repo.commit(repo.head())
        assert commit.run.hex() == run["id"]          # the commit names the run
        assert full["commit"] == repo.head().hex()
        assert repo.entry(repo.head(), "model.txt").id.hex() == \
            next(o["id"] for o in full["outs"] if o["path"] == "model.txt")
        # the declared inputs' ids are those of the committed files
        assert repo.entry(repo.head(), "data").id.hex() == \
            next(d["id"] for d in full["deps"] if d["path"] == "data")
    assert "nothing changed" in cli("status", cwd=ws).stdout


def test_an_equal_run_is_restored_from_the_cache_and_force_runs_it(cli, ws, tmp_path):
    counter = tmp_path / "count"
    _train(cli, ws, counter)
    first = (ws / "model.txt").read_bytes()
    (ws / "model.txt").unlink()
    (ws / "metrics.json").unlink()
    res = _train(cli, ws, counter)
    (run,) = _runs(cli, ws)
    assert f"cached: run {run['id'][:12]}" in res.stderr
    assert _count(counter) == 1                       # the command did not run
    assert (ws / "model.txt").read_bytes() == first   # the outputs are back
    assert "nothing changed" in cli("status", cwd=ws).stdout
    _train(cli, ws, counter, "--force")
    assert _count(counter) == 2 and len(_runs(cli, ws)) == 2


def test_a_changed_param_or_input_runs_again(cli, ws, tmp_path):
    counter = tmp_path / "count"
    _train(cli, ws, counter)
    (ws / "params.json").write_text('{"lr": 0.25}\n')
    _train(cli, ws, counter)
    assert _count(counter) == 2
    assert (ws / "model.txt").read_text() == f"{5050 * 0.25}\n"
    (ws / "data" / "in.txt").write_text("1\n2\n")
    _train(cli, ws, counter)
    assert _count(counter) == 3
    # back to an earlier state: that result is still cached
    (ws / "params.json").write_text('{"lr": 0.5}\n')
    (ws / "data" / "in.txt").write_text("\n".join(map(str, range(1, 101))) + "\n")
    res = _train(cli, ws, counter)
    assert "cached: run" in res.stderr and _count(counter) == 3


def test_a_missing_input_fails_before_anything_runs(cli, ws, tmp_path):
    marker = tmp_path / "ran"
    res = cli.fail("run", "-d", "nope.csv", "--", "touch", str(marker), cwd=ws, code=5)
    assert "input nope.csv does not exist" in res.stderr
    assert not marker.exists()
    assert _runs(cli, ws) == []


def test_a_missing_params_file_or_key_fails_before_anything_runs(cli, ws, tmp_path):
    marker = tmp_path / "ran"
    res = cli.fail("run", "-p", "other.yaml", "--", "touch", str(marker), cwd=ws)
    assert "other.yaml does not exist" in res.stderr
    res = cli.fail("run", "-p", "params.json:momentum", "--", "touch", str(marker),
                   cwd=ws, code=2)
    assert "has no key 'momentum'" in res.stderr
    assert not marker.exists() and _runs(cli, ws) == []


def test_a_command_that_does_not_exist_is_recorded_with_status_127(cli, ws):
    res = cli.fail("run", "--", "no-such-command-xyz", "arg", cwd=ws, code=127)
    assert "no-such-command-xyz: command not found" in res.stderr
    (run,) = _runs(cli, ws)
    assert run["status"] == "failed" and run["exit_code"] == 127


def test_a_failing_command_passes_its_status_through_and_is_never_cached(cli, ws, tmp_path):
    counter = tmp_path / "count"
    script = f"open({str(counter)!r}, 'a').write('x\\n'); raise SystemExit(3)"
    for _ in range(2):
        cli.fail("run", "-o", "out.txt", "--", PY, "-c", script, cwd=ws, code=3)
    assert _count(counter) == 2                     # the second one ran again
    runs = _runs(cli, ws)
    assert [r["status"] for r in runs] == ["failed", "failed"]
    assert all(r["commit"] is None for r in runs)


def test_an_output_missing_after_a_successful_command_fails_the_run(cli, ws):
    head = Repo.open(str(ws)).head()
    res = cli.fail("run", "-o", "never.txt", "--", "true", cwd=ws, code=1)
    assert "did not write declared output never.txt" in res.stderr
    (run,) = _runs(cli, ws)
    assert run["status"] == "failed" and run["commit"] is None
    with Repo.open(str(ws)) as repo:
        assert repo.head() == head


def test_an_output_holding_uncommitted_content_is_refused_not_deleted(cli, ws, tmp_path):
    (ws / "model.txt").write_text("precious, never committed\n")
    res = cli.fail("run", "-o", "model.txt", "--", "true", cwd=ws, code=2)
    assert "holds content no commit or run has stored" in res.stderr
    assert (ws / "model.txt").read_text() == "precious, never committed\n"


def test_an_input_may_not_also_be_an_output(cli, ws):
    res = cli.fail("run", "-d", "data", "-o", "data/out.txt", "--", "true", cwd=ws, code=2)
    assert "both an input and an output" in res.stderr


def _wait_for(path: Path, proc: subprocess.Popen, deadline_s: float = 60) -> str:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        if proc.poll() is not None:
            pytest.fail(f"vfs run exited early ({proc.returncode}): "
                        f"{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.01)
    pytest.fail(f"{path} never appeared")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_terminates_the_commands_process_group_and_records_an_interrupted_run(
        ws, tmp_path, signum, cli):
    pids = tmp_path / "pids"
    # the command starts a grandchild, writes both pids, then waits forever
    script = (f"import subprocess, os, time\n"
              f"g = subprocess.Popen(['sleep', '600'])\n"
              f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{g.pid}}\\n')\n"
              f"time.sleep(600)\n")
    head = Repo.open(str(ws)).head()
    proc = subprocess.Popen(
        [PY, "-m", "versionfs", "run", "-o", "out.txt", "--", PY, "-c", script],
        cwd=ws, env=_vfs_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        child, grandchild = map(int, _wait_for(pids, proc).split())
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "interrupted by SIG" in err
    assert "versionfs/" not in err          # (the command's own traceback may show)
    deadline = time.monotonic() + 30
    while (_alive(child) or _alive(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(child) and not _alive(grandchild)
    (run,) = _runs(cli, ws)
    assert run["status"] == "interrupted" and run["commit"] is None
    with Repo.open(str(ws)) as repo:
        assert repo.head() == head                      # no partial commit


def test_two_runs_started_at_once_both_run_and_are_recorded(ws, tmp_path, cli):
    a, b = tmp_path / "a", tmp_path / "b"
    # each command waits for the other's marker: they can only finish together
    def script(mine, other, out):
        return (f"import os, time\nopen({str(mine)!r}, 'w').write('x\\n')\n"
                f"end = time.time() + 120\n"
                f"while not os.path.exists({str(other)!r}) and time.time() < end:\n"
                f"    time.sleep(0.01)\n"
                f"assert os.path.exists({str(other)!r})\n"
                f"open({out!r}, 'w').write('done\\n')\n")
    procs = [subprocess.Popen([PY, "-m", "versionfs", "run", "-n", n, "-o", out, "--",
                               PY, "-c", script(mine, other, out)],
                              cwd=ws, env=_vfs_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n, mine, other, out in (("one", a, b, "one.txt"), ("two", b, a, "two.txt"))]
    try:
        results = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], results
    runs = _runs(cli, ws)
    assert sorted(r["name"] for r in runs) == ["one", "two"]
    assert all(r["status"] == "succeeded" for r in runs)
    with Repo.open(str(ws)) as repo:
        head = repo.head()
        assert repo.entry(head, "one.txt") and repo.entry(head, "two.txt")


def test_an_input_changed_during_the_run_is_reported_and_not_cached(cli, ws, tmp_path):
    script = "open('data/in.txt', 'a').write('7\\n'); open('out.txt', 'w').write('x')"
    res = cli("run", "-d", "data", "-o", "out.txt", "--", PY, "-c", script, cwd=ws)
    assert "input data changed while the run ran" in res.stderr
    (run,) = _runs(cli, ws)
    full = json.loads(cli("runs", "show", run["id"], "--json", cwd=ws).stdout)
    assert full["changed"] == ["data"]
    res = cli("run", "-d", "data", "-o", "out.txt", "--", PY, "-c", script, cwd=ws)
    assert "cached" not in res.stderr


def test_gc_keeps_a_runs_outputs_and_a_removed_run_runs_again(cli, ws, tmp_path):
    counter = tmp_path / "count"
    cli("branch", "exp", cwd=ws)
    cli("checkout", "exp", cwd=ws)
    _train(cli, ws, counter)
    cli("checkout", "main", cwd=ws)
    cli("branch", "-D", "exp", cwd=ws)
    cli("gc", cwd=ws)            # no ref reaches the run's commit, its record does
    cli("fsck", cwd=ws)
    res = _train(cli, ws, counter)
    assert "cached: run" in res.stderr and _count(counter) == 1
    assert (ws / "model.txt").read_text() == f"{5050 * 0.5}\n"
    # once the record is removed, gc may free its outputs and the run runs again
    (run,) = _runs(cli, ws)
    cli("runs", "rm", run["id"][:10], cwd=ws)
    cli("gc", cwd=ws)
    cli("fsck", cwd=ws)
    (ws / "model.txt").unlink()
    res = _train(cli, ws, counter)
    assert "cached" not in res.stderr and _count(counter) == 2


def test_runs_without_dependencies_are_cached_too(cli, ws, tmp_path):
    counter = tmp_path / "count"
    script = f"open({str(counter)!r}, 'a').write('x\\n'); open('hello.txt', 'w').write('hi')"
    cli("run", "-o", "hello.txt", "--", PY, "-c", script, cwd=ws)
    res = cli("run", "-o", "hello.txt", "--", PY, "-c", script, cwd=ws)
    assert "cached: run" in res.stderr and _count(counter) == 1


def test_a_large_output_is_restored_by_cloning_on_xfs(cli, xfs_dir, tmp_path):
    w = xfs_dir / "ws"
    w.mkdir()
    cli("init", cwd=w)
    script = ("import os\nwith open('big.bin', 'wb') as f:\n"
              "    f.write(os.urandom(1 << 20) * 12)\n")
    cli("run", "-o", "big.bin", "--", PY, "-c", script, cwd=w)
    data = (w / "big.bin").read_bytes()
    (w / "big.bin").unlink()
    res = cli("run", "-o", "big.bin", "--", PY, "-c", script, cwd=w)
    assert "cached: run" in res.stderr
    assert (w / "big.bin").read_bytes() == data
    # the restored file shares its extents with the stored object (a clone)
    out = subprocess.run(["filefrag", "-v", str(w / "big.bin")], capture_output=True,
                         text=True)
    if out.returncode == 0:
        assert "shared" in out.stdout


def test_the_code_version_comes_from_git(cli, ws, tmp_path):
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=ws, check=True)
    subprocess.run([*git, "add", "train.py"], cwd=ws, check=True)
    subprocess.run([*git, "commit", "-qm", "code"], cwd=ws, check=True)
    counter = tmp_path / "count"
    _train(cli, ws, counter)
    (run,) = _runs(cli, ws)
    env = json.loads(cli("runs", "show", run["id"], "--json", cwd=ws).stdout)["env"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert env["git"]["commit"] == head and env["git"]["dirty"] is False
    # an uncommitted code change is a different code version: no cache hit
    with open(ws / "train.py", "a") as f:
        f.write("# tweak\n")
    res = _train(cli, ws, counter)
    assert "cached" not in res.stderr and _count(counter) == 2


def test_run_help_and_no_command(cli, ws):
    out = cli("run", "--help", cwd=ws).stdout
    assert "-d, --dep" in out and "cached: run ID" in out
    res = cli.fail("run", cwd=ws)
    assert "Traceback" not in res.stderr


def _on_a_terminal(argv: list[str], cwd: Path, feed: bytes, wait_for: bytes) -> tuple[int, bytes]:
    """Run ``argv`` with a pseudo-terminal as its controlling terminal (as in an
    interactive shell); once its output shows ``wait_for``, type ``feed``. Returns
    (exit status, everything it printed)."""
    import pty
    import select
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session leader whose terminal is the pty
        os.chdir(cwd)
        os.execvpe(argv[0], argv, _vfs_env())
    out = b""
    fed = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # EIO: the terminal's last user closed it
                    break
                if not data:
                    break
                out += data
            if not fed and wait_for in out:
                os.write(fd, feed)
                fed = True
        else:
            pytest.fail(f"{argv} did not finish; it printed {out!r}")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out


def test_a_command_on_a_terminal_can_read_it(ws):
    code, out = _on_a_terminal(
        [PY, "-m", "versionfs", "run", "-o", "said.txt", "--", PY, "-c",
         "print('re' + 'ady', flush=True); open('said.txt', 'w').write(input())"],
        ws, b"hello\n", b"ready")
    assert code == 0, out
    assert (ws / "said.txt").read_text() == "hello"


def test_ctrl_c_on_the_terminal_interrupts_the_command_and_the_run_says_so(ws, cli):
    code, out = _on_a_terminal(
        [PY, "-m", "versionfs", "run", "-o", "never.txt", "--", PY, "-c",
         "import time; print('re' + 'ady', flush=True); time.sleep(600)"],
        ws, b"\x03", b"ready")
    assert code == 130, out
    assert b"interrupted by SIGINT" in out
    (run,) = _runs(cli, ws)
    assert run["status"] == "interrupted" and run["commit"] is None


def test_the_first_example_of_docs_runs_md_runs_as_written(tmp_path):
    """The "A first run" block of docs/runs.md, with this interpreter's environment
    first on PATH (its ``python3`` has PyYAML), run twice: the second is cached."""
    import re
    doc = (Path(__file__).resolve().parent.parent / "docs" / "runs.md").read_text()
    block = re.search(r"## A first run\n.*?```sh\n(.*?)```", doc, re.S).group(1)
    env = {**_vfs_env(),
           "PATH": os.path.dirname(PY) + os.pathsep + os.environ.get("PATH", "")}
    script = "set -e\n" + block + "\nvfs run -n train -d data -d train.py -p " \
        "params.yaml:lr,epochs -o model.txt -M metrics.json -- python3 train.py\n"
    p = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "trained on 100 rows" in p.stdout
    assert "succeeded" in p.stderr and "cached: run" in p.stderr
    assert (tmp_path / "demo" / "model.txt").read_text() == "weights 505.0\n"
