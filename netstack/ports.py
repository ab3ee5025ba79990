"""Published ports: `-p [ip:][hostPort:]containerPort[/tcp|/udp]` parsed into typed mappings.

Ranges (`8000-8002:80-82`) expand to one mapping per port. A host port of 0
means "any free port", chosen when the container starts (`-p 80`, `-P`).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import asdict, dataclass
from typing import Any

from rootless.errors import InvalidArgument, RlError

PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class PortMapping:
    container_port: int
    host_port: int = 0  # 0: any free port, chosen at start
    host_ip: str = ""  # "": every IPv4 address (docker's 0.0.0.0)
    protocol: str = "tcp"

    @property
    def bind_ip(self) -> str:
        return self.host_ip or "0.0.0.0"

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.bind_ip else socket.AF_INET

    def key(self) -> str:
        """docker port's left column: "80/tcp"."""
        return f"{self.container_port}/{self.protocol}"

    def host_text(self) -> str:
        ip = self.bind_ip
        return f"[{ip}]:{self.host_port}" if ":" in ip else f"{ip}:{self.host_port}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PortMapping:
        return cls(int(d["container_port"]), int(d["host_port"]), str(d["host_ip"]),
                   str(d["protocol"]))


def _port_range(text: str, what: str, spec: str) -> list[int]:
    lo_text, dash, hi_text = text.partition("-")
    try:
        lo = int(lo_text)
        hi = int(hi_text) if dash else lo
    except ValueError:
        raise InvalidArgument(f"invalid port specification {spec!r}: {what} {text!r} is not a "
                              "number or a range") from None
    minimum = 0 if what == "host port" else 1
    for p in (lo, hi):
        if not minimum <= p <= 65535:
            raise InvalidArgument(f"invalid port specification {spec!r}: {what} {p} is out of "
                                  f"range ({minimum}-65535)")
    if hi < lo:
        raise InvalidArgument(
            f"invalid port specification {spec!r}: {what} range {text} is reversed")
    return list(range(lo, hi + 1))


def parse_publish(spec: str) -> list[PortMapping]:
    """One -p value: [ip:][hostPort:]containerPort[-end][/proto]; IPv6 ips in brackets."""
    body, slash, proto = spec.partition("/")
    proto = proto.lower() if slash else "tcp"
    if proto not in PROTOCOLS:
        raise InvalidArgument(f"invalid port specification {spec!r}: protocol {proto!r} is not "
                              "tcp or udp")
    host_ip = ""
    if body.startswith("["):
        ip_text, bracket, rest = body[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise InvalidArgument(f"invalid port specification {spec!r}: unbalanced [ip]")
        host_ip, body = ip_text, rest[1:]
        parts = body.split(":")
        if len(parts) != 2:
            raise InvalidArgument(f"invalid port specification {spec!r}: expected "
                                  "[ip]:hostPort:containerPort")
        host_text, ctr_text = parts
    else:
        parts = body.split(":")
        if len(parts) == 1:
            host_text, ctr_text = "", parts[0]
        elif len(parts) == 2:
            host_text, ctr_text = parts
        elif len(parts) == 3:
            host_ip, host_text, ctr_text = parts
        else:
            raise InvalidArgument(f"invalid port specification {spec!r}: too many ':' (put an "
                                  "IPv6 address in brackets)")
    if host_ip:
        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError:
            raise InvalidArgument(f"invalid port specification {spec!r}: {host_ip!r} is not an IP "
                                  "address") from None
    if not ctr_text:
        raise InvalidArgument(f"invalid port specification {spec!r}: no container port")
    ctr_ports = _port_range(ctr_text, "container port", spec)
    host_ports = _port_range(host_text, "host port", spec) if host_text else [0] * len(ctr_ports)
    if len(host_ports) != len(ctr_ports):
        raise InvalidArgument(f"invalid port specification {spec!r}: the host range has "
                              f"{len(host_ports)} ports and the container range {len(ctr_ports)}")
    if host_ports.count(0) not in (0, len(host_ports)):
        raise InvalidArgument(f"invalid port specification {spec!r}: host port 0 inside a range")
    return [PortMapping(c, h, host_ip, proto) for h, c in zip(host_ports, ctr_ports, strict=True)]


def parse_expose(spec: str) -> list[tuple[int, str]]:
    """--expose 80[-90][/udp]: container ports that -P publishes."""
    body, slash, proto = spec.partition("/")
    proto = proto.lower() if slash else "tcp"
    if proto not in PROTOCOLS:
        raise InvalidArgument(f"invalid --expose {spec!r}: protocol {proto!r} is not tcp or udp")
    return [(p, proto) for p in _port_range(body, "container port", spec)]


def resolve(publish: list[str], expose: list[str], publish_all: bool) -> list[PortMapping]:
    """Every -p, plus with -P every exposed port not already published, on a free port."""
    out: list[PortMapping] = []
    for spec in publish:
        out += parse_publish(spec)
    if publish_all:
        done = {(m.container_port, m.protocol) for m in out}
        for spec in expose:
            for port, proto in parse_expose(spec):
                if (port, proto) not in done:
                    out.append(PortMapping(port, 0, "", proto))
                    done.add((port, proto))
    seen: set[tuple[str, int, str]] = set()
    for m in out:
        if m.host_port == 0:
            continue
        k = (m.bind_ip, m.host_port, m.protocol)
        if k in seen:
            raise InvalidArgument(f"host port {m.host_text()}/{m.protocol} is published twice")
        seen.add(k)
    return out


def unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024


def check_privileged(mappings: list[PortMapping], euid: int) -> None:
    start = unprivileged_port_start()
    for m in mappings:
        if euid != 0 and 0 < m.host_port < start:
            raise RlError(
                f"cannot publish host port {m.host_port}: ports below {start} are privileged "
                "and rl runs unprivileged; publish a port >= "
                f"{start}, or let users bind low ports with "
                f"`sysctl net.ipv4.ip_unprivileged_port_start={m.host_port}` (as root)")


def bind_host_socket(m: PortMapping) -> socket.socket:
    """Bind (and for TCP listen on) the host side of a mapping, or say why not."""
    kind = socket.SOCK_STREAM if m.protocol == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(m.family, kind)
    try:
        if m.protocol == "tcp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if m.family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((m.bind_ip, m.host_port))
        if m.protocol == "tcp":
            s.listen(1024)
    except OSError as e:
        s.close()
        raise port_error(m, e) from None
    return s


def port_error(m: PortMapping, e: OSError) -> RlError:
    what = f"{m.host_text()}/{m.protocol}"
    if e.errno == 98:  # EADDRINUSE
        return RlError(f"cannot publish port {what}: the address is already in use")
    if e.errno == 99:  # EADDRNOTAVAIL
        return RlError(f"cannot publish port {what}: {m.bind_ip} is not an address of this "
                       "host")
    if e.errno == 13:  # EACCES
        return RlError(f"cannot publish port {what}: permission denied (ports below "
                       f"{unprivileged_port_start()} need "
                       "net.ipv4.ip_unprivileged_port_start lowered)")
    return RlError(f"cannot publish port {what}: {e.strerror or e}")
