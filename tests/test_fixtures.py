"""The shared fixtures in conftest.py do what they promise."""

from __future__ import annotations

import errno
import importlib
import os
import subprocess

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _skip_unless_cli_written() -> None:
    """Skip while a versionfs module the CLI imports is still being written.

    Only a missing *versionfs* module skips, and never under CI=true; any other import
    error lets the test run and fail, so a real bug cannot hide here.
    """
    try:
        importlib.import_module("versionfs.cli.commands")
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("versionfs.") and not IN_CI:
            pytest.skip(f"the CLI is not complete yet: {exc}")


@pytest.mark.xfs
def test_xfs_dir_supports_reflinks(xfs_dir):
    src = xfs_dir / "src.bin"
    src.write_bytes(os.urandom(1 << 20))
    proc = subprocess.run(["cp", "--reflink=always", str(src), str(xfs_dir / "clone.bin")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (xfs_dir / "clone.bin").read_bytes() == src.read_bytes()
    assert list(xfs_dir.iterdir()) != []


@pytest.mark.xfs
def test_xfs_dir_is_fresh_per_test(xfs_dir):
    assert list(xfs_dir.iterdir()) == []


def test_small_fs_fills_up(small_fs):
    block = os.urandom(1 << 20)
    with pytest.raises(OSError) as info:
        with open(small_fs / "big.bin", "wb") as f:
            for _ in range(40):
                f.write(block)
                f.flush()
            os.fsync(f.fileno())
    assert info.value.errno == errno.ENOSPC


def test_storage_gives_a_directory(storage):
    assert storage.is_dir()
    (storage / "x").write_text("ok")


def test_cli_help(cli):
    _skip_unless_cli_written()
    result = cli("--help")
    assert "snapshot" in result.stdout


def test_cli_fail_reports_unknown_command(cli):
    _skip_unless_cli_written()
    result = cli.fail("no-such-command")
    assert "no-such-command" in result.stderr
