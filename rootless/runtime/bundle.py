"""The runtime's whole input: an OCI bundle, the spec plus what OCI has no words for.

On disk a bundle is a directory with config.json (the OCI runtime spec);
root.path is relative to it or absolute. What rl's runtime needs beyond
the spec travels in the spec's annotations under the prefix `run.rl.`, as
crun's own switches do under `run.oci.`: one file, written atomically and
checked in one place, that any reader of the OCI spec still understands
(a runtime that knows nothing of rl ignores them, as the spec asks).

    run.rl.storage.driver   overlay | fuse | fuse-overlayfs: the root is mounted
                            from layers before anything else (the runtime's
                            view of a root that a runc caller mounts itself)
    run.rl.storage.lower    the lower directories, top first, as a JSON list
    run.rl.storage.upper    the upper directory
    run.rl.storage.work     the work directory
    run.rl.init             "true": PID 1 is catatonit, which runs the command
    run.rl.user             the -u value (name or id, ":group"), resolved
                            against the container's own /etc/passwd after
                            pivot_root; it fills process.user
    run.rl.ipv6.interface   a static IPv6 address and default route that PID 1
    run.rl.ipv6.address     sets in its network namespace before the command
    run.rl.ipv6.gateway     (slirp4netns: tap0, fd00::100/64 via fd00::2)
    run.rl.cgroups          "disabled": linux.resources that no delegated cgroup
                            can enforce are ignored with a warning, not refused
                            (rl's --cgroups=disabled)

A `run.rl.` key this runtime does not know is refused: it is an instruction,
and dropping one silently would run something other than what was asked.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgument
from . import spec as oci
from .spec import Spec

PREFIX = "run.rl."
CONFIG = "config.json"
# The drivers whose root is mounted from layers (fs.drivers.OVERLAYS, the
# drivers a runtime mounts; vfs and --rootfs are plain directories).
STORAGE_DRIVERS = ("overlay", "fuse", "fuse-overlayfs")


@dataclass
class Storage:
    """A root to mount at root.path before the container is made."""

    driver: str
    lower: list[str]
    upper: str
    work: str


@dataclass
class Ipv6:
    interface: str
    address: str  # without the prefix length
    prefix: int
    gateway: str


@dataclass
class Extras:
    """What rl's runtime needs that the OCI spec does not say."""

    storage: Storage | None = None
    init: bool = False
    user: str = ""
    ipv6: Ipv6 | None = None
    cgroups_disabled: bool = False


@dataclass
class Bundle:
    spec: Spec  # its annotations without rl's (those are in extras)
    extras: Extras = field(default_factory=Extras)


def to_annotations(extras: Extras) -> dict[str, str]:
    """extras as `run.rl.` annotations."""
    out: dict[str, str] = {}
    if extras.storage is not None:
        s = extras.storage
        out.update({PREFIX + "storage.driver": s.driver,
                    PREFIX + "storage.lower": json.dumps(s.lower),
                    PREFIX + "storage.upper": s.upper, PREFIX + "storage.work": s.work})
    if extras.init:
        out[PREFIX + "init"] = "true"
    if extras.user:
        out[PREFIX + "user"] = extras.user
    if extras.cgroups_disabled:
        out[PREFIX + "cgroups"] = "disabled"
    if extras.ipv6 is not None:
        v6 = extras.ipv6
        out.update({PREFIX + "ipv6.interface": v6.interface,
                    PREFIX + "ipv6.address": f"{v6.address}/{v6.prefix}",
                    PREFIX + "ipv6.gateway": v6.gateway})
    return out


_KEYS = {PREFIX + k for k in (
    "storage.driver", "storage.lower", "storage.upper", "storage.work", "init", "user",
    "ipv6.interface", "ipv6.address", "ipv6.gateway", "cgroups")}


