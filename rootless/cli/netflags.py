"""rl run's network flags (-p, -P, --expose, --dns, --add-host, --network-bandwidth): click
options whose destinations are CreateOptions' field names (netstack's own code is click-free)."""

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
    click.option("--add-host", "add_hosts", multiple=True,
                 help="Add a custom host-to-IP mapping (host:ip)."),
    click.option("--network-bandwidth", help="Limit the network, each direction (e.g. 10mbit)."),
    click.option("--network-alias", "network_aliases", multiple=True,
                 help="Another name of the container on its user-defined network."),
    click.option("--ip", help="The container's IPv4 address on its user-defined network."),
]


def options(f: Callable[..., Any]) -> Callable[..., Any]:
    for o in reversed(OPTIONS):
        f = o(f)
    return f
