"""rl's library API: what the CLI (and later the REST API) are thin faces over.

Functions take typed options and container handles and raise RlError with
docker's exit status; none of them prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netstack import cli as netcli

from .. import paths
from ..defaults import DEFAULT_NETWORK
from ..errors import EXIT_RL, Conflict, InvalidArgument, NotRunning, RlError
from ..image.imageconfig import ImageDefaults  # moved: image data, filled by image.images
from ..runtime import capabilities
from ..runtime.resources import LimitFlags
from ..runtime.spec import Capabilities, Mount, Namespace, Process, Rlimit, Root, Spec, User
from . import client, store
from .store import Container, ContainerConfig

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class RunOptions:
    """docker run/create flags, as plain data."""

    rootfs: str
    command: list[str] = field(default_factory=list)
    name: str | None = None
    env: list[str] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    entrypoint: str | None = None
    hostname: str | None = None
    volumes: list[str] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    read_only: bool = False
    init: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    tty: bool = False
    interactive: bool = False
    rm: bool = False
    network: str = DEFAULT_NETWORK
    # netstack (issue 5): -p, -P, --expose, --dns, --add-host, --network-bandwidth
    publish: list[str] = field(default_factory=list)
    publish_all: bool = False
    expose: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    add_hosts: list[str] = field(default_factory=list)
    network_bandwidth: str | None = None
    ulimits: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    stop_signal: str | None = None
    stop_timeout: int | None = None
    labels: list[str] = field(default_factory=list)
    group_add: list[str] = field(default_factory=list)
    console_size: tuple[int, int] | None = None
    image: str | None = None  # an image reference instead of a rootfs (rootless.images)
    image_defaults: ImageDefaults | None = None
    # --memory, --cpus, ... (resources.py) and --cgroups=enabled|disabled (quotas.py)
    limits: LimitFlags = field(default_factory=LimitFlags)
    cgroups: str | None = None
    storage_driver: str | None = None  # overlay | fuse | fuse-overlayfs | vfs (rootfs.py)

    def __post_init__(self) -> None:
        # `rl run` sends its options to the fork server as JSON: rebuild the
        # nested flags from their plain form.
        if isinstance(self.limits, dict):
            self.limits = LimitFlags(**self.limits)


# -- names (a generated one is picked by store.create, under the registry lock) ---


def valid_name(name: str) -> bool:
    import re

    return re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name) is not None


# -- parsing flag values ---------------------------------------------------------


def parse_signal(value: str) -> int:
    v = value.strip().upper()
    if v.isdigit():
        num = int(v)
        if num in {s.value for s in signal.valid_signals() if isinstance(s, signal.Signals)} \
                or 1 <= num <= 64:
            return num
    else:
        name = v if v.startswith("SIG") else "SIG" + v
        sig = getattr(signal.Signals, name, None)
        if sig is not None:
            return int(sig)
    raise InvalidArgument(f"invalid signal: {value}")


def _env_list(opts: RunOptions) -> list[str]:
    env: list[str] = []
    for path in opts.env_files:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as e:
            raise RlError(f"open {path}: {e.strerror}") from e
        env += [ln for ln in (x.strip() for x in lines) if ln and not ln.startswith("#")]
    env += opts.env
    out: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid environment variable: {item}")
        if not sep:
            if key in os.environ:
                out[key] = os.environ[key]
            continue
        out[key] = value
    return [f"{k}={v}" for k, v in out.items()]


def _parse_volume(spec: str) -> Mount:
    parts = spec.split(":")
    if len(parts) < 2 or len(parts) > 3 or not parts[0] or not parts[1]:
        raise InvalidArgument(f"invalid volume specification: '{spec}'")
    src, dest = parts[0], parts[1]
    opts = parts[2].split(",") if len(parts) == 3 else []
    if not src.startswith("/") and not src.startswith("."):
        raise InvalidArgument(f"invalid volume specification: '{spec}': named volumes are not "
                              "supported; give an absolute host path")
    if not dest.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{spec}': the container path "
                              "must be absolute")
    dest = _mount_destination(dest, "bind", f"invalid volume specification: '{spec}': ")
    src = os.path.abspath(src)
    if not os.path.exists(src):
        raise InvalidArgument(f"bind source path does not exist: {src}")
    mount_opts = ["rbind"]
    for o in opts:
        if o in ("ro", "rw"):
            mount_opts.append(o)
        elif o in ("z", "Z", "nocopy", "consistent", "cached", "delegated"):
            continue
        elif o in ("rprivate", "private", "rslave", "slave"):
            mount_opts.append(o)
        else:
            raise InvalidArgument(f"invalid volume specification: '{spec}': unknown option {o}")
    return Mount(destination=dest, type="bind", source=src, options=mount_opts)


def _mount_destination(dest: str, kind: str, context: str) -> str:
    """dest in its canonical form; 125 where a user's mount may not go (mounts.py)."""
    from ..runtime.mounts import container_path, refused_destination

    dest = container_path(dest)
    why = refused_destination(dest)
    if why is not None:
        raise InvalidArgument(f'{context}invalid mount config for type "{kind}": {why}')
    return dest


