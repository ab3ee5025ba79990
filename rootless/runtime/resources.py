"""Resource limits (docker's --memory, --cpus, --pids-limit, ...) as typed data.

This module only parses and validates flag values into a `Resources` record;
it never touches the kernel (cgroups.py applies a Resources to a cgroup).
Figures follow docker's HostConfig: bytes, nano-CPUs, CFS microseconds,
shares, and `Throttle` lines naming a block device by path and major:minor.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field, fields

from ..errors import InvalidArgument, RlError
from .spec import LinuxResources

MIN_MEMORY = 6 * 1024 * 1024  # docker's floor: below it the container cannot start
DEFAULT_CPU_PERIOD = 100_000  # µs, the kernel's (and docker's) CFS default
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


@dataclass
class Throttle:
    """One block device limit: bytes or operations per second (docker's ThrottleDevice)."""

    path: str
    rate: int
    major: int = 0
    minor: int = 0


@dataclass
class WeightDevice:
    path: str
    weight: int
    major: int = 0
    minor: int = 0


@dataclass
class Resources:
    """The limits of one container; 0 (or empty) means "not set", as in docker."""

    memory: int = 0
    memory_swap: int = 0  # memory + swap; -1: unlimited swap
    memory_reservation: int = 0  # soft floor (memory.low)
    nano_cpus: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0  # -1: unlimited
    cpu_shares: int = 0
    pids_limit: int = 0  # <= 0 once set: unlimited
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    blkio_weight: int = 0
    blkio_weight_device: list[WeightDevice] = field(default_factory=list)
    device_read_bps: list[Throttle] = field(default_factory=list)
    device_write_bps: list[Throttle] = field(default_factory=list)
    device_read_iops: list[Throttle] = field(default_factory=list)
    device_write_iops: list[Throttle] = field(default_factory=list)

    def any_set(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def controllers(self) -> set[str]:
        """The cgroup v2 controllers these limits need."""
        need = set()
        if self.memory or self.memory_swap or self.memory_reservation:
            need.add("memory")
        if self.nano_cpus or self.cpu_period or self.cpu_quota or self.cpu_shares:
            need.add("cpu")
        if self.pids_limit:
            need.add("pids")
        if self.cpuset_cpus or self.cpuset_mems:
            need.add("cpuset")
        if (self.blkio_weight or self.blkio_weight_device or self.device_read_bps
                or self.device_write_bps or self.device_read_iops or self.device_write_iops):
            need.add("io")
        return need


@dataclass
class LimitFlags:
    """The raw flag values of `rl run/create/update`, before validation (None: not given)."""

    memory: str | None = None
    memory_swap: str | None = None
    memory_reservation: str | None = None
    cpus: str | None = None
    cpu_period: int | None = None
    cpu_quota: int | None = None
    cpu_shares: int | None = None
    pids_limit: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    blkio_weight: int | None = None
    blkio_weight_device: list[str] = field(default_factory=list)
    device_read_bps: list[str] = field(default_factory=list)
    device_write_bps: list[str] = field(default_factory=list)
    device_read_iops: list[str] = field(default_factory=list)
    device_write_iops: list[str] = field(default_factory=list)

    def given(self) -> list[str]:
        """The flags given, as --names (for messages)."""
        out = []
        for f in fields(self):
            if getattr(self, f.name) not in (None, []):
                out.append("--" + f.name.replace("_", "-"))
        return out


# -- parsing ---------------------------------------------------------------------------


def _bad(flag: str, value: object, why: str) -> RlError:
    return InvalidArgument(f'invalid argument "{value}" for "--{flag}" flag: {why}')


def parse_size(value: str, flag: str) -> int:
    """docker's RAMInBytes: 512m, 1g, 1.5GiB, 1024 (bytes); binary units."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtTpP]?)[iI]?[bB]?\s*", value)
    if not m:
        raise _bad(flag, value, f"invalid size: '{value}'")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_cpu_list(value: str, flag: str) -> set[int]:
    """A cpuset list such as 0-2,4 as a set of numbers."""
    out: set[int] = set()
    for part in value.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise _bad(flag, value, "invalid format (expected a list such as 0-2,4)")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise _bad(flag, value, f"invalid range {part}")
        out.update(range(lo, hi + 1))
    return out


def format_cpu_list(cpus: set[int]) -> str:
    out, items = [], sorted(cpus)
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(out)


def online_cpus() -> set[int]:
    """The CPUs this process may run on (what docker calls the machine's CPUs)."""
    return set(os.sched_getaffinity(0))


def online_mems() -> set[int]:
    try:
        with open("/sys/devices/system/node/online") as f:
            return parse_cpu_list(f.read().strip(), "cpuset-mems")
    except (OSError, RlError):
        return {0}


def _block_device(path: str, flag: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as e:
        raise InvalidArgument(
            f'--{flag}: error gathering device information while adding custom '
            f'device "{path}": {e.strerror.lower() if e.strerror else e}') from None
    if not stat.S_ISBLK(st.st_mode):
        raise InvalidArgument(f'--{flag}: "{path}" is not a block device')
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def parse_throttle(value: str, flag: str, iops: bool) -> Throttle:
    path, sep, rate_s = value.rpartition(":")
    if not sep or not path.startswith("/"):
        raise _bad(flag, value, "bad format, expected DEVICE-PATH:RATE")
    if iops:
        if not rate_s.isdigit():
            raise _bad(flag, value, "invalid rate: expected a number of operations per second")
        rate = int(rate_s)
    else:
        rate = parse_size(rate_s, flag)
    if rate <= 0:
        raise _bad(flag, value, "the rate must be positive")
    major, minor = _block_device(path, flag)
    return Throttle(path, rate, major, minor)


def parse_weight_device(value: str) -> WeightDevice:
    path, sep, w = value.rpartition(":")
    if not sep or not path.startswith("/") or not w.isdigit():
        raise _bad("blkio-weight-device", value, "bad format, expected DEVICE-PATH:WEIGHT")
    weight = int(w)
    if not 10 <= weight <= 1000:
        raise _bad("blkio-weight-device", value, "the weight must be from 10 to 1000")
    major, minor = _block_device(path, "blkio-weight-device")
    return WeightDevice(path, weight, major, minor)


def _memory(flags: LimitFlags, res: Resources) -> None:
    if flags.memory is not None:
        res.memory = parse_size(flags.memory, "memory")
        if res.memory < MIN_MEMORY:
            raise InvalidArgument(
                f"--memory {flags.memory}: the minimum memory limit allowed is 6MB "
                "(a smaller one cannot even start the container)")
    if flags.memory_swap is not None:
        if flags.memory_swap.strip() == "-1":
            res.memory_swap = -1
        else:
            res.memory_swap = parse_size(flags.memory_swap, "memory-swap")
    if flags.memory_reservation is not None:
        res.memory_reservation = parse_size(flags.memory_reservation, "memory-reservation")


def _check_memory(res: Resources) -> None:
    if res.memory_swap and not res.memory:
        raise InvalidArgument("you should always set the memory limit when using the memoryswap "
                              "limit (--memory-swap needs --memory)")
    if res.memory_swap > 0 and res.memory_swap < res.memory:
        raise InvalidArgument("minimum memoryswap limit should be larger than memory limit "
                              "(--memory-swap is memory plus swap)")
    if res.memory and res.memory_reservation > res.memory:
        raise InvalidArgument("minimum memory limit can not be less than memory reservation limit "
                              "(--memory-reservation must not exceed --memory)")


def _cpu(flags: LimitFlags, res: Resources) -> None:
    ncpu = len(online_cpus())
    if flags.cpus is not None:
        try:
            cpus = float(flags.cpus)
        except ValueError:
            raise _bad("cpus", flags.cpus, "invalid number") from None
        nano = round(cpus * 1e9) if math.isfinite(cpus) else -1
        if nano < 10_000_000 or nano > ncpu * 1_000_000_000:
            raise _bad("cpus", flags.cpus, f"range of CPUs is from 0.01 to {ncpu}.00, as "
                       f"there are only {ncpu} CPUs available")
        if flags.cpu_period or flags.cpu_quota:
            raise InvalidArgument("conflicting options: --cpus cannot be used with --cpu-period or "
                                  "--cpu-quota")
        res.nano_cpus = nano
    if flags.cpu_period is not None:
        if flags.cpu_period and not 1000 <= flags.cpu_period <= 1_000_000:
            raise _bad("cpu-period", flags.cpu_period,
                       "CPU cfs period can not be less than 1ms (1000) or larger than 1s "
                       "(1000000)")
        res.cpu_period = flags.cpu_period
    if flags.cpu_quota is not None:
        if flags.cpu_quota > 0 and flags.cpu_quota < 1000:
            raise _bad("cpu-quota", flags.cpu_quota,
                       "CPU cfs quota can not be less than 1ms (1000)")
        res.cpu_quota = -1 if flags.cpu_quota < 0 else flags.cpu_quota
    if flags.cpu_shares is not None:
        if flags.cpu_shares and not 2 <= flags.cpu_shares <= 262144:
            raise _bad("cpu-shares", flags.cpu_shares, "CPU shares range from 2 to 262144")
        res.cpu_shares = flags.cpu_shares


def _cpuset(flags: LimitFlags, res: Resources, available_cpus: set[int] | None) -> None:
    if flags.cpuset_cpus is not None:
        want = parse_cpu_list(flags.cpuset_cpus, "cpuset-cpus")
        have = available_cpus if available_cpus is not None else online_cpus()
        if not want <= have:
            raise InvalidArgument(f"requested CPUs are not available - requested "
                                  f"{flags.cpuset_cpus}, available: {format_cpu_list(have)} "
                                  "(--cpuset-cpus)")
        res.cpuset_cpus = format_cpu_list(want)
    if flags.cpuset_mems is not None:
        want = parse_cpu_list(flags.cpuset_mems, "cpuset-mems")
        have = online_mems()
        if not want <= have:
            raise InvalidArgument(f"requested memory nodes are not available - requested "
                                  f"{flags.cpuset_mems}, available: {format_cpu_list(have)} "
                                  "(--cpuset-mems)")
        res.cpuset_mems = format_cpu_list(want)


def _io(flags: LimitFlags, res: Resources) -> None:
    if flags.blkio_weight is not None:
        if flags.blkio_weight and not 10 <= flags.blkio_weight <= 1000:
            raise _bad("blkio-weight", flags.blkio_weight,
                       "range of blkio weight is from 10 to 1000")
        res.blkio_weight = flags.blkio_weight
    if flags.blkio_weight_device:
        res.blkio_weight_device = [parse_weight_device(v) for v in flags.blkio_weight_device]
    for name, iops in (("device_read_bps", False), ("device_write_bps", False),
                       ("device_read_iops", True), ("device_write_iops", True)):
        values: list[str] = getattr(flags, name)
        if values:
            flag = name.replace("_", "-")
            setattr(res, name, [parse_throttle(v, flag, iops) for v in values])


def parse(flags: LimitFlags, base: Resources | None = None,
          available_cpus: set[int] | None = None) -> Resources:
    """Validate flags into Resources (on top of base for `rl update`); RlError if bad."""
    from dataclasses import replace

    res = replace(base) if base is not None else Resources()
    _memory(flags, res)
    _cpu(flags, res)
    if flags.cpus is not None:
        res.cpu_period = res.cpu_quota = 0
    elif (flags.cpu_period is not None or flags.cpu_quota is not None) and res.nano_cpus:
        res.nano_cpus = 0  # rl update --cpu-quota replaces an earlier --cpus
    if flags.pids_limit is not None:
        res.pids_limit = -1 if flags.pids_limit <= 0 else flags.pids_limit
    _cpuset(flags, res, available_cpus)
    _io(flags, res)
    if base is None and res.memory and flags.memory_swap is None:
        # docker: without --memory-swap, the container may swap as much as --memory.
        res.memory_swap = 2 * res.memory
    _check_memory(res)
    return res


# -- docker's conversions to cgroup v2 --------------------------------------------------


def cpu_weight(shares: int) -> int:
    """cgroup v1 shares (2..262144) to v2 cpu.weight (1..10000), as runc converts."""
    return 1 + ((shares - 2) * 9999) // 262142


def io_weight(blkio_weight: int) -> int:
    """blkio weight (10..1000) to io.weight (1..10000), as runc converts."""
    return 1 + ((blkio_weight - 10) * 9999) // 990


def cpu_max(res: Resources) -> str | None:
    """The cpu.max line ("QUOTA PERIOD" or "max PERIOD"), None when nothing is set."""
    period = res.cpu_period or DEFAULT_CPU_PERIOD
    if res.nano_cpus:
        return f"{res.nano_cpus * period // 1_000_000_000} {period}"
    if res.cpu_quota > 0:
        return f"{res.cpu_quota} {period}"
    if res.cpu_quota < 0 or res.cpu_period:
        return f"max {period}"
    return None


# -- an OCI config's linux.resources ---------------------------------------------------

# linux.resources fields cgroup v2 has no file for: refused by name, never dropped
# (memory.kernel and kernelTCP are deprecated by the spec and ignored, as runc does).
_NO_V2 = {"memory.swappiness": "swappiness", "memory.disableOOMKiller": "disable_oom_killer",
          "cpu.realtimeRuntime": "realtime_runtime", "cpu.realtimePeriod": "realtime_period",
          "blockIO.leafWeight": "leaf_weight"}


def _unified_name(key: str) -> bool:
    """A cgroup v2 interface file's name: CONTROLLER.FILE, no path, no core file."""
    head, _, tail = key.partition(".")
    return bool(head and tail) and head != "cgroup" and "/" not in key and ".." not in key


def from_oci(r: LinuxResources) -> tuple[Resources, dict[str, str]]:
    """A config's linux.resources as rl's Resources plus cgroup v2 files to write
    as given (unified, hugepageLimits, cpu burst and idle); InvalidArgument naming
    the field cgroup v2 cannot honour. devices are not here (runc's rootless mode
    ignores them too: a user namespace gets no device it was not given)."""
    res = Resources()
    files: dict[str, str] = {}
    where = "linux.resources."
    groups = {"memory": r.memory, "cpu": r.cpu, "blockIO": r.block_io}
    for name, attr in _NO_V2.items():
        group = groups[name.split(".")[0]]
        if group is not None and getattr(group, attr) not in (None, False):
            raise InvalidArgument(f"{where}{name}: cgroup v2 has no such setting")
    if r.network or r.rdma:
        raise InvalidArgument(f"{where}{'network' if r.network else 'rdma'}: not supported "
                              "by rl-oci")
    if (m := r.memory) is not None:
        res.memory = max(m.limit or 0, 0)
        res.memory_reservation = max(m.reservation or 0, 0)
        res.memory_swap = -1 if m.swap == -1 else max(m.swap or 0, 0)
    if (c := r.cpu) is not None:
        res.cpu_shares = c.shares or 0
        res.cpu_quota = c.quota or 0
        res.cpu_period = c.period or 0
        res.cpuset_cpus = c.cpus or ""
        res.cpuset_mems = c.mems or ""
        if c.burst is not None:
            files["cpu.max.burst"] = str(c.burst)
        if c.idle is not None:
            files["cpu.idle"] = str(c.idle)
    if r.pids is not None:
        res.pids_limit = -1 if r.pids.limit <= 0 else r.pids.limit
    if (b := r.block_io) is not None:
        res.blkio_weight = b.weight or 0
        res.blkio_weight_device = [WeightDevice("", d.weight, d.major, d.minor)
                                   for d in b.weight_device if d.weight]
        for mine, theirs in ((res.device_read_bps, b.throttle_read_bps_device),
                             (res.device_write_bps, b.throttle_write_bps_device),
                             (res.device_read_iops, b.throttle_read_iops_device),
                             (res.device_write_iops, b.throttle_write_iops_device)):
            mine.extend(Throttle("", t.rate, t.major, t.minor) for t in theirs)
    for h in r.hugepage_limits:
        if not re.fullmatch(r"[0-9]+[KMG]B", h.page_size):
            raise InvalidArgument(f"{where}hugepageLimits: pageSize {h.page_size!r} is not "
                                  "like 2MB")
        files[f"hugetlb.{h.page_size}.max"] = str(h.limit)
    for key, value in r.unified.items():
        if not _unified_name(key):
            raise InvalidArgument(f"{where}unified: {key!r} is not a cgroup v2 interface file")
        files[key] = value
    if res.memory_swap > 0 and res.memory and res.memory_swap < res.memory:
        raise InvalidArgument(f"{where}memory.swap ({res.memory_swap}) is below memory.limit "
                              f"({res.memory}): swap is memory plus swap")
    return res, files


def controllers_of(res: Resources, files: dict[str, str]) -> set[str]:
    """The controllers res and the files need."""
    return res.controllers() | {k.split(".", 1)[0] for k in files}
