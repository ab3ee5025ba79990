"""The per-container supervisor: owns one container's life, as conmon does for podman.

A supervisor is a worker of the container's monitor (monitor.py), itself forked
by the user's fork server (forkserver.py), with the requesting client's socket
in hand. The monitor is the parent of the container's PID 1 and reports its exit
over a channel; an idle supervisor hands its descriptors to the monitor and exits
(`Supervisor.quiet`), and a new one resumes (`resume`) when there is work again.

The first creates the container synchronously (container.launch), then runs
trio to: pump the container's output into its log and to attached clients,
feed stdin, relay signals and terminal resizes, answer `kill`/`wait`/`resize`
on its control socket, and, when PID 1 exits, record the exit status, clean
up and go.

Liveness: the supervisor holds an exclusive flock on the record's sup.lock
(containers/<id>/sup.lock) for its whole life and writes its pid and runtime
directory into it; store.supervisor_alive() tests it, so a supervisor killed
with SIGKILL is seen as gone by the very next rl command, whatever that
command's XDG_RUNTIME_DIR.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from netstack import etc
from netstack.nethost import Attachment
from netstack.options import SLIRP6_ADDR, SLIRP6_GATEWAY, NetOptions
from netstack.stack import NetStack

from .. import paths
from .. import syscalls as sc
from ..errors import (
    EXIT_RL,
    Conflict,
    NeedsFullCli,
    NoSuchContainer,
    NoSuchImage,
    NotFound,
    RlError,
    kind_of,
)
from ..runtime import cgroups, container, idmap
from ..runtime.bundle import Bundle, Extras, Ipv6, Storage
from . import containers as api
from . import events, health, hpc, restart, store, wire
from .monitor import Channel, Log
from .options import CreateOptions
from .store import Container, ContainerConfig

READ_SIZE = 65536
# Networks a resumed supervisor needs nothing of the first one's for (user networks
# and container: joins re-plug or re-join at a restart, from the first NetStack).
LEAN_MODES = ("none", "host")


def write_etc_files(cfg: ContainerConfig, run_dir: Path, net: NetOptions | None = None) -> None:
    hostname = cfg.spec.hostname or cfg.id[:12]
    (run_dir / "hostname").write_text(hostname + "\n")
    # Records made before the netstack have no "net": their mode is cfg.network.
    net = net or NetOptions.from_dict(cfg.net or {"mode": cfg.network.partition(":")[0]})
    joined = None  # --network container:NAME shares NAME's files, if NAME is found
    if net.mode == "container":
        with contextlib.suppress(RlError):
            joined = store.lookup(net.container).run_dir
    (run_dir / "hosts").write_text(etc.hosts(net, hostname, cfg.name, joined))
    (run_dir / "resolv.conf").write_text(etc.resolv_conf(net, joined))


def _attachments(cfg: ContainerConfig, opts: NetOptions, run_dir: Path) -> list[Attachment]:
    """A user network: the container's leases and NICs (its network's, then those
    `network connect` added), and the /etc files naming the first."""
    if opts.mode != "network":
        return []
    from . import networks

    att = networks.attachment(cfg.id, networks.lease_names(cfg, opts.aliases),
                              opts.network, opts.ip)
    opts.address, opts.gateway = att.address, att.gateway
    write_etc_files(cfg, run_dir, opts)
    out = [att]
    for link in opts.connected:
        with contextlib.suppress(NotFound):  # a removed network: the others still come up
            out.append(networks.attachment(cfg.id, networks.lease_names(cfg, link.aliases),
                                           link.network, link.ip, link.ifname))
    return out


def _hook_state(cfg: ContainerConfig) -> Callable[[str, int], bytes] | None:
    """The OCI state a spec's hooks read on stdin (CDI's hooks: `rl run` has no bundle
    directory, so the state names the container's record directory as its bundle)."""
    if cfg.spec.hooks is None:
        return None

    def state(status: str, pid: int) -> bytes:
        return json.dumps({"ociVersion": "1.2.0", "id": cfg.id, "status": status, "pid": pid,
                           "bundle": str(paths.container_dir(cfg.id)),
                           "annotations": cfg.spec.annotations}).encode()

    return state


def _joined_pid(name: str) -> Callable[[], int]:
    """--network container:NAME: NAME's PID 1 when the stack asks, or why not."""
    def pid() -> int:
        try:
            other = store.lookup(name)
        except RlError as e:
            raise RlError(f"cannot join the network of container {name}: "
                          f"{e.message}") from None
        st = other.state()
        if st.status != "running":
            raise RlError(f"cannot join the network of container {name}: it is not running")
        return st.pid
    return pid


class Detached(Exception):
    """A client's detach keys: it leaves, the container's stdin stays open (docker's)."""


