"""cgroup v2: finding the subtree delegated to this user and giving each container a cgroup.

Layout under the user's delegated cgroup B (the one /proc/self/cgroup names,
e.g. user.slice/user-1000.slice/user@1000.service when systemd delegates it):

    B/                  cgroup.subtree_control: +cpu +cpuset +io +memory +pids
    ├── rl.leaf/        the processes that were in B (shell, rl, supervisors)
    └── rl/             subtree_control: the same controllers
        └── <id>/       one container: its PID 1 and everything it forks

The kernel's "no internal processes" rule forbids enabling controllers for the
children of a cgroup that holds processes (EBUSY), so B's processes are first
moved into the leaf B/rl.leaf, as podman moves them into "init". A later rl
command then finds itself in B/rl.leaf and takes B as the base.

Only the supervisor creates and removes container cgroups; `rl run` checks
beforehand (probe/require) that the needed controllers are delegated, so bad
requests fail before anything is created.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RlError
from .resources import Resources, cpu_max, cpu_weight, io_weight, parse_cpu_list

LEAF = "rl.leaf"
CONTAINERS = "rl"
CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")  # the ones rl uses, in enable order
MODES = ("enabled", "disabled")
# C1 moves into the container's cgroup before it forks PID 1 (container.launch),
# so for a moment the cgroup holds two tasks: a smaller pids.max waits for C1's exit.
START_TASKS = 2


@dataclass
class Host:
    """What this process can do with cgroups."""

    version: str  # v2 | hybrid | v1 | none
    mount: str | None = None  # the cgroup2 mount point
    own: str | None = None  # this process's cgroup, relative to the v2 root
    base: str | None = None  # absolute directory rl puts containers under, if usable
    controllers: list[str] = field(default_factory=list)  # available in base
    v1_controllers: list[str] = field(default_factory=list)
    delegated: bool = False
    systemd_user: bool = False  # a systemd user instance could delegate a scope
    reason: str = ""  # why cgroups are unusable ("" when usable)

    def hint(self) -> str:
        how = ("run rl inside a delegated scope: systemd-run --user --scope -p Delegate=yes "
               "rl ..." if self.systemd_user else
               "ask the administrator to delegate a cgroup v2 subtree to you (systemd: "
               "Delegate=yes on user@.service, a unified cgroup hierarchy)")
        return f"{how}, or pass --cgroups=disabled to run without limits"


def _read(path: str | Path) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str | Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _mounts() -> tuple[str | None, list[str]]:
    v2, v1 = None, []
    with contextlib.suppress(OSError):
        for line in _read("/proc/self/mounts").splitlines():
            parts = line.split()
            if len(parts) < 4:
                continue
            if parts[2] == "cgroup2" and v2 is None:
                v2 = parts[1]
            elif parts[2] == "cgroup":
                v1 += [o for o in parts[3].split(",") if o in (*CONTROLLERS, "blkio", "cpuacct")]
    return v2, sorted(set(v1))


def _systemd_user() -> bool:
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return os.path.exists(os.path.join(runtime, "systemd", "private")) and \
        shutil.which("systemd-run") is not None


def probe() -> Host:
    """Find the delegated subtree (never writes anything)."""
    mount, v1 = _mounts()
    version = "none" if not mount and not v1 else (
        "v2" if not v1 else ("hybrid" if mount else "v1"))
    host = Host(version=version, mount=mount, v1_controllers=v1, systemd_user=_systemd_user())
    if mount is None:
        host.reason = "this host has no cgroup v2 hierarchy (cgroup v1 only)"
        return host
    with contextlib.suppress(OSError):
        for line in _read("/proc/self/cgroup").splitlines():
            if line.startswith("0::"):
                host.own = line[3:]
    if host.own is None:
        host.reason = "this process is not in the cgroup v2 hierarchy"
        return host
    own = os.path.join(mount, host.own.lstrip("/"))
    base = os.path.dirname(own) if os.path.basename(own) == LEAF else own
    try:
        host.controllers = _read(os.path.join(base, "cgroup.controllers")).split()
    except OSError as e:
        host.reason = f"cannot read {base}/cgroup.controllers: {e.strerror}"
        return host
    host.delegated = all(os.access(os.path.join(base, f), os.W_OK) for f in (
        "cgroup.procs", "cgroup.subtree_control")) and os.access(base, os.W_OK)
    if not host.delegated:
        host.reason = (f"your cgroup {host.own} is not delegated to you (its "
                       "cgroup.subtree_control is not writable)")
        if v1:
            host.reason += f"; the {', '.join(v1)} controllers are held by cgroup v1"
        return host
    usable = [c for c in host.controllers if c in CONTROLLERS]
    if not usable:
        host.reason = f"no controller is delegated in {host.own}"
        if v1:
            host.reason += (f" (this host runs a v1/v2 hybrid: {', '.join(v1)} are held by "
                            "cgroup v1 hierarchies)")
        return host
    host.base = base
    return host


def mode_from_env() -> str:
    """RL_CGROUPS (enabled | disabled): the default of --cgroups."""
    mode = os.environ.get("RL_CGROUPS", "enabled")
    if mode not in MODES:
        raise RlError(f"RL_CGROUPS={mode}: expected enabled or disabled")
    return mode


def require(res: Resources, flags: list[str], host: Host | None = None) -> Host:
    """The host, if it can enforce res; a clear RlError (why + how to fix) otherwise."""
    host = host or probe()
    need = res.controllers()
    if not need:
        return host
    what = ", ".join(flags) or "resource limits"
    if host.base is None:
        raise RlError(f"{what} cannot be enforced: {host.reason}; {host.hint()}")
    missing = sorted(need - set(host.controllers))
    if missing:
        raise RlError(f"{what} cannot be enforced: the {', '.join(missing)} controller(s) "
                      f"are not delegated to your cgroup {host.own} (delegated: "
                      f"{' '.join(host.controllers) or 'none'}); {host.hint()}")
    return host


def available_cpus(host: Host) -> set[int] | None:
    """The CPUs the delegated subtree may use (its cpuset.cpus.effective)."""
    if host.base is None:
        return None
    try:
        return parse_cpu_list(_read(os.path.join(host.base, "cpuset.cpus.effective")).strip(),
                              "cpuset-cpus")
    except (OSError, RlError):
        return None


# -- creating the tree ---------------------------------------------------------------


def _enable(cg: str, controllers: list[str], move_to: str | None) -> None:
    """Enable controllers for cg's children; move cg's processes to move_to on EBUSY."""
    for _ in range(20):
        enabled = set(_read(os.path.join(cg, "cgroup.subtree_control")).split())
        missing = [c for c in controllers if c not in enabled]
        if not missing:
            return
        try:
            _write(os.path.join(cg, "cgroup.subtree_control"),
                   " ".join("+" + c for c in missing))
        except OSError as e:
            if e.errno != errno.EBUSY or move_to is None:
                raise RlError(f"cannot enable the {' '.join(missing)} controller(s) in "
                              f"{cg}: {e.strerror}") from None
            _move_all(cg, move_to)
    raise RlError(f"cannot enable controllers in {cg}: processes keep appearing in it")


def _move_all(src: str, dst: str) -> None:
    os.makedirs(dst, exist_ok=True)
    for pid in _read(os.path.join(src, "cgroup.procs")).split():
        try:
            _write(os.path.join(dst, "cgroup.procs"), pid)
        except OSError as e:
            if e.errno != errno.ESRCH:  # gone meanwhile
                raise RlError(f"cannot move process {pid} out of {src} into {dst} (the "
                              f"kernel forbids controllers in a cgroup with processes): "
                              f"{e.strerror}") from None


def container_path(host: Host, cid: str) -> str:
    assert host.base is not None
    return os.path.join(host.base, CONTAINERS, cid)


def create(host: Host, cid: str, res: Resources) -> str:
    """Make the container's cgroup with its limits; its path. Nothing is left on failure."""
    assert host.base is not None
    controllers = [c for c in CONTROLLERS if c in host.controllers]
    parent = os.path.join(host.base, CONTAINERS)
    try:
        _enable(host.base, controllers, os.path.join(host.base, LEAF))
        os.makedirs(parent, exist_ok=True)
        _enable(parent, controllers, None)
    except OSError as e:
        raise RlError(f"setting up the cgroup tree in {host.base}: {e.strerror}") from None
    path = os.path.join(parent, cid)
    remove(path)  # a left-over of this container's earlier run (supervisor killed)
    try:
        os.mkdir(path)
    except OSError as e:
        raise RlError(f"creating the container's cgroup {path}: {e.strerror}") from None
    try:
        apply(path, _for_start(res))
    except BaseException:
        remove(path)
        raise
    return path


