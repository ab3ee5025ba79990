"""CDI, the Container Device Interface: `--device vendor.com/class=name` resolved through the
specs vendors install (the NVIDIA container toolkit's `nvidia-ctk cdi generate`, ...),
their containerEdits applied to the OCI spec as podman and containerd apply them.

Specs are JSON or YAML files in /etc/cdi, then /var/run/cdi, then the user's
$XDG_CONFIG_HOME/cdi; a later directory's device of the same qualified name
wins (the CDI rule, with the user's own directory last). A damaged spec is a
warning naming the file and what is wrong; the other specs are still used.

Rootless, a device node cannot be made (mknod), so a deviceNode is a bind of
the host's node, as `--device` binds one: its major/minor, fileMode and
uid/gid are what the host's node has, never what the spec says.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import InvalidArgument
from ..runtime.spec import Hook, Hooks, Mount, Spec

SYSTEM_DIRS = ("/etc/cdi", "/var/run/cdi")
# vendor.com/class=name: the kind's prefix is a DNS name, its class and the device's
# name alphanumerics with - _ . inside (the CDI spec's grammar)
_KIND = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?/[a-zA-Z0-9]([a-zA-Z0-9_.-]*[a-zA-Z0-9])?")
_NAME = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9_.:-]*[a-zA-Z0-9])?")
_HOOKS = {"createRuntime": "create_runtime", "createContainer": "create_container",
          "startContainer": "start_container", "prestart": "prestart"}


@dataclass
class Edits:
    """One containerEdits object (the spec's or a device's)."""

    env: list[str] = field(default_factory=list)
    device_nodes: list[tuple[str, str]] = field(default_factory=list)  # (host, container)
    mounts: list[Mount] = field(default_factory=list)
    hooks: list[tuple[str, Hook]] = field(default_factory=list)  # (Hooks' field, hook)


@dataclass
class Device:
    kind: str
    name: str
    edits: Edits
    common: Edits  # the spec's own containerEdits, applied once for any of its devices
    source: str  # the spec file

    @property
    def qualified(self) -> str:
        return f"{self.kind}={self.name}"


def spec_dirs() -> list[str]:
    return [*SYSTEM_DIRS, str(paths.config_dir().parent / "cdi")]


def is_cdi_name(text: str) -> bool:
    """Whether a --device value names a CDI device rather than a host path."""
    kind, eq, _ = text.partition("=")
    return bool(eq) and not text.startswith("/") and "/" in kind


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: a list of strings expected")
    return list(value)


def _absolute(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{where}: an absolute path expected, got {value!r}")
    return os.path.normpath(value)


def _edits(raw: Any, where: str) -> Edits:
    if raw is None:
        return Edits()
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: an object expected")
    out = Edits(env=_strings(raw.get("env"), f"{where}.env"))
    for i, node in enumerate(raw.get("deviceNodes") or []):
        at = f"{where}.deviceNodes[{i}]"
        if not isinstance(node, dict):
            raise ValueError(f"{at}: an object expected")
        inside = _absolute(node.get("path"), f"{at}.path")
        host = _absolute(node.get("hostPath") or inside, f"{at}.hostPath")
        out.device_nodes.append((host, inside))
    for i, m in enumerate(raw.get("mounts") or []):
        at = f"{where}.mounts[{i}]"
        if not isinstance(m, dict):
            raise ValueError(f"{at}: an object expected")
        kind = m.get("type") or "bind"
        options = _strings(m.get("options"), f"{at}.options")
        dest = _absolute(m.get("containerPath"), f"{at}.containerPath")
        if kind == "bind":
            src = _absolute(m.get("hostPath"), f"{at}.hostPath")
            if not any(o in ("bind", "rbind") for o in options):
                options = ["rbind", *options]
        elif kind == "tmpfs":
            src = "tmpfs"
        else:
            raise ValueError(f"{at}.type: {kind!r} is not a mount rl makes (bind or tmpfs)")
        out.mounts.append(Mount(destination=dest, type=kind, source=src, options=options))
    for i, h in enumerate(raw.get("hooks") or []):
        at = f"{where}.hooks[{i}]"
        if not isinstance(h, dict):
            raise ValueError(f"{at}: an object expected")
        name = h.get("hookName")
        if name not in _HOOKS:
            # poststart and poststop belong to an OCI runtime's later calls (rl-oci runs
            # them); a foreground `rl run` has none, so such a spec is refused, not half-run
            raise ValueError(f"{at}.hookName: {name!r} is not run by rl (it runs "
                             f"{', '.join(_HOOKS)})")
        timeout = h.get("timeout")
        if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
            raise ValueError(f"{at}.timeout: a positive integer expected")
        out.hooks.append((_HOOKS[name], Hook(path=_absolute(h.get("path"), f"{at}.path"),
                                             args=_strings(h.get("args"), f"{at}.args"),
                                             env=_strings(h.get("env"), f"{at}.env"),
                                             timeout=timeout)))
    return out


def _load(path: Path) -> Any:
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)
    import yaml  # deferred: only a YAML spec needs it

    return yaml.safe_load(text)


def _parse(path: Path) -> list[Device]:
    raw = _load(path)
    if not isinstance(raw, dict):
        raise ValueError("not an object")
    if not isinstance(raw.get("cdiVersion"), str):
        raise ValueError("cdiVersion: missing")
    kind = raw.get("kind")
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise ValueError(f"kind: {kind!r} is not vendor.com/class")
    common = _edits(raw.get("containerEdits"), "containerEdits")
    devices = raw.get("devices")
    if not isinstance(devices, list) or not devices:
        raise ValueError("devices: at least one device expected")
    out = []
    for i, d in enumerate(devices):
        if not isinstance(d, dict) or not isinstance(d.get("name"), str) \
                or not _NAME.fullmatch(d["name"]):
            raise ValueError(f"devices[{i}].name: missing or invalid")
        out.append(Device(kind, d["name"], _edits(d.get("containerEdits"),
                                                  f"devices[{i}].containerEdits"),
                          common, str(path)))
    return out


def registry(warn: Callable[[str], None] | None = None,
             dirs: Iterable[str] | None = None) -> dict[str, Device]:
    """Every device of the spec directories, by qualified name; later directories win."""
    found: dict[str, Device] = {}
    for d in dirs if dirs is not None else spec_dirs():
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for n in names:
            if not n.endswith((".json", ".yaml", ".yml")):
                continue
            path = Path(d) / n
            try:
                devices = _parse(path)
            except Exception as e:  # any damage: named, and the other specs still count
                if warn is not None:
                    warn(f"CDI spec {path}: {e}")
                continue
            for dev in devices:
                found[dev.qualified] = dev
    return found


def resolve(names: list[str], warn: Callable[[str], None] | None = None,
            dirs: Iterable[str] | None = None) -> list[Device]:
    """The devices *names* ask for (`vendor.com/class=name`, or `=all` for every device of
    the kind unless the spec defines one named "all"); 125 naming the directories searched
    for one that is not there."""
    searched = list(dirs if dirs is not None else spec_dirs())
    known = registry(warn, searched)
    out: list[Device] = []
    for text in names:
        kind, _, name = text.partition("=")
        if not _KIND.fullmatch(kind) or not (name == "all" or _NAME.fullmatch(name)):
            raise InvalidArgument(f"invalid CDI device name {text!r}: expected "
                                  "vendor.com/class=name")
        if text in known:
            picked = [known[text]]
        elif name == "all":
            picked = [d for q, d in sorted(known.items()) if d.kind == kind]
        else:
            picked = []
        if not picked:
            raise InvalidArgument(f"unresolvable CDI devices {text}: no CDI spec in "
                                  f"{', '.join(searched)} defines it")
        out += [d for d in picked if d not in out]
    return out


def apply(devices: list[Device], spec: Spec,
          device_mount: Callable[[str], Mount]) -> None:
    """The devices' containerEdits on *spec*: the spec-wide ones once per spec file, then each
    device's; deviceNodes through *device_mount* (--device's own checks and bind)."""
    seen: set[str] = set()
    edits: list[Edits] = []
    for dev in devices:
        if dev.source not in seen:
            seen.add(dev.source)
            edits.append(dev.common)
        edits.append(dev.edits)
    for e in edits:
        names = {v.partition("=")[0] for v in e.env}
        spec.process.env = [v for v in spec.process.env
                            if v.partition("=")[0] not in names] + e.env
        spec.mounts += [device_mount(f"{host}:{inside}") for host, inside in e.device_nodes]
        spec.mounts += e.mounts
        if e.hooks:
            if spec.hooks is None:
                spec.hooks = Hooks()
            for kind, hook in e.hooks:
                getattr(spec.hooks, kind).append(hook)
