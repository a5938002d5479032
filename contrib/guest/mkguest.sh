#!/usr/bin/env bash
# mkguest.sh — build a tiny Linux guest (kernel + busybox initramfs + raw
# disk) for yun demos and tests, at run time, from Debian packages installed
# on this machine. Nothing it makes is meant to be committed.
#
#   contrib/guest/mkguest.sh [--out DIR] [--force] [--kernel-version VER]
#
# Outputs in DIR (default ./guest):
#   vmlinuz       the Debian kernel, copied from /boot/vmlinuz-VER
#   initrd.img    newc cpio + gzip: busybox-static, /init, the virtio (and a
#                 few helper) modules of the SAME kernel version, dropbear
#                 (dropbear-bin) and the shared libraries it links
#   disk.raw      16 MiB ext2 image (label yun-data) holding /yun-disk.txt;
#                 attach it as a virtio disk and the guest sees /dev/vda
#   manifest.txt  kernel version, module list, sha256 of each file
#   SHA256SUMS    the same hashes, for `sha256sum -c`
#
# Idempotent: when every output exists and none of its inputs (the kernel,
# the modules, busybox, this script) is newer than manifest.txt, it does
# nothing. --force rebuilds everything.
#
# Needs (Debian 12): apt-get install linux-image-amd64 busybox-static cpio
# dropbear-bin (plus e2fsprogs, kmod, gzip, coreutils, libc-bin's ldd —
# present on any Debian system).
#
# The guest's /init (busybox sh, PID 1):
#   - mounts proc, sys, devtmpfs (+ devpts, tmpfs /run, /tmp),
#   - insmods the modules listed in /etc/yun/modules.order (dependency order,
#     computed here from modinfo),
#   - prints on the console (use console=ttyS0):
#       yun-guest: booted kernel <uname -r>
#       yun-guest: hostname <name>          (yun.hostname=NAME on the cmdline)
#       yun-guest: block devices: vda(16MiB) ...
#       yun-guest: net devices: lo ...
#       yun-guest: disk /dev/vda: <first line of /yun-disk.txt> (mounted ro)
#   - starts busybox acpid so an ACPI power button press (virsh shutdown)
#     powers the guest off; `kill -USR2 1` / busybox `poweroff` do the same;
#   - when it has a NIC (eth0, the first one that is not lo): DHCP (udhcpc,
#     10 tries 2 s apart; address, routes incl. option 121, hostname, DNS),
#     then the SSH keys and hostname from the metadata service at
#     169.254.169.254 (EC2 layout, else OpenStack's meta_data.json; ~30 s of
#     retries), then dropbear on port 22 (keys only, root):
#       yun-guest: ip <address>
#       yun-guest: hostname <name>          (the metadata's, else DHCP's)
#       yun-guest: keys <n>
#       yun-guest: sshd up
#     (no lease after ~20 s: one line "yun-guest: net: no DHCP lease on
#     eth0", and on; no NIC: nothing, at once);
#   - prints "yun-guest: ready (uptime N s)";
#   - then idles forever. yun.shell=1 on the cmdline also respawns a shell on
#     the console (only useful with an interactive serial, e.g. a pty).

set -euo pipefail

