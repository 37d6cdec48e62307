"""One conformance suite for ``remote.backend.Backend``, run against every kind of
remote: a directory, ``memory://``, and S3 through a real S3-protocol server (moto on
127.0.0.1, see tests/s3server.py). Some cases also run on the in-process fakes of
tests/fake_remote.py (one that ignores write conditions, to exercise the lock).

Faults are injected deterministically: on S3 by the server (real 500/503 error
responses), elsewhere by ``FlakyStore`` in front of the store. Leases use a fake
clock whose ``sleep`` advances it, so nothing waits out a lease.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest

from fake_remote import FakeStore, FlakyStore, fake_backend
from versionfs.errors import (RemoteAuth, RemoteBusy, RemoteCorrupt, RemoteError,
                              RemoteInvalid, RemoteMissing, RemoteUnavailable)
from versionfs.remote.backend import COALESCE_GAP, Backend, open_store
from versionfs.remote.stores import LOCK_FILE, TMP_DIR, coerce_options

KINDS = ["dir", "memory", "s3"]
MiB = 1 << 20


class FakeClock:
    """``time()`` and a ``sleep`` that moves it forward instead of waiting."""

    def __init__(self, start: float = 1_000_000.0):
        self.now = start
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@dataclass
class Remote:
    """One remote of one kind; ``make`` opens a Backend on it (one per "process")."""

    kind: str
    url: str
    options: dict | None = None
    traffic: object = None  # the S3 server's Traffic, on s3
    made: list = field(default_factory=list)

    def make(self, **kwargs) -> Backend:
        kwargs.setdefault("backoff", 0.0)
        if self.kind == "s3":
            backend = Backend(self.url, self.options, **kwargs)
        else:
            url, store, _ = open_store(self.url, self.options)
            backend = Backend(url, store=FlakyStore(store), **kwargs)
        self.made.append(backend)
        return backend

    def fail_next(self, backend: Backend, n: int) -> None:
        if self.kind == "s3":
            self.traffic.fail_next(n, status=503)
        else:
            backend.store.fail_next(n)


@pytest.fixture(params=KINDS)
def remote(request, tmp_path):
    kind = request.param
    if kind == "dir":
        rem = Remote(kind, str(tmp_path / "remote"))
    elif kind == "memory":
        rem = Remote(kind, f"memory://vfs-test-{uuid.uuid4().hex}")
    else:
        url, options = request.getfixturevalue("s3_url")
        rem = Remote(kind, url, options, traffic=request.getfixturevalue("s3_traffic"))
    try:
        yield rem
    finally:
        if kind == "memory":  # MemoryFileSystem keeps one store per process
            cleaner = Backend(rem.url)
            for name, _ in cleaner.list(""):
                cleaner.delete(name)
        for backend in rem.made:
            backend.close()


# -- reading and writing -------------------------------------------------------------


def test_write_read_size_list(remote):
    b = remote.make()
    b.write("packs/ab/abc1", b"x" * 1000)
    b.write("packs/cd/cd22", b"second")
    b.write("index/0001", b"idx")
    assert b.read("packs/ab/abc1") == b"x" * 1000
    assert b.size("packs/ab/abc1") == 1000 and b.size("packs/ab/none") is None
    assert b.list("packs/") == [("packs/ab/abc1", 1000), ("packs/cd/cd22", 6)]
    assert b.list("packs/c") == [("packs/cd/cd22", 6)]
    assert b.list("") == [("index/0001", 3), ("packs/ab/abc1", 1000), ("packs/cd/cd22", 6)]
    assert b.list("nothing/") == []
    assert abs(b.modified("index/0001") - time.time()) < 3600
    assert b.modified("index/none") is None
    b.delete("index/0001")
    b.delete("index/0001")  # absent is fine
    assert b.size("index/0001") is None


def test_write_of_an_existing_name_leaves_it(remote):
    b = remote.make()
    b.write("packs/ab/abcd", b"first bytes")
    b.write("packs/ab/abcd", b"other")
    assert b.read("packs/ab/abcd") == b"first bytes"


def test_empty_object(remote):
    b = remote.make()
    b.write("index/empty", b"")
    assert b.read("index/empty") == b"" and b.size("index/empty") == 0


def test_a_second_backend_sees_the_objects(remote):
    remote.make().write("refs/heads/main", b"c0ffee")
    assert remote.make().read("refs/heads/main") == b"c0ffee"


def test_read_of_an_absent_object_is_remote_missing_and_not_retried(remote):
    b = remote.make(retries=5)
    if remote.traffic:
        remote.traffic.reset()
    with pytest.raises(RemoteMissing) as err:
        b.read("packs/00/absent")
    assert "packs/00/absent does not exist on the remote" in str(err.value)
    assert b.statistics().requests == 1 and b.statistics().retries == 0
    if remote.traffic:
        assert remote.traffic.count("GET", "packs/00/absent") == 1
    with pytest.raises(RemoteMissing):
        b.read_ranges("packs/00/absent", [(0, 10)])
    assert b.read_tagged("packs/00/absent") is None


def test_read_ranges_in_order(remote):
    b = remote.make()
    data = bytes(range(256)) * 64  # 16 KiB
    b.write("packs/aa/p1", data)
    ranges = [(5000, 10), (0, 3), (16383, 1), (100, 0), (4, 4096)]
    assert b.read_ranges("packs/aa/p1", ranges) == [data[o:o + n] for o, n in ranges]
    assert b.read_ranges("packs/aa/p1", []) == []


def test_read_ranges_coalesces_neighbours(remote):
    b = remote.make()
    size = 3 * COALESCE_GAP + 4 * MiB
    data = bytes(range(251)) * (size // 251 + 1)
    b.write("packs/bb/big", data[:size])
    # three near each other (gaps <= 1 MiB), one far away: two requests
    ranges = [(10, 100), (200_000, 50), (200_000 + COALESCE_GAP, 10),
              (size - 1000, 1000)]
    before = b.statistics().requests
    if remote.traffic:
        remote.traffic.reset()
    got = b.read_ranges("packs/bb/big", ranges)
    assert got == [data[o:o + n] for o, n in ranges]
    assert b.statistics().requests - before == 2
    if remote.traffic:
        gets = [r for r in remote.traffic.requests if r.method == "GET"]
        assert sorted(r.range for r in gets) == sorted(
            [f"bytes=10-{200_000 + COALESCE_GAP + 10 - 1}", f"bytes={size - 1000}-{size - 1}"])
        # what moved is what was asked plus the gaps, not the object
        assert remote.traffic.get_bytes == (200_000 + COALESCE_GAP) + 1000
    # a gap just over the limit is two requests
    before = b.statistics().requests
    b.read_ranges("packs/bb/big", [(0, 10), (10 + COALESCE_GAP + 1, 10)])
    assert b.statistics().requests - before == 2


def test_read_ranges_of_a_truncated_object_is_remote_corrupt(remote):
    b = remote.make()
    b.write("packs/cc/p2", b"z" * 5000)
    b.delete("packs/cc/p2")
    b.write("packs/cc/p2", b"z" * 3000)  # replaced by a truncated copy behind our back
    with pytest.raises(RemoteCorrupt) as err:
        b.read_ranges("packs/cc/p2", [(0, 100), (2900, 200)])
    assert "packs/cc/p2 is shorter than expected" in str(err.value)
    with pytest.raises(RemoteCorrupt):
        b.read_ranges("packs/cc/p2", [(4000, 100)])  # starts past the end


def test_names_must_be_relative_paths(remote):
    b = remote.make()
    for bad in ("", "/abs", "a//b", "../up", "a/./b"):
        with pytest.raises(ValueError):
            b.write(bad, b"x")


# -- compare-and-swap ---------------------------------------------------------------


def test_write_if_and_delete_if(remote):
    b = remote.make()
    assert b.write_if("refs/heads/main", b"one", None)
    assert not b.write_if("refs/heads/main", b"two", None)  # exists already
    data, tag1 = b.read_tagged("refs/heads/main")
    assert data == b"one"
    assert not b.write_if("refs/heads/main", b"two", '"not-the-tag"')
    assert b.write_if("refs/heads/main", b"two", tag1)
    data, tag2 = b.read_tagged("refs/heads/main")
    assert data == b"two" and tag2 != tag1
    assert not b.write_if("refs/heads/main", b"three", tag1)  # stale tag
    assert not b.delete_if("refs/heads/main", tag1)
    assert b.read("refs/heads/main") == b"two"
    assert b.delete_if("refs/heads/main", tag2)
    assert b.read_tagged("refs/heads/main") is None
    assert not b.delete_if("refs/heads/main", tag2)  # absent
    assert not b.write_if("refs/heads/other", b"x", tag2)  # absent, a tag expected


def test_probe_cas_is_conditional_and_leaves_nothing(remote):
    b = remote.make(cas="lock")
    assert b.probe_cas() == "conditional" and b.cas == "conditional"
    assert b.list("probe/") == []


def test_concurrent_compare_and_swap_loses_no_update(remote):
    """Threads increment one counter by read_tagged + write_if, retrying lost races;
    a store whose conditions were not atomic would lose increments."""
    b = remote.make()
    b.write_if("refs/counter", b"0", None)
    threads, rounds = 4, 6

    def work():
        for _ in range(rounds):
            while True:
                data, tag = b.read_tagged("refs/counter")
                if b.write_if("refs/counter", str(int(data) + 1).encode(), tag):
                    break
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert b.read("refs/counter") == str(threads * rounds).encode()


# -- retries and errors ---------------------------------------------------------------


def test_transient_failures_are_retried(remote):
    b = remote.make(retries=4)
    b.write("packs/dd/p3", b"payload")
    remote.fail_next(b, 3)
    assert b.read("packs/dd/p3") == b"payload"
    assert b.statistics().retries == 3
    if remote.traffic:
        assert remote.traffic.count("GET", "packs/dd/p3", injected=True) == 3


def test_persistent_failures_are_remote_unavailable(remote):
    b = remote.make(retries=3)
    b.write("packs/ee/p4", b"payload")
    before = b.statistics().requests
    remote.fail_next(b, 100)
    with pytest.raises(RemoteUnavailable) as err:
        b.read("packs/ee/p4")
    msg = str(err.value)
    assert msg.startswith(f"could not reach {b.url}") and "after 3 tries" in msg
    assert "check the network/endpoint and run the command again" in msg
    assert err.value.retryable and b.statistics().requests - before == 3
    if remote.traffic:
        assert "503 SlowDown" in msg


def test_retries_cover_writes_and_compare_and_swap(remote):
    b = remote.make(retries=3)
    remote.fail_next(b, 2)
    b.write("packs/ff/p5", b"payload")
    remote.fail_next(b, 2)
    assert b.write_if("refs/heads/x", b"v1", None)
    assert b.read("packs/ff/p5") == b"payload" and b.read("refs/heads/x") == b"v1"


def test_s3_server_counts_put_body_bytes(s3_url, s3_traffic):
    """The benchmark's "bytes the server received" (tools/bench/bench_remote.py)."""
    url, options = s3_url
    b = Backend(url, options, backoff=0.0)
    s3_traffic.reset()
    b.write("packs/cc/one", b"x" * 100_000)
    b.write("packs/cc/two", b"y" * 3 * MiB)
    received = s3_traffic.put_bytes
    # the bodies, and at most a little framing (aws-chunked) per request
    assert 100_000 + 3 * MiB <= received <= 100_000 + 3 * MiB + 2 * 1024
    assert b.read("packs/cc/two") == b"y" * 3 * MiB
    assert s3_traffic.put_bytes == received  # reads are not counted
    assert s3_traffic.get_bytes >= 3 * MiB
    s3_traffic.reset()
    assert s3_traffic.put_bytes == 0
    b.close()


