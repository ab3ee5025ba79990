#!/usr/bin/env python3
"""`rl build` cold against cached, and parallel stages, beside `podman build` (issue 12).

Run as the unprivileged user, from the repository, with rl installed in the
environment (`.venv/bin/rl` or `rl` on PATH) and Debian's podman:

    python3 benchmarks/build_cache.py [--rounds R] [--busybox /bin/busybox]

It makes a busybox root file system, imports it into a private rl store
(fresh XDG dirs under a temp directory) and into podman's store as
`localhost/bcbench`, then in one interleaved loop of R rounds (default 7):

  (a) the 5-line Dockerfile (FROM, RUN, COPY a 4 KiB file, ENV, CMD):
      `build --no-cache` (cold) and `build` again (every step cached), rl then
      podman `--runtime=runc --pull=never`;
  (b) two independent stages of three `RUN sleep 1` steps each and a final
      stage copying from both, cold: the whole build, and each stage alone
      (`--target`), whose sum is what building them one after the other costs.

It prints the medians in ms and the ratios rl/podman, and for (b) the whole
build against the sum of its stages. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

SMALL = """\
FROM {base}
RUN echo hi > /hi
COPY f.bin /f.bin
ENV A=1
CMD ["cat", "/hi"]
"""

STAGES = """\
FROM {base} AS a
RUN sleep 1; echo a1 > /a1
RUN sleep 1; echo a2 > /a2
RUN sleep 1; echo a3 > /a3

FROM {base} AS b
RUN sleep 1; echo b1 > /b1
RUN sleep 1; echo b2 > /b2
RUN sleep 1; echo b3 > /b3

FROM {base}
COPY --from=a /a3 /a3
COPY --from=b /b3 /b3
"""


def rl_command() -> str:
    venv = Path(sys.prefix) / "bin" / "rl"
    found = shutil.which("rl")
    if venv.exists():
        return str(venv)
    if found:
        return found
    sys.exit("rl is not installed in this environment")


def busybox_tar(busybox: str, out: Path) -> None:
    root = out.parent / "root"
    (root / "bin").mkdir(parents=True)
    (root / "tmp").mkdir()
    (root / "etc").mkdir()
    shutil.copy(busybox, root / "bin" / "busybox")
    for applet in ("sh", "echo", "cat", "sleep", "true"):
        (root / "bin" / applet).symlink_to("busybox")
    with tarfile.open(out, "w:gz") as tf:
        tf.add(root, arcname=".")


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = (time.perf_counter() - start) * 1000
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr.decode(errors='replace')}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--busybox", default="/bin/busybox")
    args = ap.parse_args()
    rl = rl_command()
    if not shutil.which("podman"):
        sys.exit("podman is not installed")
    with tempfile.TemporaryDirectory(prefix="rl-bcbench-", ignore_cleanup_errors=True) as tmp:
        base = Path(tmp)
        xdg = {k: str(base / k.lower()) for k in
               ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR")}
        for d in xdg.values():
            os.mkdir(d, 0o700)
        env = {**os.environ, **xdg}
        penv = dict(os.environ)
        tar = base / "tars" / "bb.tgz"
        tar.parent.mkdir()
        busybox_tar(args.busybox, tar)
        subprocess.run([rl, "import", str(tar), "bcbench"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["podman", "import", str(tar), "localhost/bcbench"], env=penv,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        small = base / "small"
        small.mkdir()
        (small / "f.bin").write_bytes(os.urandom(4096))
        stages = base / "stages"
        stages.mkdir()
        times: dict[str, list[float]] = {}

        def add(name: str, ms: float) -> None:
            times.setdefault(name, []).append(ms)

        try:
            for _ in range(args.rounds):
                for who, image, cmd, e in (
                        ("rl", "bcbench", [rl, "build"], env),
                        ("podman", "localhost/bcbench",
                         ["podman", "--runtime=runc", "build", "--pull=never",
                          "-t", "localhost/bcbench-out"], penv)):
                    (small / "Dockerfile").write_text(SMALL.format(base=image))
                    (stages / "Dockerfile").write_text(STAGES.format(base=image))
                    add(f"{who} small cold", timed([*cmd, "--no-cache", str(small)], e))
                    add(f"{who} small cached", timed([*cmd, str(small)], e))
                    add(f"{who} stages cold", timed([*cmd, "--no-cache", str(stages)], e))
                    if who == "rl":
                        a = timed([*cmd, "--no-cache", "--target", "a", str(stages)], e)
                        b = timed([*cmd, "--no-cache", "--target", "b", str(stages)], e)
                        add("rl stages a+b", a + b)
        finally:
            # Only what this run named: podman's store may be shared with other work,
            # so no prune (its cached intermediate layers of these builds stay).
            subprocess.run(["podman", "rmi", "-f", "localhost/bcbench", "localhost/bcbench-out"],
                           env=penv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # rl removes what RUN steps wrote as subordinate IDs (the temp dir cannot).
            for cleanup in (["builder", "prune", "-af"], ["image", "prune", "-af"]):
                subprocess.run([rl, *cleanup], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            print(f"{k:22s} {v:8.0f} ms   (rounds: {', '.join(f'{x:.0f}' for x in times[k])})")
        for case in ("small cold", "small cached", "stages cold"):
            print(f"ratio rl/podman {case:14s} {med['rl ' + case] / med['podman ' + case]:.2f}")
        print(f"rl stages whole / sum of stages: "
              f"{med['rl stages cold'] / med['rl stages a+b']:.2f}")


if __name__ == "__main__":
    main()
