"""rl's library API: what the CLI (and later the REST API) are thin faces over.

Functions take typed options and container handles and raise RlError with
docker's exit status; none of them prints.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import shlex
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from netstack import views as netviews
from netstack.options import NetOptions

from .. import paths
from ..errors import EXIT_RL, Conflict, InvalidArgument, NotRunning, RlError
from ..image.imageconfig import ImageDefaults
from ..runtime import process
from ..runtime.resources import LimitFlags
from . import client, events, hpc, listing, pause, quotas, restart, specgen, store
from .options import CreateOptions, ExecOptions, StopOptions
from .specgen import parse_signal, valid_name
from .store import Container

# -- events (engine/events.py): docker's, emitted where the thing is done -----------


def _event(ctr: Container, action: str, **attrs: Any) -> None:
    with contextlib.suppress(RlError, OSError):  # a damaged record has no event
        events.container_event(ctr.config, action, **attrs)


def _signalled(ctr: Container, signum: int) -> None:
    """docker's `kill` event (stop sends one too); a paused container is thawed to get it."""
    _event(ctr, "kill", signal=signum)
    pause.thaw_for_signal(ctr)


def _created(ctr: Container) -> Container:
    _event(ctr, "create")
    return ctr


F = TypeVar("F", bound=Callable[..., None])


def events_after(action: str, only_alive: bool = True) -> Callable[[F], F]:
    """Emit `action` once the decorated operation on ctr returned (stop: only when
    the container was running, as docker; the config read before, for destroy)."""
    def wrap(func: F) -> F:
        @functools.wraps(func)
        def run(ctr: Container, *args: Any, **kwargs: Any) -> None:
            try:
                cfg = ctr.config
                alive = _alive(ctr.state())
            except (RlError, OSError):
                cfg, alive = None, False
            func(ctr, *args, **kwargs)
            if cfg is not None and (alive or not only_alive):
                with contextlib.suppress(OSError):
                    events.container_event(cfg, action)
        return run  # type: ignore[return-value]
    return wrap


# -- lifecycle ---------------------------------------------------------------------


def create(opts: CreateOptions, warn: Callable[[str], None] | None = None) -> Container:
    store.collect_garbage()
    quotas.collect_garbage()
    if opts.storage_driver is not None and opts.image is None:
        raise InvalidArgument(
            "--storage-driver applies to images; a --rootfs directory is used as it is")
    if opts.image is not None:
        # Deferred: `rl run --rootfs` never imports the image store (~15 ms in a CLI
        # process; the fork server has it preloaded for supervisors).
        from . import images

        return _created(images.create_container(opts, warn))
    return _created(store.create(specgen.generate(opts, warn)))


def start(ctr: Container, attach: bool, stdin: bool) -> client.Session | None:
    """Start a created or exited container; returns the attached session, if any."""
    st = ctr.state()
    if st.status == "running":
        raise Conflict(f"container {ctr.name} is already running", 1)
    if st.status == "dead":
        raise RlError(f"cannot start container {ctr.label}: {store.dead_why(ctr, st)}", 1)
    _network_host(ctr)
    try:
        session = client.start_supervisor(ctr.id, attach, stdin)
    except RlError:
        # The supervisor records its own failures; this covers one that never ran.
        with contextlib.suppress(OSError, ValueError):
            if ctr.config.auto_remove and not store.supervisor_alive(ctr.id):
                with store.registry_lock():
                    store.remove_files(ctr.id)
        raise
    if not attach:
        session.close()
        return None
    return session


def _network_host(ctr: Container) -> None:
    """A container on a user-defined network needs the network host (netstack/nethost.py),
    started here, by the client: a supervisor is a subreaper and would adopt it."""
    try:
        mode = (ctr.config.net or {}).get("mode")
    except RlError:
        return  # a damaged record: start says so
    if mode != "network":
        return
    from netstack import nethost

    nethost.ensure()

def attach(ctr: Container, stdin: bool) -> client.Session:
    """`rl attach`: one more client of the running container's supervisor (stdin
    only if the container keeps it open, -i)."""
    st = ctr.state()
    if st.status != "running":
        raise Conflict("You cannot attach to a stopped container, start it first", 1)
    if pause.is_paused(st):
        raise Conflict("You cannot attach to a paused container, unpause it first", 1)
    session = client.attach(ctr, stdin and ctr.config.open_stdin)
    _event(ctr, "attach")
    return session


