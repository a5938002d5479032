#!/usr/bin/env bash
# boot-check.sh — boot the mkguest.sh guest once under libvirt (QEMU TCG) and
# check that it comes up; then power it off through ACPI and clean up.
#
#   contrib/guest/boot-check.sh [--dir DIR] [--timeout SECS] [--memory MIB]
#                               [--log FILE] [--no-shutdown] [--keep]
#
#   --dir DIR       where mkguest.sh put vmlinuz, initrd.img, disk.raw [./guest]
#   --timeout SECS  how long to wait for the guest's banner [60]
#   --memory MIB    guest RAM [128]; Debian 12's kernel needs >= 88 MiB
#                   (at 80 it panics out of memory, at 64-72 it dies silently
#                   right after "Probing EDD", before any console output)
#   --log FILE      keep a copy of the console log there [DIR/console.log]
#   --no-shutdown   destroy the domain instead of testing an ACPI poweroff
#   --keep          keep the staging directory (XML, console log) for a look
#
# Runs as root. Starts virtlogd and libvirtd (`-d`, no systemd here) if they
# are not running, and leaves them running. The guest files are copied into a
# private staging directory under /var/lib/libvirt/images/ (readable by the
# libvirt-qemu user that libvirt runs QEMU as; the guest may write its disk
# there without touching DIR). The domain is transient (`virsh create`): type
# 'qemu' (TCG: nested KVM does not work here), 1 vCPU, direct kernel boot with
# console=ttyS0, ACPI on, disk.raw as a virtio disk (raw, stated), no network,
# serial console to a file.
#
# Prints how long `virsh create` took, the time from `virsh create` to the
# guest's banner, the guest's own lines, and how long the ACPI poweroff took.
# Exit 0 on success; non-zero with the last console lines on failure.

set -euo pipefail

PROG=${0##*/}
DIR=./guest
TIMEOUT=60
MEMORY=128
LOG=""
SHUTDOWN=1
KEEP=0
URI=qemu:///system
BANNER='yun-guest: booted kernel '
READY='yun-guest: ready'
SHUTDOWN_TIMEOUT=30

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }
die() { echo "$PROG: error: $*" >&2; exit 1; }
info() { echo "$PROG: $*"; }

while [ $# -gt 0 ]; do
    case $1 in
        --dir) [ $# -ge 2 ] || die "--dir needs a value"; DIR=$2; shift 2 ;;
        --dir=*) DIR=${1#--dir=}; shift ;;
        --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; TIMEOUT=$2; shift 2 ;;
        --timeout=*) TIMEOUT=${1#--timeout=}; shift ;;
        --memory) [ $# -ge 2 ] || die "--memory needs a value"; MEMORY=$2; shift 2 ;;
        --memory=*) MEMORY=${1#--memory=}; shift ;;
        --log) [ $# -ge 2 ] || die "--log needs a value"; LOG=$2; shift 2 ;;
        --log=*) LOG=${1#--log=}; shift ;;
        --no-shutdown) SHUTDOWN=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
done
case $TIMEOUT in ''|*[!0-9]*) die "--timeout must be whole seconds" ;; esac
case $MEMORY in ''|*[!0-9]*) die "--memory must be MiB" ;; esac
[ "$MEMORY" -ge 88 ] ||
    info "warning: ${MEMORY} MiB is below the ~88 MiB Debian 12's kernel needs; expect no banner"

[ "$(id -u)" = 0 ] || die "must run as root (libvirt qemu:///system)"
for t in virsh libvirtd virtlogd qemu-system-x86_64; do
    command -v "$t" >/dev/null 2>&1 ||
        die "'$t' not found (apt-get install libvirt-daemon-system qemu-system-x86)"
done
for f in vmlinuz initrd.img disk.raw; do
    [ -s "$DIR/$f" ] || die "$DIR/$f missing: run contrib/guest/mkguest.sh --out $DIR"
done
DIR=$(cd "$DIR" && pwd)
[ -n "$LOG" ] || LOG=$DIR/console.log

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# ------------------------------------------------------------- libvirtd ---

# pgrep -x matches the exact process name: only a check, nothing is killed.
if ! pgrep -x virtlogd >/dev/null 2>&1; then
    info "starting virtlogd"
    virtlogd -d
fi
started=0
if ! pgrep -x libvirtd >/dev/null 2>&1; then
    info "starting libvirtd"
    libvirtd -d
    started=1
fi
deadline=$((SECONDS + 60))
until virsh -c "$URI" uri >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "libvirtd does not answer on $URI (see /var/log/libvirt/libvirtd.log)"
    sleep 0.5
done
# Touch the QEMU driver once after a fresh start (capability probing), so
# that cost, if any, is not counted in `virsh create` below. (Once, right
# after a start, a first create took 4.3 s instead of 0.3 s; not reproduced.)
if [ $started = 1 ]; then
    tw=$(now)
    virsh -c "$URI" domcapabilities --virttype qemu --arch x86_64 --machine pc >/dev/null 2>&1 || true
    info "libvirtd warmed up in $(elapsed "$tw" "$(now)") s"
