#!/usr/bin/env bash
# The main job end to end, through the command line: snapshot a small dataset, change
# it, snapshot again, look at the history and the diff, then mount the first version
# read-only and check that what the mount serves is byte-for-byte the old content.
#
# Everything happens in a temporary directory that is removed at the end, even on
# failure; the mount is always unmounted.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"

VENV="$ROOT/.venv/bin"
PY="$VENV/python"
export PATH="$VENV:$PATH"          # so `vfs` and `versionfs` are the venv's

TMP="$(mktemp -d "${TMPDIR:-/tmp}/versionfs-demo.XXXXXX")"
WS="$TMP/data"                     # the workspace being versioned
SAVED="$TMP/saved-v1"              # copies of v1 content, to compare the mount against
MNT="$TMP/mnt"
mkdir -p "$WS" "$SAVED" "$MNT"

cleanup() {
    local rc=$?
    cd /
    if mountpoint -q "$MNT" 2>/dev/null; then
        fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || true
    fi
    if mountpoint -q "$MNT" 2>/dev/null; then
        echo "demo: could not unmount $MNT; leaving $TMP in place" >&2
    else
        rm -rf --one-file-system "$TMP"
    fi
    if [ "$rc" -eq 0 ]; then echo; echo "demo: OK"; else echo "demo: FAILED (exit $rc)" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n==> %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
die() { echo "demo: $*" >&2; exit 1; }

step "generating a sample dataset in $WS"
"$PY" - "$WS" <<'PYEOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(42)
for i in range(300):                      # a few hundred small files in nested dirs
    d = os.path.join(root, "tables", f"part{i % 6}", f"shard{i % 4}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"rows-{i:04d}.csv"), "w") as f:
        f.write("id,value\n")
        f.writelines(f"{i * 100 + j},{rng.random():.6f}\n" for j in range(rng.randint(5, 60)))
os.makedirs(os.path.join(root, "models"), exist_ok=True)
with open(os.path.join(root, "models", "weights.bin"), "wb") as f:   # ~20 MiB
    for _ in range(20):
        f.write(rng.randbytes(1 << 20))
with open(os.path.join(root, "README.txt"), "w") as f:
    f.write("sample dataset for the versionfs demo\n")
os.symlink("tables/part0/shard0/rows-0000.csv", os.path.join(root, "latest.csv"))
os.makedirs(os.path.join(root, "empty"))
PYEOF
echo "$(find "$WS" -type f | wc -l) files, $(du -sh "$WS" | cut -f1)"

cd "$WS"
EDITED="tables/part1/shard1/rows-0001.csv"
DELETED="tables/part2/shard2/rows-0002.csv"
BIG="models/weights.bin"

step "version 1"
run vfs init
run vfs snapshot -m "v1" --tag v1
cp "$EDITED" "$SAVED/edited.csv"
cp "$BIG" "$SAVED/weights.bin"

step "changing the data: edit, delete, add, rewrite 1 MiB inside the big file"
echo "999999,0.5" >>"$EDITED"
rm "$DELETED" tables/part3/shard3/rows-0003.csv
mkdir -p tables/part9
printf 'id,value\n1,2\n' >tables/part9/new.csv
dd if=/dev/urandom of="$BIG" bs=1M count=1 seek=10 conv=notrunc status=none

step "version 2"
run vfs snapshot -m v2
run vfs log
run vfs diff v1 HEAD --stat
DIFF="$(vfs diff v1 HEAD)"
printf '$ vfs diff v1 HEAD\n%s\n' "$DIFF"
for path in "$EDITED" "$DELETED" tables/part9/new.csv "$BIG"; do
    grep -qF "$path" <<<"$DIFF" || die "vfs diff v1 HEAD does not mention $path"
done

step "mounting v1 read-only and reading from it"
run timeout 120 versionfs mount "$WS@v1" "$MNT"
mountpoint -q "$MNT" || die "versionfs mount returned but $MNT is not a mount point"
run cmp "$MNT/$EDITED" "$SAVED/edited.csv"
run cmp "$MNT/$BIG" "$SAVED/weights.bin"
[ -e "$MNT/$DELETED" ] || die "$DELETED is missing from the v1 mount"
[ ! -e "$MNT/tables/part9/new.csv" ] || die "the v1 mount shows a file added in v2"
echo "the mount serves v1 exactly (the workspace has moved on to v2)"
run ls -l "$MNT"

step "unmounting"
run versionfs umount "$MNT"
mountpoint -q "$MNT" && die "$MNT is still mounted after versionfs umount"
true
