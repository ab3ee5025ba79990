"""The user-defined networks' resolver, run by the network host (nethost.py) as
`python -m netstack.dns STATE_DIR EXIT_FD`.

One UDP socket on port 53 of every address in the host's namespace: the
destination of a query (IP_PKTINFO) is a network's gateway, so it says which
network asks, and names of containers on other networks never resolve there.
A name is a container's if a lease of that network lists it and the
container's record still exists; other names go to slirp4netns's forwarder
(the user's own resolvers). dnspython reads and writes the messages (why not
aardvark-dns: docs/decisions.md, "Networks").

It also ends the host: when no container NIC (a veth named rlv*) has existed
for nethost.IDLE seconds since the last client asked for the host, it drops
the pid file under the host's lock and leaves, taking the namespace along.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset
import trio

from rootless import paths

from . import ipam
from .options import SLIRP_DNS

TTL = 10
IP_PKTINFO = 8  # <linux/in.h>; the socket module of Python 3.11 lacks the name
FORWARD_TIMEOUT = 4.0
# Queries in flight at once (each forward holds a socket for up to FORWARD_TIMEOUT):
# beyond it a flood's datagrams are dropped, as a busy resolver drops them, rather
# than spending the host's memory and fds (every network's resolver is this one).
MAX_INFLIGHT = 256


_CACHE: dict[str, tuple[int, Any]] = {}
_SETTLED_NS = 1_000_000_000  # a change within the last second may share its mtime tick


def _by_mtime(path: str, load: Callable[[], Any]) -> Any:
    """load(), read again only when *path*'s mtime moved: a lease is a file linked into or
    unlinked from its directory (ipam.Leases), a network's record is replaced by a rename,
    so each change moves an mtime. While the mtime is recent, a second change could share
    its clock tick: read anew. OSError when *path* is gone."""
    mtime = os.stat(path).st_mtime_ns
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    value = load()
    if time.time_ns() - mtime > _SETTLED_NS:
        _CACHE[path] = (mtime, value)
    return value


def _leases(directory: str) -> dict[str, tuple[str, list[str], float]]:
    """A network's leases, as ipam.Leases reads them ({} for a directory gone)."""
    try:
        entries: dict[str, tuple[str, list[str], float]] = _by_mtime(
            directory, ipam.Leases(Path(directory)).entries)
    except OSError:
        return {}
    return entries


def _record(path: Path) -> Any:
    """A JSON file (a network's record in nets/)."""
    return _by_mtime(str(path), lambda: json.loads(path.read_text()))