class Client:
    """An attached client; output pumps and the exit notice take turns sending to it."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._lock = trio.Lock()

    async def send(self, data: bytes) -> None:
        async with self._lock:
            await self.stream.send_all(data)


class Supervisor:
    def __init__(self, ctr: Container, launched: container.Launched,
                 net: NetStack | None, state: store.State,
                 chan: Channel | None, log: Log | None = None) -> None:
        self.ctr = ctr
        self.chan = chan
        # The monitor's children that exited (PID 1, the root's FUSE server): pid ->
        # wait status, and who waits for one.
        self.child_exits: dict[int, int] = {}
        self.exit_seen = trio.Event()
        self.serving = 0  # control connections being served
        self.net = net
        self.cfg = ctr.config
        # The record's state as this supervisor wrote it: finish() starts from it, not
        # from state.json, which may have been damaged meanwhile.
        self.state = state
        self.launched = launched
        self.log = log or Log(ctr.log_path)
        self.clients: list[Client] = []
        self.exit_code: int | None = None
        self.exited = trio.Event()
        self.done = trio.Event()
        self.waiters = 0  # control clients blocked in "wait"
        self.leftover_cgroup = ""  # removed by after_run()
        self.volume_trash: list[Path] = []  # --rm's anonymous volumes, unnamed: after_run()
        self.storage_error = ""  # why the root's FUSE server died under the container
        self.stdin_stream: trio.lowlevel.FdStream | None = None
        if launched.pty_master is not None:
            self.stdin_stream = trio.lowlevel.FdStream(os.dup(launched.pty_master))
        elif launched.stdin is not None:
            self.stdin_stream = trio.lowlevel.FdStream(launched.stdin)
        self.restarts = restart.Restarts(restart.Policy.of(self.cfg), self.state.restart_count)
        self.checks = health.Checks()
        self.busy_at = 0.0  # trio time a control connection last ended

    def relaunched(self, launched: container.Launched) -> None:
        """restart.again() started PID 1 anew: this supervisor serves the new one."""
        old = self.launched
        for fd in (old.life_w, old.sync_w):  # the old run's pipes (and stdin): theirs only
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self.stdin_stream is not None:
            with contextlib.suppress(OSError):
                self.stdin_stream.close()
        self.launched = launched
        events.started(self.cfg)
        self.exit_code = None
        self.exited = trio.Event()
        self.stdin_stream = None
        if launched.pty_master is not None:
            self.stdin_stream = trio.lowlevel.FdStream(os.dup(launched.pty_master))
        elif launched.stdin is not None:
            self.stdin_stream = trio.lowlevel.FdStream(launched.stdin)

    # -- output ---------------------------------------------------------------

    async def _broadcast(self, data: bytes) -> None:
        for client in list(self.clients):
            try:
                await client.send(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.clients.remove(client)

    async def pump(self, fd: int, stream: str, kind: int) -> None:
        async with trio.lowlevel.FdStream(fd) as src:
            while True:
                try:
                    data = await src.receive_some(READ_SIZE)
                except trio.BrokenResourceError:  # EIO on a pty whose slave closed
                    break
                except OSError as e:
                    if e.errno == errno.EIO:
                        break
                    raise
                if not data:
                    break
                self.log.write(stream, data)
                await self._broadcast(wire.frame(kind, data))

    # -- input and control ------------------------------------------------------

    def kill(self, signum: int) -> None:
        restart.on_kill(self, signum)
        if self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.launched.pid, signum)

    def resize(self, rows: int, cols: int) -> None:
        if self.launched.pty_master is not None:
            with contextlib.suppress(OSError):
                container.set_winsize(self.launched.pty_master, rows, cols)

    async def handle_control(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "signal":
            self.kill(int(msg["signal"]))
        elif op == "resize":
            self.resize(int(msg["rows"]), int(msg["cols"]))
        elif op == "detach":
            raise Detached

    async def serve_client(self, stream: trio.SocketStream, stdin: bool) -> None:
        """An attached client: frames in (stdin, control), output frames out.

        Whatever a client sends, or however it goes away, the supervisor and
        the container go on.
        """
        try:
            await self._serve_client(stream, stdin)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ValueError,
                KeyError, TypeError, Detached):
            pass

    async def _serve_client(self, stream: trio.SocketStream, stdin: bool) -> None:
        reader = wire.FrameReader()
        while True:
            try:
                data = await stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                # The client went away: docker detaches and the container goes on.
                # A pipe's reader gets EOF (as with docker run -i); a terminal is
                # left alone, so a shell under -t survives its client.
                if stdin and self.launched.pty_master is None:
                    await self.close_stdin()
                return
            for kind, payload in reader.feed(data):
                if kind == wire.STDIN and stdin and self.stdin_stream is not None:
                    try:
                        await self.stdin_stream.send_all(payload)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
                elif kind == wire.STDIN_EOF and stdin:
                    await self.close_stdin()
                elif kind == wire.CONTROL:
                    await self.handle_control(json.loads(payload))

    async def close_stdin(self) -> None:
        if self.launched.pty_master is not None:
            # A terminal has no half-close: send EOF the way a keyboard does.
            if self.stdin_stream is not None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.stdin_stream.send_all(b"\x04")
            return
        if self.stdin_stream is not None:
            await self.stdin_stream.aclose()
            self.stdin_stream = None

    async def control_server(self, listener: trio.SocketListener) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as e:
                    # Out of descriptors (a flood on a published port, say):
                    # wait for some to free up; never let it take the
                    # supervisor, and so the container, down.
                    if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        await trio.sleep(0.1)
                        continue
                    raise
                nursery.start_soon(self.serve_control, stream)

    async def serve_control(self, stream: trio.SocketStream) -> None:
        # A client may vanish at any moment (a `stop -t` that gave up waiting):
        # that must never take the supervisor, and the container, down with it.
        self.serving += 1
        try:
            await self._serve_control(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ValueError,
                KeyError, TypeError):
            pass
        finally:
            self.serving -= 1
            self.busy_at = trio.current_time()

    async def _serve_control(self, stream: trio.SocketStream) -> None:
        async with stream:
            line = b""
            while not line.endswith(b"\n") and len(line) < 65536:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                line += chunk
            try:
                msg = json.loads(line)
            except ValueError:
                return
            op = msg.get("op")
            if op == "kill":
                self.kill(int(msg.get("signal", signal.SIGKILL)))
                await stream.send_all(b'{"ok": true}\n')
            elif op == "resize":
                self.resize(int(msg["rows"]), int(msg["cols"]))
                await stream.send_all(b'{"ok": true}\n')
            elif op == "healthcheck":
                await stream.send_all(json.dumps(await health.serve_run(self)).encode() + b"\n")
            elif op == "wait":
                self.waiters += 1
                try:
                    await self.done.wait()
                    await stream.send_all(
                        json.dumps({"exit_code": self.exit_code}).encode() + b"\n")
                finally:
                    self.waiters -= 1
            elif op == "attach":
                client = Client(stream)
                await client.send(wire.control({"event": "attached"}))
                self.clients.append(client)
                await self.serve_client(stream, stdin=bool(msg.get("stdin")))

    # -- handing over to the monitor ---------------------------------------------

    def quiet(self) -> bool:
        """Whether the monitor alone can serve the container for now: it relays
        output to the log and reaps; everything else needs this process."""
        return (self.chan is not None and not self.clients and not self.serving and not self.waiters
                and (self.net is None or (self.net.idle and self.net.opts.mode in LEAN_MODES))
                and self.exit_code is None
                and not self.exited.is_set() and not health.configured(self.cfg)
                and not self.storage_error)

    def hand_over(self, ctl: socket.socket) -> None:
        """Give the monitor what it needs to serve the container, then leave at once
        (nothing is held in this process that the monitor does not get)."""
        ch = self.launched
        fds = {"ctl": ctl.fileno()}
        for name, fd in (("stdin", self.stdin_fd()), ("out_pty", ch.pty_master),
                         ("out_stdout", ch.stdout), ("out_stderr", ch.stderr),
                         ("life_w", ch.life_w), ("sync_w", ch.sync_w)):
            if fd is not None:
                fds[name] = fd
        partial, error = self.log.tails()
        header = {"by": os.getpid(), "log_path": str(self.ctr.log_path),
                  "log_partial": partial, "log_error": error,
                  "watch": [p for p in (ch.pid, ch.storage_pid) if p]}
        # The record may be damaged or removed meanwhile: the next worker goes on
        # from this process's config and state, as this one would have.
        blob = json.dumps({
            "id": self.ctr.id, "env": dict(os.environ), "config": self.cfg.to_dict(),
            "state": dataclasses.asdict(self.state), "pid": ch.pid,
            "storage_pid": ch.storage_pid, "leftover_cgroup": self.leftover_cgroup,
        }).encode()
        assert self.chan is not None
        self.chan.hand_over(header, blob, fds)
        os._exit(0)

    def stdin_fd(self) -> int | None:
        if self.launched.pty_master is not None or self.stdin_stream is None:
            return None
        return self.stdin_stream.fileno()

    async def hand_over_when_idle(self, ctl: socket.socket) -> None:
        # Seconds without work before the container is the monitor's alone (the
        # requesting command's setting: its environment is this process's).
        idle = float(os.environ.get("RL_HANDOVER_IDLE", "1"))
        while True:
            await trio.sleep(idle)
            if self.quiet() and trio.current_time() - self.busy_at >= idle:
                try:
                    self.hand_over(ctl)
                except OSError:
                    return  # the monitor cannot take it: this process serves on

    # -- lifetime ---------------------------------------------------------------

    async def _serve_net(self, scope: trio.CancelScope, done: trio.Event) -> None:
        try:
            with scope:
                if self.net is not None:
                    await self.net.serve()
        finally:
            done.set()

    async def child_exit(self, pid: int) -> int:
        """The wait status of pid: one of the monitor's children, or, with no monitor
        (an attached run), this process's own."""
        if self.chan is None:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                raise ChildProcessError(pid) from None
            try:
                await trio.lowlevel.wait_readable(pidfd)
            finally:
                os.close(pidfd)
            return os.waitpid(pid, 0)[1]
        while pid not in self.child_exits:
            await self.exit_seen.wait()
        return self.child_exits.pop(pid)

    async def read_channel(self) -> None:
        """The monitor's exit reports; its death is this process's (PR_SET_PDEATHSIG)."""
        assert self.chan is not None
        while True:
            await trio.lowlevel.wait_readable(self.chan.fileno())
            exits = self.chan.exits()
            if exits is None:
                os._exit(255)
            if exits:
                self.child_exits.update(exits)
                self.exit_seen.set()
                self.exit_seen = trio.Event()

    async def wait_exit(self) -> None:
        status = await self.child_exit(self.launched.pid)
        self.exit_code = container.exit_code(status)
        self.exited.set()

    async def watch_storage(self, pid: int) -> None:
        """The root's FUSE server dying under the container is reported, not hidden:
        the container sees ENOTCONN from then on, its log and State.Error say why."""
        status = await self.child_exit(pid)
        self.launched.storage_pid = None
        await self._storage_died(pid, os.waitstatus_to_exitcode(status))

    async def _storage_died(self, pid: int, code: int) -> None:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        self.storage_error = (f"the {self.cfg.storage_driver} server of the container's root "
                              f"filesystem (pid {pid}) {how}; its files are unreachable")
        line = f"rl: {self.storage_error}\n".encode()
        self.log.write("stderr", line)
        await self._broadcast(wire.frame(wire.STDERR, line))

    async def stop_storage(self) -> None:
        """Once PID 1 is gone, nothing uses the root: its server unmounts and exits.

        A server asked to stop exits with 0; any other status means it had
        died already (perhaps what ended the container), and is reported.
        """
        pid = self.launched.storage_pid
        if pid is None:
            return
        self.launched.storage_pid = None
        killed = False
        status: int | None = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        with trio.move_on_after(2):
            status = await self.child_exit(pid)
        if status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed = True
            try:
                status = await self.child_exit(pid)
            except ChildProcessError:
                return
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and not killed:
            await self._storage_died(pid, code)

    async def run(self, ctl: socket.socket, first_client: socket.socket | None,
                  attach_stdin: bool) -> int:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(ctl))
        async with trio.open_nursery() as nursery:
            if self.chan is not None:
                nursery.start_soon(self.read_channel)
                nursery.start_soon(self.hand_over_when_idle, ctl)
            nursery.start_soon(self.control_server, listener)
            net_scope = trio.CancelScope()
            net_done = trio.Event()
            nursery.start_soon(self._serve_net, net_scope, net_done)
            storage_scope = trio.CancelScope()
            if self.launched.storage_pid is not None:
                async def watch(pid: int) -> None:
                    with storage_scope:
                        await self.watch_storage(pid)

                nursery.start_soon(watch, self.launched.storage_pid)
            client_stream = None
            if first_client is not None:
                client_stream = trio.SocketStream(trio.socket.from_stdlib_socket(first_client))
                self.clients.append(Client(client_stream))
                nursery.start_soon(self.serve_client, client_stream, attach_stdin)
            while True:  # a run of PID 1; another if its restart policy says so
                async with trio.open_nursery() as io:
                    io.start_soon(self.wait_exit)
                    io.start_soon(health.monitor, self)
                    ch = self.launched
                    if ch.pty_master is not None:
                        io.start_soon(self.pump, ch.pty_master, "stdout", wire.STDOUT)
                    if ch.stdout is not None:
                        io.start_soon(self.pump, ch.stdout, "stdout", wire.STDOUT)
                    if ch.stderr is not None:
                        io.start_soon(self.pump, ch.stderr, "stderr", wire.STDERR)
                    await self.exited.wait()
                    # The PID namespace is gone with its PID 1, so every writer of
                    # the output pipes is too: drain them, but never hang on it.
                    io.cancel_scope.deadline = trio.current_time() + 2
                storage_scope.cancel()
                await self.stop_storage()
                lives = await restart.again(self, nursery, net_scope, net_done, _recreate)
                if lives is None:
                    break
                net_scope, net_done, storage_scope = lives
            self.log.close()
            # Published ports and the network helpers go with the container,
            # before anyone hears that it exited.
            net_scope.cancel()
            await net_done.wait()
            if self.net is not None:
                self.net.close()
            assert self.exit_code is not None
            self.finish()
            self.done.set()
            for client in list(self.clients):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await client.send(wire.control({"event": "exit",
                                                    "exit_code": self.exit_code}))
            # Let every `wait` caller have its answer (bounded), then go.
            with trio.move_on_after(1):
                while self.waiters:
                    await trio.sleep(0.001)
            nursery.cancel_scope.cancel()
        return self.exit_code

    def finish(self) -> None:
        """Record the exit; with --rm take the container out of every listing.

        Runs on the event loop, so only quick work here: removing the cgroup
        (which may wait for dying processes) and the files (a --rm rootfs copy
        needs a forked user-namespace helper) happen in after_run().
        """
        st = self.state
        st.status = "exited"
        st.exit_code = self.exit_code or 0
        st.finished_at = time.time()
        if self.log.error or self.storage_error:
            st.error = "; ".join(e for e in (self.storage_error, self.log.error) if e)
        if st.cgroup:
            # The OOM killer's verdict is in memory.events, gone with the cgroup.
            st.oom_killed = cgroups.oom_killed(st.cgroup)
            self.leftover_cgroup = st.cgroup
            st.cgroup = ""
        with contextlib.suppress(OSError):  # state.json replaced by a directory, say
            self.ctr.write_state(st)
        events.died(self.cfg, st.exit_code, st.oom_killed)
        cleanup_mountpoints(self.cfg)
        if self.cfg.auto_remove:
            store.unlist(self.ctr.id)
            if self.cfg.anonymous_volumes:  # gone from `volume ls` as the container is
                from . import volumes

                with contextlib.suppress(RlError, OSError):
                    self.volume_trash = volumes.take_anonymous(self.cfg.anonymous_volumes)

    def after_run(self) -> None:
        """The slow part of the clean-up, once trio has returned."""
        if self.leftover_cgroup:
            cgroups.remove(self.leftover_cgroup)
        if self.cfg.auto_remove:
            store.remove_files(self.ctr.id)
            if self.volume_trash:
                from . import volumes

                volumes.remove_trees(self.volume_trash)
            events.container_event(self.cfg, "destroy")


