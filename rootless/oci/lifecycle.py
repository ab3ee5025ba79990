"""The OCI runtime spec's operations over rootless.runtime: create, start, kill, delete,
state, and run (all three at once), as runc does them.

What the caller gets, as with runc: PID 1 inherits exactly the caller's fds
0-2 (conmon's pipes) and --preserve-fds; with a terminal, the pty master goes
over --console-socket; `create` writes --pid-file and returns while PID 1
waits at its gate, a descendant of the caller (C1 exits, so PID 1 is
reparented to the caller's nearest child subreaper: conmon, or rl-oci's own
`run`).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import syscalls as sc
from ..errors import InvalidArgument
from ..runtime import bundle as bundles
from ..runtime import container, idmap
from ..runtime.bundle import Bundle
from ..runtime.spec import IDMapping, Mount
from . import control
from .records import Record, Root, start_time, state_json

Log = Callable[[str], None]

@dataclass
class Options:
    bundle: str
    pid_file: str | None = None
    console_socket: str | None = None
    preserve_fds: int = 0
    rootless: str = "auto"  # auto | true | false
    foreground: bool = False  # `run` without -d: rl-oci stays PID 1's parent


def _in_foreign_userns() -> bool:
    """Whether this process is root of a user namespace that is not the host's."""
    try:
        with open("/proc/self/uid_map") as f:
            rows = f.read().split()
    except OSError:
        return False
    return os.geteuid() == 0 and rows != ["0", "0", "4294967295"]


def load(bundle_dir: str) -> Bundle:
    bundle_dir = os.path.abspath(bundle_dir)
    if not os.path.isdir(bundle_dir):
        raise InvalidArgument(f"bundle {bundle_dir} is not a directory")
    b = bundles.load(bundle_dir)
    if not b.spec.oci_version.startswith("1."):
        raise InvalidArgument(f"ociVersion {b.spec.oci_version!r} is not supported "
                              "(rl-oci implements 1.x)")
    if not os.path.isdir(b.spec.root.path):
        raise InvalidArgument(f"root.path {b.spec.root.path} does not exist")
    return b


class CgroupPlan:
    """The cgroup rl-oci makes for a config's linux.resources (and cgroupsPath)."""

    def __init__(self, host: Any, path: str, res: Any, files: dict[str, str]) -> None:
        self.host, self.path, self.res, self.files = host, path, res, files


def _cgroup_plan(b: Bundle, cid: str, log: Log) -> CgroupPlan | None:
    """Where the container's cgroup goes, or None without one; InvalidArgument,
    naming the field, for limits that no delegated cgroup v2 can enforce here
    (unless run.rl.cgroups=disabled says to run without them, with a warning)."""
    r = b.spec.linux.resources
    if r is None and not b.spec.linux.cgroups_path:
        return None
    # Only here: a config without resources pays nothing for the cgroup code.
    from ..runtime import cgroups, resources

    res, files = resources.from_oci(r) if r is not None else (resources.Resources(), {})
    need = resources.controllers_of(res, files)
    asked = [f"linux.resources.{name}" for name, value in (
        ("memory", res.memory or res.memory_reservation or res.memory_swap),
        ("cpu", res.controllers() & {"cpu", "cpuset"}), ("pids", res.pids_limit),
        ("blockIO", "io" in res.controllers()), ("hugepageLimits", r and r.hugepage_limits),
        ("unified", r and r.unified)) if value]
    if not need:
        # A cgroupsPath (podman's systemd slice:scope, or one below a parent
        # the user cannot write) with nothing to enforce stays the caller's.
        log(f"linux.cgroupsPath {b.spec.linux.cgroups_path!r} ignored: no limits asked")
        return None
    host = cgroups.probe()
    missing = sorted(need - set(host.controllers)) if host.base else sorted(need)
    if missing:
        why = host.reason or (f"the {', '.join(missing)} controller(s) are not delegated "
                              f"to your cgroup {host.own}")
        if not b.extras.cgroups_disabled:
            raise InvalidArgument(f"{asked[0] if asked else 'linux.resources'}: cannot be "
                                  f"enforced: {why}; set the annotation "
                                  "run.rl.cgroups=disabled to run without it")
        from .log import warn

        warn(f"{', '.join(asked)} ignored (run.rl.cgroups=disabled): {why}")
        return None
    path = cgroups.oci_path(host, b.spec.linux.cgroups_path, cid)
    log(f"cgroup {path}")
    return CgroupPlan(host, path, res, files)


