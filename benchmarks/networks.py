#!/usr/bin/env python3
"""Container to container on a user-defined network: rl against rootless podman's
network and the host's loopback, in ONE interleaved run; and the start-up a network
costs (`rl run --network NET true` against `--network none`).

Run as the unprivileged user (stdlib only; needs iperf3 and podman, see setup-peers):

    python3 benchmarks/networks.py [--rounds N] [--seconds S] [--requests N] [--rl PATH]

Each peer has a server and a client:

    rl      two `rl run -d --network benchnet` containers (the network host's
            bridge, a veth each: rl's network host, issue 14)
    podman  two `podman --runtime=runc run -d --network benchnet` containers
            (podman 4.3's rootless network: CNI's bridge in its rootless-netns)
    host    the same servers and clients on the host's loopback: the ceiling

The server runs busybox httpd and /usr/bin/iperf3 -s (the host's /usr,
bind-mounted read-only into a busybox rootfs); the client runs, through
`exec`, iperf3 -c SERVER_IP -t S (Gbit/s, receiver side) and the host's
python3 making N sequential HTTP/1.0 requests, each on a new connection
(connections/s, timed inside the client: `exec`'s own cost is not counted).
Per round the peers go in a rotating order. Medians over the rounds; ratios
against podman and against the host.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from network import SERVE, VOLS, server_rootfs  # the same servers, in the same rootfs
from startup import RlState, remove_tree, resolve_rl

NET = "benchnet"
CLIENT = """
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
req = b"GET /index.html HTTP/1.0\\r\\n\\r\\n"
t0 = time.perf_counter()
for _ in range(n):
    with socket.create_connection((host, port)) as c:
        c.sendall(req)
        while c.recv(65536):
            pass
print(n / (time.perf_counter() - t0))
"""


class Peer:
    """A server and a client; *exec* runs a command in the client."""

    def __init__(self, name: str, exec_: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.exec = exec_
        self.env = env
        self.server_ip = "127.0.0.1"
        self.iperf_port, self.http_port = 5201, 8080
        self.gbits: list[float] = []
        self.rates: list[float] = []
        self.cleanup: list[list[str]] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, argv: list[str]) -> str:
        r = subprocess.run([*self.exec, *argv], capture_output=True, text=True, env=self.env,
                           check=False, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"{self.name}: {argv[0]}: {r.stderr.strip() or r.stdout}")
        return r.stdout

    def iperf(self, seconds: float) -> float:
        out = self.run(["/usr/bin/iperf3", "-c", self.server_ip, "-p", str(self.iperf_port),
                        "-t", str(seconds), "-J"])
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9

    def http(self, n: int) -> float:
        return float(self.run(["/usr/bin/python3", "-c", CLIENT, self.server_ip,
                               str(self.http_port), str(n)]))

    def ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.http(1)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        for cmd in self.cleanup:
            subprocess.run(cmd, capture_output=True, env=self.env, check=False)
        for p in self.procs:
            p.kill()
            p.wait()


def container_peer(name: str, tool: list[str], env: dict[str, str] | None,
                   rootfs: Path) -> Peer:
    """Two containers of *tool* (rl, or podman with runc) on a new network."""
    def call(*argv: str) -> str:
        return subprocess.run([*tool, *argv], capture_output=True, text=True, env=env,
                              check=True).stdout.strip()

    subprocess.run([*tool, "network", "rm", "-f", NET], capture_output=True, env=env,
                   check=False)
    call("network", "create", NET)
    srv, cli = f"{name}-bench-srv", f"{name}-bench-cli"
    peer = Peer(name, [*tool, "exec", cli], env)
    peer.cleanup = [[*tool, "rm", "-f", srv, cli], [*tool, "network", "rm", NET]]
    try:
        call("run", "-d", "--name", srv, "--network", NET, *VOLS, "--rootfs", str(rootfs),
             "/bin/sh", "-c", SERVE)
        call("run", "-d", "--name", cli, "--network", NET, *VOLS, "--rootfs", str(rootfs),
             "/bin/sleep", "1000000")
        nets = json.loads(call("inspect", "-f", "{{json .NetworkSettings.Networks}}", srv))
        peer.server_ip = nets[NET]["IPAddress"]
        if not peer.server_ip:
            raise RuntimeError(f"{name}: the server has no address on {NET}: {nets}")
    except BaseException:
        peer.close()
        raise
    return peer


def host_peer(rootfs: Path) -> Peer:
    peer = Peer("host", [])
    peer.procs.append(subprocess.Popen(
        ["busybox", "httpd", "-f", "-p", "127.0.0.1:8080", "-h", str(rootfs / "www")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    peer.procs.append(subprocess.Popen(
        ["iperf3", "-s", "-B", "127.0.0.1", "-p", "5201"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return peer


def startup_cost(rl: str, state: RlState, rootfs: Path, runs: int) -> dict[str, float]:
    """Median wall time of `rl run --rm true` on the network against --network none."""
    modes = ["none", NET]
    times: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(runs + 1):
        for m in modes[i % 2:] + modes[:i % 2]:
            t0 = time.perf_counter()
            subprocess.run([rl, "run", "--rm", "--network", m, "--rootfs", str(rootfs), "true"],
                           env=state.env, check=True, capture_output=True)
            if i:  # the first round warms the fork server and the network host up
                times[m].append(time.perf_counter() - t0)
    return {m: statistics.median(v) for m, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rl", default="rl")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--startup-runs", type=int, default=20)
    args = ap.parse_args()
    for tool in ("iperf3", "busybox", "python3") + (() if args.no_podman else ("podman",)):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run benchmarks/setup-peers as root")
    rl, _ = resolve_rl(args.rl)
    state = RlState(shared=False)
    tmp, rootfs = server_rootfs(state, "nets")
    peers: list[Peer] = []
    starts: dict[str, float] = {}
    try:
        peers.append(container_peer("rl", [rl], state.env, rootfs))
        if not args.no_podman:
            peers.append(container_peer("podman", ["podman", "--runtime=runc"], None, rootfs))
        peers.append(host_peer(rootfs))
        for p in peers:
            p.ready()
            p.iperf(1)  # warm-up
            p.http(50)
        for r in range(args.rounds):
            for p in peers[r % len(peers):] + peers[:r % len(peers)]:
                p.gbits.append(p.iperf(args.seconds))
                p.rates.append(p.http(args.requests))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        if args.startup_runs:
            starts = startup_cost(rl, state, rootfs, args.startup_runs)
    finally:
        for p in peers:
            p.close()
        state.close()
        remove_tree(tmp)
    med = {p.name: (statistics.median(p.gbits), statistics.median(p.rates)) for p in peers}
    print(f"container -> container on a user network; medians of {args.rounds} rounds "
          f"(iperf3 -t {args.seconds:g}, {args.requests} HTTP/1.0 requests per round)")
    refs = [n for n in ("podman", "host") if n in med]
    head = "".join(f" {'vs ' + n:>10}" for n in refs)
    print(f"{'peer':<8} {'Gbit/s':>8}{head} {'conn/s':>8}{head}")
    for name, (g, c) in med.items():
        gs = "".join(f" {g / med[n][0]:9.2f}x" for n in refs)
        cs = "".join(f" {c / med[n][1]:9.2f}x" for n in refs)
        print(f"{name:<8} {g:8.2f}{gs} {c:8.0f}{cs}")
    if starts:
        print(f"\nrl run --rm true, median of {args.startup_runs} interleaved runs:")
        for m, t in starts.items():
            print(f"  --network {m:<10} {t * 1000:6.0f} ms  ({t / starts['none']:.2f}x none)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
