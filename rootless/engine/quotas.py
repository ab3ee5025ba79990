"""The library API of resource limits: validation at create, `rl update`, `rl stats`,
and the figures `rl inspect` shows (docker's HostConfig names).

cgroups.py does the kernel work; resources.py holds the data. Nothing here prints.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument, NotRunning, RlError
from ..runtime import cgroups
from ..runtime.resources import LimitFlags, Resources, parse
from . import store
from .store import Container


def build(flags: LimitFlags, mode: str | None) -> tuple[Resources, str]:
    """Validate the limit flags of `rl run/create` (nothing is created): (limits, mode)."""
    mode = mode or cgroups.mode_from_env()
    if mode not in cgroups.MODES:
        raise InvalidArgument(f"invalid --cgroups value {mode!r}: expected enabled or disabled")
    given = flags.given()
    if mode == "disabled":
        if given:
            raise InvalidArgument(f"{', '.join(given)} cannot be used with --cgroups=disabled: "
                                  "limits need a cgroup")
        return Resources(), mode
    host = cgroups.probe() if given else None
    res = parse(flags, available_cpus=cgroups.available_cpus(host) if host else None)
    if given:
        cgroups.require(res, given, host)
    return res, mode


def collect_garbage() -> None:
    """Remove the cgroups that containers whose supervisor died left behind."""
    host = cgroups.probe()
    if host.base is None:
        return
    known = {c.id for c in store.all_containers()}
    cgroups.collect_garbage(host, store.supervisor_alive, known)


def _throttles(items: list[Any]) -> list[dict[str, Any]] | None:
    return [{"Path": t.path, "Rate": t.rate} for t in items] or None


def host_config(ctr: Container) -> dict[str, Any]:
    """docker's HostConfig resource fields (and podman's Cgroups) for `rl inspect`."""
    cfg = ctr.config
    r = cfg.resources
    return {
        "Cgroups": cfg.cgroups,
        "Memory": r.memory,
        "MemorySwap": r.memory_swap,
        "MemoryReservation": r.memory_reservation,
        "NanoCpus": r.nano_cpus,
        "CpuPeriod": r.cpu_period,
        "CpuQuota": r.cpu_quota,
        "CpuShares": r.cpu_shares,
        "PidsLimit": r.pids_limit or None,
        "CpusetCpus": r.cpuset_cpus,
        "CpusetMems": r.cpuset_mems,
        "BlkioWeight": r.blkio_weight,
        "BlkioWeightDevice": [{"Path": w.path, "Weight": w.weight}
                              for w in r.blkio_weight_device] or None,
        "BlkioDeviceReadBps": _throttles(r.device_read_bps),
        "BlkioDeviceWriteBps": _throttles(r.device_write_bps),
        "BlkioDeviceReadIOps": _throttles(r.device_read_iops),
        "BlkioDeviceWriteIOps": _throttles(r.device_write_iops),
    }


def cgroup_of(ctr: Container) -> str | None:
    """The running container's cgroup directory, or None."""
    st = ctr.state()
    if st.status != "running" or not st.cgroup or not os.path.isdir(st.cgroup):
        return None
    return st.cgroup


def update(ctr: Container, flags: LimitFlags) -> Resources:
    """Change the limits of a container: at once in its cgroup if it runs, and its record."""
    given = flags.given()
    if not given:
        raise InvalidArgument("you must provide one or more flags when using this command", 1)
    cfg = ctr.config
    if cfg.cgroups == "disabled":
        raise RlError(f"cannot update container {ctr.name}: it runs with --cgroups=disabled",
                      1)
    host = cgroups.probe()
    res = parse(flags, base=cfg.resources, available_cpus=cgroups.available_cpus(host))
    cgroups.require(res, given, host)
    path = cgroup_of(ctr)
    if ctr.running and path is None:
        raise RlError(f"cannot update container {ctr.name}: it has no cgroup", 1)
    if path is not None:
        cgroups.apply(path, res)
    with store.registry_lock():
        cfg = Container(ctr.id).config
        cfg.resources = res
        store.write_json_atomic(ctr.dir / "config.json", cfg.to_dict())
    return res


# -- stats -------------------------------------------------------------------------------


@dataclass
class Sample:
    """One reading of a container's cgroup (and its network namespace's counters)."""

    id: str
    name: str
    at: float = 0.0  # time.monotonic()
    cpu_usec: int = 0
    mem_usage: int = 0  # memory.current minus inactive file pages, as docker shows it
    mem_limit: int = 0  # memory.max, or the machine's memory when unlimited
    pids: int = 0
    pids_limit: int = 0  # 0: unlimited
    blk_read: int = 0
    blk_write: int = 0
    net_rx: int = 0
    net_tx: int = 0
    available: bool = False  # False: no cgroup (disabled, or no delegation)