def remove_anonymous_volumes(cfg: ContainerConfig) -> None:
    """--rm takes the container's anonymous volumes with it, as docker's."""
    if cfg.anonymous_volumes:
        from . import volumes

        with contextlib.suppress(RlError, OSError):
            volumes.remove_anonymous(cfg.anonymous_volumes)


def cleanup_mountpoints(cfg: ContainerConfig) -> None:
    """Remove the empty files rl created in the rootfs to mount /etc/hosts and friends on."""
    from ..runtime.mounts import secure_join

    if not cfg.created_mountpoints:
        return
    # Another live container on the same rootfs may have a mount on one of
    # these files: unlinking it would detach that mount from under it.
    for other in store.all_containers():
        try:
            shared = other.id != cfg.id and other.raw_config.get("rootfs") == cfg.rootfs
        except (OSError, ValueError):
            continue
        if shared and store.supervisor_alive(other.id):
            return
    for dest in cfg.created_mountpoints:
        path = secure_join(cfg.rootfs, dest)
        with contextlib.suppress(OSError):
            if os.path.isfile(path) and os.path.getsize(path) == 0:
                os.unlink(path)


def _recreate(sup: Supervisor) -> container.Created:
    """A fresh PID 1 on the same record for restart.again(), set up as main()'s first
    launch, waiting at its gate until restart.again() starts it."""
    cfg = sup.cfg
    net = sup.net
    if net is not None and net.opts.mode == "container":
        net.prepare()  # the joined container's namespaces as of now (it may have restarted)
    linux = cfg.spec.linux
    plan = idmap.plan_for(cfg.idmap_mode, linux.uid_mappings, linux.gid_mappings)
    cgroup = sup.state.cgroup or None  # the same cgroup, empty now
    return container.create(bundle_of(cfg), plan, str(paths.container_run_dir(cfg.id)),
                            devnull_stdin=not cfg.open_stdin,
                            before_start=_before_start(cfg, cgroup, net), cgroup=cgroup)


