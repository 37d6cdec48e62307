#!/usr/bin/env bash
# Set up everything versionfs needs on Debian 12 / Ubuntu: system packages (FUSE 3,
# XFS tools for the reflink tests, a compiler for pyfuse3) and a virtualenv in .venv
# with versionfs installed in editable mode plus its test extras, and pyfuse3 built
# from its sdist with the patches in third_party/pyfuse3 (README.md there says why).
#
# Idempotent: packages are installed only when missing, the venv is reused, pip
# runs again only when pyproject.toml changed since the last successful install,
# and pyfuse3 is rebuilt only when its version or a patch changed.
set -euo pipefail
PIP_MODE="editable_mode=compat"
PYFUSE3_VERSION="3.5.0"        # the sdist third_party/pyfuse3/*.patch apply to
PYFUSE3_LOCAL="versionfs.1"    # pip shows pyfuse3 3.5.0+versionfs.1 when patched

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PACKAGES=(fuse3 libfuse3-dev pkg-config xfsprogs e2fsprogs attr sqlite3 util-linux
          gcc python3-dev python3-venv patch
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
    local venv="$ROOT/.venv" python
    if [ -x "$venv/bin/python" ] &&
       "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        say "reusing $venv"
    else
        python="$(find_python)" || { say "need python3 >= 3.11 on PATH"; return 1; }
        say "creating $venv with $python ($("$python" -V 2>&1))"
        rm -rf "$venv"
        "$python" -m venv "$venv"
    fi
}

# What the patched pyfuse3 adds, as versionfs/fuse/ops.py detects it.
PYFUSE3_CHECK='import inspect, pyfuse3
assert hasattr(pyfuse3.FileInfo, "cache_readdir")
assert "lookup" in inspect.signature(pyfuse3.readdir_reply).parameters'

pyfuse3_installed() {  # the installed pyfuse3's version, without importing it
    "$ROOT/.venv/bin/python" -c 'import importlib.metadata as m; print(m.version("pyfuse3"))' \
        2>/dev/null || true
}

build_pyfuse3() {  # WORK LOG: download, patch, build and install; nonzero on failure
    local work="$1" log="$2" src patch py="$ROOT/.venv/bin/python"
    "$py" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
        "pyfuse3==$PYFUSE3_VERSION" -d "$work" >>"$log" 2>&1 || return 1
    tar -xzf "$work/pyfuse3-$PYFUSE3_VERSION.tar.gz" -C "$work" >>"$log" 2>&1 || return 1
    src="$work/pyfuse3-$PYFUSE3_VERSION"
    for patch in "$ROOT"/third_party/pyfuse3/*.patch; do
        echo "applying $patch" >>"$log"
        patch -d "$src" -p1 --forward --batch <"$patch" >>"$log" 2>&1 || return 1
    done
    # the build runs in pip's isolated environment, which brings Cython: the .pyx
    # files are what the patches change. --no-deps: trio comes with versionfs.
    SETUPTOOLS_SCM_PRETEND_VERSION="$PYFUSE3_VERSION+$PYFUSE3_LOCAL" \
        "$py" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall \
        "$src" >>"$log" 2>&1 || return 1
}

ensure_patched_pyfuse3() {
    # pyfuse3 from its sdist with third_party/pyfuse3/*.patch applied in order,
    # before versionfs's dependencies are installed (they accept it: pyfuse3>=3.3).
    # If that fails, pip installs the stock pyfuse3 with them, and check_pyfuse3
    # says so loudly: mounts work, listings are several times slower.
    local stamp="$ROOT/.venv/.versionfs-pyfuse3" want work
    want="$( (echo "$PYFUSE3_VERSION+$PYFUSE3_LOCAL"; cat "$ROOT"/third_party/pyfuse3/*.patch) |
             sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
       [ "$(pyfuse3_installed)" = "$PYFUSE3_VERSION+$PYFUSE3_LOCAL" ]; then
        say "pyfuse3 $PYFUSE3_VERSION+$PYFUSE3_LOCAL (patched) present"
        return 0
    fi
    rm -f "$stamp"
    say "building pyfuse3 $PYFUSE3_VERSION with third_party/pyfuse3/*.patch (about 30 s)"
    work="$(mktemp -d)"
    if build_pyfuse3 "$work" "$work/build.log"; then
        printf '%s\n' "$want" >"$stamp"
        rm -rf "$work"
        return 0
    fi
    cat "$work/build.log" >&2
    PYFUSE3_FAILED="the build failed (its log is above; kept in $work)"
}

check_pyfuse3() {
    local version patched=no
    version="$(pyfuse3_installed)"
    if "$ROOT/.venv/bin/python" -c "$PYFUSE3_CHECK" >/dev/null 2>&1; then
        patched=yes
    fi
    if [ -z "$PYFUSE3_FAILED" ] && [ "$patched" = yes ]; then
        say "pyfuse3 $version: listing cache and names-only entries available"
        return 0
    fi
    local what="is the stock one"
    [ "$patched" = yes ] && what="is an earlier patched build, kept"
    printf '%s\n' \
        "setup: ************************************************************************" \
        "setup: WARNING: could not build pyfuse3 $PYFUSE3_VERSION with third_party/pyfuse3/*.patch:" \
        "setup: ${PYFUSE3_FAILED:-the installed one lacks the patches}." \
        "setup: The installed pyfuse3 ${version:-(none)} $what." >&2
    [ "$patched" = yes ] || printf '%s\n' \
        "setup: Mounts work, but the kernel does not cache their listings and find/ls" \
        "setup: through a mount are several times slower (docs/mount.md, Performance);" \
        "setup: tests/test_mount_listing.py fails until scripts/setup.sh builds it." >&2
    printf '%s\n' \
        "setup: ************************************************************************" >&2
}

install_python_packages() {
    local venv="$ROOT/.venv" stamp want
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
PYFUSE3_FAILED=""
ensure_patched_pyfuse3
install_python_packages
check_pyfuse3
# Compiled modules, as an installed package has them: with PYTHONDONTWRITEBYTECODE
# set (some shells and CI set it) every vfs command would otherwise compile the
# package again at start-up (~50-100 ms). Only changed files are recompiled.
"$ROOT/.venv/bin/python" -m compileall -q "$ROOT/versionfs" >/dev/null
say "ready: $ROOT/.venv/bin/vfs"
