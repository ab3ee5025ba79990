"""`rl events`, `rl attach`, `rl pause` and `rl unpause`: watching a container and
holding it, registered on the main group by one call."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from ..errors import InvalidArgument, RlError
from .format import error, parse_template


def _template_data(ev: dict[str, Any]) -> dict[str, Any]:
    """An event as Go's events.Message fields, for --format templates."""
    actor = ev.get("Actor") or {}
    return {"Status": ev.get("status", ""), "ID": ev.get("id", ""), "From": ev.get("from", ""),
            "Type": ev.get("Type", ""), "Action": ev.get("Action", ""),
            "Actor": {"ID": actor.get("ID", ""), "Attributes": actor.get("Attributes") or {}},
            "Scope": ev.get("scope", ""), "Time": ev.get("time", 0),
            "TimeNano": ev.get("timeNano", 0)}


@click.command("events")
@click.option("--since", help="Show events created since this time (timestamp or duration).")
@click.option("--until", help="Stream events until this time (without it: follow).")
@click.option("-f", "--filter", "filters", multiple=True,
              help="type=, event=, container=, image=, label=, volume=, network=")
@click.option("--format", "fmt", help="'json' or a Go template.")
def events_cmd(since: str | None, until: str | None, filters: tuple[str, ...],
               fmt: str | None) -> None:
    """Get real time events from rl's containers, images and volumes."""
    from ..engine import events

    now = time.time()
    since_t = events.parse_time(since, now) if since else None
    until_t = events.parse_time(until, now) if until else None
    if since_t is not None and until_t is not None and until_t < since_t:
        raise InvalidArgument(f"`since` time ({since}) cannot be after `until` time ({until})")
    template = None
    if fmt and fmt != "json":
        template = parse_template(fmt)
    reader = events.Reader(since_t, until_t, events.Filters.parse(filters))
    out = sys.stdout
    warned = False

    def show(stream: Any) -> None:
        nonlocal warned
        for ev in stream:
            if fmt == "json":
                out.write(json.dumps(ev, separators=(",", ":")) + "\n")
            elif template is not None:
                out.write(template.render(_template_data(ev)) + "\n")
            else:
                out.write(events.text_line(ev) + "\n")
            out.flush()
        if reader.skipped and not warned:
            warned = True
            click.echo(f"WARNING: skipped {reader.skipped} damaged line(s) of the event log "
                       f"{events.log_dir() / events.LOG}", err=True)

    # docker: without --since only what happens from now on
    if since_t is not None:
        show(reader.past())
    else:
        reader.skip_past()
    if until_t is None or until_t > time.time():
        show(reader.follow(until_t))


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
