"""HPC and workstation mode (issue 18): --userns=keep-id, --uidmap/--gidmap, --device,
--ipc/--pid/--uts, --shm-size, --group-add keep-groups and --tz, as steps
specgen.generate calls on its way (one line each).

keep-id maps the user's own uid and gid to themselves inside, the subordinate range
filling the rest of the container's ids as podman builds it (0..U-1 and U+1.. from the
range), or, in single-id mode, the one id alone. The container's /etc/passwd and
/etc/group get an entry for the user where the root has none: they are written at each
start into the supervisor's run directory (write_files) and bound over the root's, never
into the root itself. Over an image, keep-id's container reads a copy of the layers
owned for its map (image_shift, made once per mapping by image/rootfs.py).
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgument
from ..image.rootfs import Shift
from ..runtime import idmap
from ..runtime.mounts import container_path, refused_destination, secure_join
from ..runtime.process import KEEP_GROUPS
from ..runtime.resources import parse_size
from ..runtime.spec import IDMapping, Mount, Spec
from .options import CreateOptions

PASSWD_KEY = "run.rl.keep-id.passwd"  # spec annotations: the lines write_files adds
GROUP_KEY = "run.rl.keep-id.group"
TZ_KEY = "run.rl.timezone"  # --tz as given, for inspect's Config.Timezone
ZONEINFO = "/usr/share/zoneinfo"
DEFAULT_SHM = 64 * 1024 * 1024  # docker's default /dev/shm size


@dataclass
class KeepId:
    uid: int  # the container's ids for the user (its own unless uid=/gid= say otherwise)
    gid: int


# -- --userns ------------------------------------------------------------------------


def parse_userns(opts: CreateOptions) -> KeepId | None:
    """--userns: keep-id[:uid=N,gid=N] or nothing; the rest refused with the reason."""
    explicit = opts.uidmap or opts.gidmap or opts.subuidname or opts.subgidname
    if explicit and opts.userns:
        raise InvalidArgument("--userns and --uidmap/--gidmap/--subuidname/--subgidname "
                              "cannot be used together")
    if opts.uidmap and opts.subuidname:
        raise InvalidArgument("--uidmap and --subuidname cannot be used together")
    if opts.gidmap and opts.subgidname:
        raise InvalidArgument("--gidmap and --subgidname cannot be used together")
    value = opts.userns
    if value is None or value in ("", "private"):
        return None
    if value == "host":
        raise InvalidArgument("--userns=host: rl is rootless, so a container always has a "
                              "user namespace of its own (the host's would leave it no "
                              "capabilities); --userns=keep-id runs it as you")
    mode, _, rest = value.partition(":")
    if mode != "keep-id":
        raise InvalidArgument(f"unrecognized namespace mode {value} passed (rl knows "
                              "keep-id[:uid=N,gid=N])")
    keep = KeepId(os.getuid(), os.getgid())
    for item in rest.split(",") if rest else []:
        key, sep, num = item.partition("=")
        if key not in ("uid", "gid") or not sep or not num.isdigit() or int(num) >= 2**32 - 1:
            raise InvalidArgument(f"invalid keep-id option {item!r} in --userns={value} "
                                  "(expected uid=N or gid=N)")
        setattr(keep, key, int(num))
    return keep


def _own_map_only(opts: CreateOptions, flag: str, images: bool = False) -> None:
    """A map of the container's own: refused where the container would not get it (an
    image's layers are owned for the default map, unless images: keep-id shifts a copy;
    another container's user namespace)."""
    if opts.image is not None and not images:
        raise InvalidArgument(f"{flag} needs --rootfs for now: an image's files would need "
                              "a copy owned by the shifted ids")
    net = opts.network.partition(":")
    from netstack.options import MODES

    if net[0] == "container" or (opts.network != "bridge" and net[0] not in MODES):
        raise InvalidArgument(f"{flag} cannot be used with --network {opts.network}: the "
                              "container would join another's user namespace")


