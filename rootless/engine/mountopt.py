"""`--mount type=bind|volume|tmpfs,...` (docker's long mount syntax) as the runtime's
mounts, through the same paths as -v and --tmpfs.

The field rules and messages are docker's CLI's (a CSV line of key=value
fields; `ro`, `readonly` and `volume-nocopy` may stand alone; booleans as Go
reads them; `tmpfs-size` in RAM units, `tmpfs-mode` octal), then its daemon's
checks per type (`invalid mount config for type "bind": ...`).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

from ..errors import InvalidArgument
from ..runtime.mounts import COPY_UP, container_path, refused_destination
from ..runtime.resources import parse_size
from ..runtime.spec import Mount

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")


@dataclass
class MountSpec:
    """One --mount, parsed (docker's mount.Mount, the fields rl uses)."""

    type: str = "volume"
    source: str = ""
    target: str = ""
    readonly: bool = False
    propagation: str = ""
    nonrecursive: bool = False
    nocopy: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    tmpfs_size: int | None = None
    tmpfs_mode: int | None = None
    kinds: set[str] = field(default_factory=set)  # which type's options were given


def _bool(key: str, val: str) -> bool:
    if val in _TRUE:
        return True
    if val in _FALSE:
        return False
    raise _bad(f"invalid value for {key}: {val}")


def _bad(why: str, text: str = "") -> InvalidArgument:
    return InvalidArgument(f'invalid argument "{text}" for "--mount" flag: {why}'
                           if text else why)


def parse(text: str) -> MountSpec:
    """The --mount value as docker's CLI reads it (relative bind sources are the face's)."""
    try:
        rows = list(csv.reader([text]))
    except csv.Error as e:
        raise _bad(str(e), text) from None
    fields = rows[0] if rows else []
    m = MountSpec()
    try:
        for f in fields:
            key, eq, val = f.partition("=")
            key = key.lower()
            if not eq:
                if key in ("readonly", "ro"):
                    m.readonly = True
                elif key == "volume-nocopy":
                    m.nocopy = True
                    m.kinds.add("volume")
                elif key == "bind-nonrecursive":
                    m.nonrecursive = True
                    m.kinds.add("bind")
                else:
                    raise _bad(f"invalid field '{f}' must be a key=value pair")
                continue
            if key == "type":
                m.type = val.lower()
            elif key in ("source", "src"):
                m.source = val
            elif key in ("target", "dst", "destination"):
                m.target = val
            elif key in ("readonly", "ro"):
                m.readonly = _bool(key, val)
            elif key == "consistency":
                continue  # docker for Mac's; no meaning on Linux
            elif key == "bind-propagation":
                if val.lower() not in _PROPAGATIONS:
                    raise _bad(f"invalid propagation mode: {val}")
                m.propagation = val.lower()
                m.kinds.add("bind")
            elif key == "bind-nonrecursive":
                m.nonrecursive = _bool(key, val)
                m.kinds.add("bind")
            elif key == "volume-nocopy":
                m.nocopy = _bool(key, val)
                m.kinds.add("volume")
            elif key == "volume-driver":
                if val != "local":
                    raise _bad(f"volume driver {val!r} is not supported: rl has the local "
                               "driver only")
                m.kinds.add("volume")
            elif key == "volume-label":
                k, _, v = val.partition("=")
                m.labels[k] = v
                m.kinds.add("volume")
            elif key == "volume-opt":
                raise _bad("volume-opt is not supported: rl's local volumes are "
                           "directories, with no mount options")
            elif key == "tmpfs-size":
                try:
                    m.tmpfs_size = parse_size(val, "mount")
                except InvalidArgument:
                    raise _bad(f"invalid value for {key}: {val}") from None
                m.kinds.add("tmpfs")
            elif key == "tmpfs-mode":
                try:
                    m.tmpfs_mode = int(val, 8)
                except ValueError:
                    raise _bad(f"invalid value for {key}: {val}") from None
                m.kinds.add("tmpfs")
            else:
                raise _bad(f"unexpected key '{key}' in '{f}'")
        if not m.type:
            raise _bad("type is required")
        if not m.target:
            raise _bad("target is required")
        for kind in sorted(m.kinds - {m.type}):
            raise _bad(f"cannot mix '{kind}-*' options with mount type '{m.type}'")
    except InvalidArgument as e:
        if e.message.startswith("invalid argument"):
            raise
        raise _bad(e.message, text) from None
    return m


def to_mount(text: str, anonymous: list[str] | None = None) -> Mount:
    """The runtime's Mount for a --mount (a volume made where missing; an anonymous
    one's name appended to anonymous)."""
    m = parse(text)
    ctx = f'invalid mount config for type "{m.type}": '
    if m.type not in ("bind", "volume", "tmpfs"):
        raise InvalidArgument(f'invalid mount config: mount type unknown: "{m.type}"'
                              if m.type not in ("npipe", "cluster", "image") else
                              f'{ctx}mount type "{m.type}" is not supported by rl')
    if not m.target.startswith("/"):
        raise InvalidArgument(f"invalid mount config for type \"{m.type}\": invalid mount "
                              f"path: '{m.target}' mount path must be absolute")
    dest = container_path(m.target)
    why = refused_destination(dest)
    if why is not None:
        raise InvalidArgument(f"{ctx}{why}")
    if m.type == "tmpfs":
        if m.source:
            raise InvalidArgument(f"{ctx}field Source must not be specified")
        opts = ["nosuid", "nodev", "noexec"]
        if m.readonly:
            opts.append("ro")
        if m.tmpfs_size is not None:
            opts.append(f"size={m.tmpfs_size}")
        if m.tmpfs_mode is not None:
            opts.append(f"mode={m.tmpfs_mode:o}")
        return Mount(destination=dest, type="tmpfs", source="tmpfs", options=opts)
    options = ["bind" if m.nonrecursive else "rbind"]
    if m.readonly:
        options.append("ro")
    if m.type == "bind":
        if not m.source:
            raise InvalidArgument(f"{ctx}field Source must not be empty")
        if not os.path.isabs(m.source):
            raise InvalidArgument(f"{ctx}invalid mount path: '{m.source}' mount path must "
                                  "be absolute")
        src = os.path.normpath(m.source)
        if not os.path.exists(src):
            raise InvalidArgument(f"{ctx}bind source path does not exist: {src}")
        options.append(m.propagation or "rprivate")
        return Mount(destination=dest, type="bind", source=src, options=options)
    from . import volumes

    if m.source.startswith("/"):
        raise InvalidArgument(f"{ctx}invalid volume name {m.source!r}: use type=bind for "
                              "a host path")
    vol = volumes.create(m.source or None, m.labels)
    if not m.source and anonymous is not None:
        anonymous.append(vol.name)
    if not m.nocopy:
        options.append(COPY_UP)
    return Mount(destination=dest, type="bind", source=vol.mountpoint, options=options)
