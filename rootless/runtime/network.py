"""Network namespace set-up done inside the container (the netstack does the rest)."""

from __future__ import annotations

import _socket  # loopback_up: socket.py's enums cost rl-oci's create ~3 ms
import fcntl
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCGIFINDEX = 0x8933
SIOCADDRT = 0x890B
IFF_UP = 0x1
RTF_UP = 0x1
RTF_GATEWAY = 0x2


def loopback_up() -> None:
    """Bring `lo` up in a fresh network namespace, as docker does for --network=none."""
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    finally:
        s.close()


def ipv6_up(iface: str, address: str, prefix: int, gateway: str) -> None:
    """A static IPv6 address and default route on iface (slirp4netns's tap0).

    Set by the container's PID 1 before its command runs, so the address is
    there from the first instruction (router advertisements would add one a
    second or two later; they are turned off). Plain ioctls: no netlink
    library in the container's PID 1. /proc/sys/net is the caller's network
    namespace's, and this runs before /proc/sys is made read-only.
    """
    import socket  # before pivot_root (the host's files), and only with slirp4netns

    conf = f"/proc/sys/net/ipv6/conf/{iface}"
    for name, value in (("accept_ra", "0"), ("accept_dad", "0"), ("disable_ipv6", "0")):
        with open(f"{conf}/{name}", "w") as f:
            f.write(value)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16si20x", iface.encode(), 0)
        index = struct.unpack("16si20x", fcntl.ioctl(s, SIOCGIFINDEX, ifreq))[1]
        addr = socket.inet_pton(socket.AF_INET6, address)
        fcntl.ioctl(s, SIOCSIFADDR, struct.pack("16sIi", addr, prefix, index))
        # struct in6_rtmsg: dst, src, gateway, type, dst_len, src_len, metric,
        # info (unsigned long), flags, ifindex
        route = struct.pack("16s16s16sIHHIxxxxQIi", bytes(16), bytes(16),
                            socket.inet_pton(socket.AF_INET6, gateway), 0, 0, 0, 1024, 0,
                            RTF_UP | RTF_GATEWAY, index)
        try:
            fcntl.ioctl(s, SIOCADDRT, route)
        except FileExistsError:
            pass  # a router advertisement came first: its route is the same
