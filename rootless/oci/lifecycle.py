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
from .records import Record, Root, start_time

Log = Callable[[str], None]

# What the runtime cannot do and refuses rather than ignores (a cgroup limit
# the caller relies on); devices rules are the exception: a user namespace
# cannot create or open a device it was not given anyway.
_RESOURCES_IGNORED = {"devices"}


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


def _raw_config(bundle_dir: str) -> dict[str, Any]:
    try:
        with open(os.path.join(bundle_dir, bundles.CONFIG), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError, RecursionError):
        return {}  # bundle.load says what is wrong with it
    return data if isinstance(data, dict) else {}


def _refusals(data: dict[str, Any]) -> None:
    """What a config asks that rl-oci does not do: one line naming the field."""
    hooks = data.get("hooks")
    if isinstance(hooks, dict):
        for kind, items in hooks.items():
            if items:
                raise InvalidArgument(f"hooks.{kind}: OCI hooks are not supported by rl-oci")
    res = (data.get("linux") or {}).get("resources")
    if isinstance(res, dict):
        for key, value in res.items():
            if key not in _RESOURCES_IGNORED and value not in (None, {}, []):
                raise InvalidArgument(
                    f"linux.resources.{key}: rl-oci applies no cgroup limits (this host "
                    "delegates no cgroup v2 controllers to the user); remove the setting")


def load(bundle_dir: str) -> Bundle:
    bundle_dir = os.path.abspath(bundle_dir)
    if not os.path.isdir(bundle_dir):
        raise InvalidArgument(f"bundle {bundle_dir} is not a directory")
    b = bundles.load(bundle_dir)
    if not b.spec.oci_version.startswith("1."):
        raise InvalidArgument(f"ociVersion {b.spec.oci_version!r} is not supported "
                              "(rl-oci implements 1.x)")
    _refusals(_raw_config(bundle_dir))
    if not os.path.isdir(b.spec.root.path):
        raise InvalidArgument(f"root.path {b.spec.root.path} does not exist")
    return b


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
        root.write(rec)

    try:
        created = container.create(
            b, plan or idmap.IdMapPlan("single", "the caller's user namespace", [], []),
            state_dir, devnull_stdin=False, before_start=record,
            detached=not opts.foreground, new_userns=new_userns, inherit_stdio=True,
            preserve_fds=opts.preserve_fds)
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
        root.remove(cid)
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
            root.remove(cid)
        raise
    if not opts.foreground:
        return 0
    try:
        code = wait_forwarding(launched.pid, launched.pty_master)
    finally:
        root.remove(cid)
    return code

