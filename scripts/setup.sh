#!/usr/bin/env bash
# Set up everything versionfs needs on Debian 12 / Ubuntu: system packages (FUSE 3,
# XFS tools for the reflink tests, a compiler for pyfuse3) and a virtualenv in .venv
# with versionfs installed in editable mode plus its test extras.
#
# Idempotent: packages are installed only when missing, the venv is reused, and pip
# runs again only when pyproject.toml changed since the last successful install.
set -euo pipefail
PIP_MODE="editable_mode=compat"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PACKAGES=(fuse3 libfuse3-dev pkg-config xfsprogs e2fsprogs attr sqlite3 util-linux
          gcc python3-dev python3-venv
          chromium chromium-driver fonts-dejavu-core)  # vfs ui's browser tests

say() { printf 'setup: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

install_system_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        say "not a Debian-based system; install by hand: ${PACKAGES[*]}"
        return 0
    fi
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "system packages present"
        return 0
    fi
    say "installing system packages: ${missing[*]}"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
       ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null; then
        say "could not install ${missing[*]} (need root or passwordless sudo)"
        return 1
    fi
}

ensure_fuse_device() {
    if [ ! -e /dev/fuse ]; then
        say "/dev/fuse missing; trying modprobe fuse"
        as_root modprobe fuse >/dev/null 2>&1 || true
    fi
    if [ -e /dev/fuse ]; then
        say "/dev/fuse present"
    else
        say "warning: /dev/fuse is still missing; mount tests will not run"
    fi
}

find_python() {
    local candidate
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

ensure_venv() {
    local venv="$ROOT/.venv" python stamp want
    if [ -x "$venv/bin/python" ] &&
       "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        say "reusing $venv"
    else
        python="$(find_python)" || { say "need python3 >= 3.11 on PATH"; return 1; }
        say "creating $venv with $python ($("$python" -V 2>&1))"
        rm -rf "$venv"
        "$python" -m venv "$venv"
    fi
    stamp="$venv/.versionfs-setup"
    # The stamp covers pyproject.toml and how it is installed (below).
    want="$( (cat pyproject.toml; echo "$PIP_MODE") | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
       "$venv/bin/python" -c 'import versionfs, pytest, pyfuse3' 2>/dev/null; then
        say "python packages up to date"
        return 0
    fi
    say "installing versionfs and test dependencies into .venv (pip, quiet)"
    # Build backends are chatty on stderr; keep the log and show it only on failure.
    local log
    log="$(mktemp)"
    # editable_mode=compat puts the source tree on sys.path with a .pth line; the
    # default import-hook finder costs ~50-70 ms at every start of vfs.
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]' \
            --config-settings editable_mode=compat >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        say "pip install failed"
        return 1
    fi
    rm -f "$log"
    printf '%s\n' "$want" >"$stamp"
}

install_system_packages
ensure_fuse_device
ensure_venv
# Compiled modules, as an installed package has them: with PYTHONDONTWRITEBYTECODE
# set (some shells and CI set it) every vfs command would otherwise compile the
# package again at start-up (~50-100 ms). Only changed files are recompiled.
"$ROOT/.venv/bin/python" -m compileall -q "$ROOT/versionfs" >/dev/null
say "ready: $ROOT/.venv/bin/vfs"
