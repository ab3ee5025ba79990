"""`rl volume create|ls|inspect|rm|prune`: the click face over engine/volumes.py."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from ..engine.humanize import human_size
from ..errors import InvalidArgument, RlError
from .format import error, parse_template, render, select

_HEADERS = {"Driver": "DRIVER", "Name": "VOLUME NAME", "Mountpoint": "MOUNTPOINT",
            "Labels": "LABELS", "Scope": "SCOPE"}


@click.group("volume")
def volume() -> None:
    """Manage volumes."""


@volume.command("create")
@click.option("--label", "labels", multiple=True, help="Set metadata for a volume.")
@click.option("-d", "--driver", default="local", help="Volume driver name (local only).")
@click.argument("name", required=False)
def create(labels: tuple[str, ...], driver: str, name: str | None) -> None:
    """Create a volume (a random name when none is given)."""
    from ..engine import volumes

    if driver != "local":
        raise InvalidArgument(f"error looking up volume plugin {driver}: plugin not found")
    out = {}
    for lab in labels:
        k, _, v = lab.partition("=")
        out[k] = v
    click.echo(volumes.create(name, out).name)


@volume.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display volume names.")
@click.option("--format", "fmt", help="'table', 'json' or a Go template.")
def ls(quiet: bool, fmt: str | None) -> None:
    """List volumes."""
    from ..engine import volumes

    shape = select(fmt)
    vols = list(volumes.list_volumes())
    if quiet:
        for v in vols:
            click.echo(v.name)
        return
    rows = [{"Driver": "local", "Name": v.name, "Mountpoint": v.mountpoint, "Scope": "local",
             "Labels": ",".join(f"{k}={x}" for k, x in v.labels.items())} for v in vols]

    def view(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
        return [["DRIVER", "VOLUME NAME"], *([r["Driver"], r["Name"]] for r in rows)]

    for line in render(shape, rows, view, _HEADERS):
        click.echo(line)


volume.add_command(ls, "list")


@volume.command("inspect")
@click.option("-f", "--format", "fmt", help="Format the output using a Go template.")
@click.argument("names", nargs=-1, required=True)
def inspect(fmt: str | None, names: tuple[str, ...]) -> None:
    """Display detailed information on volumes."""
    from ..engine import volumes

    tmpl = parse_template(fmt) if fmt else None
    results, failed = [], False
    for n in names:
        try:
            results.append(volumes.get(n).inspect())
        except RlError as e:
            error(e.message)
            failed = True
    if tmpl is not None:
        for r in results:
            click.echo(tmpl.render(r))
    else:
        click.echo(json.dumps(results, indent=4))
    if failed:
        sys.exit(1)


@volume.command("rm")
@click.option("-f", "--force", is_flag=True, help="Accepted (an in-use volume stays).")
@click.argument("names", nargs=-1, required=True)
def rm(force: bool, names: tuple[str, ...]) -> None:
    """Remove volumes no container uses."""
    from ..engine import volumes

    failed = False
    for n in names:
        try:
            volumes.remove(n)
            click.echo(n)
        except RlError as e:
            if force and e.exit_code == 1 and "no such volume" in e.message:
                continue  # docker's -f: a missing one is no error
            error(e.message)
            failed = True
    if failed:
        sys.exit(1)


volume.add_command(rm, "remove")


@volume.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="All unused volumes, not only "
              "anonymous ones.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt (rl never prompts).")
def prune(all_: bool, force: bool) -> None:
    """Remove unused anonymous volumes (with -a every unused one)."""
    from ..engine import volumes

    del force
    removed, freed = volumes.prune(all_)
    if removed:
        click.echo("Deleted Volumes:")
        for n in removed:
            click.echo(n)
        click.echo("")
    click.echo(f"Total reclaimed space: {human_size(freed)}")
