"""`rl network create|ls|inspect|rm|prune`: the click face over engine/networks.py."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import click

from ..errors import InvalidArgument, RlError
from .format import error, print_inspect, render, select

_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
            "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS",
            "CreatedAt": "CREATED AT"}
_FILTERS = ("name", "id", "driver", "label", "type", "scope")


@click.group("network")
def network() -> None:
    """Manage networks."""


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not k:
            raise InvalidArgument(f"invalid {what} {item!r}: expected KEY=VALUE")
        out[k] = v if eq else ""
    return out


@network.command("create")
@click.option("-d", "--driver", default="bridge", help="Driver (bridge only).")
@click.option("--subnet", "subnets", multiple=True,
              help="Subnet in CIDR format (one IPv4, one IPv6).")
@click.option("--gateway", "gateways", multiple=True, help="Gateway of the matching --subnet.")
@click.option("--internal", is_flag=True, help="No route out of the network.")
@click.option("--ipv6", is_flag=True, help="Give the network an IPv6 subnet too.")
@click.option("--label", "labels", multiple=True, help="Set metadata on a network.")
@click.option("-o", "--opt", "opts", multiple=True, help="Driver options (recorded).")
@click.argument("name")
def create(driver: str, subnets: tuple[str, ...], gateways: tuple[str, ...], internal: bool,
           ipv6: bool, labels: tuple[str, ...], opts: tuple[str, ...], name: str) -> None:
    """Create a network; prints its ID."""
    from ..engine import networks

    net = networks.create(name, list(subnets), list(gateways), internal, ipv6,
                          _pairs(labels, "label"), driver, _pairs(opts, "option"))
    click.echo(net.id)


def _matches(row: dict[str, Any], labels: dict[str, str], filters: dict[str, list[str]]) -> bool:
    for key, wanted in filters.items():
        if key == "name" and not any(w in row["Name"] for w in wanted):
            return False
        if key == "id" and not any(row["ID"].startswith(w) for w in wanted):
            return False
        if key == "driver" and row["Driver"] not in wanted:
            return False
        if key == "scope" and "local" not in wanted:
            return False
        if key == "type" and not any(w == ("builtin" if row["_builtin"] else "custom")
                                     for w in wanted):
            return False
        if key == "label":
            for w in wanted:
                k, eq, v = w.partition("=")
                if k not in labels or (eq and labels[k] != v):
                    return False
    return True


@network.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display network IDs.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate the output.")
@click.option("-f", "--filter", "filters", multiple=True,
              help="Filter output (name=, id=, driver=, label=, type=custom|builtin).")
@click.option("--format", "fmt", help="'table', 'json' or a Go template.")
def ls(quiet: bool, no_trunc: bool, filters: tuple[str, ...], fmt: str | None) -> None:
    """List networks."""
    from ..engine import networks

    wanted: dict[str, list[str]] = {}
    for f in filters:
        key, eq, value = f.partition("=")
        if not eq or key not in _FILTERS:
            raise InvalidArgument(f"invalid filter '{key}'")
        wanted.setdefault(key, []).append(value)
    shape = select(fmt)
    nets, problems = networks.list_networks()
    for p in problems:
        click.echo(f"WARNING: {p}", err=True)
    rows = []
    for n in nets:
        row: dict[str, Any] = {
            "ID": n.id if no_trunc else n.id[:12], "Name": n.name, "Driver": n.driver,
            "Scope": "local", "IPv6": str(n.ipv6).lower(), "Internal": str(n.internal).lower(),
            "Labels": ",".join(f"{k}={v}" for k, v in n.labels.items()),
            "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(n.created)),
            "_builtin": n.predefined}
        if _matches(row, n.labels, wanted):
            del row["_builtin"]
            rows.append(row)
    if quiet:
        for r in rows:
            click.echo(r["ID"])
        return

    def view(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
        return [["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
                *([r["ID"], r["Name"], r["Driver"], r["Scope"]] for r in rows)]

    for line in render(shape, rows, view, _HEADERS):
        click.echo(line)


network.add_command(ls, "list")


@network.command("inspect")
@click.option("-f", "--format", "fmt", help="Format the output using a Go template.")
@click.argument("names", nargs=-1, required=True)
def inspect(fmt: str | None, names: tuple[str, ...]) -> None:
    """Display detailed information on networks."""
    from ..engine import networks

    results, failed = [], False
    for n in names:
        try:
            results.append(networks.inspect(n))
        except RlError as e:
            error(e.message)
            failed = True
    print_inspect(results, fmt, failed)


@network.command("rm")
@click.option("-f", "--force", is_flag=True,
              help="No error for a missing network; disconnect connected containers first.")
@click.argument("names", nargs=-1, required=True)
def rm(force: bool, names: tuple[str, ...]) -> None:
    """Remove networks no container is on."""
    from ..engine import networks
    from ..errors import NotFound

    failed = False
    for n in names:
        try:
            networks.remove(n, disconnect_all=force)
            click.echo(n)
        except NotFound as e:
            if not force:
                error(e.message)
                failed = True
        except RlError as e:
            error(e.message)
            failed = True
    if failed:
        sys.exit(1)


network.add_command(rm, "remove")


@network.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt (rl never prompts).")
def prune(force: bool) -> None:
    """Remove every network no container is on."""
    from ..engine import networks

    del force
    removed = networks.prune()
    if removed:
        click.echo("Deleted Networks:")
        for n in removed:
            click.echo(n)


@network.command("connect")
@click.option("--alias", "aliases", multiple=True, help="A network-scoped alias.")
@click.option("--ip", default="", help="IPv4 address on the network.")
@click.argument("name")
@click.argument("container")
def connect(aliases: tuple[str, ...], ip: str, name: str, container: str) -> None:
    """Connect a container on a user network to another one."""
    from ..engine import networks

    networks.connect(name, container, list(aliases), ip)


@network.command("disconnect")
@click.option("-f", "--force", is_flag=True,
              help="Disconnect even if the container's NIC cannot be removed.")
@click.argument("name")
@click.argument("container")
def disconnect(force: bool, name: str, container: str) -> None:
    """Disconnect a container from a network `network connect` added."""
    from ..engine import networks

    networks.disconnect(name, container, force)
