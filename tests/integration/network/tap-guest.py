#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A stand-in for a guest's NIC in the multi-host network test.

  tap-guest.py relay --host-netns P --tap NAME --guest-netns P [--ifname eth0]
      Attaches to the agent's persistent tap NAME inside the host's network
      namespace P (a persistent tap takes a new owner when none holds it),
      makes a tap IFNAME in the guest's namespace and copies frames both
      ways, so that what the guest sends goes through the agent's tap, its
      bridge, its nftables rules and its uplink, as a QEMU guest's would.
      A tap fd stays bound to its device whatever namespace its process is
      in, so one process holds both. A tap on each side (rather than a
      veth and a packet socket) gives frames that are whole: no GSO, no
      partial checksums. Exits when either tap goes (e.g. the agent removed
      it); the guest's IFNAME goes with it. Writes "ready" on stdout once
      both are attached.

  tap-guest.py sniff --netns P --ifname eth0 --seconds N --udp-sport PORT
      Prints the source MAC of every IPv4 UDP frame from PORT that IFNAME
      receives in namespace P during N seconds.
"""
import argparse
import ctypes
import errno
import fcntl
import os
import select
import socket
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4

libc = ctypes.CDLL(None, use_errno=True)


def setns(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns %s: %s" % (path, os.strerror(e)))
    finally:
        os.close(fd)


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    ifr = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    return fd


def relay(a):
    setns(a.host_netns)
    host = open_tap(a.tap)
    setns(a.guest_netns)
    guest = open_tap(a.ifname)
    print("ready", flush=True)
    other = {host: guest, guest: host}
    while True:
        ready, _, _ = select.select([host, guest], [], [])
        for fd in ready:
            try:
                frame = os.read(fd, 65536)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    continue
                # The tap was removed under us.
                print("tap gone: %s" % e, file=sys.stderr, flush=True)
                return 0
            try:
                os.write(other[fd], frame)
            except OSError:
                pass  # the other side is down: dropped, as on a wire


def sniff(a):
    setns(a.netns)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((a.ifname, ETH_P_ALL))
    end = time.monotonic() + a.seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return 0
        ready, _, _ = select.select([s], [], [], left)
        if not ready:
            continue
        frame, addr = s.recvfrom(65536)
        if addr[2] == PACKET_OUTGOING or len(frame) < 14 + 20 + 8:
            continue
        if struct.unpack("!H", frame[12:14])[0] != 0x0800 or frame[14 + 9] != 17:
            continue
        ihl = (frame[14] & 0x0F) * 4
        sport = struct.unpack("!H", frame[14 + ihl:14 + ihl + 2])[0]
        if sport == a.udp_sport:
            print(":".join("%02x" % b for b in frame[6:12]), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relay")
    r.add_argument("--host-netns", required=True)
    r.add_argument("--tap", required=True)
    r.add_argument("--guest-netns", required=True)
    r.add_argument("--ifname", default="eth0")
    s = sub.add_parser("sniff")
    s.add_argument("--netns", required=True)
    s.add_argument("--ifname", default="eth0")
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--udp-sport", type=int, required=True)
    a = p.parse_args()
    return relay(a) if a.cmd == "relay" else sniff(a)


if __name__ == "__main__":
    sys.exit(main())
