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
                               user, capabilities; waits at the gate (gate.py)
                               until started; exec the command
                               (--init: exec catatonit, which forks it)

What to make comes in as a Bundle (bundle.py): the OCI spec and rl's
additions to it (the root's storage, --init, -u, the IPv6 address). The
gate splits the launch in two, as an OCI runtime's create and start: create
returns once PID 1 is set up and waits at the gate in the container's state
directory; start, from this process or any other, releases it; then the
report pipe's EOF says the command was executed. The supervisor does both
at once (launch).

Two pipes tie them together. `report` (children -> S) carries one line per
event: "U" (user namespace made; "J": joined), "F<pid>" (the root's FUSE server,
if any), "C" (C1 is ready to be moved into the container's cgroup; only when
it has one), "P<pid>" (C2's host pid), "H" (C2's mounts are made: S runs
the OCI createRuntime hooks; only when there are some), "R" (C2 is set up
and waits at the gate), "E<code> <msg>" (a setup error); it is close-on-exec, so EOF with no
error after "R" means the command was executed. `sync` (S -> children)
carries "M" (maps written), "C" (C1 is in the cgroup), "G" (C1 reaped:
C2 may arm PR_SET_PDEATHSIG) and "H" (the hooks ran: C2 may pivot_root),
and stays open for S's whole life so C2 can tell whether S died before the
death signal was armed.

The cgroup comes before the cgroup namespace: unshare(CLONE_NEWCGROUP) roots
the new namespace at the caller's cgroup, so C1 must already be in the
container's for the container to see itself at "0::/" (and its own cgroup2
at /sys/fs/cgroup); the FUSE server is forked before, so it stays in S's
cgroup, out of the container's limits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import stat
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, NoReturn

from .. import syscalls as sc
from ..errors import EXIT_RL, InvalidArgument, RlError
from . import gate, idmap, mounts, network, process, report, sysctl
from .bundle import Bundle
from .spec import ConsoleSize, Spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket  # at run time only with a terminal: ~3 ms of rl-oci's create

    from .hooks import StateFn


@dataclass
class Launched:
    pid: int
    stdin: int | None = None  # write end, or None
    stdout: int | None = None  # read end
    stderr: int | None = None
    pty_master: int | None = None
    storage_pid: int | None = None  # the root filesystem's server (fuse, fuse-overlayfs)
    life_w: int | None = None  # its life pipe: S holds this end until S exits
    sync_w: int | None = None  # S's end of the set-up pipe, open while S lives (C2 reads EOF)


NAMESPACE_FLAGS = {
    "mount": sc.CLONE_NEWNS, "uts": sc.CLONE_NEWUTS, "ipc": sc.CLONE_NEWIPC,
    "pid": sc.CLONE_NEWPID, "cgroup": sc.CLONE_NEWCGROUP, "network": sc.CLONE_NEWNET,
}


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def take_terminal(pty_sock: socket.socket, size: ConsoleSize | None = None) -> None:
    """Open a pty in the container's own devpts (this runs after pivot_root), send
    the master over pty_sock, make the slave this process's controlling tty and stdio."""
    # Loaded already (pty_sock is one of its sockets): past pivot_root an import
    # that reached the file system would read the container's files.
    import socket

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


@dataclass
class _Child:
    """What C1 and C2 are given: the bundle and their ends of S's pipes."""

    bundle: Bundle
    report_w: int
    sync_r: int
    gate_fd: int | None  # None: no gate (launch: the creator starts it at once)
    stdio: tuple[int, int, int] | None
    pty_sock: socket.socket | None
    life_r: int | None
    join_cgroup: bool
    detached: bool
    new_userns: bool = True  # False: stay in the caller's user namespace (OCI, podman)
    preserve_fds: int = 0  # the caller's fds 3..2+N go to the command (OCI --preserve-fds)
    hook_state: StateFn | None = None  # the state OCI hooks read (hooks.py)


def _runtime_hooks(spec: Spec) -> bool:
    """Whether the creator runs hooks between PID 1's mounts and its pivot_root."""
    h = spec.hooks
    return h is not None and bool(h.prestart or h.create_runtime)


def _before_pivot(ch: _Child, host_pid: int) -> None:
    """PID 1, mounts made, `/` still the host's: the creator's createRuntime hooks
    ("H" both ways), then createContainer's here, in the container's namespaces."""
    spec = ch.bundle.spec
    if _runtime_hooks(spec):
        report.send(ch.report_w, "H")
        if os.read(ch.sync_r, 1) != b"H":
            os._exit(EXIT_RL)
    if spec.hooks is not None and spec.hooks.create_container and ch.hook_state:
        from . import hooks

        hooks.run(spec.hooks, ("createContainer",), ch.hook_state, "creating", host_pid)


