"""Container records on disk: create, find, rename, remove, and their liveness.

A container is a directory $XDG_DATA_HOME/rl/containers/<id> with
- config.json: written once at create (rl's settings plus the OCI spec),
- state.json:  rewritten atomically (temp file + rename) by its supervisor,
- ctr.log:     JSON lines, one per chunk of output, like docker's json-file,
- sup.lock:    its supervisor's liveness lock (below).

Changes to the set of containers (create, rename, rm) hold one flock on
containers.lock, so names stay unique under concurrent rl commands. Readers
take no lock: a record may vanish under them at any moment (a removal renames
it away, then deletes it), and they skip it. Whether a container really runs
is never taken from state.json alone: its supervisor holds an exclusive flock
on the record's sup.lock for its whole life, and a lock nobody holds means
the supervisor is gone (kill -9 included), whatever state.json says. The lock
lives with the record, not in the runtime directory, so every caller finds
it whatever its XDG_RUNTIME_DIR; the supervisor writes its pid and runtime
directory into it.

A record rl cannot read (a file missing, truncated, of the wrong shape, a
directory, unreadable) is "dead": listed as such, never in the way of the
others, and removed by `rl rm -f`, which first kills whatever still runs for
it (found through its lock, verified, never by a pid alone).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import select
import shlex
import shutil
import signal
import stat
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import Conflict, InvalidArgument, NoSuchContainer, NotRunning, RlError
from ..paths import locked  # in paths.py since the image store takes the same locks
from ..runtime.resources import Resources
from ..runtime.spec import Spec, _hints, from_json, to_json
from ..runtime.spec import check as _check  # the shape check records share with bundles

LOCK = "sup.lock"
STATUSES = ("created", "running", "exited")
_ID = re.compile(r"[0-9a-f]{64}")


class RecordError(RlError, ValueError):
    """A record rl cannot read: gone meanwhile (vanished, why == ""), or damaged.

    An RlError, so a command that meets one prints one line; a ValueError,
    so code that skips unreadable records (`except (OSError, ValueError)`)
    skips it too.
    """

    def __init__(self, cid: str, why: str = "") -> None:
        self.why = why
        self.vanished = not why
        super().__init__(f"no such container: {cid}" if self.vanished else
                         f"the record of container {cid[:12]} is damaged: {why}; "
                         f"`rl rm -f {cid[:12]}` removes it", 1)
        if self.vanished:
            self.http_status = 404


def new_id(random: Callable[[], bytes] = lambda: os.urandom(32)) -> str:
    """A container id, never one whose short form is all digits (docker's rule too): the
    short id is the default hostname, and a resolver reads "194159999124" as an IPv4
    number (inet_aton's), so `hostname -i` and the like fail."""
    while True:
        cid = random().hex()
        if not cid[:12].isdigit():
            return cid


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _read_json(path: Path, cid: str) -> Any:
    """A record file's JSON; RecordError says what is wrong with it, or that the
    record is gone (its directory was renamed away meanwhile)."""
    name = path.name
    try:
        # O_NONBLOCK: a FIFO put in its place must not hang rl.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise RecordError(cid, f"{name} is {kind}")
        with open(fd, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise RecordError(cid) from None
        raise RecordError(cid, f"{name} is missing") from None
    except IsADirectoryError:
        raise RecordError(cid, f"{name} is a directory") from None
    except OSError as e:
        raise RecordError(cid, f"{name}: {e.strerror}") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise RecordError(cid, f"{name} is {'empty' if not text.strip() else 'not valid JSON'}"
                          ) from None


def warm_up() -> None:
    """Resolve the type hints _check needs for every record type (the fork server
    does it once: get_type_hints costs each supervisor ~1.5 ms otherwise)."""
    todo: list[Any] = [ContainerConfig, State]
    seen: set[Any] = set()
    while todo:
        tp = todo.pop()
        todo.extend(typing.get_args(tp))
        if isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp not in seen:
            seen.add(tp)
            todo.extend(_hints(tp).values())


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
    privileged: bool = False
    network: str = "host"
    net: dict[str, Any] = field(default_factory=dict)  # netstack.options.NetOptions
    stop_signal: str = "SIGTERM"
    stop_timeout: int = 10
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)
    anonymous_volumes: list[str] = field(default_factory=list)  # -v PATH's: rm -v, --rm take them
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
    # --restart (engine/restart.py; `rl update --restart` rewrites it) and the
    # healthcheck: docker's HealthConfig, image's merged with --health-* (engine/health.py)
    restart_policy: dict[str, Any] = field(default_factory=dict)
    healthcheck: dict[str, Any] = field(default_factory=dict)
    health_on_failure: str = "none"

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["spec"] = to_json(self.spec)
        out["resources"] = to_json(self.resources)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerConfig:
        """ValueError if data is not the shape a record has (checked before anything
        is built: a wrong type would otherwise surface far away, at start or exec)."""
        _check(cls, data, "", top=True)
        data = dict(data)
        spec = from_json(Spec, data.pop("spec"))
        resources = from_json(Resources, data.pop("resources", None) or {})
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(spec=spec, resources=resources,
                   **{k: v for k, v in data.items() if k in known})


@dataclass
class State:
    status: str = "created"  # created | running | exited; "dead": a record rl cannot read
    pid: int = 0  # host pid of the container's PID 1
    supervisor_pid: int = 0  # dead: the supervisor that still runs for it (0: none)
    exit_code: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    error: str = ""
    oom_killed: bool = False
    cgroup: str = ""  # the container's cgroup directory while it runs ("" if none)
    # restart.py: restarts since the last manual start; between two of them (the
    # backoff, status still "running", pid 0); whether rl stop/kill asked it to end
    restart_count: int = 0
    restarting: bool = False
    manually_stopped: bool = False
    health: dict[str, Any] = field(default_factory=dict)  # health.py: docker's State.Health

    @classmethod
    def from_dict(cls, data: Any) -> State:
        """ValueError unless data is a state record (keys of a newer rl are left out)."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        _check(cls, data, "", top=True)
        if data.get("status", "created") not in STATUSES:
            raise ValueError(f"unknown status {data.get('status')!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def registry_lock() -> contextlib.AbstractContextManager[None]:
    return locked(paths.containers_dir() / "containers.lock")


# -- liveness ----------------------------------------------------------------------


def _probe(path: Path) -> bool | None:
    """Whether someone holds path's exclusive lock; None when path cannot tell
    (missing, not a regular file, unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False
    finally:
        os.close(fd)


def _lock_pattern(cid: str) -> re.Pattern[str]:
    # Its lock, also once unlinked (the runtime directory's <id>/sup.lock of an
    # older rl matches too). Not in .<id>.trash: an --rm supervisor that unlisted
    # its record is removing it, and must not be killed for it.
    return re.compile(rf".*/{cid}/{LOCK}(?: \(deleted\))?")


def holds_lock(pid: int, cid: str) -> bool:
    """Whether process pid holds cid's liveness lock exclusively.

    The identity of a process, not a pid's: one of its descriptors is that
    lock file and the kernel lists an exclusive flock on it (fdinfo), which a
    reused pid or a reader probing the lock cannot have.
    """
    pattern = _lock_pattern(cid)
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        try:
            if not pattern.fullmatch(os.readlink(f"{fd_dir}/{fd}")):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = f.read()
        except OSError:
            continue
        if any(line.startswith("lock:") and "FLOCK" in line and "WRITE" in line
               for line in info.splitlines()):
            return True
    return False


def _lock_info(cid: str) -> dict[str, Any]:
    """What the supervisor wrote into its lock: {"pid": …, "run_dir": …}, or {}."""
    try:
        with open(paths.container_dir(cid) / LOCK, "rb") as f:
            data = json.loads(f.read(4096) or b"{}")
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _own_pids() -> list[int]:
    uid = os.getuid()
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    out.append(int(entry))
    return out


def holders(cid: str, scan: bool = False) -> list[int]:
    """The processes holding cid's liveness lock (its supervisor), verified by holds_lock.

    Candidates: the lock's holder in /proc/locks, the pid written into the
    lock, the one state.json names; scan: every process of this user, for a
    lock file deleted or replaced under its holder.
    """
    candidates: set[int] = set()
    lock = paths.container_dir(cid) / LOCK
    with contextlib.suppress(OSError, ValueError):
        ino = os.stat(lock, follow_symlinks=False).st_ino
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                if ("FLOCK" in fields and "WRITE" in fields and len(fields) >= 6
                        and fields[-3].rpartition(":")[2] == str(ino)):
                    candidates.add(int(fields[-4]))
    pid = _lock_info(cid).get("pid")
    if isinstance(pid, int) and not isinstance(pid, bool):
        candidates.add(pid)
    with contextlib.suppress(OSError, ValueError, RecursionError):
        with open(paths.container_dir(cid) / "state.json", "rb") as f:
            data = json.loads(f.read())
        spid = data.get("supervisor_pid") if isinstance(data, dict) else None
        if isinstance(spid, int) and not isinstance(spid, bool):
            candidates.add(spid)
    if scan:
        candidates.update(_own_pids())
    return sorted(p for p in candidates if p > 1 and p != os.getpid() and holds_lock(p, cid))


def supervisor_alive(cid: str) -> bool:
    """True while a supervisor of the container holds its liveness lock.

    Nobody holding the file found at the lock's path is not the end of it:
    the file may have been deleted or replaced under a live holder, which
    still has the original (holders() checks the supervisor the record names).
    """
    if _probe(paths.container_dir(cid) / LOCK):
        return True
    # A supervisor started by an rl from before the lock moved keeps its old one.
    return bool(holders(cid)) or _probe(paths.container_run_dir(cid) / LOCK) is True


def terminate(cid: str, scan: bool = False, timeout: float = 10) -> None:
    """SIGKILL whatever still runs for a record, whatever is left of it; return once gone.

    The supervisors holding its lock and their children (PID 1, whose death
    empties the PID namespace; the root's FUSE server; slirp4netns, pasta),
    then what is left in the container's cgroup. Every process is pinned by
    a pidfd before it is checked, so a pid reused meanwhile is never signalled.
    scan: look at every process of the user (for a damaged record, whose
    lock file may be gone and whose supervisor no readable file names).
    """
    scan = scan or _probe(paths.container_dir(cid) / LOCK) is None
    sups = holders(cid, scan=scan)
    pinned: list[int] = []
    for pid in sups:
        fd = _pin(pid)
        if fd is None:
            continue
        if not holds_lock(pid, cid):
            os.close(fd)
            continue
        pinned.append(fd)
        for child in _children(pid):
            cfd = _pin(child)
            if cfd is not None and _ppid(child) == pid:
                pinned.append(cfd)
            elif cfd is not None:
                os.close(cfd)
    try:
        for fd in pinned:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        for fd in pinned:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    finally:
        for fd in pinned:
            os.close(fd)
    from ..runtime import (
        cgroups,  # deferred: only a forced removal needs it; store is on every command's path
    )

    host = cgroups.probe()
    if host.base is not None:
        path = cgroups.container_path(host, cid)
        if os.path.isdir(path):
            cgroups.remove(path)


def _pin(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _children(pid: int) -> list[int]:
    return [p for p in _own_pids() if _ppid(p) == pid]


# -- records -----------------------------------------------------------------------

_HEAD = re.compile(rb'\{"id": "([0-9a-f]{64})", "name": "([a-zA-Z0-9][a-zA-Z0-9_.-]*)"')


class Container:
    """A handle on one container's directory."""

    def __init__(self, cid: str) -> None:
        self.id = cid
        self.dir = paths.container_dir(cid)
        self._raw: dict[str, Any] | None = None
        self._config: ContainerConfig | None = None

    @property
    def raw_config(self) -> dict[str, Any]:
        """config.json as a dict: enough for names and flags, without building the Spec.

        RecordError if it is unreadable or not this container's record.
        """
        if self._raw is None:
            data = _read_json(self.dir / "config.json", self.id)
            if not isinstance(data, dict) or data.get("id") != self.id \
                    or not isinstance(data.get("name"), str):
                raise RecordError(self.id, "config.json is not a record of this container")
            self._raw = data
        return self._raw

    @property
    def config(self) -> ContainerConfig:
        if self._config is None:
            try:
                self._config = ContainerConfig.from_dict(self.raw_config)
            except (ValueError, TypeError) as e:
                if isinstance(e, RecordError):
                    raise
                raise RecordError(self.id, f"config.json: {e}") from None
        return self._config

    @property
    def name(self) -> str:
        """Its name; of a damaged config.json, what its first bytes still say, or ""."""
        try:
            return str(self.raw_config["name"])
        except RecordError as e:
            if e.vanished:
                raise
        try:
            with open(self.dir / "config.json", "rb") as f:
                m = _HEAD.match(f.read(200))
        except OSError:
            return ""
        return m.group(2).decode() if m and m.group(1).decode() == self.id else ""

    @property
    def label(self) -> str:
        """How messages name it: its name, else its short id."""
        return self.name or self.id[:12]

    @property
    def log_path(self) -> Path:
        return self.dir / "ctr.log"

    @property
    def run_dir(self) -> Path:
        """Its supervisor's runtime directory (ctl.sock, /etc files, ports): the one the
        supervisor wrote into its lock, whatever this caller's XDG_RUNTIME_DIR."""
        named = _lock_info(self.id).get("run_dir")
        if isinstance(named, str) and os.path.isabs(named) and os.path.basename(named) == self.id:
            return Path(named)
        return paths.container_run_dir(self.id)

    def raw_state(self) -> State:
        """state.json as written; RecordError if it is unreadable."""
        data = _read_json(self.dir / "state.json", self.id)
        try:
            return State.from_dict(data)
        except (ValueError, TypeError) as e:
            raise RecordError(self.id, f"state.json: {e}") from None

    def _read(self) -> tuple[State | None, str]:
        """(state.json, "") or (None, what is wrong with the record); RecordError if it
        vanished."""
        try:
            st = self.raw_state()
            _ = self.config
        except RecordError as e:
            if e.vanished:
                raise
            return None, e.why
        lock = self.dir / LOCK
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISREG(os.lstat(lock).st_mode):
                return None, f"{LOCK} is not a regular file"
            if not os.access(lock, os.R_OK | os.W_OK):
                return None, f"{LOCK}: permission denied"
        return st, ""

    def damage(self) -> str:
        """What is wrong with the record ("": nothing); RecordError if it vanished."""
        return self._read()[1]

    def state(self) -> State:
        """The truth, computed (never written back; it costs a look at processes only
        for a record that says running, or is damaged).

        A 'running' record whose supervisor died reads as exited (255). A
        damaged record reads as 'dead'; its error says why, and supervisor_pid
        is the supervisor that still runs for it (0: none). RecordError only
        if the record vanished.
        """
        st, why = self._read()
        if st is None:
            # A lock that cannot tell (gone, replaced): look at every process.
            sups = holders(self.id, scan=_probe(self.dir / LOCK) is None)
            error = f"damaged record: {why}"
            if sups:
                error += f"; its supervisor (pid {sups[0]}) still runs"
            return State(status="dead", supervisor_pid=sups[0] if sups else 0, error=error)
        if st.status == "running" and not supervisor_alive(self.id):
            st.status = "exited"
            st.exit_code = 255
            st.error = "the container's supervisor died"
            st.restarting = False
            st.finished_at = st.finished_at or time.time()
        return st

    def write_state(self, st: State) -> None:
        write_json_atomic(self.dir / "state.json", dataclasses.asdict(st))

    @property
    def running(self) -> bool:
        try:
            return self.state().status == "running"
        except RecordError:
            return False  # removed meanwhile


def salvage(ctr: Container) -> tuple[str, str, float]:
    """A damaged record's image, command and creation time, as far as they can be read."""
    try:
        raw = ctr.raw_config
    except RecordError:
        raw = {}
    image = raw.get("image") if isinstance(raw.get("image"), str) else ""
    spec = raw.get("spec")
    process = spec.get("process") if isinstance(spec, dict) else None
    args = process.get("args") if isinstance(process, dict) else None
    command = shlex.join(args) if isinstance(args, list) and all(
        isinstance(a, str) for a in args) else ""
    created = raw.get("created")
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        try:
            created = ctr.dir.stat().st_mtime
        except OSError:
            created = 0.0
    return str(image), command, float(created)


def all_containers() -> list[Container]:
    """Every listed record, damaged ones included: a directory named by an id."""
    out = []
    with os.scandir(paths.containers_dir()) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if _ID.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                    out.append(Container(entry.name))
    return out


def _name_of(c: Container) -> str | None:
    """c's name, None if it was removed meanwhile."""
    try:
        return c.name
    except RecordError:
        return None


def name_or_id(c: Container) -> str:
    """c's name for a message, its short id when the record cannot say."""
    return _name_of(c) or c.id[:12]


def _find(ref: str, candidates: list[Container]) -> Container | None:
    for c in candidates:
        if c.id == ref:
            return c
    for c in candidates:
        if _name_of(c) == ref:
            return c
    matches = [c for c in candidates if c.id.startswith(ref)]
    if len(matches) > 1:
        raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}", 1)
    return matches[0] if matches else None


def lookup(ref: str) -> Container:
    """Resolve a full id, a name, or a unique id prefix, as docker does."""
    if not ref:
        raise NoSuchContainer(ref)
    found = _find(ref, all_containers())
    if found is None:
        raise NoSuchContainer(ref)
    return found


def names_in_use() -> dict[str, str]:
    """name -> id of every record (a damaged one holds what is left of its name)."""
    out = {}
    for c in all_containers():
        name = _name_of(c)
        if name:
            out[name] = c.id
    return out


# -- names ---------------------------------------------------------------------

_LEFT = ["admiring", "brave", "calm", "eager", "focused", "gallant", "happy", "jolly",
         "keen", "lucid", "modest", "nifty", "quirky", "serene", "tender", "vibrant"]
_RIGHT = ["babbage", "curie", "darwin", "euler", "fermi", "gauss", "hopper", "knuth",
          "lovelace", "meitner", "noether", "pascal", "ritchie", "turing", "wozniak", "yalow"]


def _pick(words: list[str]) -> str:
    # os.urandom rather than secrets: `import secrets` costs ~4 ms of start-up.
    return words[int.from_bytes(os.urandom(2), "big") % len(words)]


def random_name(taken: set[str] | dict[str, str]) -> str:
    """docker's adjective_scientist, one that is not taken."""
    for _ in range(100):
        name = f"{_pick(_LEFT)}_{_pick(_RIGHT)}"
        if name not in taken:
            return name
    while True:
        name = f"{_pick(_LEFT)}_{_pick(_RIGHT)}{int.from_bytes(os.urandom(2), 'big') % 10000}"
        if name not in taken:
            return name


def _name_in_use(name: str, other: str, exit_code: int = 125) -> RlError:
    return Conflict(f'the container name "/{name}" is already in use by container "{other}". '
                    "You have to remove (or rename) that container to be able to reuse that "
                    "name.", exit_code)


def create(config: ContainerConfig) -> Container:
    """Write a new container record.

    The name must be free; an empty one is chosen here, among the free ones,
    under the same lock that makes names unique (chosen before it, two
    concurrent `rl run`s could pick the same one).
    """
    with registry_lock():
        taken = names_in_use()
        if not config.name:
            config.name = random_name(taken)
        elif config.name in taken:
            raise _name_in_use(config.name, taken[config.name])
        tmp = paths.containers_dir() / f".{config.id}.tmp"
        tmp.mkdir(mode=0o700)
        write_json_atomic(tmp / "config.json", config.to_dict())
        write_json_atomic(tmp / "state.json", dataclasses.asdict(State()))
        os.close(os.open(tmp / LOCK, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        os.rename(tmp, paths.container_dir(config.id))
    return Container(config.id)


def rename(ctr: Container, new_name: str) -> None:
    with registry_lock():
        other = names_in_use().get(new_name)
        if other is not None and other != ctr.id:
            raise Conflict(f'the container name "/{new_name}" is already in use by container '
                           f'"{other}"', 1)
        cfg = ctr.config
        cfg.name = new_name
        write_json_atomic(ctr.dir / "config.json", cfg.to_dict())
        ctr._raw = None


def unlist(cid: str) -> None:
    """Take a container out of every listing at once (the first step of removing it)."""
    with contextlib.suppress(FileNotFoundError):
        os.rename(paths.container_dir(cid), paths.containers_dir() / f".{cid}.trash")


def remove(ctr: Container) -> None:
    """Delete a record nothing runs for; RlError (1) if a supervisor holds it.

    The lock is held shared meanwhile, so no supervisor can start for it
    (it takes the lock exclusively) between the check and the removal.
    """
    with registry_lock():
        if not ctr.dir.is_dir():
            return  # removed meanwhile (its own --rm, say)
        fd, existed = _open_lock(ctr.dir / LOCK)
        try:
            busy = fd >= 0 and not _lock_shared(fd)
            # The file may have been deleted or replaced from under a live
            # holder (ours, made now, keeps new ones out meanwhile): look for it
            # everywhere if nothing readable names it.
            if not busy:
                try:
                    unnamed = fd < 0 or not existed or bool(ctr.damage())
                except RecordError:
                    return  # removed meanwhile
                busy = bool(holders(ctr.id, scan=unnamed))
            if busy or _probe(paths.container_run_dir(ctr.id) / LOCK):
                raise Conflict(f"cannot remove container {ctr.label}: container is running: "
                               "stop the container before removing or force remove", 1)
            remove_files(ctr.id)
        finally:
            if fd >= 0:
                os.close(fd)


def _open_lock(path: Path) -> tuple[int, bool]:
    """(a descriptor of the lock file, -1 if it is unusable; whether it was there)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd, existed = os.open(path, flags), True
    except FileNotFoundError:
        try:
            fd, existed = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600), False
        except OSError:
            return -1, False  # made meanwhile by a starting supervisor, or the record went
    except OSError:
        return -1, True
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return fd, existed
    os.close(fd)
    return -1, True


def _lock_shared(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def remove_files(cid: str) -> None:
    """Delete a container's record (unlisted first, so no half-deleted record is ever listed)."""
    run_dirs = {paths.container_run_dir(cid), Container(cid).run_dir}
    unlist(cid)
    shutil.rmtree(paths.containers_dir() / f".{cid}.trash", ignore_errors=True)
    for run_dir in run_dirs:
        shutil.rmtree(run_dir, ignore_errors=True)
    # A container made from an image owns storage with sub-id owned files.
    if (paths.data_dir() / "storage" / "containers" / cid).exists():
        from ..image import rootfs

        rootfs.remove(cid)
    legacy = paths.data_dir() / "storage" / "vfs" / cid  # a copy made before rootfs.py
    if legacy.exists():
        from ..runtime import userns

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
            continue  # damaged (left to rl rm -f) or removed meanwhile
        if auto_remove and st.status == "running" and not supervisor_alive(c.id):
            with contextlib.suppress(RlError):
                remove(c)  # unless a supervisor (re)started it meanwhile


def dead_why(ctr: Container, st: State) -> str:
    """Why a Dead record cannot be used, and what removes it."""
    return (f"its record is damaged ({st.error.removeprefix('damaged record: ')}); "
            f"`rl rm -f {ctr.label}` removes it")


def running_or_error(ctr: Container) -> State:
    """ctr's state if it runs; else the error docker gives a command that needs it running."""
    st = ctr.state()
    if st.status == "dead":
        raise RlError(f"container {ctr.label}: {dead_why(ctr, st)}", 1)
    if st.status != "running":
        raise NotRunning(f"container {ctr.id[:12]} is not running", 1)
    return st
