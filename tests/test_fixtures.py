"""The shared fixtures in conftest.py do what they promise."""

from __future__ import annotations

import errno
import importlib.util
import os
import subprocess

import pytest


def _cli_importable() -> bool:
    try:
        return importlib.util.find_spec("versionfs.cli.repo_cmds") is not None
    except ImportError:
        return False


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
    if not _cli_importable():
        pytest.skip("versionfs.cli.repo_cmds is not written yet")
    result = cli("--help")
    assert "snapshot" in result.stdout


def test_cli_fail_reports_unknown_command(cli):
    if not _cli_importable():
        pytest.skip("versionfs.cli.repo_cmds is not written yet")
    result = cli.fail("no-such-command")
    assert "no-such-command" in result.stderr