def _start_hooks(ch: _Child, host_pid: int) -> None:
    """startContainer, right before the exec: with the command's identity, filter and
    root, as runc runs them. A creator that is gone reads no report, so the
    failure goes to the container's stderr too."""
    spec = ch.bundle.spec
    if spec.hooks is None or not spec.hooks.start_container or ch.hook_state is None:
        return
    from . import hooks

    try:
        hooks.run(spec.hooks, ("startContainer",), ch.hook_state, "created", host_pid)
    except hooks.HookFailed as e:
        with contextlib.suppress(OSError):
            os.write(2, f"rl-oci: {e.message}\n".encode())
        raise


def _container_pid1(ch: _Child, cgroupfs: bool) -> NoReturn:
    spec, extras, report_w, sync_r = ch.bundle.spec, ch.bundle.extras, ch.report_w, ch.sync_r
    try:
        # PID 1 holds nothing of the supervisor's (sup.lock, the client's
        # socket, published ports, the fork server's log): whatever it execs
        # (the command, or catatonit with --init) is readable via /proc/1/fd.
        keep = {report_w, sync_r, *(ch.stdio or ()), *range(3, 3 + ch.preserve_fds)}
        if ch.gate_fd is not None:
            keep.add(ch.gate_fd)
        if ch.pty_sock is not None:
            keep.add(ch.pty_sock.fileno())
        sc.close_fds_except(keep)
        if os.read(sync_r, 1) != b"G":
            os._exit(EXIT_RL)
        if not ch.detached:
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            # S may have died between writing "G" and the line above: its end of
            # sync is then closed and readable (EOF).
            if select.select([sync_r], [], [], 0)[0]:
                os._exit(EXIT_RL)
        # Its pid in the host's view (the state hooks read): /proc is still
        # the creator's, so /proc/self names it in the creator's PID namespace.
        host_pid = int(os.readlink("/proc/self")) if spec.hooks is not None else 0
        os.setsid()
        if spec.hostname:
            sc.sethostname(spec.hostname)
        if spec.namespace("network") is not None:
            network.loopback_up()
            if extras.ipv6 is not None:
                v6 = extras.ipv6
                network.ipv6_up(v6.interface, v6.address, v6.prefix, v6.gateway)
        if spec.linux.sysctl:
            sysctl.apply(spec.linux.sysctl)
        init = None
        if extras.init:
            # Reached through this fd once pivot_root has hidden the host's
            # tree; close-on-exec, so catatonit does not hold it.
            path = init_binary()
            init = (os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY
                            | os.O_CLOEXEC), os.path.basename(path))
        if spec.hooks is not None:
            # Loaded while `/` is the host's: an import after pivot_root would read
            # the container's files (a planted module) before seccomp and the caps.
            from . import hooks  # noqa: F401
        mounts.setup(spec, cgroupfs=cgroupfs,
                     before_pivot=(lambda: _before_pivot(ch, host_pid))
                     if spec.hooks is not None else None)
        if ch.pty_sock is not None:
            take_terminal(ch.pty_sock, spec.process.console_size)
        elif ch.stdio is not None:
            for target, fd in enumerate(ch.stdio):
                os.dup2(fd, target)
        home = process.resolve_user(spec.process, extras.user)
        env = process.env_with_defaults(spec.process.env, home)
        process.prepare(spec.process, spec.linux.seccomp,
                        keep=process.keep_groups(spec.annotations))
        if ch.gate_fd is not None:
            # After the filter, as runc's wait at exec.fifo (without
            # no_new_privs): a profile for `create` must allow read, write
            # and close. rl's own launch has no gate, so `rl run` asks
            # nothing of a profile it did not before.
            # The creator hears of a missing command (127/126), as runc's
            # create says it; past the gate nobody may be listening.
            _check_command(spec.process.args[0], env)
            report.send(report_w, "R")
            gate.wait(ch.gate_fd)
        _start_hooks(ch, host_pid)
        if init is not None:
            _exec_init(*init, spec.process.args, env)
        process.execute(spec.process, env, ch.preserve_fds)
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


