"""What the supervisor calls: the container's network, from before its start to after its end.

    stack = NetStack(NetOptions.from_dict(cfg.net), run_dir, cfg.spec, joined_pid)
    stack.prepare()                  # before launch: checks, host ports bound (port errors here)
    container.launch(..., before_start=stack.attach)   # stack up, ports forwarded, connector
    trio: await stack.serve()        # rl's port driver
    stack.close()                    # helpers gone, ports released

Everything a stack starts is the supervisor's child and dies with it, even
after SIGKILL: slirp4netns through --exit-fd, the connector through
PR_SET_PDEATHSIG, listening sockets with the supervisor's fd table.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rootless.errors import RlError
from rootless.runtime.spec import Spec

from . import ports
from .options import SLIRP_GATEWAY, NetOptions
from .ports import PortMapping
from .slirp import Slirp4netns

if TYPE_CHECKING:
    from .nethost import Attachment
    from .pasta import Pasta

PORTS_FILE = "ports.json"


class NetStack:
    def __init__(self, opts: NetOptions, run_dir: Path, spec: Spec | None = None,
                 joined_pid: Callable[[], int] | None = None,
                 attachments: list[Attachment] | None = None) -> None:
        self.opts = opts
        self.attachments = attachments or []  # mode "network": the NICs plug gives it
        self.spec = spec
        # --network container:NAME: the engine's look-up of that container's PID 1
        # (raising what to tell the user); netstack keeps no container records.
        self.joined_pid = joined_pid
        self.run_dir = run_dir
        self.slirp: Slirp4netns | None = None
        self.pasta: Pasta | None = None
        self.listeners: list[tuple[socket.socket, PortMapping]] = []
        self.published: list[PortMapping] = []
        self.connector_pid = 0
        self.connector_chan: socket.socket | None = None
        self.host_pid: int | None = None

    @property
    def idle(self) -> bool:
        """Nothing of it runs in (or dies with) the supervisor: no helper process, no
        published port; the container's monitor can serve it alone (engine/monitor.py)."""
        return (self.slirp is None and self.pasta is None and not self.listeners
                and self.connector_chan is None and not self.connector_pid)

    @property
    def fast_ports(self) -> bool:
        return bool(self.opts.ports) and (self.opts.port_handler == "rl"
                                          or self.opts.mode != "slirp4netns")

    def prepare(self) -> None:
        """Fail before the container exists: privileged or busy host ports."""
        if self.opts.mode == "container" and self.spec is not None:
            self._refresh_joined(self.spec)
        if self.opts.mode == "network" and self.spec is not None:
            self._join_host(self.spec)
        ports.check_privileged(self.opts.ports, os.geteuid())
        if self.fast_ports:
            for m in self.opts.ports:
                sock = ports.bind_host_socket(m)
                self.listeners.append((sock, m))
                self.published.append(PortMapping(m.container_port, sock.getsockname()[1],
                                                  m.host_ip, m.protocol))
        else:
            for m in self.opts.ports:
                if m.family == socket.AF_INET6:
                    raise RlError(f"cannot publish port {m.host_text()}: slirp4netns's port "
                                  "handler has no IPv6; use port_handler=rl")
                # Probe (then release) so a busy port fails before the start;
                # port 0 is resolved to a free port here.
                with ports.bind_host_socket(m) as probe:
                    port = probe.getsockname()[1]
                self.published.append(PortMapping(m.container_port, port, m.host_ip,
                                                  m.protocol))

    def _refresh_joined(self, spec: Spec) -> None:
        """--network container:NAME: that container's namespaces as of now (it may have
        been restarted since this one was created)."""
        if self.joined_pid is None:
            raise RlError(f"cannot join the network of container {self.opts.container}")
        pid = self.joined_pid()
        for ns in spec.linux.namespaces:
            if ns.type in ("network", "user") and ns.path is not None:
                kind = "net" if ns.type == "network" else "user"
                ns.path = f"/proc/{pid}/ns/{kind}"

    def _join_host(self, spec: Spec) -> None:
        """A user network: the container joins the network host's user namespace."""
        from . import nethost

        host = nethost.running()
        if host is None:
            raise RlError(f"the network host of network {self.opts.network} is not running "
                          "(killed?): start the container again")
        self.host_pid = host
        for ns in spec.linux.namespaces:
            if ns.type == "user":
                ns.path = f"/proc/{host}/ns/user"

    def attach(self, pid: int) -> None:
        """launch's before_start hook: PID 1's namespaces exist, its command has not started."""
        if self.attachments:
            from . import nethost

            for att in self.attachments:
                nethost.plug(pid, att, self.host_pid)
            nethost.record_nics(self.run_dir, {a.ifname: a.veth for a in self.attachments})
        if self.opts.mode == "pasta":
            from .pasta import Pasta

            self.pasta = Pasta(self.opts, self.run_dir)
            self.pasta.start(pid)
        if self.opts.mode == "slirp4netns":
            self.slirp = Slirp4netns(self.opts, self.run_dir)
            self.slirp.start(pid)
            if not self.fast_ports:
                for m in self.published:
                    self.slirp.add_hostfwd(m)
        if self.opts.bandwidth_bit:
            from . import bandwidth  # deferred: pyroute2, for --network-bandwidth only

            bandwidth.apply(pid, self.opts.bandwidth_bit)
        if self.listeners:
            # Forked here, while the supervisor is single-threaded and PID 1
            # surely exists (a short command may be gone once launch returns).
            from . import connector

            loopback_as = self._loopback_as()
            self.connector_chan, self.connector_pid = connector.start(pid, loopback_as)
        self._write_ports()

    def _loopback_as(self) -> str:
        """The source a host loopback client has in the container: the host's gateway
        (slirp4netns's 10.0.2.2, a user network's own gateway), as slirp4netns shows it."""
        if self.opts.mode == "slirp4netns":
            return SLIRP_GATEWAY
        return self.attachments[0].gateway if self.attachments else ""

    async def serve(self) -> None:
        if self.connector_chan is None:
            return
        from . import forwarder  # deferred: rl's port driver, for -p only

        try:
            loopback_as = self._loopback_as()
            conn = forwarder.Connector(self.connector_chan, loopback_as)
            await forwarder.serve(self.listeners, conn)
        except Exception:
            # A forwarder bug must cost the published ports, never the container.
            traceback.print_exc()
            sys.stderr.flush()

    def _write_ports(self) -> None:
        data = [m.to_dict() for m in self.published]
        tmp = self.run_dir / (PORTS_FILE + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.rename(self.run_dir / PORTS_FILE)

    def close(self) -> None:
        for sock, _ in self.listeners:
            sock.close()
        self.listeners.clear()
        if self.connector_chan is not None:
            self.connector_chan.close()
            self.connector_chan = None
        if self.connector_pid:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.connector_pid, signal.SIGKILL)
                os.waitpid(self.connector_pid, 0)
            self.connector_pid = 0
        if self.slirp is not None:
            self.slirp.stop()
            self.slirp = None
        if self.pasta is not None:
            self.pasta.stop()
            self.pasta = None


def published_ports(run_dir: Path) -> list[PortMapping]:
    """What a running container publishes, as `rl port` shows it ([] once it stopped)."""
    try:
        data = json.loads((run_dir / PORTS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [PortMapping.from_dict(d) for d in data]
