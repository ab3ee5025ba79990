"""Create a container's processes: the namespaces, the id maps, and its PID 1.

Called by the supervisor before it starts trio, while it is single-threaded.
The process tree (see docs/architecture.md):

    supervisor S ──fork──> C1: unshare(USER); S writes the id maps;
                              [overlay root: unshare(MNT) and mount it there,
                               the "storage" mount namespace; a FUSE server
                               F forked here stays in it, S adopts F]
                              [own cgroup: S moves C1 into it]
                              unshare(MNT|UTS|IPC|PID|CGROUP[|NET]); fork; exit
                           └─> C2: PID 1 of the new PID namespace; S adopts it
                               (S is a child subreaper); mounts, pivot_root,
                               user, capabilities; exec the command
                               (--init: exec catatonit, which forks it)

Two pipes tie them together. `report` (children -> S) carries one line per
event: "U" (user namespace made; "J": joined), "F<pid>" (the root's FUSE server,
if any), "C" (C1 is ready to be moved into the container's cgroup; only when
it has one), "P<pid>" (C2's host pid), "E<code> <msg>"
(a setup error); it is close-on-exec, so EOF with no error means the command
was executed. `sync` (S -> children) carries "M" (maps written), "C" (C1 is
in the cgroup) and "G" (C1 reaped: C2 may arm PR_SET_PDEATHSIG), and stays
open for S's whole life so C2 can tell whether S died before the death
signal was armed.

The cgroup comes before the cgroup namespace: unshare(CLONE_NEWCGROUP) roots
the new namespace at the caller's cgroup, so C1 must already be in the
container's for the container to see itself at "0::/" (and its own cgroup2
at /sys/fs/cgroup); the FUSE server is forked before, so it stays in S's
cgroup, out of the container's limits.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import stat
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from .. import syscalls as sc
from ..engine.store import ContainerConfig
from ..errors import EXIT_RL, RlError
from . import cgroups, idmap, mounts, network, process, report
from .spec import ConsoleSize, Spec


@dataclass
class Launched:
    pid: int
    stdin: int | None = None  # write end, or None
    stdout: int | None = None  # read end
    stderr: int | None = None
    pty_master: int | None = None
    storage_pid: int | None = None  # the root filesystem's server (fuse, fuse-overlayfs)
    life_w: int | None = None  # its life pipe: S holds this end until S exits


NAMESPACE_FLAGS = {
    "mount": sc.CLONE_NEWNS, "uts": sc.CLONE_NEWUTS, "ipc": sc.CLONE_NEWIPC,
    "pid": sc.CLONE_NEWPID, "cgroup": sc.CLONE_NEWCGROUP, "network": sc.CLONE_NEWNET,
}


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def take_terminal(pty_sock: socket.socket, size: ConsoleSize | None = None) -> None:
    """Open a pty in the container's own devpts (this runs after pivot_root), send
    the master over pty_sock, make the slave this process's controlling tty and stdio."""
    master, slave = os.openpty()
    if size:
        set_winsize(slave, size.height, size.width)
    socket.send_fds(pty_sock, [b"m"], [master])
    os.close(master)
    pty_sock.close()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


# --init's PID 1: Debian's catatonit (podman's init), a static binary run
# from the host's file system (docs/decisions.md, Hardening).
INIT_BINARIES = ("/usr/bin/catatonit", "/usr/libexec/podman/catatonit")


def init_binary() -> str:
    """The host's catatonit; RlError (125) naming its package if there is none."""
    for path in INIT_BINARIES:
        if os.access(path, os.X_OK):
            return os.path.realpath(path)
    raise RlError("--init needs catatonit, which is not installed (Debian package "
                  f"catatonit; looked for {' and '.join(INIT_BINARIES)})")


def _check_command(argv0: str, env: dict[str, str]) -> None:
    """Fail as process.execute would (127, 126) where argv0 cannot be executed.

    Behind --init the command is exec'd by catatonit, which reports any
    failure as its own exit 1 after the start; the usual cases are caught here
    first, under the command's identity and working directory.
    """
    if "/" in argv0:
        candidates = [argv0]
    else:
        candidates = [os.path.join(d, argv0) for d in env.get("PATH", "").split(":")]
    denied = False
    for path in candidates:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            denied = True
            continue
        if stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK):
            return
        denied = True
    raise process.permission_denied(argv0) if denied else process.not_found(argv0)