def _alive(st: store.State) -> bool:
    """Whether a supervisor runs for the record: running, or dead with one still there."""
    return st.status == "running" or (st.status == "dead" and st.supervisor_pid != 0)


def kill(ctr: Container, signum: int = signal.SIGKILL) -> None:
    st = ctr.state()
    if not _alive(st):
        raise NotRunning(f"cannot kill container: {ctr.label}: container "
                         f"{ctr.id[:12]} is not running", 1)
    try:
        client.control(ctr, {"op": "kill", "signal": signum})
        _signalled(ctr, signum)
    except RlError:
        if st.status != "dead":
            raise
        raise RlError(f"cannot kill container {ctr.label}: {store.dead_why(ctr, st)}", 1) from None


def _linger(ctr: Container, timeout: float) -> None:
    """Wait (bounded) for a supervisor that holds the record's lock to let it go."""
    deadline = time.monotonic() + timeout
    while store.supervisor_alive(ctr.id) and time.monotonic() < deadline:
        time.sleep(0.01)


def _wait_gone(ctr: Container, timeout: float | None = None, linger: float = 5) -> int | None:
    """Wait for the supervisor to record the exit and leave (it cleans up for a moment
    after answering: up to linger s more); the exit code, if it answered.

    Without a control socket (a damaged runtime directory) there is nothing to
    wait for: the caller kills what holds the record.
    """
    try:
        st = os.lstat(ctr.run_dir / "ctl.sock")
    except OSError:
        return None
    if not stat.S_ISSOCK(st.st_mode):
        return None
    try:
        answer = client.control(ctr, {"op": "wait"}, timeout=timeout)
    except (RlError, OSError):  # OSError: it left between accepting and answering
        answer = {}
    _linger(ctr, linger)
    code = answer.get("exit_code")
    return None if code is None else int(code)


def wait(ctr: Container, timeout: float | None = None) -> int:
    """Block until the container exits; its exit code."""
    if _alive(ctr.state()):
        code = _wait_gone(ctr, timeout)
        if code is not None:
            return code
        _linger(ctr, float("inf") if timeout is None else timeout)  # no control socket
    if not ctr.dir.exists():
        return 0
    st = ctr.state()
    if st.status == "dead":
        raise RlError(f"cannot wait for container {ctr.label}: {store.dead_why(ctr, st)}", 1)
    return st.exit_code


@events_after("stop")
def stop(ctr: Container, opts: StopOptions | None = None) -> None:
    """The stop signal (given, or the container's, or SIGTERM), then SIGKILL after timeout s.

    A damaged record's supervisor is asked the same (SIGTERM and 10 s where
    its config is unreadable) and killed if it does not answer.
    """
    timeout, signum = (opts.timeout, opts.signal) if opts else (None, None)
    st = ctr.state()
    if not _alive(st):
        return
    try:
        stop_timeout, stop_signal = ctr.config.stop_timeout, ctr.config.stop_signal
    except store.RecordError:
        stop_timeout, stop_signal = 10, "SIGTERM"
    grace = stop_timeout if timeout is None else timeout
    if signum is None:
        signum = parse_signal(stop_signal)
    with contextlib.suppress(RlError):
        client.control(ctr, {"op": "kill", "signal": signum})
        _signalled(ctr, signum)
    if grace != 0:
        try:
            client.control(ctr, {"op": "wait"}, timeout=None if grace < 0 else grace)
            return
        except (TimeoutError, RlError):
            pass
    with contextlib.suppress(RlError):
        client.control(ctr, {"op": "kill", "signal": signal.SIGKILL})
    if _wait_gone(ctr, timeout=10, linger=10 if st.status == "running" else 0.5) is None:
        # It does not answer (no control socket, or stuck): kill it.
        store.terminate(ctr.id, scan=st.status == "dead")