def test_s3_random_server_errors_are_ridden_out(s3_url, s3_traffic):
    url, options = s3_url
    b = Backend(url, options, retries=8, backoff=0.0)
    s3_traffic.fail_fraction(0.3, seed=7, status=500)
    for i in range(20):
        b.write(f"packs/{i:02x}/obj{i}", bytes([i]) * 100)
    names = [n for n, _ in b.list("packs/")]
    s3_traffic.stop_failing()
    assert len(names) == 20
    assert s3_traffic.count(injected=True) > 0
    assert b.statistics().retries == s3_traffic.count(injected=True)
    b.close()


def test_s3_bad_credentials_are_remote_auth(s3_url, s3_traffic, _s3_server_obj):
    url, options = s3_url
    key, secret = _s3_server_obj.iam_user(f"vfs-{uuid.uuid4().hex[:8]}")
    good = Backend(url, {**options, "key": key, "secret": secret}, backoff=0.0)
    unknown = Backend(url, options, backoff=0.0)  # "testing" is no IAM user's key
    wrong = Backend(url, {**options, "key": key, "secret": "not-the-secret"}, backoff=0.0)
    with s3_traffic.auth_enforced():
        good.write("refs/heads/main", b"ok")
        assert good.read("refs/heads/main") == b"ok"
        for bad, code in ((unknown, "InvalidAccessKeyId"), (wrong, "SignatureDoesNotMatch")):
            with pytest.raises(RemoteAuth) as err:
                bad.read("refs/heads/main")
            assert f"403 {code}" in str(err.value) and "AWS_ACCESS_KEY_ID" in str(err.value)
            assert bad.statistics().requests == 1  # never retried
    for b in (good, unknown, wrong):
        b.close()