def _mount_root(b: Bundle, life_r: int | None) -> int | None:
    """Mount the overlay root in a mount namespace of its own; the server's pid, if any.

    The container's mount namespace is unshared from this one afterwards, so
    it starts with the root mounted; a FUSE server stays here, where the
    layer directories are the host's paths and pivot_root never moves it.
    """
    # In C1, a fork of S, where the fork server loaded it already: free for
    # `rl run`, and kept off the imports of `rl exec` (~5 ms), which imports this module.
    from fs import drivers

    storage = b.extras.storage
    assert storage is not None
    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_SLAVE)
    serving = drivers.Serving(life_r) if life_r is not None else None
    missing = [d for d in [*storage.lower, storage.upper] if not os.path.isdir(d)]
    if missing:
        raise RlError(f"the container's storage is incomplete: {missing[0]} is missing "
                      "(removed behind rl's back?); remove the container and create it again")
    # The merged / shows the upper's root: the container's root owns it (keep-id over an
    # image makes someone else container 0; otherwise it is so already).
    with contextlib.suppress(OSError):
        if os.stat(storage.upper).st_uid != 0:
            os.chown(storage.upper, 0, 0)
    try:
        mounted = drivers.mount(storage.driver, storage.lower, storage.upper, storage.work,
                                b.spec.root.path, serving)
    except drivers.DriverError as e:
        raise RlError(f"mounting the container's root with the {storage.driver} "
                      f"storage driver: {e}") from None
    return mounted.pid


def _first_process(ch: _Child) -> NoReturn:
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
    spec, report_w, sync_r = ch.bundle.spec, ch.report_w, ch.sync_r
    try:
        # Opened before any setns: /proc/PID/ns/* are the host's view.
        joined = {ns.type: os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
                  for ns in spec.linux.namespaces if ns.path is not None}
        if "user" in joined:
            sc.setns(joined.pop("user"), sc.CLONE_NEWUSER)
            report.send(report_w, "J")
        elif not ch.new_userns:
            # The caller's user namespace is the container's (rootless podman
            # runs its runtime as root of its own): its maps exist already.
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
        if ch.bundle.extras.storage is not None:
            server = _mount_root(ch.bundle, ch.life_r)
            if server:
                report.send(report_w, f"F{server}")
        if ch.life_r is not None:
            os.close(ch.life_r)
        if ch.join_cgroup:
            report.send(report_w, "C")
            if os.read(sync_r, 1) != b"C":
                os._exit(EXIT_RL)
        sc.unshare(_namespace_flags(spec))
        for kind, fd in joined.items():
            sc.setns(fd, NAMESPACE_FLAGS[kind])
            os.close(fd)
        pid = os.fork()
        if pid == 0:
            _container_pid1(ch, cgroupfs=ch.join_cgroup and _own_cgroup_namespace(spec))
        report.send(report_w, f"P{pid}")
    except OSError as e:
        report.fail_with(report_w, e, "creating namespaces")
    except BaseException as e:
        report.fail_with(report_w, e)
    os._exit(0)


@dataclass
class Created:
    """A container made up to its gate: its PID 1 (launched.pid) waits for start."""

    launched: Launched
    state_dir: str
    reports: BinaryIO  # the report pipe: "E…" or EOF once started
    parent_fds: list[int] = field(default_factory=list)  # closed if it fails

    def abandon(self) -> None:
        """Kill what was made (a failed launch): PID 1, the root's server, their fds."""
        _kill(self.launched.pid, self.launched.storage_pid)
        self.launched.pid = 0
        self.launched.storage_pid = None
        self.close(failed=True)

    def close(self, failed: bool = False) -> None:
        self.reports.close()
        if failed:
            for fd in self.parent_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.launched.life_w = None
            gate.remove(self.state_dir)