@events_after("destroy", only_alive=False)
def remove(ctr: Container, force: bool = False, volumes: bool = False) -> None:
    """Delete the record; -f first kills whatever runs for it, whatever is left of it;
    volumes (-v): its anonymous volumes too."""
    anonymous = []
    if volumes:
        with contextlib.suppress(RlError):
            anonymous = ctr.config.anonymous_volumes
    _remove(ctr, force)
    if anonymous:
        from . import volumes as vols

        vols.remove_anonymous(anonymous)


def _remove(ctr: Container, force: bool) -> None:
    st = ctr.state()
    if _alive(st) and not force:
        raise Conflict(
            f"cannot remove container {ctr.label}: container is running: stop the "
            "container before removing or force remove", 1)
    for _ in range(3):
        if _alive(st):
            if st.status == "running":
                with contextlib.suppress(RlError):
                    client.control(ctr, {"op": "kill", "signal": signal.SIGKILL})
                _wait_gone(ctr, timeout=10, linger=10)
            # Whatever did not go (quick when nothing holds the lock).
            store.terminate(ctr.id, scan=st.status == "dead")
        else:
            _linger(ctr, 10)  # a supervisor that recorded the exit may still clean up
        try:
            store.remove(ctr)
            return
        except RlError:
            # Still held: a supervisor that took the record meanwhile (`rl start`).
            if not force:
                raise
        try:
            st = ctr.state()
        except store.RecordError:
            return  # removed meanwhile
    store.remove(ctr)


def restart_container(ctr: Container, opts: StopOptions | None = None) -> None:
    """`rl restart`: stop (opts: -t, -s), then start detached, as docker's."""
    stop(ctr, opts)
    _linger(ctr, 10)  # the exit is recorded; its supervisor may still clean up
    start(ctr, attach=False, stdin=False)


# -- views -----------------------------------------------------------------------


def _free_bytes() -> int:
    st = os.statvfs(paths.data_dir())
    return st.f_bfree * st.f_frsize


def prune() -> tuple[list[str], int]:
    """`rl container prune`: remove every container that is not running (docker's
    "stopped": created and exited ones). Returns the IDs removed and the bytes the
    store's file system gained: a rootless walk cannot read the subuid-owned
    directories a size would need. A damaged record or one a command holds is
    left, never a reason to stop."""
    removed = []
    before = _free_bytes()
    for ctr in store.all_containers():
        try:
            st = ctr.state()
            if st.status not in ("created", "exited"):
                continue
            remove(ctr)
        except RlError:
            continue
        removed.append(ctr.id)
    return removed, max(_free_bytes() - before, 0)


def unshare(argv: list[str], env: dict[str, str]) -> int:
    """`rl unshare` (podman's): argv as root of a user namespace with rl's id maps,
    where files a container's subordinate ids own can be read and removed."""
    from ..runtime import userns

    return userns.execute(argv, env)


def _iso(ts: float) -> str:
    if not ts:
        return "0001-01-01T00:00:00Z"
    dt = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _inspect_dead(ctr: Container, st: store.State) -> dict[str, Any]:
    """What docker's inspect says of a Dead container, from what is left of the record."""
    image, command, created = store.salvage(ctr)
    return {
        "Id": ctr.id,
        "Created": _iso(created),
        "Path": shlex.split(command)[0] if command else "",
        "Args": shlex.split(command)[1:],
        "State": {
            "Status": "dead", "Running": False, "Paused": False, "Restarting": False,
            "OOMKilled": False, "Dead": True, "Pid": 0, "ExitCode": 0, "Error": st.error,
            "StartedAt": _iso(0), "FinishedAt": _iso(0), "CgroupPath": "",
        },
        "Image": image,
        "Name": "/" + ctr.name,
        "LogPath": str(ctr.log_path),
    }


def _graph_driver(cfg: store.ContainerConfig) -> dict[str, Any]:
    """docker's GraphDriver: where the container's root comes from."""
    if cfg.storage_driver in ("", "vfs"):
        return {"Name": cfg.storage_driver or "none", "Data": {"Dir": cfg.rootfs}}
    return {"Name": cfg.storage_driver, "Data": {
        "LowerDir": ":".join(cfg.layers), "UpperDir": cfg.upper, "WorkDir": cfg.work,
        "MergedDir": cfg.rootfs}}


