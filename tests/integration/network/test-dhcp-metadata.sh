#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# DHCP and metadata on one host, for real: dhcp-driver applies a
# HostNetworkState with dhcp_apply() and metadata_apply() (a dnsmasq in
# the network's namespace, a metadata server on 169.254.169.254 there);
# "guests" are namespaces on the same bridge that run busybox udhcpc and
# wget. Runs in its own network and mount namespaces (unshare -n -m, with
# a private /run), so it only ever addresses its own namespaces.
# needs-root
if [ -z "${YUN_DHCP_TEST_INNER:-}" ]; then
    [ "$(id -u)" = 0 ] || { echo "skip: needs root"; exit 77; }
    for b in busybox /usr/sbin/dnsmasq ip unshare; do
        command -v "$b" >/dev/null || { echo "skip: no $b"; exit 77; }
    done
    unshare -n -m true 2>/dev/null || { echo "skip: cannot unshare"; exit 77; }
    exec env YUN_DHCP_TEST_INNER=1 unshare -n -m --propagation private bash "$0" "$@"
fi
source "$(dirname "$0")/../lib.sh"
mount -t tmpfs -o mode=755 yun-test-run /run
# dnsmasq re-reads its files on SIGHUP as its own user.
chmod 755 "$T"

S=$T/state
mkdir -p "$S"
NET=0a1b2c3d-0000-4000-8000-000000000001
BR=ybr-0a1b2c3d000
NS=yun-dhcp-$NET
DHCP_MAC=fa:16:3e:00:00:02

# Every dnsmasq of this test, also one whose pid file was replaced after
# a failed check: they are the ones with a pid file under $S.
stop_strays() {
    local p
    for p in $(pgrep -f -- "--pid-file=$S/dhcp/" || true); do
        kill -KILL "$p" 2>/dev/null || true
    done
}
trap 'stop_strays; cleanup' EXIT

ip link set lo up
ip link add "$BR" type bridge
ip link set "$BR" up

# guest NAME MAC: a namespace with eth0 (MAC) on the bridge.
guest() {
    ip netns add "test-$1"
    ip link add "g-$1" type veth peer name eth0 netns "test-$1"
    ip link set "g-$1" master "$BR" up
    ip -n "test-$1" link set eth0 address "$2" up
    ip -n "test-$1" link set lo up
}
gx() { local g=$1; shift; ip netns exec "test-$g" "$@"; }

