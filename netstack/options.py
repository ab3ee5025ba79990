"""The container's network settings as typed data: what `rl run` decided, stored in its record.

`--network` accepts podman's syntax: `slirp4netns[:opt=v,...]`, `pasta`,
`host`, `none`, `container:NAME`. slirp4netns options: `port_handler=rl|slirp4netns`,
`allow_host_loopback=true|false`, `mtu=N`, `enable_ipv6=true|false`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from rootless.errors import InvalidArgument

from .ports import PortMapping

DEFAULT_MODE = "slirp4netns"
MODES = ("slirp4netns", "pasta", "host", "none", "container")
USER_NETWORK = "network"  # a user-defined network's mode (the name is in NetOptions.network)
PORT_HANDLERS = ("rl", "slirp4netns")
SLIRP_ADDR = "10.0.2.100"
SLIRP_DNS = "10.0.2.3"
PASTA_DNS = "169.254.1.1"  # pasta forwards DNS sent here to the host's resolver (podman's)
SLIRP_GATEWAY = "10.0.2.2"
SLIRP6_ADDR = "fd00::100"  # slirp4netns's IPv6 network is fd00::/64, its router fd00::2
SLIRP6_GATEWAY = "fd00::2"
SLIRP6_DNS = "fd00::3"


@dataclass
class Link:
    """A further user network of a container on one (`rl network connect`)."""

    network: str
    ifname: str  # eth1, eth2...: kept across restarts
    aliases: list[str] = field(default_factory=list)
    ip: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network, "ifname": self.ifname, "aliases": self.aliases,
                "ip": self.ip}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Link:
        return cls(str(d["network"]), str(d["ifname"]), [str(a) for a in d.get("aliases", [])],
                   str(d.get("ip", "")))


@dataclass
class NetOptions:
    mode: str = DEFAULT_MODE
    port_handler: str = "rl"
    allow_host_loopback: bool = False
    mtu: int = 65520
    enable_ipv6: bool = False
    container: str = ""  # mode "container": the other container's name or id
    ports: list[PortMapping] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    add_hosts: list[tuple[str, str]] = field(default_factory=list)
    bandwidth_bit: int = 0  # per direction, bits/s; 0: unlimited
    network: str = ""  # mode "network": the user-defined network's name
    aliases: list[str] = field(default_factory=list)  # --network-alias
    ip: str = ""  # --ip
    connected: list[Link] = field(default_factory=list)  # mode "network": network connect's
    # mode "network", set by the supervisor at start: the NIC it gets (nethost.Attachment)
    address: str = ""
    gateway: str = ""

    @property
    def own_stack(self) -> bool:
        """A user-mode stack gives the netns its NIC: slirp4netns or pasta."""
        return self.mode in ("slirp4netns", "pasta")

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "port_handler": self.port_handler,
            "allow_host_loopback": self.allow_host_loopback, "mtu": self.mtu,
            "enable_ipv6": self.enable_ipv6, "container": self.container,
            "ports": [p.to_dict() for p in self.ports], "dns": self.dns,
            "dns_search": self.dns_search, "add_hosts": [list(h) for h in self.add_hosts],
            "bandwidth_bit": self.bandwidth_bit,
            **({"network": self.network, "aliases": self.aliases, "ip": self.ip}
               if self.network else {}),
            **({"connected": [c.to_dict() for c in self.connected]} if self.connected else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetOptions:
        return cls(
            mode=d.get("mode", DEFAULT_MODE), port_handler=d.get("port_handler", "rl"),
            allow_host_loopback=bool(d.get("allow_host_loopback")), mtu=int(d.get("mtu", 65520)),
            enable_ipv6=bool(d.get("enable_ipv6")), container=d.get("container", ""),
            ports=[PortMapping.from_dict(p) for p in d.get("ports", [])],
            dns=list(d.get("dns", [])), dns_search=list(d.get("dns_search", [])),
            add_hosts=[(h[0], h[1]) for h in d.get("add_hosts", [])],
            bandwidth_bit=int(d.get("bandwidth_bit", 0)),
            network=str(d.get("network", "")), aliases=list(d.get("aliases", [])),
            ip=str(d.get("ip", "")),
            connected=[Link.from_dict(c) for c in d.get("connected", [])],
        )


def _bool(name: str, value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise InvalidArgument(f"invalid --network option {name}={value!r}: expected true or false")


def parse_network(value: str) -> NetOptions:
    """The --network value, podman-style."""
    mode, colon, rest = value.partition(":")
    if mode == "container":
        if not rest:
            raise InvalidArgument("--network container: needs a container name or id "
                                  "(container:NAME)")
        return NetOptions(mode="container", container=rest)
    if mode not in MODES:
        raise InvalidArgument(f"network mode {value!r} is not supported (supported: slirp4netns, "
                              "pasta, host, none, container:NAME)")
    opts = NetOptions(mode=mode)
    if colon and mode != "slirp4netns":
        raise InvalidArgument(f"network mode {mode!r} takes no options")
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq:
            raise InvalidArgument(f"invalid --network option {item!r}: expected key=value")
        if key == "port_handler":
            if val not in PORT_HANDLERS:
                raise InvalidArgument(f"invalid port_handler {val!r}: expected rl or slirp4netns")
            opts.port_handler = val
        elif key == "allow_host_loopback":
            opts.allow_host_loopback = _bool(key, val)
        elif key == "mtu":
            if not val.isdigit() or not 1280 <= int(val) <= 65520:
                raise InvalidArgument(f"invalid mtu {val!r}: expected 1280-65520")
            opts.mtu = int(val)
        elif key == "enable_ipv6":
            opts.enable_ipv6 = _bool(key, val)
        else:
            raise InvalidArgument(f"unknown slirp4netns option {key!r} (known: port_handler, "
                                  "allow_host_loopback, mtu, enable_ipv6)")
    return opts


_UNITS = {"": 1, "bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12,
          "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9,
          "k": 10**3, "m": 10**6, "g": 10**9}


def parse_rate(text: str) -> int:
    """tc's rate syntax: 10mbit, 500kbit, 1gbit, 2mbps (bytes); a bare number is bit/s."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", text.strip())
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise InvalidArgument(f"invalid --network-bandwidth {text!r}: expected a rate such as "
                              "10mbit, 500kbit or 1gbit")
    bits = int(float(m.group(1)) * _UNITS[unit])
    if bits < 8000:
        raise InvalidArgument(f"invalid --network-bandwidth {text!r}: at least 8kbit")
    return bits


