"""CreateOptions to a container's record (its OCI spec and docker's fields), step by step.

Each step reads the options (and the image's defaults) and returns its part:
the command, the environment, security, resources, the network, mounts,
namespaces, the process. generate() runs them in the order the checks have
always run, so that of several bad values the same one is reported.
Nothing here reads the caller's environment or working directory, and
nothing is written: store.create writes the record.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from netstack.options import from_flags

from .. import paths
from ..defaults import DEFAULT_NETWORK
from ..errors import InvalidArgument, NotFound, RlError
from ..runtime import capabilities, idmap, seccomp
from ..runtime.container import init_binary
from ..runtime.mounts import COPY_UP, container_path, refused_destination, secure_join
from ..runtime.spec import (
    Capabilities,
    ConsoleSize,
    Mount,
    Namespace,
    Process,
    Rlimit,
    Root,
    Seccomp,
    Spec,
    User,
)
from . import hpc, quotas, restart, store
from .options import Bind, CreateOptions, rootfs_missing
from .store import ContainerConfig

if TYPE_CHECKING:
    from netstack.options import NetOptions

    from ..runtime.resources import Resources

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def valid_name(name: str) -> bool:
    return re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name) is not None


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


# -- the steps ----------------------------------------------------------------------


def root(opts: CreateOptions) -> str:
    if not os.path.isabs(opts.rootfs):
        raise InvalidArgument(f"rootfs {opts.rootfs!r} is not an absolute path")
    rootfs = os.path.normpath(opts.rootfs)
    if not os.path.isdir(rootfs):
        raise rootfs_missing(opts.rootfs)
    return rootfs


def command(opts: CreateOptions) -> tuple[list[str], list[str]]:
    """(entrypoint, cmd): docker's rules for --entrypoint, arguments and the image's."""
    img = opts.image_defaults
    entrypoint = shlex.split(opts.entrypoint) if opts.entrypoint else []
    cmd = list(opts.command)
    if img is not None and opts.entrypoint is None:
        # docker: the image's Entrypoint stays unless --entrypoint is given (which
        # also drops the image's Cmd); arguments replace the image's Cmd.
        entrypoint = list(img.entrypoint)
        cmd = cmd or list(img.cmd)
    if not entrypoint + cmd:
        raise InvalidArgument("no command specified")
    return entrypoint, cmd


def hostname(opts: CreateOptions, cid: str) -> str:
    name = opts.hostname or cid[:12]
    if len(name) > 64:
        raise InvalidArgument(f"invalid hostname {name!r}: longer than 64 characters")
    return name


@dataclass
class Security:
    no_new_privileges: bool = False
    confined: bool = True  # seccomp: rl's default profile, or profile_file's
    profile_file: str | None = None


def effective_caps(opts: CreateOptions) -> list[str]:
    """--cap-add/--cap-drop over docker's default set; --privileged: all (but the drops)."""
    adds = ["ALL", *opts.cap_add] if opts.privileged else opts.cap_add
    return capabilities.resolve(adds, opts.cap_drop)


def security(opts: CreateOptions) -> Security:
    """--security-opt: no-new-privileges and seccomp (its profile is read by seccomp_filter).
    --privileged is unconfined, unless a profile file is given with it."""
    sec = Security(confined=not opts.privileged)
    for so in opts.security_opt:
        if so in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"):
            sec.no_new_privileges = True
        elif so in ("no-new-privileges:false", "no-new-privileges=false"):
            sec.no_new_privileges = False
        elif so in ("seccomp=unconfined", "seccomp:unconfined"):
            sec.confined = False
        elif so.startswith(("seccomp=", "seccomp:")):
            path = so[len("seccomp="):]
            if not os.path.isabs(path):
                raise InvalidArgument(f"invalid --security-opt: {so}: the profile path must "
                                      "be absolute")
            sec.profile_file = os.path.normpath(path)
            sec.confined = True
        else:
            raise InvalidArgument(f"invalid --security-opt: {so}")
    return sec


