#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench-compute.sh: the compute figures of the agent.
#
#   YUN_BUILD_DIR=build-rel tests/bench/bench-compute.sh [--guest DIR]
#
# 1. yun-agent's memory: a real scheduler and agent (libvirt
#    test:///default, as the integration tests run them), the agent's RSS
#    once registered and idle, then with 20 instances (m1.nano) ACTIVE;
#    with its private memory (what is not shared-library pages) beside.
#    Targets: RSS <= 8 MiB idle, <= 16 MiB with 20 instances.
# 2. bench-compute: the memory floor of the libraries yun-agent links,
#    the instance disk's creation time (qcow2 overlay through the storage
#    pool; target < 20 ms whatever the base's size), and with --guest DIR
#    (contrib/guest/mkguest.sh's output; root, qemu:///system) a real TCG
#    guest's create-to-running through the agent next to `virsh create`
#    (target: within 50 ms).
# Use a Release build: sanitizers multiply the memory.
set -euo pipefail
GUEST=()
[ "${1:-}" = --guest ] && [ -n "${2:-}" ] && GUEST=(--guest "$2")
export YUN_BUILD_DIR=${YUN_BUILD_DIR:?set YUN_BUILD_DIR to a Release build}
export YUN_TEST_DIR=${YUN_TEST_DIR:-$(mktemp -d /tmp/yun-bench-compute.XXXXXX)}
# shellcheck source=../integration/lib.sh
source "$(dirname "$0")/../integration/lib.sh"

mem() { # PID -> "RSS x MiB, private y MiB (anon z MiB)"
    awk '/^Rss:/ { r = $2 } /^Private_Clean:/ { pc = $2 } /^Private_Dirty:/ { pd = $2 }
         /^Anonymous:/ { a = $2 }
         END { printf "RSS %5.1f MiB   private %4.1f MiB   anonymous %4.1f MiB",
               r / 1024, (pc + pd) / 1024, a / 1024 }' "/proc/$1/smaps_rollup"
}

scheduler_setup
issue_key agent node1
issue_key operator admin
start_scheduler
wait_for 10 yun flavor list || fail "the scheduler did not start"
start_agent node1 -s agent.log_level=info
wait_for 15 host_is node1 up || fail "the agent did not register"
sleep 2
echo "yun-agent memory (test:///default):"
echo "  idle, registered:        $(mem "$AGENT_PID")"
head -c 1M /dev/zero >"$T/disk.raw"
yun image create tiny --file "$T/disk.raw" --disk-format raw >/dev/null
yun server create bench --image tiny --flavor m1.nano --count 20 --wait >/dev/null ||
    fail "20 servers did not become ACTIVE"
sleep 2
echo "  20 instances ACTIVE:     $(mem "$AGENT_PID")"
kill -TERM "$AGENT_PID" "$SCHED_PID" 2>/dev/null || true
wait 2>/dev/null || true

"$YUN_BUILD_DIR/tests/bench/bench-compute" "${GUEST[@]}" 2>/dev/null | grep -v 'level='
