"""Lifecycle commands: create, start, ps, logs, stop, kill, rm, wait, inspect, rename, top, exec."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import support
from support import RlRunner


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


@pytest.fixture
def ctr(rl: RlRunner, rootfs: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A running container named after the test; removed afterwards."""
    name = request.node.name.replace("[", "_").replace("]", "")[:60]
    rl("run", "-d", "--name", name, "--init", "--rootfs", rootfs,
       "sh", "-c", "echo started; trap 'echo got TERM; exit 0' TERM; "
       "while true; do sleep 0.1; done", check=True)
    wait_for_log(rl, name, "started")
    yield name
    rl("rm", "-f", name)


def wait_for_log(rl: RlRunner, name: str, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = rl("logs", name).stdout
        if text in out:
            return out
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in the logs of {name}")


def ps_json(rl: RlRunner, *flags: str) -> list[dict[str, str]]:
    out = rl("ps", "--format", "json", *flags, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_run_detached_ps_inspect_and_rm(rl: RlRunner, ctr: str) -> None:
    rows = {r["Names"]: r for r in ps_json(rl)}
    assert rows[ctr]["State"] == "running"
    assert rows[ctr]["Status"].startswith("Up ")
    table = rl("ps", check=True).stdout.splitlines()
    assert table[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                                "PORTS", "NAMES"]
    assert any(line.endswith(ctr) for line in table[1:])
    custom = rl("ps", "--format", "table {{.Names}}\t{{.State}}", check=True).stdout
    assert custom.splitlines()[0].split() == ["NAMES", "STATE"]
    assert any(line.split() == [ctr, "running"] for line in custom.splitlines()[1:])
    info = json.loads(rl("inspect", ctr, check=True).stdout)[0]
    assert info["Name"] == "/" + ctr
    assert info["State"]["Running"] is True and info["State"]["Pid"] > 0
    assert info["HostConfig"]["Init"] is True
    short = info["Id"][:12]
    assert rl("ps", "-q", check=True).stdout.split().count(short) == 1
    # names and unique id prefixes resolve like docker's
    assert rl("inspect", "-f", "{{.Name}}", info["Id"][:5], check=True).stdout == f"/{ctr}\n"
    r = rl("rm", ctr)
    assert r.returncode == 1 and "container is running" in r.stderr
    assert rl("rm", "-f", ctr, check=True).stdout.strip() == ctr
    assert ctr not in rl("ps", "-a", check=True).stdout


def test_stop_sends_term_then_records_exit(rl: RlRunner, ctr: str) -> None:
    assert rl("stop", ctr, check=True).stdout.strip() == ctr
    assert "got TERM" in rl("logs", ctr, check=True).stdout
    state = json.loads(rl("inspect", ctr, check=True).stdout)[0]["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 0
    assert state["Pid"] == 0
    assert rl("ps", "-a", "--filter", f"name={ctr}", "--format", "{{.Status}}",
              check=True).stdout.startswith("Exited (0)")
    assert rl("wait", ctr, check=True).stdout.strip() == "0"


def test_stop_timeout_escalates_to_kill(rl: RlRunner, rootfs: Path) -> None:
    # PID 1 without --init ignores SIGTERM, exactly as under docker.
    rl("run", "-d", "--name", "stubborn", "--rootfs", rootfs, "sleep", "60", check=True)
    try:
        t0 = time.monotonic()
        rl("stop", "-t", "1", "stubborn", check=True)
        assert time.monotonic() - t0 >= 1
        code = rl("inspect", "-f", "{{.State.ExitCode}}", "stubborn", check=True).stdout
        assert code.strip() == "137"
    finally:
        rl("rm", "-f", "stubborn")


def test_kill_with_signal_and_wait(rl: RlRunner, ctr: str) -> None:
    waiter = subprocess.Popen([str(Path(rl("--version").args[0])), "wait", ctr],
                              stdout=subprocess.PIPE, text=True)
    rl("kill", "-s", "USR1", ctr, check=True)  # the init forwards it: sh dies of it
    out, _ = waiter.communicate(timeout=20)
    assert out.strip() == str(128 + signal.SIGUSR1)
    r = rl("kill", ctr)
    assert r.returncode == 1 and "is not running" in r.stderr


def test_logs_tail_timestamps_and_streams(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "--name", "logger", "--rootfs", rootfs, "sh", "-c",
       "for i in 1 2 3 4 5; do echo out$i; done; echo oops >&2", check=True)
    try:
        r = rl("logs", "logger", check=True)
        assert r.stdout.split() == ["out1", "out2", "out3", "out4", "out5"]
        assert r.stderr.strip() == "oops"
        tail = rl("logs", "--tail", "2", "logger", check=True)
        assert len((tail.stdout + tail.stderr).split()) == 2
        stamped = rl("logs", "-t", "logger", check=True).stdout.splitlines()[0]
        ts, text = stamped.split(" ", 1)
        assert text == "out1" and ts.endswith("Z") and ts[4] == "-" and "T" in ts
        log_path = json.loads(rl("inspect", "logger", check=True).stdout)[0]["LogPath"]
        first = json.loads(Path(log_path).read_text().splitlines()[0])
        assert set(first) == {"log", "stream", "time"}
    finally:
        rl("rm", "logger")


def test_logs_follow_ends_with_the_container(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "-d", "--name", "follower", "--rootfs", rootfs, "sh", "-c",
       "echo one; sleep 1; echo two", check=True)
    try:
        r = rl("logs", "-f", "follower", timeout=30, check=True)
        assert r.stdout.split() == ["one", "two"]
    finally:
        rl("rm", "-f", "follower")


def test_create_then_start_and_start_attach(rl: RlRunner, rootfs: Path) -> None:
    cid = rl("create", "--name", "made", "--rootfs", rootfs, "sh", "-c", "echo hi; exit 4",
             check=True).stdout.strip()
    try:
        assert len(cid) == 64
        assert rl("ps", "-a", "--filter", "name=made", "--format", "{{.Status}}",
                  check=True).stdout.strip() == "Created"
        r = rl("start", "-a", "made")
        assert r.returncode == 4 and r.stdout == "hi\n"
        assert rl("start", "made", check=True).stdout.strip() == "made"
        assert rl("wait", "made", check=True).stdout.strip() == "4"
        assert rl("logs", "made", check=True).stdout == "hi\nhi\n"
    finally:
        rl("rm", "-f", "made")


def test_rename_and_name_in_use(rl: RlRunner, ctr: str, rootfs: Path) -> None:
    r = rl("run", "--name", ctr, "--rootfs", rootfs, "true")
    assert r.returncode == 125 and "is already in use" in r.stderr
    rl("rename", ctr, ctr + "-new", check=True)
    try:
        assert rl("inspect", "-f", "{{.Name}}", ctr + "-new", check=True).stdout.strip() == \
            f"/{ctr}-new"
        assert rl("inspect", ctr).returncode == 1
    finally:
        rl("rename", ctr + "-new", ctr, check=True)


def test_top_lists_the_containers_processes(rl: RlRunner, ctr: str) -> None:
    out = rl("top", ctr, check=True).stdout.splitlines()
    assert out[0].split()[:3] == ["UID", "PID", "PPID"]
    cmds = " ".join(out[1:])
    assert "while true" in cmds or "sleep" in cmds
    assert "pytest" not in cmds
    out = rl("top", ctr, "-o", "pid,comm", check=True).stdout.splitlines()
    assert out[0].split() == ["PID", "COMMAND"]


def test_exec_joins_every_namespace(rl: RlRunner, ctr: str) -> None:
    script = "for n in pid mnt uts ipc net user cgroup; do readlink /proc/{}/ns/$n; done"
    pid1_ns = rl("exec", ctr, "sh", "-c", script.format(1), check=True)
    self_ns = rl("exec", ctr, "sh", "-c", script.format("self"), check=True)
    assert len(set(pid1_ns.stdout.split())) == 7
    assert pid1_ns.stdout == self_ns.stdout
    out = rl("exec", "-e", "X=1", "-w", "/tmp", "-u", "user", ctr, "sh", "-c",
             "echo $X; pwd; id -u; echo $$", check=True).stdout.split()
    assert out[:3] == ["1", "/tmp", "1000"]
    assert int(out[3]) > 1
    assert rl("exec", ctr, "sh", "-c", "exit 9").returncode == 9
    assert rl("exec", ctr, "nonexistent").returncode == 127
    r = rl("exec", "-i", ctr, "cat", input="piped through\n")
    assert r.stdout == "piped through\n"


def test_exec_detached_runs_in_the_background(rl: RlRunner, ctr: str) -> None:
    # The command waits for /tmp/go: rl exec -d returns at all only if it does not wait.
    r = rl("exec", "-d", ctr, "sh", "-c",
           "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo done > /tmp/detached; echo lost")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    assert rl("exec", ctr, "cat", "/tmp/detached").returncode == 1  # still waiting
    rl("exec", ctr, "touch", "/tmp/go", check=True)
    assert support.wait_until(
        lambda: rl("exec", ctr, "cat", "/tmp/detached").stdout == "done\n", timeout=30)
    # It is reaped: no zombie is left in the container.
    ps = rl("exec", ctr, "ps", "-o", "stat,args", check=True).stdout
    assert not [line for line in ps.splitlines() if line.startswith("Z")], ps
    # A command that cannot run is still an error, with docker's status.
    assert rl("exec", "-d", ctr, "nonexistent").returncode == 127


def test_exec_on_stopped_and_missing_containers(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "--name", "stopped1", "--rootfs", rootfs, "true", check=True)
    try:
        r = rl("exec", "stopped1", "true")
        assert r.returncode == 1 and "is not running" in r.stderr
    finally:
        rl("rm", "stopped1")
    for cmd in (["exec", "nosuch", "true"], ["stop", "nosuch"], ["rm", "nosuch"],
                ["kill", "nosuch"], ["logs", "nosuch"], ["inspect", "nosuch"],
                ["wait", "nosuch"], ["top", "nosuch"], ["start", "nosuch"]):
        r = rl(*cmd)
        assert r.returncode == 1, cmd
        assert r.stderr.strip() == "Error: no such container: nosuch", cmd


def test_rm_flag_removes_after_exit(rl: RlRunner, rootfs: Path) -> None:
    r = rl("run", "--rm", "--name", "gone", "--rootfs", rootfs, "sh", "-c", "echo bye")
    assert r.returncode == 0 and r.stdout == "bye\n"
    assert "gone" not in rl("ps", "-a", check=True).stdout
    cid = rl("run", "-d", "--rm", "--rootfs", rootfs, "true", check=True).stdout.strip()
    deadline = time.monotonic() + 10
    while cid[:12] in rl("ps", "-aq").stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cid[:12] not in rl("ps", "-aq").stdout


def test_stdin_is_forwarded_with_i_only(rl: RlRunner, rootfs: Path) -> None:
    r = rl("run", "--rm", "-i", "--rootfs", rootfs, "sh", "-c", "cat; echo done",
           input="line1\nline2\n")
    assert r.stdout == "line1\nline2\ndone\n"
    r = rl("run", "--rm", "--rootfs", rootfs, "sh", "-c", "cat; echo done", input="ignored\n")
    assert r.stdout == "done\n"


def test_large_output_is_complete(rl: RlRunner, rootfs: Path) -> None:
    r = rl("run", "--rm", "--rootfs", rootfs, "sh", "-c", "seq 1 200000")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert len(lines) == 200000 and lines[-1] == "200000"
