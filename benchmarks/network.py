#!/usr/bin/env python3
"""Published-port throughput and connection rate: rl's two port drivers against podman,
bare slirp4netns and host loopback, in ONE interleaved run.

Run as the unprivileged user (stdlib only; needs iperf3 and podman, see setup-peers):

    python3 benchmarks/network.py [--rounds N] [--seconds S] [--requests N] [--rl PATH]

Each peer serves, behind a published port on 127.0.0.1:

    rl         rl run -p H:5201 (default network: slirp4netns, port_handler=rl:
               rl's splice forwarder, client address kept)
    rl-slirp   rl run --network slirp4netns:port_handler=slirp4netns -p ...
               (slirp4netns's own forwarding)
    podman     podman --runtime=runc run -p ... (rootless default for podman 4.3:
               slirp4netns + rootlessport)
    slirp4netns  bare `unshare -Urn` + slirp4netns --configure + add_hostfwd
    pasta      bare `pasta --config-net -t 127.0.0.1/H:5201 … -- sh -c SERVERS`
    host       the same servers on the host's loopback: the ceiling

The servers are /usr/bin/iperf3 -s (the host's, bind-mounted read-only into
a busybox rootfs with /usr, /lib, /lib64) and busybox httpd. Per round and
peer, in a rotating order: one `iperf3 -c -t S` host -> container
(Gbit/s, receiver side) and N sequential short HTTP/1.0 requests, each on a
new connection (connections/s). Medians over the rounds; ratios are against
podman.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import RlState, build_rootfs, remove_tree, resolve_rl

VOLS = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro"]
SERVE = "/bin/busybox httpd -p 8080 -h /www && exec /usr/bin/iperf3 -s -p 5201"


def server_rootfs(state: RlState, name: str) -> tuple[Path, Path]:
    """A busybox rootfs in the private state's NAME/ with the mount points VOLS binds the
    host's /usr on and a /www/index.html for httpd: (NAME/, the rootfs)."""
    tmp = Path(state.base or "/tmp") / name
    tmp.mkdir(parents=True, exist_ok=True)
    rootfs = build_rootfs(tmp / "rootfs")
    for d in ("usr", "lib", "lib64", "www"):
        (rootfs / d).mkdir(exist_ok=True)
    (rootfs / "www" / "index.html").write_text("hello\n")
    return tmp, rootfs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(name: str, port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            if c.recv(16):
                return
        time.sleep(0.1)
    raise SystemExit(f"{name}: nothing answers on 127.0.0.1:{port}")


class Peer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.iperf_port = 0
        self.http_port = 0
        self.gbits: list[float] = []
        self.rates: list[float] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stop_cmds: list[list[str]] = []
        self.env: dict[str, str] | None = None

    def ready(self) -> None:
        wait_port(self.name, self.http_port)

    def close(self) -> None:
        for cmd in self.stop_cmds:
            subprocess.run(cmd, capture_output=True, env=self.env, check=False)
        for p in self.procs:
            # Own sessions (start_new_session): the servers started inside go too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def rl_peer(name: str, rl: str, state: RlState, rootfs: Path, network: list[str]) -> Peer:
    peer = Peer(name)
    peer.env = state.env
    peer.iperf_port, peer.http_port = free_port(), free_port()
    out = subprocess.run(
        [rl, "run", "-d", *network, "-p", f"127.0.0.1:{peer.iperf_port}:5201",
         "-p", f"127.0.0.1:{peer.http_port}:8080", *VOLS, "--rootfs", str(rootfs),
         "/bin/sh", "-c", SERVE], capture_output=True, text=True, env=state.env, check=True)
    peer.stop_cmds.append([rl, "rm", "-f", out.stdout.strip()])
    return peer


def podman_peer(rootfs: Path) -> Peer:
    peer = Peer("podman")
    peer.iperf_port, peer.http_port = free_port(), free_port()
    out = subprocess.run(
        ["podman", "--runtime=runc", "run", "-d", "-p", f"127.0.0.1:{peer.iperf_port}:5201",
         "-p", f"127.0.0.1:{peer.http_port}:8080", *VOLS, "--rootfs", str(rootfs),
         "/bin/sh", "-c", SERVE], capture_output=True, text=True, check=True)
    peer.stop_cmds.append(["podman", "--runtime=runc", "rm", "-f", "-t", "0",
                           out.stdout.strip()])
    return peer


def slirp_peer(rootfs: Path, tmp: Path) -> Peer:
    """slirp4netns on its own: a user+net namespace running the servers, hostfwd via API."""
    peer = Peer("slirp4netns")
    peer.iperf_port, peer.http_port = free_port(), free_port()
    www = rootfs / "www"
    ns = subprocess.Popen(
        ["unshare", "-Urn", "sh", "-c",
         f"ip link set lo up; busybox httpd -f -p 8080 -h {www} & exec iperf3 -s -p 5201"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.3)
    api = tmp / "slirp.sock"
    slirp = subprocess.Popen(
        ["slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
         f"--api-socket={api}", str(ns.pid), "tap0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    peer.procs += [slirp, ns]
    deadline = time.monotonic() + 10
    while not api.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    for host, guest in ((peer.iperf_port, 5201), (peer.http_port, 8080)):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(api))
            s.sendall(json.dumps({"execute": "add_hostfwd", "arguments": {
                "proto": "tcp", "host_addr": "127.0.0.1", "host_port": host,
                "guest_port": guest}}).encode())
            s.shutdown(socket.SHUT_WR)
            answer = s.recv(4096)
            if b"error" in answer:
                raise SystemExit(f"slirp4netns add_hostfwd: {answer!r}")
    return peer


def pasta_peer(rootfs: Path) -> Peer:
    """pasta on its own: its own port forwarding into a namespace it creates."""
    peer = Peer("pasta")
    peer.iperf_port, peer.http_port = free_port(), free_port()
    www = rootfs / "www"
    peer.procs.append(subprocess.Popen(
        ["pasta", "--config-net", "-f", "--quiet", "-t", f"127.0.0.1/{peer.iperf_port}:5201",
         "-t", f"127.0.0.1/{peer.http_port}:8080", "-u", "none", "-T", "none", "-U", "none",
         "--", "sh", "-c", f"busybox httpd -f -p 8080 -h {www} & exec iperf3 -s -p 5201"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    return peer


def host_peer(rootfs: Path) -> Peer:
    peer = Peer("host")
    peer.iperf_port, peer.http_port = free_port(), free_port()
    peer.procs.append(subprocess.Popen(
        ["busybox", "httpd", "-f", "-p", f"127.0.0.1:{peer.http_port}", "-h",
         str(rootfs / "www")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True))
    peer.procs.append(subprocess.Popen(
        ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(peer.iperf_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    return peer


def iperf(port: int, seconds: float) -> float:
    r = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"],
                       capture_output=True, text=True, check=False)
    data = json.loads(r.stdout or "{}")
    if "error" in data or r.returncode != 0:
        raise RuntimeError(f"iperf3 to {port}: {data.get('error', r.stderr)}")
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9


def http_rate(port: int, n: int) -> float:
    req = b"GET /index.html HTTP/1.0\r\n\r\n"
    t0 = time.perf_counter()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(req)
            while c.recv(65536):
                pass
    return n / (time.perf_counter() - t0)


def startup_cost(rl: str, state: RlState, rootfs: Path, runs: int) -> dict[str, float]:
    """Median wall time of `rl run --rm true` per network mode, interleaved."""
    modes = ["none", "slirp4netns", "pasta"] if shutil.which("pasta") else ["none", "slirp4netns"]
    times: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(runs + 1):
        for m in modes[i % len(modes):] + modes[:i % len(modes)]:
            t0 = time.perf_counter()
            subprocess.run([rl, "run", "--rm", "--network", m, "--rootfs", str(rootfs), "true"],
                           env=state.env, check=True, capture_output=True)
            if i:  # the first round warms the fork server up
                times[m].append(time.perf_counter() - t0)
    return {m: statistics.median(v) for m, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rl", default="rl")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--startup-runs", type=int, default=20,
                    help="rl run --rm true per network mode (0: skip)")
    args = ap.parse_args()
    for tool in ("iperf3", "slirp4netns", "busybox") + (() if args.no_podman else ("podman",)):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run benchmarks/setup-peers as root")
    rl, _ = resolve_rl(args.rl)
    state = RlState(shared=False)
    tmp, rootfs = server_rootfs(state, "net")
    peers: list[Peer] = []
    starts: dict[str, float] = {}
    try:
        if args.startup_runs:
            starts = startup_cost(rl, state, rootfs, args.startup_runs)
        peers.append(rl_peer("rl", rl, state, rootfs, []))
        peers.append(rl_peer("rl-slirp", rl, state, rootfs,
                             ["--network", "slirp4netns:port_handler=slirp4netns"]))
        if not args.no_podman:
            peers.append(podman_peer(rootfs))
        peers.append(slirp_peer(rootfs, tmp))
        if shutil.which("pasta") is not None:
            peers.append(pasta_peer(rootfs))
        peers.append(host_peer(rootfs))
        for p in peers:
            p.ready()
            iperf(p.iperf_port, 1)  # warm-up
            http_rate(p.http_port, 50)
        for r in range(args.rounds):
            order = peers[r % len(peers):] + peers[:r % len(peers)]
            for p in order:
                p.gbits.append(iperf(p.iperf_port, args.seconds))
                p.rates.append(http_rate(p.http_port, args.requests))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for p in peers:
            p.close()
        state.close()
        remove_tree(tmp)
    base = next((p for p in peers if p.name == "podman"), peers[0])
    g0, c0 = statistics.median(base.gbits), statistics.median(base.rates)
    print(f"host -> container through a published port; medians of {args.rounds} rounds "
          f"(iperf3 -t {args.seconds:g}, {args.requests} HTTP/1.0 requests per round)")
    print(f"{'peer':<12} {'Gbit/s':>8} {'vs ' + base.name:>10} {'conn/s':>8} "
          f"{'vs ' + base.name:>10}")
    for p in peers:
        g, c = statistics.median(p.gbits), statistics.median(p.rates)
        print(f"{p.name:<12} {g:8.2f} {g / g0:9.2f}x {c:8.0f} {c / c0:9.2f}x")
    if starts:
        print(f"\nrl run --rm true, median of {args.startup_runs} interleaved runs per mode:")
        for m, t in starts.items():
            print(f"  --network {m:<12} {t * 1000:6.0f} ms  ({t / starts['none']:.2f}x none)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