PROG=${0##*/}
OUT=./guest
FORCE=0
KVER=${KVER:-}
DISK_MIB=16

# Wanted modules; their dependencies are added (first) automatically.
REQUIRED_MODULES=(virtio_pci virtio_blk virtio_net)
# Nice to have: ACPI power button -> evdev -> acpid; ext4 (also drives ext2)
# so the guest can mount /dev/vda read-only.
# ext4 needs the crc32c crypto driver at mount time (a softdep, not a
# depends): crc32c_generic works on any CPU, TCG's included.
OPTIONAL_MODULES=(button evdev crc32c_generic ext4)

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
info() { echo "$PROG: $*"; }

while [ $# -gt 0 ]; do
    case $1 in
        --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2 ;;
        --out=*) OUT=${1#--out=}; shift ;;
        --force) FORCE=1; shift ;;
        --kernel-version) [ $# -ge 2 ] || die "--kernel-version needs a value"; KVER=$2; shift 2 ;;
        --kernel-version=*) KVER=${1#--kernel-version=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
done

# ---------------------------------------------------------------- inputs ---

missing_pkgs=()
# busybox-static is a statically linked /bin/busybox; the dynamic "busybox"
# package would need its libc in the initramfs, so insist on the static one.
BUSYBOX=/bin/busybox
bb_status=$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)
if [ "$bb_status" != "install ok installed" ] || [ ! -x "$BUSYBOX" ]; then
    missing_pkgs+=(busybox-static)
fi
command -v cpio >/dev/null 2>&1 || missing_pkgs+=(cpio)
# The guest's SSH server: Debian's dynamically linked dropbear; ldd below
# finds the libraries it needs.
DROPBEAR=/usr/sbin/dropbear
DROPBEARKEY=/usr/bin/dropbearkey
if [ ! -x "$DROPBEAR" ] || [ ! -x "$DROPBEARKEY" ]; then
    missing_pkgs+=(dropbear-bin)
fi

