#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench-vxlan.sh: TCP throughput between two guests through yun's
# datapath next to a plain veth, with iperf3.
#
#   YUN_BUILD_DIR=build-rel tests/bench/bench-vxlan.sh [SECONDS]   (root)
#
# 1. Plain: two namespaces joined by one veth.
# 2. yun: two "host" namespaces joined by a veth underlay; in each, a yun
#    bridge and a VXLAN device (VNI 42) made by netplug (netplug-tool),
#    flood list pointing at the other host, and a guest namespace whose
#    veth's host end is enslaved to the bridge (MTU 1450 for VXLAN's 50).
# 3. The same with both guests' firewall applied (security groups through
#    br_netfilter and conntrack).
# Prints the figures in Gbit/s and their ratio (target >= 0.5). Runs in
# a private network and mount namespace: it addresses only its own
# namespaces.
set -euo pipefail
SECS=${1:-5}
if [ "$(id -u)" != 0 ]; then
    echo "bench-vxlan: needs root for network namespaces" >&2
    exit 77
fi
if [ -z "${YUN_NETPLUG_INNER:-}" ]; then
    YUN_NETPLUG_INNER=1 exec unshare -n -m --propagation private bash "$0" "$@"
fi
B=${YUN_BUILD_DIR:?set YUN_BUILD_DIR to a (Release) build}
TOOL=$B/tests/bench/netplug-tool
[ -x "$TOOL" ] || { echo "bench-vxlan: $TOOL is not built" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "bench-vxlan: no iperf3" >&2; exit 77; }
mkdir -p /run/netns
mount -t tmpfs yun-bench-netns /run/netns
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

# iperf NS_SERVER NS_CLIENT SERVER_IP -> Gbit/s received
iperf() {
    ip netns exec "$1" iperf3 -s -1 -B "$3" >/dev/null 2>&1 &
    local srv=$!
    PIDS+=("$srv")
    local i
    for i in $(seq 50); do
        ip netns exec "$1" ss -Htln "sport = :5201" | grep -q . && break
        sleep 0.1
    done
    ip netns exec "$2" iperf3 -c "$3" -t "$SECS" -J |
        python3 -c 'import json, sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
    wait "$srv" 2>/dev/null || true
}

# 1. Plain veth.
ip netns add p1
ip netns add p2
ip -n p1 link add eth0 type veth peer name eth0 netns p2
ip -n p1 addr add 10.80.0.1/24 dev eth0
ip -n p2 addr add 10.80.0.2/24 dev eth0
for n in p1 p2; do ip -n $n link set lo up; ip -n $n link set eth0 up; done
plain=$(iperf p2 p1 10.80.0.2)

# 2. Guests on yun bridges across a VXLAN over a veth underlay.
ip netns add h1
ip netns add h2
ip -n h1 link add u type veth peer name u netns h2
for i in 1 2; do
    h=h$i g=g$i
    ip -n $h addr add 192.168.77.$i/24 dev u
    ip -n $h link set u up
    ip -n $h link set lo up
    ip netns exec $h "$TOOL" bridge ybr-v 1450
    ip netns exec $h "$TOOL" vxlan yvx-v 42 192.168.77.$i u ybr-v 1450
    ip netns exec $h "$TOOL" remotes yvx-v 192.168.77.$((3 - i))
    ip netns add $g
    ip -n $h link add yvg type veth peer name eth0 netns $g
    ip -n $h link set yvg mtu 1450
    ip netns exec $h "$TOOL" attach yvg ybr-v
    ip -n $g link set eth0 mtu 1450
    ip -n $g addr add 10.81.0.$i/24 dev eth0
    ip -n $g link set eth0 up
    ip -n $g link set lo up
done
yun=$(iperf g2 g1 10.81.0.2)

# 3. The same with the guests' firewall on (br_netfilter, conntrack).
for i in 1 2; do
    mac=$(ip -n g$i -br link show eth0 | awk '{print $3}')
    ip netns exec h$i "$TOOL" fw-apply yvg "$mac" 10.81.0.$i out:any in:tcp:5201
done
fw=$(iperf g2 g1 10.81.0.2)

echo "TCP throughput, iperf3 -t $SECS, one stream:"
printf "  plain veth:                        %6.2f Gbit/s\n" "$plain"
printf "  yun bridge + VXLAN (netplug):      %6.2f Gbit/s\n" "$yun"
printf "  the same, security groups on:     %6.2f Gbit/s\n" "$fw"
python3 -c "print('  ratio yun / plain:                 %6.2f   (target >= 0.5)' % ($yun / $plain))"
python3 -c "print('  ratio with security groups / plain:%6.2f' % ($fw / $plain))"
