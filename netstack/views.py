"""What docker shows of a container's network: click-free, over the ports a stack publishes.

The engine finds the container and its live mappings (netstack.stack's
published_ports); these only shape them for `rl port`, ps and inspect.
"""

from __future__ import annotations

from typing import Any

from rootless.errors import InvalidArgument, NotFound

from .options import SLIRP_ADDR, SLIRP_GATEWAY, NetOptions
from .ports import PortMapping


def port_lines(mappings: list[PortMapping], ref: str, private: str | None) -> list[str]:
    """docker port: "80/tcp -> 0.0.0.0:8080" lines, or with PRIVATE_PORT only the addresses."""
    if private is None:
        return [f"{m.key()} -> {m.host_text()}" for m in mappings]
    port, slash, proto = private.partition("/")
    proto = proto.lower() if slash else "tcp"
    if not port.isdigit() or proto not in ("tcp", "udp"):
        raise InvalidArgument(f"invalid port {private!r}: expected PORT[/tcp|/udp]", 1)
    found = [m.host_text() for m in mappings
             if m.container_port == int(port) and m.protocol == proto]
    if not found:
        raise NotFound(f"no public port '{port}/{proto}' published for {ref}", 1)
    return found


def ps_ports(mappings: list[PortMapping]) -> str:
    """docker ps's PORTS column: "0.0.0.0:8080->80/tcp, …" (running containers only)."""
    return ", ".join(f"{m.host_text()}->{m.key()}" for m in mappings)


def network_settings(net: dict[str, Any], mappings: list[PortMapping]) -> dict[str, Any]:
    """docker inspect's NetworkSettings: the address and the published ports.

    net is the record's NetOptions in their stored form ({} without one)."""
    opts = NetOptions.from_dict(net) if net else None
    slirp = opts is not None and opts.mode == "slirp4netns"
    ports: dict[str, list[dict[str, str]]] = {}
    for m in mappings:
        ports.setdefault(m.key(), []).append({"HostIp": m.bind_ip, "HostPort": str(m.host_port)})
    return {"IPAddress": SLIRP_ADDR if slirp else "", "Gateway": SLIRP_GATEWAY if slirp else "",
            "Ports": ports}
