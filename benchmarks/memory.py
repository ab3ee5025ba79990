#!/usr/bin/env python3
"""Idle memory of the processes that serve a container: rl against podman.

Run as the unprivileged user (stdlib only, Python >= 3.11):

    python3 benchmarks/memory.py [--rootfs DIR] [--rl PATH] [--count 5]

Starts idle containers (`sleep 1000`), waits --settle seconds, then reads the
proportional set size (Pss in /proc/PID/smaps_rollup) of every process that
runs *for* the container, the container's own workload (sleep) excluded:

    rl      the supervisor (state.json "supervisor_pid"), the fork server
            ($XDG_RUNTIME_DIR/rl/fork-*.pid), with --init the init (state.json
            "pid", catatonit; until issue 10 a fork of the supervisor)
    podman  conmon (podman inspect .State.ConmonPid), the rootless pause
            process ($XDG_RUNTIME_DIR/libpod/tmp/pause.pid; it holds podman's
            user namespace for all containers) and any helper that appeared
            with the container (slirp4netns, rootlessport, pasta, catatonit...)

PSS divides each shared page among the processes mapping it, so the PSS of
a set of processes adds up to the memory that set costs. The fork server and
podman's pause process are per user, not per container: the --count scenario
shows how they amortise over several idle containers.

Scenarios: rl, rl --init, rl x COUNT, podman, podman x COUNT. rl gets a fresh
private XDG_RUNTIME_DIR/XDG_DATA_HOME (so a fresh fork server, stopped at the
end) per scenario unless --shared-state; podman uses the caller's. Every
container started here is removed at the end (rl rm -f, podman rm -f).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import RlState, build_rootfs, remove_tree, resolve_rl

PODMAN_HELPERS = {"slirp4netns", "rootlessport", "rootlessport-c", "pasta", "pasta.avx2",
                  "aardvark-dns", "catatonit", "podman pause"}


@dataclass
class Mem:
    pss: int  # KiB
    uss: int  # Private_Clean + Private_Dirty, KiB
    rss: int  # KiB

    def __add__(self, other: Mem) -> Mem:
        return Mem(self.pss + other.pss, self.uss + other.uss, self.rss + other.rss)


ZERO = Mem(0, 0, 0)


def mem(pid: int) -> Mem:
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1])
    return Mem(fields["Pss"], fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
               fields["Rss"])


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rpartition(")")[2].split()[1])


def workers(monitor: int, container_pid: int) -> list[int]:
    """A monitor's rl children (its supervisor worker, while it has one): everything
    it forked but the container's PID 1."""
    return [p for p in my_pids() if ppid(p) == monitor and p != container_pid
            and comm(p).startswith("python")]


def my_pids() -> set[int]:
    uid = os.getuid()
    pids = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    pids.add(int(d))
            except OSError:
                pass
    return pids


def mib(kib: int) -> str:
    return f"{kib / 1024:7.2f}"


class Report:
    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[tuple[str, Mem | None]] = []

    def add(self, label: str, m: Mem | None) -> None:
        self.rows.append((label, m))

    def print(self) -> None:
        print(f"\n{self.title}")
        print(f"  {'':44} {'PSS MiB':>8} {'USS MiB':>8} {'RSS MiB':>8}")
        for label, m in self.rows:
            if m is None:
                print(f"  {label}")
            else:
                print(f"  {label:44} {mib(m.pss):>8} {mib(m.uss):>8} {mib(m.rss):>8}")


# --------------------------------------------------------------------------
# rl