def _before_start(cfg: ContainerConfig, cgroup: str | None,
                  net: NetStack | None) -> Callable[[int], None] | None:
    """What S does once PID 1 exists, before its command: the limits the start
    relaxed, then its network. (PID 1 is in its cgroup already: C1 was moved
    there before it forked, see container.launch.)"""
    if not cgroup and net is None:
        return None

    def hook(pid: int) -> None:
        if cgroup:
            cgroups.settle(cgroup, cfg.resources)
        if net is not None:
            net.attach(pid)

    return hook


def bundle_of(cfg: ContainerConfig) -> Bundle:
    """The runtime's input for a record: its spec, and rl's additions that the
    record keeps beside it. Passed in memory, never written as a bundle: the
    record was written once, atomically, and is checked on every read, and a
    config.json written and read back per start would cost ~4 ms."""
    storage = None
    if cfg.storage_driver not in ("", "vfs"):  # vfs: a plain copy, nothing to mount
        storage = Storage(cfg.storage_driver, list(cfg.layers), cfg.upper, cfg.work)
    ipv6 = None
    if cfg.net.get("enable_ipv6") and cfg.net.get("mode") == "slirp4netns":
        ipv6 = Ipv6("tap0", SLIRP6_ADDR, 64, SLIRP6_GATEWAY)
    return Bundle(cfg.spec, Extras(storage=storage, init=cfg.init, user=cfg.user, ipv6=ipv6))


