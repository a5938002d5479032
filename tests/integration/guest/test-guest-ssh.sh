#!/usr/bin/env bash
# Integration test: the tiny demo guest (contrib/guest/mkguest.sh) takes an
# address by DHCP, its SSH key and hostname from a metadata service, and
# answers SSH.
#
# The "host" side is built here with `ip` only, in two fresh network
# namespaces of this test's own (nothing in the root namespace is touched):
#
#   netns yun-gs-host-PID: bridge br0 <- tap0 (QEMU's) + veth vh
#   netns yun-gs-srv-PID:  veth vs 10.77.0.1/24 + 169.254.169.254/32,
#                          dnsmasq (static lease 10.77.0.10 for the guest's
#                          MAC, router, option 121), python3 -m http.server
#                          on 169.254.169.254:80 over a directory tree
#                          (a stand-in for the real metadata service)
#
# QEMU (TCG, 128 MiB) runs in the host namespace with a virtio NIC on tap0.
# The guest boots twice: with an EC2-style metadata tree, then with only
# OpenStack's meta_data.json. Each time the test waits for the guest's
# console lines, then from the server namespace runs
# `ssh root@10.77.0.10 hostname` and expects the hostname the metadata
# served, checks the routes (option 121) and resolv.conf, and that a key the
# metadata did not serve is refused.
# Exit 77 (skip) when not root or when a tool is missing. Uses $YUN_TEST_DIR
# when set (and leaves the logs there), else a temporary directory. QEMU,
# dnsmasq, the HTTP server and both namespaces (with every link in them) go
# on exit. Run time here: ~30 s (mkguest ~3 s, each TCG boot to 'sshd up'
# 10-15 s).

set -euo pipefail

skip() { echo "SKIP: $*"; exit 77; }

[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, tap)"
for t in qemu-system-x86_64 ip ssh ssh-keygen python3; do
    command -v "$t" >/dev/null 2>&1 || skip "$t not installed"
done
DNSMASQ=/usr/sbin/dnsmasq
[ -x "$DNSMASQ" ] || skip "dnsmasq not installed (dnsmasq-base)"
[ -c /dev/net/tun ] || skip "no /dev/net/tun"
PYTHON=$(command -v python3)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=${YUN_SOURCE_DIR:-$(cd "$HERE/../../.." && pwd)}

T0=$SECONDS
NS_HOST=yun-gs-host-$$
NS_SRV=yun-gs-srv-$$
MAC=52:54:00:77:00:10
GUEST_IP=10.77.0.10
DHCP_HOSTNAME=from-dhcp
BOOT_TIMEOUT=${YUN_GUEST_BOOT_TIMEOUT:-180}

if [ -n "${YUN_TEST_DIR:-}" ]; then
    WORK=$YUN_TEST_DIR
    rm -rf "$WORK"
    mkdir -p "$WORK"
    RM_WORK=0
else
    WORK=$(mktemp -d)
    RM_WORK=1
fi
CONSOLE=$WORK/console-ec2.log

PIDS=()
NETNS=()
cleanup() {
    local rc=$? p n
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    for n in "${NETNS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    [ $RM_WORK = 0 ] || rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "FAIL: $*" >&2
    local f
    for f in "$CONSOLE" "$WORK/dnsmasq.log" "$WORK/http.log" "$WORK/qemu.log"; do
        [ -s "$f" ] || continue
        echo "--- $f (last 30 lines)" >&2
        tail -n 30 "$f" | tr -d '\r' >&2
    done
    exit 1
}

# ------------------------------------------------------------- guest ---

bash "$SRC/contrib/guest/mkguest.sh" --out "$WORK/guest" >/dev/null ||
    fail "mkguest.sh failed"

ssh-keygen -q -t ed25519 -N '' -C yun-test -f "$WORK/id"
ssh-keygen -q -t ed25519 -N '' -C yun-other -f "$WORK/other"
ssh-keygen -q -t ed25519 -N '' -C yun-third -f "$WORK/third"

# ----------------------------------------------------------- network ---

