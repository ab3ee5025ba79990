"""Container records on disk: create, find, rename, remove, and their liveness.

A container is a directory $XDG_DATA_HOME/rl/containers/<id> with
- config.json: written once at create (rl's settings plus the OCI spec),
- state.json:  rewritten atomically (temp file + rename) by its supervisor,
- ctr.log:     JSON lines, one per chunk of output, like docker's json-file.

Changes to the set of containers (create, rename, rm) hold one flock on
containers.lock, so names stay unique under concurrent rl commands. Whether a
container really runs is never taken from state.json alone: its supervisor
holds an flock on <runtime>/<id>/sup.lock for its whole life, and a lock
nobody holds means the supervisor is gone (kill -9 included), whatever
state.json says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths
from .errors import NoSuchContainer, RlError
from .resources import Resources
from .spec import Spec, from_json, to_json


@dataclass
class ContainerConfig:
    """What `rl create` decided; never changes afterwards (except the name)."""

    id: str
    name: str
    created: float
    spec: Spec
    image: str
    rootfs: str
    user: str = ""  # the -u value, resolved inside the container
    idmap_mode: str = "subuid"  # decided at create time, from the creating user's environment
    tty: bool = False
    open_stdin: bool = False
    auto_remove: bool = False
    init: bool = False
    network: str = "host"
    net: dict[str, Any] = field(default_factory=dict)  # netstack.options.NetOptions
    stop_signal: str = "SIGTERM"
    stop_timeout: int = 10
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)
    tmpfs: dict[str, str] = field(default_factory=dict)
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    created_mountpoints: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    image_id: str = ""  # the config digest of the image it was created from (rootless.images)
    # cgroup limits (cgroups.py); `rl update` rewrites them. cgroups: enabled | disabled
    resources: Resources = field(default_factory=Resources)
    cgroups: str = "enabled"
    # Its root (rootfs.py): "" for --rootfs, "vfs" for a copy of its image, or an
    # overlay driver with the layer directories (init layer first), upper and work.
    storage_driver: str = ""
    layers: list[str] = field(default_factory=list)
    upper: str = ""
    work: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["spec"] = to_json(self.spec)
        out["resources"] = to_json(self.resources)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerConfig:
        data = dict(data)
        spec = from_json(Spec, data.pop("spec"))
        resources = from_json(Resources, data.pop("resources", None) or {})
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(spec=spec, resources=resources,
                   **{k: v for k, v in data.items() if k in known})


@dataclass
class State:
    status: str = "created"  # created | running | exited
    pid: int = 0  # host pid of the container's PID 1
    supervisor_pid: int = 0
    exit_code: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    error: str = ""
    oom_killed: bool = False
    cgroup: str = ""  # the container's cgroup directory while it runs ("" if none)


def new_id() -> str:
    return os.urandom(32).hex()


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(path: Path, shared: bool = False) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def registry_lock() -> contextlib.AbstractContextManager[None]:
    return locked(paths.containers_dir() / "containers.lock")


def supervisor_alive(cid: str) -> bool:
    """True while the container's supervisor holds its liveness lock."""
    lock = paths.container_run_dir(cid) / "sup.lock"
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class Container:
    """A handle on one container's directory."""

    def __init__(self, cid: str) -> None:
        self.id = cid
        self.dir = paths.container_dir(cid)
        self._raw: dict[str, Any] | None = None
        self._config: ContainerConfig | None = None

    @property
    def raw_config(self) -> dict[str, Any]:
        """config.json as a dict: enough for names and flags, without building the Spec."""
        if self._raw is None:
            with open(self.dir / "config.json") as f:
                self._raw = json.load(f)
        return self._raw

    @property
    def config(self) -> ContainerConfig:
        if self._config is None:
            self._config = ContainerConfig.from_dict(self.raw_config)
        return self._config

    @property
    def name(self) -> str:
        return str(self.raw_config["name"])

    @property
    def log_path(self) -> Path:
        return self.dir / "ctr.log"

    @property
    def run_dir(self) -> Path:
        return paths.container_run_dir(self.id)

    def raw_state(self) -> State:
        try:
            with open(self.dir / "state.json") as f:
                return State(**json.load(f))
        except FileNotFoundError:
            return State()

    def state(self) -> State:
        """The truth: a 'running' record whose supervisor died reads as exited (255)."""
        st = self.raw_state()
        if st.status == "running" and not supervisor_alive(self.id):
            st.status = "exited"
            st.exit_code = 255
            st.error = "the container's supervisor died"
            st.finished_at = st.finished_at or time.time()
        return st

    def write_state(self, st: State) -> None:
        write_json_atomic(self.dir / "state.json", dataclasses.asdict(st))

    @property
    def running(self) -> bool:
        return self.state().status == "running"