def _parse_tmpfs(spec: str) -> Mount:
    dest, _, opts = spec.partition(":")
    if not dest.startswith("/"):
        raise InvalidArgument(f"invalid tmpfs specification: '{spec}': the path must be absolute")
    dest = _mount_destination(dest, "tmpfs", "")
    options = ["nosuid", "nodev", "noexec"]
    for o in (opts.split(",") if opts else []):
        if o in ("exec", "suid", "dev"):
            options.remove("no" + o)
        elif o:
            options.append(o)
    return Mount(destination=dest, type="tmpfs", source="tmpfs", options=options)


def _parse_ulimit(spec: str) -> Rlimit:
    name, sep, values = spec.partition("=")
    soft_s, _, hard_s = values.partition(":")
    try:
        soft = -1 if soft_s == "unlimited" else int(soft_s)
        hard = soft if not hard_s else (-1 if hard_s == "unlimited" else int(hard_s))
    except ValueError:
        raise InvalidArgument(f"invalid ulimit: {spec}") from None
    import resource

    rname = "RLIMIT_" + name.upper()
    if not sep or not hasattr(resource, rname):
        raise InvalidArgument(f"invalid ulimit: {spec}")
    inf = resource.RLIM_INFINITY
    soft, hard = (inf if soft < 0 else soft), (inf if hard < 0 else hard)
    if soft > hard:
        raise InvalidArgument(
            f"invalid ulimit: {spec}: soft limit {soft} exceeds hard limit {hard}")
    return Rlimit(type=rname, soft=soft, hard=hard)


def default_mounts(run_dir: Path, own_netns: bool, gid5_mapped: bool) -> list[Mount]:
    pts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if gid5_mapped:
        pts.append("gid=5")
    mounts = [
        Mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount("/dev/pts", "devpts", "devpts", pts),
        Mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777",
                                          "size=65536k"]),
        Mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        Mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
    ]
    for dev in ("null", "zero", "full", "random", "urandom", "tty"):
        mounts.append(Mount(f"/dev/{dev}", "bind", f"/dev/{dev}", ["bind", "nosuid", "noexec"]))
    for name in ("hostname", "hosts", "resolv.conf"):
        mounts.append(Mount(f"/etc/{name}", "bind", str(run_dir / name), ["bind"]))
    del own_netns  # sysfs falls back to a read-only bind of the host's without one
    return mounts


def _net_options(opts: RunOptions) -> Any:
    from netstack.options import from_flags

    image_exposed = opts.image_defaults.exposed if opts.image_defaults else []
    return from_flags(opts.network, opts.publish, opts.publish_all,
                      [*image_exposed, *opts.expose], opts.dns, opts.add_hosts,
                      opts.network_bandwidth)


def _net_namespaces(net: Any) -> list[Namespace]:
    """A new netns; or (--network container:NAME) the other container's net and user ns."""
    if net.mode != "container":
        return [Namespace("network")]
    try:
        other = store.lookup(net.container)
    except RlError as e:
        raise InvalidArgument(e.message) from None  # a run flag's error: 125, as docker run
    st = other.state()
    if st.status != "running":
        raise RlError(f"cannot join the network of container {net.container}: it is not "
                      "running")
    return [Namespace("network", path=f"/proc/{st.pid}/ns/net"),
            Namespace("user", path=f"/proc/{st.pid}/ns/user")]