fi

# -------------------------------------------------------------- staging ---

NAME=yun-boot-check-$$
STAGE=$(mktemp -d /var/lib/libvirt/images/yun-boot-check.XXXXXX)
chmod 755 "$STAGE"
CONSOLE=$STAGE/console.log
XML=$STAGE/domain.xml
created=0

last_lines() {
    echo "---- last console lines ($CONSOLE) ----" >&2
    if [ -s "$CONSOLE" ]; then tail -n 25 "$CONSOLE" | tr -d '\r' >&2; else echo "(empty)" >&2; fi
    echo "----" >&2
    local qlog=/var/log/libvirt/qemu/$NAME.log
    if [ -s "$qlog" ]; then
        # its messages, not the QEMU command line libvirt logs first
        echo "---- $qlog ----" >&2
        grep -vE '^(-|[A-Z_]+=|/usr/bin/qemu)' "$qlog" | tail -n 10 >&2
        echo "----" >&2
    fi
}

cleanup() {
    local rc=$?
    if [ $created = 1 ] && virsh -c "$URI" domstate "$NAME" >/dev/null 2>&1; then
        virsh -c "$URI" destroy "$NAME" >/dev/null 2>&1 || true
    fi
    if [ -e "$CONSOLE" ]; then
        cp "$CONSOLE" "$LOG" 2>/dev/null || true
    fi
    if [ $KEEP = 1 ]; then
        info "kept $STAGE"
    else
        rm -rf "$STAGE"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cp "$DIR/vmlinuz" "$DIR/initrd.img" "$DIR/disk.raw" "$STAGE/"
chmod 644 "$STAGE/vmlinuz" "$STAGE/initrd.img" "$STAGE/disk.raw"

cat > "$XML" <<EOF
<domain type='qemu'>
  <name>$NAME</name>
  <memory unit='MiB'>$MEMORY</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$STAGE/vmlinuz</kernel>
    <initrd>$STAGE/initrd.img</initrd>
    <cmdline>console=ttyS0 panic=-1 yun.hostname=$NAME</cmdline>
  </os>
  <features>
    <acpi/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$STAGE/disk.raw'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='$CONSOLE'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='$CONSOLE'/>
      <target type='serial' port='0'/>
    </console>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF

# ----------------------------------------------------------------- boot ---

# No pipe into grep -q here: with pipefail, virsh's SIGPIPE would read as "not running".
domain_alive() {
    local st
    st=$(virsh -c "$URI" domstate "$NAME" 2>/dev/null) || return 1
    [ "${st%%$'\n'*}" = running ]
}
log_has() { [ -f "$CONSOLE" ] && grep -q "$1" "$CONSOLE"; }

info "booting $NAME (TCG, ${MEMORY} MiB, 1 vCPU) from $DIR"
t0=$(now)
if ! out=$(virsh -c "$URI" create "$XML" 2>&1); then
    echo "$out" >&2
    last_lines
    die "virsh create failed"
fi
t1=$(now)
created=1

deadline=$((SECONDS + TIMEOUT))
until log_has "$BANNER"; do
    if ! domain_alive; then
        last_lines
        die "domain ended before the banner appeared"
    fi
    if [ $SECONDS -ge $deadline ]; then
        last_lines
        die "no banner '$BANNER' within ${TIMEOUT}s"
    fi
    sleep 0.1
done
t2=$(now)

# The banner is followed by the device lines; wait (briefly) for the end.
deadline=$((SECONDS + 20))
until log_has "$READY"; do
    if ! domain_alive || [ $SECONDS -ge $deadline ]; then
        last_lines
        die "guest printed its banner but never '$READY'"
    fi
    sleep 0.1
done

info "virsh create took $(elapsed "$t0" "$t1") s"
info "virsh create -> banner: $(elapsed "$t0" "$t2") s ($(elapsed "$t1" "$t2") s after virsh create returned)"
info "guest says:"
tr -d '\r' < "$CONSOLE" | grep '^yun-guest:' | sed 's/^/  /'

fail=0
if ! grep -q '^yun-guest: block devices:.*vda' "$CONSOLE"; then
    echo "$PROG: error: the guest did not see its virtio disk (vda)" >&2
    fail=1
fi

# ------------------------------------------------------------- shutdown ---

if [ $SHUTDOWN = 1 ] && [ $fail = 0 ]; then
    t3=$(now)
    virsh -c "$URI" shutdown "$NAME" --mode acpi >/dev/null
    deadline=$((SECONDS + SHUTDOWN_TIMEOUT))
    while virsh -c "$URI" domstate "$NAME" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "$PROG: error: the guest did not power off within ${SHUTDOWN_TIMEOUT}s of an ACPI shutdown" >&2
            fail=1
            break
        fi
        sleep 0.1
    done
    if [ $fail = 0 ]; then
        created=0
        info "ACPI shutdown -> domain gone: $(elapsed "$t3" "$(now)") s"
    fi
fi

if [ $fail = 1 ]; then
    last_lines
    exit 1
fi
info "OK (console log: $LOG)"
