#!/usr/bin/env python3
"""The user networks' resolver: rl's own (netstack/dns.py) against podman's aardvark-dns,
in ONE interleaved run: start-up until the first answer, query latency, memory.

Run as the unprivileged user with rl's virtualenv's python (dnspython is rl's):

    .venv/bin/python benchmarks/resolver.py [--rounds N] [--queries N] [--names N]

Both serve the same records — N containers' names on one network — in a private
user and network namespace (`unshare -Urn`, re-running this file inside):
rl's resolver reads a network's leases directory (what the network host
runs, `python -m netstack.dns`), aardvark-dns 1.4 (Debian's, what netavark
starts for podman) its config file. Per round, each is started from nothing
(the time until it answers an A query for a container's name: what a first
`rl run --network` waits for), then answers --queries sequential A queries
for random names of the network from one client socket (per-query latency,
median and 99th percentile), and its resident memory is read from /proc.
The order alternates per round. Medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RL_GATEWAY = "10.99.0.1"
AARDVARK_GATEWAY = "10.99.1.1"
AARDVARK_PORT = 5353
AARDVARK = "/usr/lib/podman/aardvark-dns"
REPO = Path(__file__).resolve().parent.parent


def query_wire(name: str) -> bytes:
    import dns.message

    return bytes(dns.message.make_query(f"{name}.", "A").to_wire())


def ask(sock: socket.socket, server: tuple[str, int], wire: bytes) -> bool:
    import dns.message

    sock.sendto(wire, server)
    data, _ = sock.recvfrom(4096)
    return bool(dns.message.from_wire(data).answer)


class Resolver:
    def __init__(self, name: str, server: tuple[str, int]) -> None:
        self.name = name
        self.server = server
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts: list[float] = []
        self.medians: list[float] = []
        self.p99s: list[float] = []
        self.rss: list[float] = []
        self.fds: list[int] = []

    def spawn(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def server_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def round(self, names: list[str], queries: int) -> None:
        wires = [query_wire(n) for n in names]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(0.005)
        t0 = time.perf_counter()
        self.proc = self.spawn()
        try:
            while True:  # until the first answer
                try:
                    if ask(sock, self.server, wires[0]):
                        break
                except OSError:
                    pass
                if time.perf_counter() - t0 > 20:
                    raise SystemExit(f"{self.name} did not answer in 20 s")
            self.starts.append(time.perf_counter() - t0)
            sock.settimeout(2)
            lat = []
            for _ in range(queries):
                w = random.choice(wires)
                q0 = time.perf_counter()
                if not ask(sock, self.server, w):
                    raise SystemExit(f"{self.name}: no answer for a known name")
                lat.append(time.perf_counter() - q0)
            lat.sort()
            self.medians.append(statistics.median(lat))
            self.p99s.append(lat[int(len(lat) * 0.99) - 1])
            status = Path(f"/proc/{self.server_pid()}/status").read_text()
            kb = next(int(line.split()[1]) for line in status.splitlines()
                      if line.startswith("VmRSS:"))
            self.rss.append(kb / 1024)
        finally:
            sock.close()
            pid = self.server_pid()
            self.proc.kill()
            self.proc.wait()
            if pid != self.proc.pid:
                os.kill(pid, 9)
                time.sleep(0.05)
            for fd in self.fds:
                os.close(fd)
            self.fds = []


class RlResolver(Resolver):
    def __init__(self, base: Path, names: list[str]) -> None:
        super().__init__("rl", (RL_GATEWAY, 53))
        self.state = base / "nethost"
        leases = base / "leases"
        (self.state / "nets").mkdir(parents=True)
        leases.mkdir()
        containers = base / "data" / "rl" / "containers"
        containers.mkdir(parents=True)
        for i, name in enumerate(names):
            owner = f"{i:064x}"
            (containers / owner).mkdir()
            (leases / f"10.99.0.{i + 2}").write_text(f"{owner}\n{name}\n{owner[:12]}\n")
        (self.state / "nets" / RL_GATEWAY).write_text(json.dumps(
            {"network": "bench", "leases": str(leases), "internal": True}))
        self.env = {**os.environ, "XDG_DATA_HOME": str(base / "data"),
                    "PYTHONPATH": str(REPO)}

    def spawn(self) -> subprocess.Popen[bytes]:
        exit_r, exit_w = os.pipe()
        ready_r, ready_w = os.pipe()
        proc = subprocess.Popen(
            [sys.executable, "-m", "netstack.dns", str(self.state), str(exit_w), str(ready_w)],
            env=self.env, pass_fds=(exit_w, ready_w), stdout=subprocess.DEVNULL)
        for fd in (exit_w, ready_w):
            os.close(fd)
        self.fds = [exit_r, ready_r]  # open while it runs: it writes "R" once bound
        # its idle check: the pid file names it and is fresh
        (self.state / "pid").write_text(f"{proc.pid} 0\n")
        return proc


class Aardvark(Resolver):
    def __init__(self, base: Path, names: list[str]) -> None:
        super().__init__("aardvark-dns", (AARDVARK_GATEWAY, AARDVARK_PORT))
        self.config = base / "aardvark"
        self.config.mkdir()
        lines = [AARDVARK_GATEWAY]
        lines += [f"{i:064x} 10.99.1.{i + 2}  {name},{i:064x}"
                  for i, name in enumerate(names)]
        (self.config / "bench").write_text("\n".join(lines) + "\n")

    def server_pid(self) -> int:
        # `run` forks the server and exits once it listens (netavark waits for that);
        # the server's pid is in the config directory
        return int((self.config / "aardvark.pid").read_text())

    def spawn(self) -> subprocess.Popen[bytes]:
        (self.config / "aardvark.pid").unlink(missing_ok=True)
        return subprocess.Popen([AARDVARK, "--config", str(self.config), "-p",
                                 str(AARDVARK_PORT), "run"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def inside(args: argparse.Namespace) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for gw in (RL_GATEWAY, AARDVARK_GATEWAY):
        subprocess.run(["ip", "addr", "add", f"{gw}/24", "dev", "lo"], check=True)
    names = [f"ctr{i}" for i in range(args.names)]
    with tempfile.TemporaryDirectory(prefix="rl-bench-dns-") as tmp:
        peers = [RlResolver(Path(tmp), names), Aardvark(Path(tmp), names)]
        for p in peers:  # warm the page cache and Python's bytecode
            p.round(names, 10)
            p.starts.clear()
            p.medians.clear()
            p.p99s.clear()
            p.rss.clear()
        for r in range(args.rounds):
            for p in peers[r % 2:] + peers[:r % 2]:
                p.round(names, args.queries)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{args.names} names on one network; medians of {args.rounds} rounds, "
          f"{args.queries} sequential A queries each")
    print(f"{'resolver':<13} {'start ms':>9} {'query µs':>9} {'p99 µs':>8} {'RSS MiB':>8}")
    for p in peers:
        print(f"{p.name:<13} {statistics.median(p.starts) * 1e3:9.1f} "
              f"{statistics.median(p.medians) * 1e6:9.1f} {statistics.median(p.p99s) * 1e6:8.1f} "
              f"{statistics.median(p.rss):8.1f}")
    a, b = peers

    def ratio(x: list[float], y: list[float]) -> str:
        return f"{statistics.median(x) / statistics.median(y):.2f}x"

    print(f"rl / aardvark-dns: start {ratio(a.starts, b.starts)}, "
          f"query {ratio(a.medians, b.medians)}, memory {ratio(a.rss, b.rss)}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--names", type=int, default=50)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        return inside(args)
    if not os.access(AARDVARK, os.X_OK):
        raise SystemExit(f"{AARDVARK} not found: run benchmarks/setup-peers as root")
    if shutil.which("unshare") is None:
        raise SystemExit("unshare (util-linux) not found")
    return subprocess.run(["unshare", "-Urn", sys.executable, __file__, "--inside",
                           "--rounds", str(args.rounds), "--queries", str(args.queries),
                           "--names", str(args.names)], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
