#!/usr/bin/env python3
"""`rl events --since 1h` over 1,000 events and `rl volume ls` over 1,000 volumes.

Run as the unprivileged user from the checkout's virtualenv:

    .venv/bin/python benchmarks/events.py [--runs N] [--entries N]

A private XDG_DATA_HOME/XDG_RUNTIME_DIR is filled through rl's own library
(engine.events.emit, the writer every rl process uses, and engine.volumes.create),
then each command is timed wall-clock from fork to exit, interleaved with
`rl ps` (no containers: what any click command costs) and, when podman is
installed, `podman volume ls` over the same number of podman volumes in a
private podman store. Medians of N rounds.
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


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--entries", type=int, default=1000)
    ap.add_argument("--no-podman", action="store_true")
    args = ap.parse_args()
    rl = str(Path(sys.executable).parent / "rl")
    base = Path(tempfile.mkdtemp(prefix="rl-bench-events-"))
    env = {**os.environ, "XDG_DATA_HOME": str(base / "data"),
           "XDG_RUNTIME_DIR": str(base / "run"), "XDG_CONFIG_HOME": str(base / "config")}
    (base / "run").mkdir(mode=0o700)
    try:
        os.environ.update(env)
        sys.path.insert(0, str(REPO))
        from rootless.engine import events, volumes

        for i in range(args.entries):
            volumes.create(f"benchvol{i}")
        (events.log_dir() / events.LOG).unlink()  # the volumes' own events: 1,000 only
        t = time.perf_counter()
        for i in range(args.entries):
            events.emit("container", "die", f"{i:064x}", {"exitCode": "0", "image": "busybox",
                                                         "name": f"bench{i}"})
        emit_ms = (time.perf_counter() - t) * 1000
        log = events.log_dir() / events.LOG
        until = f"{time.time() + 0.5:.3f}"
        podman_env = None
        if not args.no_podman and shutil.which("podman"):
            podman_env = {**env, "XDG_CONFIG_HOME": str(base / "pconfig")}
            pstore = base / "podman"
            (base / "pconfig" / "containers").mkdir(parents=True)
            (base / "pconfig" / "containers" / "storage.conf").write_text(
                f'[storage]\ndriver = "vfs"\ngraphroot = "{pstore}/root"\n'
                f'runroot = "{pstore}/run"\n')
            for i in range(args.entries):
                subprocess.run(["podman", "volume", "create", f"benchvol{i}"], env=podman_env,
                               stdout=subprocess.DEVNULL, check=True)
        cmds = {
            "rl events --since 1h --until T": [rl, "events", "--since", "1h", "--until", until],
            "rl volume ls": [rl, "volume", "ls"],
            "rl ps (reference)": [rl, "ps"],
        }
        if podman_env is not None:
            cmds["podman volume ls"] = ["podman", "volume", "ls"]
        got = subprocess.run(cmds["rl events --since 1h --until T"], env=env,
                             capture_output=True, text=True, check=True).stdout
        assert got.count("\n") == args.entries, got[-300:]
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for name, argv in cmds.items():  # warm-up
            timed(argv, podman_env if name.startswith("podman") and podman_env else env)
        for r in range(args.runs):
            order = list(cmds)[r % len(cmds):] + list(cmds)[:r % len(cmds)]
            for name in order:
                e = podman_env if name.startswith("podman") and podman_env else env
                times[name].append(timed(cmds[name], e))
        print(f"{args.entries} events ({log.stat().st_size} bytes, appended in "
              f"{emit_ms:.0f} ms: {emit_ms / args.entries * 1000:.0f} µs each), "
              f"{args.entries} volumes; median of {args.runs} rounds:")
        for name, ts in times.items():
            print(f"  {name:34} {statistics.median(ts):7.1f} ms  (min {min(ts):.1f})")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
