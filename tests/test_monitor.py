"""An idle container is served by its lean monitor alone (engine/monitor.py, issue 16).

The supervisor (a trio worker) hands the container to the monitor once it has
nothing to do, and a new worker takes it back for the next command or for the
container's exit. These tests watch the real processes: the worker's exit, the
monitor relaying output, and kill -9 of either losing nothing already written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

import support
from support import RlRunner, RlState


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(d))
    return out


def _monitor_and_pid1(rl: RlRunner, cid: str) -> tuple[int, int]:
    st = json.loads(rl("inspect", cid, check=True).stdout)[0]["State"]
    mon = int((Path(os.environ["XDG_RUNTIME_DIR"]) / "rl" / cid / "sup.pid").read_text())
    return mon, int(st["Pid"])


def _workers(mon: int, pid1: int) -> list[int]:
    return [p for p in _children(mon) if p != pid1]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _state(rl: RlRunner, cid: str) -> dict[str, object]:
    return dict(json.loads(rl("inspect", cid, check=True).stdout)[0]["State"])


def test_an_idle_container_is_its_monitors_alone(rl: RlRunner, rootfs: Path) -> None:
    cid = rl("run", "-d", "--network", "none", "--rootfs", rootfs, "sh", "-c",
             "echo one; sleep 3; echo two; printf 'no newline'; sleep 100",
             check=True).stdout.strip()
    mon, pid1 = _monitor_and_pid1(rl, cid)
    # PID 1 is the monitor's child, and the worker leaves once it is idle.
    assert pid1 in _children(mon)
    assert support.wait_until(lambda: not _workers(mon, pid1), timeout=15)
    # The monitor writes what the container prints meanwhile.
    assert support.wait_until(lambda: "two" in rl("logs", cid).stdout, timeout=15)
    assert rl("ps", "-q", "--no-trunc", check=True).stdout.split() == [cid]
    # A command on the control socket: a new worker serves it and the exit.
    r = rl("stop", "-t", "1", cid)
    assert r.returncode == 0, r.stderr
    st = _state(rl, cid)
    assert st["Status"] == "exited" and st["ExitCode"] == 137, st
    assert rl("logs", cid, check=True).stdout == "one\ntwo\nno newline"
    assert not _alive(mon)
    rl("rm", cid, check=True)


def test_exit_and_restart_after_the_handover(rl: RlRunner, rootfs: Path) -> None:
    cid = rl("run", "-d", "--network", "none", "--restart", "on-failure:1", "--rootfs",
             rootfs, "sh", "-c", "echo run; sleep 3; exit 3", check=True).stdout.strip()
    mon, pid1 = _monitor_and_pid1(rl, cid)
    assert support.wait_until(lambda: not _workers(mon, pid1), timeout=15)
    # The exit comes to the monitor alone: a worker records it and restarts once.
    r = rl("wait", cid, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "3", (r.stdout, r.stderr)
    st = _state(rl, cid)
    assert st["Status"] == "exited" and st["ExitCode"] == 3
    assert json.loads(rl("inspect", cid, check=True).stdout)[0]["RestartCount"] == 1
    assert rl("logs", cid, check=True).stdout == "run\nrun\n"
    rl("rm", cid, check=True)


def test_kill_9_of_the_monitor_loses_no_log_line(rl: RlRunner, rootfs: Path) -> None:
    cid = rl("run", "-d", "--network", "none", "--rootfs", rootfs, "sh", "-c",
             "echo before; sleep 2; echo after; sleep 100", check=True).stdout.strip()
    mon, pid1 = _monitor_and_pid1(rl, cid)
    assert support.wait_until(lambda: not _workers(mon, pid1), timeout=15)
    assert support.wait_until(lambda: "after" in rl("logs", cid).stdout, timeout=15)
    os.kill(mon, signal.SIGKILL)
    assert support.wait_until(lambda: not _alive(pid1))  # PID 1 dies with its monitor
    st = _state(rl, cid)
    assert st["Status"] == "exited" and st["ExitCode"] == 255
    assert "supervisor died" in str(st["Error"])
    assert rl("logs", cid, check=True).stdout == "before\nafter\n"
    rl("rm", cid, check=True)
    r = rl("run", "--rm", "--network", "none", "--rootfs", rootfs, "echo", "fine")
    assert r.returncode == 0 and r.stdout == "fine\n"


def test_kill_9_of_the_worker_ends_the_container(rl_path: Path, rl_state: RlState,
                                                 rl: RlRunner, rootfs: Path) -> None:
    env = {**os.environ, **rl_state.env(), "RL_HANDOVER_IDLE": "120"}  # it stays
    cid = subprocess.run([str(rl_path), "run", "-d", "--network", "none", "--rootfs",
                          str(rootfs), "sh", "-c", "echo up; sleep 100"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    mon, pid1 = _monitor_and_pid1(rl, cid)
    workers = _workers(mon, pid1)
    assert len(workers) == 1
    assert support.wait_until(lambda: "up" in rl("logs", cid).stdout)
    os.kill(workers[0], signal.SIGKILL)
    # The monitor follows its worker, and PID 1 its monitor: one container's loss,
    # told truthfully by the next command.
    assert support.wait_until(lambda: not _alive(mon) and not _alive(pid1))
    st = _state(rl, cid)
    assert st["Status"] == "exited" and st["ExitCode"] == 255
    assert rl("logs", cid, check=True).stdout == "up\n"
    rl("rm", cid, check=True)
