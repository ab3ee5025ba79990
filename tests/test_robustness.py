"""Bad input gets a clear error and loses nothing; kill -9 of any rl process breaks nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import support
from support import RlRunner


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


def containers(rl: RlRunner) -> list[str]:
    return rl("ps", "-aq", "--no-trunc", check=True).stdout.split()


def state_of(rl: RlRunner, ref: str) -> dict[str, object]:
    return dict(json.loads(rl("inspect", ref, check=True).stdout)[0]["State"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def runtime_dir() -> Path:
    return Path(os.environ["XDG_RUNTIME_DIR"]) / "rl"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--rootfs", "/nonexistent/rootfs", "true"], "does not exist"),
        (["run", "--bogus-flag", "--rootfs", "/", "true"], "--bogus-flag"),
        (["run", "--rootfs", "{rootfs}"], "no command specified"),
        (["run", "--pull=never", "busybox", "true"], "no such image: busybox"),
        (["run", "-v", "/nonexistent/src:/x", "--rootfs", "{rootfs}", "true"],
         "bind source path does not exist: /nonexistent/src"),
        (["run", "-v", "rel/ative:/x", "--rootfs", "{rootfs}", "true"], "invalid characters"),
        (["run", "-v", "/tmp:relative", "--rootfs", "{rootfs}", "true"], "must be absolute"),
        (["run", "--ulimit", "nofile=abc", "--rootfs", "{rootfs}", "true"], "invalid ulimit"),
        (["run", "--ulimit", "nofile=10:5", "--rootfs", "{rootfs}", "true"], "exceeds hard"),
        (["run", "--cap-add", "NOT_A_CAP", "--rootfs", "{rootfs}", "true"], "unknown capability"),
        (["run", "--stop-signal", "SIGNOPE", "--rootfs", "{rootfs}", "true"], "invalid signal"),
        (["run", "--network", "bridge0", "--rootfs", "{rootfs}", "true"],
         "network bridge0 not found"),  # as docker's daemon says it
        (["run", "--name", "bad/name", "--rootfs", "{rootfs}", "true"], "invalid container name"),
        (["run", "-w", "relative", "--rootfs", "{rootfs}", "true"], "needs to be an absolute"),
        (["run", "--security-opt", "label=foo", "--rootfs", "{rootfs}", "true"],
         "invalid --security-opt"),
        (["run", "--env-file", "/nonexistent/env", "--rootfs", "{rootfs}", "true"],
         "/nonexistent/env"),
        (["run", "--stop-timeout", "abc", "--rootfs", "{rootfs}", "true"], "stop-timeout"),
    ],
)
def test_bad_run_input_is_125_and_creates_nothing(rl: RlRunner, rootfs: Path, args: list[str],
                                                 message: str) -> None:
    before = containers(rl)
    r = rl(*(a.replace("{rootfs}", str(rootfs)) for a in args))
    assert r.returncode == 125, r.stderr
    assert message in r.stderr
    assert r.stderr.startswith("Error: ")
    assert len(r.stderr.strip().splitlines()) <= 2  # one line (+ click's "See --help")
    assert containers(rl) == before


def test_bad_management_input(rl: RlRunner) -> None:
    assert rl("kill", "-s", "NOPE", "x").returncode == 125
    assert rl("logs", "--tail", "many", "x").returncode == 125
    assert rl("stop", "-t", "-5", "x").returncode == 125
    assert rl("inspect", "--type", "volume", "x").returncode == 125
    assert rl("inspect", "--type", "image", "x").returncode == 1  # no such image
    r = rl("ps", "--filter", "colour=red")
    assert r.returncode == 125 and "invalid filter" in r.stderr


def test_kill_9_of_the_supervisor(rl: RlRunner, rootfs: Path) -> None:
    cid = rl("run", "-d", "--name", "orphaned", "--rootfs", rootfs, "sleep", "100",
             check=True).stdout.strip()
    pid1 = int(str(state_of(rl, cid)["Pid"]))
    sup = int((runtime_dir() / cid / "sup.pid").read_text())
    os.kill(sup, signal.SIGKILL)
    # The container dies with its supervisor (PR_SET_PDEATHSIG on its PID 1).
    assert support.wait_until(lambda: not alive(pid1))
    st = state_of(rl, cid)
    assert st["Status"] == "exited" and st["ExitCode"] == 255
    assert "supervisor died" in str(st["Error"])
    # Nothing stale blocks the next commands on the same name and rootfs.
    rl("rm", "orphaned", check=True)
    r = rl("run", "--rm", "--name", "orphaned", "--rootfs", rootfs, "echo", "fine")
    assert r.returncode == 0 and r.stdout == "fine\n"


def test_kill_9_of_the_supervisor_of_an_rm_container(rl: RlRunner, rootfs: Path) -> None:
    cid = rl("run", "-d", "--rm", "--rootfs", rootfs, "sleep", "100", check=True).stdout.strip()
    sup = int((runtime_dir() / cid / "sup.pid").read_text())
    os.kill(sup, signal.SIGKILL)
    assert support.wait_until(lambda: not alive(sup))
    # The next rl command finishes what the supervisor could not: the removal.
    assert cid not in containers(rl)


def test_kill_9_of_the_cli_leaves_the_container_running(rl: RlRunner, rl_path: Path,
                                                        rootfs: Path) -> None:
    proc = subprocess.Popen([str(rl_path), "run", "--name", "cli-killed", "--rootfs", rootfs,
                             "sh", "-c", "echo up; sleep 100"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"up\n"
    proc.kill()
    proc.wait()
    try:
        assert state_of(rl, "cli-killed")["Status"] == "running"
        assert rl("exec", "cli-killed", "echo", "still here", check=True).stdout == "still here\n"
    finally:
        rl("rm", "-f", "cli-killed", check=True)
    assert "cli-killed" not in rl("ps", "-a").stdout


def test_kill_9_of_the_fork_server(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "-d", "--name", "survivor", "--rootfs", rootfs, "sleep", "100", check=True)
    try:
        for pid_file in runtime_dir().glob("fork-*.pid"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass  # a server killed earlier in the session left its pid file
        time.sleep(0.1)
        # Running containers do not depend on it, and the next command starts a new one.
        assert state_of(rl, "survivor")["Status"] == "running"
        r = rl("run", "--rm", "--rootfs", rootfs, "echo", "new server")
        assert r.returncode == 0 and r.stdout == "new server\n"
    finally:
        rl("rm", "-f", "survivor")


def test_concurrent_runs_with_one_name(rl: RlRunner, rl_path: Path, rootfs: Path) -> None:
    procs = [subprocess.Popen([str(rl_path), "run", "-d", "--name", "racer", "--rootfs",
                               rootfs, "sleep", "30"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(*p.communicate(timeout=60), p.returncode) for p in procs]
    try:
        assert sorted(r[2] for r in results) == [0, 125, 125, 125]
        assert all("already in use" in r[1] for r in results if r[2] == 125)
        assert rl("ps", "--format", "{{.Names}}", check=True).stdout.split().count("racer") == 1
    finally:
        rl("rm", "-f", "racer")


def test_foreground_signals_reach_the_container(rl_path: Path, rootfs: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        proc = subprocess.Popen(
            [str(rl_path), "run", "--rm", "--init", "--rootfs", rootfs, "sh", "-c",
             "echo ready; sleep 100"], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 128 + sig


def test_user_namespaces_disabled_names_the_sysctl(rl_path: Path, rootfs: Path,
                                                  tmp_path: Path) -> None:
    # Inside a user namespace of our own, user.max_user_namespaces can be set
    # to 0 for everything below it: the kernel then refuses rl's namespace.
    script = (
        "echo 0 > /proc/sys/user/max_user_namespaces && "
        f"XDG_RUNTIME_DIR={tmp_path} {rl_path} run --rm --rootfs {rootfs} true"
    )
    try:
        r = subprocess.run(["unshare", "-Ur", "sh", "-c", script], capture_output=True,
                           text=True, timeout=60)
    finally:
        support.kill_recorded_pids(tmp_path)  # the fork server it started
    assert r.returncode == 125
    assert "user.max_user_namespaces is 0" in r.stderr
    assert r.stderr.count("\n") == 1


def test_rl_as_root_runs_in_a_user_namespace(rl_path: Path, rootfs: Path,
                                            tmp_path: Path) -> None:
    # Root (here: root of a user namespace) is not special: rl still makes a
    # user namespace, with the single-id map since root has no subuid range.
    script = (f"XDG_RUNTIME_DIR={tmp_path} {rl_path} run --rm --rootfs {rootfs} "
              "sh -c 'cat /proc/self/uid_map; readlink /proc/self/ns/user'; "
              "readlink /proc/self/ns/user")
    try:
        r = subprocess.run(["unshare", "-Ur", "sh", "-c", script], capture_output=True,
                           text=True, timeout=60)
    finally:
        support.kill_recorded_pids(tmp_path)  # the fork server it started
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0].split() == ["0", "0", "1"]
    assert lines[1] != lines[2]  # a new user namespace below root's


def test_garbage_on_the_control_socket_does_not_hurt(rl: RlRunner, rootfs: Path) -> None:
    import socket as socketmod

    cid = rl("run", "-d", "--rootfs", rootfs, "sleep", "100", check=True).stdout.strip()
    try:
        path = runtime_dir() / cid / "ctl.sock"
        for payload in (b"not json\n", b'{"op": "attach", "stdin": true}\n' + b"\x03" + b"\xff" * 8,
                        b'{"op": "kill", "signal": "x"}\n', b'{"op": "resize"}\n'):
            with socketmod.socket(socketmod.AF_UNIX) as s:
                s.connect(str(path))
                s.sendall(payload)
                s.settimeout(2)
                try:
                    s.recv(100)
                except (TimeoutError, OSError):
                    pass
        assert state_of(rl, cid)["Status"] == "running"
    finally:
        rl("rm", "-f", cid)


def test_one_fork_server_serves_each_commands_own_data_dir(rl: RlRunner, rl_path: Path,
                                                           rootfs: Path, tmp_path: Path) -> None:
    rl("run", "--rm", "--rootfs", rootfs, "true", check=True)  # a server is up
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "other-data")}

    def other(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(rl_path), *map(str, args)], env=env, capture_output=True,
                              text=True, timeout=60)

    r = other("run", "--name", "elsewhere", "--rootfs", rootfs, "echo", "ok")
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    assert any((tmp_path / "other-data" / "rl" / "containers").iterdir())
    assert "elsewhere" not in rl("ps", "-a", check=True).stdout
    assert other("rm", "elsewhere").returncode == 0


def test_stop_with_a_signal(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "-d", "--init", "--name", "stopsig", "--rootfs", rootfs, "sleep", "100",
       check=True)
    try:
        rl("stop", "-s", "USR1", "stopsig", check=True)
        assert state_of(rl, "stopsig")["ExitCode"] == 128 + signal.SIGUSR1
    finally:
        rl("rm", "-f", "stopsig")


def test_shared_rootfs_keeps_the_mounts_of_a_live_container(rl: RlRunner,
                                                           fresh_rootfs: Path) -> None:
    (fresh_rootfs / "etc" / "hosts").unlink()
    rl("run", "-d", "--name", "sharer1", "--rootfs", fresh_rootfs, "sleep", "100", check=True)
    try:
        rl("run", "--rm", "--rootfs", fresh_rootfs, "true", check=True)
        out = rl("exec", "sharer1", "cat", "/etc/hosts", check=True).stdout
        assert "sharer1" in out
    finally:
        rl("rm", "-f", "sharer1")
    assert not (fresh_rootfs / "etc" / "hosts").exists()


@pytest.mark.parametrize("delay_ms", [0, 5, 15, 30, 60, 120])
def test_kill_9_at_any_moment_of_a_run(rl: RlRunner, rl_path: Path, rootfs: Path,
                                       delay_ms: int) -> None:
    """SIGKILL the CLI, or the supervisor as soon as it shows up, at points through a start.

    Whatever was interrupted, `rl ps -a` tells the truth, nothing stale blocks
    the same name, and no container process is left behind.
    """
    name = f"killed-at-{delay_ms}"
    sleeper = f"sleep {7000 + delay_ms}"  # a command line no other test runs
    proc = subprocess.Popen([str(rl_path), "run", "--name", name, "--rootfs", rootfs,
                             "sh", "-c", sleeper],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay_ms / 1000)
    proc.kill()
    proc.wait()
    # The supervisor (if the request got that far) goes on by itself: give it
    # time to show up, then kill it too.
    time.sleep(0.5)
    for sup_pid in runtime_dir().glob("*/sup.pid"):
        try:
            os.kill(int(sup_pid.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError, OSError):
            pass
    time.sleep(0.2)
    listing = rl("ps", "-a", "--format", "json", check=True).stdout.splitlines()
    rows = [json.loads(line) for line in listing]
    mine = [r for r in rows if r["Names"] == name]
    assert len(mine) <= 1
    if mine:
        # killed before the supervisor started: Created; after: the supervisor died.
        assert mine[0]["State"] in ("created", "exited"), mine[0]
        pid1 = int(str(state_of(rl, name)["Pid"]))
        assert pid1 == 0
        rl("rm", "-f", name, check=True)
    leftovers = subprocess.run(["pgrep", "-u", str(os.getuid()), "-f", sleeper],
                               capture_output=True, text=True).stdout.split()
    assert leftovers == [] or support.wait_until(
        lambda: not any(alive(int(p)) for p in leftovers), timeout=5)
    r = rl("run", "--rm", "--name", name, "--rootfs", rootfs, "echo", "again")
    assert r.returncode == 0 and r.stdout == "again\n", r.stderr
