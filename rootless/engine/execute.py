"""`rl exec`: run another process inside a running container.

The rl process itself forks E1, which joins every namespace of the
container's PID 1 with setns (user first: the kernel requires a
single-threaded caller, which a CLI without threads is) and forks E2, the
first process it can place in the container's PID namespace. E2 gets the
container's process settings (user, capabilities, rlimits, env) and execs.

No file description of the caller's ever enters the container: without -t,
E2's stdio are pipes rl made (stdin the host's /dev/null without -i) and rl
relays them to and from its own stdio; with -t E2 opens a pty in the
container's devpts and passes the master back to rl over a socketpair.
Until E2 execs, it is a copy of the CLI (its environment, arguments and
heap) inside the container's PID namespace, so E1 makes itself non-dumpable
before it joins anything and keeps only the descriptors it needs.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import fcntl
import os
import select
import selectors
import signal
import socket
import time
from collections.abc import Callable
from typing import NoReturn

from .. import syscalls as sc
from ..errors import EXIT_RL, RlError
from ..runtime import container, process, report
from ..runtime.spec import Process
from . import events, store, wire
from .options import ExecOptions
from .store import Container

NS_ORDER = ["user", "mnt", "pid", "uts", "ipc", "net", "cgroup"]

# How long output is still relayed once the exec'd process has exited, for a
# process it left behind that holds the pipes (or the pty): docker's daemon
# waits as long for an exec's streams, then closes them.
DRAIN_SECONDS = 2.0


def _open_namespaces(pid: int) -> list[tuple[str, int]]:
    fds: list[tuple[str, int]] = []
    own = {}
    for ns in NS_ORDER:
        with contextlib.suppress(OSError):
            own[ns] = os.readlink(f"/proc/self/ns/{ns}")
    try:
        for ns in NS_ORDER:
            path = f"/proc/{pid}/ns/{ns}"
            if os.readlink(path) == own.get(ns):
                continue  # shared with us (e.g. --network=host): nothing to join
            fds.append((ns, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
    except OSError as e:
        for _, fd in fds:
            os.close(fd)
        raise RlError(f"cannot open the container's namespaces: {e.strerror}", 1) from e
    return fds


def _hide_cmdline() -> None:
    """Overwrite the CLI's arguments where the kernel reads /proc/PID/cmdline.

    Unlike environ or mem, cmdline is readable by every process that sees
    the pid, dumpable or not, and E2 is seen from inside the container.
    """
    with open("/proc/self/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48, 49
    if end - start > 1:
        ctypes.memmove(start, b"rl\0exec"[:end - start - 1].ljust(end - start, b"\0"),
                       end - start)


def _e1(ctr: Container, proc: Process, user: str, cgroup: str | None,
        ns_fds: list[tuple[str, int]],
        report_w: int, stdio: list[int | None], pty_sock: socket.socket | None,
        detach: bool) -> NoReturn:
    """Join the container and fork E2 into it; wait for E2 and exit with its status."""
    try:
        # A non-dumpable task's /proc files (environ, mem, fd, maps, ...) belong
        # to the root of its mm's user namespace, here the host's, which no
        # process of the container reaches, and it cannot be ptraced from
        # there. The flag goes with fork to E2 and is reset by execve.
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        _hide_cmdline()
        if detach:
            # E1 outlives rl, as the exec'd process's reaper: it holds
            # nothing of rl's (a caller waiting for EOF on rl's output).
            os.setsid()
        else:
            # Out of the caller's foreground process group: a ^C reaches E2
            # once, through rl's forwarding, not a second time through E1's.
            os.setpgid(0, 0)
        # The host's /dev/null: the container's could be a FIFO it made.
        null = os.open("/dev/null", os.O_RDWR)
        for target, fd in enumerate(stdio):
            os.dup2(null if fd is None else fd, target)
        keep = {report_w, null, *(fd for _, fd in ns_fds)}
        if pty_sock is not None:
            keep.add(pty_sock.fileno())
        sc.close_fds_except(keep)  # the CLI's files and sockets, the other pipe ends
        if cgroup:  # the container's limits apply to what it execs too
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        ids = None
        for ns, fd in ns_fds:
            if ns == "mnt":  # still the host's /proc, seen from the container's userns
                ids = process.IdMaps.read()
            sc.setns(fd, 0)
            os.close(fd)
        e2 = os.fork()
        if e2 == 0:
            _e2(ctr, proc, user, report_w, pty_sock, null, ids or process.IdMaps.read())
        # rl signals E1, its child, and E1 its own: neither pid can be another
        # process's while its parent has not reaped it (rl used to signal E2's
        # pid itself, after E1 had reaped it and until the output was drained).
        e2_fd = os.pidfd_open(e2)

        def forward(signum: int, _frame: object) -> None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(e2_fd, signum)

        for sig in wire.PROXIED:
            signal.signal(sig, forward)
        report.send(report_w, f"P{e2}")
        os.close(report_w)
        if pty_sock is not None:
            pty_sock.close()
        # E2 alone holds the container's ends now: EOF on them is the container's.
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        _, status = os.waitpid(e2, 0)
        os._exit(container.exit_code(status))
    except BaseException as e:
        report.fail_with(report_w, e, "joining the container")


def _e2(ctr: Container, proc: Process, user: str, report_w: int,
        pty_sock: socket.socket | None, null: int, ids: process.IdMaps) -> NoReturn:
    try:
        os.close(null)
        os.setsid()
        if pty_sock is not None:
            container.take_terminal(pty_sock)
        home = process.resolve_user(proc, user, ids)
        env = process.env_with_defaults(proc.env, home)
        process.prepare(proc, ctr.config.spec.linux.seccomp, ids,
                        process.keep_groups(ctr.config.spec.annotations))
        # A uid change resets the flag to fs.suid_dumpable, which may be 1.
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        process.execute(proc, env)
    except BaseException as e:
        report.fail_with(report_w, e)
    os._exit(EXIT_RL)


def _set_nonblocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


class _Relay:
    """rl's stdio (or the fds a face gives) <-> the container's pipes or pty
    master, until E1 exits and the output is drained (EOF, or DRAIN_SECONDS
    after the exit).

    Only rl's own ends are made non-blocking; rl's stdio are read only once
    ready, or, where they cannot be polled (a regular file, /dev/null), read
    directly, and written with blocking writes: the user's shell shares
    those file descriptions.
    """

    def __init__(self, e1: int, outputs: dict[int, int], stdin_dst: int | None,
                 pty: bool, stdin_src: int = 0) -> None:
        self.e1 = e1
        self.src = stdin_src  # what is read for the container's input (rl's stdin)
        self.outputs = dict(outputs)  # our read end -> rl's fd (1 or 2)
        self.dst = stdin_dst  # our write end (or the pty master); None: no -i
        self.pty = pty
        self.sel = selectors.DefaultSelector()
        self.events: dict[int, int] = {}
        self.pending = b""  # read from rl's stdin, not yet taken by the container
        self.stdin_open = stdin_dst is not None
        self.stdin_polled = False
        self.eof_sent = False
        for fd in {*self.outputs, *([stdin_dst] if stdin_dst is not None else [])}:
            _set_nonblocking(fd)
        for fd in self.outputs:
            self._want(fd, selectors.EVENT_READ, True)
        self.pidfd = os.pidfd_open(e1)
        self.sel.register(self.pidfd, selectors.EVENT_READ)
        if self.stdin_open:
            try:
                self._want(self.src, selectors.EVENT_READ, True)
                self.stdin_polled = True
            except OSError:  # a regular file, /dev/null (see cli/attach.py's watch_stdin)
                pass

    def _want(self, fd: int, event: int, on: bool) -> None:
        old = self.events.get(fd, 0)
        new = old | event if on else old & ~event
        if new == old:
            return
        if not old:
            self.sel.register(fd, new)
        elif not new:
            self.sel.unregister(fd)
        else:
            self.sel.modify(fd, new)
        if new:
            self.events[fd] = new
        else:
            self.events.pop(fd, None)

    def run(self) -> int:
        status = None
        deadline = 0.0
        try:
            while status is None or (self.outputs and time.monotonic() < deadline):
                if self.stdin_open and not self.stdin_polled and not self.pending:
                    self._read_stdin()  # never waits: that is why it cannot be polled
                timeout = None
                if status is not None:
                    timeout = max(0.0, deadline - time.monotonic())
                if self.stdin_open and not self.stdin_polled and not self.pending:
                    timeout = 0
                for key, mask in self.sel.select(timeout):
                    fd = key.fd
                    if fd == self.pidfd:
                        _, raw = os.waitpid(self.e1, 0)
                        status = container.exit_code(raw)
                        deadline = time.monotonic() + DRAIN_SECONDS
                        self.sel.unregister(self.pidfd)
                        self._stop_stdin()
                    elif fd == self.src:
                        self._read_stdin()
                    else:
                        if mask & selectors.EVENT_WRITE:
                            self._flush()
                        if mask & selectors.EVENT_READ and fd in self.outputs:
                            self._copy_out(fd)
            assert status is not None
            return status
        finally:
            self._stop_stdin()
            for fd in list(self.outputs):
                self._close_output(fd)
            self.sel.close()
            os.close(self.pidfd)

    def _copy_out(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's last slave is closed
            data = b""
        if not data:
            self._close_output(fd)
            return
        if not _write_out(self.outputs[fd], data):
            # Nobody reads rl's output any more: the container's writer gets
            # EPIPE, as in a shell pipeline.
            self._close_output(fd)

    def _close_output(self, fd: int) -> None:
        self.outputs.pop(fd, None)
        self._want(fd, selectors.EVENT_READ, False)
        if fd != self.dst:  # the pty master is also stdin's destination
            os.close(fd)
        elif self.pty:
            self._stop_stdin()

    def _read_stdin(self) -> None:
        try:
            data = os.read(self.src, 65536)
        except BlockingIOError:  # somebody else made rl's stdin non-blocking
            return
        except OSError:
            data = b""
        if not data:
            self.stdin_open = False
            self._unwatch_stdin()
            if not self.pending:
                self._end_stdin()
            return
        self.pending = data
        self._flush()

    def _flush(self) -> None:
        assert self.dst is not None
        try:
            while self.pending:
                n = os.write(self.dst, self.pending)
                self.pending = self.pending[n:]
        except BlockingIOError:
            pass
        except OSError:  # the container closed its stdin: nothing more to give it
            self.pending = b""
            self._stop_stdin()
            return
        waiting = bool(self.pending)
        self._want(self.dst, selectors.EVENT_WRITE, waiting)
        if self.stdin_polled and self.stdin_open:
            self._want(self.src, selectors.EVENT_READ, not waiting)
        if not waiting and not self.stdin_open:
            self._end_stdin()

    def _unwatch_stdin(self) -> None:
        if self.stdin_polled:
            self._want(self.src, selectors.EVENT_READ, False)
            self.stdin_polled = False

    def _end_stdin(self) -> None:
        """The end of rl's stdin: EOF for the container (a pty has no half-close: ^D,
        written as input is, once the pty takes it)."""
        if self.dst is None:
            return
        if not self.pty:
            self._stop_stdin()
        elif not self.eof_sent:
            self.eof_sent = True
            self.pending = b"\x04"
            self._flush()  # back here once it is written
        else:
            self._want(self.dst, selectors.EVENT_WRITE, False)
            self.dst = None

    def _stop_stdin(self) -> None:
        """No more input: rl's stdin is no longer read, the pipe is closed."""
        self.stdin_open = False
        self._unwatch_stdin()
        self.pending = b""
        if self.dst is None:
            return
        dst, self.dst = self.dst, None
        self._want(dst, selectors.EVENT_WRITE, False)
        if dst not in self.outputs:
            os.close(dst)


