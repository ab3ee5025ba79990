#!/usr/bin/env python3
"""`rl cp` against `podman cp` (issue 15's speed target: rl ≤ 1.0× podman).

Run as the unprivileged user, from the repository, with rl's venv built:

    python3 benchmarks/cp.py [--runs N] [--size-mib M] [--podman-driver overlay|vfs]

One host tree of M MiB (default 1024) in a mix of sizes (a quarter each in 64 MiB,
1 MiB, 64 KiB and 4 KiB files, spread over directories) is copied into a running
busybox container and back out, by rl (its own state under /tmp) and by podman
4.3 with `--runtime=runc` (its own --root/--runroot under /tmp), round by round
so that a change in the machine's load hits both alike:

    in:  cp TREE CTR:/in<i>        out: cp CTR:/in<i> HOSTDIR/out<i>

Each copy is removed (untimed) before the next round. Prints the median wall
time of each and the ratios rl / podman. Standard library only.
"""

from __future__ import annotations

import argparse
import os
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
    for applet in ("sh", "true", "sleep", "rm", "du"):
        (dest / "bin" / applet).symlink_to("busybox")
    (dest / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dest / "etc/group").write_text("root:x:0:\n")


def make_tree(dest: Path, mib: int) -> int:
    """The tree to copy; returns its byte count."""
    block = os.urandom(1 << 20)
    quarter = (mib << 20) // 4
    total = 0
    for size, per_dir in ((64 << 20, 4), (1 << 20, 64), (64 << 10, 256), (4 << 10, 512)):
        count = max(1, quarter // size)
        for i in range(count):
            d = dest / f"s{size}" / f"d{i // per_dir}"
            d.mkdir(parents=True, exist_ok=True)
            with open(d / f"f{i}", "wb") as f:
                left = size
                while left:
                    n = min(left, len(block))
                    f.write(block[:n] if i % 2 else block[-n:])
                    left -= n
            total += size
    return total


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


def quiet(argv: list[str], env: dict[str, str]) -> None:
    r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    if r.returncode:
        sys.exit(f"{' '.join(argv)}: {r.stderr.decode(errors='replace').strip()}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rl", default=str(REPO / ".venv/bin/rl"))
    ap.add_argument("--podman-driver", default="overlay", choices=("overlay", "vfs"))
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="rlcb-", dir="/tmp"))
    rl_env = {**os.environ, "XDG_DATA_HOME": str(base / "rl/data"),
              "XDG_RUNTIME_DIR": str(base / "rl/run"), "XDG_CONFIG_HOME": str(base / "rl/cfg")}
    pm_env = {**os.environ, "XDG_CONFIG_HOME": str(base / "pm/cfg")}
    for d in ("rl/data", "rl/run", "rl/cfg", "pm/cfg"):
        (base / d).mkdir(parents=True, mode=0o700)
    rl = [args.rl]
    pm = ["podman", "--runtime=runc", "--root", str(base / "pm/root"), "--runroot",
          str(base / "pm/run"), "--storage-driver", args.podman_driver,
          "--cgroup-manager=cgroupfs", "--events-backend=file"]
    try:
        busybox_rootfs(base / "rootfs")
        tar = base / "bb.tar"
        subprocess.run(["tar", "-C", str(base / "rootfs"), "-cf", str(tar), "."], check=True)
        quiet([*rl, "import", "-c", 'CMD ["sh"]', str(tar), "cpbench"], rl_env)
        quiet([*pm, "import", str(tar), "localhost/cpbench:1"], pm_env)
        quiet([*rl, "run", "-d", "--network", "none", "--name", "cpb", "cpbench", "sleep", "100000"], rl_env)
        quiet([*pm, "run", "-d", "--net=none", "--name", "cpb", "localhost/cpbench:1",
               "sleep", "100000"], pm_env)
        tree = base / "tree"
        nbytes = make_tree(tree, args.size_mib)
        peers = {"rl": (rl, rl_env), "podman": (pm, pm_env)}
        times: dict[str, list[float]] = {}
        for i in range(args.runs):
            for name, (cmd, env) in peers.items():
                times.setdefault(f"{name} in", []).append(
                    timed([*cmd, "cp", str(tree), f"cpb:/in{i}"], env))
                out = base / f"out-{name}-{i}"
                times.setdefault(f"{name} out", []).append(
                    timed([*cmd, "cp", f"cpb:/in{i}", str(out)], env))
                got = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
                if got != nbytes:
                    sys.exit(f"{name} copied {got} bytes out, expected {nbytes}")
                shutil.rmtree(out)
                quiet([*cmd, "exec", "cpb", "rm", "-rf", f"/in{i}"], env)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"tree: {nbytes / (1 << 20):.0f} MiB; podman --runtime=runc, "
              f"{args.podman_driver} storage; {args.runs} rounds")
        print(f"{'what':<14} {'median s':>9} {'MiB/s':>7}")
        for k, v in med.items():
            print(f"{k:<14} {v:>9.2f} {nbytes / (1 << 20) / v:>7.0f}")
        for what in ("in", "out"):
            print(f"ratio rl/podman {what}: {med[f'rl {what}'] / med[f'podman {what}']:.2f}")
        print(f"load average: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    finally:
        subprocess.run([*rl, "rm", "-f", "cpb"], env=rl_env, capture_output=True, check=False)
        subprocess.run([*pm, "rm", "-f", "-t", "0", "cpb"], env=pm_env, capture_output=True,
                       check=False)
        subprocess.run([args.rl, "unshare", "rm", "-rf", str(base)], env=rl_env,
                       capture_output=True, check=False)
        subprocess.run(["podman", "unshare", "rm", "-rf", str(base)], capture_output=True,
                       check=False)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
