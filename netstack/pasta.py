"""The pasta driver (Debian package passt): the container's interface mirrors the host's.

pasta copies the host's address, routes and MTU into the namespace
(--config-net) and translates its traffic to ordinary host sockets; it
forwards nothing on its own here (-t/-u/-T/-U none): published ports go
through rl's forwarder, and the container's loopback ports are not mapped to
the host's (pasta's default "-T auto" would let the container reach host
loopback services). --no-map-gw keeps the gateway address from meaning the
host unless allow_host_loopback is asked.

Lifetime: this pasta has no --exit-fd, and once daemonized it outlives a
supervisor killed with SIGKILL (it quits on its own only when a named netns
is deleted). So it runs in the foreground (-f) as the supervisor's child,
with PR_SET_PDEATHSIG(SIGKILL) armed before exec. Readiness: pasta writes
its pid file (-P) only after --config-net has configured the namespace, so
the supervisor waits for that file.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path

from rootless import syscalls as sc
from rootless.errors import RlError

from .options import PASTA_DNS, NetOptions
from .slirp import _last_line, check_tun, find_binary, wait_child

READY_TIMEOUT = 10.0


def _die_with_parent() -> None:
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)


class Pasta:
    def __init__(self, opts: NetOptions, run_dir: Path) -> None:
        self.opts = opts
        self.pid_path = run_dir / "pasta.pid"
        self.log_path = run_dir / "pasta.log"
        self.pid = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, pid: int) -> None:
        binary = find_binary("pasta", "passt")
        check_tun()
        args = [binary, "-f", "--config-net", "--quiet", "-t", "none", "-u", "none", "-T", "none",
                "-U", "none", "-P", str(self.pid_path), "-l", str(self.log_path),
                "--userns", f"/proc/{pid}/ns/user", "--netns", f"/proc/{pid}/ns/net"]
        if not self.opts.allow_host_loopback:
            args.append("--no-map-gw")
        if not self.opts.dns:
            args += ["--dns-forward", PASTA_DNS]
        self.pid_path.unlink(missing_ok=True)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + READY_TIMEOUT
        while self.proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if self.pid_path.read_text().strip():
                    self.pid = self.proc.pid
                    return
            time.sleep(0.001)
        code = self.proc.poll()
        err = self.proc.stderr.read().decode(errors="replace") if code is not None \
            and self.proc.stderr else ""
        self.stop()
        why = (err.strip().splitlines() or [""])[-1] or _last_line(self.log_path)
        raise RlError("pasta failed to set up the container's network: "
                      f"{why or ('timed out' if code is None else f'exit {code}')}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        wait_child(self.proc, 2)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
        self.pid = 0