def _write_out(fd: int, data: bytes) -> bool:
    """A blocking write of all of data to rl's fd 1 or 2; False once nobody reads it."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:  # made non-blocking by whoever shares it: wait
            select.select([], [fd], [])
            continue
        except OSError:
            return False
        view = view[n:]
    return True


class Exec:
    """A process `start` ran in a container, as rl holds it: E1 (its parent in the
    container) by pid and pidfd, and rl's ends of the process's stdio.

    A face relays those ends to its own streams (`relay`), passes signals on
    (`signal`) and, with a pty, window sizes (`resize`); the terminal itself
    (raw mode, SIGWINCH, rl's own signal handlers) is the face's business.
    """

    def __init__(self, e1: int, pidfd: int, tty: bool) -> None:
        self.e1 = e1
        self.pidfd = pidfd
        self.tty = tty
        self.outputs: dict[int, int] = {}  # rl's read ends -> the stream (1 or 2)
        self.stdin: int | None = None  # rl's write end, or the pty master with -i
        self.master: int | None = None  # the pty master, with -t

    def signal(self, signum: int) -> None:
        """Pass a signal on: E1 gives it to the exec'd process (none once closed)."""
        if self.pidfd < 0:
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, signum)

    def resize(self, rows: int, cols: int) -> None:
        if self.master is not None:
            container.set_winsize(self.master, rows, cols)

    def relay(self, stdin: int = 0, streams: tuple[int, int] = (1, 2)) -> int:
        """Relay until the process has exited and its output is drained; its exit status.

        stdin is read for the process's input (with -i), streams are where its
        stdout and stderr go (a pty's output is all stdout)."""
        outputs = {fd: streams[target - 1] for fd, target in self.outputs.items()}
        relay = _Relay(self.e1, outputs, self.stdin, pty=self.tty, stdin_src=stdin)
        self.outputs, self.stdin = {}, None  # the relay closes them, the pty master too
        try:
            return relay.run()
        finally:
            self.master = None  # resize works while the relay runs, never after

    def close(self) -> None:
        """Drop what rl still holds (the process runs on, E1 reaps it)."""
        for fd in {*self.outputs, *([self.stdin] if self.stdin is not None else []),
                   *([self.master] if self.master is not None else [])}:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.outputs, self.stdin, self.master = {}, None, None
        with contextlib.suppress(OSError):
            os.close(self.pidfd)
        self.pidfd = -1