def from_annotations(ann: dict[str, str]) -> Extras:
    """The extras the `run.rl.` annotations say; ValueError naming the first bad one."""
    ours = {k: v for k, v in ann.items() if k.startswith(PREFIX)}
    unknown = sorted(set(ours) - _KEYS)
    if unknown:
        raise ValueError(f"annotation {unknown[0]} is not one this runtime knows")
    extras = Extras(user=ours.get(PREFIX + "user", ""))
    init = ours.get(PREFIX + "init", "false")
    if init not in ("true", "false"):
        raise ValueError(f"annotation {PREFIX}init is {init!r}, not true or false")
    extras.init = init == "true"
    cgroups = ours.get(PREFIX + "cgroups", "enabled")
    if cgroups not in ("enabled", "disabled"):
        raise ValueError(f"annotation {PREFIX}cgroups is {cgroups!r}, not enabled or disabled")
    extras.cgroups_disabled = cgroups == "disabled"
    extras.storage = _storage(ours)
    extras.ipv6 = _ipv6(ours)
    return extras


def _group(ours: dict[str, str], keys: list[str]) -> list[str] | None:
    """The values of annotations that go together: all of them, or None if none."""
    given = [k for k in keys if k in ours]
    if not given:
        return None
    missing = [k for k in keys if k not in ours]
    if missing:
        raise ValueError(f"annotation {missing[0]} is missing (given {given[0]})")
    return [ours[k] for k in keys]


def _storage(ours: dict[str, str]) -> Storage | None:
    keys = [PREFIX + "storage." + k for k in ("driver", "lower", "upper", "work")]
    values = _group(ours, keys)
    if values is None:
        return None
    driver, lower_text, upper, work = values
    if driver not in STORAGE_DRIVERS:
        raise ValueError(f"annotation {keys[0]} is {driver!r}, not one of "
                         f"{', '.join(STORAGE_DRIVERS)}")
    try:
        lower = json.loads(lower_text)
    except (ValueError, RecursionError):  # "[[[[…" nested past the parser's depth
        lower = None
    if not (isinstance(lower, list) and lower and all(isinstance(d, str) for d in lower)):
        raise ValueError(f"annotation {keys[1]} is not a JSON list of directories")
    for key, d in [(keys[1], d) for d in lower] + [(keys[2], upper), (keys[3], work)]:
        if not os.path.isabs(d):
            raise ValueError(f"annotation {key}: {d!r} is not an absolute path")
    return Storage(driver, lower, upper, work)


def _ipv6(ours: dict[str, str]) -> Ipv6 | None:
    keys = [PREFIX + "ipv6." + k for k in ("interface", "address", "gateway")]
    values = _group(ours, keys)
    if values is None:
        return None
    import ipaddress  # rl's slirp4netns runs only: ~2 ms of every rl-oci create

    iface, address, gateway = values
    if not iface or len(iface) > 15 or "/" in iface:
        raise ValueError(f"annotation {keys[0]} is {iface!r}, not an interface name")
    try:
        if "/" not in address:
            raise ValueError
        net = ipaddress.IPv6Interface(address)
    except ValueError:
        raise ValueError(f"annotation {keys[1]} is {address!r}, not an IPv6 address/prefix "
                         "length") from None
    try:
        ipaddress.IPv6Address(gateway)
    except ValueError:
        raise ValueError(f"annotation {keys[2]} is {gateway!r}, not an IPv6 address") from None
    return Ipv6(iface, str(net.ip), net.network.prefixlen, gateway)


def to_json(bundle: Bundle) -> dict[str, Any]:
    """The bundle's config.json: the spec with the extras among its annotations."""
    data: dict[str, Any] = oci.to_json(bundle.spec)
    theirs = {k: v for k, v in bundle.spec.annotations.items() if not k.startswith(PREFIX)}
    merged = {**theirs, **to_annotations(bundle.extras)}
    if merged:
        data["annotations"] = merged
    else:
        data.pop("annotations", None)
    return data


