#!/usr/bin/env python3
"""What --userns=keep-id, --device and a CDI device cost `rl run`: `rl run --rm
--userns=keep-id --rootfs R true` (and `--device /dev/zero:/dev/zz`, and `--device
bench.example/dev=zero` through a CDI spec in the private $XDG_CONFIG_HOME/cdi: that
node, an environment variable and a file mount) against `rl run --rm --rootfs R true`,
interleaved (the order rotates per round).

Run as the unprivileged user (stdlib only), with rl's venv on PATH or --rl:

    python3 benchmarks/hpc.py [--runs N] [--rl PATH] [--rootfs DIR]

Prints each variant's median and p90 wall time (ms) and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import RlState, build_rootfs, median, p90, remove_tree, resolve_rl


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rl", default="rl")
    ap.add_argument("--rootfs")
    args = ap.parse_args()
    rl, _ = resolve_rl(args.rl)
    state = RlState(shared=False)
    tmp = Path(tempfile.mkdtemp(prefix="rl-hpc-"))
    try:
        rootfs = Path(args.rootfs) if args.rootfs else build_rootfs(tmp / "rootfs")
        assert state.base is not None
        cdi = state.base / "config" / "cdi"
        cdi.mkdir(parents=True)
        lib = tmp / "libbench.so"
        lib.write_text("x")
        (cdi / "bench.json").write_text(json.dumps({
            "cdiVersion": "0.6.0", "kind": "bench.example/dev",
            "devices": [{"name": "zero", "containerEdits": {
                "deviceNodes": [{"path": "/dev/zz", "hostPath": "/dev/zero"}],
                "env": ["BENCH=1"],
                "mounts": [{"hostPath": str(lib), "containerPath": "/usr/lib/libbench.so",
                            "options": ["ro", "bind"]}]}}]}))
        variants = {"plain": [], "keep-id": ["--userns=keep-id"],
                    "device": ["--device", "/dev/zero:/dev/zz"],
                    "cdi": ["--device", "bench.example/dev=zero"]}
        times: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        for warm in names:  # the fork server starts on the first
            subprocess.run([rl, "run", "--rm", *variants[warm], "--rootfs", str(rootfs), "true"],
                           env=state.env, check=True, capture_output=True)
        for i in range(args.runs):
            for name in names[i % len(names):] + names[:i % len(names)]:
                t0 = time.perf_counter()
                subprocess.run([rl, "run", "--rm", *variants[name], "--rootfs", str(rootfs),
                                "true"], env=state.env, check=True, capture_output=True)
                times[name].append(time.perf_counter() - t0)
        base = median(times["plain"])
        for name in names:
            m = median(times[name])
            print(f"{name:8} median {m * 1000:6.1f} ms  p90 {p90(times[name]) * 1000:6.1f} ms"
                  f"  ratio {m / base:.3f}  (+{(m - base) * 1000:.1f} ms)")
    finally:
        state.close()
        remove_tree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
