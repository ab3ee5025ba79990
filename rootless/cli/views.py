"""The engine's records as the CLI shows them: docker's --format json keys and text layouts.

The engine returns typed values (timestamps, bytes, port mappings); the
strings `rl ps`, `rl stats`, `rl port` and `rl info` print are made here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..engine.humanize import binary_size, duration, human_size

if TYPE_CHECKING:
    from netstack.ports import PortMapping

    from ..engine.listing import ContainerSummary
    from ..engine.quotas import Stats


def ports_text(ports: Iterable[PortMapping]) -> str:
    """docker ps's PORTS column: "0.0.0.0:8080->80/tcp, …"."""
    return ", ".join(f"{m.host_text()}->{m.key()}" for m in ports)


def port_lines(ports: Iterable[PortMapping], addresses_only: bool) -> list[str]:
    """docker port's lines: "80/tcp -> 0.0.0.0:8080", or only the addresses."""
    if addresses_only:
        return [m.host_text() for m in ports]
    return [f"{m.key()} -> {m.host_text()}" for m in ports]


# docker's column names for `--format 'table ...'` (others: the key in capitals)
PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
              "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Status": "STATUS",
              "State": "STATE", "Names": "NAMES", "Ports": "PORTS", "Networks": "NETWORKS"}
STATS_HEADERS = {"ID": "CONTAINER ID", "Container": "CONTAINER", "Name": "NAME",
                 "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %",
                 "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}


def ps_row(s: ContainerSummary, now: float, no_trunc: bool) -> dict[str, Any]:
    """One container as `ps --format` sees it (docker's keys)."""
    return {
        "ID": s.id if no_trunc else s.id[:12], "Image": s.image, "Command": s.command,
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(s.created)),
        "RunningFor": f"{duration(now - s.created)} ago", "Status": s.status(now),
        "State": s.state, "Names": s.name, "Ports": ports_text(s.ports),
        "Networks": ",".join(s.networks),
    }


def stats_row(s: Stats) -> dict[str, Any]:
    """One line of `rl stats`: docker's --format json keys (strings) plus raw figures."""
    if not s.available:
        dash = "--"
        return {"ID": s.id, "Container": s.id[:12], "Name": s.name,
                "CPUPerc": dash, "MemUsage": f"{dash} / {dash}", "MemPerc": dash,
                "NetIO": f"{human_size(s.net_rx)} / {human_size(s.net_tx)}",
                "BlockIO": f"{dash} / {dash}", "PIDs": str(s.pids),
                "Cgroup": False, "PIDsCurrent": s.pids, "NetRxBytes": s.net_rx,
                "NetTxBytes": s.net_tx}
    return {
        "ID": s.id, "Container": s.id[:12], "Name": s.name,
        "CPUPerc": f"{s.cpu_percent:.2f}%",
        "MemUsage": f"{binary_size(s.mem_usage)} / {binary_size(s.mem_limit)}",
        "MemPerc": f"{s.mem_percent:.2f}%",
        "NetIO": f"{human_size(s.net_rx)} / {human_size(s.net_tx)}",
        "BlockIO": f"{human_size(s.block_read)} / {human_size(s.block_write)}",
        "PIDs": str(s.pids),
        "Cgroup": True,
        "CPUUsageUsec": s.cpu_usec, "MemUsageBytes": s.mem_usage,
        "MemLimitBytes": s.mem_limit, "PIDsCurrent": s.pids,
        "PIDsLimit": s.pids_limit, "BlockReadBytes": s.block_read,
        "BlockWriteBytes": s.block_write, "NetRxBytes": s.net_rx,
        "NetTxBytes": s.net_tx,
    }


def render_info(data: dict[str, Any], indent: int = 0) -> str:
    """`rl info`'s nested dict as indented 'key: value' lines (podman info's shape)."""
    out = []
    for key, value in data.items():
        pad = "  " * indent
        if isinstance(value, dict):
            out.append(f"{pad}{key}:\n{render_info(value, indent + 1)}")
        elif isinstance(value, list):
            items = ", ".join(":".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
                              for v in value)
            out.append(f"{pad}{key}: [{items}]\n")
        else:
            out.append(f"{pad}{key}: {'' if value is None else value}\n")
    return "".join(out)