def _process(ctr: Container, opts: ExecOptions) -> Process:
    """The container's process settings with exec's command, env, cwd and terminal."""
    proc = copy.deepcopy(ctr.config.spec.process)
    proc.args = list(opts.command)
    merged = {e.partition("=")[0]: e for e in proc.env}
    if opts.tty:  # docker: TERM=xterm under the container's Env, under exec's -e
        merged.setdefault("TERM", "TERM=xterm")
    for item in opts.env:
        key, sep, _ = item.partition("=")
        if sep:  # a bare name is the face's to resolve; one it could not is left out
            merged[key] = item
    proc.env = list(merged.values())
    if opts.workdir:
        proc.cwd = opts.workdir
    proc.terminal = opts.tty
    return proc


def start(ctr: Container, opts: ExecOptions,
          spawned: Callable[[Exec], None] | None = None) -> Exec:
    """Run opts.command in the running container ctr; returns once it was executed.

    spawned, if given, is called as soon as the process exists, before it is
    executed: from then on signals can be passed on (a face installs its
    signal handlers there). With -d the returned Exec holds no stdio."""
    st = store.running_or_error(ctr)
    cfg = ctr.config
    proc = _process(ctr, opts)
    exec_id = events.exec_event(cfg, "exec_create", proc.args)
    tty, detach = opts.tty, opts.detach
    ns_fds = _open_namespaces(st.pid)
    report_r, report_w = os.pipe()
    pty_parent = pty_child = None
    stdio: list[int | None] = [None, None, None]  # E2's 0, 1, 2; None: /dev/null
    outputs: dict[int, int] = {}
    stdin_w = None
    if tty:
        pty_parent, pty_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    elif not detach:
        if opts.interactive:
            stdio[0], stdin_w = os.pipe()
        for target in (1, 2):
            r, stdio[target] = os.pipe()
            outputs[r] = target
    e1 = os.fork()
    if e1 == 0:
        _e1(ctr, proc, opts.user if opts.user is not None else cfg.user, st.cgroup, ns_fds,
            report_w, stdio, pty_child, detach)
    ex = Exec(e1, os.pidfd_open(e1), tty)
    ex.outputs, ex.stdin = outputs, stdin_w
    for fd in [*(fd for _, fd in ns_fds), report_w, *(fd for fd in stdio if fd is not None)]:
        os.close(fd)
    if pty_child is not None:
        pty_child.close()
    reports = os.fdopen(report_r, "rb", buffering=0)
    try:
        line = report.read_line(reports)
        if line.startswith("E"):
            os.waitpid(e1, 0)
            report.raise_error(line)
        if spawned is not None:
            spawned(ex)
        if pty_parent is not None:
            _, fds, _, _ = socket.recv_fds(pty_parent, 16, 1)
            pty_parent.close()
            if fds:
                ex.master = fds[0]
                ex.outputs[ex.master] = 1
                ex.stdin = ex.master if opts.interactive else None
                if opts.console_size:  # before the command runs, as far as rl can
                    ex.resize(*opts.console_size)
        line = report.read_line(reports)
        if line.startswith("E"):
            os.waitpid(e1, 0)
            report.raise_error(line)
        events.exec_event(cfg, "exec_start", proc.args, exec_id)
        if detach:
            ex.close()  # executed; E1 waits for it on its own
        return ex
    except BaseException:
        ex.close()
        raise
    finally:
        reports.close()


def run(ctr: Container, opts: ExecOptions) -> int:
    """Run opts.command in the container, relaying rl's own stdio; its exit status
    (-d: 0 once it was executed). No terminal handling: the CLI's is in cli/execterm.py."""
    ex = start(ctr, opts)
    if opts.detach:
        return 0
    try:
        return ex.relay()
    finally:
        ex.close()
