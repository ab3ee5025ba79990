"""`rl-oci exec`: a new process in a running container, as runc exec.

    rl-oci ──fork──▶ E1: setns into PID 1's namespaces (user first), fork, exit
                      └─▶ E2: in the container's PID namespace; [pty: open it
                          there, send the master back]; user, caps, seccomp
                          (the bundle's profile), exec

E1 exits as soon as E2 exists, so E2 is adopted by the caller's nearest
child subreaper: conmon for `exec -d` (it waits for the pid in --pid-file),
rl-oci itself in the foreground (it waits and exits with E2's status). The
report pipe (runtime/report.py) carries "P<pid>" and a setup or exec error;
its EOF means E2 executed its command.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import socket
from dataclasses import dataclass, field
from typing import NoReturn

from .. import syscalls as sc
from ..errors import EXIT_RL, InvalidArgument, NotRunning, RlError
from ..runtime import container, process, report
from ..runtime import spec as oci
from ..runtime.spec import Process, Seccomp
from . import console, lifecycle
from .records import Root

NS_ORDER = ["user", "mnt", "pid", "uts", "ipc", "net", "cgroup"]


@dataclass
class ExecOptions:
    process_file: str | None = None
    args: list[str] = field(default_factory=list)
    detach: bool = False
    tty: bool = False
    console_socket: str | None = None
    pid_file: str | None = None
    env: list[str] = field(default_factory=list)
    cwd: str | None = None
    user: str | None = None  # uid[:gid]
    preserve_fds: int = 0


def _process_from_file(path: str) -> Process:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
        oci.check(Process, data, "process")
    except OSError as e:
        raise InvalidArgument(f"--process {path}: {e.strerror}") from None
    except (ValueError, RecursionError) as e:
        raise InvalidArgument(f"--process {path}: {e}") from None
    proc = oci.from_json(Process, data)
    if not proc.args:
        raise InvalidArgument(f"--process {path}: process.args is empty")
    return proc


def _process(base: Process, opts: ExecOptions) -> Process:
    if opts.process_file:
        return _process_from_file(opts.process_file)
    if not opts.args:
        raise InvalidArgument("exec: no command given (ARGS or --process)")
    proc = copy.deepcopy(base)
    proc.args = list(opts.args)
    proc.terminal = opts.tty
    proc.console_size = None
    proc.env = [*proc.env, *opts.env]
    if opts.cwd:
        proc.cwd = opts.cwd
    if opts.user:
        uid, _, gid = opts.user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise InvalidArgument(f"--user {opts.user}: expected uid[:gid]")
        proc.user.uid, proc.user.gid = int(uid), int(gid or 0)
        proc.user.additional_gids = []
    return proc


def _open_namespaces(pid: int) -> list[tuple[str, int]]:
    fds: list[tuple[str, int]] = []
    try:
        for ns in NS_ORDER:
            path = f"/proc/{pid}/ns/{ns}"
            with contextlib.suppress(OSError):
                if os.readlink(path) == os.readlink(f"/proc/self/ns/{ns}"):
                    continue  # shared with rl-oci (no user namespace of its own)
            fds.append((ns, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
    except OSError as e:
        for _, fd in fds:
            os.close(fd)
        raise NotRunning(f"cannot open the container's namespaces: {e.strerror}") from None
    return fds


def _e1(proc: Process, seccomp: Seccomp | None, ns_fds: list[tuple[str, int]],
        report_w: int, pty_sock: socket.socket | None, preserve: int) -> NoReturn:
    try:
        # Not dumpable: the container cannot read this host process's memory
        # or fds through /proc while it is inside (reset by E2's execve).
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        keep = {report_w, *(fd for _, fd in ns_fds), *range(3, 3 + preserve)}
        if pty_sock is not None:
            keep.add(pty_sock.fileno())
        sc.close_fds_except(keep)
        ids = None
        for ns, fd in ns_fds:
            if ns == "mnt":
                ids = process.IdMaps.read()  # still the host's /proc
            sc.setns(fd, 0)
            os.close(fd)
        e2 = os.fork()
        if e2 == 0:
            _e2(proc, seccomp, report_w, pty_sock, ids or process.IdMaps.read(), preserve)
        report.send(report_w, f"P{e2}")
    except BaseException as e:
        report.fail_with(report_w, e, "joining the container")
    os._exit(0)


def _e2(proc: Process, seccomp: Seccomp | None, report_w: int,
        pty_sock: socket.socket | None, ids: process.IdMaps, preserve: int) -> NoReturn:
    try:
        os.setsid()
        if pty_sock is not None:
            container.take_terminal(pty_sock, proc.console_size)
        u = proc.user
        home = process.resolve_user(proc, f"{u.uid}:{u.gid}", ids)
        env = process.env_with_defaults(proc.env, home)
        process.prepare(proc, seccomp, ids)
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        process.execute(proc, env, preserve)
    except BaseException as e:
        report.fail_with(report_w, e)
    os._exit(EXIT_RL)


def run(root: Root, cid: str, opts: ExecOptions) -> int:
    """Exec in container cid; 0 once started with -d, else the process's exit code."""
    rec, status = root.get(cid)
    if status not in ("created", "running"):
        raise NotRunning("cannot exec in a stopped container")
    b = lifecycle.load(rec.bundle)
    proc = _process(b.spec.process, opts)
    if proc.terminal and not opts.console_socket and opts.detach:
        raise InvalidArgument("cannot allocate tty if rl-oci will detach without setting "
                              "console socket")
    lifecycle.check_preserved(opts.preserve_fds)
    sock = console.connect(opts.console_socket) if opts.console_socket else None
    if not opts.detach:
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)  # E2 is adopted by rl-oci when E1 exits
    ns_fds = _open_namespaces(rec.pid)
    report_r, report_w = os.pipe()
    pty_parent = pty_child = None
    if proc.terminal:
        pty_parent, pty_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        e1 = os.fork()
        if e1 == 0:
            os.close(report_r)
            if pty_parent is not None:
                pty_parent.close()
            _e1(proc, b.spec.linux.seccomp, ns_fds, report_w, pty_child, opts.preserve_fds)
    finally:
        os.close(report_w)
        for _, fd in ns_fds:
            os.close(fd)
        if pty_child is not None:
            pty_child.close()
    master = None
    with os.fdopen(report_r, "rb", buffering=0) as reports:
        pid = 0
        error = None
        if pty_parent is not None:
            pty_parent.settimeout(30)
            with contextlib.suppress(OSError):
                _, fds, _, _ = socket.recv_fds(pty_parent, 16, 1)
                master = fds[0] if fds else None
            pty_parent.close()
        while True:
            line = report.read_line(reports)
            if not line:
                break
            if line.startswith("P"):
                pid = int(line[1:])
            elif line.startswith("E") and error is None:
                error = line
    os.waitpid(e1, 0)
    if error is not None:
        if pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        if master is not None:
            os.close(master)
        report.raise_error(error)
    if not pid:
        raise RlError("exec: the process died while joining the container")
    if master is not None and sock is not None:
        console.send(sock, master)
        os.close(master)
        master = None
    if sock is not None:
        sock.close()
    if opts.pid_file:
        lifecycle.write_pid_file(opts.pid_file, pid)
    if opts.detach:
        if master is not None:
            os.close(master)
        return 0
    return lifecycle.wait_forwarding(pid, master)