def build_config(opts: RunOptions,
                 warn: Callable[[str], None] | None = None) -> ContainerConfig:
    """Validate every flag and build the container's record; nothing is written here.

    warn receives what the user should hear without it being an error.
    """
    from ..runtime import idmap
    from ..runtime.mounts import secure_join

    rootfs = os.path.abspath(opts.rootfs)
    if not os.path.isdir(rootfs):
        raise InvalidArgument(f"rootfs {opts.rootfs!r} does not exist or is not a directory")
    if opts.name is not None and not valid_name(opts.name):
        raise InvalidArgument(
            f'invalid container name "{opts.name}": only [a-zA-Z0-9][a-zA-Z0-9_.-] '
            "are allowed")
    net = _net_options(opts)
    img = opts.image_defaults
    entrypoint = shlex.split(opts.entrypoint) if opts.entrypoint else []
    command = list(opts.command)
    if img is not None and opts.entrypoint is None:
        # docker: the image's Entrypoint stays unless --entrypoint is given (which
        # also drops the image's Cmd); arguments replace the image's Cmd.
        entrypoint = list(img.entrypoint)
        command = command or list(img.cmd)
    args = entrypoint + command
    if not args:
        raise InvalidArgument("no command specified")
    cid = store.new_id()
    hostname = opts.hostname or cid[:12]
    if len(hostname) > 64:
        raise InvalidArgument(f"invalid hostname {hostname!r}: longer than 64 characters")
    caps = capabilities.resolve(opts.cap_add, opts.cap_drop)
    if opts.init:
        from ..runtime.container import init_binary

        init_binary()  # a missing catatonit is a 125 at create, not at start
    no_new_privs = False
    confined = True
    profile_file = None
    for so in opts.security_opt:
        if so in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"):
            no_new_privs = True
        elif so in ("no-new-privileges:false", "no-new-privileges=false"):
            no_new_privs = False
        elif so in ("seccomp=unconfined", "seccomp:unconfined"):
            confined = False
        elif so.startswith(("seccomp=", "seccomp:")):
            profile_file = os.path.abspath(so[len("seccomp="):])
        else:
            raise InvalidArgument(f"invalid --security-opt: {so}")
    stop_signal = "SIGTERM"
    wanted_signal = opts.stop_signal or (img.stop_signal if img else "")
    if wanted_signal:
        stop_signal = signal.Signals(parse_signal(wanted_signal)).name
    if opts.stop_timeout is not None and opts.stop_timeout < -1:
        raise InvalidArgument(f"invalid stop timeout: {opts.stop_timeout}")
    from . import quotas

    resources, cgroups_mode = quotas.build(opts.limits, opts.cgroups)

    env = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"]
    if opts.tty:
        env.append("TERM=xterm")
    user_env = _env_list(opts)
    if img is not None:
        mine = {e.partition("=")[0] for e in user_env}
        user_env = [e for e in img.env if e.partition("=")[0] not in mine] + user_env
    keys = {e.partition("=")[0] for e in user_env}
    env = [e for e in env if e.partition("=")[0] not in keys] + user_env
    extra_gids = []
    for g in opts.group_add:
        if not g.isdigit():
            raise InvalidArgument(f"--group-add {g}: only numeric group ids are supported")
        extra_gids.append(int(g))

    plan = idmap.plan()
    if plan.warning and warn is not None:
        warn(plan.warning)
    gid5 = idmap.mapped_size(plan.gid_mappings) > 5
    run_dir = paths.container_run_dir(cid)
    mounts = default_mounts(run_dir, net.mode != "host", gid5)
    user_mounts = [_parse_volume(v) for v in opts.volumes] + [_parse_tmpfs(t) for t in opts.tmpfs]
    mounts += user_mounts
    created = [m.destination for m in mounts
               if m.destination.startswith("/etc/")
               and not os.path.lexists(secure_join(rootfs, m.destination))]

    namespaces = [Namespace(t) for t in ("pid", "mount", "ipc", "uts", "cgroup", "user")]
    if net.mode != "host":
        joined = _net_namespaces(net)
        namespaces = [n for n in namespaces if n.type not in {j.type for j in joined}] + joined
    proc = Process(
        args=args,
        env=env,
        cwd=opts.workdir or (img.workdir if img else "") or "/",
        terminal=opts.tty,
        user=User(additional_gids=extra_gids),
        capabilities=Capabilities(bounding=caps, effective=caps, permitted=caps),
        rlimits=[_parse_ulimit(u) for u in opts.ulimits],
        no_new_privileges=no_new_privs,
    )
    if opts.workdir and not opts.workdir.startswith("/"):
        raise InvalidArgument(f"the working directory '{opts.workdir}' is invalid, it needs to be "
                              "an absolute path")
    if opts.console_size:
        from ..runtime.spec import ConsoleSize

        proc.console_size = ConsoleSize(height=opts.console_size[0], width=opts.console_size[1])
    spec = Spec(process=proc, root=Root(path=rootfs, readonly=opts.read_only),
                hostname=hostname, mounts=mounts)
    spec.linux.namespaces = namespaces
    if confined:
        from ..runtime import seccomp

        spec.linux.seccomp = (seccomp.load_profile(profile_file, caps) if profile_file
                              else seccomp.default_profile(caps))
    spec.linux.uid_mappings = plan.uid_mappings
    spec.linux.gid_mappings = plan.gid_mappings
    labels = {}
    for lab in opts.labels:
        k, _, v = lab.partition("=")
        labels[k] = v
    return ContainerConfig(
        id=cid,
        name=opts.name or "",  # "": store.create picks a free one
        created=time.time(),
        spec=spec,
        image=rootfs,
        rootfs=rootfs,
        user=opts.user or (img.user if img else "") or "",
        idmap_mode=plan.mode,
        tty=opts.tty,
        open_stdin=opts.interactive,
        auto_remove=opts.rm,
        init=opts.init,
        network=opts.network.partition(":")[0] if net.mode != "container" else opts.network,
        net=net.to_dict(),
        stop_signal=stop_signal,
        stop_timeout=10 if opts.stop_timeout is None else opts.stop_timeout,
        entrypoint=entrypoint,
        cmd=command,
        binds=list(opts.volumes),
        tmpfs={m.destination: ",".join(m.options) for m in user_mounts if m.type == "tmpfs"},
        cap_add=list(opts.cap_add),
        cap_drop=list(opts.cap_drop),
        created_mountpoints=created,
        labels=labels,
        resources=resources,
        cgroups=cgroups_mode,
    )