ip netns add "$NS_HOST"; NETNS+=("$NS_HOST")
ip netns add "$NS_SRV"; NETNS+=("$NS_SRV")
H() { ip -n "$NS_HOST" "$@"; }
S() { ip -n "$NS_SRV" "$@"; }

H link set lo up
H link add br0 type bridge
H link set br0 up
H tuntap add dev tap0 mode tap
H link set tap0 master br0 up
H link add vh type veth peer name vs
H link set vh master br0 up
H link set vs netns "$NS_SRV"
S link set lo up
S addr add 10.77.0.1/24 dev vs
S addr add 169.254.169.254/32 dev vs
S link set vs up

# metadata: laid out per boot by boot_and_check below
MD=$WORK/metadata
mkdir -p "$MD"
ip netns exec "$NS_SRV" "$PYTHON" -m http.server 80 --bind 169.254.169.254 \
    --directory "$MD" >"$WORK/http.log" 2>&1 &
PIDS+=($!)

# DHCP: a static lease for the guest's MAC, the router, and option 121:
# the metadata address and the default route, both via 10.77.0.1.
ip netns exec "$NS_SRV" "$DNSMASQ" --no-daemon --conf-file=/dev/null \
    --user=root --port=0 --interface=vs --bind-interfaces \
    --dhcp-range=10.77.0.100,10.77.0.200,255.255.255.0,1h \
    --dhcp-host="$MAC,$GUEST_IP,$DHCP_HOSTNAME" \
    --dhcp-option=option:router,10.77.0.1 \
    --dhcp-option=option:dns-server,10.77.0.1 \
    --dhcp-option=option:domain-name,yun.test \
    --dhcp-option=121,169.254.169.254/32,10.77.0.1,0.0.0.0/0,10.77.0.1 \
    --dhcp-leasefile="$WORK/dnsmasq.leases" --pid-file= \
    --log-dhcp --log-facility="$WORK/dnsmasq.log" 2>>"$WORK/dnsmasq.log" &
PIDS+=($!)

# both listening before the guest asks
for _ in $(seq 50); do
    ip netns exec "$NS_SRV" "$PYTHON" -c '
import socket, sys
s = socket.socket(); s.settimeout(0.5)
sys.exit(s.connect_ex(("169.254.169.254", 80)))' 2>/dev/null && break
    sleep 0.1
done
kill -0 "${PIDS[0]}" 2>/dev/null || fail "the metadata HTTP server did not start"
kill -0 "${PIDS[1]}" 2>/dev/null || fail "dnsmasq did not start"

# -------------------------------------------------------------- boot ---