def stop(opts: CreateOptions) -> tuple[str, int]:
    """(stop signal's name, stop timeout)."""
    img = opts.image_defaults
    name = "SIGTERM"
    wanted = opts.stop_signal or (img.stop_signal if img else "")
    if wanted:
        name = signal.Signals(parse_signal(wanted)).name
    if opts.stop_timeout is not None and opts.stop_timeout < -1:
        raise InvalidArgument(f"invalid stop timeout: {opts.stop_timeout}")
    return name, 10 if opts.stop_timeout is None else opts.stop_timeout


def resources(opts: CreateOptions) -> tuple[Resources, str]:
    """The cgroup limits and the cgroups mode (quotas.py)."""
    return quotas.build(opts.limits, opts.cgroups)


def environment(opts: CreateOptions, host: str) -> list[str]:
    """rl's defaults, under the image's Env, under the caller's asked for (--env-host,
    --http-proxy), under the options' (later wins, first keeps its place)."""
    img = opts.image_defaults
    env = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={host}"]
    if opts.tty:
        env.append("TERM=xterm")
    out: dict[str, str] = {}
    for item in opts.host_env + opts.env:
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid environment variable: {item}")
        if not sep:
            raise InvalidArgument(f"invalid environment variable: {item}: no value (a face "
                                  "resolves a bare name)")
        out[key] = value
    user_env = [f"{k}={v}" for k, v in out.items()]
    if img is not None:
        user_env = [e for e in img.env if e.partition("=")[0] not in out] + user_env
    keys = {e.partition("=")[0] for e in user_env}
    return [e for e in env if e.partition("=")[0] not in keys] + user_env


def group_ids(opts: CreateOptions) -> list[int]:
    gids: list[int] = []
    if "keep-groups" in opts.group_add:  # podman's: engine/hpc.py's annotation
        if len(opts.group_add) > 1:
            raise InvalidArgument("the '--group-add keep-groups' option is not allowed with "
                                  "other groups")
        return gids
    for g in opts.group_add:
        if not g.isdigit():
            raise InvalidArgument(f"--group-add {g}: only numeric group ids are supported")
        gids.append(int(g))
    return gids


def network(opts: CreateOptions) -> NetOptions:
    image_exposed = opts.image_defaults.exposed if opts.image_defaults else []
    user = _user_network(opts.network)
    extra = [_user_network(n) for n in opts.extra_networks]
    if extra and (user is None or None in extra):
        raise InvalidArgument("conflicting options: cannot attach both user-defined and "
                              "non-user-defined network-modes")
    if user is not None:
        return _on_network(opts, user, image_exposed, [n for n in extra if n is not None])
    if opts.network_aliases or opts.ip:
        raise InvalidArgument("--network-alias and --ip need a user-defined network "
                              "(--network NAME)")
    value = DEFAULT_NETWORK if opts.network == "bridge" else opts.network
    return from_flags(value, opts.publish, opts.publish_all,
                      [*image_exposed, *opts.expose], opts.dns, opts.add_hosts,
                      opts.network_bandwidth)


def _user_network(value: str) -> str | None:
    """The user-defined network --network names, None for one of rl's modes (docker's
    `bridge`, its default network, is rl's default stack); docker's "not found"."""
    from netstack.options import MODES

    if value == "bridge" or value.partition(":")[0] in MODES:
        return None
    from . import networks

    try:
        return networks.get(value).name
    except NotFound as e:
        raise NotFound(e.message, 125) from None


