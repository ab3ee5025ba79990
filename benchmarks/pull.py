#!/usr/bin/env python3
"""Image pull and listing speed: rl against podman, in one interleaved run.

Run as the unprivileged user, with rl's venv first on PATH:

    python3 benchmarks/pull.py [--runs N] [--mb SIZE] [--layers K] [--images M]

1. A multi-layer image of about SIZE MB (busybox base + K layers of
   half-random, half-text files, gzip) is pushed by rl to Debian's
   docker-registry on 127.0.0.1. Then, per round and in alternating order:
       rl      rl pull --tls-verify=false HOST/bench/big:1
       podman  podman --runtime=runc pull --tls-verify=false HOST/bench/big:1
   each into a COLD store (a fresh XDG_DATA_HOME for rl, fresh --root and
   --runroot for podman), timed wall-clock until the command exits, i.e.
   downloaded, verified and unpacked.
2. `rl images` and `podman images` on stores of M one-layer images each.

Prints every sample, medians and the rl/podman ratio. The machine's speed
drifts, so compare the ratio within one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PODMAN = ["podman", "--runtime=runc", "--cgroup-manager=cgroupfs", "--events-backend=file"]


def run(cmd: list[str], env: dict[str, str] | None = None, quiet: bool = True) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=quiet, text=True)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = base / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                      f"storage:\n  filesystem:\n    rootdirectory: {base / 'registry'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"127.0.0.1:{port}"
        time.sleep(0.05)
    sys.exit("docker-registry did not start")


def layer_bytes(index: int, size: int) -> bytes:
    """An uncompressed layer of ~size bytes: files half random, half text (gzip ~2:1)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        d = tarfile.TarInfo(f"data{index}")
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        tf.addfile(d)
        n, per = 0, 256 * 1024
        while n * per < size:
            data = os.urandom(per // 2) + (b"lorem ipsum dolor sit amet %d\n" % n) * (per // 60)
            info = tarfile.TarInfo(f"data{index}/f{n:05d}")
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
            n += 1
    return buf.getvalue()


def build_image(env: dict[str, str], work: Path, mb: int, layers: int) -> None:
    """localhost/bench/big:1 in rl's store: busybox import + layers via a docker-archive."""
    import hashlib

    sys.path.insert(0, str(REPO / "tests"))
    import support

    rootfs = support.busybox_rootfs(work / "rootfs")
    base = io.BytesIO()
    with tarfile.open(fileobj=base, mode="w") as tf:
        tf.add(str(rootfs), arcname=".")
    raw = [base.getvalue()] + [layer_bytes(i, mb * 1024 * 1024 // layers) for i in range(layers)]
    blobs = [gzip.compress(x, compresslevel=6) for x in raw]

    def sha(b: bytes) -> str:
        return "sha256:" + hashlib.sha256(b).hexdigest()

    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in raw]}}).encode()
    archive = work / "big.tar"
    with tarfile.open(archive, "w") as tf:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        add("config.json", config)
        for i, b in enumerate(blobs):
            add(f"layer{i}.tar.gz", b)
        add("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": ["bench/big:1"],
                                          "Layers": [f"layer{i}.tar.gz"
                                                     for i in range(len(blobs))]}]).encode())
    subprocess.run(["rl", "load", "-q", "-i", str(archive)], env=env, check=True)
    total = sum(len(b) for b in blobs)
    print(f"image: {len(blobs)} layers, {total / 1e6:.0f} MB compressed, "
          f"{sum(map(len, raw)) / 1e6:.0f} MB unpacked")


def xdg_env(base: Path) -> dict[str, str]:
    for d in ("run", "data", "config"):
        (base / d).mkdir(parents=True, exist_ok=True, mode=0o700)
    return {**os.environ, "XDG_RUNTIME_DIR": str(base / "run"),
            "XDG_DATA_HOME": str(base / "data"), "XDG_CONFIG_HOME": str(base / "config")}


def podman_env(work: Path) -> dict[str, str]:
    # podman keeps its own XDG_RUNTIME_DIR (the caller's), and its config in a temp dir.
    cfg = work / "podman-config"
    cfg.mkdir(exist_ok=True)
    return {**os.environ, "XDG_CONFIG_HOME": str(cfg)}