pick_kernel() {
    # newest /boot/vmlinuz-VER that has a matching /lib/modules/VER
    local k v best=""
    for k in /boot/vmlinuz-*; do
        [ -e "$k" ] || continue
        v=${k#/boot/vmlinuz-}
        [ -d "/lib/modules/$v/kernel" ] || continue
        best=$(printf '%s\n%s\n' "$best" "$v" | sed '/^$/d' | sort -V | tail -n1)
    done
    printf '%s' "$best"
}
if [ -z "$KVER" ]; then
    KVER=$(pick_kernel)
fi
if [ -z "$KVER" ] || [ ! -r "/boot/vmlinuz-$KVER" ] || [ ! -d "/lib/modules/$KVER" ]; then
    missing_pkgs+=(linux-image-amd64)
fi

for t in modinfo mke2fs debugfs gzip sha256sum ldd; do
    command -v "$t" >/dev/null 2>&1 || die "'$t' not found (kmod, e2fsprogs, gzip, coreutils, libc-bin)"
done

if [ ${#missing_pkgs[@]} -gt 0 ]; then
    echo "$PROG: error: missing: ${missing_pkgs[*]}" >&2
    echo "$PROG: install them with:  apt-get install ${missing_pkgs[*]}" >&2
    [ -z "$KVER" ] || echo "$PROG: (kernel version looked for: $KVER)" >&2
    exit 1
fi

KERNEL=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER

is_builtin() {
    [ -r "$MODDIR/modules.builtin" ] || return 1
    grep -qE "/$1\.ko\$" "$MODDIR/modules.builtin" ||
        grep -qE "/${1//_/-}\.ko\$" "$MODDIR/modules.builtin"
}

# Resolve modules and their dependencies into load order (post-order DFS).
declare -A MOD_SEEN=() MOD_FILE=()
MOD_ORDER=()
resolve() {
    local name=$1 required=$2 f deps d
    [ -z "${MOD_SEEN[$name]+x}" ] || return 0
    MOD_SEEN[$name]=1
    if ! f=$(modinfo -k "$KVER" -F filename "$name" 2>/dev/null) || [ -z "$f" ]; then
        if is_builtin "$name"; then return 0; fi
        if [ "$required" = 1 ]; then die "module $name not found for kernel $KVER"; fi
        info "warning: optional module $name not found for $KVER; skipped"
        return 0
    fi
    if [ "$f" = "(builtin)" ] || [ "${f#/}" = "$f" ]; then return 0; fi
    deps=$(modinfo -k "$KVER" -F depends "$name" 2>/dev/null || true)
    local IFS=,
    for d in $deps; do
        [ -n "$d" ] && resolve "$d" "$required"
    done
    MOD_FILE[$name]=$f
    MOD_ORDER+=("$name")
}
for m in "${REQUIRED_MODULES[@]}"; do resolve "$m" 1; done
for m in "${OPTIONAL_MODULES[@]}"; do resolve "$m" 0; done

# The shared objects dropbear and dropbearkey load, the dynamic loader
# included, as ldd prints them ("libz.so.1 => /lib/.../libz.so.1 (0x...)",
# "/lib64/ld-linux-x86-64.so.2 (0x...)"); each goes to the same path in the
# guest. linux-vdso is the kernel's: no file.
shared_libs() {
    ldd "$@" | awk '
        $2 == "=>" && $3 ~ /^\// { print $3; next }
        $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | LC_ALL=C sort -u
}
mapfile -t LIBS < <(shared_libs "$DROPBEAR" "$DROPBEARKEY")
[ ${#LIBS[@]} -gt 0 ] || die "ldd found no libraries for $DROPBEAR"

# Everything whose change must trigger a rebuild.
INPUTS=("$KERNEL" "$BUSYBOX" "$DROPBEAR" "$DROPBEARKEY" "$0")
for m in "${MOD_ORDER[@]}"; do INPUTS+=("${MOD_FILE[$m]}"); done
for l in "${LIBS[@]}"; do INPUTS+=("$(readlink -f "$l")"); done

OUTPUTS=(vmlinuz initrd.img disk.raw manifest.txt SHA256SUMS)

# ------------------------------------------------------------ up to date? --

up_to_date() {
    local o i
    for o in "${OUTPUTS[@]}"; do [ -s "$OUT/$o" ] || return 1; done
    grep -qx "kernel_version=$KVER" "$OUT/manifest.txt" || return 1
    for o in "${OUTPUTS[@]}"; do
        for i in "${INPUTS[@]}"; do
            [ "$OUT/$o" -nt "$i" ] || return 1
        done
    done
    return 0
}

if [ "$FORCE" = 0 ] && up_to_date; then
    info "$OUT is up to date (kernel $KVER); nothing to do (--force rebuilds)"
    exit 0
fi

# ----------------------------------------------------------------- build ---

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.mkguest.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# Reproducible timestamps: everything in the archive gets the kernel's mtime.
EPOCH=$(stat -c %Y "$KERNEL")
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc/yun,etc/acpi/PWRF,proc,sys,dev,run,tmp,mnt,root,var/log,"lib/modules/$KVER"}
chmod 1777 "$ROOT/tmp"

cp "$BUSYBOX" "$ROOT/bin/busybox"
# One symlink per applet, in the directory busybox itself would use.
while read -r applet; do
    case $applet in
        /bin/busybox|"") continue ;;
    esac
    dir=${applet%/*}; name=${applet##*/}
    mkdir -p "$ROOT$dir"
    [ -e "$ROOT$dir/$name" ] || ln -s /bin/busybox "$ROOT$dir/$name"
done < <("$BUSYBOX" --list-full | sed 's|^|/|')

# dropbear (SSH server) and dropbearkey, with the shared objects they load at
# the paths the loader looks for them (the loader's own path is in the
# binaries). Copied through symlinks: plain files in the guest.
cp "$DROPBEAR" "$ROOT/usr/sbin/dropbear"
cp "$DROPBEARKEY" "$ROOT/usr/bin/dropbearkey"
for l in "${LIBS[@]}"; do
    mkdir -p "$ROOT${l%/*}"
    cp -L "$l" "$ROOT$l"
done
mkdir -p "$ROOT/etc/dropbear"
chmod 700 "$ROOT/root"

# /dev/console must exist before /init runs (the kernel opens it). The
# kernel's built-in initramfs has one too; add ours when we can.
if [ "$(id -u)" = 0 ]; then
    mknod -m 600 "$ROOT/dev/console" c 5 1
    mknod -m 666 "$ROOT/dev/null" c 1 3
fi

# Modules, decompressed (busybox insmod on Debian 12 reads plain .ko only).
: > "$ROOT/etc/yun/modules.order"
for m in "${MOD_ORDER[@]}"; do
    src=${MOD_FILE[$m]}
    dst=$ROOT/lib/modules/$KVER/$m.ko
    case $src in
        *.ko) cp "$src" "$dst" ;;
        *.ko.xz) xz -dc "$src" > "$dst" ;;
        *.ko.zst) zstd -qdc "$src" > "$dst" ;;
        *.ko.gz) gzip -dc "$src" > "$dst" ;;
        *) die "unknown module file type: $src" ;;
    esac
    echo "$m" >> "$ROOT/etc/yun/modules.order"