def userns_plan(opts: CreateOptions, plan: idmap.IdMapPlan) -> idmap.IdMapPlan:
    """The id maps: plan as it is, keep-id's, or --uidmap/--gidmap's."""
    keep = parse_userns(opts)
    if keep is None:
        return explicit_plan(opts, plan)
    _own_map_only(opts, "--userns=keep-id", images=True)
    if plan.mode == "single":
        uids = [IDMapping(keep.uid, os.getuid(), 1)]
        gids = [IDMapping(keep.gid, os.getgid(), 1)]
    else:
        uids = keep_id_map(keep.uid, os.getuid(), idmap.subordinate_ranges("/etc/subuid"))
        gids = keep_id_map(keep.gid, os.getgid(), idmap.subordinate_ranges("/etc/subgid"))
    return idmap.IdMapPlan(plan.mode, plan.reason + "; keep-id", uids, gids,
                           plan.newuidmap, plan.newgidmap, plan.warning)


def keep_id_map(inside: int, host: int, ranges: list[tuple[int, int]]) -> list[IDMapping]:
    """inside -> host; the subordinate ranges, in order, fill 0..inside-1 and then the
    ids after inside (podman's keep-id layout)."""
    total = sum(count for _, count in ranges)
    if inside > total:
        raise InvalidArgument(f"keep-id: uid/gid {inside} is outside the container's id range "
                              f"(0-{total}: your subordinate range holds {total} ids)")
    maps: list[IDMapping] = []
    nxt = 0
    placed = False
    for start, count in ranges:
        while count:
            if not placed and nxt == inside:
                maps.append(IDMapping(inside, host, 1))
                nxt += 1
                placed = True
            take = count if placed else min(count, inside - nxt)
            maps.append(IDMapping(nxt, start, take))
            nxt, start, count = nxt + take, start + take, count - take
    if not placed:
        maps.append(IDMapping(inside, host, 1))
    return maps


def image_shift(opts: CreateOptions) -> Shift | None:
    """keep-id over an image: the owners its layers' copy needs, so that the image's ids
    stay themselves inside (image root is root, not you). In the store an image id N
    is the default map's container N, which keep-id's map puts on another host id: N
    moves to the default map's id for keep-id's host id of N. None without keep-id,
    and in single-id mode (one id only: every file of the image is already yours)."""
    plan = idmap.plan()
    keep = parse_userns(opts)
    if keep is None or plan.mode == "single":
        return None
    keep_plan = userns_plan(opts, plan)
    return Shift(_composed(keep_plan.uid_mappings, plan.uid_mappings),
                 _composed(keep_plan.gid_mappings, plan.gid_mappings), MOUNT_POINTS)


# specgen.default_mounts' and keep-id's destinations (a point missing here costs a fork
# per container, nothing else)
MOUNT_POINTS = [("/proc", True), ("/dev", True), ("/sys", True), ("/etc/hosts", False),
                ("/etc/hostname", False), ("/etc/resolv.conf", False), ("/etc/passwd", False),
                ("/etc/group", False)]


def _composed(wanted: list[IDMapping], store: list[IDMapping]) -> list[tuple[int, int, int]]:
    """(container id, store id, count): wanted's host ids in store's container ids."""
    out = []
    for m in wanted:
        for s in store:
            lo = max(m.host_id, s.host_id)
            hi = min(m.host_id + m.size, s.host_id + s.size)
            if lo < hi:
                out.append((m.container_id + lo - m.host_id, s.container_id + lo - s.host_id,
                            hi - lo))
    return [seg for seg in sorted(out) if seg[0] != seg[1]]


def _mapped(ident: int, maps: list[IDMapping]) -> bool:
    return any(m.container_id <= ident < m.container_id + m.size for m in maps)


def keep_id_user(opts: CreateOptions) -> str | None:
    """The default user of a keep-id container (-u still wins): uid:gid."""
    keep = parse_userns(opts)
    return None if keep is None else f"{keep.uid}:{keep.gid}"


def _entries(keep: KeepId) -> tuple[str, str]:
    """The passwd and group lines of the user, from the host's database (podman's)."""
    try:
        pw = pwd.getpwuid(os.getuid())
        name, gecos, home = pw.pw_name, pw.pw_gecos, pw.pw_dir
    except KeyError:
        name, gecos, home = f"user{os.getuid()}", "", "/"
    try:
        import grp

        group = grp.getgrgid(os.getgid()).gr_name
    except KeyError:
        group = name
    return (f"{name}:*:{keep.uid}:{keep.gid}:{gecos}:{home}:/bin/sh",
            f"{group}:x:{keep.gid}:{name}")


