#!/usr/bin/env python3
"""`rl run IMAGE` per storage driver, against podman on the same image.

Run as the unprivileged user with rl's venv on PATH:

    python3 benchmarks/storage.py [--runs N] [--mb MB] [--files N]

The image is busybox plus MB megabytes in N files (one layer each). Every
round runs each tool once, in a rotating order (the machine drifts: compare
ratios from one run). Two workloads, each a whole `run --rm` (create, mount,
start, teardown, removal):

    start   run --rm --network=none IMAGE true
    read    run --rm --network=none IMAGE sh -c 'cat /fat/* > /dev/null'

Tools: rl with --storage-driver overlay | fuse | fuse-overlayfs | vfs, and
podman --runtime=runc with its overlay driver (native overlayfs in a user
namespace on this kernel) and its vfs driver, each in a private store.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import RlState, build_rootfs, median, remove_tree, resolve_rl

PODMAN = ["podman", "--runtime=runc", "--cgroup-manager=cgroupfs", "--events-backend=none"]
RL_DRIVERS = ["overlay", "fuse", "fuse-overlayfs", "vfs"]


def make_image_tar(dest: Path, rootfs: Path, mb: int, files: int) -> Path:
    chunk = os.urandom(1 << 20)
    size = (mb << 20) // files

    def owners(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(dest, "w") as tf:
        tf.add(rootfs, arcname=".", filter=owners)
        d = tarfile.TarInfo("./fat")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(d)
        for i in range(files):
            info = tarfile.TarInfo(f"./fat/f{i:05d}")
            info.size = size
            data = (chunk * (size // len(chunk) + 1))[:size]
            tf.addfile(info, io.BytesIO(data))
    return dest


def run(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=env, check=False)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: "
                           f"{r.stderr.decode(errors='replace').strip()[-400:]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--rl", default="rl")
    ap.add_argument("--no-podman", action="store_true")
    args = ap.parse_args()

    rl, _ = resolve_rl(args.rl)
    state = RlState(shared=False)
    work = Path(tempfile.mkdtemp(prefix="rlsb-", dir="/tmp"))
    podman_env = {**os.environ, "XDG_CONFIG_HOME": str(work / "podman-config")}
    try:
        rootfs = build_rootfs(work / "rootfs")
        tar = make_image_tar(work / "img.tar", rootfs, args.mb, args.files)
        subprocess.run([rl, "import", str(tar), "bench-fat"], env=state.env, check=True,
                       stdout=subprocess.DEVNULL)
        tools: dict[str, tuple[list[str], dict[str, str]]] = {}
        for d in RL_DRIVERS:
            tools[f"rl {d}"] = ([rl, "run", "--rm", "--network=none", "--storage-driver", d,
                                 "bench-fat"], state.env)
        if not args.no_podman:
            subprocess.run([rl, "save", "-o", str(work / "img.docker.tar"), "bench-fat"],
                           env=state.env, check=True)
            for d in ("overlay", "vfs"):
                store = [*PODMAN, "--root", str(work / f"p-{d}"), "--runroot",
                         str(work / f"pr-{d}"), "--storage-driver", d]
                subprocess.run([*store, "load", "-q", "-i", str(work / "img.docker.tar")],
                               env=podman_env, check=True, stdout=subprocess.DEVNULL)
                tools[f"podman {d}"] = ([*store, "run", "--rm", "--network=none",
                                         "localhost/bench-fat:latest"], podman_env)
        workloads = {"start": ["true"],
                     "read": ["sh", "-c", "cat /fat/* > /dev/null"]}
        names = list(tools)
        times: dict[tuple[str, str], list[float]] = {}
        for name in names:  # warm-up (rl's fork server, page cache of the layers)
            for cmd in workloads.values():
                run(tools[name][0] + cmd, tools[name][1])
        for r in range(args.runs):
            order = names[r % len(names):] + names[:r % len(names)]
            for w, cmd in workloads.items():
                for name in order:
                    argv, env = tools[name]
                    times.setdefault((w, name), []).append(run(argv + cmd, env))
        base = "podman overlay" if "podman overlay" in tools else "rl overlay"
        print(f"image: busybox + {args.mb} MB in {args.files} files; {args.runs} rounds, "
              f"interleaved; medians of `run --rm`")
        for w in workloads:
            print(f"\n{w}:")
            ref = median(times[(w, base)])
            for name in names:
                m = median(times[(w, name)])
                print(f"  {name:<20} {m * 1000:8.1f} ms   {m / ref:5.2f}x {base}")
    finally:
        state.close()
        remove_tree(work)
        subprocess.run(["podman", "unshare", "rm", "-rf", str(work)], capture_output=True,
                       check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
