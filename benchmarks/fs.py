#!/usr/bin/env python3
"""Root file system speed: a plain dir, kernel overlayfs, fuse-overlayfs, rl's FUSE overlay.

Run as the unprivileged user, from the repository (the venv's python, for pyfuse3):

    .venv/bin/python benchmarks/fs.py [--rounds N] [--scale F] [--dir DIR]

It re-executes itself in a user + mount namespace (``unshare --map-root-user
--map-auto --mount``), where every driver can mount, builds one data set on
disk (DIR, default /var/tmp) and runs, for each configuration, on that same
data:

    read     sequential read of a 512 MiB lower file through a fresh mount
             (1 MiB reads; the lower file is in the host page cache for all)
    write    sequential write of a new 512 MiB file (1 MiB writes, then close),
             after a sync(2) so no config inherits another's dirty pages
    copy-up  append one byte to a 256 MiB lower file (plain dir: a full copy,
             the floor of any copy-up)
    walk     find + stat over 20,000 lower files, warm (after one walk)
    create   10,000 new files of 100 bytes each (open, write, close)

raw-overlay is kernel overlayfs mounted by mount(8) with the same layers, the
yardstick for rl's overlay driver. The configurations run INTERLEAVED, one
mount each per round, in a rotating order, so the machine's drift hits them
alike; the figures are medians over
the rounds and the ratios come from the same run. --scale shrinks every size
(for a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = ["plain", "raw-overlay", "overlay", "fuse-overlayfs", "fuse"]
MiB = 1 << 20


def outer(args: argparse.Namespace) -> int:
    cmd = ["unshare", "--map-root-user", "--map-auto", "--mount", sys.executable,
           str(Path(__file__).resolve()), "--inner", "--rounds", str(args.rounds),
           "--scale", str(args.scale), "--dir", args.dir]
    if args.json:
        cmd.append("--json")
    return subprocess.run(cmd, check=False).returncode


class Sizes:
    def __init__(self, scale: float) -> None:
        self.read = max(1, int(512 * scale)) * MiB
        self.write = max(1, int(512 * scale)) * MiB
        self.copy = max(1, int(256 * scale)) * MiB
        self.walk = max(100, int(20_000 * scale))
        self.create = max(100, int(10_000 * scale))


def make_data(lower: Path, sz: Sizes) -> None:
    block = os.urandom(MiB)
    for name, size in (("big", sz.read), ("cu", sz.copy)):
        with open(lower / name, "wb") as f:
            for _ in range(size // MiB):
                f.write(block)
    per_dir = 100
    for i in range(0, sz.walk, per_dir):
        d = lower / "tree" / f"d{i // per_dir:03d}"
        d.mkdir(parents=True)
        for j in range(min(per_dir, sz.walk - i)):
            (d / f"f{j:03d}").write_bytes(b"x" * 64)


def read_file(path: str) -> None:
    buf = bytearray(MiB)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def write_file(path: str, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb", buffering=0) as f:
        for _ in range(size // MiB):
            f.write(block)


def walk(path: str) -> None:
    subprocess.run(["find", path, "-printf", "%s %m\n"], stdout=subprocess.DEVNULL, check=True)


def create(path: str, n: int) -> None:
    os.mkdir(path)
    data = b"y" * 100
    for i in range(n):
        fd = os.open(f"{path}/f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)


def timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def one_round(config: str, base: Path, lower: Path, sz: Sizes, rnd: int) -> dict[str, float]:
    from fs import drivers

    run = base / f"{config}-{rnd}"
    upper, work, mnt = run / "upper", run / "work", run / "mnt"
    for d in (upper, work, mnt):
        d.mkdir(parents=True)
    m = None
    if config == "plain":
        root, scratch = str(lower), str(upper)
    elif config == "raw-overlay":  # mount(8) itself, to hold the overlay driver against
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={lower},upperdir={upper},workdir={work},userxattr",
                        str(mnt)], check=True)
        m = drivers.Mounted("raw-overlay", str(mnt))
        root = scratch = str(mnt)
    else:
        m = drivers.mount(config, [str(lower)], str(upper), str(work), str(mnt))
        root = scratch = str(mnt)
    try:
        out: dict[str, float] = {}
        out["read"] = sz.read / MiB / timed(lambda: read_file(f"{root}/big"))
        os.sync()  # every config starts its writes with no dirty pages of another's
        out["write"] = sz.write / MiB / timed(lambda: write_file(f"{scratch}/new", sz.write))
        os.sync()
        if config == "plain":
            out["copy-up"] = timed(lambda: shutil.copyfile(f"{root}/cu", f"{scratch}/cu"))
        else:
            def append() -> None:
                with open(f"{root}/cu", "ab") as f:
                    f.write(b"!")
            out["copy-up"] = timed(append)
        walk(f"{root}/tree")
        out["walk"] = timed(lambda: walk(f"{root}/tree"))
        os.sync()
        out["create"] = timed(lambda: create(f"{scratch}/many", sz.create))
        return out
    finally:
        if m is not None:
            m.unmount()
        shutil.rmtree(run, ignore_errors=True)
        if (work / "work").exists():
            os.chmod(work / "work", 0o700)
            shutil.rmtree(run, ignore_errors=True)


def inner(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO))
    from rootless import syscalls as sc

    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    sz = Sizes(args.scale)
    base = Path(tempfile.mkdtemp(prefix="rl-fsbench-", dir=args.dir))
    try:
        lower = base / "lower"
        lower.mkdir()
        make_data(lower, sz)
        read_file(str(lower / "big"))  # into the host page cache for every config
        results: dict[str, dict[str, list[float]]] = {c: {} for c in CONFIGS}
        for rnd in range(args.rounds):
            order = CONFIGS[rnd % len(CONFIGS):] + CONFIGS[:rnd % len(CONFIGS)]
            for config in order:
                for k, v in one_round(config, base, lower, sz, rnd).items():
                    results[config].setdefault(k, []).append(v)
        med = {c: {k: statistics.median(v) for k, v in r.items()} for c, r in results.items()}
        report(med, sz, args)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


UNITS = {"read": "MiB/s", "write": "MiB/s", "copy-up": "ms", "walk": "ms", "create": "ms"}


def report(med: dict[str, dict[str, float]], sz: Sizes, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(med))
        return
    print(f"medians of {args.rounds} interleaved rounds; read/write {sz.read // MiB} MiB, "
          f"copy-up {sz.copy // MiB} MiB, walk {sz.walk} files, create {sz.create} files")
    print(f"{'':10}" + "".join(f"{c:>16}" for c in CONFIGS)
          + f"{'fuse/f-ovlfs':>14}{'overlay/raw':>13}{'raw/plain':>11}")
    for k, unit in UNITS.items():
        vals = [med[c][k] * (1000 if unit == "ms" else 1) for c in CONFIGS]
        row = f"{k:10}" + "".join(f"{v:>12,.0f} {unit:<3}" if unit == "ms" else
                                  f"{v:>10,.0f} {unit}" for v in vals)
        # ratios as "speed relative to": >1 means the first is faster
        def speed(a: str, b: str, k: str = k, unit: str = unit) -> float:
            return med[b][k] / med[a][k] if unit == "ms" else med[a][k] / med[b][k]
        print(row + f"{speed('fuse', 'fuse-overlayfs'):>13.2f}x"
              f"{speed('overlay', 'raw-overlay'):>12.2f}x{speed('raw-overlay', 'plain'):>10.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    return inner(args) if args.inner else outer(args)


if __name__ == "__main__":
    sys.exit(main())