def _for_start(res: Resources) -> Resources:
    """res as the start needs it: room for C1 and PID 1 side by side."""
    if 0 < res.pids_limit < START_TASKS:
        return dataclasses.replace(res, pids_limit=START_TASKS)
    return res


def settle(path: str, res: Resources) -> None:
    """Write what _for_start relaxed, once C1 is gone and before the command runs."""
    if 0 < res.pids_limit < START_TASKS:
        _set(path, "pids.max", str(res.pids_limit))


def _set(path: str, name: str, value: str, required: bool = True) -> None:
    target = os.path.join(path, name)
    if not required and not os.path.exists(target):
        return
    try:
        _write(target, value)
    except OSError as e:
        raise RlError(f"setting {name} to {value!r}: {e.strerror}") from None


def apply(path: str, res: Resources) -> None:
    """Write res into the cgroup at path (files of unset limits go back to the defaults)."""
    if res.cpuset_cpus or os.path.exists(os.path.join(path, "cpuset.cpus")):
        _set(path, "cpuset.cpus", res.cpuset_cpus, required=bool(res.cpuset_cpus))
        _set(path, "cpuset.mems", res.cpuset_mems, required=bool(res.cpuset_mems))
    if os.path.exists(os.path.join(path, "memory.max")) or res.memory:
        # Order matters when lowering: swap.max is independent in v2, memory.max first.
        _set(path, "memory.max", str(res.memory) if res.memory else "max")
        if res.memory_swap > 0:
            _set(path, "memory.swap.max", str(max(res.memory_swap - res.memory, 0)),
                 required=res.memory_swap != 2 * res.memory)
        else:
            _set(path, "memory.swap.max", "max", required=False)
        _set(path, "memory.low", str(res.memory_reservation), required=False)
    line = cpu_max(res)
    if line is not None or os.path.exists(os.path.join(path, "cpu.max")):
        _set(path, "cpu.max", line or "max", required=line is not None)
        weight = cpu_weight(res.cpu_shares) if res.cpu_shares else 100
        _set(path, "cpu.weight", str(weight), required=bool(res.cpu_shares))
    if res.pids_limit or os.path.exists(os.path.join(path, "pids.max")):
        _set(path, "pids.max", str(res.pids_limit) if res.pids_limit > 0 else "max")
    if res.blkio_weight:
        _set(path, "io.weight", f"default {io_weight(res.blkio_weight)}")
    for wd in res.blkio_weight_device:
        _set(path, "io.weight", f"{wd.major}:{wd.minor} {io_weight(wd.weight)}")
    lines: dict[tuple[int, int], dict[str, int]] = {}
    for key, items in (("rbps", res.device_read_bps), ("wbps", res.device_write_bps),
                       ("riops", res.device_read_iops), ("wiops", res.device_write_iops)):
        for t in items:
            lines.setdefault((t.major, t.minor), {})[key] = t.rate
    for (major, minor), limits in lines.items():
        values = " ".join(f"{k}={limits.get(k, 'max')}" for k in ("rbps", "wbps", "riops",
                                                                  "wiops"))
        _set(path, "io.max", f"{major}:{minor} {values}")


