#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Real guests on a yun network, end to end, driven only through `yun`: a
# scheduler and an agent on libvirt qemu:///system (QEMU TCG) wiring its
# networks for real in this machine's namespace: network net1 (VXLAN) with
# subnet 10.62.0.0/24, its gateway on this host through a router port, SSH
# and ping allowed into the default group, keypair 'demo'. Two servers boot
# the tiny guest of contrib/guest on net1 with that key:
#   - each takes the address 'server show' lists by DHCP, its key and
#     hostname from the metadata service, and answers `ssh root@ADDRESS
#     hostname` from this host with its own name;
#   - the metadata service tells each guest its own instance id;
#   - the guests ping each other (the default group lets its members in);
#   - a group 'web' with no rule put on vm2's port shuts vm1 out, a rule
#     added to it lets vm1's pings in within seconds, its deletion shuts
#     them out again, while vm2 keeps reaching vm1 all along;
#   - vm1 cannot open a connection to the host on its gateway address (the
#     host routes for the guests; it does not serve them), but pings it;
#   - vm1 sending from an address that is not its own is dropped;
#   - deleting the servers, the router port and the network leaves no tap,
#     bridge, nftables chain, DHCP namespace or dnsmasq behind.
# Exit 77 unless root with libvirtd, QEMU, ssh, dnsmasq and nft.
# (No `cmd | grep -q` here: with pipefail, the writer's SIGPIPE fails it.)
set -euo pipefail

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (libvirt qemu:///system, links, nftables)"
for t in qemu-system-x86_64 libvirtd virtlogd virsh jq ssh ssh-keygen nft ip /usr/sbin/dnsmasq; do
    command -v "$t" >/dev/null 2>&1 || skip "$t not installed"
done
[ -e /usr/sbin/dropbear ] || skip "dropbear-bin not installed (the guest's SSH server)"
S=${YUN_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}

# shellcheck source=../lib.sh
source "$S/tests/integration/lib.sh"
URI=qemu:///system
POOL=yun-test-net-$$
BOOT_TIMEOUT=${YUN_GUEST_BOOT_TIMEOUT:-240}

pgrep -x virtlogd >/dev/null 2>&1 || virtlogd -d
pgrep -x libvirtd >/dev/null 2>&1 || libvirtd -d
wait_for 60 virsh -c "$URI" uri || skip "libvirtd does not answer on $URI"

STATE=$T/agent-node1
if id libvirt-qemu >/dev/null 2>&1 && ! runuser -u libvirt-qemu -- test -x "$T"; then
    STATE=$(mktemp -d /var/lib/libvirt/images/yun-test-network.XXXXXX)
fi

net_cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    local d
    for d in $(virsh -c "$URI" list --all --name 2>/dev/null | grep '^yun-' || true); do
        if [ -n "${IDS:-}" ] && grep -q -- "${d#yun-}" <<<"$IDS"; then
            virsh -c "$URI" destroy "$d" >/dev/null 2>&1 || true
            virsh -c "$URI" undefine --managed-save --nvram "$d" >/dev/null 2>&1 || true
        fi
    done
    virsh -c "$URI" pool-destroy "$POOL" >/dev/null 2>&1 || true
    virsh -c "$URI" pool-undefine "$POOL" >/dev/null 2>&1 || true
    # What a failed run may leave of this test's network.
    if [ -n "${NET_ID:-}" ]; then
        local short=${NET_ID//-/}
        ip link del "ybr-${short:0:11}" 2>/dev/null || true
        ip link del "ydh-${short:0:11}" 2>/dev/null || true
        ip netns del "yun-dhcp-$NET_ID" 2>/dev/null || true
        pkill -f "dnsmasq.*$T/" 2>/dev/null || true
    fi
    for l in ${TAPS:-}; do ip link del "$l" 2>/dev/null || true; done
    case $STATE in /var/lib/libvirt/images/yun-test-network.*) rm -rf "$STATE" ;; esac
    exit $rc
}
trap net_cleanup EXIT
# A test killed from outside (ctest's timeout) cleans up too.
trap 'exit 143' TERM INT

bash "$S/contrib/guest/mkguest.sh" --out "$T/guest" >"$T/mkguest.log" 2>&1 ||
    fail "mkguest.sh failed: $(tail -5 "$T/mkguest.log")"

scheduler_setup
issue_key agent node1
issue_key operator admin
start_scheduler
wait_for 10 yun flavor list || fail "the scheduler did not start"
start_agent node1 -s "agent.state_dir=$STATE" -s "libvirt.uri=$URI" -s libvirt.virt_type=qemu \
    -s "libvirt.storage_pool=$POOL" -s agent.request_timeout_ms=5000 \
    -s network.enabled=true -s "network.run_dir=$T/netrun" -s agent.heartbeat_interval_s=2
wait_for 30 host_is node1 up || fail "node1 never came up"

G=$T/guest
kernel=$(yun image create net-kernel --file "$G/vmlinuz" --disk-format aki \
    --container-format aki -f value -c id)
