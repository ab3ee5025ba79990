#!/usr/bin/env python3
"""`rl build` against `podman build --runtime=runc`, interleaved (issue 12, "Speed").

Run as the unprivileged user, with rl's venv on PATH (or --rl), from the repository:

    python3 benchmarks/build.py [--rounds N] [--files N] [--rl PATH] [--no-podman] [--json F]

Both tools start from one busybox image, loaded into each from one docker-archive.
Scenarios, each timed wall-clock over the whole command:

    a-cold    a 5-line Dockerfile (FROM busybox, RUN, COPY a 4 KiB file, ENV, CMD),
              nothing cached (podman --no-cache; rl with --no-cache once it has one)
    a-cached  the same context rebuilt with nothing changed, after a priming build:
              podman answers every step from its cache; rl measures whatever its
              rebuild costs (without a build cache it builds everything again)
    b-cold    a multi-stage Dockerfile: two independent stages of four RUN steps each,
              one of them with a COPY of a --files-file tree, and a final stage that
              copies from both; nothing cached
    b-stage1, b-stage2   each independent stage alone (--target): their sum against
              b-cold shows whether the stages ran in parallel
    podman-j2 runs the b scenarios with `--jobs=2` too (buildah's parallel stages;
              its default is one stage at a time)

Every round runs each scenario's tools once, in an order that rotates per round,
after one warm-up each; reported: medians, min, and rl/tool as the ratio of medians.
The machine's speed drifts within minutes: compare the ratios of one run, not absolute
figures across runs. Then the context hashing throughput: rl's walk (fds, .dockerignore)
and content hash of the b context (`COPY .`'s share of a cache key), MB/s (10^6 bytes
of file content per second) and files/s.

rl runs with a private XDG_RUNTIME_DIR/XDG_DATA_HOME; podman with a private store
(`--root`, `--runroot`, overlay, its own XDG_RUNTIME_DIR), both removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from startup import RlState, build_rootfs, remove_tree, resolve_rl

BASE = "localhost/bench-busybox:1"

DOCKERFILE_A = f"""\
FROM {BASE}
RUN echo built > /built
COPY file4k /data/file4k
ENV APP=bench
CMD ["cat", "/data/file4k"]
"""

DOCKERFILE_B = f"""\
FROM {BASE} AS stage1
RUN mkdir -p /out && echo one > /out/1
RUN seq 1 2000 > /out/seq && wc -l /out/seq
RUN for i in 1 2 3 4 5 6 7 8; do echo $i; done > /out/loop
RUN tar -cf /out/etc.tar /etc
COPY tree/ /tree/
FROM {BASE} AS stage2
RUN mkdir -p /out && echo two > /out/2
RUN yes x | head -n 20000 > /out/yes
RUN sha256sum /bin/busybox > /out/sum
RUN find / -xdev -type f | wc -l > /out/count
FROM {BASE}
COPY --from=stage1 /out /from1
COPY --from=stage2 /out /from2
CMD ["ls", "/from1", "/from2"]
"""


def base_archive(rootfs: Path, dest: Path) -> Path:
    """A docker-archive of the busybox rootfs as BASE, owned by root."""
    layer = io.BytesIO()

    def owners(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(str(rootfs), arcname=".", filter=owners)
    data = layer.getvalue()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(data).hexdigest()]},
        # buildah counts layers against history entries: one for the one layer.
        "history": [{"created_by": "busybox rootfs"}]}).encode()
    name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": name, "RepoTags": [BASE], "Layers": ["layer.tar"]}])
    with tarfile.open(dest, "w") as tf:
        for member, blob in ((name, config), ("layer.tar", data),
                             ("manifest.json", manifest.encode())):
            info = tarfile.TarInfo(member)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return dest


def make_contexts(work: Path, files: int) -> tuple[Path, Path, int]:
    """The a and b contexts; the bytes of file content in b's tree."""
    rng = random.Random(12)
    a = work / "ctx-a"
    a.mkdir()
    (a / "Dockerfile").write_text(DOCKERFILE_A)
    (a / "file4k").write_bytes(rng.randbytes(4096))
    b = work / "ctx-b"
    b.mkdir()
    (b / "Dockerfile").write_text(DOCKERFILE_B)
    block = rng.randbytes(8192)
    total = 0
    for i in range(files):
        d = b / "tree" / f"d{i // 100}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randrange(0, 8193)  # 4 KiB on average
        (d / f"f{i}.txt").write_bytes(block[:size])
        total += size
    return a, b, total