def all_containers() -> list[Container]:
    out = []
    for entry in paths.containers_dir().iterdir():
        if entry.is_dir() and (entry / "config.json").exists():
            out.append(Container(entry.name))
    return out


def _find(ref: str, candidates: list[Container]) -> Container | None:
    for c in candidates:
        if c.id == ref:
            return c
    for c in candidates:
        if c.name == ref:
            return c
    matches = [c for c in candidates if c.id.startswith(ref)]
    if len(matches) > 1:
        raise RlError(f"multiple IDs found with provided prefix: {ref}", 1)
    return matches[0] if matches else None


def lookup(ref: str) -> Container:
    """Resolve a full id, a name, or a unique id prefix, as docker does."""
    if not ref:
        raise NoSuchContainer(ref)
    found = _find(ref, all_containers())
    if found is None:
        raise NoSuchContainer(ref)
    return found


def create(config: ContainerConfig) -> Container:
    """Write a new container record; the name must be free (checked under the lock)."""
    with registry_lock():
        for other in all_containers():
            if other.name == config.name:
                raise RlError(
                    f'the container name "/{config.name}" is already in use by container '
                    f'"{other.id}". You have to remove (or rename) that container to be able '
                    "to reuse that name."
                )
        tmp = paths.containers_dir() / f".{config.id}.tmp"
        tmp.mkdir(mode=0o700)
        write_json_atomic(tmp / "config.json", config.to_dict())
        write_json_atomic(tmp / "state.json", dataclasses.asdict(State()))
        os.rename(tmp, paths.container_dir(config.id))
    return Container(config.id)


def rename(ctr: Container, new_name: str) -> None:
    with registry_lock():
        for other in all_containers():
            if other.name == new_name and other.id != ctr.id:
                raise RlError(
                    f'the container name "/{new_name}" is already in use by container '
                    f'"{other.id}"', 1
                )
        cfg = ctr.config
        cfg.name = new_name
        write_json_atomic(ctr.dir / "config.json", cfg.to_dict())
        ctr._raw = None


def unlist(cid: str) -> None:
    """Take a container out of every listing at once (the first step of removing it)."""
    with contextlib.suppress(FileNotFoundError):
        os.rename(paths.container_dir(cid), paths.containers_dir() / f".{cid}.trash")


def remove_files(cid: str) -> None:
    """Delete a container's record (unlisted first, so no half-deleted record is ever listed)."""
    unlist(cid)
    shutil.rmtree(paths.containers_dir() / f".{cid}.trash", ignore_errors=True)
    shutil.rmtree(paths.container_run_dir(cid), ignore_errors=True)
    # A container made from an image owns storage with sub-id owned files.
    if (paths.data_dir() / "storage" / "containers" / cid).exists():
        from . import rootfs

        rootfs.remove(cid)
    legacy = paths.data_dir() / "storage" / "vfs" / cid  # a copy made before rootfs.py
    if legacy.exists():
        from . import userns

        userns.remove_tree(legacy)


def collect_garbage() -> None:
    """Finish what a killed rl left: --rm containers whose supervisor died, temp dirs."""
    root = paths.containers_dir()
    for entry in root.iterdir():
        if not entry.name.startswith("."):
            continue
        # A create or remove that was killed half-way (never listed). Another
        # rl may finish (rename) its own at any moment: a vanished entry is fine.
        try:
            stale = entry.is_dir() and time.time() - entry.stat().st_mtime > 60
        except FileNotFoundError:
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
    for c in all_containers():
        try:
            auto_remove, st = c.raw_config.get("auto_remove"), c.raw_state()
        except (OSError, ValueError):
            continue
        if auto_remove and st.status == "running" and not supervisor_alive(c.id):
            remove_files(c.id)
