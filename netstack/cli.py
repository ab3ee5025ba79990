"""rl's network flags and inspect's NetworkSettings: click glue over netstack."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

OPTIONS = [
    click.option("-p", "--publish", multiple=True,
                 help="Publish a port: [ip:][hostPort:]containerPort[/tcp|/udp]; ranges "
                      "allowed."),
    click.option("-P", "--publish-all", is_flag=True,
                 help="Publish every exposed port (image EXPOSE, --expose) on a free host port."),
    click.option("--expose", multiple=True, help="Expose a port or range (for -P)."),
    click.option("--dns", multiple=True, help="Set custom DNS servers."),
    click.option("--add-host", multiple=True, help="Add a custom host-to-IP mapping (host:ip)."),
    click.option("--network-bandwidth", help="Limit the network, each direction (e.g. 10mbit)."),
]


def options(f: Callable[..., Any]) -> Callable[..., Any]:
    for o in reversed(OPTIONS):
        f = o(f)
    return f


def run_options(kw: dict[str, Any]) -> dict[str, Any]:
    """The RunOptions fields these flags set."""
    return {"publish": list(kw["publish"]), "publish_all": kw["publish_all"],
            "expose": list(kw["expose"]), "dns": list(kw["dns"]),
            "add_hosts": list(kw["add_host"]), "network_bandwidth": kw["network_bandwidth"]}


def _live_ports(ctr: Any) -> list[Any]:
    from rootless.engine import store

    from .stack import published_ports

    return published_ports(ctr.run_dir) if store.supervisor_alive(ctr.id) else []


def network_settings(ctr: Any) -> dict[str, Any]:
    """docker inspect's NetworkSettings: the address and the published ports."""
    from .options import SLIRP_ADDR, SLIRP_GATEWAY, NetOptions

    opts = NetOptions.from_dict(ctr.config.net) if ctr.config.net else None
    slirp = opts is not None and opts.mode == "slirp4netns"
    ports: dict[str, list[dict[str, str]]] = {}
    for m in _live_ports(ctr):
        ports.setdefault(m.key(), []).append({"HostIp": m.bind_ip, "HostPort": str(m.host_port)})
    return {"IPAddress": SLIRP_ADDR if slirp else "", "Gateway": SLIRP_GATEWAY if slirp else "",
            "Ports": ports}