def test_s3_missing_bucket_is_remote_invalid(s3_server):
    b = Backend("s3://no-such-bucket-here/repo", {"endpoint_url": s3_server}, backoff=0.0)
    with pytest.raises(RemoteInvalid) as err:
        b.write("packs/00/x", b"x")
    assert "NoSuchBucket" in str(err.value) and "bucket exists" in str(err.value)
    b.close()


def test_s3_unreachable_endpoint_is_remote_unavailable():
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = Backend("s3://bucket/repo", {"endpoint_url": f"http://127.0.0.1:{port}"},
                retries=2, backoff=0.0)
    with pytest.raises(RemoteUnavailable) as err:
        b.read("refs/heads/main")
    assert "after 2 tries" in str(err.value)
    b.close()


def test_s3_options_are_coerced(s3_url):
    url, options = s3_url
    b = Backend(url, {**options, "use_ssl": "false", "region": "us-east-1"}, backoff=0.0)
    assert b.store.fs.use_ssl is False
    assert b.store.fs.client_kwargs == {"region_name": "us-east-1"}
    b.write("refs/x", b"1")
    assert b.read("refs/x") == b"1"
    b.close()


def test_coerce_options_by_parameter_defaults():
    class Fs:
        def __init__(self, anon=False, retries=3, ratio=0.5, endpoint_url=None, **kw):
            pass
    got = coerce_options({"anon": "true", "retries": "7", "ratio": "2.5", "endpoint_url":
                          "http://x:1", "secret": "12345", "client_kwargs.region_name":
                          "eu-west-1", "config_kwargs.connect_timeout": "5"}, Fs)
    assert got == {"anon": True, "retries": 7, "ratio": 2.5, "endpoint_url": "http://x:1",
                   "secret": "12345", "client_kwargs": {"region_name": "eu-west-1"},
                   "config_kwargs": {"connect_timeout": 5}}
    with pytest.raises(ValueError):
        coerce_options({"anon": "maybe"}, Fs)


