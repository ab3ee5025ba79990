#!/usr/bin/env python3
"""rl-oci against runc on the same bundle (issue 13's speed target: rl-oci ≤ 1.5× runc).

Run as the unprivileged user, from the repository, with rl's venv built:

    python3 benchmarks/oci.py [--runs N] [--rl-oci PATH] [--runc PATH] [--podman]

One bundle (a busybox rootfs and `runc spec --rootless`, command `true`, no
terminal) is driven by both runtimes, each with its own --root, interleaved
round by round so that a change in the machine's load hits both alike:

    cycle: create B; start; wait for the state to say stopped; delete
    run:   run (foreground: create + start + wait + delete in one process)

It prints the median wall time of each per runtime and the ratio rl-oci /
runc, and beside it the median CPU time (user + system of every process
the call reaped: on a loaded machine the wall time is mostly waiting for a
core, which CPU time is not). With --podman it also times `podman --runtime X run --rm IMAGE true`
for both runtimes (an isolated vfs store under /tmp). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def busybox_rootfs(dest: Path) -> None:
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", dest / "bin/busybox")
    for applet in ("sh", "true", "echo", "sleep"):
        (dest / "bin" / applet).symlink_to("busybox")
    (dest / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dest / "etc/group").write_text("root:x:0:\n")


def make_bundle(base: Path, runc: str) -> Path:
    b = base / "bundle"
    busybox_rootfs(b / "rootfs")
    subprocess.run([runc, "spec", "--rootless", "-b", str(b)], check=True)
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"].update(args=["true"], terminal=False)
    (b / "config.json").write_text(json.dumps(cfg))
    return b


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


CPU: dict[str, list[float]] = {}


def timed(argv: list[str], key: str = "") -> float:
    t, c = time.perf_counter(), _cpu()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    if key:
        CPU.setdefault(key, []).append(_cpu() - c)
    return time.perf_counter() - t


def cycle(rt: list[str], bundle: Path, cid: str, key: str = "") -> float:
    t, c = time.perf_counter(), _cpu()
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL,
             "stderr": subprocess.DEVNULL, "check": True}
    subprocess.run([*rt, "create", "-b", str(bundle), cid], **quiet)  # type: ignore[call-overload]
    subprocess.run([*rt, "start", cid], **quiet)  # type: ignore[call-overload]
    while True:
        st = subprocess.run([*rt, "state", cid], capture_output=True, text=True, check=True)
        if json.loads(st.stdout)["status"] == "stopped":
            break
    subprocess.run([*rt, "delete", cid], **quiet)  # type: ignore[call-overload]
    if key:
        CPU.setdefault(key, []).append(_cpu() - c)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--rl-oci", default=str(REPO / ".venv/bin/rl-oci"))
    ap.add_argument("--runc", default=shutil.which("runc") or "runc")
    ap.add_argument("--podman", action="store_true")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="rlob-", dir="/tmp"))
    try:
        bundle = make_bundle(base, args.runc)
        runtimes = {"rl-oci": [args.rl_oci, "--root", str(base / "rl")],
                    "runc": [args.runc, "--root", str(base / "runc")]}
        times: dict[str, list[float]] = {}
        for name, rt in runtimes.items():  # one warm-up each: page cache, bytecode
            cycle(rt, bundle, "warm")
        for i in range(args.runs):
            for name, rt in runtimes.items():
                times.setdefault(f"{name} cycle", []).append(
                    cycle(rt, bundle, f"c{i}", f"{name} cycle"))
                times.setdefault(f"{name} run", []).append(
                    timed([*rt, "run", "-b", str(bundle), f"r{i}"], f"{name} run"))
        if args.podman:
            pbase = base / "pm"
            podman = ["podman", "--root", str(pbase / "root"), "--runroot",
                      str(pbase / "run"), "--storage-driver", "vfs",
                      "--cgroup-manager=cgroupfs", "--events-backend=file"]
            tar = base / "bb.tar"
            subprocess.run(["tar", "-C", str(bundle / "rootfs"), "-cf", str(tar), "."],
                           check=True)
            subprocess.run([*podman, "import", str(tar), "localhost/rlob:1"], check=True,
                           capture_output=True)
            for i in range(args.runs):
                for name, path in (("rl-oci", args.rl_oci), ("runc", args.runc)):
                    key = f"podman+{name} run --rm"
                    times.setdefault(key, []).append(timed(
                        [*podman, f"--runtime={path}", "run", "--rm", "--net=none",
                         "localhost/rlob:1", "true"], key))
            subprocess.run(["podman", "unshare", "rm", "-rf", str(pbase)], check=False,
                           capture_output=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        cpu = {k: statistics.median(v) for k, v in CPU.items()}
        print(f"{'what':<28} {'median ms':>10} {'cpu ms':>8} {'runs':>5}")
        for k, v in med.items():
            print(f"{k:<28} {v * 1000:>10.1f} {cpu[k] * 1000:>8.1f} {len(times[k]):>5}")
        pairs = [(f"rl-oci/runc {w}", f"rl-oci {w}", f"runc {w}") for w in ("cycle", "run")]
        if args.podman:
            pairs.append(("podman+rl-oci/podman+runc", "podman+rl-oci run --rm",
                          "podman+runc run --rm"))
        for label, a, b in pairs:
            print(f"ratio {label}: {med[a] / med[b]:.2f} (cpu {cpu[a] / cpu[b]:.2f})")
        print(f"load average: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    finally:
        subprocess.run(["podman", "unshare", "rm", "-rf", str(base)], check=False,
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