done
echo "$KVER" > "$ROOT/etc/yun/kernel-version"

echo yun-guest > "$ROOT/etc/hostname"
echo 'root:x:0:0:root:/root:/bin/sh' > "$ROOT/etc/passwd"
echo 'root:x:0:' > "$ROOT/etc/group"
echo 'root:*:1:0:99999:7:::' > "$ROOT/etc/shadow"
chmod 600 "$ROOT/etc/shadow"
echo /bin/sh > "$ROOT/etc/shells"
: > "$ROOT/etc/resolv.conf"

# udhcpc runs this at each DHCP event ($1) with the lease in the environment.
cat > "$ROOT/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# udhcpc event script (generated by contrib/guest/mkguest.sh).
# Sets the address, the routes (option 121 classless static routes when
# given, else the router option: RFC 3442 says a client with option 121
# ignores option 3), the hostname and /etc/resolv.conf; writes the lease's
# main values to /run/udhcpc.$interface (net-up reads ip= there).
IF=$interface
case $1 in
deconfig)
    ip -4 addr flush dev "$IF"
    ip link set "$IF" up
    ;;
bound|renew)
    ip -4 addr flush dev "$IF"
    ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$IF"
    [ -z "$mtu" ] || ip link set "$IF" mtu "$mtu"
    # add_route DEST GW: on-link when GW is 0.0.0.0; a gateway outside the
    # subnet gets a host route to it first.
    add_route() {
        if [ "$2" = 0.0.0.0 ]; then
            ip route replace "$1" dev "$IF"
        elif ! ip route replace "$1" via "$2" dev "$IF" 2>/dev/null; then
            ip route replace "$2" dev "$IF" &&
                ip route replace "$1" via "$2" dev "$IF"
        fi
    }
    if [ -n "$staticroutes" ]; then
        # "DEST/LEN GW DEST/LEN GW ..."
        set -- $staticroutes
        while [ $# -ge 2 ]; do
            add_route "$1" "$2" || echo "udhcpc.script: route $1 via $2 failed" >&2
            shift 2
        done
    elif [ -n "$router" ]; then
        for r in $router; do
            add_route default "$r" && break
        done
    fi
    if [ -n "$hostname" ]; then
        h=$(echo "$hostname" | tr -cd 'A-Za-z0-9.-' | cut -c1-63)
        [ -z "$h" ] || { hostname "$h"; echo "$h" > /etc/hostname; }
    fi
    {
        [ -z "$domain" ] || echo "search $domain"
        for d in $dns; do echo "nameserver $d"; done
    } > /etc/resolv.conf
    # for a look (and net-up reads ip=): not meant to be sourced
    printf 'ip=%s\nmask=%s\nrouter=%s\nstaticroutes=%s\n' \
        "$ip" "$mask" "$router" "$staticroutes" > "/run/udhcpc.$IF"
    ;;
leasefail|nak)
    ;;
esac
exit 0
EOF
chmod 755 "$ROOT/etc/udhcpc.script"

