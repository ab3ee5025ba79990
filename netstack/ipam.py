"""Addresses of user-defined networks: choosing and checking subnets, and leases.

A network's subnets never overlap another network's (each network is a bridge
in one namespace that routes between them). Without --subnet a network takes
the first free /24 of podman's pool, 10.89.0.0/16, so rl and podman users read
the same addresses. A lease is a file named by the address holding its owner
(a container id), made under the network's lock: fcntl locks die with their
process, so a kill -9 mid-allocation leaves no lock, and a lease whose owner is
gone is taken back by the next allocation (the caller says who is alive).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from rootless.errors import Conflict, InvalidArgument, RlError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

POOL = ipaddress.IPv4Network("10.89.0.0/16")
POOL_PREFIX = 24
ULA = ipaddress.IPv6Network("fd00::/8")
GRACE = 120.0  # seconds


def parse_subnet(text: str) -> Network:
    """A --subnet value; host bits set are refused as docker does."""
    text = text.strip()
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise InvalidArgument(f"invalid CIDR address: {text}") from None
    net = iface.network
    if "/" not in text:
        raise InvalidArgument(f"invalid CIDR address: {text}")
    if iface.ip != net.network_address:
        raise InvalidArgument(f"invalid subnet {text} : it should be {net}")
    if net.num_addresses < 4:
        raise InvalidArgument(f"invalid subnet {text}: too small for a gateway and a host")
    return net


def parse_address(text: str, what: str) -> Address:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise InvalidArgument(f"invalid {what} address: {text}") from None


def check_no_overlap(new: Iterable[Network], used: Iterable[tuple[str, Network]]) -> None:
    used = list(used)
    for n in new:
        for owner, u in used:
            if n.version == u.version and n.overlaps(u):
                raise Conflict(f"invalid pool request: Pool overlaps with other one on this "
                               f"address space ({n} and network {owner}'s {u})", 1)


def free_subnet(used: Iterable[Network]) -> ipaddress.IPv4Network:
    """The first /24 of the pool no network has."""
    taken = [u for u in used if u.version == 4]
    for cand in POOL.subnets(new_prefix=POOL_PREFIX):
        if not any(cand.overlaps(u) for u in taken):
            return cand
    raise Conflict(f"could not find an available, non-overlapping IPv4 address pool among "
                   f"the defaults ({POOL}) to assign to the network", 1)


def random_ula() -> ipaddress.IPv6Network:
    """A /64 in fd00::/8 with a random 40-bit global id (RFC 4193), as podman's --ipv6."""
    gid = secrets.randbits(40)
    return ipaddress.IPv6Network(((0xFD << 120) | (gid << 80), 64))


def gateway_for(subnet: Network, given: str | None) -> Address:
    """The gateway: --gateway when given (inside the subnet), else the first host."""
    if given is None:
        return ipaddress.ip_address(str(next(iter(subnet.hosts()))))
    gw = parse_address(given, "gateway")
    if gw.version != subnet.version or gw not in subnet:
        raise InvalidArgument(f"no matching subnet for gateway {given}")
    if gw == subnet.network_address or (subnet.version == 4 and gw == subnet.broadcast_address):
        raise InvalidArgument(f"gateway {given} is the network or broadcast address of {subnet}")
    return gw


class Leases:
    """The leases of one network: `<dir>/<address>` files owned by container ids."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def entries(self) -> dict[str, tuple[str, list[str], float]]:
        """address -> (owner, the names it answers to, the lease's age in seconds), as
        the files say (a damaged one is skipped)."""
        out: dict[str, tuple[str, list[str], float]] = {}
        now = time.time()
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.dir):
                if entry.name.startswith("."):
                    continue
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    lines = Path(entry.path).read_text().split("\n")
                    if lines[0]:
                        out[entry.name] = (lines[0], [n for n in lines[1:] if n],
                                           now - entry.stat().st_mtime)
        return out

    def held(self) -> dict[str, str]:
        """address -> owner."""
        return {a: e[0] for a, e in self.entries().items()}

    def allocate(self, subnet: Network, gateway: Address, owner: str,
                 alive: Callable[[str], bool], want: str | None = None,
                 names: Iterable[str] = ()) -> Address:
        """An address of *subnet* for *owner*: *want* (--ip) or the lowest free one;
        *names* are what the network's resolver answers with it. A lease younger than
        GRACE is never taken back: its container's record may not be written yet."""
        reserved = {subnet.network_address, gateway}
        if subnet.version == 4:
            reserved.add(subnet.broadcast_address)
        with self._locked():
            held = {}
            for addr, (who, _, age) in self.entries().items():
                if who == owner and ipaddress.ip_address(addr).version == subnet.version:
                    return ipaddress.ip_address(addr)
                if age > GRACE and not alive(who):  # a removed or never-made container's
                    self._drop(addr)
                else:
                    held[addr] = who
            if want is not None:
                ip = parse_address(want, "IP")
                if ip.version != subnet.version or ip not in subnet:
                    raise InvalidArgument(f"no configured subnet contains IP address {want}")
                if ip in reserved or str(ip) in held:
                    raise Conflict(f"Address already in use: {want}", 125)
                return self._write(ip, owner, names)
            for ip in subnet.hosts():
                if ip not in reserved and str(ip) not in held:
                    return self._write(ip, owner, names)
        raise Conflict(f"no available IP addresses on network subnet {subnet}", 125)

    def release(self, owner: str) -> None:
        with self._locked():
            for addr, who in self.held().items():
                if who == owner:
                    self._drop(addr)

    def _write(self, ip: Address, owner: str, names: Iterable[str]) -> Address:
        tmp = self.dir / f".tmp-{secrets.token_hex(6)}"
        tmp.write_text("".join(f"{n}\n" for n in [owner, *names]))
        try:
            os.link(tmp, self.dir / str(ip))  # never replaces: the lock makes it unique
        except OSError as e:
            raise RlError(f"lease {ip}: {e.strerror}") from None
        finally:
            tmp.unlink()
        return ip

    def _drop(self, addr: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / addr).unlink()
