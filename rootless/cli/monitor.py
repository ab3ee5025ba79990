"""`rl events`, `rl attach`, `rl pause` and `rl unpause`: watching a container and
holding it, registered on the main group by one call."""

from __future__ import annotations

import sys

import click

from ..errors import RlError
from .format import error


@click.command("events")
@click.option("--since", help="Show events created since this time (timestamp or duration).")
@click.option("--until", help="Stream events until this time (without it: follow).")
@click.option("-f", "--filter", "filters", multiple=True,
              help="type=, event=, container=, image=, label=, volume=, network=")
@click.option("--format", "fmt", help="'json' or a Go template.")
def events_cmd(since: str | None, until: str | None, filters: tuple[str, ...],
               fmt: str | None) -> None:
    """Get real time events from rl's containers, images and volumes."""
    from . import eventstream

    eventstream.stream(since, until, filters, fmt)


@click.command("attach")
@click.option("--detach-keys", help="Override the key sequence for detaching a container.")
@click.option("--no-stdin", is_flag=True, help="Do not attach STDIN.")
@click.option("--sig-proxy", type=click.BOOL, default=True, show_default=True,
              help="Proxy all received signals to the process.")
@click.argument("container")
def attach_cmd(detach_keys: str | None, no_stdin: bool, sig_proxy: bool, container: str) -> None:
    """Attach local standard input, output, and error streams to a running container."""
    from ..engine import containers as api
    from ..engine import store
    from . import attach

    keys = attach.parse_detach_keys(detach_keys or attach.DEFAULT_DETACH_KEYS)
    ctr = store.lookup(container)
    stdin = not no_stdin
    session = api.attach(ctr, stdin)
    stdin = stdin and ctr.config.open_stdin
    tty = ctr.config.tty
    # docker: with a terminal, ^C is a byte to the container, not a signal to proxy.
    code = attach.run(session, tty=tty, stdin=stdin, detach_keys=keys if stdin else b"",
                      sig_proxy=sig_proxy and not tty)
    session.close()
    if code == attach.DETACHED:
        sys.exit(0)
    if code is None:
        error("the container's supervisor died")
        sys.exit(1)
    sys.exit(code)


def _each(action: str, containers: tuple[str, ...]) -> None:
    from ..engine import pause, store

    func = pause.pause if action == "pause" else pause.unpause
    failed = 0
    for ref in containers:
        try:
            func(store.lookup(ref))
        except RlError as e:
            error(e.message)
            failed = failed or e.exit_code
            continue
        click.echo(ref)
    if failed:
        sys.exit(failed)


@click.command("pause")
@click.argument("containers", nargs=-1, required=True)
def pause_cmd(containers: tuple[str, ...]) -> None:
    """Pause all processes within one or more containers (the cgroup v2 freezer)."""
    _each("pause", containers)


@click.command("unpause")
@click.argument("containers", nargs=-1, required=True)
def unpause_cmd(containers: tuple[str, ...]) -> None:
    """Unpause all processes within one or more containers."""
    _each("unpause", containers)


def register(cli: click.Group) -> None:
    for cmd in (events_cmd, attach_cmd, pause_cmd, unpause_cmd):
        cli.add_command(cmd)
