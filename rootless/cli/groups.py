"""docker's management-command spellings over rl's commands: `rl container ...`,
`rl system ...`, and `rl version`.

The same click commands under a second name, not copies: `rl container ls` is
`rl ps`, so a flag added to one is there in the other. Registered last, over
the commands cli/app.py, cli/images.py and cli/build.py defined.
"""

from __future__ import annotations

import json
import platform

import click

from .. import __version__
from ..engine.humanize import human_size
from . import completion, networks, systemdf, volumes
from .format import select

# docker container's subcommands that are rl's top-level commands of the same name
_SAME_NAME = ("attach", "commit", "cp", "create", "diff", "exec", "export", "kill", "logs",
              "pause", "port", "rename", "restart", "rm", "run", "start", "stats", "stop",
              "top", "unpause", "update", "wait")


@click.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt (rl never prompts).")
def container_prune(force: bool) -> None:
    """Remove all stopped containers."""
    from ..engine import containers as api

    del force
    removed, freed = api.prune()
    if removed:
        click.echo("Deleted Containers:")
        for cid in removed:
            click.echo(cid)
        click.echo("")
    click.echo(f"Total reclaimed space: {human_size(freed)}")


@click.command("prune")
@click.option("-a", "--all", "all_", is_flag=True,
              help="Remove all unused images, not only dangling ones.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt (rl never prompts).")
def system_prune(all_: bool, force: bool) -> None:
    """Remove stopped containers, then unused images (dangling ones; with -a all unused)."""
    from ..engine import containers as api
    from ..engine.images import prune

    del force
    removed, freed = api.prune()
    if removed:
        click.echo("Deleted Containers:")
        for cid in removed:
            click.echo(cid)
        click.echo("")
    deleted, image_bytes = prune(all_)
    if deleted:
        click.echo("Deleted Images:")
        for d in deleted:
            click.echo(f"deleted: {d}")
        click.echo("")
    click.echo(f"Total reclaimed space: {human_size(freed + image_bytes)}")


def version_data() -> dict[str, dict[str, str]]:
    """`rl version`'s figures under docker's and podman's keys (`{{.Client.Version}}`)."""
    from ..image.images import go_arch

    return {"Client": {"Version": __version__, "PythonVersion": platform.python_version(),
                       "Os": "linux", "Arch": go_arch(), "KernelVersion": platform.release()}}


@click.command("version")
@click.option("-f", "--format", "fmt", help="'json' or a Go template.")
def version(fmt: str | None) -> None:
    """Show the rl version information."""
    shape = select(fmt, table_keyword=False)
    data = version_data()
    if shape.template is not None:
        click.echo(shape.template.render(data))
    elif shape.json:
        click.echo(json.dumps(data))
    else:
        c = data["Client"]
        rows = [("Version", c["Version"]), ("Python version", c["PythonVersion"]),
                ("OS/Arch", f"{c['Os']}/{c['Arch']}"), ("Kernel", c["KernelVersion"])]
        click.echo("Client: rl\n" + "".join(f" {k + ':':<18}{v}\n" for k, v in rows), nl=False)


def register(cli: click.Group) -> None:
    """Add `container`, `system` and `version` over the commands cli already has."""
    have = cli.commands

    @cli.group("container")
    def container() -> None:
        """Manage containers."""

    for name in _SAME_NAME:
        if name in have:
            container.add_command(have[name], name)
    for name in ("ls", "list", "ps"):
        container.add_command(have["ps"], name)
    container.add_command(container_prune, "prune")

    @container.command("inspect")
    @click.option("-f", "--format", "fmt", help="Format the output using a Go template.")
    @click.argument("containers", nargs=-1, required=True)
    @click.pass_context
    def container_inspect(ctx: click.Context, fmt: str | None,
                          containers: tuple[str, ...]) -> None:
        """Display detailed information on one or more containers."""
        ctx.invoke(have["inspect"], fmt=fmt, type_="container", containers=containers)

    @cli.group("system")
    def system() -> None:
        """Manage rl: its information and its disk use."""

    system.add_command(have["info"], "info")
    if "events" in have:
        system.add_command(have["events"], "events")
    system.add_command(system_prune, "prune")
    system.add_command(systemdf.df, "df")
    cli.add_command(version)
    cli.add_command(volumes.volume)
    cli.add_command(networks.network)
    cli.add_command(completion.completion)
    completion.attach(cli)
