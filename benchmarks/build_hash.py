#!/usr/bin/env python3
"""Hashing throughput of a build context (issue 12, part 6): what `COPY . /app` costs.

Run as the unprivileged user, from the repository:

    python3 benchmarks/build_hash.py [--files N] [--mib M] [--rounds R] [--dir DIR]

It generates a tree of N files (default 5,000, in nested directories, sizes
spread from empty to 256 KiB, M MiB in all, default 200) under DIR (default
/var/tmp), then per round makes a fresh `Context` (the walk through fds and
the .dockerignore filter) and hashes the source set of "." (every file's
bytes, mode, name and link target). The first round reads from the page
cache as every later one does (the tree was just written); each round uses a
new Context, so no digest is reused. It prints the walk time, the hash time,
MB/s (10^6 bytes per second of file content) and files/s, medians over the
rounds. Standard library only (plus rl itself).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rootless.build.context import Context, resolve


def generate(root: Path, files: int, total: int) -> int:
    """*files* files of *total* bytes in all, 20 per directory, 3 levels deep; bytes written."""
    rng = random.Random(12)
    weights = [rng.random() for _ in range(files)]
    scale = total / sum(weights)
    block = rng.randbytes(1 << 18)
    written = 0
    for i, w in enumerate(weights):
        d = root / f"d{i // 400}" / f"e{i // 20 % 20}"
        d.mkdir(parents=True, exist_ok=True)
        size = min(int(w * scale), len(block))
        (d / f"f{i}.dat").write_bytes(block[:size])
        written += size
        if i % 50 == 0:
            os.symlink(f"f{i}.dat", d / f"l{i}")
    (root / ".dockerignore").write_text("**/*.tmp\n")
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="rl-bench-hash-", dir=args.dir))
    try:
        size = generate(base, args.files, args.mib << 20)
        walks, hashes = [], []
        digest = ""
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            with Context.directory(str(base)) as ctx:
                t1 = time.perf_counter()
                sources = resolve(ctx, ".")
                d = ctx.sources_digest(sources)
                t2 = time.perf_counter()
            assert not digest or d == digest, "the hash changed between rounds"
            digest = d
            walks.append(t1 - t0)
            hashes.append(t2 - t1)
        walk, hsh = statistics.median(walks), statistics.median(hashes)
        print(f"context: {args.files} files, {size / 1e6:.1f} MB, {args.rounds} rounds (medians)")
        print(f"walk:    {walk * 1e3:8.1f} ms   ({args.files / walk:,.0f} files/s)")
        print(f"hash:    {hsh * 1e3:8.1f} ms   {size / 1e6 / hsh:8.1f} MB/s   "
              f"({args.files / hsh:,.0f} files/s)")
        print(f"total:   {(walk + hsh) * 1e3:8.1f} ms   {size / 1e6 / (walk + hsh):8.1f} MB/s")
        print(f"digest:  {digest}")
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