def _networks_of(state: Path, leases: str, source: str) -> list[str]:
    """The leases directories to answer *source* from: the asking network's, then those of
    the other networks its container is connected to (`network connect`), as docker's
    resolver answers the names of every network a container is on."""
    out = [leases]
    owner = _leases(leases).get(source, ("",))[0] if source else ""
    if not owner:
        return out
    for entry in sorted(os.scandir(state / "nets"), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        try:
            other = str(_record(Path(entry.path))["leases"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if other not in out and any(who == owner for who, _, _ in _leases(other).values()):
            out.append(other)
    return out


def _answer(state: Path, gateway: str, query: dns.message.Message,
            source: str = "", containers: Path | None = None) -> dns.message.Message | None:
    """The reply from the names of the asking container's networks, or None to forward."""
    if not query.question:
        return None
    q = query.question[0]
    name = q.name.to_text(omit_final_dot=True).lower()
    try:
        net = _record(state / "nets" / gateway)
    except (OSError, ValueError):
        return None
    found: list[str] = []
    containers = containers or paths.containers_dir()
    for leases in _networks_of(state, str(net["leases"]), source):
        for addr, (owner, names, _) in _leases(leases).items():
            if name in (n.lower() for n in names) and (containers / owner).is_dir():
                found.append(addr)
    if not found:
        return None
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.AA | dns.flags.RA
    want = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(q.rdtype)
    addrs = [a for a in found if want and ipam.parse_address(a, "").version == want]
    if addrs:
        rrset = dns.rrset.RRset(q.name, dns.rdataclass.IN, q.rdtype)
        kind = dns.rdtypes.IN.A.A if want == 4 else dns.rdtypes.IN.AAAA.AAAA
        for a in addrs:  # built directly: from_text's tokenizer was most of a query's cost
            rrset.add(kind(dns.rdataclass.IN, q.rdtype, a), TTL)
        reply.answer.append(rrset)
    return reply  # NOERROR with no answer for a type the name lacks (never forwarded)


def _internal(state: Path, gateway: str) -> bool:
    try:
        return bool(_record(state / "nets" / gateway).get("internal"))
    except (OSError, ValueError, AttributeError):
        return True  # a network we do not know: answer nothing from outside


async def _forward(data: bytes) -> bytes | None:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock, trio.move_on_after(FORWARD_TIMEOUT):
        # Connected: the kernel takes replies from slirp4netns's resolver only, not a
        # container's forged answer flooded at the gateway's ephemeral ports.
        await sock.connect((SLIRP_DNS, 53))
        await sock.send(data)
        return await sock.recv(65535)
    return None


def _local(state: Path, data: bytes, peer: Any, gateway: str,
           containers: Path) -> tuple[dns.message.Message | None, bytes | None]:
    """(the query, the reply's wire form), answered here without waiting: the network's
    own names, NXDOMAIN on an internal network; no reply: forward the query; no
    query: a malformed datagram, answered by nothing, as by any resolver."""
    try:
        query = dns.message.from_wire(data)
    except Exception:
        return None, None
    reply = _answer(state, gateway, query, str(peer[0]) if peer else "", containers)
    if reply is None and _internal(state, gateway):
        reply = dns.message.make_response(query)  # no way out, for names either
        reply.set_rcode(dns.rcode.NXDOMAIN)
    return query, None if reply is None else reply.to_wire()


async def _send(sock: trio.socket.SocketType, out: bytes, gateway: str, peer: Any) -> None:
    # Sent from the address asked (the gateway), or the container's resolver drops it.
    info = struct.pack("@I4sI", 0, socket.inet_aton(gateway), 0)
    await sock.sendmsg([out], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, peer)


async def _forwarded(sock: trio.socket.SocketType, query: dns.message.Message, data: bytes,
                     peer: Any, gateway: str, inflight: list[int]) -> None:
    try:
        out = await _forward(data)
        if out is None:
            failure = dns.message.make_response(query)
            failure.set_rcode(dns.rcode.SERVFAIL)
            out = failure.to_wire()
        await _send(sock, out, gateway, peer)
    except Exception:
        # A hostile datagram (source port 0...) raising here would end the nursery, the
        # resolver and with it the network host: no answer instead.
        pass
    finally:
        inflight[0] -= 1


async def _serve(state: Path, ready: int) -> None:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    await sock.bind(("0.0.0.0", 53))
    os.write(ready, b"R\n")  # the client's ensure() returns: the first query finds us
    os.close(ready)
    containers = paths.containers_dir()
    inflight = [0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_idle, state, nursery.cancel_scope)
        while True:
            data, anc, _, peer = await sock.recvmsg(65535, socket.CMSG_SPACE(12))
            gateway = ""
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                    gateway = socket.inet_ntoa(value[8:12])
            # A local answer is sent at once, in this loop (no task per query); only a
            # forwarded query waits, in a task of its own, at most MAX_INFLIGHT of them.
            try:
                query, out = _local(state, data, peer, gateway, containers)
                if query is None:
                    continue
                if out is not None:
                    await _send(sock, out, gateway, peer)
                    continue
            except Exception:  # a hostile datagram (a response's QR bit...): no answer
                continue
            if inflight[0] >= MAX_INFLIGHT:
                continue
            inflight[0] += 1
            nursery.start_soon(_forwarded, sock, query, data, peer, gateway, inflight)


def _plugged() -> bool:
    return any(name.startswith("rlv") for _, name in socket.if_nameindex())


async def _idle(state: Path, scope: trio.CancelScope) -> None:
    from . import nethost

    last = time.monotonic()
    while True:
        await trio.sleep(2)
        try:
            nethost.sweep_ports()
        except Exception:  # a chore: the next round tries again
            pass
        if _plugged():
            last = time.monotonic()
            continue
        try:
            pid, _ = (state / "pid").read_text().split()
            asked = time.time() - (state / "pid").stat().st_mtime
        except (OSError, ValueError):
            pid = ""
        if pid != str(os.getpid()):  # our state is gone, or names another host
            scope.cancel()
            return
        if time.monotonic() - last < nethost.IDLE or asked < nethost.IDLE:
            continue
        fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a client is starting a container: not idle
        if _plugged():
            os.close(fd)
            continue
        (state / "pid").unlink(missing_ok=True)
        scope.cancel()
        return  # the lock goes with the process


def main() -> None:
    state = Path(sys.argv[1])
    os.set_inheritable(int(sys.argv[2]), False)  # slirp4netns's exit fd: ours until we go
    trio.run(_serve, state, int(sys.argv[3]))


if __name__ == "__main__":
    main()
