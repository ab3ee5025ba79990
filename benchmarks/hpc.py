#!/usr/bin/env python3
"""What --userns=keep-id, --device and a CDI device cost `rl run`: `rl run --rm
--userns=keep-id --rootfs R true` (and `--device /dev/zero:/dev/zz`, and `--device
bench.example/dev=zero` through a CDI spec in the private $XDG_CONFIG_HOME/cdi: that
node, an environment variable and a file mount) against `rl run --rm --rootfs R true`,
interleaved (the order rotates per round).

Then, with --image-mb MB (0: skipped), keep-id over an image (busybox plus MB megabytes
in 200 files, one layer): the first run with each new mapping (keep-id:uid=N, a new N
each round) against a later one, as seconds per GB of image, and `rl run --rm
--userns=keep-id IMG true` (its mapping's copy made) against `rl run --rm IMG true`,
interleaved, per storage driver (--drivers; vfs copies the image at each create
anyway, shifting it there, so it has no first run to tell apart).

Run as the unprivileged user (stdlib only), with rl's venv on PATH or --rl:

    python3 benchmarks/hpc.py [--runs N] [--rl PATH] [--rootfs DIR] [--image-mb MB]

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
from storage import make_image_tar


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rl", default="rl")
    ap.add_argument("--rootfs")
    ap.add_argument("--image-mb", type=int, default=0)
    ap.add_argument("--drivers", default="overlay,vfs")
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
        if args.image_mb:
            image_runs(rl, state.env, rootfs, tmp, args)
    finally:
        state.close()
        remove_tree(tmp)
    return 0


def image_runs(rl: str, env: dict[str, str], rootfs: Path, tmp: Path,
               args: argparse.Namespace) -> None:
    tar = make_image_tar(tmp / "img.tar", rootfs, args.image_mb, 200)
    subprocess.run([rl, "import", str(tar), "bench-keepid"], env=env, check=True,
                   capture_output=True)
    gb = tar.stat().st_size / (1 << 30)

    def run(*flags: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([rl, "run", "--rm", "--network=none", *flags, "bench-keepid", "true"],
                       env=env, check=True, capture_output=True)
        return time.perf_counter() - t0

    for driver in args.drivers.split(","):
        d = ("--storage-driver", driver)
        run(*d)
        run(*d, "--userns=keep-id")  # its copy, made once
        first, later = [], []
        for i in range(max(3, args.runs // 4) if driver != "vfs" else 0):  # vfs: no cache
            first.append(run(*d, f"--userns=keep-id:uid={2000 + i}"))  # a new mapping
            later.append(run(*d, "--userns=keep-id"))
        if first:
            extra = median(first) - median(later)
            print(f"[{driver}] image {gb * 1024:.0f} MB: first run with a new mapping "
                  f"{median(first) * 1000:.0f} ms, later {median(later) * 1000:.0f} ms: "
                  f"{extra / gb:.1f} s per GB")
        times: dict[str, list[float]] = {"plain": [], "keep-id": []}
        for i in range(args.runs):
            order = ["plain", "keep-id"] if i % 2 == 0 else ["keep-id", "plain"]
            for name in order:
                times[name].append(run(*d, *(["--userns=keep-id"] if name == "keep-id"
                                             else [])))
        base = median(times["plain"])
        for name, ts in times.items():
            m = median(ts)
            print(f"[{driver}] image {name:8} median {m * 1000:6.1f} ms  p90 "
                  f"{p90(ts) * 1000:6.1f} ms  ratio {m / base:.3f}")


if __name__ == "__main__":
    sys.exit(main())