# -- --uidmap / --gidmap ---------------------------------------------------------------


def parse_idmap(flag: str, values: list[str]) -> list[IDMapping]:
    """CONTAINER:INTERMEDIATE:SIZE, several per flag with commas (podman's string slice);
    the container ranges and the intermediate ranges may not overlap among themselves."""
    out: list[IDMapping] = []
    for value in values:
        for item in value.split(","):
            parts = item.split(":")
            if len(parts) != 3 or not all(p.isdigit() for p in parts):
                raise InvalidArgument(f"{flag} {item!r}: expected CONTAINER:HOST:SIZE, three "
                                      "numbers")
            c, h, n = (int(p) for p in parts)
            if n == 0 or c + n > 2**32 - 1 or h + n > 2**32 - 1:
                raise InvalidArgument(f"{flag} {item!r}: the size must be at least 1 and the "
                                      "range within 0-4294967294")
            out.append(IDMapping(c, h, n))
    for i, a in enumerate(out):
        for b in out[:i]:
            for side, x, y in (("container", a.container_id, b.container_id),
                               ("host", a.host_id, b.host_id)):
                if x < y + b.size and y < x + a.size:
                    raise InvalidArgument(
                        f"{flag}: {_text(b)} and {_text(a)} overlap in their {side} ids")
    return out


def _text(m: IDMapping) -> str:
    return f"{m.container_id}:{m.host_id}:{m.size}"


def through(flag: str, wanted: list[IDMapping], inner: list[IDMapping]) -> list[IDMapping]:
    """wanted's intermediate ids (rootless podman's: 0 is you, 1.. your subordinate range
    in /etc/subuid's order, rl's default map) as host ids, split where the range is."""
    total = idmap.mapped_size(inner)
    out: list[IDMapping] = []
    for m in wanted:
        if m.host_id + m.size > total:
            raise InvalidArgument(
                f"{flag} {_text(m)}: host ids {m.host_id}-{m.host_id + m.size - 1} are outside "
                f"yours (0-{total - 1}: 0 is you, 1.. your subordinate range)")
        c, i, n = m.container_id, m.host_id, m.size
        for seg in sorted(inner, key=lambda s: s.container_id):
            lo, hi = max(i, seg.container_id), min(i + n, seg.container_id + seg.size)
            if lo < hi:
                out.append(IDMapping(c + lo - i, seg.host_id + lo - seg.container_id, hi - lo))
    return out


def explicit_plan(opts: CreateOptions, plan: idmap.IdMapPlan) -> idmap.IdMapPlan:
    """--uidmap/--gidmap (podman's: the one given alone serves the other ids too), or
    plan as it is. --subuidname/--subgidname are refused: see _needs_you."""
    if opts.subuidname or opts.subgidname:
        flag = "--subuidname" if opts.subuidname else "--subgidname"
        raise InvalidArgument(f"{flag} is not supported: a named range leaves your own id "
                              "out of the container, and rl makes a container's mounts as "
                              "you (use --uidmap/--gidmap over your own range)")
    if not (opts.uidmap or opts.gidmap):
        return plan
    _own_map_only(opts, "--uidmap/--gidmap")
    uids = through("--uidmap", parse_idmap("--uidmap", opts.uidmap or opts.gidmap),
                   plan.uid_mappings)
    gids = through("--gidmap", parse_idmap("--gidmap", opts.gidmap or opts.uidmap),
                   plan.gid_mappings)
    _needs_you("--uidmap" if opts.uidmap else "--gidmap", uids, os.getuid(), "uid")
    _needs_you("--gidmap" if opts.gidmap else "--uidmap", gids, os.getgid(), "gid")
    user, _, group = (opts.user or "0").partition(":")
    for kind, ident, maps in (("uid", user, uids), ("gid", group or ("0" if not opts.user
                                                                    else ""), gids)):
        if ident.isdigit() and not _mapped(int(ident), maps):
            raise InvalidArgument(f"--uidmap/--gidmap: the container's {kind} {ident} (its "
                                  "user's) is not mapped; map it or give -u a mapped id")
    return idmap.IdMapPlan(plan.mode, plan.reason + "; --uidmap/--gidmap", uids, gids,
                           plan.newuidmap, plan.newgidmap, plan.warning)