def _plan(b: Bundle, log: Log) -> idmap.IdMapPlan:
    """The id maps of the user namespace rl-oci makes for the container."""
    uids, gids = b.spec.linux.uid_mappings, b.spec.linux.gid_mappings
    if not uids and not gids:
        p = idmap.plan()
        log(f"id maps: {p.mode} ({p.reason})")
        return p
    single = ([IDMapping(0, os.getuid(), 1)], [IDMapping(0, os.getgid(), 1)])
    if (uids, gids) == single:
        return idmap.IdMapPlan("single", "the config's mappings", uids, gids)
    return idmap.plan_for("subuid", uids, gids)


def _gid_mapped(gid: int, b: Bundle, plan: idmap.IdMapPlan | None) -> bool:
    if plan is None:
        return True  # the caller's user namespace: its maps are its own business
    return any(m.container_id <= gid < m.container_id + m.size for m in plan.gid_mappings)


# The spec's default devices (config-linux.md): a runtime supplies them; a
# user namespace cannot mknod, so they are the host's, bound (as rl run does).
DEFAULT_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def _adapt_mounts(b: Bundle, plan: idmap.IdMapPlan | None) -> None:
    """What runc does for a rootless container: a cgroup v1 mount cannot be made
    in a user namespace, so the host's /sys/fs/cgroup is bound (with the mount's
    own flags); devpts' gid= is dropped when that group is not mapped; the
    default devices are bound after /dev unless the config mounts them itself."""
    out = []
    given = {m.destination.rstrip("/") for m in b.spec.mounts}
    devices = [Mount(f"/dev/{d}", "bind", f"/dev/{d}", ["bind", "nosuid", "noexec"])
               for d in DEFAULT_DEVICES if f"/dev/{d}" not in given]
    if not any(m.destination.rstrip("/") == "/dev" for m in b.spec.mounts):
        out += devices
    for m in b.spec.mounts:
        if m.type == "cgroup":
            opts = [o for o in m.options if o not in ("rprivate", "private")]
            m = Mount(m.destination, "bind", "/sys/fs/cgroup", ["rbind", *opts])
        elif m.type == "devpts":
            opts = []
            for o in m.options:
                if o.startswith("gid=") and o[4:].isdigit() and not _gid_mapped(
                        int(o[4:]), b, plan):
                    continue
                opts.append(o)
            m.options = opts
        out.append(m)
        if m.destination.rstrip("/") == "/dev":
            out += devices
    b.spec.mounts = out


def _new_userns(b: Bundle, rootless: str, log: Log) -> bool:
    if b.spec.namespace("user") is not None:
        return True  # made by the runtime (or joined, with a path)
    if rootless == "true":
        log("no user namespace in the config: --rootless=true makes one")
        return True
    if rootless == "false" or _in_foreign_userns() or os.geteuid() == 0:
        log("no user namespace in the config: the container stays in the caller's")
        return False
    log("no user namespace in the config and an unprivileged caller: rl-oci makes one, "
        "mapping the caller as root")
    return True


