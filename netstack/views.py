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


def stack_networks(opts: NetOptions | None, running: bool) -> dict[str, Any]:
    """NetworkSettings.Networks for rl's own modes: slirp4netns's fixed address under
    the mode's name (what `docker network ls` shows rl's modes as), nothing else."""
    if opts is None or opts.mode != "slirp4netns":
        return {}
    return {"slirp4netns": {
        "IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "",
        "DriverOpts": None, "NetworkID": "slirp4netns", "EndpointID": "",
        "Gateway": SLIRP_GATEWAY if running else "", "IPAddress": SLIRP_ADDR if running else "",
        "IPPrefixLen": 24 if running else 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0, "DNSNames": None}}