def _make_cgroup(cfg: ContainerConfig) -> str | None:
    """The container's own cgroup with its limits, when cgroups are delegated and wanted."""
    if cfg.cgroups == "disabled":
        return None
    host = cgroups.probe()
    if host.base is None:
        # rl run checked at create time; a record with limits must not run unconstrained.
        cgroups.require(cfg.resources, [], host)
        return None
    return cgroups.create(host, cfg.id, cfg.resources)


def _send_warning(sock: socket.socket, message: str) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(wire.control({"event": "warning", "message": message}))


def _send_error(sock: socket.socket | None, err: RlError) -> None:
    if sock is None:
        return
    event = {"event": "error", "exit_code": err.exit_code, "message": err.message,
             "kind": kind_of(err)}
    if isinstance(err, NoSuchImage):
        event["missing_image"] = err.ref  # rl run pulls it and asks again
    with contextlib.suppress(OSError):
        sock.sendall(wire.control(event))


# The CLI's `rl run` parser (rootless.cli.app.parse_run): (argv, console size, the
# client's environment and cwd) -> (CreateOptions, flags). The fork server passes it
# in: the engine knows no command line.
ParseRun = Callable[[list[str], tuple[int, int] | None, dict[str, str], str],
                    tuple[CreateOptions, dict[str, Any]]]


