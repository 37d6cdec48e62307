"""vfs ui without a browser: the JSON endpoints against the CLI's --json, paging,
404s, the token and host guards, no byte from outside the repository, and the
`vfs ui` command itself. A real uvicorn on 127.0.0.1 at a free port serves each."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from urllib.parse import quote

import pytest

from ui_helpers import Server, make_demo, serve

PASSWD = open("/etc/passwd", "rb").read()[:40]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(str(tmp_path_factory.mktemp("ui") / "repo"))


@pytest.fixture(scope="module")
def site(demo):
    with serve(demo.root) as s:
        yield s


def cli_json(cli, demo, *args):
    return json.loads(cli("-C", demo.root, *args).stdout)


def ok(site, path):
    status, data = site.json(path)
    assert status == 200, (path, data)
    return data


# -- the JSON endpoints are the CLI's --json ------------------------------------------


def test_history_is_log_json_with_graph(site, cli, demo):
    data = ok(site, "/api/history")
    log = cli_json(cli, demo, "log", "--json")  # main's first parents
    items = [{k: v for k, v in c.items() if k != "graph"} for c in data["commits"]]
    assert [c for c in items if c["id"] != demo.commits["experiment"]] == log
    assert data["head"] == demo.commits["main"] and data["next_offset"] is None
    lanes = {c["id"]: c["graph"] for c in data["commits"]}
    assert lanes[demo.commits["experiment"]]["lane"] == 1  # forked from v2
    assert lanes[demo.commits["v2"]]["joins"] == [1] and lanes[demo.commits["v2"]]["lane"] == 0
    assert all(g["lane"] == 0 for cid, g in lanes.items() if cid != demo.commits["experiment"])
    page = ok(site, "/api/history?offset=2&limit=2")
    assert [c["id"] for c in page["commits"]] == [c["id"] for c in data["commits"][2:4]]
    assert page["next_offset"] == 4


def test_tree_file_are_ls_and_show_json(site, cli, demo):
    data = ok(site, "/api/tree?rev=v1")
    assert data["entries"] == cli_json(cli, demo, "ls", "v1", "--json")
    sub = ok(site, "/api/tree?rev=v1&path=notes")
    assert [e["path"] for e in sub["entries"]] == ["readme.txt"]
    paged = ok(site, "/api/tree?rev=v1&limit=3&offset=3")
    assert paged["entries"] == data["entries"][3:6] and paged["next_offset"] == 6
    f = ok(site, "/api/file?rev=v1&path=raw.csv")
    preview = f.pop("preview")
    assert f.pop("commit") == demo.commits["v1"] and f.pop("rev") == "v1"
    show = cli_json(cli, demo, "show", "v1:raw.csv", "--json")
    show.pop("commit")
    assert f == show
    assert preview["columns"] == ["id", "value", "label"] and len(preview["rows"]) == 50
    assert preview["truncated"] is True


def test_diff_runs_lineage_dag_are_cli_json(site, cli, demo):
    d = ok(site, "/api/diff?a=v1&b=v2")
    want = cli_json(cli, demo, "diff", "v1", "v2", "--json")
    assert {k: d[k] for k in want} == want
    blob = next(c for c in d["chunks"] if c["path"] == "blob.bin")
    assert blob["old_size"] == 1024 and blob["new_size"] == 1028 and blob["changed_bytes"] > 0
    runs = ok(site, "/api/runs")
    assert runs["runs"] == cli_json(cli, demo, "runs", "--json")[::-1]  # newest first
    assert runs["params"] == ["python:epochs", "python:lr"]
    rid = demo.runs["train"]
    assert ok(site, f"/api/run?id={rid}") == cli_json(cli, demo, "runs", "show", rid, "--json")
    a, b = demo.train_runs[0], demo.train_runs[2]
    cmp = ok(site, f"/api/compare?ids={a}&ids={b}")
    assert cmp["pair"] == cli_json(cli, demo, "runs", "compare", a, b, "--json")
    assert [r["changed"] for r in cmp["params"]] == [False, True]
    assert cmp["metrics"][1]["plot"] == [0.5, 0.75]
    assert ok(site, "/api/lineage?path=model.bin") == \
        cli_json(cli, demo, "lineage", "model.bin", "--json")
    assert ok(site, "/api/dag") == cli_json(cli, demo, "dag", "--json")


def test_runs_filter_and_sort(site, demo):
    ids = [r["id"] for r in ok(site, "/api/runs?sort=metrics.python:loss&desc=0")["runs"]]
    assert ids[:3] == demo.train_runs  # loss 0.5, 0.65, 0.75; runs without it last
    down = [r["id"] for r in ok(site, "/api/runs?sort=metrics.python:loss")["runs"]]
    assert down[:3] == demo.train_runs[::-1]
    assert [r["id"] for r in ok(site, "/api/runs?q=lr%3D0.05")["runs"]] == [demo.train_runs[1]]
    failed = ok(site, "/api/runs?status=failed")
    assert [r["id"] for r in failed["runs"]] == [demo.runs["failed"]] and failed["total"] == 1
    status, data = site.json("/api/runs?sort=bogus")
    assert status == 400 and "cannot sort by 'bogus'" in data["error"]


@pytest.mark.parametrize("path,named", [
    ("/api/tree?rev=nosuchrev", "unknown revision 'nosuchrev'"),
    ("/api/file?rev=v1&path=no/such.csv", "no path 'no/such.csv' in v1"),
    ("/api/run?id=abcdef0123", "no run 'abcdef0123'"),
    ("/api/lineage?rev=v1&path=missing.bin", "missing.bin"),
    ("/api/diff?a=v1&b=nope", "unknown revision 'nope'"),
])
def test_unknown_things_are_404_naming_them(site, path, named):
    status, data = site.json(path)
    assert status == 404 and named in data["error"], data
    page = path.replace("/api", "", 1)
    status, _, body = site.get(page)
    assert status == 404 and named.replace("'", "&#39;") in body.decode()


# -- nothing from outside the repository ----------------------------------------------------

ESCAPES = [
    "/file?path=../../../../etc/passwd", "/file?path=%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/file?path=/etc/passwd", "/file?path=%2fetc%2fpasswd", "/file?path=notes/../../etc/passwd",
    "/file?path=....//....//etc/passwd", "/file?path=..%5c..%5cetc%5cpasswd",
    "/file?path=passwd-link", "/file?path=passwd-link/", "/file?path=passwd-link%00",
    "/raw?path=passwd-link", "/raw?path=../../etc/passwd", "/raw?path=%2fetc%2fpasswd",
    "/tree?path=passwd-link", "/tree?path=..", "/tree?path=%2e%2e/%2e%2e/etc",
    "/diff/file?a=v1&b=v2&path=passwd-link", "/diff/file?a=v1&b=v2&path=../../etc/passwd",
    "/lineage?path=/etc/passwd", "/lineage?path=passwd-link",
    "/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd", "/static//etc/passwd",
    "/static/%2fetc%2fpasswd", "//etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
    "/tree?rev=..%2f..%2fetc", "/file?rev=/etc/passwd&path=passwd",
]


@pytest.mark.parametrize("url", ESCAPES)
@pytest.mark.parametrize("api", [False, True])
def test_no_byte_from_outside(site, url, api):
    if api and url.startswith(("/file", "/tree", "/diff", "/lineage")):
        url = "/api" + url
    status, _, body = site.get(url)
    assert PASSWD not in body and b"root:x:0:0" not in body
    if "passwd-link" not in url or url.startswith(("/raw", "/api/raw")):
        assert status >= 400, (url, status, body[:200])


def test_symlink_is_described_not_followed(site):
    f = ok(site, "/api/file?rev=v1&path=passwd-link")
    assert f["preview"] == {"type": "symlink", "target": "/etc/passwd"}


def test_raw_serves_only_images_sandboxed(site):
    status, headers, body = site.get("/raw?rev=v1&path=img/pic.png")
    assert status == 200 and body.startswith(b"\x89PNG") and headers["Content-Type"] == "image/png"
    assert "sandbox" in headers["Content-Security-Policy"]
    status, _, _ = site.get("/raw?rev=v1&path=raw.csv")
    assert status == 404


# -- guards -------------------------------------------------------------------------------


def test_token_required_when_set(demo):
    with serve(demo.root, token="s3cret") as s:
        assert s.get("/api/history")[0] == 401
        assert s.get("/api/history?token=wrong")[0] == 403
        assert s.get("/static/style.css")[0] == 401
        status, headers, _ = s.get("/?token=s3cret")
        assert status == 200
        cookie = headers["set-cookie"].split(";")[0]
        assert s.get("/runs", {"Cookie": cookie})[0] == 200
        assert s.get("/api/runs", {"Authorization": "Bearer s3cret"})[0] == 200
        assert s.get("/api/runs", {"Authorization": "Bearer nope"})[0] == 403


def test_host_guard_and_read_only(demo):
    import urllib.request
    with serve(demo.root, hosts=("127.0.0.1", "localhost")) as s:
        assert s.get("/api/history")[0] == 200
        status, _, body = s.get("/api/history", {"Host": "evil.example:80"})
        assert status == 403 and b"evil.example" in body
        req = urllib.request.Request(s.url + "api/history", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 405


# -- the command ----------------------------------------------------------------------------


def _start(demo, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "versionfs", "-C", demo.root, "ui",
                             "--port", "0", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    line = proc.stdout.readline()  # printed once the socket listens
    m = re.search(r"at (http://\S+)", line)
    if m is None:
        proc.kill()
        pytest.fail(f"vfs ui printed {line!r}; stderr: {proc.communicate()[1]}")
    return proc, m.group(1)


def _stop(proc):
    proc.terminate()
    try:
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_vfs_ui_serves_loopback_without_token(demo):
    proc, url = _start(demo)
    try:
        assert url.startswith("http://127.0.0.1:") and "token" not in url
        status, data = Server(url).json("/api/history")
        assert status == 200 and data["head"] == demo.commits["main"]
    finally:
        _stop(proc)


def test_vfs_ui_elsewhere_needs_the_printed_token(demo):
    # 127.0.0.2 is loopback, so the test talks to nothing beyond this machine, but
    # it is not 127.0.0.1: the command treats it as any other address
    proc, url = _start(demo, "--host", "127.0.0.2")
    try:
        base, _, token = url.partition("?token=")
        assert base.startswith("http://127.0.0.2:") and len(token) >= 20
        site = Server(base)
        assert site.get("/api/history")[0] == 401
        assert site.get("/api/history?token=" + quote(token))[0] == 200
    finally:
        _stop(proc)


def test_vfs_ui_port_in_use_is_one_line(cli, demo):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        r = cli.fail("-C", demo.root, "ui", "--port", str(s.getsockname()[1]), code=2)
    assert "cannot listen on 127.0.0.1" in r.stderr and "choose another --port" in r.stderr