# Prints the string value(s) of one top-level key of a JSON document: the
# string itself, or each string value of an object (OpenStack's
# "public_keys": {"name": "ssh-ed25519 AAAA..."}). \n, \t, \", \\, \/
# unescaped; no \uXXXX (keys and host names are ASCII). busybox has no jq.
cat > "$ROOT/etc/yun/json-get.awk" <<'EOF'
# awk -v key=NAME -f json-get.awk FILE
{ buf = buf $0 "\n" }
END {
    n = length(buf); i = 1; depth = 0; inkey = 0
    while (i <= n) {
        c = substr(buf, i, 1)
        if (c == "\"") {
            s = ""; i++
            while (i <= n) {
                c = substr(buf, i, 1)
                if (c == "\\") {
                    e = substr(buf, i + 1, 1); i += 2
                    if (e == "n") s = s "\n"; else if (e == "t") s = s "\t"
                    else if (e == "r") s = s ""; else s = s e
                    continue
                }
                if (c == "\"") { i++; break }
                s = s c; i++
            }
            # a key when the next non-blank character is ':'
            j = i
            while (j <= n && substr(buf, j, 1) ~ /[ \t\r\n]/) j++
            if (substr(buf, j, 1) == ":") {
                k[depth] = s; i = j + 1
            } else if (depth == 1 && k[1] == key) {
                print s
            } else if (depth == 2 && inkey) {
                print s
            }
            continue
        }
        if (c == "{" || c == "[") {
            depth++
            if (depth == 2 && k[1] == key && c == "{") inkey = 1
            k[depth] = ""
        } else if (c == "}" || c == "]") {
            if (depth == 2) inkey = 0
            depth--
        } else if (c == ",") {
            k[depth] = ""
        }
        i++
    }
}
EOF

# Network, SSH keys, sshd: /init runs this (and waits for it) before 'ready'.
cat > "$ROOT/etc/yun/net-up" <<'EOF'
#!/bin/sh
# /etc/yun/net-up (generated by contrib/guest/mkguest.sh), run by /init:
# DHCP on the first NIC, SSH keys and hostname from the metadata service,
# dropbear on port 22. No NIC: nothing. No lease: one line, and done.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
log() { echo "yun-guest: $*"; }
uptime_s() { read -r up _ < /proc/uptime; echo "${up%.*}"; }
MD=http://169.254.169.254
MD_WAIT=30