def _kill(*pids: int | None) -> None:
    for pid in pids:
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def create(
    bundle: Bundle, plan: idmap.IdMapPlan, state_dir: str, devnull_stdin: bool,
    before_start: Callable[[int], None] | None = None, cgroup: str | None = None,
    detached: bool = False, started: bool = False, new_userns: bool = True,
    inherit_stdio: bool = False, preserve_fds: int = 0, hook_state: StateFn | None = None,
) -> Created:
    """Make the container's PID 1 and return once it waits at its gate.

    state_dir: a private directory of the caller's, outside the container's
    root, where the gate is made (gate.py); start(state_dir) releases it.

    cgroup: the container's own cgroup (a directory of the host's cgroup2), or
    None. S moves C1 into it after the root is mounted (a FUSE server stays
    outside) and before C1 makes the other namespaces, so the cgroup
    namespace is rooted there: the container sees "0::/", and PID 1 mounts
    it read-only at /sys/fs/cgroup.

    before_start(pid) runs in S once the container's PID 1 exists, with all of
    its namespaces, and C1 is gone, before PID 1 does anything: the place to
    attach its network (slirp4netns needs the namespace, and the command
    must never start before its network) or to tighten its cgroup.

    detached: PID 1 outlives this process (no parent-death signal), as an
    OCI runtime's `create` leaves it for a later `start`; the caller's
    stdio pipes go with it, so such a command writes to files, not to them.

    started: the caller starts it itself, now (launch): no gate is made,
    PID 1 execs as soon as it is set up, and create returns before that
    (wait_started reads the outcome).

    An OCI runtime's caller (rootless/oci) asks for more: new_userns=False
    keeps PID 1 in the caller's user namespace (the caller is root of one
    already); inherit_stdio gives PID 1 the caller's own fds 0-2 (conmon's
    pipes) instead of new pipes; preserve_fds=N its fds 3..2+N as well.
    hook_state(status, pid): the state JSON the spec's hooks (hooks.py)
    read; without it the spec's create-time and startContainer hooks are not
    run (rl's engine writes none).
    """
    storage = bundle.extras.storage
    if detached and storage is not None and storage.driver != "overlay":
        raise InvalidArgument(f"a root served by {storage.driver} dies with its creator: "
                              "it cannot be created detached")
    gate_fd = None if started else gate.make(state_dir)
    report_r, report_w = os.pipe()
    sync_r, sync_w = os.pipe()
    pty_parent = pty_child = None
    stdio_child: tuple[int, int, int] | None = None
    parent_fds: list[int] = []
    child_fds: list[int] = [gate_fd] if gate_fd is not None else []
    result = Launched(pid=0)
    if bundle.spec.process.terminal:
        import socket  # only with a terminal (kept off rl-oci's imports)

        pty_parent, pty_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    elif inherit_stdio:
        pass  # PID 1 keeps the fds 0-2 it inherits from this process
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
    if storage is not None and storage.driver in ("fuse", "fuse-overlayfs"):
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
        _first_process(_Child(bundle, report_w, sync_r, gate_fd, stdio_child, pty_child,
                              life_r, join_cgroup=cgroup is not None, detached=detached,
                              new_userns=new_userns, preserve_fds=preserve_fds,
                              hook_state=hook_state))

    os.close(report_w)
    os.close(sync_r)
    result.sync_w = sync_w  # a restart of the container closes the old run's (restart.py)
    if life_r is not None:
        os.close(life_r)
    for fd in child_fds:
        os.close(fd)
    if pty_child is not None:
        pty_child.close()
    created = Created(result, state_dir, os.fdopen(report_r, "rb", buffering=0), parent_fds)
    reports = created.reports
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
            # Here, not at the top: rl-oci (a fresh process per call, no
            # cgroups) would pay ~10 ms for it; rl's fork server has it loaded.
            from . import cgroups

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
        if _runtime_hooks(bundle.spec):
            line = report.read_line(reports)
            if line.startswith("E"):
                report.raise_error(line)
            if line != "H":
                raise RlError("the container's process died while it was being set up")
            if hook_state is not None:
                from . import hooks

                hooks.run(bundle.spec.hooks, hooks.CREATE_RUNTIME, hook_state, "creating",
                          c2)
            os.write(sync_w, b"H")
        if pty_parent is not None:
            import socket

            _, fds, _, _ = socket.recv_fds(pty_parent, 16, 1)
            if fds:
                result.pty_master = fds[0]
                os.set_inheritable(fds[0], False)
            pty_parent.close()
        result.pid = c2
        if started:
            return created  # no gate: what follows is the exec's outcome (wait_started)
        line = report.read_line(reports)
        if line.startswith("E"):
            _reap(c2)
            c2 = 0
            result.pid = 0
            report.raise_error(line)
        if line != "R":
            raise RlError("the container's process died while it was being set up")
        # sync_w stays open (and leaks into nothing: it is close-on-exec) for
        # as long as S lives: C2 reads its EOF as S's death (above).
        return created
    except BaseException:
        _kill(c1, c2, result.storage_pid)
        result.storage_pid = None
        created.close(failed=True)
        raise


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def start(state_dir: str) -> None:
    """Let the container created with state_dir exec its command (any process may)."""
    gate.release(state_dir)


def wait_started(created: Created) -> Launched:
    """The creator's side of the start: return once the command was executed.

    Raises the error PID 1 reported instead (the command not found, 127),
    PID 1 reaped.
    """
    try:
        line = report.read_line(created.reports)  # EOF ("") once the command is executed
        if line.startswith("E"):
            _reap(created.launched.pid)
            created.launched.pid = 0
            report.raise_error(line)
    except BaseException:
        created.abandon()
        raise
    created.close()
    return created.launched


def launch(
    bundle: Bundle, plan: idmap.IdMapPlan, state_dir: str, devnull_stdin: bool,
    before_start: Callable[[int], None] | None = None, cgroup: str | None = None,
    hook_state: StateFn | None = None,
) -> Launched:
    """create, start and wait_started at once: rl's supervisor, which starts what it
    creates. Without a gate: nothing waits, and PID 1 makes no syscall after
    its seccomp filter but the exec (and the report of a failure). hook_state: the
    spec's create and start hooks run (CDI's), reading that state."""
    created = create(bundle, plan, state_dir, devnull_stdin, before_start, cgroup,
                     started=True, hook_state=hook_state)
    return wait_started(created)
