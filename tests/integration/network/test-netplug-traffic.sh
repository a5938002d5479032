#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# test-netplug-traffic.sh: netplug's firewall against real traffic. In a
# network namespace of its own (the "host"), a yun bridge joins two guest
# namespaces, each by a veth whose host end stands for the guest's tap;
# links and firewall are made by netplug (tests/bench/netplug-tool), `ip`
# only sets up the guest ends. Checks: default deny ingress, a tcp rule
# opens a port live and taking it out closes it without disturbing the
# other port, replies to allowed connections pass, a spoofed source IP or
# MAC is dropped, a guest cannot answer as a DHCP server, port security
# off means no filtering, and what is plugged can be listed. Root only.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
    echo "skipped: needs root for network namespaces"
    exit 77
fi
if [ -z "${YUN_NETPLUG_INNER:-}" ]; then
    # A private network and mount namespace: nothing here touches the
    # machine's links, firewall or /run/netns.
    YUN_NETPLUG_INNER=1 exec unshare -n -m --propagation private bash "$0" "$@"
fi
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"
TOOL=$B/tests/bench/netplug-tool
[ -x "$TOOL" ] || fail "$TOOL is not built"
mkdir -p /run/netns
mount -t tmpfs yun-test-netns /run/netns

cat >"$T/tp.py" <<'PY'
import socket, sys, selectors
mode = sys.argv[1]
if mode == "serve":                       # serve PORT...: answer "hiPORT" (v4 and v6)
    sel = selectors.DefaultSelector()
    for p in sys.argv[2:]:
        s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", int(p))); s.listen(16); sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for k, _ in sel.select():
            c, _ = k.fileobj.accept()
            c.sendall(b"hi%d\n" % k.fileobj.getsockname()[1]); c.close()
elif mode == "connect":                   # connect IP PORT [SRC_IP]
    s = socket.socket(socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET); s.settimeout(1.5)
    if len(sys.argv) > 4: s.bind((sys.argv[4], 0))
    try:
        s.connect((sys.argv[2], int(sys.argv[3]))); print(s.recv(64).decode().strip())
    except OSError as e:
        print("blocked", e.__class__.__name__); sys.exit(1)
elif mode == "udprecv":                   # udprecv PORT SECONDS: prints what came
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[2])))
    s.settimeout(float(sys.argv[3])); print("ready", flush=True)
    try: print(s.recv(512).decode(), flush=True)
    except OSError: pass
elif mode == "udpsend":                   # udpsend SPORT IP DPORT TEXT
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", int(sys.argv[2])))
    s.sendto(sys.argv[5].encode(), (sys.argv[3], int(sys.argv[4])))
PY

MAC_A=02:00:00:00:00:0a MAC_B=02:00:00:00:00:0b
IP_A=10.9.0.1 IP_B=10.9.0.2
"$TOOL" bridge ybr-t
for g in a b; do
    ip netns add "g$g"
    ip link add "yvh$g" type veth peer name eth0 netns "g$g"
    "$TOOL" attach "yvh$g" ybr-t
done
ip -n ga link set eth0 address $MAC_A up
ip -n gb link set eth0 address $MAC_B up
ip -n ga addr add $IP_A/24 dev eth0
ip -n gb addr add $IP_B/24 dev eth0
ip -n ga addr add fd00:9::1/64 dev eth0 nodad
ip -n gb addr add fd00:9::2/64 dev eth0 nodad

"$TOOL" fw-apply yvha $MAC_A $IP_A out:any in:tcp:6000 || fail "fw-apply a"
"$TOOL" fw-apply yvhb $MAC_B $IP_B out:any || fail "fw-apply b"

wait_ready() { # FILE
    local i
    for i in $(seq 50); do grep -q ready "$1" 2>/dev/null && return 0; sleep 0.1; done
    fail "$1 did not get ready"
}
ip netns exec gb python3 "$T/tp.py" serve 5000 5001 >"$T/serve-b.out" 2>&1 &
PIDS+=($!)
ip netns exec ga python3 "$T/tp.py" serve 6000 >"$T/serve-a.out" 2>&1 &
PIDS+=($!)
wait_ready "$T/serve-b.out"
wait_ready "$T/serve-a.out"