IF=""
for n in /sys/class/net/*; do
    [ -e "$n" ] || continue
    case ${n##*/} in lo) continue ;; esac
    IF=${n##*/}
    break
done
[ -n "$IF" ] || exit 0

ip link set "$IF" up
host_before=$(hostname)
# staticroutes (option 121) is not in udhcpc's default request list.
if ! udhcpc -i "$IF" -t 10 -T 2 -n -q -O staticroutes \
        -s /etc/udhcpc.script >/run/udhcpc.log 2>&1; then
    log "net: no DHCP lease on $IF"
    exit 0
fi
ip=$(sed -n 's/^ip=//p' "/run/udhcpc.$IF" 2>/dev/null)
log "ip ${ip:-unknown}"

# -------------------------------------------------------- metadata ----
# EC2 layout first (/latest/meta-data/...), else OpenStack's
# /openstack/latest/meta_data.json; retried for ~MD_WAIT s while neither
# answers. The EC2 side counts as there when any of its paths answers (a
# service need not list directories).
# (busybox 1.35's wget -T crashes: timeout(1) bounds each request instead)
fetch() { timeout 5 wget -q -O- "$MD$1" 2>/dev/null; }
json=/run/meta_data.json
keys=/run/authorized_keys
: > "$keys"
src=""
end=$(( $(uptime_s) + MD_WAIT ))
while :; do
    if fetch /latest/meta-data/public-keys/0/openssh-key > "$keys.0" ||
            fetch /latest/meta-data/hostname >/dev/null ||
            fetch /latest/meta-data/ >/dev/null; then
        src=ec2; break
    fi
    if fetch /openstack/latest/meta_data.json > "$json" && [ -s "$json" ]; then
        src=openstack; break
    fi
    [ "$(uptime_s)" -lt "$end" ] || break
    sleep 2
done

name=""
if [ "$src" = ec2 ]; then
    # "0=name" lines list the keys (EC2 and Nova serve the index); without
    # one, key 0 alone.
    idx=$(fetch /latest/meta-data/public-keys/ | sed -n 's/^\([0-9][0-9]*\)=.*/\1/p')
    if [ -n "$idx" ]; then
        for i in $idx; do
            fetch "/latest/meta-data/public-keys/$i/openssh-key" >> "$keys" && echo >> "$keys"
        done
    else
        cat "$keys.0" >> "$keys" && echo >> "$keys"
    fi
    name=$(fetch /latest/meta-data/hostname)
    # no keys there: OpenStack's document may still have them
    if ! grep -q '[^[:space:]]' "$keys" &&
            fetch /openstack/latest/meta_data.json > "$json" && [ -s "$json" ]; then
        src=openstack
    fi
fi
if [ "$src" = openstack ]; then
    awk -v key=public_keys -f /etc/yun/json-get.awk "$json" >> "$keys"
    [ -n "$name" ] || name=$(awk -v key=hostname -f /etc/yun/json-get.awk "$json" | head -n1)
fi
[ -n "$src" ] || log "net: no metadata service at $MD"

# keep key lines only: no blanks, comments or CRs
umask 077
mkdir -p /root/.ssh
chmod 700 /root /root/.ssh
tr -d '\r' < "$keys" | sed -e 's/^[[:space:]]*//' -e '/^$/d' -e '/^#/d' > /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
umask 022

name=$(echo "$name" | head -n1 | tr -cd 'A-Za-z0-9.-' | cut -c1-63)
if [ -n "$name" ]; then
    hostname "$name"
    echo "$name" > /etc/hostname
    log "hostname $name"
elif [ "$(hostname)" != "$host_before" ]; then
    log "hostname $(hostname)"      # DHCP's
fi
log "keys $(grep -c . /root/.ssh/authorized_keys)"

# ---------------------------------------------------------- sshd ----
# An ed25519 host key made now (fast, even under TCG); -R makes the other
# types on demand for clients that want them. -s: keys only, no passwords.
hk=/etc/dropbear/dropbear_ed25519_host_key
[ -s "$hk" ] || dropbearkey -t ed25519 -f "$hk" >/dev/null 2>&1
fp=$(dropbearkey -y -f "$hk" 2>/dev/null | sed -n 's/^Fingerprint: //p')
[ -z "$fp" ] || log "ssh host key ed25519 $fp"
dropbear -F -E -R -s -p 22 -P /run/dropbear.pid >>/run/dropbear.log 2>&1 &
# up when something listens on port 22 (0x16) in /proc/net/tcp{,6}
i=0
while [ $i -lt 50 ]; do
    if grep -qE '^ *[0-9]+: [0-9A-F]+:0016 [0-9A-F]+:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
        log "sshd up"
        exit 0
    fi
    sleep 0.1; i=$((i + 1))
done
log "sshd did not start (see /run/dropbear.log)"
exit 1
EOF
chmod 755 "$ROOT/etc/yun/net-up"

# busybox acpid runs /etc/acpi/PWRF/00000080 on a power-button press.
cat > "$ROOT/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
# ACPI power button: ask init (PID 1) for a clean poweroff.
kill -USR2 1
EOF
chmod 755 "$ROOT/etc/acpi/PWRF/00000080"

cat > "$ROOT/init" <<'EOF'
#!/bin/sh
# yun demo guest /init (generated by contrib/guest/mkguest.sh). PID 1.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1

log() { echo "yun-guest: $*"; }
uptime_s() { read -r up _ < /proc/uptime; echo "$up"; }

# A value from the kernel command line: cmdline_arg yun.hostname
cmdline_arg() {
    read -r cmdline < /proc/cmdline
    for w in $cmdline; do
        case $w in "$1="*) echo "${w#*=}"; return 0 ;; "$1") echo 1; return 0 ;; esac
    done
    return 1
}

