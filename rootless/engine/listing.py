"""`rl ps` and `rl port` as data: container summaries, their filters, their ports.

The rules are docker's and live here, not in a face: which containers a
listing shows (-a, -n, filters), what a filter may say, which ports a
container publishes. A face turns the records into its own output (the
CLI's table, --format, -q; the API's ContainerSummary JSON).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from netstack.options import NetOptions
from netstack.ports import PortMapping
from netstack.stack import published_ports

from ..errors import InvalidArgument, NotFound
from . import pause, quotas, restart, store
from .humanize import status
from .store import Container

FILTER_KEYS = ("name", "status", "id")


@dataclass(frozen=True)
class Filters:
    """`ps --filter KEY=VALUE`s: a container must match every one given.

    names: substrings of the name; statuses: the state (created, running,
    exited, dead); ids: prefixes of the id. Two values of one key must both
    match, as rl's ps has always done (docker would take either).
    """

    names: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Filters:
        """Filters from "KEY=VALUE" strings; InvalidArgument for a key rl does not know."""
        given: dict[str, list[str]] = {k: [] for k in FILTER_KEYS}
        for spec in specs:
            key, _, value = spec.partition("=")
            if key not in given:
                raise InvalidArgument(f"invalid filter '{key}'")
            given[key].append(value)
        return cls(names=tuple(given["name"]), statuses=tuple(given["status"]),
                   ids=tuple(given["id"]))

    def __bool__(self) -> bool:
        return bool(self.names or self.statuses or self.ids)

    def match(self, s: ContainerSummary) -> bool:
        return (all(n in s.name for n in self.names)
                and all(st == s.state for st in self.statuses)
                and all(s.id.startswith(i) for i in self.ids))


@dataclass(frozen=True)
class ContainerSummary:
    """One container as `ps` lists it; times are Unix timestamps (0: never)."""

    id: str
    name: str
    image: str
    command: str  # the process's argv, shell-quoted
    created: float
    state: str  # created | running | exited | dead
    exit_code: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    ports: tuple[PortMapping, ...] = ()  # what it publishes while it runs
    health: str = ""  # "healthy", "health: starting"... ("": no healthcheck)
    networks: tuple[str, ...] = ()  # its user networks, or the mode `network ls` names

    def status(self, now: float | None = None) -> str:
        """docker's Status text: "Up 5 seconds", "Exited (0) 3 minutes ago"…"""
        return status(self.state, self.exit_code, self.started_at, self.finished_at, now,
                      health=self.health)


def live_ports(ctr: Container) -> list[PortMapping]:
    """The ports a container publishes now ([] unless its supervisor runs)."""
    return published_ports(ctr.run_dir) if store.supervisor_alive(ctr.id) else []


def _summary(c: Container, all_: bool) -> ContainerSummary | None:
    """c's summary, None if the listing leaves it out (or it was removed meanwhile)."""
    try:
        st = c.state()
        if st.status == "dead":
            # Without -a too while a supervisor still runs for it.
            if not (all_ or st.supervisor_pid):
                return None
            image, command, created = store.salvage(c)
            return ContainerSummary(id=c.id, name=c.name, image=image, command=command,
                                    created=created, state="dead")
        cfg = c.config
    except store.RecordError:
        return None
    if not all_ and st.status != "running":
        return None
    return ContainerSummary(
        id=c.id, name=cfg.name, image=cfg.image, command=shlex.join(cfg.spec.process.args),
        created=cfg.created, state="paused" if pause.is_paused(st) else restart.ps_state(st),
        exit_code=st.exit_code,
        started_at=st.started_at, finished_at=st.finished_at, health=restart.ps_health(st),
        ports=tuple(live_ports(c)) if st.status == "running" else (),
        networks=_networks(cfg.net))


def _networks(net: dict[str, Any]) -> tuple[str, ...]:
    if not net:
        return ()
    opts = NetOptions.from_dict(net)
    if opts.mode == "network":
        return (opts.network, *(c.network for c in opts.connected))
    return () if opts.mode == "container" else (opts.mode,)


def list_containers(all_: bool = False, filters: Filters | None = None,
                    last: int | None = None) -> list[ContainerSummary]:
    """docker ps: the running containers, newest first.

    all_: stopped and created ones too; last: only the `last` newest (of all
    of them, as docker's -n and -l); a filter or `last` implies all_.
    """
    filters = filters or Filters()
    all_ = all_ or last is not None or bool(filters)
    store.collect_garbage()
    quotas.collect_garbage()
    out = [s for c in store.all_containers()
           if (s := _summary(c, all_)) is not None and filters.match(s)]
    out.sort(key=lambda s: s.created, reverse=True)
    return out if last is None else out[:max(last, 0)]


def port(ref: str, private: str | None = None) -> list[PortMapping]:
    """docker port: what a container publishes; with "PORT[/PROTO]", the mappings of that port.

    NotFound when that port is not published.
    """
    ctr = store.lookup(ref)
    mappings = live_ports(ctr)
    if private is None:
        return mappings
    number, slash, proto = private.partition("/")
    proto = proto.lower() if slash else "tcp"
    if not number.isdigit() or proto not in ("tcp", "udp"):
        raise InvalidArgument(f"invalid port {private!r}: expected PORT[/tcp|/udp]", 1)
    found = [m for m in mappings if m.container_port == int(number) and m.protocol == proto]
    if not found:
        raise NotFound(f"no public port '{number}/{proto}' published for {ref}", 1)
    return found

