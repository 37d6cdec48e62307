"""Fixtures shared by the whole suite.

``cli``
    A function ``run(*args, cwd=None, check=True, input=None, env=None, timeout=120)``
    that runs the real command line in a subprocess (``python -m versionfs ARGS``) and
    returns the ``CompletedProcess`` with text ``stdout``/``stderr``. ``cwd`` defaults
    to the test's ``tmp_path`` (never the source tree); ``env`` adds variables to the
    current environment. With ``check=True`` a non-zero exit fails the test and shows
    the command, its exit code and both streams. ``run.fail(*args, code=None, ...)``
    expects failure: it fails the test if the command succeeds, if ``code`` is given
    and differs, or if stderr holds a Python traceback (bad input must get a one-line
    error). Output goes through temporary files rather than pipes, so a command that
    leaves a daemon behind (``versionfs mount``) cannot hang the test.

``xfs_dir``
    A fresh, empty directory on an XFS filesystem made with ``mkfs.xfs -m reflink=1``,
    so ``FICLONE`` works there. The filesystem is one sparse 4 GiB image under
    ``/var/tmp``, loop-mounted once per session (``mount -o loop``) and unmounted at
    the end; its loop device (found with ``losetup -j``) is detached if still attached,
    and the image deleted. Each test's directory is removed after the test. Without
    the capability (not root, no ``mkfs.xfs``, mount refused) the test is skipped with
    the reason; under ``CI=true`` it fails instead, so a broken CI machine cannot hide
    the reflink path.

``ext4_dir``
    A fresh directory on the ordinary filesystem (``tmp_path``): the no-reflink path.

``small_fs``
    A fresh, empty directory on its own ~24 MiB loop-mounted ext4 filesystem (no
    reserved blocks), for disk-full tests; unmounted, detached and deleted after the
    test. Same skip/fail rule as ``xfs_dir``.

``storage``
    Parametrized over ``"xfs"`` and ``"ext4"``: returns ``xfs_dir`` or ``ext4_dir``,
    so one test covers both storage paths (a test that must know which one can read
    ``request.node.callspec.params["storage"]``). The ``xfs`` case carries the ``xfs``
    marker.

``s3_server``, ``s3_traffic``, ``s3_url``
    A real S3-protocol server for the remote tests: moto's ``ThreadedMotoServer`` on
    127.0.0.1 at a free port, started once per session in the test process and
    stopped at the end (``s3_server`` is its endpoint URL). ``s3_traffic`` is its
    ``tests/s3server.Traffic`` for the test: bytes sent in GET bodies, the requests
    seen, ``fail_next``/``fail_fraction`` fault injection, ``auth_enforced()``;
    counters and failures are cleared before and after each test. ``s3_url`` makes
    a fresh bucket and gives ``(url, options)``: ``("s3://BUCKET/repo",
    {"endpoint_url": ..., "key": "testing", "secret": "testing"})``; the bucket is
    emptied and deleted afterwards. Dummy ``AWS_*`` variables (and no AWS config
    files) are set for the session, for subprocesses too, so nothing reaches AWS.

Every fixture cleans up in ``finally`` blocks, touching only what it created: its own
mountpoint, its own loop device, its own image file.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
XFS_IMAGE_SIZE = 4 << 30
SMALL_FS_SIZE = 24 << 20
IMAGE_DIR = "/var/tmp"
# mkfs, losetup and friends live in sbin, which a non-login root shell may lack.
_SBIN_ENV = {**os.environ,
             "PATH": os.pathsep.join([os.environ.get("PATH", os.defpath),
                                      "/usr/local/sbin", "/usr/sbin", "/sbin"])}


# -- cli ---------------------------------------------------------------------------


def _describe(args, cwd, rc, out, err) -> str:
    cmd = " ".join(str(a) for a in args)
    return (f"$ vfs {cmd}\n(cwd {cwd}, exit {rc})\n"
            f"--- stdout ---\n{out}--- stderr ---\n{err}")


class _Cli:
    """The callable returned by the ``cli`` fixture."""

    def __init__(self, default_cwd: Path):
        self.default_cwd = default_cwd

    def __call__(self, *args, cwd=None, check=True, input=None, env=None, timeout=120):
        cwd = str(cwd if cwd is not None else self.default_cwd)
        argv = [sys.executable, "-m", "versionfs", *(str(a) for a in args)]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            try:
                proc = subprocess.run(
                    argv, cwd=cwd, env=full_env, timeout=timeout, text=True,
                    stdin=subprocess.DEVNULL if input is None else None,
                    input=input, stdout=out, stderr=err)
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = None
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        if rc is None:
            pytest.fail(f"timed out after {timeout}s\n"
                        + _describe(args, cwd, "-", stdout, stderr), pytrace=False)
        result = subprocess.CompletedProcess(argv, rc, stdout, stderr)
        if check and rc != 0:
            pytest.fail("command failed\n" + _describe(args, cwd, rc, stdout, stderr),
                        pytrace=False)
        return result

    def fail(self, *args, code: int | None = None, **kwargs) -> subprocess.CompletedProcess:
        """Run a command that must fail cleanly; return its ``CompletedProcess``."""
        result = self(*args, check=False, **kwargs)
        cwd = kwargs.get("cwd") or self.default_cwd
        desc = _describe(args, cwd, result.returncode, result.stdout, result.stderr)
        if result.returncode == 0:
            pytest.fail("command succeeded but was expected to fail\n" + desc, pytrace=False)
        if code is not None and result.returncode != code:
            pytest.fail(f"expected exit code {code}\n" + desc, pytrace=False)
        if "Traceback (most recent call last)" in result.stderr:
            pytest.fail("command failed with a traceback instead of a clear error\n" + desc,
                        pytrace=False)
        return result


@pytest.fixture
def cli(tmp_path) -> _Cli:
    return _Cli(tmp_path)


# -- loop-mounted filesystems ---------------------------------------------------------


class Unavailable(Exception):
    """A capability the fixture needs is missing; the message says which."""


def _need_capability(what: str, reason: str):
    msg = f"needs {what}: {reason}"
    if IN_CI:
        pytest.fail(msg + " (CI=true: a missing capability is a failure here)", pytrace=False)
    pytest.skip(msg)


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=_SBIN_ENV)


def _check_tools(*tools: str) -> None:
    if os.geteuid() != 0:
        raise Unavailable("not running as root (mount and losetup need root)")
    for tool in tools:
        if shutil.which(tool, path=_SBIN_ENV["PATH"]) is None:
            raise Unavailable(f"{tool} not found on PATH")


def _loop_devices_of(image: str) -> list[str]:
    """Loop devices backed by ``image`` (``losetup -j``), e.g. ``['/dev/loop3']``."""
    proc = _run(["losetup", "-j", image])
    return [line.split(":", 1)[0] for line in proc.stdout.splitlines() if ":" in line]


@dataclass
class LoopMount:
    """One image file formatted and loop-mounted by this process."""

    image: str
    mountpoint: str
    devices: list[str]

    @classmethod
    def create(cls, mkfs: list[str], size: int, prefix: str) -> LoopMount:
        _check_tools(mkfs[0], "mount", "umount", "losetup")
        fd, image = tempfile.mkstemp(prefix=prefix, suffix=".img", dir=IMAGE_DIR)
        mountpoint = None
        try:
            os.ftruncate(fd, size)  # sparse: costs only what the filesystem writes
            os.close(fd)
            fd = -1
            proc = _run([*mkfs, image])
            if proc.returncode != 0:
                raise Unavailable(f"{' '.join(mkfs)} failed: {proc.stderr.strip()}")
            mountpoint = tempfile.mkdtemp(prefix=prefix + "mnt-")
            proc = _run(["mount", "-o", "loop", image, mountpoint])
            if proc.returncode != 0:
                raise Unavailable(f"mount -o loop failed: {proc.stderr.strip()}")
            return cls(image, mountpoint, _loop_devices_of(image))
        except BaseException:
            if fd >= 0:
                os.close(fd)
            cls(image, mountpoint or "", _loop_devices_of(image)).destroy()
            raise

    def destroy(self) -> None:
        """Unmount, detach our loop device(s) if still attached, delete the files."""
        try:
            if self.mountpoint and os.path.ismount(self.mountpoint):
                if _run(["umount", self.mountpoint]).returncode != 0:
                    # Busy (a leaked open file or mount inside): detach it lazily so
                    # the session can still finish; the kernel frees it when idle.
                    _run(["umount", "-l", self.mountpoint])
            # ``mount -o loop`` sets autoclear, so the device usually left with the
            # unmount; detach only devices that still point at our image.
            attached = set(_loop_devices_of(self.image))
            for dev in self.devices:
                if dev in attached:
                    _run(["losetup", "-d", dev])
        finally:
            if self.mountpoint and not os.path.ismount(self.mountpoint):
                with _suppress_oserror():
                    os.rmdir(self.mountpoint)
            with _suppress_oserror():
                os.unlink(self.image)


class _suppress_oserror:
    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        return typ is not None and issubclass(typ, OSError)


def _rmtree(path: Path) -> None:
    """Remove a test's directory even where read-only blobs or dirs sit inside."""

    def make_writable_and_retry(func, p, _exc):
        try:
            parent = os.path.dirname(p)
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
            if not os.path.islink(p) and os.path.isdir(p):
                os.chmod(p, os.stat(p).st_mode | stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


def _fresh_dir(parent: str, request) -> Path:
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.node.name)[:60]
    return Path(tempfile.mkdtemp(prefix=name + "-", dir=parent))