def inspect(ctr: Container) -> dict[str, Any]:
    st = ctr.state()
    if st.status == "dead":
        return _inspect_dead(ctr, st)
    cfg = ctr.config
    cfg_ports = NetOptions.from_dict(cfg.net).ports if cfg.net else []
    proc = cfg.spec.process
    from . import volumes as volumes_  # inspect's Mounts
    return restart.decorate_inspect(cfg, st, {
        "Id": cfg.id,
        "Created": _iso(cfg.created),
        "Path": proc.args[0],
        "Args": proc.args[1:],
        "State": {
            "Status": "paused" if pause.is_paused(st) else st.status,
            "Running": st.status == "running",
            "Paused": pause.is_paused(st),
            "Restarting": False,
            "OOMKilled": st.oom_killed,
            "Dead": False,
            "Pid": st.pid if st.status == "running" else 0,
            "ExitCode": st.exit_code,
            "Error": st.error,
            "StartedAt": _iso(st.started_at),
            "FinishedAt": _iso(st.finished_at),
            "CgroupPath": st.cgroup if st.status == "running" else "",
        },
        "Image": cfg.image,
        "Rootfs": cfg.rootfs,
        "Driver": cfg.storage_driver,
        "GraphDriver": _graph_driver(cfg),
        "Name": "/" + cfg.name,
        "LogPath": str(ctr.log_path),
        "Config": {
            "Hostname": cfg.spec.hostname,
            "User": cfg.user,
            "Env": proc.env,
            "Cmd": cfg.cmd,
            "Entrypoint": cfg.entrypoint or None,
            "WorkingDir": proc.cwd,
            "Tty": cfg.tty,
            "OpenStdin": cfg.open_stdin,
            "StopSignal": cfg.stop_signal,
            "StopTimeout": cfg.stop_timeout,
            "Labels": cfg.labels,
            "Timezone": cfg.spec.annotations.get(hpc.TZ_KEY, ""),
            **restart.config_fields(cfg),
        },
        "HostConfig": {
            "Binds": cfg.binds,
            "AutoRemove": cfg.auto_remove,
            "NetworkMode": cfg.network,
            "PortBindings": {k: [{"HostIp": p.host_ip, "HostPort": str(p.host_port or "")}
                                 for p in cfg_ports if p.key() == k]
                             for k in dict.fromkeys(p.key() for p in cfg_ports)},
            "ReadonlyRootfs": cfg.spec.root.readonly,
            "CapAdd": cfg.cap_add or None,
            "CapDrop": cfg.cap_drop or None,
            "Init": cfg.init,
            "Tmpfs": cfg.tmpfs,
            "SecurityOpt": ["no-new-privileges"] if proc.no_new_privileges else None,
            "Sysctls": cfg.spec.linux.sysctl or None,
            "Privileged": cfg.privileged,
            "GroupAdd": ([str(g) for g in proc.user.additional_gids]
                         + (["keep-groups"] if process.keep_groups(cfg.spec.annotations)
                            else [])) or None,
            **quotas.host_config(ctr),
        },
        "NetworkSettings": _network_settings(ctr, st.status == "running"),
        "Mounts": volumes_.inspect_mounts(cfg),
        "EffectiveCaps": proc.capabilities.effective,
        "IdMappings": {
            "UidMap": [f"{m.container_id}:{m.host_id}:{m.size}" for m in
                       cfg.spec.linux.uid_mappings],
            "GidMap": [f"{m.container_id}:{m.host_id}:{m.size}" for m in
                       cfg.spec.linux.gid_mappings],
        },
    })


def _network_settings(ctr: Container, running: bool) -> dict[str, Any]:
    """inspect's NetworkSettings; on a user network its Networks entry (docker's
    EndpointSettings), read from the network's leases."""
    cfg = ctr.config
    out = netviews.network_settings(cfg.net, listing.live_ports(ctr))
    opts = NetOptions.from_dict(cfg.net) if cfg.net else None
    if opts is not None and opts.mode == "network":
        from . import networks

        out["Networks"] = {}
        for name, aliases, ip in [(opts.network, opts.aliases, opts.ip),
                                  *((c.network, c.aliases, c.ip) for c in opts.connected)]:
            try:
                net = networks.get(name)
            except RlError:  # removed meanwhile, or its record damaged: nothing to show
                continue
            out["Networks"][net.name] = networks.endpoint_settings(net, cfg.id, aliases,
                                                                   running, ip)
    else:
        out["Networks"] = netviews.stack_networks(opts, running)
    return out


