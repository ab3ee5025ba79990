"""What docker shows of a container's network: click-free, over the ports a stack publishes.

The engine finds the container and its live mappings (netstack.stack's
published_ports); this only shapes them for inspect (ps's and port's
strings are the CLI's, from the engine's records).
"""

from __future__ import annotations

from typing import Any

from .options import SLIRP_ADDR, SLIRP_GATEWAY, NetOptions
from .ports import PortMapping


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