def _needs_you(flag: str, maps: list[IDMapping], own: int, kind: str) -> None:
    """The map must hold the user's own id (intermediate 0) somewhere: rl's runtime makes
    the container's mounts as the user, from the user's private directories (the run dir
    in $XDG_RUNTIME_DIR, the root), which no subordinate id may enter."""
    if not any(m.host_id <= own < m.host_id + m.size for m in maps):
        raise InvalidArgument(f"{flag} must map your own {kind} (host 0) into the container, "
                              f"e.g. {flag} 0:1:1000 {flag} 1000:0:1: rl makes the "
                              "container's mounts as you")


# -- after the spec is made ------------------------------------------------------------


def adjust(opts: CreateOptions, spec: Spec, run_dir: Path,
           warn: Callable[[str], None] | None = None) -> None:
    """keep-id's files, --device, --ipc/--pid/--uts and --shm-size, on the spec."""
    keep = parse_userns(opts)
    if keep is not None:
        passwd, group = _entries(keep)
        spec.annotations[PASSWD_KEY] = passwd
        spec.annotations[GROUP_KEY] = group
        # Next to rl's own /etc files: a user's -v over /etc/passwd still wins.
        at = next((i + 1 for i, m in enumerate(spec.mounts)
                   if m.destination == "/etc/resolv.conf"), len(spec.mounts))
        spec.mounts[at:at] = [Mount(f"/etc/{name}", "bind", str(run_dir / name), ["bind"])
                              for name in ("passwd", "group")]
    if not _mapped(5, spec.linux.gid_mappings):  # single-id keep-id: no tty group inside
        for m in spec.mounts:
            if m.destination == "/dev/pts" and "gid=5" in m.options:
                m.options.remove("gid=5")
    from . import cdi

    spec.mounts += [device_mount(d) for d in opts.devices if not cdi.is_cdi_name(d)]
    named = [d for d in opts.devices if cdi.is_cdi_name(d)]
    if named:  # CDI: vendor.com/class=name (engine/cdi.py)
        cdi.apply(cdi.resolve(named, warn), spec, device_mount)
    if "keep-groups" in opts.group_add:
        spec.annotations[KEEP_GROUPS] = "1"
    privileged(opts, spec)
    if opts.tz:
        spec.mounts.append(timezone(opts.tz, spec.root.path))
        spec.annotations[TZ_KEY] = opts.tz
    _ipc(opts, spec, warn)
    _pid(opts, spec)
    _uts(opts, spec)
    spec.linux.sysctl.update(sysctls(opts))


# docker's namespaced sysctls: the IPC namespace's, and (with a network namespace of the
# container's own) every net.* one
_IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}


def sysctls(opts: CreateOptions) -> dict[str, str]:
    """--sysctl KEY=VALUE, refused as docker refuses what is not namespaced (a value
    written there would be the whole host's, which the user's root cannot write)."""
    from ..runtime.sysctl import path_of

    out: dict[str, str] = {}
    for text in opts.sysctls:
        key, eq, value = text.partition("=")
        key = key.strip()
        if not eq or not key:
            raise InvalidArgument(f"invalid argument {text!r} for \"--sysctl\" flag: sysctl "
                                  f"{text!r} is not in the KEY=VALUE format")
        ipc = key in _IPC_SYSCTLS or key.startswith("fs.mqueue.")
        if not (ipc or key.startswith("net.")):
            raise InvalidArgument(f"sysctl {key!r} is not allowed: only namespaced ones are "
                                  "(net.*, fs.mqueue.*, kernel.msg*/sem/shm*); the rest would "
                                  "be the host's")
        if ipc and (opts.ipc or "private") == "host":
            raise InvalidArgument(f"sysctl {key!r} is not allowed with --ipc=host: it would "
                                  "be the host's IPC namespace's")
        if key.startswith("net.") and (opts.network == "host"
                                       or opts.network.startswith("container:")):
            raise InvalidArgument(f"sysctl {key!r} is not allowed with --network "
                                  f"{opts.network}: the network namespace is not the "
                                  "container's own")
        path_of(key)  # a key that names no file under /proc/sys
        out[key] = value
    return out


