"""`rl events`' output loop, without click: the click command (cli/monitor.py) and
the quick path of entry.py (rootless/quickevents.py) both run it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from typing import Any

from ..engine import events
from ..errors import InvalidArgument
from ..output import one_line
from .template import parse


def _template_data(ev: dict[str, Any]) -> dict[str, Any]:
    """An event as Go's events.Message fields, for --format templates."""
    actor = ev.get("Actor") or {}
    return {"Status": ev.get("status", ""), "ID": ev.get("id", ""), "From": ev.get("from", ""),
            "Type": ev.get("Type", ""), "Action": ev.get("Action", ""),
            "Actor": {"ID": actor.get("ID", ""), "Attributes": actor.get("Attributes") or {}},
            "Scope": ev.get("scope", ""), "Time": ev.get("time", 0),
            "TimeNano": ev.get("timeNano", 0)}


def stream(since: str | None, until: str | None, filters: Iterable[str],
           fmt: str | None) -> None:
    """Print the events the flags select (following without --until); RlError for bad
    flags, before anything is printed."""
    now = time.time()
    since_t = events.parse_time(since, now) if since else None
    until_t = events.parse_time(until, now) if until else None
    if since_t is not None and until_t is not None and until_t < since_t:
        raise InvalidArgument(f"`since` time ({since}) cannot be after `until` time ({until})")
    template = parse(fmt) if fmt and fmt != "json" else None
    reader = events.Reader(since_t, until_t, events.Filters.parse(filters))
    out = sys.stdout
    warned = False

    def show(evs: Iterable[dict[str, Any]]) -> None:
        nonlocal warned
        for ev in evs:
            if fmt == "json":
                out.write(json.dumps(ev, separators=(",", ":")) + "\n")
            elif template is not None:
                out.write(template.render(_template_data(ev)) + "\n")
            else:
                out.write(events.text_line(ev) + "\n")
            out.flush()
        if reader.skipped and not warned:
            warned = True
            sys.stderr.write(one_line(f"WARNING: skipped {reader.skipped} damaged line(s) of "
                                      f"the event log {events.log_dir() / events.LOG}") + "\n")
            sys.stderr.flush()

    # docker: without --since only what happens from now on
    if since_t is not None:
        show(reader.past())
    else:
        reader.skip_past()
    if until_t is None or until_t > time.time():
        show(reader.follow(until_t))