KVER=$(uname -r)
MODVER=$(cat /etc/yun/kernel-version)
if [ "$KVER" != "$MODVER" ]; then
    log "WARNING: running kernel $KVER but modules are for $MODVER"
fi
while read -r m; do
    [ -n "$m" ] || continue
    insmod "/lib/modules/$MODVER/$m.ko" || log "insmod $m failed"
done < /etc/yun/modules.order

HOST=$(cmdline_arg yun.hostname || cat /etc/hostname)
hostname "$HOST"

# virtio probing is asynchronous: give block/net devices a moment to appear
# when the PCI bus has virtio devices (vendor 0x1af4).
want_blk=0 want_net=0
for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor" 2>/dev/null)" = 0x1af4 ] || continue
    case $(cat "$d/device") in
        0x1001|0x1042) want_blk=1 ;;
        0x1000|0x1041) want_net=1 ;;
    esac
done
i=0
while [ $i -lt 50 ]; do
    ok=1
    if [ $want_blk = 1 ] && ! ls -d /sys/block/vd* >/dev/null 2>&1; then ok=0; fi
    if [ $want_net = 1 ]; then
        nics=0
        for n in /sys/class/net/*; do [ "${n##*/}" = lo ] || nics=1; done
        [ $nics = 1 ] || ok=0
    fi
    [ $ok = 1 ] && break
    sleep 0.1; i=$((i + 1))
done

blk=""
for b in /sys/block/*; do
    [ -e "$b" ] || continue
    n=${b##*/}
    case $n in loop*|ram*) continue ;; esac
    sectors=$(cat "$b/size")
    blk="$blk $n($((sectors / 2048))MiB)"
done
net=""
for n in /sys/class/net/*; do
    [ -e "$n" ] || continue
    case ${n##*/} in
        lo) net="$net lo" ;;
        *) net="$net ${n##*/}($(cat "$n/address" 2>/dev/null))" ;;
    esac
done

echo
log "booted kernel $(uname -r)"
log "hostname $(hostname)"
log "block devices:${blk:- none}"
log "net devices:${net:- none}"

ip link set lo up 2>/dev/null || true

if [ -b /dev/vda ]; then
    mkdir -p /mnt/vda
    if mount -o ro /dev/vda /mnt/vda 2>/dev/null; then
        log "disk /dev/vda: $(head -n1 /mnt/vda/yun-disk.txt 2>/dev/null || echo 'no yun-disk.txt') (mounted ro)"
    else
        log "disk /dev/vda: present, no mountable file system (raw data disk?)"
    fi
fi

if [ -e /dev/input/event0 ]; then
    acpid -c /etc/acpi -l /run/acpid.log -p /run/acpid.pid && log "acpid started (ACPI power button -> poweroff)"
else
    log "no input event device: ACPI power button not handled"
fi

SLEEPER="" NETUP=""
going_down() {
    log "shutting down ($1)"
    [ -z "$SLEEPER" ] || kill "$SLEEPER" 2>/dev/null
    [ -z "$NETUP" ] || kill "$NETUP" 2>/dev/null
    [ -f /run/acpid.pid ] && kill "$(cat /run/acpid.pid)" 2>/dev/null
    kill -TERM -1 2>/dev/null; sleep 0.2
    sync
    umount /mnt/vda 2>/dev/null
    log "$1 now"
    "$1" -f
    # not reached
    while :; do sleep 1; done
}
trap 'going_down poweroff' USR2
trap 'going_down halt' USR1
trap 'going_down reboot' TERM INT

if cmdline_arg yun.shell >/dev/null; then
    ( while :; do setsid cttyhack sh -l; sleep 1; done ) &
    log "shell on console (yun.shell)"