@dataclass
class LogRecord:
    stream: str
    text: str
    time: str


def _parse_log_line(line: bytes) -> LogRecord | None:
    # A damaged line (truncated, or not rl's shape) is skipped, not fatal.
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(rec, dict) or not all(isinstance(rec.get(k), str)
                                            for k in ("stream", "log", "time")):
        return None
    return LogRecord(rec["stream"], rec["log"], rec["time"])


def logs(ctr: Container, follow: bool = False, tail: int | None = None) -> Iterator[LogRecord]:
    try:
        # O_NONBLOCK: a FIFO in its place must not hang; only a regular file is a log.
        fd = os.open(ctr.log_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    except OSError as e:
        raise RlError(f"cannot read the log of container {ctr.label}: {e.strerror}", 1) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RlError(f"cannot read the log of container {ctr.label}: it is not a file", 1)
    f = open(fd, "rb")  # noqa: SIM115 - closed below, the generator may pause
    with f:
        lines = f.readlines()
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        partial = b""
        if lines and not lines[-1].endswith(b"\n"):
            partial = lines.pop()
        for line in lines:
            rec = _parse_log_line(line)
            if rec:
                yield rec
        if not follow:
            return
        while True:
            chunk = f.readline()
            if chunk:
                partial += chunk
                if partial.endswith(b"\n"):
                    rec = _parse_log_line(partial)
                    partial = b""
                    if rec:
                        yield rec
                continue
            if not ctr.dir.exists() or not ctr.running:
                # One last read: the supervisor writes the log before it exits.
                rest = f.read()
                for line in (partial + rest).splitlines():
                    rec = _parse_log_line(line)
                    if rec:
                        yield rec
                return
            time.sleep(0.05)


@dataclass(frozen=True)
class Top:
    """A running container's processes as ps shows them (docker's ContainerTop).

    lines: ps's header, then its lines for the container's processes, as ps
    laid them out (what `rl top` prints).
    """

    lines: list[str]

    @property
    def titles(self) -> list[str]:
        return self.lines[0].split() if self.lines else []

    @property
    def processes(self) -> list[list[str]]:
        """Each line's fields; the last column (the command) keeps its spaces, as dockerd's."""
        n = len(self.titles)
        return [[*f[:n - 1], " ".join(f[n - 1:])] if len(f) >= n else f
                for f in (line.split() for line in self.lines[1:])]


def top(ctr: Container, ps_args: list[str]) -> Top:
    if not ctr.running:
        raise NotRunning(f"container {ctr.name} is not running", 1)
    st = ctr.state()
    pids = pids_in_container(st.pid)
    args = ps_args or ["-ef"]
    proc = subprocess.run(["ps", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RlError(f"ps {' '.join(args)}: {proc.stderr.strip()}", 1)
    lines = proc.stdout.splitlines()
    if not lines:
        return Top([])
    header = lines[0].split()
    if "PID" not in header:
        raise RlError("couldn't find PID field in ps output", 1)
    col = header.index("PID")
    keep = [lines[0]]
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            keep.append(line)
    return Top(keep)


def pids_in_container(pid1: int) -> set[int]:
    """Host pids whose PID namespace is the container's (read from /proc/PID/ns/pid)."""
    try:
        target = os.readlink(f"/proc/{pid1}/ns/pid")
    except OSError:
        return set()
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == target:
                    out.add(int(entry))
            except OSError:
                continue
    return out


def rename(ctr: Container, new_name: str) -> None:
    if not valid_name(new_name):
        raise InvalidArgument(f'invalid container name "{new_name}"', 1)
    old = ctr.name
    store.rename(ctr, new_name)
    _event(Container(ctr.id), "rename", oldName="/" + old)


# Names faces use from here (options.py, specgen.py and image/imageconfig.py hold them).
__all__ = ["EXIT_RL", "CreateOptions", "ExecOptions", "ImageDefaults", "LimitFlags",
           "StopOptions", "parse_signal", "valid_name"]