cat >"$T/udhcpc.sh" <<'EOF'
#!/bin/sh
# busybox udhcpc script: record what was offered, configure eth0.
[ "$1" = bound ] || exit 0
{
    echo "ip=$ip"
    echo "mask=$mask"
    echo "router=$router"
    echo "dns=$dns"
    echo "mtu=$mtu"
    echo "hostname=$hostname"
    echo "staticroutes=$staticroutes"
} >"$UDHCPC_OUT"
ip addr flush dev "$interface"
ip addr add "$ip/$mask" dev "$interface"
set -- $staticroutes
while [ $# -ge 2 ]; do
    ip route replace "$1" via "$2" dev "$interface"
    shift 2
done
EOF
chmod +x "$T/udhcpc.sh"

# dhcp GUEST: runs udhcpc once; the lease is in $T/lease-GUEST.
dhcp() {
    rm -f "$T/lease-$1"
    gx "$1" env UDHCPC_OUT="$T/lease-$1" busybox udhcpc -i eth0 -f -q -n -t 4 -T 1 \
        -O staticroutes -O mtu -O hostname -s "$T/udhcpc.sh" >>"$T/udhcpc-$1.log" 2>&1
}

# state GEN PORTS...: writes the HostNetworkState with the DHCP port and
# the given instance ports ("vm1", "vm2", "other" = a port of host2).
state() {
    local gen=$1 p ports="" md="" sep=""
    shift
    for p in "$@"; do
        case $p in
        vm1) ports+=",$(port p-vm1 fa:16:3e:00:00:11 10.20.0.11 compute:nova host1)"
             md+="$sep$(meta p-vm1 i-vm1 vm1 key-one 'ssh-ed25519 AAAAvm1 one@test' 'vm1 user data')"
             sep=, ;;
        vm2) ports+=",$(port p-vm2 fa:16:3e:00:00:12 10.20.0.12 compute:nova host1)"
             md+="$sep$(meta p-vm2 i-vm2 vm2 key-two 'ssh-ed25519 AAAAvm2 two@test' '')"
             sep=, ;;
        esac
    done
    local nets="" subs=""
    if [ $# -gt 0 ]; then
        nets="{\"id\": \"$NET\", \"name\": \"net1\", \"mtu\": 1450, \"network_type\": \"vxlan\"}"
        subs="{\"id\": \"sub1\", \"network_id\": \"$NET\", \"ip_version\": 4,
               \"cidr\": \"10.20.0.0/24\", \"gateway_ip\": \"10.20.0.1\",
               \"dns_nameservers\": [\"192.0.2.53\"], \"enable_dhcp\": true}"
        ports="$(port p-dhcp $DHCP_MAC 10.20.0.2 network:dhcp host1)$ports"
        # A port of another host on the same network: not ours to answer.
        ports+=",$(port p-other fa:16:3e:00:00:13 10.20.0.13 compute:nova host2)"
    fi
    cat >"$T/state.json.tmp" <<EOF
{"host_id": "host1", "generation": $gen, "networks": [$nets], "subnets": [$subs],
 "ports": [$ports], "metadata": [$md]}
EOF
    mv "$T/state.json.tmp" "$T/state.json"
}
port() {
    echo "{\"id\": \"$1\", \"network_id\": \"$NET\", \"mac_address\": \"$2\",
           \"fixed_ips\": [{\"subnet_id\": \"sub1\", \"ip_address\": \"$3\"}],
           \"device_owner\": \"$4\", \"host_id\": \"$5\"}"
}
meta() {
    echo "{\"port_id\": \"$1\", \"instance_id\": \"$2\", \"hostname\": \"$3\",
           \"instance_name\": \"$3\", \"project\": \"proj1\", \"availability_zone\": \"az1\",
           \"public_keys\": [{\"name\": \"$4\", \"public_key\": \"$5\"}],
           \"user_data\": \"$6\", \"meta\": [{\"key\": \"role\", \"value\": \"$3\"}]}"
}

start_driver() {
    "$B/tests/dhcp-driver" --state-dir "$S" --state "$T/state.json" --host host1 \
        >>"$T/driver.log" 2>&1 &
    DRIVER=$!
    PIDS+=("$DRIVER")
}
wait_applied() {
    local i
    for i in $(seq 100); do
        [ "$(cut -d' ' -f1 "$S/applied" 2>/dev/null)" = "$1" ] && return 0
        sleep 0.1
    done
    fail "generation $1 was not applied"
}
dnsmasq_pid() { cat "$S/dhcp/$NET/pid" 2>/dev/null || true; }
wait_dnsmasq() {
    local i p
    for i in $(seq 100); do
        p=$(dnsmasq_pid)
        if [ -n "$p" ] && [ "$p" != "${1:-}" ] && [ -d "/proc/$p" ]; then
            echo "$p"
            return 0
        fi
        sleep 0.1
    done
    fail "no dnsmasq running (besides ${1:-none})"
}
# (busybox wget -T crashes in Debian 12's build: timeout(1) bounds it.)
get() { gx "$1" timeout 10 busybox wget -q -O- "${@:3}" "http://169.254.169.254$2" 2>"$T/wget.err"; }

# ---- describe: one network with one instance port on this host ----
state 1 vm1
start_driver
wait_applied 1
[ "$(cut -d' ' -f2- "$S/applied")" = "0 0" ] || fail "apply failed: $(cat "$S/applied")"
PID1=$(wait_dnsmasq)
ip netns list | grep -q "^$NS" || fail "no namespace $NS"
[ "$(ip -o link show master "$BR" | grep -c ydh-)" = 1 ] || fail "the DHCP veth is not on $BR"
ip -n "$NS" -br addr show dhcp0 | grep -q "10.20.0.2/24" || fail "no DHCP address in $NS"
ip -n "$NS" -br addr show dhcp0 | grep -q "169.254.169.254/32" || fail "no metadata address"
ip -n "$NS" link show dhcp0 | grep -q "$DHCP_MAC" || fail "the DHCP port's MAC is not set"
pass "dnsmasq runs in $NS on the DHCP port"

guest vm1 fa:16:3e:00:00:11
guest vm2 fa:16:3e:00:00:12
guest other fa:16:3e:00:00:13