# Never what rl's /dev already gives or mounts of its own, nor the host's terminals and
# what sees or drives the user's session: keyboards and mice (input, uinput), the screen
# (fb), the consoles' memory (vcs); every tty driver's numbers are refused besides
_NOT_PRIVILEGED = ("tty", "pts", "ptmx", "console", "vcs", "null", "zero", "full", "random",
                   "urandom", "shm", "mqueue", "hugepages", "fd", "stdin", "stdout", "stderr",
                   "core", "log", "initctl", "input", "uinput", "fb", "hvc", "xvc", "pty")


# Char majors never bound: BSD and Unix98 ptys (2, 3, 128-143), ttys and consoles (4, 5),
# the consoles' memory (7), input devices (13), framebuffers (29); with every tty
# driver's the kernel lists
_SESSION_MAJORS = {2, 3, 4, 5, 7, 13, 29, *range(128, 144)}


def _refused_majors(drivers: str = "/proc/tty/drivers") -> set[int]:
    """Terminals whatever their node's name or directory (hvc0, 3270/tty1, rfcomm0...):
    every major a tty driver has, whole."""
    out = set(_SESSION_MAJORS)
    try:
        lines = Path(drivers).read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[2].isdigit():
            out.add(int(fields[2]))
    return out


def privileged_devices(root: str = "/dev") -> list[Mount]:
    """--privileged's devices: the host's device nodes the user may open (read and write),
    at the same paths, one level of subdirectories deep (/dev/net/tun, /dev/dri/*)."""
    out: list[Mount] = []
    refused = _refused_majors()

    def scan(directory: str, depth: int) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if e.name.startswith(_NOT_PRIVILEGED):
                continue
            if stat.S_ISDIR(st.st_mode) and depth == 0:
                scan(e.path, 1)
            elif bindable(e.name, st.st_mode, st.st_rdev, refused) and os.access(
                    e.path, os.R_OK | os.W_OK):
                out.append(Mount(destination=e.path, type="bind", source=e.path,
                                 options=["bind", "nosuid", "noexec"]))

    scan(root, 0)
    return out


def bindable(name: str, mode: int, rdev: int, refused: set[int]) -> bool:
    """Whether --privileged binds a /dev entry: a device node, no terminal or session
    device by its name or (a char device) by its major."""
    if name.startswith(_NOT_PRIVILEGED):
        return False
    if stat.S_ISCHR(mode):
        return os.major(rdev) not in refused
    return stat.S_ISBLK(mode)


def privileged(opts: CreateOptions, spec: Spec) -> None:
    """--privileged, rootless: every capability (its cap-drops apart), no seccomp filter,
    no masked or read-only /proc paths, the host's devices the user may open. All of it
    within the user namespace: the user's own rights on the host stay the limit."""
    if not opts.privileged:
        return
    spec.linux.masked_paths = []
    spec.linux.readonly_paths = []
    taken = {m.destination for m in spec.mounts}
    spec.mounts += [m for m in privileged_devices() if m.destination not in taken]


def timezone(tz: str, rootfs: str, zoneinfo: str = ZONEINFO, local: str = "/etc/localtime"
             ) -> Mount:
    """--tz: the host's zone file bound read-only at /etc/localtime (podman's: local is
    the host's /etc/localtime, a name the host's zoneinfo file of that name). Only a TZif
    file below zoneinfo is taken: the flag cannot name any other host file. The root's
    /etc/localtime may be a symlink (Debian's): the bind lands on its target in the root,
    which must exist (else the runtime would make its directories in the root)."""
    if tz == "local":
        path = os.path.realpath(local)
        what = f"--tz=local: the host's {local}"
    else:
        parts = tz.split("/")
        if any(p in ("", ".", "..") or not all(c.isalnum() or c in "_+-" for c in p)
               for p in parts):
            raise InvalidArgument(f"finding timezone: unknown time zone {tz}")
        path = os.path.join(zoneinfo, *parts)
        what = f"finding timezone: unknown time zone {tz}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise InvalidArgument(what if tz != "local" else f"{what} does not exist") from None
    try:
        ok = stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, 4) == b"TZif"
    finally:
        os.close(fd)
    if not ok:
        raise InvalidArgument(what if tz != "local" else f"{what} is not a zone file")
    inside = os.path.join(rootfs, "etc/localtime")
    if os.path.islink(inside) and not os.path.isfile(secure_join(rootfs, "/etc/localtime")):
        raise InvalidArgument(f"--tz: the root's /etc/localtime is a symlink to "
                              f"{os.readlink(inside)}, which it does not have")
    return Mount("/etc/localtime", "bind", path, ["bind", "ro", "nosuid", "nodev", "noexec"])