def attach(path: str, pid: int) -> None:
    """Move the container's first process C1 into its cgroup, before it makes the
    cgroup namespace and forks PID 1 (which inherits the cgroup)."""
    try:
        _write(os.path.join(path, "cgroup.procs"), str(pid))
    except OSError as e:
        raise RlError(f"moving the container into its cgroup {path}: {e.strerror}") from None


def oom_killed(path: str) -> bool:
    """Whether the kernel's OOM killer killed anything in this cgroup (memory.events)."""
    try:
        events = _read(os.path.join(path, "memory.events"))
    except OSError:
        return False
    for line in events.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip() != "0":
            return True
    return False


def remove(path: str) -> None:
    """Kill what is left in the cgroup and remove it (no error if it is gone)."""
    for attempt in range(100):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                return
        # Processes are still dying (or a killed supervisor left some): cgroup.kill
        # (Linux 5.14) takes them all at once.
        if attempt == 0:
            with contextlib.suppress(OSError):
                _write(os.path.join(path, "cgroup.kill"), "1")
        time.sleep(0.01)


def populated(path: str) -> bool:
    try:
        return "populated 1" in _read(os.path.join(path, "cgroup.events"))
    except OSError:
        return False


def collect_garbage(host: Host, alive: Callable[[str], bool], known: set[str]) -> None:
    """Remove the empty cgroups of containers whose supervisor is gone (kill -9 included).

    alive(id): whether that container's supervisor runs, asked only after the
    cgroups were listed: a supervisor takes its lock before it makes its
    cgroup, so a cgroup in the listing whose supervisor is starting reads as
    alive. known: every id in this user's store; a cgroup of an unknown id
    (another rl state directory) must also be a minute old.
    """
    if host.base is None:
        return
    parent = os.path.join(host.base, CONTAINERS)
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    now = time.time()
    for name in entries:
        full = os.path.join(parent, name)
        if alive(name) or populated(full):
            continue
        # Only ever rmdir here, never cgroup.kill: a cgroup that has just
        # gained a process stays (EBUSY).
        with contextlib.suppress(OSError):
            if name in known or now - os.stat(full).st_mtime > 60:
                os.rmdir(full)


