"""The slirp4netns driver: the container's tap0 behind libslirp, and its JSON API for ports.

slirp4netns runs as the supervisor's child in the host's namespaces. It joins
the container's user namespace (--userns-path) because setns() into a network
namespace needs CAP_SYS_ADMIN in the caller's own user namespace too, which a
host process lacks. --exit-fd is a pipe whose only write end the supervisor
holds: when the supervisor dies, even by SIGKILL, the kernel closes it and
slirp4netns exits. --ready-fd tells when tap0 is configured, so the
container's command never starts before its network.

--enable-sandbox is not used: it needs slirp4netns to be root in its own user
namespace (podman runs it inside its rootless namespace), and from the host's
it fails with "setegid(0)". --enable-seccomp is used.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from rootless import paths
from rootless.errors import RlError

from .options import NetOptions
from .ports import PortMapping

READY_TIMEOUT = 10.0


def find_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RlError(f"{name} is not installed: it gives the container its network; install "
                      f"the Debian package {package} (apt-get install {package}), or use "
                      "--network=host or --network=none")
    return path


def check_tun() -> None:
    """The stacks open /dev/net/tun inside the container's namespaces: say so if they can't."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise RlError(f"/dev/net/tun is not accessible ({e.strerror}): the user-mode network "
                      "needs a tun device; load the tun module and make /dev/net/tun mode "
                      "0666, or use --network=host or --network=none") from None
    os.close(fd)


def wait_child(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Reap proc, killing it after timeout s. A pidfd wakes us the moment it exits:
    Popen.wait(timeout) polls with sleeps of up to 50 ms, paid by every rl run --rm."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:
        pidfd = -1
    if pidfd >= 0:
        try:
            if not select.select([pidfd], [], [], timeout)[0]:
                proc.kill()
        finally:
            os.close(pidfd)
    proc.wait()


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith(("WARNING", "*", "Starting"))]
    except OSError:
        return ""
    return lines[-1] if lines else ""


class Slirp4netns:
    def __init__(self, opts: NetOptions, run_dir: Path) -> None:
        self.opts = opts
        self.api_path = run_dir / "slirp4netns.sock"
        self.log_path = run_dir / "slirp4netns.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._exit_w: int | None = None

    def start(self, pid: int) -> None:
        binary = find_binary("slirp4netns", "slirp4netns")
        check_tun()
        ready_r, ready_w = os.pipe()
        exit_r, exit_w = os.pipe2(os.O_CLOEXEC)
        self._exit_w = exit_w
        args = [binary, "--configure", f"--mtu={self.opts.mtu}", f"--ready-fd={ready_w}",
                f"--exit-fd={exit_r}", "--enable-seccomp",
                # Relative to its cwd (the run dir): a long XDG_RUNTIME_DIR must
                # not push the address past sun_path's 108 bytes.
                f"--api-socket={self.api_path.name}",
                f"--userns-path=/proc/{pid}/ns/user", "--netns-type=path"]
        if not self.opts.allow_host_loopback:
            args.append("--disable-host-loopback")
        if self.opts.enable_ipv6:
            args.append("--enable-ipv6")  # the container's PID 1 sets its address (network.py)
        args += [f"/proc/{pid}/ns/net", "tap0"]
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=log, pass_fds=(ready_w, exit_r),
                                             cwd=self.api_path.parent)
        finally:
            os.close(ready_w)
            os.close(exit_r)
        try:
            ready, _, _ = select.select([ready_r], [], [], READY_TIMEOUT)
            data = os.read(ready_r, 1) if ready else b""
        finally:
            os.close(ready_r)
        if data != b"1":
            why = _last_line(self.log_path) or "it exited" if ready else "timed out"
            self.stop()
            raise RlError(f"slirp4netns failed to set up the container's network: {why}")

    def api(self, execute: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        req: dict[str, Any] = {"execute": execute}
        if arguments is not None:
            req["arguments"] = arguments
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(paths.socket_address(self.api_path))
            s.sendall(json.dumps(req).encode())
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        answer: dict[str, Any] = json.loads(data)
        return answer

    def add_hostfwd(self, m: PortMapping) -> None:
        answer = self.api("add_hostfwd", {"proto": m.protocol, "host_addr": m.bind_ip,
                                          "host_port": m.host_port,
                                          "guest_port": m.container_port})
        if "error" in answer:
            raise RlError(f"cannot publish port {m.host_text()}/{m.protocol}: slirp4netns: "
                          f"{answer['error'].get('desc', answer['error'])}")

    def list_hostfwd(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.api("list_hostfwd").get("entries", [])
        return entries

    def stop(self) -> None:
        if self._exit_w is not None:
            os.close(self._exit_w)  # slirp4netns sees its exit fd close and leaves
            self._exit_w = None
        if self.proc is not None:
            wait_child(self.proc, 2)
            self.proc = None