fi

# Network (DHCP, metadata, sshd) when there is a NIC; see /etc/yun/net-up.
# Waited for with `wait`, which a trapped signal interrupts: the power
# button still works while DHCP is trying.
/etc/yun/net-up &
NETUP=$!
wait "$NETUP"
NETUP=""

log "ready (uptime $(uptime_s) s)"

# Idle. `wait` returns when a trapped signal arrives, so traps run at once.
while :; do
    sleep 3600 &
    SLEEPER=$!
    wait "$SLEEPER"
    SLEEPER=""
done
EOF
chmod 755 "$ROOT/init"

find "$ROOT" -exec touch -h -d "@$EPOCH" {} +
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9 -n > "$WORK/initrd.img"

cp "$KERNEL" "$WORK/vmlinuz"
chmod 644 "$WORK/vmlinuz" "$WORK/initrd.img"

# Data/root disk: small ext2 with a marker file, reproducible (fixed UUID,
# hash seed and time) so its sha256 is stable for a given e2fsprogs.
mkdir -p "$WORK/disk"
printf 'yun data disk (made by mkguest.sh for kernel %s)\n' "$KVER" > "$WORK/disk/yun-disk.txt"
touch -d "@$EPOCH" "$WORK/disk/yun-disk.txt" "$WORK/disk"
truncate -s "${DISK_MIB}M" "$WORK/disk.raw"
E2FSPROGS_FAKE_TIME=$EPOCH mke2fs -q -F -t ext2 -L yun-data -m 0 \
    -U 6d7c0b7e-0000-4000-8000-79756e677374 \
    -E hash_seed=6d7c0b7e-0000-4000-8000-79756e677374,root_owner=0:0 \
    -d "$WORK/disk" "$WORK/disk.raw" >/dev/null
# mke2fs -d copies the host file's ctime (the build time) and owner (the
# builder, when not root): pin them.
for f in "ctime @$EPOCH" "uid 0" "gid 0"; do
    E2FSPROGS_FAKE_TIME=$EPOCH debugfs -w -R "set_inode_field /yun-disk.txt $f" \
        "$WORK/disk.raw" >/dev/null 2>&1
done
chmod 644 "$WORK/disk.raw"

(cd "$WORK" && sha256sum vmlinuz initrd.img disk.raw) > "$WORK/SHA256SUMS"
{
    echo "# yun demo guest, made by contrib/guest/mkguest.sh; not for committing"
    echo "kernel_version=$KVER"
    echo "kernel_source=$KERNEL"
    echo "kernel_package=$(dpkg -S "$KERNEL" 2>/dev/null | cut -d: -f1 || true) $(dpkg-query -W -f='${Version}' "linux-image-$KVER" 2>/dev/null || true)"
    echo "busybox=$BUSYBOX $(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || true)"
    echo "modules=${MOD_ORDER[*]}"
    echo "dropbear=$DROPBEAR $(dpkg-query -W -f='${Version}' dropbear-bin 2>/dev/null || true)"
    echo "libs=${LIBS[*]}"
    echo "cmdline=console=ttyS0"
    echo "disk=disk.raw ${DISK_MIB}MiB ext2 label=yun-data"
    while read -r sum file; do
        echo "sha256.$file=$sum"
        echo "size.$file=$(stat -c %s "$WORK/$file")"
    done < "$WORK/SHA256SUMS"
} > "$WORK/manifest.txt"

# Publish: data first, manifest last (its mtime marks a complete build).
for o in vmlinuz initrd.img disk.raw SHA256SUMS manifest.txt; do
    mv -f "$WORK/$o" "$OUT/$o"
done

info "built guest for kernel $KVER in $OUT:"
(cd "$OUT" && stat -c '  %n  %s bytes' vmlinuz initrd.img disk.raw manifest.txt SHA256SUMS)
info "modules: ${MOD_ORDER[*]}"