class Tool:
    def __init__(self, name: str, argv: Callable[[], list[str]], env: dict[str, str],
                 after: Callable[[], None] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.after = after  # untimed clean-up after each run
        self.times: list[float] = []

    def once(self) -> float:
        argv = self.argv()
        t0 = time.perf_counter()
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env=self.env, check=False)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(argv)} exited {r.returncode}: "
                               f"{r.stderr.decode(errors='replace').strip()[-800:]}")
        if self.after:
            self.after()
        return dt


class Podman:
    """Rootless podman with a private store and runtime dir (short paths: runroot)."""

    def __init__(self, podman: str, work: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rlbp-", dir="/tmp"))
        run = self.root / "xdg"
        run.mkdir(mode=0o700)
        (self.root / "registries.conf").write_text("unqualified-search-registries = []\n")
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(run),
                    "XDG_CONFIG_HOME": str(self.root / "config"),
                    "XDG_DATA_HOME": str(self.root / "data"),
                    "CONTAINERS_REGISTRIES_CONF": str(self.root / "registries.conf")}
        self.argv = [podman, "--runtime=runc", "--root", str(self.root / "s"), "--runroot",
                     str(self.root / "r"), "--storage-driver=overlay",
                     "--cgroup-manager=cgroupfs", "--events-backend=file"]

    def run(self, *args: str) -> str:
        r = subprocess.run([*self.argv, *args], capture_output=True, text=True, env=self.env,
                           check=False, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: {r.stderr.strip()[-800:]}")
        return r.stdout

    def close(self) -> None:
        subprocess.run([*self.argv, "unshare", "rm", "-rf", str(self.root / "s")],
                       env=self.env, capture_output=True, check=False)
        # Its pause process was started for this private runtime dir: ours to stop.
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.root / "xdg/libpod/tmp/pause.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        remove_tree(self.root)


def context_hashing(ctx: Path, rounds: int, size: int, files: int) -> str:
    """rl's walk and content hash of *ctx* (a fresh Context each round: no digest reused)."""
    from rootless.build.context import Context, resolve

    walks, hashes = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        with Context.directory(str(ctx)) as c:
            t1 = time.perf_counter()
            c.sources_digest(resolve(c, "."))
            t2 = time.perf_counter()
        walks.append(t1 - t0)
        hashes.append(t2 - t1)
    walk, hsh = statistics.median(walks), statistics.median(hashes)
    return (f"context hashing ({files} files + Dockerfile, {size / 1e6:.1f} MB, median of "
            f"{rounds}): walk {walk * 1e3:.1f} ms ({files / walk:,.0f} files/s), hash "
            f"{hsh * 1e3:.1f} ms, {size / 1e6 / hsh:.1f} MB/s ({files / hsh:,.0f} files/s); "
            f"walk + hash {size / 1e6 / (walk + hsh):.1f} MB/s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    ap.add_argument("--files", type=int, default=5000, help="files in b's COPY tree")
    ap.add_argument("--rl", default="rl", help="rl executable (default: rl on PATH)")
    ap.add_argument("--podman", default="podman")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the raw timings here")
    args = ap.parse_args()
    if os.geteuid() == 0:
        ap.error("run me as the unprivileged user (rootless is the point)")

    rl_path, _ = resolve_rl(args.rl)
    work = Path(tempfile.mkdtemp(prefix="rlbench-build-"))
    state = RlState(False)
    podman: Podman | None = None
    try:
        archive = base_archive(build_rootfs(work / "rootfs"), work / "base.tar")
        ctx_a, ctx_b, tree_bytes = make_contexts(work, args.files)
        subprocess.run([rl_path, "load", "-i", str(archive)], env=state.env, check=True,
                       capture_output=True)
        help_text = subprocess.run([rl_path, "build", "--help"], env=state.env,
                                   capture_output=True, text=True, check=True).stdout
        rl_no_cache = ["--no-cache"] if "--no-cache" in help_text else []
        pm_path = shutil.which(args.podman)
        if pm_path and not args.no_podman:
            podman = Podman(pm_path, work)
            podman.run("load", "-i", str(archive))

        def rl_tool(name: str, ctx: Path, extra: list[str], tag: str,
                    remove: bool = True) -> Tool:
            def rmi() -> None:
                subprocess.run([rl_path, "rmi", tag], env=state.env, capture_output=True,
                               check=False)
            return Tool(name, lambda: [rl_path, "build", "-q", *extra, "-t", tag, str(ctx)],
                        state.env, rmi if remove else None)

        def pm_tool(name: str, ctx: Path, extra: list[str], tag: str,
                    remove: bool = True) -> Tool:
            assert podman is not None
            pm = podman

            def rmi() -> None:
                subprocess.run([*pm.argv, "rmi", tag], env=pm.env, capture_output=True,
                               check=False)
            return Tool(name, lambda: [*pm.argv, "build", "-q", "--pull=never", *extra, "-t",
                                       tag, str(ctx)], pm.env, rmi if remove else None)

        scenarios: dict[str, list[Tool]] = {
            "a-cold": [rl_tool("rl", ctx_a, rl_no_cache, "bench-a-cold:1")],
            "a-cached": [rl_tool("rl", ctx_a, [], "bench-a:1", remove=False)],
            "b-cold": [rl_tool("rl", ctx_b, rl_no_cache, "bench-b:1")],
            "b-stage1": [rl_tool("rl", ctx_b, [*rl_no_cache, "--target", "stage1"],
                                 "bench-b1:1")],
            "b-stage2": [rl_tool("rl", ctx_b, [*rl_no_cache, "--target", "stage2"],
                                 "bench-b2:1")],
        }
        if podman is not None:
            scenarios["a-cold"].append(pm_tool("podman", ctx_a, ["--no-cache"], "bench-a-cold:1"))
            scenarios["a-cached"].append(pm_tool("podman", ctx_a, [], "bench-a:1",
                                                 remove=False))
            for name, extra in (("b-cold", []), ("b-stage1", ["--target", "stage1"]),
                                ("b-stage2", ["--target", "stage2"])):
                tag = f"bench-{name}:1"
                scenarios[name].append(pm_tool("podman", ctx_b, ["--no-cache", *extra], tag))
                scenarios[name].append(pm_tool("podman-j2", ctx_b,
                                               ["--no-cache", "--jobs=2", *extra], tag))

        print(f"rl build benchmark: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
              f"{os.uname().release}, {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.2f}; b's tree {args.files} files, "
              f"{tree_bytes / 1e6:.1f} MB")
        if podman is None:
            print("  skipped podman: " + ("--no-podman" if args.no_podman else "not installed"))
        if not rl_no_cache:
            print("  rl has no build cache yet: its a-cached figure is a full rebuild")
        for tools in scenarios.values():  # warm-up; primes a-cached
            for t in tools:
                t.once()
        for i in range(args.rounds):
            for tools in scenarios.values():
                k = i % len(tools)
                for t in tools[k:] + tools[:k]:
                    t.times.append(t.once())

        def med(name: str, tool: str) -> float | None:
            t = next((t for t in scenarios[name] if t.name == tool), None)
            return statistics.median(t.times) if t else None

        print(f"\n{args.rounds} interleaved rounds after one warm-up each; wall time of "
              "the whole command, ms")
        print(f"  {'scenario':9} {'tool':10} {'median':>8} {'min':>8}   rl/tool")
        for name, tools in scenarios.items():
            rl_m = statistics.median(tools[0].times)
            for t in tools:
                m = statistics.median(t.times)
                ratio = f"{rl_m / m:6.2f}x" if t.name != "rl" else ""
                print(f"  {name:9} {t.name:10} {m * 1e3:8.1f} {min(t.times) * 1e3:8.1f}   "
                      f"{ratio}")
        for tool in ("rl", "podman", "podman-j2"):
            whole, s1, s2 = med("b-cold", tool), med("b-stage1", tool), med("b-stage2", tool)
            if whole is None or s1 is None or s2 is None:
                continue
            print(f"  b: {tool} whole {whole * 1e3:.0f} ms against its stages' sum "
                  f"{(s1 + s2) * 1e3:.0f} ms ({whole / (s1 + s2):.2f}x; < 1 means the "
                  "stages overlapped)")
        if podman is not None:
            targets = (("a-cold", 0.8), ("a-cached", 0.5))
            for name, target in targets:
                rl_m, pm_m = med(name, "rl"), med(name, "podman")
                assert rl_m is not None and pm_m is not None
                r = rl_m / pm_m
                print(f"  target {name} rl <= {target}x podman: "
                      f"{'met' if r <= target else 'NOT met'} ({r:.2f}x)")
        print("\n" + context_hashing(ctx_b, max(3, args.rounds), tree_bytes, args.files))
        if args.json:
            args.json.write_text(json.dumps(
                {name: {t.name: t.times for t in tools} for name, tools in scenarios.items()},
                indent=1))
    finally:
        state.close()
        if podman is not None:
            podman.close()
        remove_tree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