dhcp vm1 || fail "udhcpc got no lease for vm1"
L=$T/lease-vm1
grep -qx "ip=10.20.0.11" "$L" || fail "wrong address: $(cat "$L")"
grep -qx "mask=24" "$L" || fail "wrong mask: $(cat "$L")"
grep -qx "router=10.20.0.1" "$L" || fail "wrong router: $(cat "$L")"
grep -qx "mtu=1450" "$L" || fail "wrong mtu: $(cat "$L")"
grep -qx "hostname=vm1" "$L" || fail "wrong hostname: $(cat "$L")"
grep -q "^dns=10.20.0.2 192.0.2.53" "$L" || fail "wrong dns: $(cat "$L")"
grep -q "169.254.169.254/32 10.20.0.2" "$L" || fail "no metadata route: $(cat "$L")"
grep -q "0.0.0.0/0 10.20.0.1" "$L" || fail "no default route in option 121: $(cat "$L")"
pass "vm1 gets its address, router, MTU and option 121 routes"

# The metadata service's pin of vm1's address to its MAC survives the
# lease (dnsmasq must not write its own ARP entry over it).
ip -n "$NS" neigh show 10.20.0.11 dev dhcp0 nud permanent | grep -q "fa:16:3e:00:00:11" ||
    fail "vm1's address is not pinned to its MAC: $(ip -n "$NS" neigh show 10.20.0.11)"
pass "vm1's address stays pinned to its MAC after its lease"

# Our dnsmasq answers the ports' names.
gx vm1 timeout 5 busybox nslookup vm1.yun.internal 10.20.0.2 >"$T/dns.out" 2>&1 || true
grep -q "10.20.0.11" "$T/dns.out" || fail "vm1.yun.internal does not resolve: $(cat "$T/dns.out")"
pass "the ports' hostnames resolve on the DHCP address"

if dhcp vm2; then fail "vm2 got a lease before its port existed"; fi
if dhcp other; then fail "a port of another host got a lease here"; fi
pass "unknown MACs get no answer (static ranges)"

# ---- metadata: each guest sees only its own ----
J=$(get vm1 /openstack/latest/meta_data.json) || fail "no meta_data.json for vm1"
echo "$J" | grep -q '"uuid":"i-vm1"' || fail "wrong uuid: $J"
echo "$J" | grep -q '"key-one":"ssh-ed25519 AAAAvm1 one@test"' || fail "no key: $J"
echo "$J" | grep -q '"meta":{"role":"vm1"}' || fail "no meta: $J"
if echo "$J" | grep -q AAAAvm2; then fail "vm1 sees vm2's key"; fi
[ "$(get vm1 /openstack/latest/user_data)" = "vm1 user data" ] || fail "wrong user_data"
[ "$(get vm1 /latest/meta-data/instance-id)" = i-vm1 ] || fail "wrong EC2 instance-id"
[ "$(get vm1 /latest/meta-data/public-keys/)" = "0=key-one" ] || fail "wrong EC2 key list"
[ "$(get vm1 /2009-04-04/meta-data/public-keys/0/openssh-key)" = "ssh-ed25519 AAAAvm1 one@test" ] ||
    fail "wrong EC2 key"
[ "$(get vm1 /latest/meta-data/local-ipv4)" = 10.20.0.11 ] || fail "wrong local-ipv4"
# What the guest claims about itself changes nothing.
J=$(get vm1 /openstack/latest/meta_data.json --header "X-Forwarded-For: 10.20.0.12")
echo "$J" | grep -q '"uuid":"i-vm1"' || fail "a header changed the identity: $J"
pass "vm1 reads its own metadata (OpenStack and EC2 layouts)"

# ---- a new port: the hosts file is reloaded, not the process ----
state 2 vm1 vm2
kill -HUP "$DRIVER"
wait_applied 2
sleep 0.5
[ "$(dnsmasq_pid)" = "$PID1" ] || fail "dnsmasq was restarted for a new host entry"
dhcp vm2 || fail "udhcpc got no lease for vm2 after the reload"
grep -qx "ip=10.20.0.12" "$T/lease-vm2" || fail "wrong address for vm2"
J=$(get vm2 /openstack/latest/meta_data.json) || fail "no meta_data.json for vm2"
echo "$J" | grep -q '"key-two"' || fail "vm2 has not its key: $J"
if echo "$J" | grep -q 'key-one'; then fail "vm2 sees vm1's key"; fi
if get vm2 /openstack/latest/user_data >/dev/null 2>&1; then fail "vm2 has user_data"; fi
pass "a new port gets a lease after SIGHUP and sees only its own keys"