conn() { ip netns exec "$1" python3 "$T/tp.py" connect "${@:2}"; }
open_() { # NS IP PORT [SRC]: must connect
    local out
    out=$(conn "$@") || fail "$1 -> $2:$3 ${4:+from $4 }should connect: $out"
}
closed() { # NS IP PORT [SRC]: must not
    local out
    if out=$(conn "$@"); then fail "$1 -> $2:$3 ${4:+from $4 }should be blocked: $out"; fi
}

# Default deny ingress; the reply of b->a:6000 comes back to b only as
# part of an established connection (b allows no ingress).
closed ga $IP_B 5000
closed ga $IP_B 5001
open_ gb $IP_A 6000
pass "default deny ingress, established replies pass"

"$TOOL" fw-apply yvhb $MAC_B $IP_B out:any in:tcp:5000 || fail "fw-apply b 5000"
open_ ga $IP_B 5000
closed ga $IP_B 5001
pass "a tcp rule opens a port live"

"$TOOL" fw-apply yvhb $MAC_B $IP_B out:any in:tcp:5001 || fail "fw-apply b 5001"
closed ga $IP_B 5000
open_ ga $IP_B 5001
open_ gb $IP_A 6000
"$TOOL" fw-apply yvhb $MAC_B $IP_B out:any || fail "fw-apply b no rules"
closed ga $IP_B 5001
open_ gb $IP_A 6000
pass "taking a rule out closes the port, the other port undisturbed"

"$TOOL" fw-apply yvhb $MAC_B $IP_B out:any in:tcp:5000 || fail "fw-apply b 5000"
ip -n ga addr add 10.9.0.9/24 dev eth0
closed ga $IP_B 5000 10.9.0.9
open_ ga $IP_B 5000 $IP_A
pass "a spoofed source IP is dropped"

ip -n ga link set eth0 address 02:00:00:00:00:0c
closed ga $IP_B 5000
ip -n ga link set eth0 address $MAC_A
open_ ga $IP_B 5000
pass "a spoofed MAC is dropped"

dhcp_offer() { # -> what b's DHCP client port got from a's port 67
    ip netns exec gb python3 "$T/tp.py" udprecv 68 2 >"$T/dhcp.out" 2>&1 &
    local pid=$!
    wait_ready "$T/dhcp.out"
    ip netns exec ga python3 "$T/tp.py" udpsend 67 $IP_B 68 offer-from-a
    wait "$pid" || true
    grep -c offer-from-a "$T/dhcp.out" || true
}
[ "$(dhcp_offer)" = 0 ] || fail "a guest answered as a DHCP server"
"$TOOL" fw-nosec yvha $MAC_A || fail "fw-nosec a"
[ "$(dhcp_offer)" = 1 ] || fail "without port security a's reply should pass (control)"
pass "a guest cannot answer as a DHCP server"

# IPv6 (not filtered by the security groups yet) reaches no filtered port,
# whichever way it comes.
closed ga fd00:9::2 5001
"$TOOL" fw-nosec yvhb $MAC_B || fail "fw-nosec b"
open_ ga $IP_B 5001
open_ ga fd00:9::2 5001
pass "port security off: no filtering; else no IPv6"

"$TOOL" fw-apply yvha $MAC_A $IP_A out:any in:tcp:6000 || fail "fw-apply a again"
[ "$("$TOOL" fw-ports)" = yvha ] || fail "fw-ports: $("$TOOL" fw-ports)"
[ "$("$TOOL" links yvh | tr '\n' ' ')" = "yvha yvhb " ] || fail "links: $("$TOOL" links yvh)"
"$TOOL" fw-rm yvha
"$TOOL" fw-rm yvha
[ -z "$("$TOOL" fw-ports)" ] || fail "fw-ports after removal"
pass "plugged ports are listed, removal is idempotent"