def _on_network(opts: CreateOptions, name: str, image_exposed: list[str],
                extra: list[str]) -> NetOptions:
    """A user network's options; -p and -P publish through rl's port driver, whose
    connector joins the container's network namespace as on rl's own stacks. Further
    --network NAMEs are connected networks (eth1...), as after `network connect`."""
    from netstack import ipam
    from netstack.options import (
        USER_NETWORK,
        Link,
        NetOptions,
        parse_add_host,
        parse_dns,
        parse_rate,
    )

    if len(set([name, *extra])) != len(extra) + 1:
        raise InvalidArgument("a network can be given only once")
    from netstack.ports import resolve

    if opts.privileged:
        raise InvalidArgument(f"--privileged for a container on network {name} is not "
                              "supported: it would hold the network host's user namespace's "
                              "capabilities")
    if "CAP_NET_ADMIN" in effective_caps(opts):
        # The container is in the network host's user namespace, which owns the host's
        # network namespace: rtnetlink's target netnsid would let it delete or re-plug
        # every network's bridges and veths (docs/decisions.md, "Networks").
        raise InvalidArgument(f"CAP_NET_ADMIN for a container on network {name} is not "
                              "supported yet")
    if "CAP_SYS_ADMIN" in effective_caps(opts):
        # With it the filter lets the container make user namespaces of its own, whose
        # network namespaces it owns: a NIC plugged later (network connect) could be moved
        # there, renamed and readdressed, out of reach of the network's rules.
        raise InvalidArgument(f"CAP_SYS_ADMIN for a container on network {name} is not "
                              "supported yet")
    if opts.pid == "host":
        # The host's PID namespace would show it the network host, a process of the same
        # user namespace and uid: ptrace, /proc/PID/environ and fds, its namespaces.
        raise InvalidArgument(f"--pid=host for a container on network {name} is not "
                              "supported: it would reach the network host's process")
    if opts.ip:
        ipam.parse_address(opts.ip, "IP")
    for alias in opts.network_aliases:
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", alias):
            raise InvalidArgument(f"invalid --network-alias {alias!r}")
    return NetOptions(mode=USER_NETWORK, network=name, aliases=list(opts.network_aliases),
                      ip=opts.ip or "", dns=[parse_dns(d) for d in opts.dns],
                      add_hosts=[parse_add_host(h) for h in opts.add_hosts],
                      ports=resolve(opts.publish, [*image_exposed, *opts.expose],
                                    opts.publish_all),
                      bandwidth_bit=parse_rate(opts.network_bandwidth)
                      if opts.network_bandwidth else 0,
                      connected=[Link(n, f"eth{i}") for i, n in enumerate(extra, 1)])


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


def _mount_destination(dest: str, kind: str, context: str) -> str:
    """dest in its canonical form; 125 where a user's mount may not go (mounts.py)."""
    dest = container_path(dest)
    why = refused_destination(dest)
    if why is not None:
        raise InvalidArgument(f'{context}invalid mount config for type "{kind}": {why}')
    return dest


def bind_mount(bind: Bind, anonymous: list[str] | None = None) -> Mount:
    """-v HOST:CTR[:OPTS], -v NAME:CTR[:OPTS] (a named volume, made if missing) or
    -v CTR (an anonymous volume; its name is appended to anonymous)."""
    spec = bind.text
    parts = spec.split(":")
    if len(parts) == 1 and spec.startswith("/"):
        parts = ["", spec]  # -v /path: an anonymous volume
    elif len(parts) < 2 or len(parts) > 3 or not parts[0] or not parts[1]:
        raise InvalidArgument(f"invalid volume specification: '{spec}'")
    src, dest = parts[0], parts[1]
    opts = parts[2].split(",") if len(parts) == 3 else []
    if not dest.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{spec}': the container path "
                              "must be absolute")
    dest = _mount_destination(dest, "bind", f"invalid volume specification: '{spec}': ")
    volume = None
    if not src.startswith("/") and not src.startswith("."):
        from . import volumes

        volume = volumes.create(src or None)
        if not src and anonymous is not None:
            anonymous.append(volume.name)
        src = volume.mountpoint
    else:
        src = bind.source if bind.source is not None else src
    if not os.path.isabs(src):
        raise InvalidArgument(f"invalid volume specification: '{spec}': the host path must "
                              "be absolute")
    src = os.path.normpath(src)
    if not os.path.exists(src):
        raise InvalidArgument(f"bind source path does not exist: {src}")
    mount_opts = ["rbind"]
    for o in opts:
        if o in ("ro", "rw"):
            mount_opts.append(o)
        elif o in ("z", "Z", "consistent", "cached", "delegated") or (
                o == "nocopy" and volume is None):
            continue
        elif o in ("rprivate", "private", "rslave", "slave"):
            mount_opts.append(o)
        elif o == "nocopy" and volume is not None:
            volume = None  # docker's: no copy of the image's files into it
        else:
            raise InvalidArgument(f"invalid volume specification: '{spec}': unknown option {o}")
    if volume is not None:
        mount_opts.append(COPY_UP)  # an empty volume first gets what the image has there
    return Mount(destination=dest, type="bind", source=src, options=mount_opts)


