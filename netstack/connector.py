"""The connector: a helper inside the container's user and network namespaces that
opens connections to the container's ports and hands the sockets to the supervisor.

setns(CLONE_NEWUSER) works only in a single-threaded process, and the
supervisor runs trio (which may start threads). So the supervisor forks this
helper before trio starts, right after the container's PID 1 exists. The
helper joins PID 1's user and network namespaces and then serves requests on
a SOCK_SEQPACKET socketpair. A socket keeps the network namespace it was
created in, whoever uses it later, so for TCP the helper only makes sockets,
by the batch ("pool 64" -> 64 fresh sockets with IP_TRANSPARENT set, passed
with SCM_RIGHTS), and the supervisor binds and connects them itself, without
a round trip per connection. "tcp|udp 80 CLIENT_IP CLIENT_PORT" -> a socket
connected here (UDP, and TCP's last resort, ::1), or "E<errno>". The first
message, "ready 1|0", says whether the source routing below is in place.

Keeping the client's address. The helper binds its socket to the client's
address with IP_TRANSPARENT (the container's root has CAP_NET_ADMIN over its
own netns) and connects to FORWARD_ADDR, a /32 on the container's lo. The
server's replies to that foreign address would follow the default route out
of tap0; a policy rule sends everything *from* FORWARD_ADDR to a table whose
only route is `local default dev lo`, so they come back to the helper's
socket instead. Traffic the container starts itself leaves from its tap0
address and is untouched. Loopback clients appear as the host's gateway
address (10.0.2.2 with slirp4netns), as with slirp4netns's own forwarding.
If the rule cannot be set, or the service listens on loopback only, the
helper connects to 127.0.0.1 (then ::1) and the container sees 127.0.0.1.

The helper dies with the supervisor (PR_SET_PDEATHSIG and EOF on its socket).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
import socket

from rootless import syscalls as sc

TARGETS = ("127.0.0.1", "::1")
FORWARD_ADDR = "169.254.99.1"
ROUTE_TABLE = 29292
IP_TRANSPARENT = 19


def setup_source_routing() -> bool:
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")  # PID 1 may not have done it yet
            ipr.addr("add", index=lo, address=FORWARD_ADDR, prefixlen=32)
            # local default dev lo table ROUTE_TABLE (type 2: RTN_LOCAL, scope host)
            ipr.route("add", dst="0.0.0.0", dst_len=0, type=2, scope=254, table=ROUTE_TABLE,
                      oif=lo)
            ipr.rule("add", table=ROUTE_TABLE, priority=100, src=FORWARD_ADDR, src_len=32)
        return True
    except Exception:
        return False


def _connect_as(proto: str, port: int, src: str, src_port: int) -> socket.socket:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        try:
            s.bind((src, src_port))
        except OSError:
            s.bind((src, 0))  # that port is taken here: keep the address only
        s.connect((FORWARD_ADDR, port))
    except OSError:
        s.close()
        raise
    return s


def _connect(proto: str, port: int) -> socket.socket:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    last: OSError | None = None
    for host in TARGETS:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, kind)
        try:
            s.connect((host, port))
            return s
        except OSError as e:
            s.close()
            last = e
    assert last is not None
    raise last


def _source(peer: str, loopback_as: str) -> str | None:
    """The IPv4 address the container should see, or None to not try."""
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is None:
            return None
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return loopback_as or None
    return str(ip)


def source(peer: str, loopback_as: str) -> str | None:
    return _source(peer, loopback_as)


def _pool(n: int) -> list[socket.socket]:
    """Fresh TCP sockets of the container's netns, IP_TRANSPARENT already set."""
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        except OSError:
            pass
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out.append(s)
    return out


def _serve(chan: socket.socket, keep_source: bool, loopback_as: str) -> None:
    chan.send(b"ready 1" if keep_source else b"ready 0")
    while True:
        msg = chan.recv(128)
        if not msg:
            return
        proto, port_text, peer, peer_port = [*msg.decode().split(), "", ""][:4]
        if proto == "pool":
            # A batch of sockets, so the supervisor connects them itself: one
            # round trip here per POOL_SIZE connections instead of one each.
            socks = _pool(min(int(port_text), 250))
            socket.send_fds(chan, [b"ok"], [x.fileno() for x in socks])
            for x in socks:
                x.close()
            continue
        port = int(port_text)
        # UDP keeps no source: a server answering from a wildcard socket picks
        # its reply's source by route (tap0's address), which the policy rule
        # cannot tell from the container's own traffic. TCP replies always
        # come from the address that was connected to.
        src = _source(peer, loopback_as) if keep_source and proto == "tcp" else None
        try:
            try:
                if src is None:
                    raise OSError(errno.EAFNOSUPPORT, "no source to keep")
                s = _connect_as(proto, port, src, int(peer_port or 0))
            except OSError:
                s = _connect(proto, port)
        except OSError as e:
            chan.send(f"E{e.errno or errno.EIO}".encode())
            continue
        socket.send_fds(chan, [b"ok"], [s.fileno()])
        s.close()


def start(pid: int, loopback_as: str = "") -> tuple[socket.socket, int]:
    """Fork the connector for the container whose PID 1 is pid; returns (channel, its pid)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    user_fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    net_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    supervisor = os.getpid()
    helper = os.fork()
    if helper == 0:
        code = 1
        try:
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != supervisor:
                os._exit(1)
            keep = sorted((child.fileno(), user_fd, net_fd))
            # Nothing of the supervisor's (its lock, the exit fd that keeps
            # slirp4netns alive, client sockets) may outlive it here.
            low = 3
            for fd in keep:
                os.closerange(low, fd)
                low = fd + 1
            os.closerange(low, 1 << 16)
            sc.setns(user_fd, sc.CLONE_NEWUSER)
            sc.setns(net_fd, sc.CLONE_NEWNET)
            os.close(user_fd)
            os.close(net_fd)
            try:
                with open("/proc/self/comm", "w") as f:
                    f.write("rl-connector")
            except OSError:
                pass
            _serve(child, setup_source_routing(), loopback_as)
            code = 0
        except BaseException:
            pass
        os._exit(code)
    os.close(user_fd)
    os.close(net_fd)
    child.close()
    return parent, helper
