#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A real guest through the whole stack: a scheduler and an agent on
# libvirt qemu:///system (QEMU TCG), the tiny guest of contrib/guest/
# uploaded as three images (kernel aki, ramdisk ari, raw disk naming
# them), driven only through `yun`:
#   create --wait (ACTIVE; the disk is a qcow2 overlay on the cached base,
#   made through the storage pool) -> the console shows the guest booted ->
#   pause/unpause, suspend/resume (managed save) -> stop (ACPI, SHUTOFF
#   without a forced power-off) -> start (ACTIVE, boots again) -> a reboot
#   from inside the guest (SysRq b) never shows as stopped -> a soft reboot
#   -> a snapshot of the running guest (`yun server image create --wait`:
#   an active qcow2 without backing file that names the same kernel and
#   ramdisk) boots a second guest -> the agent SIGKILLed and restarted (the
#   guest runs on, the agent takes it back) -> the guest powers itself off
#   (ACPI from outside yun): SHUTOFF with nobody asking -> delete: no domain, volume or file of it is left, the
#   images stay cached unused.
# (No `cmd | grep -q` here: with pipefail, the writer's SIGPIPE fails it.)
# Prints the agent's create-to-running time and the overlay's creation
# time. Exit 77 unless root with libvirtd, virsh and qemu-system-x86_64
# (CI runs it as root with libvirtd started).
set -euo pipefail

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (libvirt qemu:///system)"
for t in qemu-system-x86_64 libvirtd virtlogd virsh qemu-img jq; do
    command -v "$t" >/dev/null 2>&1 || skip "$t not installed"
done
S=${YUN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
grep -q OP_SERVER_CREATE "$S/scheduler/dispatch.c" || skip "the scheduler has no servers yet"

# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
URI=qemu:///system
POOL=yun-test-$$
BOOT_TIMEOUT=${YUN_GUEST_BOOT_TIMEOUT:-180}

# libvirtd as boot-check.sh starts it (no systemd here); left running.
pgrep -x virtlogd >/dev/null 2>&1 || virtlogd -d
pgrep -x libvirtd >/dev/null 2>&1 || libvirtd -d
wait_for 60 virsh -c "$URI" uri || skip "libvirtd does not answer on $URI"

# QEMU runs as libvirt-qemu: the agent's state must be reachable by it.
STATE=$T/agent-node1
if id libvirt-qemu >/dev/null 2>&1 && ! runuser -u libvirt-qemu -- test -x "$T"; then
    STATE=$(mktemp -d /var/lib/libvirt/images/yun-test-instance.XXXXXX)
fi

SERVER_ID=""
SERVER2_ID=""
CACHED_IMAGES=3
guest_cleanup() {
    local rc=$? id
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for id in "$SERVER_ID" "$SERVER2_ID"; do
        if [ -n "$id" ] && virsh -c "$URI" domstate "yun-$id" >/dev/null 2>&1; then
            virsh -c "$URI" destroy "yun-$id" >/dev/null 2>&1 || true
            virsh -c "$URI" undefine --managed-save --nvram "yun-$id" >/dev/null 2>&1 || true
        fi
    done
    virsh -c "$URI" pool-destroy "$POOL" >/dev/null 2>&1 || true
    virsh -c "$URI" pool-undefine "$POOL" >/dev/null 2>&1 || true
    case $STATE in /var/lib/libvirt/images/yun-test-instance.*) rm -rf "$STATE" ;; esac
    exit $rc
}
trap guest_cleanup EXIT

# Builds (or reuses) the guest in the test's directory.
bash "$S/contrib/guest/mkguest.sh" --out "$T/guest" >"$T/mkguest.log" 2>&1 ||
    fail "mkguest.sh failed: $(tail -5 "$T/mkguest.log")"

scheduler_setup
issue_key agent node1
issue_key operator admin
start_scheduler
wait_for 10 yun flavor list || fail "the scheduler did not start"
AGENT_ARGS=(-s "agent.state_dir=$STATE" -s "libvirt.uri=$URI" -s libvirt.virt_type=qemu
    -s "libvirt.storage_pool=$POOL" -s agent.request_timeout_ms=5000)
start_agent node1 "${AGENT_ARGS[@]}"
wait_for 30 host_is node1 up || fail "node1 never came up"
LOG=$T/agent-node1.log

yun_domains() { virsh -c "$URI" list --all --name | grep '^yun-' | sort || true; }
pool_volumes() { virsh -c "$URI" vol-list "$POOL" 2>/dev/null | awk 'NR > 2 && NF { print $1 }' | sort; }
instance_files() { find "$STATE/instances" -mindepth 1 2>/dev/null | sort; }
domains_before=$(yun_domains)
volumes_before=$(pool_volumes)
files_before=$(instance_files)

# --- Images: kernel, ramdisk, and the disk that names them. ------------------
G=$T/guest
kernel=$(yun image create guest-kernel --file "$G/vmlinuz" --disk-format aki \
    --container-format aki -f value -c id)
ramdisk=$(yun image create guest-ramdisk --file "$G/initrd.img" --disk-format ari \
    --container-format ari -f value -c id)
disk=$(yun image create guest-disk --file "$G/disk.raw" --disk-format raw \
    --property "kernel_id=$kernel" --property "ramdisk_id=$ramdisk" \
    --property "os_command_line=console=ttyS0 panic=-1 yun.hostname=vm1" -f value -c id)
pass "kernel, ramdisk and disk images uploaded"

status_is() { [ "$(yun server show vm1 -f value -c status 2>/dev/null)" = "$1" ]; }
console_count() { yun server console vm1 --lines 2000 2>/dev/null | grep -c "$1" || true; }
console_has_n() { [ "$(console_count "$1")" -ge "$2" ]; }
events_since() { tail -n +"$1" "$LOG" | grep -o 'event=[a-z_]* power' | sed 's/ power//' || true; }

# --- Create: ACTIVE, the console shows the guest's kernel. -------------------
yun server create vm1 --image guest-disk --flavor m1.nano --wait >/dev/null ||
    fail "server create failed: $(yun server show vm1 -f json 2>&1 | jq -c .fault)"
SERVER_ID=$(yun server show vm1 -f value -c id)
status_is ACTIVE || fail "vm1 is $(yun server show vm1 -f value -c status), not ACTIVE"
[ "$(yun_domains | grep -c "yun-$SERVER_ID")" = 1 ] || fail "no domain yun-$SERVER_ID"
grep -q '^Persistent: *yes' <<<"$(virsh -c "$URI" dominfo "yun-$SERVER_ID")" ||
    fail "the domain is not persistent"
overlay=$(virsh -c "$URI" domblklist "yun-$SERVER_ID" | awk '$1 == "vda" { print $2 }')
[ "$overlay" = "$STATE/instances/$SERVER_ID.qcow2" ] || fail "the disk is '$overlay'"
qemu-img info -U --output=json "$overlay" >"$T/overlay.json"
jq -e '.format == "qcow2" and (."backing-filename" | test("/images/[0-9a-f]{128}$"))
       and ."backing-filename-format" == "raw"' "$T/overlay.json" >/dev/null ||
    fail "the disk is not a qcow2 overlay on the cached base: $(cat "$T/overlay.json")"
grep -qx "$SERVER_ID.qcow2" <<<"$(pool_volumes)" || fail "the pool does not list the overlay"
pass "server ACTIVE: persistent domain, qcow2 overlay on the cached raw base, in pool $POOL"

wait_for "$BOOT_TIMEOUT" console_has_n "yun-guest: booted kernel" 1 ||
    fail "the console never showed the guest's banner: $(yun server console vm1 --lines 20)"
wait_for 60 console_has_n "yun-guest: ready" 1 || fail "the guest never got ready"
grep -q "yun-guest: hostname vm1" <<<"$(yun server console vm1 --lines 100)" ||
    fail "the guest did not get the image's kernel command line"
pass "the console shows the guest booted ('yun server console')"

# --- Pause, unpause, suspend (managed save), resume. --------------------------
yun server pause vm1 --wait >/dev/null && status_is PAUSED || fail "pause"
yun server unpause vm1 --wait >/dev/null && status_is ACTIVE || fail "unpause"
yun server suspend vm1 --wait >/dev/null && status_is SUSPENDED || fail "suspend"
grep -q 'shut off (saved)' <<<"$(virsh -c "$URI" domstate --reason "yun-$SERVER_ID")" ||
    fail "suspend did not make a managed save"
yun server resume vm1 --wait >/dev/null && status_is ACTIVE || fail "resume"
[ "$(yun server show vm1 -f value -c power_state)" = running ] || fail "not running after resume"
pass "pause/unpause and suspend/resume (managed save)"

# --- Stop: ACPI, graceful; start boots again. -------------------------------------
boots=$(console_count "yun-guest: booted kernel")
yun server stop vm1 --wait >/dev/null || fail "stop failed"
status_is SHUTOFF || fail "vm1 is not SHUTOFF after stop"
grep -q 'shut off' <<<"$(virsh -c "$URI" domstate "yun-$SERVER_ID")" || fail "the domain still runs"
grep -q 'guest did not shut down' "$LOG" && fail "the stop was not graceful (powered off)"
yun server start vm1 --wait >/dev/null && status_is ACTIVE || fail "start failed"
wait_for "$BOOT_TIMEOUT" console_has_n "yun-guest: booted kernel" $((boots + 1)) ||
    fail "the guest did not boot again after start"
wait_for 60 console_has_n "yun-guest: ready" $((boots + 1)) || fail "not ready after start"
pass "stop (graceful ACPI shutdown) -> SHUTOFF, start -> ACTIVE and boots"

# --- A reboot from inside the guest is a reboot, never a stop. --------------------
boots=$(console_count "yun-guest: booted kernel")
mark=$(($(wc -l <"$LOG") + 1))
virsh -c "$URI" send-key "yun-$SERVER_ID" KEY_LEFTALT KEY_SYSRQ KEY_B >/dev/null
seen_stopped=0
for _ in $(seq $((BOOT_TIMEOUT * 5))); do
    status_is ACTIVE || seen_stopped=1
    console_has_n "yun-guest: booted kernel" $((boots + 1)) && break
    sleep 0.2
done
console_has_n "yun-guest: booted kernel" $((boots + 1)) || fail "the guest did not reboot"
sleep 2
[ $seen_stopped = 0 ] || fail "the server left ACTIVE during a guest reboot"
events=$(events_since "$mark")
grep -q 'event=stopped' <<<"$events" && fail "a guest reboot was reported as stopped: $events"
grep -q 'event=rebooted' <<<"$events" || fail "the guest reboot was not reported: $events"
pass "a reboot inside the guest stays ACTIVE and is reported as 'rebooted' ($(tr '\n' ' ' <<<"$events"))"
wait_for 60 console_has_n "yun-guest: ready" $((boots + 1)) || fail "not ready after reboot"

# --- Soft reboot through yun. ---------------------------------------------------------
boots=$(console_count "yun-guest: booted kernel")
yun server reboot vm1 --wait >/dev/null && status_is ACTIVE || fail "reboot failed"
wait_for "$BOOT_TIMEOUT" console_has_n "yun-guest: booted kernel" $((boots + 1)) ||
    fail "the guest did not boot again after 'yun server reboot'"
wait_for 60 console_has_n "yun-guest: ready" $((boots + 1)) || fail "not ready after reboot"
pass "soft reboot (ACPI) -> ACTIVE, the guest booted again"

# --- A snapshot of the running guest boots a second guest. -------------------------
boots=$(console_count "yun-guest: booted kernel")
yun server image create vm1 --name vm1-snap --wait -f json >"$T/snap.json" ||
    fail "the snapshot failed: $(cat "$T/snap.json")"
jq -e --arg k "$kernel" --arg r "$ramdisk" --arg d "$disk" --arg vm "$SERVER_ID" \
    '.status == "active" and .disk_format == "qcow2" and .detected_format == "qcow2"
     and .properties.image_type == "snapshot" and .properties.instance_uuid == $vm
     and .properties.base_image_ref == $d and .properties.kernel_id == $k
     and .properties.ramdisk_id == $r' "$T/snap.json" >/dev/null ||
    fail "not the expected snapshot: $(cat "$T/snap.json")"
status_is ACTIVE || fail "vm1 is not ACTIVE after its snapshot"
[ -z "$(yun server show vm1 -f value -c task_state)" ] || fail "the snapshot's task is still set"
[ "$(yun server show vm1 -f value -c power_state)" = running ] || fail "vm1 was not resumed"
[ "$(console_count "yun-guest: booted kernel")" = "$boots" ] || fail "the snapshot restarted vm1"
[ -z "$(ls -A "$STATE/snapshots")" ] ||
    fail "the snapshot's copy was left: $(ls "$STATE/snapshots")"
yun image download vm1-snap --file "$T/snap.qcow2" >/dev/null || fail "download"
qemu-img info -f qcow2 --output=json "$T/snap.qcow2" >"$T/snap-info.json"
jq -e '.format == "qcow2" and (has("backing-filename") | not)' "$T/snap-info.json" \
    >/dev/null || fail "not a qcow2 without backing file: $(cat "$T/snap-info.json")"
qemu-img check -q -f qcow2 "$T/snap.qcow2" || fail "qemu-img check refuses the snapshot"
pass "snapshot of the running guest: an active qcow2 without backing file, same kernel and ramdisk"

console2_has() { yun server console vm2 --lines 2000 2>/dev/null | grep -c "$1" >/dev/null; }
yun server create vm2 --image vm1-snap --flavor m1.nano --wait >/dev/null ||
    fail "no server boots from the snapshot: $(yun server show vm2 -f json 2>&1 | jq -c .fault)"
SERVER2_ID=$(yun server show vm2 -f value -c id)
wait_for "$BOOT_TIMEOUT" console2_has "yun-guest: booted kernel" ||
    fail "the snapshot's guest never booted: $(yun server console vm2 --lines 20)"
wait_for 60 console2_has "yun-guest: ready" || fail "the snapshot's guest never got ready"
yun server delete vm2 --wait >/dev/null || fail "deleting vm2 failed"
wait_for 30 sh -c "! virsh -c $URI domstate yun-$SERVER2_ID" || fail "vm2's domain is still defined"
CACHED_IMAGES=4
pass "a second guest boots from the snapshot (console), and is deleted"

# --- The agent SIGKILLed and started again: the guest runs on, untouched. ------------
boots=$(console_count "yun-guest: booted kernel")
kill -KILL "$AGENT_PID"
wait "$AGENT_PID" 2>/dev/null || true # gone, and its locks with it
mark=$(($(wc -l <"$LOG") + 1))
start_agent node1 "${AGENT_ARGS[@]}"
synced_since() { tail -n +"$1" "$LOG" | grep -q 'instance sync answered'; }
wait_for 30 synced_since "$mark" || fail "no sync after the restart"
# (Other "yun-" domains may exist on a shared libvirtd: other agents'.)
grep -q "instances reconciled records=1 .*active=1 " <<<"$(tail -n +"$mark" "$LOG")" ||
    fail "the restarted agent did not find its instance"
status_is ACTIVE || fail "vm1 is not ACTIVE after the agent's restart"
[ "$(console_count "yun-guest: booted kernel")" = "$boots" ] || fail "the guest was restarted"
yun server pause vm1 --wait >/dev/null && yun server unpause vm1 --wait >/dev/null ||
    fail "the restarted agent does not command its instance"
pass "agent SIGKILLed and restarted: the guest ran on, the agent took it back"

# --- The guest powers itself off: SHUTOFF without anyone asking yun. ----------------
virsh -c "$URI" shutdown "yun-$SERVER_ID" --mode acpi >/dev/null
wait_for 90 status_is SHUTOFF || fail "a guest that powered off is still $(yun server show vm1 -f value -c status)"
[ "$(yun server show vm1 -f value -c task_state)" = "" ] || fail "a task is set"
pass "a guest that powers itself off becomes SHUTOFF by itself"

# --- Delete: nothing of it is left. -------------------------------------------------------
yun server delete vm1 --wait >/dev/null || fail "delete failed"
wait_for 30 sh -c "! virsh -c $URI domstate yun-$SERVER_ID" || fail "the domain is still defined"
# Only ours is checked: other tests may run guests on this libvirtd.
grep -q "yun-$SERVER_ID" <<<"$(yun_domains)" && fail "domain left: yun-$SERVER_ID"
domains_after=$(yun_domains)
[ "$(pool_volumes)" = "$volumes_before" ] || fail "volumes left: $(pool_volumes)"
[ "$(instance_files)" = "$files_before" ] || fail "files left: $(instance_files)"
yun server list -f json | jq -e 'length == 0' >/dev/null || fail "the server is still listed"
images_unused() {
    local unused
    unused=$(yun host show node1 -f json | jq '[.cached_images[] | select(.users == 0)] | length')
    [ "$unused" = "$CACHED_IMAGES" ]
}
# The host shows the cache as its last heartbeat reported it.
wait_for 10 images_unused ||
    fail "the images are not cached unused: $(yun host show node1 -f json | jq -c .cached_images)"
pass "delete: no domain, volume or file left (yun- domains before: '$domains_before', after: '$domains_after'; pool volumes before: '$volumes_before', after: '$(pool_volumes)'; files under instances/ the same); images cached, unused"

# --- Figures. ----------------------------------------------------------------------------
line=$(grep 'msg="instance spawned' "$LOG" | head -1)
disk_ms=$(sed -n 's/.*disk_ms=\([0-9.]*\).*/\1/p' <<<"$line")
total_ms=$(sed -n 's/.*total_ms=\([0-9]*\).*/\1/p' <<<"$line")
define_ms=$(sed -n 's/.*define_ms=\([0-9.]*\).*/\1/p' <<<"$line")
start_ms=$(sed -n 's/.*start_ms=\([0-9.]*\).*/\1/p' <<<"$line")
echo "figures: overlay disk created in ${disk_ms} ms (target < 20 ms); define ${define_ms} ms;" \
    "virDomainCreate ${start_ms} ms; spawn accepted -> running ${total_ms} ms (first spawn:" \
    "includes fetching the three images)"