# An address that is no instance port of this host is not served, also
# when it is a port of another host: the connection is refused at accept.
gx other ip addr add 10.20.0.13/24 dev eth0
gx other ip route add 169.254.169.254/32 via 10.20.0.2
if get other /openstack/latest/meta_data.json >/dev/null; then
    fail "another host's port got metadata here"
fi
grep -q -i "reset\|refused\|closed" "$T/wget.err" ||
    fail "not refused at accept: $(cat "$T/wget.err")"
# Only GET and HEAD.
if get vm1 /latest/ --post-data x >/dev/null; then
    fail "POST was accepted"
fi
grep -q 405 "$T/wget.err" || fail "not a 405: $(cat "$T/wget.err")"
pass "unknown sources are refused at accept, POST gets 405"

# ---- supervision ----
kill -KILL "$PID1"
PID2=$(wait_dnsmasq "$PID1")
grep -q "dnsmasq exited unexpectedly" "$T/driver.log" || fail "the death was not logged"
dhcp vm1 || fail "no lease from the restarted dnsmasq"
pass "a killed dnsmasq is restarted ($PID1 -> $PID2)"

# A new agent adopts the running dnsmasq instead of starting another.
kill -TERM "$DRIVER"
wait "$DRIVER" || true
start_driver
wait_applied 2
sleep 0.5
[ "$(dnsmasq_pid)" = "$PID2" ] || fail "dnsmasq was not adopted"
grep -q "dnsmasq adopted" "$T/driver.log" || fail "no adoption logged"
get vm1 /latest/meta-data/hostname | grep -qx vm1 || fail "no metadata after the restart"
pass "a restarted driver adopts dnsmasq $PID2"

# A namespace removed behind the agent's back is made again, with the
# veth, a dnsmasq and a metadata listener in the new one.
ip netns del "$NS"
kill -HUP "$DRIVER"
PID3=$(wait_dnsmasq "$PID2")
ip netns list | grep -q "^$NS" || fail "namespace $NS was not made again"
dhcp vm1 || fail "no lease after the namespace was made again"
get vm1 /latest/meta-data/instance-id | grep -qx i-vm1 || fail "no metadata in the new namespace"
pass "a lost namespace is made again ($PID2 -> $PID3)"

# ---- removal ----
state 3
kill -HUP "$DRIVER"
wait_applied 3
for i in $(seq 50); do [ -d "/proc/$PID3" ] || break; sleep 0.1; done
[ ! -d "/proc/$PID3" ] || fail "dnsmasq still runs after its network went"
if ip netns list | grep -q "^$NS"; then fail "namespace $NS is left"; fi
if ip -o link | grep -q ydh-; then fail "the DHCP veth is left"; fi
[ ! -e "$S/dhcp/$NET" ] || fail "the DHCP files are left"
if get vm1 /latest/meta-data/ >/dev/null 2>&1; then fail "metadata still served"; fi
pass "a network no longer in the state leaves no process, namespace, veth or file"

# A stray namespace this agent made (its files are in the run dir: a
# network it served before a crash) is removed by the next apply; one it
# did not make (another agent's, on the same machine) is left alone.
ip netns add yun-dhcp-stray
mkdir -p "$S/dhcp/stray"
ip netns add yun-dhcp-others
kill -HUP "$DRIVER"
for i in $(seq 50); do ip netns list | grep -q yun-dhcp-stray || break; sleep 0.1; done
if ip netns list | grep -q yun-dhcp-stray; then fail "a stray namespace is left"; fi
[ ! -e "$S/dhcp/stray" ] || fail "the stray's files are left"
ip netns list | grep -q yun-dhcp-others || fail "another agent's namespace was removed"
ip netns del yun-dhcp-others
pass "this agent's stray yun-dhcp-* namespaces are removed, others' are left alone"

# The driver stops cleanly (sanitizers report at exit).
kill -TERM "$DRIVER"
wait "$DRIVER" || fail "the driver exited with $?"
pass "the driver exits cleanly"