@pytest.mark.parametrize("url,words", [
    ("nosuchproto://x/y", "unknown protocol nosuchproto://"),
    ("gcs://bucket/repo", "pip install"),
    ("s3:///repo", "no bucket"),
    ("file://relative/dir", "absolute path"),
    ("", "empty remote URL"),
])
def test_unusable_urls_are_remote_invalid(url, words):
    with pytest.raises(RemoteInvalid) as err:
        Backend(url)
    assert words in str(err.value) and err.value.exit_code == 2


def test_plain_path_is_normalised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    b = Backend("rel/remote")
    assert b.url == str(tmp_path / "rel" / "remote") and b.cas == "conditional"
    b.write("a/b", b"1")
    assert (tmp_path / "rel" / "remote" / "a" / "b").read_bytes() == b"1"


def test_directory_remote_hides_its_own_files(tmp_path):
    b = Backend(f"file://{tmp_path}/remote")
    b.write("packs/ab/x", b"1")
    assert b.write_if("refs/heads/main", b"c", None)
    root = tmp_path / "remote"
    assert (root / LOCK_FILE).exists() and (root / TMP_DIR).is_dir()
    assert list((root / TMP_DIR).iterdir()) == []  # no temporary file left behind
    assert [n for n, _ in b.list("")] == ["packs/ab/x", "refs/heads/main"]


def test_remote_errors_are_one_hierarchy():
    for cls in (RemoteAuth, RemoteBusy, RemoteCorrupt, RemoteInvalid, RemoteMissing,
                RemoteUnavailable):
        assert issubclass(cls, RemoteError)


# -- the lock object --------------------------------------------------------------------

LOCK_KINDS = KINDS + ["ignoring"]


@pytest.fixture(params=LOCK_KINDS)
def two_processes(request, tmp_path):
    """Two Backends on one remote sharing a fake clock; ``ignoring`` is a store that
    ignores write conditions (cas "lock")."""
    clock = FakeClock()
    kw = {"clock": clock.time, "sleep": clock.sleep, "backoff": 0.0}
    if request.param == "ignoring":
        first = fake_backend(honour_conditions=False, **kw)
        second = Backend(first.url, store=first.store, **kw)
        yield first, second, clock
        return
    if request.param == "dir":
        url, options = str(tmp_path / "remote"), None
    elif request.param == "memory":
        url, options = f"memory://vfs-lock-{uuid.uuid4().hex}", None
    else:
        url, options = request.getfixturevalue("s3_url")
    first, second = Backend(url, options, **kw), Backend(url, options, **kw)
    try:
        yield first, second, clock
    finally:
        for name, _ in first.list(""):
            first.delete(name)
        first.close()
        second.close()


