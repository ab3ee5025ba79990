"""The OCI runtime spec (config.json) as typed, plain data.

Only data lives here, as in runc's libcontainer/configs: the code that applies
a Spec is in mounts.py, process.py and container.py. Field names are snake_case
in Python and the spec's camelCase on disk (to_json/from_json), so a Spec
written by rl is a valid OCI config.json a reader of the spec understands.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

OCI_VERSION = "1.1.0"

# The mask and read-only lists Docker applies (moby's oci/defaults.go).
DEFAULT_MASKED_PATHS = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
DEFAULT_READONLY_PATHS = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]


def json_name(f: dataclasses.Field[Any]) -> str:
    """A field's name in config.json."""
    explicit = f.metadata.get("json")
    if explicit:
        return str(explicit)
    head, *rest = f.name.split("_")
    return head + "".join(p.capitalize() for p in rest)


@dataclass
class User:
    uid: int = 0
    gid: int = 0
    umask: int | None = 0o022
    additional_gids: list[int] = field(default_factory=list)


@dataclass
class Rlimit:
    type: str  # "RLIMIT_NOFILE"
    hard: int
    soft: int


@dataclass
class Capabilities:
    bounding: list[str] = field(default_factory=list)
    effective: list[str] = field(default_factory=list)
    permitted: list[str] = field(default_factory=list)
    inheritable: list[str] = field(default_factory=list)
    ambient: list[str] = field(default_factory=list)


@dataclass
class ConsoleSize:
    height: int
    width: int


@dataclass
class Process:
    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    terminal: bool = False
    console_size: ConsoleSize | None = None
    user: User = field(default_factory=User)
    capabilities: Capabilities = field(default_factory=Capabilities)
    rlimits: list[Rlimit] = field(default_factory=list)
    no_new_privileges: bool = False


@dataclass
class Root:
    path: str
    readonly: bool = False


@dataclass
class Mount:
    destination: str
    type: str | None = None
    source: str | None = None
    options: list[str] = field(default_factory=list)


@dataclass
class Namespace:
    type: str  # pid, network, mount, ipc, uts, user, cgroup
    path: str | None = None


@dataclass
class IDMapping:
    container_id: int = field(metadata={"json": "containerID"})
    host_id: int = field(metadata={"json": "hostID"})
    size: int


@dataclass
class SeccompArg:
    index: int
    value: int
    op: str  # SCMP_CMP_MASKED_EQ: (arg & value) == value_two
    value_two: int = 0


@dataclass
class SeccompSyscall:
    names: list[str]
    action: str  # SCMP_ACT_ALLOW | SCMP_ACT_ERRNO
    errno_ret: int | None = None
    args: list[SeccompArg] = field(default_factory=list)


@dataclass
class Seccomp:
    default_action: str
    default_errno_ret: int | None = None
    architectures: list[str] = field(default_factory=list)
    syscalls: list[SeccompSyscall] = field(default_factory=list)


@dataclass
class Hook:
    """One OCI hook: a host program run at a point of the lifecycle (hooks.py)."""

    path: str
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    timeout: int | None = None  # seconds


@dataclass
class Hooks:
    prestart: list[Hook] = field(default_factory=list)  # deprecated: run as createRuntime
    create_runtime: list[Hook] = field(default_factory=list)
    create_container: list[Hook] = field(default_factory=list)
    start_container: list[Hook] = field(default_factory=list)
    poststart: list[Hook] = field(default_factory=list)
    poststop: list[Hook] = field(default_factory=list)


# linux.resources (config-linux.md "Control groups"); figures as the spec's.
@dataclass
class MemoryLimits:
    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None  # memory + swap, as cgroup v1's memsw
    kernel: int | None = None
    kernel_tcp: int | None = field(default=None, metadata={"json": "kernelTCP"})
    swappiness: int | None = None
    disable_oom_killer: bool | None = field(default=None, metadata={"json": "disableOOMKiller"})
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None


@dataclass
class CpuLimits:
    shares: int | None = None
    quota: int | None = None
    burst: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: int | None = None


@dataclass
class PidsLimit:
    limit: int


@dataclass
class WeightDevice:
    major: int
    minor: int
    weight: int | None = None
    leaf_weight: int | None = None


@dataclass
class ThrottleDevice:
    major: int
    minor: int
    rate: int