def podman_store(base: Path) -> list[str]:
    return [*PODMAN, "--root", str(base / "root"), "--runroot", str(base / "rr")]


def wipe(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        subprocess.run(["podman", "unshare", "rm", "-rf", str(path)], capture_output=True)
    if path.exists():
        subprocess.run(["unshare", "-r", "--map-auto", "rm", "-rf", str(path)],
                       capture_output=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--images", type=int, default=50)
    args = ap.parse_args()
    for tool in ("rl", "podman", "docker-registry"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found on PATH")

    work = Path(tempfile.mkdtemp(prefix="rlb-", dir="/tmp"))
    registry, host = start_registry(work)
    try:
        src = xdg_env(work / "src")
        build_image(src, work, args.mb, args.layers)
        ref = f"{host}/bench/big:1"
        subprocess.run(["rl", "push", "-q", "--tls-verify=false", "bench/big:1", ref], env=src,
                       check=True, capture_output=True)
        penv = podman_env(work)
        print(f"\n== pull {ref} into a cold store ({args.runs} interleaved rounds) ==")
        samples: dict[str, list[float]] = {"rl": [], "podman": []}
        driver = ""
        for i in range(args.runs + 1):  # round 0 warms caches and is not counted
            order = ["rl", "podman"] if i % 2 == 0 else ["podman", "rl"]
            for tool in order:
                base = work / f"{tool}-{i}"
                if tool == "rl":
                    cmd = ["rl", "pull", "-q", "--tls-verify=false", ref]
                    t = run(cmd, env=xdg_env(base))
                else:
                    store = podman_store(base)
                    t = run([*store, "pull", "-q", "--tls-verify=false", ref], env=penv)
                    if not driver:
                        driver = subprocess.run([*store, "info", "--format",
                                                 "{{.Store.GraphDriverName}}"], env=penv,
                                                capture_output=True, text=True).stdout.strip()
                wipe(base)
                if i:
                    samples[tool].append(t)
                    print(f"  round {i} {tool:6s} {t:7.3f} s")
        rl_m, pm_m = median(samples["rl"]), median(samples["podman"])
        print(f"median: rl {rl_m:.3f} s, podman {pm_m:.3f} s (storage driver {driver}); "
              f"rl/podman = {rl_m / pm_m:.2f}")

        print(f"\n== images on a store of {args.images} images ==")
        lst = xdg_env(work / "list")
        pstore = podman_store(work / "plist")
        tiny = work / "tiny"
        tiny.mkdir()
        for i in range(args.images):
            tar = tiny / f"t{i}.tar"
            with tarfile.open(tar, "w") as tf:
                info = tarfile.TarInfo(f"file{i}")
                data = f"image {i}\n".encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            subprocess.run(["rl", "import", str(tar), f"img{i}"], env=lst, check=True,
                           capture_output=True)
            subprocess.run([*pstore, "import", "-q", str(tar), f"localhost/img{i}"], env=penv,
                           check=True, capture_output=True)
        listing: dict[str, list[float]] = {"rl": [], "podman": []}
        for i in range(args.runs * 4 + 1):
            for tool in (["rl", "podman"] if i % 2 == 0 else ["podman", "rl"]):
                cmd = ["rl", "images"] if tool == "rl" else [*pstore, "images"]
                t = run(cmd, env=lst if tool == "rl" else penv)
                if i:
                    listing[tool].append(t)
        count = len(subprocess.run(["rl", "images", "-q"], env=lst, capture_output=True,
                                   text=True).stdout.split())
        rl_m, pm_m = median(listing["rl"]), median(listing["podman"])
        print(f"rl images ({count} images): median {rl_m * 1000:.0f} ms "
              f"(min {min(listing['rl']) * 1000:.0f}); podman images: median "
              f"{pm_m * 1000:.0f} ms; rl/podman = {rl_m / pm_m:.2f}")
        wipe(work / "plist")
    finally:
        registry.kill()
        registry.wait()
        wipe(work)


if __name__ == "__main__":
    main()
