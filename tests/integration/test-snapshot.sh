#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Server snapshots through the CLI only (`yun server image create`): a
# real scheduler and a real agent on libvirt's test:///default driver.
# The test driver keeps its volumes in memory, so there is no overlay on
# disk for qemu-img to copy: first the snapshot must fail cleanly (the
# image killed, the server's task ended with a fault, no copy left in the
# agent's state directory, the server usable again). Then the test puts
# the overlay a real pool would hold where the agent's record says it is
# (a qcow2 on the cached base, backing format stated) and the snapshot
# must become an active image whose bytes are a qcow2 without backing
# file, from which a server boots. Real guests do the same in
# tests/integration/test-guest-instance.sh.
set -euo pipefail
command -v jq >/dev/null || { echo "skip: no jq"; exit 77; }
command -v qemu-img >/dev/null || { echo "skip: no qemu-img"; exit 77; }
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

scheduler_setup
cat >>"$T/scheduler.conf" <<CONF
[compute]
agent_timeout_ms = 2000
sweep_interval_s = 1
CONF
issue_key operator admin
issue_key agent node1
start_scheduler
wait_for 10 yun flavor list || fail "the scheduler does not serve flavors"
start_agent node1
wait_for 20 host_is node1 up || fail "node1 never came up"
head -c 1M /dev/zero >"$T/disk.raw"
yun image create tiny --file "$T/disk.raw" --disk-format raw --public >/dev/null
yun server create vm --image tiny --flavor m1.nano --wait >/dev/null || fail "create"
pass "scheduler, agent, an ACTIVE server"

# --- State checks. -----------------------------------------------------------
yun server pause vm --wait >/dev/null || fail "pause"
set +e
out=$(yun server image create vm --name snap 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] && grep -q "ACTIVE or SHUTOFF" <<<"$out" ||
    fail "a snapshot of a PAUSED server: $rc $out"
yun server unpause vm --wait >/dev/null || fail "unpause"
set +e
out=$(yun server image create nosuch --name snap 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] && grep -q "not found" <<<"$out" || fail "a snapshot of no server: $rc $out"
pass "PAUSED and unknown servers refused"

# --- The image at once, then the agent's failure. ---------------------------
yun server image create vm --name snap -f json >"$T/snap.json" || fail "image create"
id=$(jq -r .id "$T/snap.json")
jq -e '.status == "queued" and .disk_format == "qcow2" and .visibility == "private"' \
    "$T/snap.json" >/dev/null || fail "not a queued private qcow2: $(cat "$T/snap.json")"
jq -e --arg vm "$(yun server show vm -f value -c id)" \
    '.properties.image_type == "snapshot" and .properties.instance_uuid == $vm' \
    "$T/snap.json" >/dev/null || fail "properties: $(cat "$T/snap.json")"
killed() { [ "$(yun image show "$id" -f value -c status)" = killed ]; }
wait_for 30 killed || fail "the snapshot image is $(yun image show "$id" -f value -c status)"
idle() { [ -z "$(yun server show vm -f value -c task_state)" ]; }
wait_for 10 idle || fail "the server's task did not end"
yun server show vm -f json | jq -e '.status == "ACTIVE" and (.fault.message | test("snapshot"))' \
    >/dev/null || fail "no fault: $(yun server show vm -f json)"
[ -z "$(ls -A "$T/agent-node1/snapshots")" ] || fail "a copy was left behind"
pass "the image is shown at once, then killed; the task ends with a fault; no copy left"

set +e
out=$(yun server image create vm --name snap2 --wait 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] && grep -q "is killed" <<<"$out" || fail "--wait on a failing snapshot: $rc $out"
pass "--wait reports the failure"

# --- A snapshot that works. -------------------------------------------------
vm=$(yun server show vm -f value -c id)
base=$(ls "$T"/agent-node1/images/)
[ "$(wc -w <<<"$base")" = 1 ] || fail "not one cached base: $base"
overlay=$T/agent-node1/instances/$vm.qcow2
qemu-img create -q -f qcow2 -F raw -b "$T/agent-node1/images/$base" "$overlay" 1G
qemu-io -f qcow2 -c "write -P 0x5a 0 64k" "$overlay" >/dev/null 2>&1 ||
    fail "cannot write into the overlay"
yun server image create vm --name good --wait -f json >"$T/good.json" ||
    fail "the snapshot failed: $(cat "$T/good.json")"
jq -e '.status == "active" and .detected_format == "qcow2" and .virtual_size == 1073741824' \
    "$T/good.json" >/dev/null || fail "not an active qcow2: $(cat "$T/good.json")"
[ -z "$(yun server show vm -f value -c task_state)" ] || fail "the task did not end"
[ -z "$(ls -A "$T/agent-node1/snapshots")" ] || fail "the copy was left behind"
yun image download good --file "$T/good.qcow2" >/dev/null || fail "download"
qemu-img info -f qcow2 --output=json "$T/good.qcow2" >"$T/info.json"
jq -e '.format == "qcow2" and (has("backing-filename") | not)' "$T/info.json" >/dev/null ||
    fail "not a qcow2 without backing file: $(cat "$T/info.json")"
qemu-img compare -f qcow2 -F qcow2 "$overlay" "$T/good.qcow2" >/dev/null ||
    fail "the snapshot's content differs from the disk's"
pass "a snapshot of an ACTIVE server: an active qcow2 without backing file, same content"

yun server create again --image good --flavor m1.nano --wait -f json >"$T/again.json" ||
    fail "no server boots from the snapshot: $(cat "$T/again.json")"
jq -e '.status == "ACTIVE"' "$T/again.json" >/dev/null || fail "$(cat "$T/again.json")"
yun server stop vm --wait >/dev/null || fail "the server is not usable after its snapshots"
pass "a server boots from the snapshot; the first one is usable"
