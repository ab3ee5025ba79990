#!/usr/bin/env python3
"""What resource limits cost `rl run`: with and without a cgroup, in a cgroup v2 guest.

This host's cgroups have no v2 controllers, so the measurement runs in the
qemu guest the quota tests use (tests/vm/guest.py: Debian's kernel under
TCG, this checkout's .venv, a delegated user@UID.service). Run as the
unprivileged user, from the checkout, after scripts/setup-host:

    python3 benchmarks/quotas.py [--runs N]

Three variants of `rl run --rm --network=none --rootfs R true`, INTERLEAVED
(each round runs each once, rotating the order, after a warm-up each):

    disabled  --cgroups=disabled               (no cgroup at all)
    cgroup    (no flag)                        (a cgroup per container, no limits)
    limits    --memory 64m --cpus 1 --pids-limit 100 --cpuset-cpus 0

TCG makes every figure several times slower than on hardware: compare the
ratios, not the milliseconds. podman cannot run in the guest (not installed
there and no registry), so there is no peer column.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {
    "disabled": ["--cgroups=disabled"],
    "cgroup": [],
    "limits": ["--memory", "64m", "--cpus", "1", "--pids-limit", "100", "--cpuset-cpus", "0"],
}


def in_guest(runs: int) -> int:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from startup import RlState, build_rootfs  # type: ignore[import-not-found]

    state = RlState(shared=False)
    rootfs = build_rootfs(Path(tempfile.mkdtemp(prefix="rlq-", dir="/tmp")) / "rootfs")
    rl = str(REPO / ".venv" / "bin" / "rl")
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    names = list(VARIANTS)

    def once(flags: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run([rl, "run", "--rm", "--network=none", *flags, "--rootfs", str(rootfs),
                        "true"], env=state.env, check=True, stdin=subprocess.DEVNULL)
        return time.perf_counter() - start

    try:
        for name in names:  # warm-up: the fork server, the cgroup tree, the page cache
            once(VARIANTS[name])
        for i in range(runs):
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                times[name].append(once(VARIANTS[name]))
    finally:
        state.close()
    base = statistics.median(times["disabled"])
    print(f"rl run --rm true in a cgroup v2 guest (TCG), {runs} interleaved rounds")
    print(f"{'variant':10} {'median':>9} {'p90':>9} {'vs disabled':>12}")
    for name in names:
        xs = sorted(times[name])
        med, p90 = statistics.median(xs), xs[max(0, int(len(xs) * 0.9) - 1)]
        print(f"{name:10} {med * 1000:7.0f}ms {p90 * 1000:7.0f}ms {med / base:11.2f}x")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.in_guest:
        return in_guest(args.runs)
    sys.path.insert(0, str(REPO / "tests"))
    from vm import guest  # type: ignore[import-not-found]

    why = guest.missing_requirements()
    if why:
        raise SystemExit(f"cannot boot the cgroup v2 guest: {why}")
    cmd = f"{REPO}/.venv/bin/python {REPO}/benchmarks/quotas.py --in-guest --runs {args.runs}"
    res = guest.run(REPO, cmd, timeout=1200)
    print(res.pytest_log, end="")
    if res.exit_status != 0:
        print(res.console[-3000:], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