def serve_request(msg: dict[str, Any], client: socket.socket, chan: Channel | None,
                  parse_run: ParseRun | None = None) -> int:
    """A fork-server request, in the forked supervisor: "start" an existing
    container; "run": create it from CreateOptions (as a dict), then start it;
    "run-argv": the same from `rl run`'s raw arguments (entry.py), parsed by
    parse_run with the client's environment and cwd (NeedsFullCli without it)."""
    env = msg.get("env")
    client_env = {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}
    if isinstance(env, dict):
        # rl's own settings are the requesting command's: its XDG_* directories and
        # RL_* knobs, not the fork server's. (-e KEY, --env-file and relative paths
        # no longer need this: the face resolved them, or parse_run does with env.)
        os.environ.clear()
        os.environ.update(client_env)
    op = msg.get("op")
    attach, stdin = bool(msg.get("attach")), bool(msg.get("stdin"))
    started: dict[str, Any] = {}
    if op in ("run", "run-argv"):
        flags: dict[str, Any] = {}
        try:
            if op == "run-argv":
                if parse_run is None:
                    raise NeedsFullCli
                size = msg.get("console_size")
                options, flags = parse_run([str(a) for a in msg.get("argv") or []],
                                           (int(size[0]), int(size[1])) if size else None,
                                           client_env, str(msg.get("cwd", "")))
                attach = not flags["detach"]
                stdin = flags["interactive"] and attach
                started = {k: flags[k] for k in ("detach", "tty", "interactive")}
            else:
                options = CreateOptions(**dict(msg.get("options") or {}))
            cid = api.create(options, warn=lambda m: _send_warning(client, m)).id
        except NeedsFullCli:
            _send_needs_full_cli(client)
            return EXIT_RL
        except NoSuchImage as err:
            if op == "run-argv" and flags.get("pull_policy") == "missing":
                _send_needs_full_cli(client)  # the CLI pulls it, with its progress, and runs
                return EXIT_RL
            _send_error(client, err)
            return err.exit_code
        except RlError as err:
            _send_error(client, err)
            return err.exit_code
        except (OSError, TypeError, ValueError) as exc:
            failure = RlError(f"creating the container: {exc}", EXIT_RL)
            _send_error(client, failure)
            return EXIT_RL
    else:
        cid = str(msg["id"])
    return main(cid, client, attach, stdin, chan, started=started)