# The metadata tree for one boot: LAYOUT is ec2 (/latest/meta-data/...,
# one key) or openstack (only /openstack/latest/meta_data.json, two keys in
# "public_keys"). http.server reads the files at each request.
lay_out_metadata() { # LAYOUT HOSTNAME
    rm -rf "${MD:?}"/*
    case $1 in
    ec2)
        mkdir -p "$MD/latest/meta-data/public-keys/0"
        cp "$WORK/id.pub" "$MD/latest/meta-data/public-keys/0/openssh-key"
        echo "$2" > "$MD/latest/meta-data/hostname"
        ;;
    openstack)
        mkdir -p "$MD/openstack/latest"
        "$PYTHON" - "$2" "$WORK/id.pub" "$WORK/third.pub" > "$MD/openstack/latest/meta_data.json" <<'PYEOF'
import json, sys
name, k1, k2 = sys.argv[1:4]
keys = {"yun-test": open(k1).read(), "third": open(k2).read()}
print(json.dumps({"uuid": "00000000-0000-4000-8000-000000000001",
                  "meta": {"hostname": "not-this-one"},
                  "hostname": name, "name": name, "public_keys": keys,
                  "keys": [{"name": n, "type": "ssh", "data": d} for n, d in keys.items()]},
                 indent=2))
PYEOF
        ;;
    esac
}

guest_ssh() { # KEY COMMAND...
    local key=$1
    shift
    ip netns exec "$NS_SRV" ssh -F /dev/null -i "$key" -o IdentitiesOnly=yes \
        -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o ConnectTimeout=30 -o LogLevel=ERROR "root@$GUEST_IP" "$@"
}

G=$WORK/guest
QEMU=""
boot_and_check() { # LAYOUT NKEYS
    local layout=$1 nkeys=$2 name=yun-ssh-$1-$$ t_boot t_ready got net
    CONSOLE=$WORK/console-$layout.log
    lay_out_metadata "$layout" "$name"
    echo "== boot with $layout metadata"
    t_boot=$SECONDS
    ip netns exec "$NS_HOST" qemu-system-x86_64 -accel tcg -m 128 -smp 1 \
        -display none -monitor none -no-reboot -serial "file:$CONSOLE" \
        -kernel "$G/vmlinuz" -initrd "$G/initrd.img" \
        -append "console=ttyS0 panic=-1 yun.hostname=yun-ssh-boot" \
        -drive "file=$G/disk.raw,if=virtio,format=raw,readonly=on" \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
        -device "virtio-net-pci,netdev=n0,mac=$MAC" >"$WORK/qemu.log" 2>&1 &
    QEMU=$!
    PIDS+=("$QEMU")

    until console_has '^yun-guest: ready'; do
        kill -0 "$QEMU" 2>/dev/null || fail "QEMU exited before the guest was ready"
        [ $((SECONDS - t_boot)) -lt "$BOOT_TIMEOUT" ] ||
            fail "no 'yun-guest: ready' within ${BOOT_TIMEOUT}s"
        sleep 0.2
    done
    t_ready=$SECONDS
    echo "guest says:"
    tr -d '\r' < "$CONSOLE" | grep '^yun-guest:' | sed 's/^/  /'

    console_has "^yun-guest: ip $GUEST_IP\$" || fail "the guest did not print 'yun-guest: ip $GUEST_IP'"
    console_has "^yun-guest: hostname $name\$" ||
        fail "the guest did not take the metadata's hostname $name"
    console_has "^yun-guest: keys $nkeys\$" || fail "the guest did not print 'yun-guest: keys $nkeys'"
    console_has '^yun-guest: sshd up$' || fail "the guest did not print 'yun-guest: sshd up'"
    echo "ok: ready with sshd up $((t_ready - t_boot)) s after QEMU started"

    got=""
    for _ in 1 2 3; do
        got=$(guest_ssh "$WORK/id" hostname 2>"$WORK/ssh.err") && break
        sleep 2
    done
    [ "$got" = "$name" ] ||
        fail "ssh root@$GUEST_IP hostname gave '$got', not '$name' ($(tr '\n' ' ' < "$WORK/ssh.err"))"
    echo "ok: ssh -i id root@$GUEST_IP hostname -> $got"

    # the DHCP script's work: option 121 routes (RFC 3442: no router option
    # then), resolv.conf
    net=$(guest_ssh "$WORK/id" 'ip -4 route; cat /etc/resolv.conf' 2>>"$WORK/ssh.err") ||
        fail "ssh: ip route failed"
    echo "$net" | grep -q '^default via 10.77.0.1 dev eth0' || fail "no default route via 10.77.0.1: $net"
    echo "$net" | grep -q '^169.254.169.254 via 10.77.0.1 dev eth0' ||
        fail "no option 121 route to 169.254.169.254 via 10.77.0.1: $net"
    echo "$net" | grep -q '^nameserver 10.77.0.1' || fail "resolv.conf has no nameserver 10.77.0.1: $net"
    echo "$net" | grep -q '^search yun.test' || fail "resolv.conf has no 'search yun.test': $net"
    echo "ok: routes from option 121 and resolv.conf from DHCP"

    if guest_ssh "$WORK/other" true 2>/dev/null; then
        fail "a key the metadata did not serve logged in"
    fi
    echo "ok: a key the metadata did not serve is refused"

    kill -TERM "$QEMU" 2>/dev/null || true
    wait "$QEMU" 2>/dev/null || true
    QEMU=""
}

console_has() { [ -f "$CONSOLE" ] && tr -d '\r' < "$CONSOLE" | grep -q "$1"; }

boot_and_check ec2 1
boot_and_check openstack 2

echo "PASS: guest network, metadata keys and SSH (EC2 and OpenStack layouts) in $((SECONDS - T0)) s"