def created_mountpoints(spec: Spec, rootfs: str, known: list[str]) -> list[str]:
    """keep-id's and --tz's /etc files the root lacks (the runtime makes empty ones to
    bind on; the supervisor's cleanup removes them), past those already known."""
    wanted = [f"/etc/{name}" for name in ("passwd", "group") if PASSWD_KEY in spec.annotations]
    wanted += ["/etc/localtime"] if TZ_KEY in spec.annotations else []
    return [p for p in wanted
            if p not in known and not os.path.lexists(secure_join(rootfs, p))]


def device_mount(text: str) -> Mount:
    """--device HOST[:CTR][:PERMS]: a bind of the host's node (rootless cannot mknod)."""
    parts = text.split(":")
    perms = "rwm"
    if len(parts) >= 2 and _is_perms(parts[-1]) and not parts[-1].startswith("/"):
        perms = parts.pop()
    if len(parts) > 2 or not parts[0]:
        raise InvalidArgument(f"invalid device specification: {text}")
    host = parts[0]
    inside = parts[1] if len(parts) == 2 and parts[1] else host
    if not os.path.isabs(host) or not os.path.isabs(inside):
        raise InvalidArgument(f"bad format for path: {text}")
    try:
        st = os.stat(host)
    except OSError as e:
        raise InvalidArgument(f'error gathering device information while adding custom '
                              f'device "{host}": {os.strerror(e.errno or 0).lower()}') from None
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        what = "a directory (rl binds single device nodes)" if stat.S_ISDIR(st.st_mode) \
            else "not a device node"
        raise InvalidArgument(f'error gathering device information while adding custom '
                              f'device "{host}": {what}')
    dest = container_path(inside)
    why = refused_destination(dest)
    if why is not None:
        raise InvalidArgument(f"invalid device specification: {text}: {why}")
    if "w" not in perms or "r" not in perms:
        # A read-only mount does not stop writes to a device node; docker's device cgroup
        # does, and a user namespace cannot attach one (cgroup v2's rules are BPF).
        raise InvalidArgument(f"--device {text}: permissions {perms!r} cannot be enforced "
                              "rootless (no device cgroup): the host's permissions on "
                              f"{host} decide; use rw")
    return Mount(destination=dest, type="bind", source=os.path.normpath(host),
                 options=["bind", "nosuid", "noexec"])


def _is_perms(value: str) -> bool:
    return bool(value) and set(value) <= set("rwm") and len(set(value)) == len(value)


def _replace(spec: Spec, dest: str, new: Mount | None) -> None:
    out = []
    for m in spec.mounts:
        if m.destination == dest:
            if new is not None:
                out.append(new)
        else:
            out.append(m)
    spec.mounts = out


def _drop_namespace(spec: Spec, kind: str) -> None:
    spec.linux.namespaces = [n for n in spec.linux.namespaces if n.type != kind]