def _owner() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _now() -> str:
    """RFC 3339 in UTC with microseconds (time, not datetime: ~10 ms less to import)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def write_pid_file(path: str, pid: int) -> None:
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def check_preserved(n: int) -> None:
    for fd in range(3, 3 + n):
        try:
            os.fstat(fd)
        except OSError:
            raise InvalidArgument(f"--preserve-fds={n}: fd {fd} is not open") from None


def create(root: Root, cid: str, opts: Options, log: Log) -> container.Created:
    """Make the container up to its gate; the runtime's Created (its report pipe open)."""
    b = load(opts.bundle)
    terminal = b.spec.process.terminal
    if terminal and not opts.console_socket and not opts.foreground:
        raise InvalidArgument("cannot allocate tty if rl-oci will detach without setting "
                              "console socket")
    if opts.console_socket and not terminal:
        raise InvalidArgument("cannot use console socket if rl-oci will not detach or "
                              "allocate tty")
    check_preserved(opts.preserve_fds)
    sock = None
    if opts.console_socket:
        from . import console  # only with a terminal: sockets and ttys, ~4 ms of imports

        sock = console.connect(opts.console_socket)
    new_userns = _new_userns(b, opts.rootless, log)
    plan = _plan(b, log) if new_userns else None
    _adapt_mounts(b, plan)
    cg = _cgroup_plan(b, cid, log)
    u = b.spec.process.user
    # The runtime resolves the user against the container's /etc/passwd (home);
    # numeric ids resolve to themselves.
    b.extras.user = f"{u.uid}:{u.gid}"
    lock = root.claim(cid)
    state_dir = root.dir(cid)
    rec = Record(cid, 0, 0, os.path.abspath(opts.bundle), b.spec.root.path, _now(), _owner(),
                 dict(b.spec.annotations), new_userns)

    def record(pid: int) -> None:
        rec.pid, rec.pid_start = pid, start_time(pid) or 0
        if cg is not None:
            from ..runtime import cgroups

            cgroups.settle(cg.path, cg.res)  # C1 is gone: the config's pids.max
        root.write(rec)

    def hook_state(status: str, pid: int) -> bytes:
        # Also called in PID 1 (a fork of this process), whose rec has no pid yet.
        return json.dumps({**state_json(rec, status), "pid": pid}).encode()

    try:
        if b.spec.hooks is not None:
            from ..runtime import hooks

            hooks.save(state_dir, b.spec.hooks)
        cgroup = None
        if cg is not None:
            from ..runtime import cgroups

            # Named in the state first: a kill -9 from here on leaves a cgroup
            # that delete still finds.
            control.save_cgroup(state_dir, cg.path)
            cgroup = cgroups.create_at(cg.host, cg.path, cg.res, cg.files)
        created = container.create(
            b, plan or idmap.IdMapPlan("single", "the caller's user namespace", [], []),
            state_dir, devnull_stdin=False, before_start=record,
            detached=not opts.foreground, new_userns=new_userns, inherit_stdio=True,
            preserve_fds=opts.preserve_fds, cgroup=cgroup,
            hook_state=hook_state if b.spec.hooks is not None else None)
        try:
            master = created.launched.pty_master
            if master is not None and sock is not None:
                from . import console

                console.send(sock, master)
                os.close(master)
                created.launched.pty_master = None
            if opts.pid_file:
                write_pid_file(opts.pid_file, created.launched.pid)
        except BaseException:
            created.abandon()
            raise
    except BaseException:
        # A failed create is deleted, poststop hooks and all (the spec's
        # lifecycle continues at delete), as runc's destroy does.
        control.remove(root, cid, rec)
        raise
    finally:
        os.close(lock)
        if sock is not None:
            sock.close()
    log(f"created {cid}: pid {created.launched.pid}")
    return created


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT, signal.SIGTSTP)


def wait_forwarding(pid: int, master: int | None = None) -> int:
    """Wait for pid (a child of this process), passing on the signals rl-oci gets;
    with a pty master, relay it to this process's stdio meanwhile. Its exit code."""
    pfd = os.pidfd_open(pid)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pfd, signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    if master is not None:
        from . import console

        console.relay(master, pfd)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    os.close(pfd)
    return container.exit_code(status)


def run(root: Root, cid: str, opts: Options, log: Log) -> int:
    """create, start and (in the foreground) wait and delete; the exit code."""
    if opts.foreground:
        # PID 1 is C1's child; C1 exits, so PID 1 must be adopted by rl-oci.
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    created = create(root, cid, opts, log)
    try:
        control.start(root, cid)
        launched = container.wait_started(created)
    except BaseException:
        if opts.foreground:
            created.abandon()
            control.remove(root, cid, None)
        raise
    if not opts.foreground:
        return 0
    try:
        code = wait_forwarding(launched.pid, launched.pty_master)
    finally:
        control.remove(root, cid, None)
    return code

