"""`rl pause` / `rl unpause`: the cgroup v2 freezer on the container's own cgroup.

Paused is not a status in the record: it is the kernel's word, read from the
container's cgroup (cgroup.events `frozen 1`) when ps or inspect asks, so a
supervisor killed meanwhile or a thaw by hand never leaves a record that lies.
Without a cgroup of its own (no delegation, or --cgroups=disabled) there is
nothing rl could freeze the container's processes with but SIGSTOP, which a
process sees and its parent is told of (docker never does that): refused.
"""

from __future__ import annotations

import contextlib

from ..errors import Conflict, NotRunning, RlError
from ..runtime import cgroups
from . import events, store
from .store import Container


def is_paused(st: store.State) -> bool:
    return st.status == "running" and bool(st.cgroup) and cgroups.is_frozen(st.cgroup)


def _running_cgroup(ctr: Container) -> str:
    st = ctr.state()
    if st.status != "running":
        raise NotRunning(f"Container {ctr.id} is not running", 1)
    if st.cgroup:
        return st.cgroup
    if ctr.config.cgroups == "disabled":
        why = "it was created with --cgroups=disabled"
    else:
        why = cgroups.probe().reason or "it has no cgroup of its own"
    raise RlError(f"cannot pause container {ctr.label}: the cgroup v2 freezer needs a cgroup "
                  f"of the container's own, and {why}")


def pause(ctr: Container) -> None:
    path = _running_cgroup(ctr)
    if cgroups.is_frozen(path):
        raise Conflict(f"Container {ctr.id} is already paused", 1)
    cgroups.freeze(path, True)
    events.container_event(ctr.config, "pause")


def unpause(ctr: Container) -> None:
    st = ctr.state()
    if not is_paused(st):
        raise Conflict(f"Container {ctr.id} is not paused", 1)
    cgroups.freeze(st.cgroup, False)
    events.container_event(ctr.config, "unpause")


def thaw_for_signal(ctr: Container) -> None:
    """A paused container gets the signal it was sent (stop, kill): docker thaws it."""
    with contextlib.suppress(RlError, OSError):
        st = ctr.state()
        if is_paused(st):
            cgroups.freeze(st.cgroup, False)
            events.container_event(ctr.config, "unpause")
