"""`rl exec`: run another process inside a running container.

The rl process itself forks E1, which joins every namespace of the
container's PID 1 with setns (user first: the kernel requires a
single-threaded caller, which a CLI without threads is) and forks E2, the
first process it can place in the container's PID namespace. E2 gets the
container's process settings (user, capabilities, rlimits, env) and execs.
Without -t, E2 simply inherits rl's own stdio; with -t it opens a pty in the
container's devpts and passes the master back to rl over a socketpair.
"""

from __future__ import annotations

import contextlib
import copy
import os
import selectors
import signal
import socket
import termios
import tty as ttymod
from typing import NoReturn

from . import _syscalls as sc
from . import api, attach, container, process, report
from .errors import EXIT_RL, RlError
from .store import Container

NS_ORDER = ["user", "mnt", "pid", "uts", "ipc", "net", "cgroup"]


def _open_namespaces(pid: int) -> list[int]:
    fds = []
    own = {}
    for ns in NS_ORDER:
        with contextlib.suppress(OSError):
            own[ns] = os.readlink(f"/proc/self/ns/{ns}")
    try:
        for ns in NS_ORDER:
            path = f"/proc/{pid}/ns/{ns}"
            if os.readlink(path) == own.get(ns):
                continue  # shared with us (e.g. --network=host): nothing to join
            fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as e:
        for fd in fds:
            os.close(fd)
        raise RlError(f"cannot open the container's namespaces: {e.strerror}", 1) from e
    return fds


def _e2(ctr: Container, proc_spec: object, user: str, report_w: int,
        pty_sock: socket.socket | None, stdin_devnull: bool) -> NoReturn:
    from .spec import Process

    proc = proc_spec
    assert isinstance(proc, Process)
    try:
        os.setsid()
        if pty_sock is not None:
            container.take_terminal(pty_sock)
        elif stdin_devnull:
            fd = os.open("/dev/null", os.O_RDONLY)
            os.dup2(fd, 0)
            os.close(fd)
        home = process.resolve_user(proc, user)
        env = process.env_with_defaults(proc.env, home)
        process.prepare(proc, ctr.config.spec.linux.seccomp)
        process.execute(proc, env)
    except BaseException as e:
        report.fail_with(report_w, e)
    os._exit(EXIT_RL)


def _pump_pty(master: int, stdin: bool) -> None:
    """Copy between rl's terminal and the pty master until the master reports EOF/EIO."""
    sel = selectors.DefaultSelector()
    sel.register(master, selectors.EVENT_READ, "master")
    if stdin:
        sel.register(0, selectors.EVENT_READ, "stdin")
    while True:
        for key, _ in sel.select():
            if key.data == "master":
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    sel.close()
                    return
                attach._write_all(1, data)
            else:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    sel.unregister(0)
                    os.write(master, b"\x04")


def run(ctr: Container, argv: list[str], env: list[str], workdir: str | None,
        user: str | None, tty: bool, interactive: bool, detach: bool = False) -> int:
    """Run argv in the container; its exit status (-d: 0 once it was executed)."""
    st = api.running_or_error(ctr)
    cfg = ctr.config
    proc = copy.deepcopy(cfg.spec.process)
    proc.args = argv
    merged = {e.partition("=")[0]: e for e in proc.env}
    for item in env:
        key, sep, _ = item.partition("=")
        if sep:
            merged[key] = item
        elif key in os.environ:
            merged[key] = f"{key}={os.environ[key]}"
    proc.env = list(merged.values())
    if workdir:
        proc.cwd = workdir
    proc.terminal = tty
    ns_fds = _open_namespaces(st.pid)
    report_r, report_w = os.pipe()
    pty_parent = pty_child = None
    if tty:
        pty_parent, pty_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    e1 = os.fork()
    if e1 == 0:
        try:
            os.close(report_r)
            if pty_parent is not None:
                pty_parent.close()
            if detach:
                # E1 outlives rl, as the exec'd process's reaper: it holds
                # nothing of rl's (a caller waiting for EOF on rl's output).
                os.setsid()
                null = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.close(null)
            if st.cgroup:  # the container's limits apply to what it execs too
                with open(os.path.join(st.cgroup, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
            for fd in ns_fds:
                sc.setns(fd, 0)
            e2 = os.fork()
            if e2 == 0:
                _e2(ctr, proc, user if user is not None else cfg.user, report_w, pty_child,
                    not interactive)
            report.send(report_w, f"P{e2}")
            os.close(report_w)
            for sig in attach.PROXIED:
                signal.signal(sig, signal.SIG_IGN)
            _, status = os.waitpid(e2, 0)
            os._exit(container.exit_code(status))
        except BaseException as e:
            report.fail_with(report_w, e, "joining the container")
    for fd in ns_fds:
        os.close(fd)
    os.close(report_w)
    if pty_child is not None:
        pty_child.close()
    reports = os.fdopen(report_r, "rb", buffering=0)
    master = None
    saved_tc = None
    try:
        line = report.read_line(reports)
        e2_pid = int(line[1:]) if line.startswith("P") else 0
        if line.startswith("E"):
            os.waitpid(e1, 0)
            report.raise_error(line)

        def forward(signum: int, _frame: object) -> None:
            if e2_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(e2_pid, signum)

        for sig in attach.PROXIED:
            signal.signal(sig, forward)
        if pty_parent is not None:
            _, fds, _, _ = socket.recv_fds(pty_parent, 16, 1)
            pty_parent.close()
            if fds:
                master = fds[0]
                size = attach.terminal_size()
                if size:
                    container.set_winsize(master, *size)
                signal.signal(signal.SIGWINCH, lambda *_: (
                    container.set_winsize(master, *s) if (s := attach.terminal_size()) else None))
        line = report.read_line(reports)
        if line.startswith("E"):
            os.waitpid(e1, 0)
            report.raise_error(line)
        if detach:
            return 0  # executed; E1 waits for it on its own
        if master is not None:
            if interactive and os.isatty(0):
                saved_tc = termios.tcgetattr(0)
                ttymod.setraw(0)
            _pump_pty(master, interactive)
        _, status = os.waitpid(e1, 0)
        return container.exit_code(status)
    finally:
        if saved_tc is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved_tc)
        reports.close()
        if master is not None:
            os.close(master)
