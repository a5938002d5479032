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
#       yun-guest: ready (uptime N s)
#   - starts busybox acpid so an ACPI power button press (virsh shutdown)
#     powers the guest off; `kill -USR2 1` / busybox `poweroff` do the same;
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

SLEEPER=""
going_down() {
    log "shutting down ($1)"
    [ -z "$SLEEPER" ] || kill "$SLEEPER" 2>/dev/null
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
