#!/usr/bin/env bash
# Installs the Debian 12 packages yun needs to build, test and run an
# all-in-one cloud. Run as root. Used by the README and by CI.
set -euo pipefail

packages=(
    # build
    build-essential cmake pkg-config clang
    libvirt-dev libnanomsg-dev libprotobuf-c-dev protobuf-c-compiler
    liblmdb-dev libnl-3-dev libnl-route-3-dev libssl-dev libinih-dev
    libjson-c-dev libcmocka-dev libnftables-dev libmicrohttpd-dev
    # run: libvirt with QEMU, the tools the tests and the demo use
    libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
    linux-image-amd64 busybox-static cpio jq valgrind procps iproute2
    openssh-client nftables dnsmasq-base dropbear-bin iperf3
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all ${#packages[@]} packages are installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: ${missing[*]}; run this script as root" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}"