def tmpfs_mount(spec: str) -> Mount:
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


def mount_flags(texts: list[str], made: list[str]) -> list[Mount]:
    from .mountopt import to_mount

    return [to_mount(t, made) for t in texts]


def inherited_mounts(opts: CreateOptions, own: list[Mount], made: list[str]) -> list[Mount]:
    from . import volumes

    taken = {m.destination for m in own}
    img = opts.image_defaults
    declared = img.volumes if img and opts.image_volumes else []
    return (volumes.volumes_from(opts.volumes_from, taken)
            + volumes.image_volumes(declared, taken, made))


def user_mounts(opts: CreateOptions, anonymous: list[str] | None = None) -> list[Mount]:
    """-v, then --tmpfs; anonymous volumes' names made for -v PATH go to anonymous."""
    made: list[str] = []
    try:
        tmpfs = [tmpfs_mount(t) for t in opts.tmpfs]
        binds = [bind_mount(v, made) for v in opts.volumes]
        binds += mount_flags(opts.mounts, made)  # --mount (engine/mountopt.py)
        binds += inherited_mounts(opts, binds + tmpfs, made)  # --volumes-from, image VOLUME
    except BaseException:
        if made:  # a later -v was wrong: the anonymous volumes made for it go
            from . import volumes

            volumes.remove_anonymous(made)
        raise
    if anonymous is not None:
        anonymous += made
    return binds + tmpfs


def namespaces(net: NetOptions) -> list[Namespace]:
    """rl's namespaces; the network's own, or (--network container:NAME) the other
    container's net and user ns; none of its own with --network host."""
    out = [Namespace(t) for t in ("pid", "mount", "ipc", "uts", "cgroup", "user")]
    if net.mode == "host":
        return out
    joined = _net_namespaces(net)
    return [n for n in out if n.type not in {j.type for j in joined}] + joined


def _net_namespaces(net: NetOptions) -> list[Namespace]:
    if net.mode == "network":
        # The network host's user namespace (nethost.py); the supervisor names the host
        # of the moment at each start.
        from netstack import nethost

        return [Namespace("network"), Namespace("user", path=f"/proc/{nethost.ensure()}/ns/user")]
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


def parse_ulimit(spec: str) -> Rlimit:
    name, sep, values = spec.partition("=")
    soft_s, _, hard_s = values.partition(":")
    try:
        soft = -1 if soft_s == "unlimited" else int(soft_s)
        hard = soft if not hard_s else (-1 if hard_s == "unlimited" else int(hard_s))
    except ValueError:
        raise InvalidArgument(f"invalid ulimit: {spec}") from None
    rname = "RLIMIT_" + name.upper()
    if not sep or not hasattr(resource, rname):
        raise InvalidArgument(f"invalid ulimit: {spec}")
    inf = resource.RLIM_INFINITY
    soft, hard = (inf if soft < 0 else soft), (inf if hard < 0 else hard)
    if soft > hard:
        raise InvalidArgument(
            f"invalid ulimit: {spec}: soft limit {soft} exceeds hard limit {hard}")
    return Rlimit(type=rname, soft=soft, hard=hard)


def process(opts: CreateOptions, args: list[str], env: list[str], caps: list[str],
            gids: list[int], sec: Security) -> Process:
    img = opts.image_defaults
    proc = Process(
        args=args,
        env=env,
        cwd=opts.workdir or (img.workdir if img else "") or "/",
        terminal=opts.tty,
        user=User(additional_gids=gids),
        capabilities=Capabilities(bounding=caps, effective=caps, permitted=caps),
        rlimits=[parse_ulimit(u) for u in opts.ulimits],
        no_new_privileges=sec.no_new_privileges,
    )
    if opts.workdir and not opts.workdir.startswith("/"):
        raise InvalidArgument(f"the working directory '{opts.workdir}' is invalid, it needs to be "
                              "an absolute path")
    if opts.console_size:
        proc.console_size = ConsoleSize(height=opts.console_size[0], width=opts.console_size[1])
    return proc