def _exec_init(init_dir: int, name: str, args: list[str], env: dict[str, str]) -> None:
    """--init: replace this process (and every page of the supervisor's it still
    holds) with catatonit, which forks the command into its own process group
    (the tty's foreground one with -t), forwards signals to it, reaps orphans and
    exits with its status (128+n if killed by signal n).

    It runs with the container's environment, identity, seccomp filter and
    capabilities, as the command does, and keeps only stdio and its signalfd.
    """
    _check_command(args[0], env)
    process.reset_signals()
    sc.close_range_cloexec(3)
    try:
        # Relative to the host's directory, opened before pivot_root: a symlink
        # would resolve inside the container.
        sc.execveat(init_dir, name, [name, "--", *args], env, sc.AT_SYMLINK_NOFOLLOW)
    except OSError as e:
        raise RlError(f"exec: the init {name}: {os.strerror(e.errno or 0)}") from None


def exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def _container_pid1(
    cfg: ContainerConfig, report_w: int, sync_r: int, stdio: tuple[int, int, int] | None,
    pty_sock: socket.socket | None, cgroupfs: bool,
) -> NoReturn:
    spec = cfg.spec
    try:
        # PID 1 holds nothing of the supervisor's (sup.lock, the client's
        # socket, published ports, the fork server's log): whatever it execs
        # (the command, or catatonit with --init) is readable via /proc/1/fd.
        keep = {report_w, sync_r, *(stdio or ())}
        if pty_sock is not None:
            keep.add(pty_sock.fileno())
        sc.close_fds_except(keep)
        if os.read(sync_r, 1) != b"G":
            os._exit(EXIT_RL)
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        # S may have died between writing "G" and the line above: its end of
        # sync is then closed and readable (EOF).
        if select.select([sync_r], [], [], 0)[0]:
            os._exit(EXIT_RL)
        os.setsid()
        if spec.hostname:
            sc.sethostname(spec.hostname)
        if spec.namespace("network") is not None:
            network.loopback_up()
            if cfg.net.get("enable_ipv6") and cfg.net.get("mode") == "slirp4netns":
                from netstack.options import SLIRP6_ADDR, SLIRP6_GATEWAY

                network.ipv6_up("tap0", SLIRP6_ADDR, 64, SLIRP6_GATEWAY)
        init = None
        if cfg.init:
            # Reached through this fd once pivot_root has hidden the host's
            # tree; close-on-exec, so catatonit does not hold it.
            path = init_binary()
            init = (os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY
                            | os.O_CLOEXEC), os.path.basename(path))
        mounts.setup(spec, cgroupfs=cgroupfs)
        if pty_sock is not None:
            take_terminal(pty_sock, spec.process.console_size)
        elif stdio is not None:
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
        home = process.resolve_user(spec.process, cfg.user)
        env = process.env_with_defaults(spec.process.env, home)
        process.prepare(spec.process, spec.linux.seccomp)
        if init is not None:
            _exec_init(*init, spec.process.args, env)
        process.execute(spec.process, env)
    except BaseException as e:
        report.fail_with(report_w, e)
    os._exit(EXIT_RL)


def _namespace_flags(spec: Spec) -> int:
    flags = 0
    for ns in spec.linux.namespaces:
        if ns.type in NAMESPACE_FLAGS and ns.path is None:
            flags |= NAMESPACE_FLAGS[ns.type]
    return flags


def _own_cgroup_namespace(spec: Spec) -> bool:
    ns = spec.namespace("cgroup")
    return ns is not None and ns.path is None


