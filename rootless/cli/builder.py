"""`rl builder prune`: the click face over rootless.build.cache.prune."""

from __future__ import annotations

import re

import click

from ..errors import InvalidArgument

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    """A Go duration ("24h", "1h30m", "90s") in seconds, as docker's until= takes it."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidArgument(f'time: invalid duration "{text}"')
    return sum(float(n) * _UNITS[u] for n, u in parts)


@click.group("builder")
def builder_cmd() -> None:
    """Manage builds."""


@builder_cmd.command("prune")
@click.option("-a", "--all", "all_", is_flag=True,
              help="Remove all unused build cache, not just dangling ones.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.option("--filter", "filters", multiple=True,
              help="Provide filter values (e.g. 'until=24h').")
def prune_cmd(all_: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove build cache."""
    from ..build import cache
    from ..image import images as imagelib
    from .images import human_size

    until: float | None = None
    for item in filters:
        name, _, value = item.partition("=")
        if name not in ("until", "unused-for") or not value:
            raise InvalidArgument(f"invalid filter '{item}': only until=DURATION is supported")
        until = _duration(value)
    if not force:
        what = "all build cache" if all_ else "all dangling build cache"
        if not click.confirm(f"WARNING! This will remove {what}.\n"
                             "Are you sure you want to continue?", default=False):
            return
    pruned = cache.prune(imagelib.open_store(), all_, until)
    for why in pruned.errors:
        click.echo(f"WARNING: could not remove cache mount {why}", err=True)
    if pruned.records or pruned.mounts:
        click.echo("Deleted build cache objects:")
        for k in pruned.records:
            click.echo(k.partition(":")[2])
        for name in pruned.mounts:
            click.echo(name)
        click.echo()
    click.echo(f"Total reclaimed space: {human_size(pruned.freed)}")


def register(cli: click.Group) -> None:
    cli.add_command(builder_cmd)
