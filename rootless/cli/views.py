"""The engine's records as the CLI shows them: docker's --format json keys and text layouts.

The engine returns typed values (timestamps, bytes, port mappings); the
strings `rl ps` and `rl port` print are made here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..engine.humanize import duration

if TYPE_CHECKING:
    from netstack.ports import PortMapping

    from ..engine.listing import ContainerSummary


def ports_text(ports: Iterable[PortMapping]) -> str:
    """docker ps's PORTS column: "0.0.0.0:8080->80/tcp, …"."""
    return ", ".join(f"{m.host_text()}->{m.key()}" for m in ports)


def port_lines(ports: Iterable[PortMapping], addresses_only: bool) -> list[str]:
    """docker port's lines: "80/tcp -> 0.0.0.0:8080", or only the addresses."""
    if addresses_only:
        return [m.host_text() for m in ports]
    return [f"{m.key()} -> {m.host_text()}" for m in ports]


def ps_row(s: ContainerSummary, now: float, no_trunc: bool) -> dict[str, Any]:
    """One container as `ps --format` sees it (docker's keys)."""
    return {
        "ID": s.id if no_trunc else s.id[:12], "Image": s.image, "Command": s.command,
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(s.created)),
        "RunningFor": f"{duration(now - s.created)} ago", "Status": s.status(now),
        "State": s.state, "Names": s.name, "Ports": ports_text(s.ports),
    }