# -- lifecycle ---------------------------------------------------------------------


def create(opts: RunOptions, warn: Callable[[str], None] | None = None) -> Container:
    from . import quotas

    store.collect_garbage()
    quotas.collect_garbage()
    if opts.storage_driver is not None and opts.image is None:
        raise InvalidArgument(
            "--storage-driver applies to images; a --rootfs directory is used as it is")
    if opts.image is not None:
        # Deferred: `rl run --rootfs` never imports the image store (~15 ms per supervisor).
        from . import images

        return images.create_container(opts, lambda o: build_config(o, warn))
    return store.create(build_config(opts, warn))


def start(ctr: Container, attach: bool, stdin: bool) -> client.Session | None:
    """Start a created or exited container; returns the attached session, if any."""
    st = ctr.state()
    if st.status == "running":
        raise Conflict(f"container {ctr.name} is already running", 1)
    if st.status == "dead":
        raise RlError(f"cannot start container {ctr.label}: {_dead_why(ctr, st)}", 1)
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


def _alive(st: store.State) -> bool:
    """Whether a supervisor runs for the record: running, or dead with one still there."""
    return st.status == "running" or (st.status == "dead" and st.supervisor_pid != 0)


def _dead_why(ctr: Container, st: store.State) -> str:
    return (f"its record is damaged ({st.error.removeprefix('damaged record: ')}); "
            f"`rl rm -f {ctr.label}` removes it")


def kill(ctr: Container, signum: int = signal.SIGKILL) -> None:
    st = ctr.state()
    if not _alive(st):
        raise NotRunning(f"cannot kill container: {ctr.label}: container "
                         f"{ctr.id[:12]} is not running", 1)
    try:
        client.control(ctr, {"op": "kill", "signal": signum})
    except RlError:
        if st.status != "dead":
            raise
        raise RlError(f"cannot kill container {ctr.label}: {_dead_why(ctr, st)}", 1) from None


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
        raise RlError(f"cannot wait for container {ctr.label}: {_dead_why(ctr, st)}", 1)
    return st.exit_code


def stop(ctr: Container, timeout: int | None = None, signum: int | None = None) -> None:
    """The stop signal (given, or the container's, or SIGTERM), then SIGKILL after timeout s.

    A damaged record's supervisor is asked the same (SIGTERM and 10 s where
    its config is unreadable) and killed if it does not answer.
    """
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


def remove(ctr: Container, force: bool = False) -> None:
    """Delete the record; -f first kills whatever runs for it, whatever is left of it."""
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


# -- views -----------------------------------------------------------------------


def _iso(ts: float) -> str:
    if not ts:
        return "0001-01-01T00:00:00Z"
    import datetime

    dt = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def status_text(st: store.State, now: float | None = None) -> str:
    from .humanize import duration

    now = now or time.time()
    if st.status == "running":
        return f"Up {duration(now - st.started_at)}"
    if st.status == "exited":
        return f"Exited ({st.exit_code}) {duration(now - st.finished_at)} ago"
    if st.status == "dead":
        return "Dead"
    return "Created"