def _userns_error(err: OSError) -> RlError:
    hints = []
    for path, bad in (
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
        ("/proc/sys/user/max_user_namespaces", "0"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1"),
    ):
        try:
            with open(path) as f:
                if f.read().strip() == bad:
                    sysctl = path.removeprefix("/proc/sys/").replace("/", ".")
                    hints.append(f"{sysctl} is {bad}")
        except OSError:
            pass
    why = "; ".join(hints) or os.strerror(err.errno or 0)
    return RlError(f"cannot create a user namespace: {why} (unprivileged user namespaces "
                   "are disabled or exhausted; an administrator must allow them)")


def _mount_root(cfg: ContainerConfig, life_r: int | None) -> int | None:
    """Mount the overlay root in a mount namespace of its own; the server's pid, if any.

    The container's mount namespace is unshared from this one afterwards, so
    it starts with the root mounted; a FUSE server stays here, where the
    layer directories are the host's paths and pivot_root never moves it.
    """
    from fs import drivers

    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_SLAVE)
    serving = drivers.Serving(life_r) if life_r is not None else None
    missing = [d for d in [*cfg.layers, cfg.upper] if not os.path.isdir(d)]
    if missing:
        raise RlError(f"the container's storage is incomplete: {missing[0]} is missing "
                      "(removed behind rl's back?); remove the container and create it again")
    try:
        mounted = drivers.mount(cfg.storage_driver, cfg.layers, cfg.upper, cfg.work,
                                cfg.rootfs, serving)
    except drivers.DriverError as e:
        raise RlError(f"mounting the container's root with the {cfg.storage_driver} "
                      f"storage driver: {e}") from None
    return mounted.pid


def _first_process(
    cfg: ContainerConfig, report_w: int, sync_r: int, stdio: tuple[int, int, int] | None,
    pty_sock: socket.socket | None, life_r: int | None, join_cgroup: bool,
) -> NoReturn:
    """C1: make the user namespace, wait for its maps, make the rest, fork PID 1.

    join_cgroup: the container has a cgroup of its own; C1 says "C" and waits
    until S moved it there before it makes the cgroup namespace (rooted at
    the caller's cgroup) and forks PID 1 (children inherit the cgroup).

    Namespaces given by path (--network container:NAME) are joined instead:
    the other container's user namespace first, in place of a new one ("J":
    its maps exist already), since joining its network namespace needs
    CAP_SYS_ADMIN over the user namespace that owns it (podman's pods share
    theirs for the same reason).
    """
    try:
        # Opened before any setns: /proc/PID/ns/* are the host's view.
        joined = {ns.type: os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
                  for ns in cfg.spec.linux.namespaces if ns.path is not None}
        if "user" in joined:
            sc.setns(joined.pop("user"), sc.CLONE_NEWUSER)
            report.send(report_w, "J")
        else:
            try:
                sc.unshare(sc.CLONE_NEWUSER)
            except OSError as e:
                err = _userns_error(e)
                report.fail(report_w, err.exit_code, err.message)
            report.send(report_w, "U")
        if os.read(sync_r, 1) != b"M":
            os._exit(EXIT_RL)
        from fs.drivers import OVERLAYS  # loaded already in S; kept off rl exec's imports

        if cfg.storage_driver in OVERLAYS:
            server = _mount_root(cfg, life_r)
            if server:
                report.send(report_w, f"F{server}")
        if life_r is not None:
            os.close(life_r)
        if join_cgroup:
            report.send(report_w, "C")
            if os.read(sync_r, 1) != b"C":
                os._exit(EXIT_RL)
        sc.unshare(_namespace_flags(cfg.spec))
        for kind, fd in joined.items():
            sc.setns(fd, NAMESPACE_FLAGS[kind])
            os.close(fd)
        pid = os.fork()
        if pid == 0:
            _container_pid1(cfg, report_w, sync_r, stdio, pty_sock, cgroupfs=join_cgroup and
                            _own_cgroup_namespace(cfg.spec))
        report.send(report_w, f"P{pid}")
    except OSError as e:
        report.fail_with(report_w, e, "creating namespaces")
    except BaseException as e:
        report.fail_with(report_w, e)
    os._exit(0)


