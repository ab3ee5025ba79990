"""Durations, sizes and statuses spelled the way docker prints them.

Here and not in a face: docker's API itself answers a container's Status
as text ("Up 5 seconds"), so every face spells it the same way.
"""

from __future__ import annotations

import time


def duration(seconds: float) -> str:
    """docker's units.HumanDuration: 'Less than a second', '5 seconds', 'About a minute'…"""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def status(state: str, exit_code: int = 0, started_at: float = 0.0, finished_at: float = 0.0,
           now: float | None = None, health: str = "") -> str:
    """docker's container Status: 'Up 5 seconds', 'Exited (0) 3 minutes ago', 'Created',
    'Up 3 seconds (healthy)', 'Restarting (1) 2 seconds ago'."""
    now = now or time.time()
    if state == "restarting":
        return f"Restarting ({exit_code}) {duration(now - finished_at)} ago"
    if state == "running" and health:
        return f"Up {duration(now - started_at)} ({health})"
    if state == "running":
        return f"Up {duration(now - started_at)}"
    if state == "paused":
        return f"Up {duration(now - started_at)} (Paused)"
    if state == "exited":
        return f"Exited ({exit_code}) {duration(now - finished_at)} ago"
    if state == "dead":
        return "Dead"
    return "Created"


def _size(n: float, base: int, units: list[str]) -> str:
    i = 0
    while n >= base and i < len(units) - 1:
        n /= base
        i += 1
    return f"{n:.4g}{units[i]}"


def binary_size(n: float) -> str:
    """docker's BytesSize: 1.5MiB."""
    return _size(n, 1024, ["B", "KiB", "MiB", "GiB", "TiB", "PiB"])


def human_size(n: float) -> str:
    """docker's HumanSize (decimal): 1.2kB."""
    return _size(n, 1000, ["B", "kB", "MB", "GB", "TB", "PB"])