def seccomp_filter(sec: Security, caps: list[str]) -> Seccomp | None:
    """The seccomp profile (rl's default, or the file's), None when unconfined."""
    if not sec.confined:
        return None
    if sec.profile_file:
        return seccomp.load_profile(sec.profile_file, caps)
    return seccomp.default_profile(caps)


def labels(opts: CreateOptions) -> dict[str, str]:
    out = {}
    for lab in opts.labels:
        k, _, v = lab.partition("=")
        out[k] = v
    return out


# -- all of them ----------------------------------------------------------------------


def generate(opts: CreateOptions, warn: Callable[[str], None] | None = None) -> ContainerConfig:
    """Validate every option and build the container's record; nothing is written here.

    warn receives what the user should hear without it being an error.
    """
    rootfs = root(opts)
    if opts.name is not None and not valid_name(opts.name):
        raise InvalidArgument(
            f'invalid container name "{opts.name}": only [a-zA-Z0-9][a-zA-Z0-9_.-] '
            "are allowed")
    net = network(opts)
    entrypoint, cmd = command(opts)
    cid = store.new_id()
    host = hostname(opts, cid)
    caps = effective_caps(opts)
    if opts.init:
        init_binary()  # a missing catatonit is a 125 at create, not at start
    sec = security(opts)
    stop_signal, stop_timeout = stop(opts)
    limits, cgroups_mode = resources(opts)
    env = environment(opts, host)
    gids = group_ids(opts)

    plan = idmap.plan()
    plan = hpc.userns_plan(opts, plan)  # --userns=keep-id
    if plan.warning and warn is not None:
        warn(plan.warning)
    gid5 = idmap.mapped_size(plan.gid_mappings) > 5
    mounts = default_mounts(paths.container_run_dir(cid), net.mode != "host", gid5)
    spaces = namespaces(net)
    proc = process(opts, entrypoint + cmd, env, caps, gids, sec)
    filt = seccomp_filter(sec, caps)
    anonymous: list[str] = []  # made last: nothing after them fails on the user's input
    mine = user_mounts(opts, anonymous)
    mounts += mine
    created = [m.destination for m in mounts
               if m.destination.startswith("/etc/")
               and not os.path.lexists(secure_join(rootfs, m.destination))]

    spec = Spec(process=proc, root=Root(path=rootfs, readonly=opts.read_only),
                hostname=host, mounts=mounts)
    spec.linux.namespaces = spaces
    spec.linux.seccomp = filt
    spec.linux.uid_mappings = plan.uid_mappings
    spec.linux.gid_mappings = plan.gid_mappings
    hpc.adjust(opts, spec, paths.container_run_dir(cid), warn)  # issue 18's flags
    created += hpc.created_mountpoints(spec, rootfs, created)
    img = opts.image_defaults
    return ContainerConfig(
        id=cid,
        name=opts.name or "",  # "": store.create picks a free one
        created=time.time(),
        spec=spec,
        image=rootfs,
        rootfs=rootfs,
        user=opts.user or hpc.keep_id_user(opts) or (img.user if img else "") or "",
        idmap_mode=plan.mode,
        tty=opts.tty,
        open_stdin=opts.interactive,
        auto_remove=opts.rm,
        init=opts.init,
        privileged=opts.privileged,
        network=opts.network.partition(":")[0] if net.mode != "container" else opts.network,
        net=net.to_dict(),
        stop_signal=stop_signal,
        stop_timeout=stop_timeout,
        entrypoint=entrypoint,
        cmd=cmd,
        binds=[v.text for v in opts.volumes],
        anonymous_volumes=anonymous,
        tmpfs={m.destination: ",".join(m.options) for m in mine if m.type == "tmpfs"},
        cap_add=list(opts.cap_add),
        cap_drop=list(opts.cap_drop),
        created_mountpoints=created,
        labels=labels(opts),
        resources=limits,
        cgroups=cgroups_mode,
        **restart.create_fields(opts),
    )
