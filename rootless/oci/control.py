"""The OCI operations on an existing container: start, kill, delete, state, its members.

Kept apart from lifecycle (create, run), which loads the whole runtime:
conmon and podman call these for every container, and each call is a fresh
process, so they import only the records and the gate.
"""

from __future__ import annotations

import os
import select

from ..errors import Conflict, InvalidArgument, NotFound, NotRunning, RlError
from ..runtime import gate
from .records import Record, Root, pidfd, state_json

# typing.TYPE_CHECKING without importing typing (mypy knows the name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def start(root: Root, cid: str) -> None:
    _, status = root.get(cid)
    if status == "running":
        raise Conflict("cannot start an already running container")
    if status == "stopped":
        raise NotRunning("cannot start a container that has stopped")
    if status == "creating":
        raise Conflict(f"container {cid} is being created")
    try:
        gate.release(root.dir(cid))
    except NotRunning:
        raise NotRunning("cannot start a container that has stopped") from None
    except Conflict:
        raise Conflict("cannot start an already running container") from None


def parse_signal(text: str) -> int:
    """A signal by number or name (KILL, SIGKILL, kill); InvalidArgument otherwise."""
    # signal here, not at the top: its enums cost start, state and delete ~5 ms.
    import signal

    if text.isdigit():
        n = int(text)
        if n in signal.valid_signals() and n > 0:
            return n
    else:
        name = text.upper()
        names = {s.name: s for s in signal.Signals if not s.name.startswith("SIG_")}
        sig = names.get(name if name.startswith("SIG") else "SIG" + name)
        if sig is not None:
            return int(sig)
    raise InvalidArgument(f"unknown signal {text!r}")


def _pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def members(rec: Record) -> list[int]:
    """The host pids of the container's processes: PID 1 and, with a PID namespace
    of its own, every process in it."""
    ns = _pid_ns(rec.pid)
    if ns is None:
        return []
    if ns == _pid_ns(os.getpid()):
        return [rec.pid]
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _pid_ns(int(name)) == ns:
            pids.append(int(name))
    return sorted(pids)


def kill(root: Root, cid: str, sig: int, all_: bool = False) -> None:
    rec, status = root.get(cid)
    if status not in ("created", "running"):
        raise NotRunning("container not running")
    fd = pidfd(rec)
    if fd is None:
        raise NotRunning("container not running")
    import signal

    try:
        others = [p for p in members(rec) if p != rec.pid] if all_ else []
        signal.pidfd_send_signal(fd, sig)
    finally:
        os.close(fd)
    for pid in others:
        try:
            os.kill(pid, sig)
        except OSError:
            pass  # gone meanwhile


def _kill_and_wait(rec: Record, timeout: float = 10.0) -> None:
    fd = pidfd(rec)
    if fd is None:
        return
    import signal

    try:
        # SIGKILL to PID 1 of a PID namespace kills every process in it.
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        if not select.select([fd], [], [], timeout)[0]:
            raise RlError(f"container {rec.id}'s process {rec.pid} did not die in "
                          f"{timeout:.0f} s")
    finally:
        os.close(fd)


def delete(root: Root, cid: str, force: bool) -> None:
    try:
        entry = root.entry(cid)
    except NotFound:
        if force:
            return
        raise
    if entry.status == "creating":
        raise Conflict(f"container {cid} is being created")
    if entry.record is not None and entry.status != "stopped":
        if entry.status == "running" and not force:
            raise Conflict(f"cannot delete container {cid} that is not stopped: running")
        _kill_and_wait(entry.record)
    root.remove(cid)


def state(root: Root, cid: str) -> dict[str, Any]:
    rec, status = root.get(cid)
    return state_json(rec, status)