# -- an OCI runtime's cgroup (rl-oci: linux.cgroupsPath) ---------------------------


def oci_path(host: Host, cgroups_path: str | None, cid: str) -> str:
    """Where an OCI config's container goes: cgroupsPath (absolute: from the cgroup2
    root; relative: under the delegated base), else (or for a systemd
    slice:scope) base/rl/oci-ID. RlError if that is outside the subtree
    delegated to this user."""
    assert host.base is not None and host.mount is not None
    if not cgroups_path or ":" in cgroups_path:
        # None given, or a systemd slice:scope (podman's, under its systemd
        # manager): rl has no systemd manager, the delegated base serves.
        return os.path.join(host.base, CONTAINERS, f"oci-{cid}")
    top = host.mount if cgroups_path.startswith("/") else host.base
    path = os.path.normpath(os.path.join(top, cgroups_path.lstrip("/")))
    if os.path.commonpath([path, host.base]) != host.base or path == host.base:
        raise RlError(f"linux.cgroupsPath {cgroups_path} is outside your delegated cgroup "
                      f"{host.own}")
    return path


def create_at(host: Host, path: str, res: Resources, files: dict[str, str]) -> str:
    """create() at any path below the delegated base (oci_path), with files written
    as given after res; nothing is left on failure."""
    assert host.base is not None
    controllers = [c for c in CONTROLLERS if c in host.controllers]
    extra = sorted({k.split(".", 1)[0] for k in files} - set(CONTROLLERS))
    controllers += [c for c in extra if c in host.controllers]
    made: list[str] = []
    try:
        _enable(host.base, controllers, os.path.join(host.base, LEAF))
        parent = host.base
        for part in os.path.relpath(os.path.dirname(path), host.base).split(os.sep):
            if part in ("", "."):
                continue
            parent = os.path.join(parent, part)
            if not os.path.isdir(parent):
                os.mkdir(parent)
                made.append(parent)
            _enable(parent, controllers, None)
        remove(path)  # left by a killed rl-oci run of this id
        os.mkdir(path)
        made.append(path)
        apply(path, _for_start(res))
        for name, value in files.items():
            _set(path, name, value)
    except OSError as e:
        for d in reversed(made):
            remove(d)
        raise RlError(f"creating the container's cgroup {path}: {e.strerror}") from None
    except BaseException:
        for d in reversed(made):
            remove(d)
        raise
    return path

# -- the freezer (rl pause) ------------------------------------------------------------


def is_frozen(path: str) -> bool:
    """Whether the cgroup is frozen: cgroup.events says `frozen 1` once every task stopped."""
    try:
        text = _read(os.path.join(path, "cgroup.events"))
    except OSError:
        return False
    return "frozen 1" in text.splitlines()


def freeze(path: str, frozen: bool, timeout: float = 10) -> None:
    """Freeze (or thaw) the cgroup's tasks and wait until the kernel says it is done.

    cgroup.freeze asks; the kernel stops each task at its next return to user
    space and only then flips cgroup.events' `frozen`: a task in an
    uninterruptible sleep can take a while, so wait for it (poll() on
    cgroup.events wakes on each change), bounded.
    """
    try:
        _write(os.path.join(path, "cgroup.freeze"), "1" if frozen else "0")
    except OSError as e:
        raise RlError(f"{'freezing' if frozen else 'thawing'} the cgroup {path}: "
                      f"{e.strerror}") from None
    import select

    deadline = time.monotonic() + timeout
    events_path = os.path.join(path, "cgroup.events")
    try:
        fd = os.open(events_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise RlError(f"reading {events_path}: {e.strerror}") from None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI | select.POLLERR)
        while True:
            text = os.pread(fd, 4096, 0).decode()
            if (f"frozen {int(frozen)}") in text.splitlines():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise RlError(f"the cgroup {path} did not become "
                              f"{'frozen' if frozen else 'thawed'} within {timeout:g} s")
            poller.poll(min(left, 0.05) * 1000)
    finally:
        os.close(fd)