def write(bundle_dir: str, spec: Spec, extras: Extras | None = None) -> None:
    """Write bundle_dir/config.json atomically (a reader sees the old file or the new)."""
    data = to_json(Bundle(spec, extras or Extras()))
    os.makedirs(bundle_dir, mode=0o700, exist_ok=True)
    final = os.path.join(bundle_dir, CONFIG)
    tmp = os.path.join(bundle_dir, f".{CONFIG}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _invalid(bundle_dir: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"invalid bundle {bundle_dir}: {CONFIG} {why}")


def _read(bundle_dir: str) -> Any:
    path = os.path.join(bundle_dir, CONFIG)
    try:
        # O_NONBLOCK: a FIFO in its place must not hang the runtime.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise _invalid(bundle_dir, "is missing") from None
    except OSError as e:
        raise _invalid(bundle_dir, f"cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _invalid(bundle_dir, "is not a regular file")
    with open(fd, "rb") as f:
        text = f.read()
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise _invalid(bundle_dir, "is empty" if not text.strip() else "is not valid JSON"
                       ) from None


def from_json(data: Any, where: str = ".") -> Bundle:
    """A bundle from its config.json's JSON; InvalidArgument saying what is wrong.

    root.path is resolved against the bundle directory `where`, as the OCI
    spec says.
    """
    if not isinstance(data, dict):
        raise _invalid(where, "is not a JSON object")
    try:
        oci.check(Spec, data, "")
        spec = oci.from_json(Spec, data)
        if not spec.process.args:
            raise ValueError("process.args is empty: there is no command")
        if not spec.root.path:
            raise ValueError("root.path is empty")
        if not isinstance(data.get("ociVersion"), str):
            raise ValueError("ociVersion is missing")
        _check_hooks(spec)
        _check_namespaces(spec)
        extras = from_annotations(spec.annotations)
    except ValueError as e:
        raise _invalid(where, f"is wrong: {e}") from None
    spec.annotations = {k: v for k, v in spec.annotations.items() if not k.startswith(PREFIX)}
    spec.root.path = os.path.normpath(os.path.join(os.path.abspath(where), spec.root.path))
    return Bundle(spec, extras)


# config-linux.md's namespace types; "time" is valid but rl makes none.
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup")


def _check_namespaces(spec: Spec) -> None:
    """The spec: an unknown type, or one given twice, is an error (never dropped)."""
    seen: set[str] = set()
    for i, ns in enumerate(spec.linux.namespaces):
        where = f"linux.namespaces[{i}].type"
        if ns.type == "time":
            raise ValueError(f"{where} 'time': time namespaces are not supported by rl")
        if ns.type not in NAMESPACE_TYPES:
            raise ValueError(f"{where} {ns.type!r} is not a namespace type")
        if ns.type in seen:
            raise ValueError(f"{where}: the {ns.type} namespace is given twice")
        seen.add(ns.type)


def _check_hooks(spec: Spec) -> None:
    """What config.md asks of a hook beyond its JSON types."""
    if spec.hooks is None:
        return
    for f in dataclasses.fields(spec.hooks):
        kind = oci.json_name(f)
        for i, hook in enumerate(getattr(spec.hooks, f.name)):
            where = f"hooks.{kind}[{i}]"
            if not os.path.isabs(hook.path):
                raise ValueError(f"{where}.path {hook.path!r} is not an absolute path")
            if hook.timeout is not None and hook.timeout <= 0:
                raise ValueError(f"{where}.timeout is {hook.timeout}: it must be greater "
                                 "than zero")
            bad = next((e for e in hook.env if "=" not in e), None)
            if bad is not None:
                raise ValueError(f"{where}.env {bad!r} is not KEY=value")


def load(bundle_dir: str) -> Bundle:
    """Read and check bundle_dir/config.json; InvalidArgument, one line, if it is damaged."""
    return from_json(_read(bundle_dir), bundle_dir)
