"""Named and anonymous volumes: directories in the user's storage that outlive
the containers mounting them (docker's `local` driver).

A volume is `<data>/volumes/NAME/` holding `volume.json` (its record) and
`_data/` (what containers see), owned by the user, who is the container's root:
the container's root writes it; what its other users write is owned by
subordinate ids, so removal goes through the user namespace (runtime.userns).
A volume is made under a temporary name and renamed into place, so a
half-made one never has a name; kill -9 leaves a dot-name `ls` skips and the
next create sweeps. Which containers use a volume is read from their records
(their mounts' sources), not kept twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import paths
from ..errors import Conflict, InvalidArgument, NotFound, RlError

if TYPE_CHECKING:
    from ..runtime.spec import Mount
    from . import store

# The container records, the runtime's spec and the event log are imported where they
# are used: `rl volume ls` (rootless/quickvolumes.py) needs none of them.

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
_TMP = ".tmp-"
_TRASH = ".trash-"
RECORD = "volume.json"
DATA = "_data"


@dataclass
class Volume:
    name: str
    mountpoint: str
    created: float
    labels: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False

    def inspect(self) -> dict[str, Any]:
        """docker volume inspect's view."""
        return {"CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.created)),
                "Driver": "local", "Labels": self.labels or None,
                "Mountpoint": self.mountpoint, "Name": self.name, "Options": None,
                "Scope": "local", "Anonymous": self.anonymous}


def root() -> Path:
    d = paths.data_dir() / "volumes"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f'create {name}: "{name}" includes invalid characters for a local volume name, '
            'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            "directory, use absolute path")
    return name


def _load(d: Path) -> Volume:
    return _load_at(str(d), d.name)


def _load_at(path: str, name: str) -> Volume:
    try:
        with open(f"{path}/{RECORD}", "rb") as f:
            raw = json.loads(f.read())
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        labels = raw.get("labels") or {}
        return Volume(name, f"{path}/{DATA}", float(raw.get("created", 0)),
                      {str(k): str(v) for k, v in labels.items()}, bool(raw.get("anonymous")))
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise RlError(f"volume {name}: damaged record ({e})") from None


def get(name: str) -> Volume:
    d = root() / name
    if not _NAME.fullmatch(name) or not (d / RECORD).is_file():
        raise NotFound(f"get {name}: no such volume", 1)
    return _load(d)


def create(name: str | None = None, labels: dict[str, str] | None = None) -> Volume:
    """A new volume, or the existing one of that name (docker's create is idempotent).
    No name: an anonymous volume with a random 64-hex name."""
    anonymous = name is None
    name = os.urandom(32).hex() if name is None else check_name(name)
    base = root()
    with contextlib.suppress(NotFound):
        return get(name)
    _sweep(base)
    tmp = base / f"{_TMP}{os.urandom(8).hex()}"
    tmp.mkdir(mode=0o700)
    try:
        (tmp / DATA).mkdir(mode=0o755)
        record = {"created": time.time(), "labels": labels or {}, "anonymous": anonymous}
        (tmp / RECORD).write_text(json.dumps(record))
        try:
            os.rename(tmp, base / name)  # fails if it exists: a concurrent create won
            from . import events

            events.volume_event("create", name)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            return get(name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return get(name)


def _sweep(base: Path) -> None:
    """What a killed create or remove left (dot-names nobody else uses)."""
    for d in base.iterdir():
        if d.name.startswith((_TMP, _TRASH)):
            with contextlib.suppress(OSError, RlError):
                _remove_tree(d)


def _remove_tree(d: Path) -> None:
    try:
        shutil.rmtree(d)
    except OSError:
        from ..runtime import userns  # subordinate-owned files a container wrote

        userns.remove_tree(d)


def list_volumes() -> Iterator[Volume]:
    """Every volume; a damaged record is skipped, never an error for the others."""
    with os.scandir(root()) as it:
        entries = sorted((e.name, e.path) for e in it
                         if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))
    for name, path in entries:
        with contextlib.suppress(RlError):
            yield _load_at(path, name)


def users() -> dict[str, list[str]]:
    """Volume mountpoint -> the containers (IDs) whose records mount it."""
    from . import store

    out: dict[str, list[str]] = {}
    vroot = str(root()) + "/"
    for ctr in store.all_containers():
        try:
            mounts = ctr.config.spec.mounts
        except (RlError, OSError):
            continue
        for m in mounts:
            if m.source and m.source.startswith(vroot):
                out.setdefault(m.source, []).append(ctr.id)
    return out


def remove(name: str, in_use: dict[str, list[str]] | None = None) -> None:
    _remove_tree(_unname(name, in_use))


def _unname(name: str, in_use: dict[str, list[str]] | None) -> Path:
    """The volume out of every listing at once (a trash name); its files are left."""
    vol = get(name)
    holders = (users() if in_use is None else in_use).get(vol.mountpoint, [])
    if holders:
        raise Conflict(f"remove {name}: volume is in use - [{', '.join(holders)}]", 1)
    base = root()
    trash = base / f"{_TRASH}{os.urandom(8).hex()}"
    os.rename(base / name, trash)  # the name goes at once; the files after
    from . import events

    events.volume_event("destroy", name)
    return trash


