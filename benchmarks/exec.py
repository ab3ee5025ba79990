#!/usr/bin/env python3
"""`exec` into a running container: rl against podman, latency and output relay.

Run as the unprivileged user (stdlib only, Python >= 3.11):

    python3 benchmarks/exec.py [--runs N] [--mib M] [--rootfs DIR] [--rl PATH]

One idle container per tool (`sleep 3600`, --network=none, --rootfs R), then
interleaved rounds of:

    latency   TOOL exec CTR true                            (wall time of the command)
    relay     TOOL exec CTR head -c M MiB /dev/zero > pipe  (MiB/s read from TOOL's stdout)

rl's `exec` relays the command's stdio through pipes it owns (no host file
description enters the container), as podman's conmon does; the relay
figure is what that costs. podman runs with --runtime=runc (crun refuses
this hybrid-cgroup host). Compare ratios from one run, not absolute figures
across runs: the machine drifts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import RlState, build_rootfs, median, ms, p90, remove_tree, resolve_rl


class Peer:
    def __init__(self, name: str, base: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.base = base
        self.env = env
        self.ctr = ""
        self.latency: list[float] = []
        self.relay: list[float] = []  # MiB/s

    def start(self, rootfs: Path) -> None:
        r = subprocess.run([*self.base, "run", "-d", "--network=none", "--rootfs", str(rootfs),
                            "sleep", "3600"], capture_output=True, text=True, env=self.env,
                           check=False)
        if r.returncode != 0:
            raise SystemExit(f"{self.name}: run -d failed: {r.stderr.strip()}")
        self.ctr = r.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        if self.ctr:
            subprocess.run([*self.base, "rm", "-f", self.ctr], capture_output=True,
                           env=self.env, check=False)

    def exec_true(self) -> float:
        t0 = time.perf_counter()
        r = subprocess.run([*self.base, "exec", self.ctr, "true"], stdin=subprocess.DEVNULL,
                           capture_output=True, env=self.env, check=False)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{self.name}: exec true exited {r.returncode}: {r.stderr!r}")
        return dt

    def exec_relay(self, mib: int) -> float:
        argv = [*self.base, "exec", self.ctr, "head", "-c", str(mib << 20), "/dev/zero"]
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=self.env)
        assert p.stdout is not None
        got = 0
        while chunk := p.stdout.read1(1 << 20):
            got += len(chunk)
        p.wait()
        dt = time.perf_counter() - t0
        if p.returncode != 0 or got != mib << 20:
            raise SystemExit(f"{self.name}: relay exited {p.returncode} after {got} bytes")
        return mib / dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--mib", type=int, default=256, help="MiB relayed per round (default 256)")
    ap.add_argument("--rootfs", type=Path, help="root filesystem (default: build a busybox one)")
    ap.add_argument("--rl", default="rl", help="rl executable (default: rl on PATH)")
    ap.add_argument("--podman", default="podman")
    ap.add_argument("--no-podman", action="store_true")
    args = ap.parse_args()
    if os.geteuid() == 0:
        ap.error("run me as the unprivileged user (rootless is the point)")

    rl_path, _ = resolve_rl(args.rl)
    work = Path(tempfile.mkdtemp(prefix="rlbench-"))
    state = RlState(False)
    peers = [Peer("rl", [rl_path], state.env)]
    podman = shutil.which(args.podman)
    if podman and not args.no_podman:
        peers.append(Peer("podman", [podman, "--runtime=runc"], dict(os.environ)))
    try:
        rootfs = args.rootfs.resolve() if args.rootfs else build_rootfs(work / "rootfs")
        print(f"rl exec benchmark: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
              f"{os.uname().release}, {os.cpu_count()} CPUs, rootfs {rootfs}")
        if len(peers) == 1:
            print("  skipped podman: " + ("--no-podman" if args.no_podman else "not installed"))
        for p in peers:
            p.start(rootfs)
            p.exec_true()  # warm-up
            p.exec_relay(16)
        for i in range(args.runs):
            k = i % len(peers)
            for p in peers[k:] + peers[:k]:
                p.latency.append(p.exec_true())
                p.relay.append(p.exec_relay(args.mib))
        print(f"\n{args.runs} interleaved rounds after one warm-up each")
        print(f"  {'tool':8} {'exec true median ms':>20} {'p90 ms':>8} "
              f"{'relay MiB/s median':>19}")
        for p in peers:
            print(f"  {p.name:8} {ms(median(p.latency)):>20} {ms(p90(p.latency)):>8} "
                  f"{median(p.relay):>19.0f}")
        if len(peers) == 2:
            rl, pm = peers
            print(f"  rl/podman: exec latency {median(rl.latency) / median(pm.latency):.2f}x, "
                  f"relay throughput {median(rl.relay) / median(pm.relay):.2f}x")
    finally:
        for p in peers:
            p.stop()
        state.close()
        remove_tree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
