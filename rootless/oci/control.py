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

    from ..runtime.spec import Hooks


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
    hooks = saved_hooks(root, cid)
    if hooks is not None:
        rec, _ = root.get(cid)
        _post(hooks, "poststart", rec, "running")


CGROUP = "cgroup"  # the path of the container's cgroup, if rl-oci made one


def save_cgroup(state_dir: str, path: str) -> None:
    with open(os.path.join(state_dir, CGROUP), "w") as f:
        f.write(path)


def saved_hooks(root: Root, cid: str) -> Hooks | None:
    """The poststart and poststop hooks create kept; one stat when there are none."""
    d = root.dir(cid)
    if not os.path.exists(os.path.join(d, "hooks.json")):
        return None
    from ..runtime import hooks

    return hooks.saved(d)


def _post(hooks: Hooks, kind: str, rec: Record | None, status: str, cid: str = "") -> None:
    """Run a kind of hook whose failures are warnings (the spec's poststart, poststop)."""
    import json

    from ..runtime import hooks as run_hooks
    from .log import warn

    state = state_json(rec, status) if rec is not None else {
        "ociVersion": "1.0.2", "id": cid, "status": status, "pid": 0}
    for w in run_hooks.run_warning(hooks, kind, json.dumps(state).encode()):
        warn(w)


def remove(root: Root, cid: str, rec: Record | None) -> None:
    """Remove cid's state, then run its poststop hooks (delete, and `run`'s end)."""
    cgroup = None
    try:
        with open(os.path.join(root.dir(cid), CGROUP)) as f:
            cgroup = f.read()
    except OSError:
        pass
    hooks = saved_hooks(root, cid)
    if hooks is not None and rec is None:
        try:
            rec = root.entry(cid).record
        except RlError:
            pass
    root.remove(cid)
    if cgroup:
        from ..runtime import cgroups

        cgroups.remove(cgroup)
    if hooks is not None:
        _post(hooks, "poststop", rec, "stopped", cid)


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
    remove(root, cid, entry.record)


def state(root: Root, cid: str) -> dict[str, Any]:
    rec, status = root.get(cid)
    return state_json(rec, status)
