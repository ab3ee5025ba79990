#!/usr/bin/env python3
"""Container start-up latency: rl against podman, bare runc and the unshare floor.

Run as the unprivileged user (stdlib only, Python >= 3.11):

    python3 benchmarks/startup.py [--runs N] [--rootfs DIR] [--rl PATH] [--rl-before PATH]

Each tool runs `true` in a fresh container and is timed wall-clock from
fork to exit (the CLI's whole life, teardown included):

    rl      rl run --rm --network=none --rootfs R true
    podman  podman --runtime=runc run --rm --network=none --rootfs R true
    runc    runc --root $XDG_RUNTIME_DIR/runc-bench run ID   (bundle from
            `runc spec --rootless`, process `true`, own netns, root R)
    floor   unshare -Urmpf --mount-proc true
    rl-before  with --rl-before: another rl (an older tree's venv), the same
            command, its own private state: the A/B of a change

The machine's speed drifts by ~20% within minutes, so the tools are run
INTERLEAVED: every round runs each tool once, in a rotating order, after one
warm-up run each (which also starts rl's fork server). Compare ratios from one
run of this script, not absolute figures across runs.

rl runs with a private XDG_RUNTIME_DIR/XDG_DATA_HOME (its own fork server and
container store, stopped and removed at the end) unless --shared-state is
given; podman and runc use the caller's environment.
"""

from __future__ import annotations

import argparse
import contextlib
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


# --------------------------------------------------------------------------
# Shared helpers (memory.py imports these too)


def build_rootfs(dest: Path) -> Path:
    """A busybox rootfs in *dest*, built by tests/support.py's busybox_rootfs.

    support.py imports pytest (for its skip helpers only); if pytest is not
    installed, a stand-in whose skip/fail abort the benchmark is used.
    """
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import pytest  # noqa: F401
    except ImportError:
        import types

        def _abort(reason: str, **_kw: object) -> None:
            raise SystemExit(f"cannot build a busybox rootfs: {reason}")

        stub = types.ModuleType("pytest")
        stub.skip = _abort  # type: ignore[attr-defined]
        stub.fail = _abort  # type: ignore[attr-defined]
        sys.modules["pytest"] = stub
    import support  # type: ignore[import-not-found]

    return Path(support.busybox_rootfs(dest))


def remove_tree(path: Path) -> None:
    """rm -rf, also for files a container chowned to our sub-ids."""
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        subprocess.run(["unshare", "--map-root-user", "--map-auto", "rm", "-rf", "--", str(path)],
                       stdin=subprocess.DEVNULL, capture_output=True, check=False)


def resolve_rl(rl: str) -> tuple[str, str]:
    """(path of rl, the python interpreter its script runs with)."""
    path = shutil.which(rl)
    if path is None:
        raise SystemExit(f"rl not found: {rl} (put rl's venv on PATH or pass --rl)")
    with open(path, "rb") as f:
        first = f.readline().decode(errors="replace").strip()
    python = first[2:].split()[0] if first.startswith("#!") else sys.executable
    return path, python


class RlState:
    """A private XDG_RUNTIME_DIR and XDG_DATA_HOME for rl (short path: sockets)."""

    def __init__(self, shared: bool) -> None:
        self.shared = shared
        self.base: Path | None = None
        self.env = dict(os.environ)
        if shared:
            return
        self.base = Path(tempfile.mkdtemp(prefix="rlb-", dir="/tmp"))
        run = self.base / "run"
        run.mkdir(mode=0o700)
        self.env.update(XDG_RUNTIME_DIR=str(run), XDG_DATA_HOME=str(self.base / "data"),
                        XDG_CONFIG_HOME=str(self.base / "config"))

    @property
    def rl_runtime_dir(self) -> Path:
        base = self.env.get("XDG_RUNTIME_DIR") or f"/tmp/rl-{os.getuid()}"
        return Path(base) / "rl" if self.env.get("XDG_RUNTIME_DIR") else Path(base)

    def forkserver_pids(self) -> list[int]:
        pids = []
        for f in sorted(self.rl_runtime_dir.glob("fork-*.pid")):
            with contextlib.suppress(OSError, ValueError, IndexError):
                pids.append(int(f.read_text().split()[0]))
        return pids

    def close(self) -> None:
        """Stop the private fork server (ours: we started it) and drop the dirs."""
        if self.base is None:
            return
        for pid in self.forkserver_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
        remove_tree(self.base)


