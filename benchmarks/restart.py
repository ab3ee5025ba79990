#!/usr/bin/env python3
"""Restart latency of a --restart=always container: PID 1 dies -> the new PID 1 runs.

Run as the unprivileged user (stdlib only, Python >= 3.11):

    python3 benchmarks/restart.py [--runs N] [--rootfs DIR] [--rl PATH] [--no-podman]

One container per tool (`--restart=always --network=none --rootfs R sleep N`, a
distinct N per tool), then interleaved rounds: SIGKILL its PID 1 from the host
(not through the tool: the restart policy applies, as to a crash) and time
until a new PID 1 exists and runs `sleep N` (found by scanning /proc every
millisecond: the same probe for every tool). For rl also the time until its
record says running again (state.json, what `rl ps` and `rl inspect` read).

docker's restart manager (which rl follows) waits 100 ms before the first
restart and doubles the delay per restart until a run lasts 10 s: the rounds
are 10.5 s apart, so every restart here waits the first delay, 100 ms; the
figure "overhead" is the latency minus that delay, what rl itself costs.
podman (--runtime=runc; its restart goes through conmon and `podman container
cleanup`) has no such delay. Each round also times the tool's cold start,
`run --rm --network=none --rootfs R true`, in the same conditions: the
restart's overhead against it does not depend on how loaded the machine is.
Compare within one run: the machine drifts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import RlState, build_rootfs, median, ms, remove_tree, resolve_rl

FIRST_DELAY = 0.1  # docker's (and rl's) first restart delay
GAP = 10.5  # a run this long resets the delay to FIRST_DELAY


def find_pid(marker: bytes, exclude: int) -> int:
    """The pid of a process whose argv is exactly marker, other than exclude (0: none)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == exclude:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read() == marker:
                    return int(entry)
        except OSError:
            continue
    return 0


class Peer:
    def __init__(self, name: str, base: list[str], env: dict[str, str], seconds: int) -> None:
        self.name = name
        self.base = base
        self.env = env
        self.seconds = seconds
        self.marker = f"sleep\0{seconds}\0".encode()
        self.ctr = ""
        self.latency: list[float] = []
        self.recorded: list[float] = []  # rl: until state.json says running again
        self.cold: list[float] = []  # run --rm true
        self.state_json: Path | None = None

    def start(self, rootfs: Path) -> None:
        r = subprocess.run([*self.base, "run", "-d", "--restart=always", "--network=none",
                            "--rootfs", str(rootfs), "sleep", str(self.seconds)],
                           capture_output=True, text=True, env=self.env, check=False)
        if r.returncode != 0:
            raise SystemExit(f"{self.name}: run -d failed: {r.stderr.strip()}")
        self.ctr = r.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        if self.ctr:
            subprocess.run([*self.base, "rm", "-f", self.ctr], capture_output=True,
                           env=self.env, check=False)

    def cold_start(self, rootfs: Path) -> None:
        t0 = time.perf_counter()
        r = subprocess.run([*self.base, "run", "--rm", "--network=none", "--rootfs",
                            str(rootfs), "true"], capture_output=True, env=self.env,
                           check=False)
        if r.returncode != 0:
            raise SystemExit(f"{self.name}: run --rm true failed: {r.stderr!r}")
        self.cold.append(time.perf_counter() - t0)

    def pid1(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pid = find_pid(self.marker, 0)
            if pid:
                return pid
            time.sleep(0.01)
        raise SystemExit(f"{self.name}: its PID 1 never showed up")

    def _running_in_record(self, old: int) -> bool:
        if self.state_json is None:
            return True
        try:
            st = json.loads(self.state_json.read_text())
        except (OSError, ValueError):
            return False
        return bool(st.get("status") == "running" and not st.get("restarting")
                    and st.get("pid") not in (0, old))

    def round(self) -> None:
        old = self.pid1()
        t0 = time.perf_counter()
        os.kill(old, signal.SIGKILL)
        new = seen = 0.0
        deadline = t0 + 30
        while time.perf_counter() < deadline and not (new and seen):
            if not new and find_pid(self.marker, old):
                new = time.perf_counter() - t0
            if not seen and self._running_in_record(old):
                seen = time.perf_counter() - t0
            time.sleep(0.001)
        if not new:
            raise SystemExit(f"{self.name}: no new PID 1 within 30 s")
        self.latency.append(new)
        if self.state_json is not None:
            self.recorded.append(seen)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="timed rounds (default 5, 10.5 s each)")
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
    peers: list[Peer] = []
    try:
        rootfs = args.rootfs.resolve() if args.rootfs else build_rootfs(work / "rootfs")
        rl = Peer("rl", [rl_path], state.env, 3601)
        peers.append(rl)
        podman = shutil.which(args.podman)
        if podman and not args.no_podman:
            peers.append(Peer("podman", [podman, "--runtime=runc"], dict(os.environ), 3602))
        print(f"rl restart benchmark: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
              f"{os.uname().release}, {os.cpu_count()} CPUs, {args.runs} rounds")
        for p in peers:
            p.start(rootfs)
        cid = subprocess.run([rl_path, "inspect", "-f", "{{.Id}}", rl.ctr], env=state.env,
                             capture_output=True, text=True, check=True).stdout.strip()
        rl.state_json = Path(state.env["XDG_DATA_HOME"]) / "rl" / "containers" / cid / \
            "state.json"
        for p in peers:
            p.cold_start(rootfs)  # warm-up
            p.cold = []
        time.sleep(GAP)
        for i in range(args.runs):
            for p in peers if i % 2 == 0 else reversed(peers):
                p.round()
            time.sleep(GAP - 2)
            for p in peers:
                p.cold_start(rootfs)
            time.sleep(2)
        print(f"  {'tool':8} {'median ms':>10} {'min':>7} {'max':>7} {'overhead':>9}")
        for p in peers:
            delay = FIRST_DELAY if p.name == "rl" else 0.0
            print(f"  {p.name:8} {ms(median(p.latency))} {ms(min(p.latency))} "
                  f"{ms(max(p.latency))} {ms(median(p.latency) - delay)}   die -> new PID 1")
            print(f"  {'':8} {ms(median(p.cold))} {ms(min(p.cold))} {ms(max(p.cold))} "
                  f"{'':9}   run --rm true (cold start, same rounds)")
            if p.recorded:
                print(f"  {'':8} {ms(median(p.recorded))} {ms(min(p.recorded))} "
                      f"{ms(max(p.recorded))} {ms(median(p.recorded) - delay)}   "
                      "die -> record says running")
        ov = median(rl.latency) - FIRST_DELAY
        print(f"  target rl overhead (beyond docker's 100 ms delay) < 100 ms: "
              f"{'met' if ov < 0.1 else 'NOT met'} ({ov * 1000:.1f} ms; "
              f"{ov / median(rl.cold):.2f}x rl's cold start in the same rounds)")
        if len(peers) > 1:
            print(f"  rl / podman (die -> new PID 1): "
                  f"{median(rl.latency) / median(peers[1].latency):.2f}x")
    finally:
        for p in peers:
            p.stop()
        state.close()
        remove_tree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