@pytest.fixture(scope="session")
def _xfs_session():
    """The session's reflink-capable XFS mount, or the reason there is none."""
    mkfs = ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"]
    try:
        mount = LoopMount.create(mkfs, XFS_IMAGE_SIZE, "versionfs-xfs-")
    except Unavailable as exc:
        yield str(exc)
        return
    try:
        yield mount
    finally:
        mount.destroy()


@pytest.fixture
def xfs_dir(_xfs_session, request) -> Path:
    if isinstance(_xfs_session, str):
        _need_capability("a loop-mounted XFS with reflinks", _xfs_session)
    path = _fresh_dir(_xfs_session.mountpoint, request)
    try:
        yield path
    finally:
        _rmtree(path)


@pytest.fixture
def ext4_dir(tmp_path) -> Path:
    path = tmp_path / "ext4"
    path.mkdir()
    return path


@pytest.fixture
def small_fs(request) -> Path:
    mkfs = ["mkfs.ext4", "-q", "-F", "-m", "0"]
    try:
        mount = LoopMount.create(mkfs, SMALL_FS_SIZE, "versionfs-small-")
    except Unavailable as exc:
        _need_capability("a small loop-mounted ext4 filesystem", str(exc))
    try:
        path = Path(mount.mountpoint) / "fs"
        path.mkdir()
        yield path
    finally:
        mount.destroy()