def _send_needs_full_cli(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(wire.control({"event": "error", "exit_code": EXIT_RL,
                                   "needs_full_cli": True, "message": "needs the full CLI"}))


def main(cid: str, client: socket.socket | None, attach: bool, attach_stdin: bool,
         chan: Channel | None, started: dict[str, Any] | None = None) -> int:
    """Entry point in the monitor's first worker, or with no monitor (chan None: an
    attached run, see forkserver) in the fork server's child (single-threaded, trio
    not running).

    Its environment is the requesting rl command's (serve_request): a supervisor
    serves that command's XDG directories and settings, not the fork server's.
    """
    # The container's parent and, to other commands, its supervisor.
    monitor_pid = os.getppid() if chan is not None else os.getpid()
    ctr = Container(cid)
    try:
        lock_fd = _take_lock(ctr)
    except RlError as err:
        _send_error(client, err)
        return err.exit_code
    # This supervisor's own runtime directory (the record names its creator's).
    run_dir = paths.container_run_dir(cid)
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if chan is None:
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    else:
        try:
            chan.share_lock(lock_fd)
        except OSError:  # the monitor is gone: so is this process, any moment now
            return EXIT_RL
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, json.dumps({"pid": monitor_pid, "run_dir": str(run_dir)}).encode(), 0)
    (run_dir / "sup.pid").write_text(f"{monitor_pid}\n")
    net: NetStack | None = None
    try:
        cfg = ctr.config
        _own_run_dir(cfg, run_dir)
        write_etc_files(cfg, run_dir)
        hpc.write_files(cfg.spec, run_dir, cfg.id,  # --userns=keep-id's passwd and group
                        [cfg.upper, *cfg.layers] if cfg.layers else None)
        linux = cfg.spec.linux
        plan = idmap.plan_for(cfg.idmap_mode, linux.uid_mappings, linux.gid_mappings)
        net = None
        if cfg.net:
            opts = NetOptions.from_dict(cfg.net)
            net = NetStack(opts, run_dir, cfg.spec, _joined_pid(opts.container),
                           _attachments(cfg, opts, run_dir))
        if net is not None:
            net.prepare()
        cgroup = _make_cgroup(cfg)
        try:
            launched = container.launch(bundle_of(cfg), plan, str(run_dir),
                                        devnull_stdin=not cfg.open_stdin,
                                        before_start=_before_start(cfg, cgroup, net),
                                        cgroup=cgroup, hook_state=_hook_state(cfg))
        except BaseException:
            if cgroup:
                cgroups.remove(cgroup)
            raise
    except RlError as err:
        if net is not None:
            net.close()
        fail_start(ctr, err, run_dir)
        _send_error(client, err)
        return err.exit_code
    except Exception as exc:  # reported to the user, never lost
        if net is not None:
            net.close()
        failure = RlError(f"starting the container: {exc}", EXIT_RL)
        fail_start(ctr, failure, run_dir)
        _send_error(client, failure)
        return EXIT_RL

    try:
        st = ctr.raw_state()
    except store.RecordError:
        st = store.State()  # damaged meanwhile: this supervisor's is the truth now
    st.status = "running"
    st.pid = launched.pid
    st.supervisor_pid = monitor_pid
    st.started_at = time.time()
    st.exit_code = 0
    st.error = ""
    st.oom_killed = False
    st.cgroup = cgroup or ""
    restart.on_start(st)
    st.health = health.fresh(cfg)
    with contextlib.suppress(OSError):  # unwritable: the record reads as dead, rm -f works
        ctr.write_state(st)
    events.started(cfg)
    # The control socket listens before anyone hears "started": a `rl stop`
    # right after `rl run -d` must find it.
    ctl = bind_control_socket(run_dir)
    if client is not None:
        try:
            client.sendall(wire.control({"event": "started", "id": cid, "pid": launched.pid,
                                         **(started or {})}))
        except OSError:
            attach = False  # the client is gone (killed): the container runs on, detached
        if not attach:
            client.close()
            client = None
    _raise_nofile_limit()  # after the launch: the container keeps the limits it was given
    sup = Supervisor(ctr, launched, net, st, chan)
    return _supervise(sup, ctl, client, attach_stdin, run_dir)


