#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Compute through the CLI only: a real scheduler and two real agents on
# libvirt's test:///default driver. Many servers are created and spread over
# both hosts, listed, stopped, started, rebooted and deleted; an agent
# SIGKILLed in the middle of spawns and started again leaves no server stuck
# in BUILD and no capacity leaked; so does the scheduler SIGKILLed in the
# middle of a multiple create. "No capacity leaked" is checked from outside:
# once everything is deleted, the largest create that fits before fits again.
# Skipped (77) until the agent serves OP_AGENT_SPAWN (the agent side of the
# compute issue).
# Each agent serves its commands on its own ipc:// socket (agent.listen_url)
# and keeps its disks in its own libvirt pool.
set -euo pipefail
src=${YUN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
if ! grep -q OP_AGENT_SPAWN "$src"/agent/*.c 2>/dev/null; then
    echo "skip: the agent does not serve OP_AGENT_SPAWN yet"
    exit 77
fi
command -v jq >/dev/null || { echo "skip: no jq"; exit 77; }
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"


scheduler_setup
cat >>"$T/scheduler.conf" <<CONF
[compute]
agent_timeout_ms = 2000
spawn_timeout_s = 20
action_timeout_s = 30
sweep_interval_s = 1
max_instances_per_project = 1000
CONF
issue_key operator admin
issue_key agent node1
issue_key agent node2
# lib.sh logs the CLI in as the admin scheduler_setup made.
start_scheduler
wait_for 10 yun flavor list || fail "the scheduler does not serve flavors"

start_node() { # NAME
    start_agent "$1" -s "agent.listen_url=ipc://$T/$1.cmd" -s "libvirt.storage_pool=yun-$1"
    eval "PID_$1=$AGENT_PID"
}
start_node node1
start_node node2
wait_for 20 host_is node1 up || fail "node1 never came up"
wait_for 20 host_is node2 up || fail "node2 never came up"

head -c 1M /dev/zero >"$T/disk.raw"
yun image create tiny --file "$T/disk.raw" --disk-format raw --public >/dev/null
pass "scheduler, two agents, an image"

count_status() { # STATUS -> how many of the project's servers
    yun server list --status "$1" -f json | jq length
}
no_build_left() { [ "$(count_status BUILD)" = 0 ] && [ "$(count_status REBUILD)" = 0 ]; }
delete_all() {
    local ids
    ids=$(yun server list -f value -c id)
    [ -z "$ids" ] && return 0
    # shellcheck disable=SC2086
    yun server delete $ids --wait >/dev/null || fail "deleting everything failed"
}
# How many m1.nano fit now: both hosts' RAM after the reservation.
capacity() {
    local total=0 mem
    for h in node1 node2; do
        mem=$(yun host show "$h" -f value -c memory_mb)
        total=$((total + (mem - 512) / 128))
    done
    echo "$total"
}
CAP=$(capacity)
[ "$CAP" -ge 4 ] || fail "the test hosts hold only $CAP m1.nano"

# --- Many servers, spread over both hosts. ---------------------------------
N=$((CAP < 20 ? CAP : 20))
yun server create web --image tiny --flavor m1.nano --count "$N" --wait -f json \
    >"$T/create.json" || fail "create --count $N --wait failed: $(cat "$T/create.json")"
[ "$(jq length "$T/create.json")" = "$N" ] || fail "not $N servers"
jq -e 'all(.[]; .status == "ACTIVE" and .power_state == "running")' "$T/create.json" \
    >/dev/null || fail "not all ACTIVE"
hosts=$(yun server list -f json | jq '[.[].host_name] | unique | length')
[ "$hosts" = 2 ] || fail "servers on $hosts hosts, not spread over 2"
pass "$N servers ACTIVE over both hosts"

yun server stop web-1 --wait || fail "stop"
[ "$(yun server show web-1 -f value -c status)" = SHUTOFF ] || fail "not SHUTOFF"
yun server start web-1 --wait || fail "start"
yun server reboot web-1 --wait || fail "reboot"
yun server reboot web-1 --hard --wait || fail "hard reboot"
[ "$(yun server show web-1 -f value -c status)" = ACTIVE ] || fail "not ACTIVE"
set +e
out=$(yun server start web-1 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] && grep -q YUN_E_CONFLICT <<<"$out" || fail "start of an ACTIVE server: $rc $out"
# A deleted server's name is free again; its id still shows the tombstone.
id2=$(yun server show web-2 -f value -c id)
yun server delete web-2 --wait || fail "delete"
[ "$(yun server show "$id2" -f value -c status)" = DELETED ] || fail "not DELETED"
pass "stop, start, reboot, hard reboot, wrong-state start refused, delete"

delete_all
yun server create full --image tiny --flavor m1.nano --count "$CAP" --wait >/dev/null ||
    fail "the whole capacity ($CAP) does not fit an empty cloud"
delete_all
pass "the whole capacity fits"

# --- An agent SIGKILLed in the middle of spawns. ---------------------------
yun server create chaos --image tiny --flavor m1.nano --count 8 >/dev/null
kill -KILL "$PID_node1"
sleep 1
start_node node1
wait_for 20 host_is node1 up || fail "node1 did not come back"
wait_for 60 no_build_left || fail "servers stuck in BUILD after the agent restarted"
delete_all
yun server create full --image tiny --flavor m1.nano --count "$CAP" --wait >/dev/null ||
    fail "capacity leaked after an agent was killed mid-spawn"
delete_all
pass "agent SIGKILLed mid-spawn: nothing stuck in BUILD, no claim leaked"

# --- The scheduler SIGKILLed in the middle of a create. --------------------
YUN_KEY_FILE=$T/admin.key "$B/cli/yun" server create crash \
    --image tiny --flavor m1.nano --count "$N" >/dev/null 2>&1 &
cli_pid=$!
sleep 0.2
kill -KILL "$SCHED_PID"
# Gone for good before the next one binds its address (EADDRINUSE else).
wait "$SCHED_PID" 2>/dev/null || true
wait "$cli_pid" 2>/dev/null || true
start_scheduler
wait_for 20 yun server list || fail "the scheduler did not come back"
wait_for 60 no_build_left || fail "servers stuck in BUILD after the scheduler restarted"
delete_all
yun server create full --image tiny --flavor m1.nano --count "$CAP" --wait >/dev/null ||
    fail "capacity leaked after the scheduler was killed mid-create"
delete_all
pass "scheduler SIGKILLed mid-create: nothing stuck in BUILD, no claim leaked"