@pytest.fixture(params=[pytest.param("xfs", marks=pytest.mark.xfs), "ext4"])
def storage(request) -> Path:
    return request.getfixturevalue(f"{request.param}_dir")


# -- a real S3 server (moto) ---------------------------------------------------------

@pytest.fixture(scope="session")
def _s3_server_obj():
    import logging

    from s3server import AWS_ENV, AWS_UNSET, S3Server
    werkzeug_log = logging.getLogger("werkzeug")  # one line per request otherwise
    old_level = werkzeug_log.level
    with pytest.MonkeyPatch.context() as mp:
        for name, value in AWS_ENV.items():
            mp.setenv(name, value)
        for name in AWS_UNSET:
            mp.delenv(name, raising=False)
        werkzeug_log.setLevel(logging.WARNING)
        server = S3Server()
        server.start()
        try:
            yield server
        finally:
            server.stop()
            werkzeug_log.setLevel(old_level)


@pytest.fixture(scope="session")
def s3_server(_s3_server_obj) -> str:
    return _s3_server_obj.endpoint


@pytest.fixture
def s3_traffic(_s3_server_obj):
    traffic = _s3_server_obj.traffic
    traffic.stop_failing()
    traffic.reset()
    try:
        yield traffic
    finally:
        traffic.stop_failing()
        traffic.reset()


_bucket_numbers = iter(range(1, 1 << 30))


@pytest.fixture
def s3_url(s3_server, _s3_server_obj):
    import boto3
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"vfs-test-{next(_bucket_numbers)}-{os.getpid()}"
    client.create_bucket(Bucket=bucket)
    try:
        yield (f"s3://{bucket}/repo",
               {"endpoint_url": s3_server, "key": "testing", "secret": "testing"})
    finally:
        _s3_server_obj.traffic.stop_failing()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)
        client.close()