ramdisk=$(yun image create net-ramdisk --file "$G/initrd.img" --disk-format ari \
    --container-format ari -f value -c id)
yun image create net-disk --file "$G/disk.raw" --disk-format raw \
    --property "kernel_id=$kernel" --property "ramdisk_id=$ramdisk" \
    --property "os_command_line=console=ttyS0 panic=-1" >/dev/null

# --- The network, its gateway on this host, the rules, the key. ----------------
NET_ID=$(yun network create net1 -f value -c id)
yun subnet create sub1 --network net1 --subnet-range 10.62.0.0/24 --gateway 10.62.0.1 >/dev/null
yun port create gw1 --network net1 --device-owner network:router_interface --host node1 \
    --no-security-group --fixed-ip subnet=sub1,ip-address=10.62.0.1 >/dev/null
yun security group rule create default --protocol tcp --dst-port 22 >/dev/null
yun security group rule create default --protocol icmp >/dev/null
(umask 077 && yun keypair create demo >"$T/demo.pem")
short=${NET_ID//-/}
BR=ybr-${short:0:11}
wait_for 20 ip -4 addr show dev "$BR" || fail "no bridge $BR"
[ "$(ip -4 -o addr show dev "$BR" | awk '{ print $4 }')" = 10.62.0.1/24 ] ||
    fail "the gateway is not on $BR: $(ip -4 -o addr show dev "$BR")"
pass "network net1: bridge $BR carries the gateway 10.62.0.1/24 of the router port"

# --- Two servers on it. ------------------------------------------------------
IDS=""
for v in vm1 vm2; do
    id=$(yun server create "$v" --image net-disk --flavor m1.nano --key-name demo \
        --network net1 -f value -c id) || fail "server create $v failed"
    IDS="$IDS $id"
done
status_is() { [ "$(yun server show "$1" -f value -c status 2>/dev/null)" = "$2" ]; }
for v in vm1 vm2; do
    wait_for "$BOOT_TIMEOUT" status_is "$v" ACTIVE ||
        fail "$v is $(yun server show "$v" -f value -c status): $(yun server show "$v" -f json | jq -c .fault)"
done
ip_of() { yun server show "$1" -f json | jq -r '.addresses[0].ip_address // empty'; }
IP1=$(ip_of vm1)
IP2=$(ip_of vm2)
[[ $IP1 == 10.62.0.* && $IP2 == 10.62.0.* && $IP1 != "$IP2" ]] ||
    fail "addresses: vm1 '$IP1', vm2 '$IP2'"
# The taps the agent made for them: "ytap" + the port id's first 11 hex digits.
TAPS=$(yun port list --network net1 -f json |
    jq -r '.[] | select(.device_owner | startswith("compute:")) | .id | gsub("-"; "") | "ytap" + .[0:11]')
[ "$(wc -w <<<"$TAPS")" = 2 ] || fail "not two instance ports on net1: $TAPS"
for t in $TAPS; do ip link show "$t" >/dev/null 2>&1 || fail "no tap $t"; done
pass "vm1 and vm2 ACTIVE on net1 at $IP1 and $IP2"

console_has() { yun server console "$1" --lines 400 2>/dev/null | grep -c "$2" >/dev/null; }
for v in vm1 vm2; do
    wait_for "$BOOT_TIMEOUT" console_has "$v" "yun-guest: sshd up" ||
        fail "$v never started its SSH server: $(yun server console "$v" --lines 30)"
done
[ "$(yun server console vm1 --lines 400 | sed -n 's/.*yun-guest: ip //p' | tail -1 | tr -d '\r')" = "$IP1" ] ||
    fail "vm1's DHCP address is not $IP1: $(yun server console vm1 --lines 400 | grep 'yun-guest: ip')"
pass "both guests took their addresses by DHCP and started SSH"

gssh() { # SERVER_IP COMMAND...
    ssh -i "$T/demo.pem" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o ConnectTimeout=10 -o BatchMode=yes -o LogLevel=ERROR "root@$1" "${@:2}"
}
for pair in "vm1 $IP1" "vm2 $IP2"; do
    set -- $pair
    name=""
    # dropbear's first key exchange under TCG on a loaded machine is slow.
    for i in $(seq 40); do name=$(gssh "$2" hostname 2>"$T/ssh.err") && break; sleep 2; done
    [ "$name" = "$1" ] ||
        fail "ssh root@$2 hostname printed '$name', not '$1': $(tail -3 "$T/ssh.err")"
    id=$(yun server show "$1" -f value -c id)
    got=$(gssh "$2" wget -q -O- http://169.254.169.254/latest/meta-data/instance-id)
    [ "$got" = "$id" ] || fail "the metadata service told $1 it is '$got', not '$id'"
done
pass "ssh -i demo.pem root@ADDRESS hostname prints each guest's name; metadata tells each its own id"

# --- Guest to guest, and a rule opened and closed live. -------------------------
# reach FROM_IP TO_IP: "yes" or "no" as the guest at FROM_IP saw its ping
# to TO_IP; nothing when SSH itself failed, which is neither.
reach() { gssh "$1" "ping -c 1 -W 2 $2 >/dev/null 2>&1 && echo yes || echo no" 2>/dev/null; }
pings() { [ "$(reach "$1" "$2")" = yes ]; }
blocked() { [ "$(reach "$1" "$2")" = no ]; }
pings "$IP1" "$IP2" || fail "vm1 cannot ping vm2 (same default group)"
pings "$IP2" "$IP1" || fail "vm2 cannot ping vm1"
pass "the guests reach each other (the default group lets its members in)"

yun security group create web >/dev/null
PORT2=$(yun server show vm2 -f json | jq -r '.addresses[0].port_id')
yun port set "$PORT2" --security-group web >/dev/null
wait_for 20 blocked "$IP1" "$IP2" || fail "vm2 in group 'web' (no rule) still answers vm1's pings"
pings "$IP2" "$IP1" || fail "vm2 lost its way to vm1 when its own group changed"
# Echo requests by type, any code: the agent must not read the type as a code.
RULE=$(yun security group rule create web --protocol icmp --icmp-type 8 --remote-ip 10.62.0.0/24 \
    -f value -c id)
wait_for 20 pings "$IP1" "$IP2" || fail "the icmp rule added to 'web' did not let vm1 in"
yun security group rule delete "$RULE" >/dev/null
wait_for 20 blocked "$IP1" "$IP2" || fail "deleting the rule did not shut vm1 out again"
pings "$IP2" "$IP1" || fail "vm2 -> vm1 broke while vm2's rules changed"
yun port set "$PORT2" --security-group default >/dev/null
wait_for 20 pings "$IP1" "$IP2" || fail "back in 'default', vm2 does not answer vm1"
pass "a rule opens and closes vm2 to vm1 live; vm2 -> vm1 untouched throughout"

# --- The host is the guests' router, not their server. --------------------------
python3 -c 'import socket, time
s = socket.socket(); s.bind(("10.62.0.1", 9199)); s.listen(8); time.sleep(120)' &
LISTENER=$!
PIDS+=("$LISTENER")
sleep 0.5
opened=$(gssh "$IP1" "echo x | nc -w 3 10.62.0.1 9199 >/dev/null 2>&1 && echo yes || echo no")
[ "$opened" = no ] ||
    fail "vm1 opened a connection to a service of the host on its gateway address ('$opened')"
pings "$IP1" 10.62.0.1 || fail "vm1 cannot ping its gateway"
kill "$LISTENER" 2>/dev/null || true
pass "a guest cannot connect to the host's services on the gateway; ping and the host's SSH in work"

# --- Anti-spoofing. -------------------------------------------------------------
gssh "$IP1" ip addr add 10.62.0.250/24 dev eth0
spoofed=$(gssh "$IP1" "ping -c 1 -W 2 -I 10.62.0.250 $IP2 >/dev/null 2>&1 && echo yes || echo no")
[ "$spoofed" = no ] || fail "vm1 reached vm2 from an address that is not its own ('$spoofed')"
pings "$IP1" "$IP2" || fail "vm1's own address stopped working"
gssh "$IP1" ip addr del 10.62.0.250/24 dev eth0
pass "a spoofed source address is dropped"

# --- Clean delete. --------------------------------------------------------------
for v in vm1 vm2; do yun server delete "$v" --wait >/dev/null || fail "delete $v failed"; done
gone() { ! ip link show "$1" >/dev/null 2>&1; }
for t in $TAPS; do wait_for 20 gone "$t" || fail "tap $t is left"; done
chains=$(nft list table inet yun 2>/dev/null | grep -c 'chain [ei]-ytap' || true)
for t in $TAPS; do
    nft list table inet yun 2>/dev/null | grep -c "$t" >/dev/null && fail "nftables still holds $t"
done
DNSMASQ=$(cat "$T/netrun/dhcp/$NET_ID/pid" 2>/dev/null) || fail "no dnsmasq pid file for net1"
[ -d "/proc/$DNSMASQ" ] || fail "net1's dnsmasq ($DNSMASQ) does not run"
yun port delete gw1 >/dev/null
yun subnet delete sub1 >/dev/null
yun network delete net1 >/dev/null
wait_for 20 gone "$BR" || fail "bridge $BR is left"
wait_for 20 bash -c "! ip netns list | grep -q 'yun-dhcp-$NET_ID'" || fail "the DHCP namespace is left"
wait_for 20 [ ! -d "/proc/$DNSMASQ" ] || fail "net1's dnsmasq is left"
[ ! -e "$T/netrun/dhcp/$NET_ID" ] || fail "net1's DHCP files are left"
pass "deleted: no tap, chain ($chains left of others), bridge, DHCP namespace or dnsmasq of net1 remains"