def _ipc(opts: CreateOptions, spec: Spec, warn: Callable[[str], None] | None) -> None:
    mode = opts.ipc or "private"
    size = DEFAULT_SHM
    if opts.shm_size is not None:
        size = parse_size(opts.shm_size, "shm-size") or DEFAULT_SHM  # docker: 0 = default
    if mode.startswith("container:"):
        raise InvalidArgument("--ipc=container:NAME is not supported yet (use --ipc=host "
                              "for containers that share memory)")
    if mode not in ("private", "shareable", "host", "none"):
        raise InvalidArgument("--ipc: invalid IPC mode")
    if mode == "host":
        if opts.shm_size is not None and warn is not None:
            warn("--shm-size is ignored with --ipc=host: /dev/shm is the host's")
        _drop_namespace(spec, "ipc")
        # The host's IPC namespace is not this user namespace's: no mqueue mount of its
        # own there, so the host's /dev/shm and /dev/mqueue are bound.
        _replace(spec, "/dev/shm", Mount("/dev/shm", "bind", "/dev/shm",
                                         ["rbind", "nosuid", "nodev", "noexec"]))
        mq = Mount("/dev/mqueue", "bind", "/dev/mqueue", ["rbind", "nosuid", "nodev", "noexec"])
        _replace(spec, "/dev/mqueue", mq if os.path.isdir("/dev/mqueue") else None)
        return
    if mode == "none":
        _replace(spec, "/dev/shm", None)
        return
    for m in spec.mounts if opts.shm_size is not None else []:  # else: specgen's 64m
        if m.destination == "/dev/shm" and m.type == "tmpfs":
            m.options = [o for o in m.options if not o.startswith("size=")] + [f"size={size}"]


def _pid(opts: CreateOptions, spec: Spec) -> None:
    mode = opts.pid or "private"
    if mode.startswith("container:"):
        raise InvalidArgument("--pid=container:NAME is not supported yet")
    if mode not in ("private", "host"):
        raise InvalidArgument("--pid: invalid PID mode")
    if mode == "host":
        _drop_namespace(spec, "pid")
        # proc can only be mounted for a PID namespace of this user namespace's: the
        # host's /proc is bound (as rootless podman does).
        _replace(spec, "/proc", Mount("/proc", "bind", "/proc",
                                      ["rbind", "nosuid", "noexec", "nodev"]))


def _uts(opts: CreateOptions, spec: Spec) -> None:
    mode = opts.uts or "private"
    if mode not in ("private", "host"):
        raise InvalidArgument("--uts: invalid UTS mode")
    if mode != "host":
        return
    if opts.hostname:
        raise InvalidArgument("conflicting options: hostname and the UTS mode")
    _drop_namespace(spec, "uts")
    host = os.uname().nodename
    spec.hostname = ""  # the host's UTS namespace: nobody may set its name
    spec.process.env = [f"HOSTNAME={host}" if e.startswith("HOSTNAME=") else e
                        for e in spec.process.env]
    if os.path.isfile("/etc/hostname"):
        _replace(spec, "/etc/hostname", Mount("/etc/hostname", "bind", "/etc/hostname",
                                              ["bind", "ro"]))


# -- at each start (the supervisor) ----------------------------------------------------


def _root_file(root: str, path: str) -> str:
    """A text file of the container's root, "" if it has none; never followed outside it
    nor blocked on (a FIFO planted there)."""
    try:
        fd = os.open(secure_join(root, path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, 1 << 20).decode(errors="replace")
    finally:
        os.close(fd)


def _layered_file(dirs: list[str], path: str) -> str:
    """path in an overlay's directories, top first: the first that has an entry decides
    (a whiteout or anything not a regular file reads as "")."""
    for d in dirs:
        if os.path.lexists(secure_join(d, path)):
            return _root_file(d, path)
    return ""


def write_files(spec: Spec, run_dir: Path, cid: str, layers: list[str] | None = None
                ) -> None:
    """keep-id's /etc/passwd and /etc/group in run_dir: the root's own, plus the user's
    line where no entry has that id; the spec's binds are pointed at run_dir. layers:
    an overlay root's directories, upper first (its merged root is mounted only in the
    container's mount namespace)."""
    for key, name in ((PASSWD_KEY, "passwd"), (GROUP_KEY, "group")):
        line = spec.annotations.get(key)
        if line is None:
            continue
        text = _layered_file(layers or [spec.root.path], f"/etc/{name}")
        ident = line.split(":")[2]
        if not any(len(f) > 2 and f[2] == ident for f in
                   (row.split(":") for row in text.splitlines())):
            text = text + ("" if not text or text.endswith("\n") else "\n") + line + "\n"
        target = run_dir / name
        target.write_text(text)
        target.chmod(0o644)
        for m in spec.mounts:
            if m.destination == f"/etc/{name}" and m.type == "bind" and m.source \
                    and Path(m.source).parent.name == cid:
                m.source = str(target)