@dataclass
class BlockIO:
    weight: int | None = None
    leaf_weight: int | None = None
    weight_device: list[WeightDevice] = field(default_factory=list)
    throttle_read_bps_device: list[ThrottleDevice] = field(default_factory=list)
    throttle_write_bps_device: list[ThrottleDevice] = field(default_factory=list)
    throttle_read_iops_device: list[ThrottleDevice] = field(
        default_factory=list, metadata={"json": "throttleReadIOPSDevice"})
    throttle_write_iops_device: list[ThrottleDevice] = field(
        default_factory=list, metadata={"json": "throttleWriteIOPSDevice"})


@dataclass
class HugepageLimit:
    page_size: str
    limit: int


@dataclass
class DeviceRule:
    allow: bool
    type: str | None = None
    major: int | None = None
    minor: int | None = None
    access: str | None = None


@dataclass
class LinuxResources:
    devices: list[DeviceRule] = field(default_factory=list)
    memory: MemoryLimits | None = None
    cpu: CpuLimits | None = None
    pids: PidsLimit | None = None
    block_io: BlockIO | None = field(default=None, metadata={"json": "blockIO"})
    hugepage_limits: list[HugepageLimit] = field(default_factory=list)
    network: dict[str, Any] | None = None
    rdma: dict[str, Any] | None = None
    unified: dict[str, str] = field(default_factory=dict)


@dataclass
class Linux:
    namespaces: list[Namespace] = field(default_factory=list)
    uid_mappings: list[IDMapping] = field(default_factory=list)
    gid_mappings: list[IDMapping] = field(default_factory=list)
    masked_paths: list[str] = field(default_factory=lambda: list(DEFAULT_MASKED_PATHS))
    readonly_paths: list[str] = field(default_factory=lambda: list(DEFAULT_READONLY_PATHS))
    sysctl: dict[str, str] = field(default_factory=dict)
    seccomp: Seccomp | None = None
    resources: LinuxResources | None = None
    cgroups_path: str | None = None


@dataclass
class Spec:
    process: Process
    root: Root
    hostname: str = ""
    mounts: list[Mount] = field(default_factory=list)
    linux: Linux = field(default_factory=Linux)
    annotations: dict[str, str] = field(default_factory=dict)
    oci_version: str = OCI_VERSION
    hooks: Hooks | None = None

    def namespace(self, kind: str) -> Namespace | None:
        return next((ns for ns in self.linux.namespaces if ns.type == kind), None)


# -- (de)serialisation -------------------------------------------------------


def to_json(obj: Any) -> Any:
    """A dataclass tree as the JSON-ready dict the OCI spec spells."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None:
                continue
            out[json_name(f)] = to_json(value)
        return out
    if isinstance(obj, list):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    return obj


T = TypeVar("T")


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner[0], value)
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_convert(item, v) for v in value]
    if origin is dict:
        _, vt = typing.get_args(tp)
        return {k: _convert(vt, v) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_json(tp, value)
    return value


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


_SCALARS: dict[Any, tuple[tuple[type, ...], str]] = {
    str: ((str,), "a string"), int: ((int,), "an integer"), float: ((int, float), "a number"),
    bool: ((bool,), "true or false")}


def check(tp: Any, value: Any, where: str, top: bool = False) -> None:
    """ValueError naming the first place where JSON value does not have type tp.

    Records are dataclasses whose fields are scalars, lists, dicts, optionals
    and dataclasses; top: keys are field names (rl's own records), not the
    OCI spec's camelCase. Run before from_json, which trusts its input: a
    wrong type would otherwise surface far away, at start or exec.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    if origin is list or origin is dict:
        if not isinstance(value, origin):
            raise ValueError(f"{where} is not a {'list' if origin is list else 'object'}")
        item = typing.get_args(tp)[-1]
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            check(item, v, f"{where}[{k!r}]")
        return
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where} is not an object")
        hints = _hints(tp)
        for f in dataclasses.fields(tp):
            key = f.name if top else json_name(f)
            if key in value:
                check(hints[f.name], value[key], f"{where}.{key}" if where else key)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{where}.{key} is missing" if where else f"{key} is missing")
        return
    scalar = _SCALARS.get(tp)
    if scalar is not None and (not isinstance(value, scalar[0])
                               or (tp is not bool and isinstance(value, bool))):
        raise ValueError(f"{where} is not {scalar[1]}")


def from_json(cls: type[T], data: dict[str, Any]) -> T:
    """Build a dataclass of type cls from its JSON form; unknown keys are ignored."""
    hints = _hints(typing.cast(Any, cls))
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = json_name(f)
        if key in data:
            kwargs[f.name] = _convert(hints[f.name], data[key])
    return cls(**kwargs)