def launch(
    cfg: ContainerConfig, plan: idmap.IdMapPlan, devnull_stdin: bool,
    before_start: Callable[[int], None] | None = None, cgroup: str | None = None,
) -> Launched:
    """Start the container's PID 1 and return once its command was executed.

    cgroup: the container's own cgroup (a directory of the host's cgroup2), or
    None. S moves C1 into it after the root is mounted (a FUSE server stays
    outside) and before C1 makes the other namespaces, so the cgroup
    namespace is rooted there: the container sees "0::/", and PID 1 mounts
    it read-only at /sys/fs/cgroup.

    before_start(pid) runs in S once the container's PID 1 exists, with all of
    its namespaces, and C1 is gone, before PID 1 does anything: the place to
    attach its network (slirp4netns needs the namespace, and the command
    must never start before its network) or to tighten its cgroup.
    """
    report_r, report_w = os.pipe()
    sync_r, sync_w = os.pipe()
    pty_parent = pty_child = None
    stdio_child: tuple[int, int, int] | None = None
    parent_fds: list[int] = []
    child_fds: list[int] = []
    result = Launched(pid=0)
    if cfg.tty:
        pty_parent, pty_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        if devnull_stdin:
            in_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            in_w = None
        else:
            in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        stdio_child = (in_r, out_w, err_w)
        child_fds += [in_r, out_w, err_w]
        parent_fds += [fd for fd in (in_w, out_r, err_r) if fd is not None]
        result = Launched(pid=0, stdin=in_w, stdout=out_r, stderr=err_r)
    life_r = None
    if cfg.storage_driver in ("fuse", "fuse-overlayfs"):
        life_r, result.life_w = os.pipe()
        parent_fds.append(result.life_w)

    c1 = os.fork()
    if c1 == 0:
        try:
            os.close(report_r)
            os.close(sync_w)
            for fd in parent_fds:
                os.close(fd)
            if pty_parent is not None:
                pty_parent.close()
        except BaseException:
            os._exit(EXIT_RL)
        _first_process(cfg, report_w, sync_r, stdio_child, pty_child, life_r,
                       join_cgroup=cgroup is not None)

    os.close(report_w)
    os.close(sync_r)
    if life_r is not None:
        os.close(life_r)
    for fd in child_fds:
        os.close(fd)
    if pty_child is not None:
        pty_child.close()
    reports = os.fdopen(report_r, "rb", buffering=0)
    c2 = 0
    try:
        line = report.read_line(reports)
        if line.startswith("E"):
            report.raise_error(line)
        if line not in ("U", "J"):
            raise RlError("the container's first process died while creating namespaces")
        try:
            if line == "U":  # "J": C1 joined a user namespace that has its maps
                idmap.write_maps(c1, plan)
        except OSError as e:
            raise RlError(f"writing the user namespace id maps: {e}") from e
        os.write(sync_w, b"M")
        line = report.read_line(reports)
        if line.startswith("F"):
            result.storage_pid = int(line[1:])
            line = report.read_line(reports)
        if cgroup is not None:
            if line.startswith("E"):
                report.raise_error(line)
            if line != "C":
                raise RlError("the container's first process died while creating namespaces")
            cgroups.attach(cgroup, c1)
            os.write(sync_w, b"C")
            line = report.read_line(reports)
        if line.startswith("E"):
            report.raise_error(line)
        if not line.startswith("P"):
            raise RlError("the container's first process died while creating namespaces")
        c2 = int(line[1:])
        os.waitpid(c1, 0)
        c1 = 0
        if before_start is not None:
            before_start(c2)
        os.write(sync_w, b"G")
        if pty_parent is not None:
            _, fds, _, _ = socket.recv_fds(pty_parent, 16, 1)
            if fds:
                result.pty_master = fds[0]
                os.set_inheritable(fds[0], False)
            pty_parent.close()
        line = report.read_line(reports)  # EOF ("") once the command is executed
        if line.startswith("E"):
            try:
                os.waitpid(c2, 0)
            except ChildProcessError:
                pass
            c2 = 0
            report.raise_error(line)
        result.pid = c2
        # sync_w stays open (and leaks into nothing: it is close-on-exec) for
        # as long as S lives.
        return result
    except BaseException:
        for pid in (c1, c2, result.storage_pid):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
        for fd in parent_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        result.life_w = None
        raise
    finally:
        reports.close()