def remove_anonymous(names: list[str]) -> None:
    """A container's anonymous volumes, with it (rm -v, --rm); ones in use stay."""
    remove_trees(take_anonymous(names))


def take_anonymous(names: list[str]) -> list[Path]:
    """A container's anonymous volumes out of every listing (--rm, before its client hears
    of the exit, as docker's `run --rm` returns once they are gone); remove_trees then
    removes their files. A kill between the two leaves trash names the next create sweeps."""
    in_use = users()
    out = []
    for name in names:
        with contextlib.suppress(RlError, OSError):
            if get(name).anonymous:
                out.append(_unname(name, in_use))
    return out


def remove_trees(trash: list[Path]) -> None:
    for d in trash:
        with contextlib.suppress(RlError, OSError):
            _remove_tree(d)


def prune(all_: bool = False) -> tuple[list[str], int]:
    """Unused anonymous volumes (docker 23+), or with all_ every unused one."""
    in_use = users()
    removed, freed = [], 0
    for vol in list(list_volumes()):
        if vol.mountpoint in in_use or not (all_ or vol.anonymous):
            continue
        size = _size(Path(vol.mountpoint))
        with contextlib.suppress(RlError, OSError):
            remove(vol.name, in_use)
            removed.append(vol.name)
            freed += size
    return removed, freed


def _size(d: Path) -> int:
    total = 0
    for top, dirs, files in os.walk(d):
        for f in files + dirs:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, f)).st_blocks * 512
    return total


# -- mounts a container inherits: --volumes-from, the image's VOLUME --------------------


def user_binds(cfg: store.ContainerConfig) -> list[Mount]:
    """A container's binds and volumes as the user gave them (not rl's /dev and /etc ones)."""
    run = str(paths.container_run_dir(cfg.id)) + "/"
    return [m for m in cfg.spec.mounts
            if m.type == "bind" and m.source
            and not (m.source + "/").startswith(run)
            and not (m.source.startswith("/dev/") and m.destination.startswith("/dev/"))]


def volumes_from(refs: list[str], taken: set[str]) -> list[Mount]:
    """--volumes-from CTR[:ro|rw]: CTR's volumes and binds at the same places (its own
    mode, or the one given), where no mount of this container's own goes already."""
    from ..runtime.mounts import COPY_UP
    from ..runtime.spec import Mount
    from . import store

    out: list[Mount] = []
    for ref in refs:
        name, _, mode = ref.partition(":")
        if mode not in ("", "ro", "rw"):
            raise InvalidArgument(f"invalid mode: {mode}")
        try:
            other = store.lookup(name)
        except NotFound:
            raise NotFound(f"no such container: {name}", 125) from None
        for m in user_binds(other.config):
            dest = m.destination
            if dest in taken:
                continue
            opts = [o for o in m.options if o not in (COPY_UP, "ro", "rw")]
            if mode == "ro" or (not mode and "ro" in m.options):
                opts.append("ro")
            out.append(Mount(destination=dest, type="bind", source=m.source, options=opts))
            taken.add(dest)
    return out


def image_volumes(paths_: list[str], taken: set[str], anonymous: list[str]) -> list[Mount]:
    """The image's VOLUME entries as anonymous volumes, docker's way (first use copies
    the image's files there; rm -v and --rm remove them), where nothing else is mounted."""
    from ..runtime.mounts import COPY_UP, container_path
    from ..runtime.spec import Mount

    out = []
    for p in paths_:
        dest = container_path(p)
        if dest in taken or dest == "/":
            continue
        vol = create()
        anonymous.append(vol.name)
        out.append(Mount(destination=dest, type="bind", source=vol.mountpoint,
                         options=["rbind", COPY_UP]))
        taken.add(dest)
    return out


def inspect_mounts(cfg: store.ContainerConfig) -> list[dict[str, Any]]:
    """inspect's Mounts, as docker shows them: volumes by name, binds by path."""
    vroot = str(root()) + "/"
    out: list[dict[str, Any]] = []
    for m in user_binds(cfg):
        rw = "ro" not in m.options
        src = m.source or ""
        if src.startswith(vroot) and src.endswith("/" + DATA):
            out.append({"Type": "volume", "Name": src[len(vroot):-len(DATA) - 1],
                        "Source": src, "Destination": m.destination, "Driver": "local",
                        "Mode": "" if rw else "ro", "RW": rw, "Propagation": ""})
        else:
            prop = next((o for o in m.options if o in _PROPAGATIONS), "rprivate")
            out.append({"Type": "bind", "Source": src, "Destination": m.destination,
                        "Mode": "" if rw else "ro", "RW": rw, "Propagation": prop})
    return out


_PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")