def pycache_warning(python: str, env: dict[str, str]) -> str | None:
    """rl's sources may live in a checkout the user can't write (root-owned
    here): with no bytecode cache for them (PYTHONPYCACHEPREFIX unset, or
    PYTHONDONTWRITEBYTECODE set), every rl command recompiles them, which
    costs ~20 ms of its start-up."""
    probe = ("import importlib.util, os, rootless.cli.app as m; "
             "print(os.path.exists(importlib.util.cache_from_source(m.__file__)))")
    out = ""
    for _ in range(2):  # the first import may write the cache
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, env=env,
                             check=False).stdout.strip()
    if out != "False":
        return None
    return ("note: rl's sources have no bytecode cache (read-only checkout, "
            f"PYTHONPYCACHEPREFIX={env.get('PYTHONPYCACHEPREFIX', '')!r}, "
            f"PYTHONDONTWRITEBYTECODE={env.get('PYTHONDONTWRITEBYTECODE', '')!r}): "
            "every rl command recompiles them")


# --------------------------------------------------------------------------
# Statistics


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p90(xs: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    s = sorted(xs)
    k = max(0, -(-len(s) * 9 // 10) - 1)
    return s[k]


def ms(x: float) -> str:
    return f"{x * 1000:7.1f}"


# --------------------------------------------------------------------------
# Tools


class Tool:
    def __init__(self, name: str, argv: Callable[[int], list[str]], env: dict[str, str],
                 cwd: str | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.times: list[float] = []

    def once(self, i: int) -> float:
        argv = self.argv(i)
        t0 = time.perf_counter()
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env=self.env, cwd=self.cwd, check=False)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(argv)} exited {r.returncode}: "
                               f"{r.stderr.decode(errors='replace').strip()[-500:]}")
        return dt


def runc_bundle(rootfs: Path, dest: Path, runc: str) -> Path:
    """A rootless runc bundle whose process is `true`, in its own netns."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").unlink(missing_ok=True)
    subprocess.run([runc, "spec", "--rootless", "--bundle", str(dest)], check=True)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["true"]
    cfg["root"] = {"path": str(rootfs.resolve()), "readonly": False}
    ns = cfg["linux"]["namespaces"]
    if not any(n["type"] == "network" for n in ns):
        ns.append({"type": "network"})  # like --network=none
    (dest / "config.json").write_text(json.dumps(cfg, indent=1))
    return dest


def make_tools(args: argparse.Namespace, rootfs: Path, rl_path: str, state: RlState,
               work: Path, before: tuple[str, RlState] | None = None,
               ) -> tuple[list[Tool], list[str]]:
    skipped: list[str] = []
    env = dict(os.environ)
    tools = [
        Tool("rl", lambda i: [rl_path, "run", "--rm", "--network=none", "--rootfs", str(rootfs),
                              "true"], state.env),
    ]
    if before is not None:
        old, old_state = before
        tools.append(Tool("rl-before", lambda i: [old, "run", "--rm", "--network=none",
                                                  "--rootfs", str(rootfs), "true"],
                          old_state.env))
    podman = shutil.which(args.podman)
    if podman and not args.no_podman:
        tools.append(Tool("podman", lambda i: [podman, "--runtime=runc", "run", "--rm",
                                               "--network=none", "--rootfs", str(rootfs), "true"],
                          env))
    else:
        skipped.append("podman: " + ("--no-podman" if args.no_podman else
                                     "not installed (run benchmarks/setup-peers as root)"))
    runc = shutil.which(args.runc)
    if runc and not args.no_runc:
        xdg = os.environ.get("XDG_RUNTIME_DIR") or str(work)
        root = Path(xdg) / "runc-bench"
        root.mkdir(mode=0o700, exist_ok=True)
        bundle = runc_bundle(rootfs, work / "runc-bundle", runc)
        tag = f"rlbench-{os.getpid()}"
        tools.append(Tool("runc", lambda i: [runc, "--root", str(root), "run", "--bundle",
                                             str(bundle), f"{tag}-{i}"], env))
    else:
        skipped.append("runc: " + ("--no-runc" if args.no_runc else
                                   "not installed (run benchmarks/setup-peers as root)"))
    tools.append(Tool("floor", lambda i: ["unshare", "-Urmpf", "--mount-proc", "true"], env))
    return tools, skipped


# --------------------------------------------------------------------------
# Python start-up context


def python_context(python: str, rl_path: str, env: dict[str, str], runs: int) -> None:
    cases = {
        "python -c pass": [python, "-c", "pass"],
        "python -c 'import rootless.cli.app'": [python, "-c", "import rootless.cli.app"],
        "rl --version": [rl_path, "--version"],
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for argv in cases.values():  # warm the page cache and bytecode cache
        subprocess.run(argv, capture_output=True, env=env, check=False)
    for _ in range(runs):
        for name, argv in cases.items():
            t0 = time.perf_counter()
            subprocess.run(argv, capture_output=True, env=env, check=False)
            times[name].append(time.perf_counter() - t0)
    print(f"\nPython start-up ({python}, {runs} interleaved runs)")
    print(f"  {'command':34} {'median ms':>9} {'p90 ms':>8}")
    for name, ts in times.items():
        print(f"  {name:34} {ms(median(ts)):>9} {ms(p90(ts)):>8}")
    base = median(times["python -c pass"])
    cli = median(times["python -c 'import rootless.cli.app'"])
    print(f"  => importing rl's CLI costs {ms(cli - base).strip()} ms "
          "over a bare interpreter")

    # Which top-level imports cost what (-X importtime, best of 3 per module).
    best: dict[tuple[int, str], int] = {}
    for _ in range(3):
        r = subprocess.run([python, "-X", "importtime", "-c", "import rootless.cli.app"],
                           capture_output=True, text=True, env=env, check=False)
        seen: dict[tuple[int, str], int] = {}
        for line in r.stderr.splitlines():
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            _, rest = line.split(":", 1)
            parts = rest.split("|")
            if len(parts) != 3:
                continue
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip())) // 2
            if depth > 1:
                continue
            seen[depth, name.strip()] = int(parts[1])
        for k, v in seen.items():
            best[k] = min(best.get(k, v), v)
    top = sorted(best.items(), key=lambda kv: -kv[1])[:12]
    print("  heaviest imports (python -X importtime, cumulative, top two levels, best of 3):")
    for (depth, name), us in top:
        print(f"    {us / 1000:6.1f} ms  {'  ' * depth}{name}")


# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="timed rounds (default 20, minimum 10)")
    ap.add_argument("--rootfs", type=Path, help="root filesystem (default: build a busybox one)")
    ap.add_argument("--rl", default="rl", help="rl executable (default: rl on PATH)")
    ap.add_argument("--rl-before", help="another rl executable to compare with (A/B of a change)")
    ap.add_argument("--podman", default="podman")
    ap.add_argument("--runc", default="runc")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--no-runc", action="store_true")
    ap.add_argument("--shared-state", action="store_true",
                    help="run rl with the caller's XDG dirs (and its fork server)")
    ap.add_argument("--no-python", action="store_true", help="skip the Python start-up figures")
    ap.add_argument("--json", type=Path, help="also write the raw timings here")
    args = ap.parse_args()
    if args.runs < 10:
        ap.error("--runs must be at least 10")
    if os.geteuid() == 0:
        ap.error("run me as the unprivileged user (rootless is the point)")

    rl_path, python = resolve_rl(args.rl)
    work = Path(tempfile.mkdtemp(prefix="rlbench-"))
    state = RlState(args.shared_state)
    # Never shared: two trees' fork servers and records must not meet.
    before_state = RlState(False) if args.rl_before else None
    try:
        rootfs = args.rootfs.resolve() if args.rootfs else build_rootfs(work / "rootfs")
        before = None
        if args.rl_before and before_state is not None:
            before = (resolve_rl(args.rl_before)[0], before_state)
        tools, skipped = make_tools(args, rootfs, rl_path, state, work, before)
        note = pycache_warning(python, state.env)
        print(f"rl start-up benchmark: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
              f"{os.uname().release}, {os.cpu_count()} CPUs, rootfs {rootfs}")
        for s in skipped:
            print(f"  skipped {s}")
        if note:
            print(f"  {note}")

        for t in tools:  # warm-up (also starts rl's fork server)
            t.once(-1)
        for i in range(args.runs):
            k = i % len(tools)
            for t in tools[k:] + tools[:k]:  # rotate who goes first
                t.times.append(t.once(i))

        by = {t.name: t for t in tools}
        print(f"\n{args.runs} interleaved rounds after one warm-up each; wall time of the whole "
              "command")
        print(f"  {'tool':8} {'median ms':>9} {'p90 ms':>8} {'min ms':>8}   rl/tool (medians; "
              "median of per-round ratios)")
        for t in tools:
            ratio = ""
            if t.name != "rl":
                a = median(by["rl"].times) / median(t.times)
                paired = median([x / y for x, y in zip(by["rl"].times, t.times, strict=True)])
                ratio = f"{a:6.2f}x   {paired:6.2f}x"
            print(f"  {t.name:8} {ms(median(t.times)):>9} {ms(p90(t.times)):>8} "
                  f"{ms(min(t.times)):>8}   {ratio}")
        if "podman" in by:
            r = median(by["rl"].times) / median(by["podman"].times)
            print(f"  target rl <= 0.5x podman: {'met' if r <= 0.5 else 'NOT met'} ({r:.2f}x)")

        if args.json:
            args.json.write_text(json.dumps({t.name: t.times for t in tools}, indent=1))
        if not args.no_python:
            python_context(python, rl_path, state.env, max(10, args.runs // 2))
    finally:
        state.close()
        if before_state is not None:
            before_state.close()
        remove_tree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