def parse_add_host(value: str) -> tuple[str, str]:
    """--add-host name:ip (docker); IPv6 addresses may contain ':' and be bracketed."""
    name, sep, ip = value.partition(":")
    if not sep or not name or not ip:
        raise InvalidArgument(f"invalid --add-host {value!r}: expected HOST:IP")
    ip = ip.strip("[]")
    if ip == "host-gateway":
        ip = SLIRP_GATEWAY
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise InvalidArgument(
            f"invalid --add-host {value!r}: {ip!r} is not an IP address") from None
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", name):
        raise InvalidArgument(f"invalid --add-host {value!r}: {name!r} is not a host name")
    return name, ip


def parse_dns(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidArgument(f"invalid --dns {value!r}: not an IP address") from None


def from_flags(network: str, publish: list[str], publish_all: bool, expose: list[str],
               dns: list[str], add_hosts: list[str], bandwidth: str | None) -> NetOptions:
    """Validate rl run's network flags into NetOptions (nothing is started here)."""
    from .ports import resolve

    opts = parse_network(network)
    opts.ports = resolve(publish, expose, publish_all)
    if opts.ports and not opts.own_stack:
        raise InvalidArgument(f"cannot publish ports with --network={opts.mode}: publishing needs "
                              "the container's own network stack (slirp4netns or pasta)")
    opts.dns = [parse_dns(d) for d in dns]
    opts.add_hosts = [parse_add_host(h) for h in add_hosts]
    if bandwidth:
        if not opts.own_stack:
            raise InvalidArgument(f"--network-bandwidth needs --network=slirp4netns or pasta, not "
                                  f"{opts.mode}")
        opts.bandwidth_bit = parse_rate(bandwidth)
    return opts
