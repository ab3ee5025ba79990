"""Restart policies and healthchecks on the command line: run/create's --restart and
--health-* flags, `rl restart`, `rl update --restart`, `rl start --all-restartable`
and `rl healthcheck run` (podman's). The logic is the engine's (engine/restart.py,
engine/health.py); destinations are CreateOptions' field names."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import InvalidArgument, RlError
from .format import error

OPTIONS = [
    click.option("--restart", help="Restart policy: no, always, unless-stopped, "
                                   "on-failure[:max-retries]."),
    click.option("--health-cmd", help="Command to run to check health (CMD-SHELL)."),
    click.option("--health-interval", help="Time between running the check (ms|s|m|h)."),
    click.option("--health-timeout", help="Maximum time to allow one check to run."),
    click.option("--health-retries", type=int, help="Consecutive failures to report unhealthy."),
    click.option("--health-start-period", help="Start period: failures do not count."),
    click.option("--health-start-interval", help="Time between checks in the start period."),
    click.option("--no-healthcheck", is_flag=True, help="Disable any container-specified "
                                                        "HEALTHCHECK."),
    click.option("--health-on-failure", help="Action once unhealthy: none, kill, restart, "
                                             "stop."),
]


def options(f: Callable[..., Any]) -> Callable[..., Any]:
    for o in reversed(OPTIONS):
        f = o(f)
    return f


def update_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--restart", help="Restart policy to apply.")(f)


def start_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--all-restartable", is_flag=True,
                        help="Start every stopped container whose restart policy is always, "
                             "or unless-stopped and not stopped by the user (what dockerd "
                             "does at boot).")(f)


def start_all() -> None:
    """`rl start --all-restartable`: print each started container's name."""
    from ..engine import containers as api
    from ..engine import restart, store

    failed = False
    for ctr in store.all_containers():
        if not restart.restartable(ctr):
            continue
        try:
            api.start(ctr, attach=False, stdin=False)
            click.echo(ctr.name)
        except RlError as e:
            error(e.message)
            failed = True
    if failed:
        sys.exit(1)


def register(cli: click.Group) -> None:
    cli.add_command(restart_cmd)
    cli.add_command(healthcheck)


@click.command("restart")
@click.option("-t", "--time", "timeout", type=int, help="Seconds to wait before killing it.")
@click.option("-s", "--signal", "sig", help="Signal to send instead of the stop signal.")
@click.argument("containers", nargs=-1, required=True)
def restart_cmd(timeout: int | None, sig: str | None, containers: tuple[str, ...]) -> None:
    """Restart one or more containers (stop, then start)."""
    from ..engine import containers as api
    from ..engine import store
    from ..engine.options import StopOptions

    opts = StopOptions(timeout)
    opts.signal = api.parse_signal(sig) if sig else None
    failed = False
    for ref in containers:
        try:
            api.restart_container(store.lookup(ref), opts)
            click.echo(ref)
        except RlError as e:
            error(e.message)
            failed = True
    if failed:
        sys.exit(1)


@click.group("healthcheck")
def healthcheck() -> None:
    """Run a container's healthcheck (podman's)."""


@healthcheck.command("run")
@click.argument("container")
def healthcheck_run(container: str) -> None:
    """Run the healthcheck now: exit 0 healthy, 1 unhealthy or starting."""
    from ..engine import health, store

    ctr = store.lookup(container)
    try:
        status = health.run(ctr)
    except InvalidArgument:
        raise
    except RlError as e:
        raise InvalidArgument(e.message) from None
    if status != health.HEALTHY:
        click.echo(status)
        sys.exit(1)