def _salvage(ctr: Container) -> tuple[str, str, float]:
    """A damaged record's image, command and creation time, as far as they can be read."""
    try:
        raw = ctr.raw_config
    except store.RecordError:
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


def _inspect_dead(ctr: Container, st: store.State) -> dict[str, Any]:
    """What docker's inspect says of a Dead container, from what is left of the record."""
    image, command, created = _salvage(ctr)
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


def _graph_driver(cfg: ContainerConfig) -> dict[str, Any]:
    """docker's GraphDriver: where the container's root comes from."""
    if cfg.storage_driver in ("", "vfs"):
        return {"Name": cfg.storage_driver or "none", "Data": {"Dir": cfg.rootfs}}
    return {"Name": cfg.storage_driver, "Data": {
        "LowerDir": ":".join(cfg.layers), "UpperDir": cfg.upper, "WorkDir": cfg.work,
        "MergedDir": cfg.rootfs}}


def inspect(ctr: Container) -> dict[str, Any]:
    from netstack.options import NetOptions

    from . import quotas

    st = ctr.state()
    if st.status == "dead":
        return _inspect_dead(ctr, st)
    cfg = ctr.config
    cfg_ports = NetOptions.from_dict(cfg.net).ports if cfg.net else []
    proc = cfg.spec.process
    binds = [m for m in cfg.spec.mounts if m.type == "bind" and not m.destination.startswith(
        ("/dev/", "/etc/"))]
    return {
        "Id": cfg.id,
        "Created": _iso(cfg.created),
        "Path": proc.args[0],
        "Args": proc.args[1:],
        "State": {
            "Status": st.status,
            "Running": st.status == "running",
            "Paused": False,
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
            **quotas.host_config(ctr),
        },
        "NetworkSettings": netcli.network_settings(ctr),
        "Mounts": [
            {"Type": "bind", "Source": m.source, "Destination": m.destination,
             "RW": "ro" not in m.options}
            for m in binds
        ],
        "EffectiveCaps": proc.capabilities.effective,
        "IdMappings": {
            "UidMap": [f"{m.container_id}:{m.host_id}:{m.size}" for m in
                       cfg.spec.linux.uid_mappings],
            "GidMap": [f"{m.container_id}:{m.host_id}:{m.size}" for m in
                       cfg.spec.linux.gid_mappings],
        },
    }


@dataclass
class PsEntry:
    id: str
    image: str
    command: str
    created: float
    status: str
    state: str
    names: str
    ports: str = ""


def ps(all_: bool = False) -> list[PsEntry]:
    from . import quotas

    store.collect_garbage()
    quotas.collect_garbage()
    out = []
    now = time.time()
    for c in store.all_containers():
        try:
            st = c.state()
            if st.status == "dead":
                # Without -a too while a supervisor still runs for it.
                if all_ or st.supervisor_pid:
                    image, command, created = _salvage(c)
                    out.append(PsEntry(id=c.id, image=image, command=command, created=created,
                                       status="Dead", state="dead", names=c.name))
                continue
            cfg = c.config
        except store.RecordError:
            continue  # removed meanwhile
        if not all_ and st.status != "running":
            continue
        out.append(PsEntry(
            id=c.id, image=cfg.image, command=shlex.join(cfg.spec.process.args),
            created=cfg.created, status=status_text(st, now), state=st.status, names=cfg.name,
            ports=netcli.ps_ports(c) if st.status == "running" else "",
        ))
    out.sort(key=lambda e: e.created, reverse=True)
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


def top(ctr: Container, ps_args: list[str]) -> str:
    if not ctr.running:
        raise NotRunning(f"container {ctr.name} is not running", 1)
    st = ctr.state()
    pids = pids_in_container(st.pid)
    import subprocess

    args = ps_args or ["-ef"]
    proc = subprocess.run(["ps", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RlError(f"ps {' '.join(args)}: {proc.stderr.strip()}", 1)
    lines = proc.stdout.splitlines()
    if not lines:
        return ""
    header = lines[0].split()
    if "PID" not in header:
        raise RlError("couldn't find PID field in ps output", 1)
    col = header.index("PID")
    keep = [lines[0]]
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            keep.append(line)
    return "\n".join(keep) + "\n"


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
    store.rename(ctr, new_name)


def running_or_error(ctr: Container) -> store.State:
    st = ctr.state()
    if st.status == "dead":
        raise RlError(f"container {ctr.label}: {_dead_why(ctr, st)}", 1)
    if st.status != "running":
        raise NotRunning(f"container {ctr.id[:12]} is not running", 1)
    return st


__all__ = ["EXIT_RL", "RunOptions"]
