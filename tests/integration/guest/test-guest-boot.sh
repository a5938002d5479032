#!/usr/bin/env bash
# Integration test: build the tiny demo guest (contrib/guest/mkguest.sh) and
# boot it once under libvirt/QEMU TCG (contrib/guest/boot-check.sh).
# Exit 77 (skip) when not root or when qemu-system-x86_64 / libvirtd are
# missing. Uses $YUN_TEST_DIR when set, else a temporary directory.

set -euo pipefail

skip() { echo "SKIP: $*"; exit 77; }

[ "$(id -u)" = 0 ] || skip "needs root (libvirt qemu:///system)"
command -v qemu-system-x86_64 >/dev/null 2>&1 || skip "qemu-system-x86_64 not installed"
command -v libvirtd >/dev/null 2>&1 || skip "libvirtd not installed"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=${YUN_SOURCE_DIR:-$(cd "$HERE/../../.." && pwd)}

if [ -n "${YUN_TEST_DIR:-}" ]; then
    WORK=$YUN_TEST_DIR
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
fi

bash "$SRC/contrib/guest/mkguest.sh" --out "$WORK/guest"
bash "$SRC/contrib/guest/boot-check.sh" --dir "$WORK/guest"
echo "PASS: guest booted and powered off"