def _kv(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _total_memory() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _ns_tasks(pid: int) -> int:
    """Threads of every process in pid's PID namespace: pids.current without a cgroup."""
    try:
        ns = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return 0
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                    count += len(os.listdir(f"/proc/{entry}/task"))
    return count


def _net(s: Sample, pid: int) -> None:
    for line in _read(f"/proc/{pid}/net/dev").splitlines()[2:]:
        iface, _, rest = line.partition(":")
        cols = rest.split()
        if iface.strip() != "lo" and len(cols) >= 9:
            s.net_rx += int(cols[0])
            s.net_tx += int(cols[8])


def sample(ctr: Container) -> Sample:
    s = Sample(ctr.id, ctr.name, at=time.monotonic())
    pid = ctr.state().pid
    _net(s, pid)  # the network namespace's counters need no cgroup
    path = cgroup_of(ctr)
    if path is None:
        s.pids = _ns_tasks(pid)
        return s
    s.available = True
    s.cpu_usec = _kv(_read(f"{path}/cpu.stat")).get("usage_usec", 0)
    current = _read(f"{path}/memory.current").strip()
    inactive = _kv(_read(f"{path}/memory.stat")).get("inactive_file", 0)
    if current.isdigit():
        s.mem_usage = max(int(current) - inactive, 0)
    limit = _read(f"{path}/memory.max").strip()
    s.mem_limit = int(limit) if limit.isdigit() else _total_memory()
    pids = _read(f"{path}/pids.current").strip()
    s.pids = int(pids) if pids.isdigit() else len(_read(f"{path}/cgroup.procs").split())
    pmax = _read(f"{path}/pids.max").strip()
    s.pids_limit = int(pmax) if pmax.isdigit() else 0
    for line in _read(f"{path}/io.stat").splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        s.blk_read += int(fields.get("rbytes", 0))
        s.blk_write += int(fields.get("wbytes", 0))
    return s


def cpu_percent(before: Sample, after: Sample) -> float:
    """CPU use between two samples, 100% being one whole CPU (docker's convention)."""
    wall = (after.at - before.at) * 1e6
    if wall <= 0 or not after.available:
        return 0.0
    return max(after.cpu_usec - before.cpu_usec, 0) / wall * 100


def running_containers(refs: list[str], strict: bool = True) -> list[Container]:
    """The named containers (all running ones without names); strict: each must run."""
    if refs:
        out = []
        for ref in refs:
            try:
                c = store.lookup(ref)
            except RlError:
                if strict:
                    raise
                continue
            if c.running:
                out.append(c)
            elif strict:
                raise NotRunning(f"container {c.name} is not running", 1)
        return out
    return [c for c in store.all_containers() if c.running]


@dataclass(frozen=True)
class Stats:
    """One container's use of its resources: docker's stats figures, in bytes and percent.

    available is False when the container has no cgroup (--cgroups=disabled,
    or no delegation): rl knows only its tasks and network counters then; the
    other figures are 0.
    """

    id: str
    name: str
    available: bool
    cpu_percent: float = 0.0  # between the two samples, 100 being one whole CPU
    cpu_usec: int = 0
    mem_usage: int = 0
    mem_limit: int = 0
    pids: int = 0
    pids_limit: int = 0  # 0: unlimited
    block_read: int = 0
    block_write: int = 0
    net_rx: int = 0
    net_tx: int = 0

    @property
    def mem_percent(self) -> float:
        return self.mem_usage / self.mem_limit * 100 if self.mem_limit else 0.0


def measure(before: Sample, after: Sample) -> Stats:
    """The stats of the interval between two samples of one container."""
    if not after.available:  # what /proc tells without a cgroup
        return Stats(after.id, after.name, available=False, pids=after.pids,
                     net_rx=after.net_rx, net_tx=after.net_tx)
    return Stats(after.id, after.name, available=True,
                 cpu_percent=cpu_percent(before, after), cpu_usec=after.cpu_usec,
                 mem_usage=after.mem_usage, mem_limit=after.mem_limit, pids=after.pids,
                 pids_limit=after.pids_limit, block_read=after.blk_read,
                 block_write=after.blk_write, net_rx=after.net_rx, net_tx=after.net_tx)


def stats(refs: list[str], interval: float, strict: bool = True) -> list[Stats]:
    """One round of `rl stats`: two samples interval seconds apart, one record per container.

    strict: every named container must be running (the first round); later
    rounds of a stream drop the ones that have stopped.
    """
    ctrs = running_containers(refs, strict)
    first = {c.id: sample(c) for c in ctrs}
    if ctrs:
        time.sleep(interval)
    return [measure(first[c.id], sample(c)) for c in ctrs]