def resume(chan: Channel, blob: bytes, fds: dict[str, int], exits: dict[int, int]) -> int:
    """In a new worker of the monitor: serve the container a quiet supervisor handed
    over (hand_over), from its state and the monitor's descriptors."""
    logged, _, rest = blob.partition(b"\n")
    handover = {**json.loads(rest), **json.loads(logged)}
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in handover["env"].items()})
    ctr = Container(str(handover["id"]))
    ctr._config = ContainerConfig.from_dict(handover["config"])
    run_dir = paths.container_run_dir(ctr.id)
    _own_run_dir(ctr.config, run_dir)  # as main() did, for a restart's launch
    stdin = fds.get("stdin")
    launched = container.Launched(
        pid=int(handover["pid"]), stdin=stdin, stdout=fds.get("out_stdout"),
        stderr=fds.get("out_stderr"), pty_master=fds.get("out_pty"),
        storage_pid=handover.get("storage_pid"), life_w=fds.get("life_w"),
        sync_w=fds.get("sync_w"))
    st = store.State.from_dict(handover["state"])
    log = Log(Path(handover["log_path"]),
              {k: v.encode("latin-1") for k, v in (handover.get("log_partial") or {}).items()},
              handover.get("log_error"))
    sup = Supervisor(ctr, launched, None, st, chan, log)
    sup.child_exits.update(exits)
    sup.leftover_cgroup = str(handover.get("leftover_cgroup") or "")
    ctl = socket.socket(fileno=fds["ctl"])
    _raise_nofile_limit()
    return _supervise(sup, ctl, None, False, run_dir)


def _supervise(sup: Supervisor, ctl: socket.socket, client: socket.socket | None,
               attach_stdin: bool, run_dir: Path) -> int:
    ctr, net = sup.ctr, sup.net
    try:
        code = trio.run(sup.run, ctl, client, attach_stdin)
    except BaseException:
        # Never leave a record saying "running" behind a crash: say what happened.
        import traceback

        st = sup.state
        st.status = "exited"
        st.exit_code = sup.exit_code if sup.exit_code is not None else 255
        st.error = "supervisor crashed: " + traceback.format_exc().strip().splitlines()[-1]
        st.finished_at = time.time()
        with contextlib.suppress(OSError):
            ctr.write_state(st)
        raise
    finally:
        if net is not None:
            net.close()
    sup.after_run()
    shutil.rmtree(run_dir, ignore_errors=True)
    return code


def _raise_nofile_limit() -> None:
    """The supervisor holds a descriptor per attached client and forwarded
    connection: let it use as many as the user may."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def bind_control_socket(run_dir: Path) -> socket.socket:
    path = run_dir / "ctl.sock"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.bind(paths.socket_address(path))
    sock.listen(16)
    return sock


def _take_lock(ctr: Container) -> int:
    """The record's liveness lock, held for this process's life; RlError if another
    supervisor has it, or the record is gone or damaged."""
    cid = ctr.id
    path = ctr.dir / store.LOCK
    try:
        # No O_CREAT of the directory: a record removed meanwhile stays removed.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileNotFoundError:
        raise NoSuchContainer(cid) from None
    except OSError as e:
        raise RlError(f"cannot start container {cid[:12]}: its record is damaged: "
                      f"{store.LOCK}: {e.strerror}; `rl rm -f {cid[:12]}` removes it", 1) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Removed between the open and the lock (rm holds it shared while it
        # deletes): the lock is on a file no other rl can find any more.
        same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except BlockingIOError:
        os.close(fd)
        raise Conflict(f"container {cid[:12]} is already running", 1) from None
    except OSError:
        same = False
    if not same:
        os.close(fd)
        raise NoSuchContainer(cid)
    return fd


def _own_run_dir(cfg: ContainerConfig, run_dir: Path) -> None:
    """Bind /etc/hostname, hosts and resolv.conf from this supervisor's runtime directory:
    the record names its creator's, which may be another (XDG_RUNTIME_DIR unset, say)."""
    for m in cfg.spec.mounts:
        if (m.type == "bind" and m.source and m.destination in _ETC_FILES
                and Path(m.source).parent.name == cfg.id):
            m.source = str(run_dir / Path(m.source).name)


_ETC_FILES = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")


def fail_start(ctr: Container, err: RlError, run_dir: Path) -> None:
    """A container whose start failed stays 'created' with the error, as docker's does."""
    with contextlib.suppress(OSError, ValueError):
        cleanup_mountpoints(ctr.config)
        if ctr.config.auto_remove:
            store.remove_files(ctr.id)
            remove_anonymous_volumes(ctr.config)
            return
        st = ctr.raw_state()
        st.status = "created"
        st.exit_code = err.exit_code
        st.error = err.message
        ctr.write_state(st)
    shutil.rmtree(run_dir, ignore_errors=True)