def rl_scenario(rl: str, rootfs: Path, network: str, count: int, init: bool, settle: float,
                shared: bool) -> dict[str, float]:
    state = RlState(shared)
    ids: list[str] = []
    try:
        for _ in range(count):
            argv = [rl, "run", "-d", f"--network={network}", "--rootfs"]
            if init:
                argv.insert(3, "--init")
            r = subprocess.run([*argv, str(rootfs), "sleep", "1000"], capture_output=True,
                               text=True, env=state.env, check=False)
            if r.returncode != 0:
                raise SystemExit(f"rl run failed ({r.returncode}): {r.stderr.strip()}")
            ids.append(r.stdout.strip().splitlines()[-1])
        time.sleep(settle)
        data = Path(state.env.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "rl"
        sups, inits, works = [], [], []
        for cid in ids:
            st = json.loads((data / "containers" / cid / "state.json").read_text())
            sups.append(int(st["supervisor_pid"]))
            # Since issue 16 the "supervisor" is the container's lean monitor; a worker
            # (the trio supervisor) is its child while it has something to do.
            works += workers(int(st["supervisor_pid"]), int(st["pid"]))
            if init:
                inits.append(int(st["pid"]))
        fs = state.forkserver_pids()
        if len(fs) != 1:
            raise SystemExit(f"expected one rl fork server, found {fs}")
        fsm = mem(fs[0])
        supm = [mem(p) for p in sups]
        workm = [mem(p) for p in works]
        supm_total = sum(supm, ZERO) + sum(workm, ZERO)
        initm = [mem(p) for p in inits]

        what = f"rl run -d{' --init' if init else ''} --network={network}"
        rep = Report(f"{what}: {count} idle container{'s' if count > 1 else ''}")
        for i, m in enumerate(supm):
            rep.add(f"supervisor #{i + 1} (pid {sups[i]})", m)
        for i, m in enumerate(workm):
            rep.add(f"  its worker (pid {works[i]})", m)
        for i, m in enumerate(initm):
            rep.add(f"init #{i + 1} (pid {inits[i]})", m)
        rep.add(f"fork server (pid {fs[0]})", fsm)
        sup_total = supm_total
        init_total = sum(initm, ZERO)
        rep.add("-- totals", None)
        rep.add("supervisor only" + (f" (x{count})" if count > 1 else ""), sup_total)
        if init:
            rep.add("supervisor + init", sup_total + init_total)
        rep.add("supervisor + fork server" + (" + init" if init else ""),
                sup_total + init_total + fsm)
        per = (sup_total + init_total + fsm).pss / count
        if count > 1:
            rep.add(f"per container (all rl processes / {count}): {per / 1024:.2f} MiB PSS", None)
        else:
            rep.add(f"target <= 10 MiB PSS for all rl processes: "
                    f"{'met' if per <= 10 * 1024 else 'NOT met'} ({per / 1024:.2f} MiB)", None)
        rep.print()
        return {"supervisor": sup_total.pss / count, "forkserver": fsm.pss,
                "init": init_total.pss / count if init else 0.0, "per_container": per,
                "total": (sup_total + init_total + fsm).pss, "workers": len(works)}
    finally:
        for cid in ids:
            subprocess.run([rl, "rm", "-f", cid], capture_output=True, env=state.env, check=False)
        state.close()


# --------------------------------------------------------------------------
# podman


def podman_scenario(podman: str, rootfs: Path, network: str, count: int,
                    settle: float) -> dict[str, float]:
    ids: list[str] = []
    before = my_pids()
    try:
        for _ in range(count):
            r = subprocess.run([podman, "--runtime=runc", "run", "-d", f"--network={network}",
                                "--rootfs", str(rootfs), "sleep", "1000"],
                               capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise SystemExit(f"podman run failed ({r.returncode}): {r.stderr.strip()}")
            ids.append(r.stdout.strip().splitlines()[-1])
        time.sleep(settle)
        conmons, workloads = [], set()
        for cid in ids:
            out = subprocess.run([podman, "inspect", "--format",
                                  "{{.State.ConmonPid}} {{.State.Pid}}", cid],
                                 capture_output=True, text=True, check=True).stdout.split()
            conmons.append(int(out[0]))
            workloads.add(int(out[1]))
        xdg = os.environ.get("XDG_RUNTIME_DIR", "")
        pause: int | None = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            pause = int(Path(xdg, "libpod/tmp/pause.pid").read_text().split()[0])
        helpers = sorted(p for p in my_pids() - before - set(conmons) - workloads
                         if comm(p) in PODMAN_HELPERS and p != pause)

        rep = Report(f"podman --runtime=runc run -d --network={network}: {count} idle "
                     f"container{'s' if count > 1 else ''}")
        conm = [mem(p) for p in conmons]
        for i, m in enumerate(conm):
            rep.add(f"conmon #{i + 1} (pid {conmons[i]})", m)
        helperm = ZERO
        for p in helpers:
            m = mem(p)
            helperm = helperm + m
            rep.add(f"{comm(p)} (pid {p})", m)
        pausem = ZERO
        if pause is not None and Path(f"/proc/{pause}").exists():
            pausem = mem(pause)
            rep.add(f"pause process (pid {pause}, per user)", pausem)
        con_total = sum(conm, ZERO)
        rep.add("-- totals", None)
        rep.add("conmon only" + (f" (x{count})" if count > 1 else ""), con_total)
        if helpers:
            rep.add("conmon + helpers", con_total + helperm)
        rep.add("all podman-side processes (with pause)", con_total + helperm + pausem)
        per = (con_total + helperm + pausem).pss / count
        if count > 1:
            rep.add(f"per container (all podman-side / {count}): {per / 1024:.2f} MiB PSS", None)
        rep.print()
        return {"conmon": con_total.pss / count, "helpers": helperm.pss / count,
                "pause": pausem.pss, "per_container": per}
    finally:
        if ids:
            subprocess.run([podman, "rm", "-f", "-t", "0", *ids], capture_output=True,
                           check=False)


# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rootfs", type=Path, help="root filesystem (default: build a busybox one)")
    ap.add_argument("--rl", default="rl", help="rl executable (default: rl on PATH)")
    ap.add_argument("--podman", default="podman")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--network", default="none",
                    help="network mode for both runtimes (default none; 'host' works for both)")
    ap.add_argument("--podman-network",
                    help="podman's network mode if not --network's (e.g. slirp4netns, its "
                         "default, to count the slirp4netns process)")
    ap.add_argument("--count", type=int, default=5, help="containers in the amortisation run")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds to let the containers go idle before measuring")
    ap.add_argument("--shared-state", action="store_true",
                    help="run rl with the caller's XDG dirs (and its fork server)")
    ap.add_argument("--json", type=Path, help="also write the summary figures here")
    args = ap.parse_args()
    if os.geteuid() == 0:
        ap.error("run me as the unprivileged user (rootless is the point)")

    rl, _python = resolve_rl(args.rl)
    podman = None if args.no_podman else shutil.which(args.podman)
    work = Path(tempfile.mkdtemp(prefix="rlbench-"))
    results: dict[str, dict[str, float]] = {}
    try:
        rootfs = args.rootfs.resolve() if args.rootfs else build_rootfs(work / "rootfs")
        print(f"rl idle-memory benchmark: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
              f"{os.uname().release}, {os.cpu_count()} CPUs, rootfs {rootfs}")
        sh = args.shared_state
        results["rl"] = rl_scenario(rl, rootfs, args.network, 1, False, args.settle, sh)
        results["rl --init"] = rl_scenario(rl, rootfs, args.network, 1, True, args.settle, sh)
        results[f"rl x{args.count}"] = rl_scenario(rl, rootfs, args.network, args.count, False,
                                                   args.settle, sh)
        if podman:
            pnet = args.podman_network or args.network
            results["podman"] = podman_scenario(podman, rootfs, pnet, 1, args.settle)
            results[f"podman x{args.count}"] = podman_scenario(podman, rootfs, pnet, args.count,
                                                               args.settle)
        else:
            print("\npodman: skipped (not installed: run benchmarks/setup-peers as root)")

        print("\nSummary (PSS MiB per container)")
        print(f"  {'scenario':14} {'sup/conmon':>10} {'init':>6} {'forksrv/pause':>13} "
              f"{'helpers':>8} {'total/ctr':>9}")
        for name, r in results.items():
            own = r.get("supervisor", r.get("conmon", 0.0))
            shared_kib = r.get("forkserver", r.get("pause", 0.0))
            print(f"  {name:14} {own / 1024:10.2f} {r.get('init', 0.0) / 1024:6.2f} "
                  f"{shared_kib / 1024:13.2f} {r.get('helpers', 0.0) / 1024:8.2f} "
                  f"{r['per_container'] / 1024:9.2f}")
        n = args.count
        print(f"\nIssue 16's figures (PSS MiB; every process serving the containers)")
        for peer in ("rl", "podman"):
            if peer in results and f"{peer} x{n}" in results and n > 1:
                first = results[peer]["per_container"]
                more = (results[f"{peer} x{n}"]["per_container"] * n - first) / (n - 1)
                print(f"  {peer:7} first container {first / 1024:6.2f}   each additional "
                      f"one with {n} running {more / 1024:6.2f}")
        print("  targets: rl's first <= 12 MiB, each additional <= 2 MiB (with 10 running)")
        if "rl" in results and "podman" in results:
            ratio = results["rl"]["per_container"] / results["podman"]["per_container"]
            print(f"  rl/podman, one container, all processes: {ratio:.1f}x")
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        remove_tree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