def test_ignoring_store_probes_as_lock():
    b = fake_backend(honour_conditions=False)
    assert b.cas == "lock" and b.probe_cas() == "lock"
    assert fake_backend().probe_cas() == "conditional"


def test_lock_excludes_a_second_holder(two_processes):
    a, b, clock = two_processes
    with a.locked("locks/refs", lease=30, wait=5):
        start = clock.time()
        with pytest.raises(RemoteBusy) as err:
            with b.locked("locks/refs", lease=30, wait=10):
                pytest.fail("the lock was taken twice")
        assert clock.time() - start >= 10  # it waited (fake time) before giving up
        msg = str(err.value)
        assert "locks/refs is held by" in msg and "pid" in msg and err.value.retryable
    assert a.read_tagged("locks/refs") is None  # released: deleted
    with b.locked("locks/refs", wait=0):
        pass


def test_lock_is_taken_over_after_its_lease(two_processes):
    a, b, clock = two_processes
    with a.locked("locks/refs", lease=30, wait=1) as held_a:
        with b.locked("locks/refs", lease=30, wait=60) as held_b:
            assert clock.time() >= 1_000_030  # b waited for a's lease to run out
            assert not held_a.renew() and held_a.lost
            with pytest.raises(RemoteBusy):
                held_a.check()
            held_b.check()
        assert a.read_tagged("locks/refs") is None  # b released its own
    # a's release found the lock not its own and left it alone (nothing to delete)
    assert a.read_tagged("locks/refs") is None


def test_former_holder_does_not_delete_the_new_holders_lock(two_processes):
    a, b, clock = two_processes
    ctx_a = a.locked("locks/refs", lease=30, wait=1)
    ctx_a.__enter__()
    clock.sleep(31)
    with b.locked("locks/refs", lease=30, wait=1):
        ctx_a.__exit__(None, None, None)  # a comes back late and releases
        data, _ = b.read_tagged("locks/refs")
        assert b"owner" in data  # still b's
        with pytest.raises(RemoteBusy):
            with a.locked("locks/refs", lease=30, wait=5):
                pass


def test_renewal_extends_the_lease(two_processes):
    a, b, clock = two_processes
    with a.locked("locks/refs", lease=30, wait=1) as held:
        clock.sleep(20)
        assert held.renew()
        with pytest.raises(RemoteBusy):  # without the renewal b would get it at +30
            with b.locked("locks/refs", lease=30, wait=25):
                pass


def test_lock_serialises_real_threads(tmp_path):
    """Read-modify-write of one object under the lock from threads of two Backends,
    real time: no increment is lost."""
    url = str(tmp_path / "remote")
    backends = [Backend(url), Backend(url)]
    backends[0].write_if("refs/n", b"0", None)

    def work(b):
        for _ in range(3):
            with b.locked("locks/refs", lease=3, wait=60):
                data, tag = b.read_tagged("refs/n")
                b.write_if("refs/n", str(int(data) + 1).encode(), tag)
    threads = [threading.Thread(target=work, args=(b,)) for b in backends * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backends[0].read("refs/n") == b"12"


# -- the fakes ------------------------------------------------------------------------


def test_fake_store_interleaving_hook_loses_a_race():
    """The lead's concurrency tests pause a writer in ``before_put``; here another
    writer moves the ref meanwhile, so the paused compare-and-swap must lose."""
    b = fake_backend()
    store: FakeStore = b.store
    b.write_if("refs/heads/main", b"c1", None)
    _, tag = b.read_tagged("refs/heads/main")
    other = Backend(b.url, store=store)

    def intrude(name):
        store.before_put = None
        assert other.write_if(name, b"c2-other", tag)
    store.before_put = intrude
    assert not b.write_if("refs/heads/main", b"c2-mine", tag)
    assert b.read("refs/heads/main") == b"c2-other"
    assert store.calls["put_if"] == 3


def test_fake_store_faults_are_retried_then_unavailable():
    b = fake_backend(retries=3, backoff=0.0)
    b.write("packs/ab/x", b"1")
    b.store.fail_next(2)
    assert b.read("packs/ab/x") == b"1"
    b.store.fail_next(3)
    with pytest.raises(RemoteUnavailable):
        b.read("packs/ab/x")
