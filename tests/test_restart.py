"""Restart policies (--restart, rl restart, update --restart, start --all-restartable) and
healthchecks (--health-*, the image's HEALTHCHECK, rl healthcheck run), on real containers."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from imagetools import rootfs_tar

import support
from support import RlRunner, RlState


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


def inspect(rl: RlRunner, name: str) -> dict[str, Any]:
    data = json.loads(rl("inspect", name, check=True).stdout)[0]
    assert isinstance(data, dict)
    return data


def state(rl: RlRunner, name: str) -> dict[str, Any]:
    st = inspect(rl, name)["State"]
    assert isinstance(st, dict)
    return st


def until(cond: Any, timeout: float = 30, what: str = "") -> None:
    assert support.wait_until(cond, timeout=timeout), what or "condition never held"


def ps_row(rl: RlRunner, name: str) -> dict[str, str]:
    out = rl("ps", "-a", "--format", "json", check=True).stdout
    rows = {r["Names"]: r for r in map(json.loads, out.splitlines())}
    return rows[name]


def supervisor_pid(rl_state: RlState, rl: RlRunner, name: str) -> int:
    cid = inspect(rl, name)["Id"]
    lock = rl_state.data_home / "rl" / "containers" / cid / "sup.lock"
    return int(json.loads(lock.read_text())["pid"])


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "message"), [
    (["--restart=bogus"], "Error: invalid restart policy: unknown policy 'bogus'; use one of "
                          "'no', 'always', 'on-failure', or 'unless-stopped'"),
    (["--restart=always", "--rm"],
     "Error: conflicting options: cannot specify both --restart and --rm"),
    (["--restart=always:3"], "Error: invalid restart policy: maximum retry count can only "
                             "be used with 'on-failure'"),
    (["--restart=on-failure:x"], "Error: invalid restart policy format: maximum retry count "
                                 "must be an integer"),
    (["--restart=on-failure:-1"], "Error: invalid restart policy: maximum retry count cannot "
                                  "be negative"),
    (["--restart=:3"], "Error: invalid restart policy format: no policy provided before colon"),
    (["--no-healthcheck", "--health-cmd", "true"],
     "Error: --no-healthcheck conflicts with --health-* options"),
    (["--health-cmd", "true", "--health-interval", "-1s"],
     "Error: --health-interval cannot be negative"),
    (["--health-cmd", "true", "--health-timeout", "soon"],
     'Error: invalid argument "soon" for "--health-timeout" flag: time: invalid duration '
     '"soon"'),
    (["--health-cmd", "true", "--health-retries", "-2"],
     "Error: --health-retries cannot be negative"),
    (["--health-cmd", "true", "--health-on-failure", "explode"],
     'Error: invalid on-failure action "explode" for health check: supported actions are: '
     "none, kill, restart, stop"),
])
def test_bad_flags_are_refused_with_dockers_message(rl: RlRunner, rootfs: Path,
                                                    flags: list[str], message: str) -> None:
    before = rl("ps", "-aq", check=True).stdout
    for cmd in ("run", "create"):
        r = rl(cmd, *flags, "--rootfs", rootfs, "true")
        assert r.returncode == 125, r.stderr
        assert r.stderr.splitlines() == [message]
    assert rl("ps", "-aq", check=True).stdout == before  # nothing half-made


# -- restart policies ---------------------------------------------------------------------


def test_on_failure_restarts_a_fresh_process_n_times(rl: RlRunner, rootfs: Path,
                                                     tmp_path: Path) -> None:
    # Each run is a new PID 1 in new namespaces over the same root and mounts: a
    # file in the bind mount counts the runs, /tmp (a tmpfs) starts empty each time.
    work = tmp_path / "w"
    work.mkdir()
    script = ("echo run >> /w/runs; echo pid=$$ tmp=$(ls /tmp | wc -l); "
              "touch /tmp/leftover; exit 3")
    rl("run", "-d", "--name", "onfail", "--restart=on-failure:2", "-v", f"{work}:/w",
       "--tmpfs", "/tmp", "--rootfs", rootfs, "sh", "-c", script, check=True)
    r = rl("wait", "onfail", timeout=60)
    assert r.stdout.strip() == "3"
    info = inspect(rl, "onfail")
    assert info["RestartCount"] == 2
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert info["State"]["Status"] == "exited" and info["State"]["Restarting"] is False
    assert info["State"]["ExitCode"] == 3
    assert (work / "runs").read_text() == "run\n" * 3
    logs = rl("logs", "onfail", check=True).stdout
    assert logs.count("pid=1 tmp=0") == 3, logs
    rl("rm", "onfail", check=True)


def test_always_restarts_with_backoff_until_stopped(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "-d", "--name", "alw", "--restart=always", "--rootfs", rootfs,
       "sh", "-c", "echo up; exit 1", check=True)
    # The delay doubles (100 ms, 200, 400, 800...): it is seen between two runs.
    until(lambda: ps_row(rl, "alw")["Status"].startswith("Restarting (1) "), 60,
          "never seen restarting")
    row = ps_row(rl, "alw")
    st = inspect(rl, "alw")
    assert st["RestartCount"] >= 1
    assert row["State"] in ("restarting", "running")
    # Shown by ps without -a, as docker shows a restarting container.
    assert "alw" in rl("ps", "--format", "{{.Names}}", check=True).stdout.split()
    assert rl("stop", "alw", check=True).stdout.strip() == "alw"
    after = state(rl, "alw")
    assert after["Status"] == "exited" and after["Restarting"] is False
    count = inspect(rl, "alw")["RestartCount"]
    time.sleep(0.5)  # what would have been the next restart's delay, and more
    assert state(rl, "alw")["Status"] == "exited"
    assert inspect(rl, "alw")["RestartCount"] == count
    assert ps_row(rl, "alw")["Status"].startswith("Exited (1) ")
    rl("rm", "alw", check=True)


def test_kill_ends_an_always_container(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "-d", "--name", "alwkill", "--restart=always", "--rootfs", rootfs,
       "sleep", "1000", check=True)
    assert rl("kill", "alwkill", check=True).stdout.strip() == "alwkill"
    until(lambda: state(rl, "alwkill")["Status"] == "exited")
    time.sleep(0.3)
    st = state(rl, "alwkill")
    assert st["Status"] == "exited" and st["ExitCode"] == 137
    assert inspect(rl, "alwkill")["RestartCount"] == 0
    rl("rm", "alwkill", check=True)


def test_exit_by_itself_restarts_and_ports_survive(rl: RlRunner, rootfs: Path,
                                                   tmp_path: Path, rl_state: RlState) -> None:
    """PID 1 exiting on its own (not rl stop/kill) restarts; the published port stays
    bound across the restart and reaches the new PID 1's network namespace."""
    support.require_slirp4netns()
    work = tmp_path / "w"
    work.mkdir()
    script = ("n=$(cat /w/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /w/n; "
              "while [ ! -e /w/go ]; do sleep 0.05; done; rm /w/go; exit 0")
    rl("run", "-d", "--name", "self", "--restart=always", "--network=slirp4netns",
       "-p", "127.0.0.1::80", "-v", f"{work}:/w", "--rootfs", rootfs,
       "sh", "-c", script, check=True)
    until(lambda: (work / "n").exists())
    port_before = rl("port", "self", "80", check=True).stdout
    pid_before = state(rl, "self")["Pid"]
    (work / "go").touch()
    until(lambda: (work / "n").read_text().strip() == "2")
    until(lambda: state(rl, "self")["Running"] and not state(rl, "self")["Restarting"])
    st = state(rl, "self")
    assert st["Pid"] not in (0, pid_before)
    assert inspect(rl, "self")["RestartCount"] == 1
    assert rl("port", "self", "80", check=True).stdout == port_before
    # The new network namespace has its slirp4netns again.
    out = rl("exec", "self", "ip", "addr", check=True).stdout
    assert "tap0" in out
    # Each run's descriptors go with it: two more restarts, no more fds in the supervisor.
    sup = supervisor_pid(rl_state, rl, "self")
    fds = len(os.listdir(f"/proc/{sup}/fd"))
    for n in ("3", "4"):
        (work / "go").touch()
        until(lambda n=n: (work / "n").read_text().strip() == n)  # type: ignore[misc]
        until(lambda: state(rl, "self")["Running"] and not state(rl, "self")["Restarting"])
    assert supervisor_pid(rl_state, rl, "self") == sup
    assert len(os.listdir(f"/proc/{sup}/fd")) <= fds + 1
    assert rl("port", "self", "80", check=True).stdout == port_before
    rl("rm", "-f", "self", check=True)


def test_update_restart_and_rl_restart(rl: RlRunner, rootfs: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    script = ("echo start >> /w/starts; while [ ! -e /w/go ]; do sleep 0.05; done; "
              "rm /w/go; exit 0")
    rl("run", "-d", "--name", "upd", "-v", f"{work}:/w", "--rootfs", rootfs,
       "sh", "-c", script, check=True)
    assert inspect(rl, "upd")["HostConfig"]["RestartPolicy"]["Name"] == "no"
    r = rl("update", "--restart", "bogus", "upd")
    assert r.returncode == 1 and "unknown policy 'bogus'" in r.stderr
    assert rl("update", "--restart", "unless-stopped", "upd", check=True).stdout == "upd\n"
    assert inspect(rl, "upd")["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    until(lambda: (work / "starts").exists())
    (work / "go").touch()  # exits 0: unless-stopped starts it again
    until(lambda: (work / "starts").read_text() == "start\n" * 2)
    until(lambda: inspect(rl, "upd")["RestartCount"] == 1)
    pid = state(rl, "upd")["Pid"]
    assert rl("restart", "-t", "1", "upd", check=True).stdout == "upd\n"
    st = state(rl, "upd")
    assert st["Running"] and st["Pid"] != pid
    until(lambda: (work / "starts").read_text() == "start\n" * 3)
    assert inspect(rl, "upd")["RestartCount"] == 0  # a manual start resets it, as docker's
    rl("stop", "-t", "0", "upd", check=True)
    assert rl("restart", "upd", check=True).stdout == "upd\n"  # a stopped one is started
    assert state(rl, "upd")["Running"]
    r = rl("restart", "nosuchctr")
    assert r.returncode == 1 and "no such container" in r.stderr.lower()
    rl("rm", "-f", "upd", check=True)


def test_supervisor_killed_restarts_nothing_and_start_all_restartable(
        rl: RlRunner, rootfs: Path, rl_state: RlState) -> None:
    names = {"ra": "always", "rb": "unless-stopped", "rc": "unless-stopped", "rd": "no",
             "re": "on-failure"}
    for name, policy in names.items():
        rl("run", "-d", "--name", name, f"--restart={policy}", "--rootfs", rootfs,
           "sleep", "1000", check=True)
    rl("create", "--name", "rf", "--restart=always", "--rootfs", rootfs, "true", check=True)
    rl("stop", "-t", "0", "ra", "rb", check=True)
    # rc, rd, re: as after a reboot (or a crash of the supervisor): nothing restarts them.
    for name in ("rc", "rd", "re"):
        os.kill(supervisor_pid(rl_state, rl, name), signal.SIGKILL)
    for name in ("rc", "rd", "re"):
        until(lambda n=name: state(rl, n)["Status"] == "exited")  # type: ignore[misc]
        st = state(rl, name)
        assert st["ExitCode"] == 255 and st["Restarting"] is False
        assert ps_row(rl, name)["Status"].startswith("Exited (255) ")
    r = rl("start", "--all-restartable", check=True)
    # always (even stopped by the user) and unless-stopped not stopped by the user,
    # as dockerd at its start; never a created one, nor no / on-failure.
    assert sorted(r.stdout.split()) == ["ra", "rc"]
    for name in names:
        assert state(rl, name)["Running"] == (name in ("ra", "rc")), name
    assert state(rl, "rf")["Status"] == "created"
    assert rl("start", "--all-restartable", check=True).stdout == ""  # nothing left
    r = rl("start", "--all-restartable", "ra")
    assert r.returncode == 125 and r.stderr.startswith("Error: ")
    rl("rm", "-f", *names, "rf", check=True)


# -- healthchecks -------------------------------------------------------------------------


def health(rl: RlRunner, name: str) -> dict[str, Any]:
    h = state(rl, name).get("Health")
    assert isinstance(h, dict), state(rl, name)
    return h


def test_healthcheck_states_log_and_ps(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "-d", "--name", "hc", "-u", "1234", "--tmpfs", "/tmp",
       "--health-cmd", "id -u > /tmp/hc-uid; echo probing; test -e /tmp/ok",
       "--health-interval", "100ms", "--health-retries", "2", "--rootfs", rootfs,
       "sleep", "1000", check=True)
    info = inspect(rl, "hc")
    assert info["Config"]["Healthcheck"] == {
        "Test": ["CMD-SHELL", "id -u > /tmp/hc-uid; echo probing; test -e /tmp/ok"],
        "Interval": 100_000_000, "Retries": 2}
    until(lambda: health(rl, "hc")["Status"] == "unhealthy")
    h = health(rl, "hc")
    assert h["FailingStreak"] >= 2
    entry = h["Log"][-1]
    assert entry["ExitCode"] == 1 and entry["Output"] == "probing\n"
    assert set(entry) == {"Start", "End", "ExitCode", "Output"}
    assert ps_row(rl, "hc")["Status"].endswith(" (unhealthy)")
    # In the container's namespaces, as its user.
    assert rl("exec", "hc", "cat", "/tmp/hc-uid", check=True).stdout == "1234\n"
    until(lambda: len(health(rl, "hc")["Log"]) == 5)
    time.sleep(0.3)
    assert len(health(rl, "hc")["Log"]) == 5  # the last five only
    r = rl("healthcheck", "run", "hc")
    assert (r.returncode, r.stdout) == (1, "unhealthy\n")
    rl("exec", "hc", "touch", "/tmp/ok", check=True)
    until(lambda: health(rl, "hc")["Status"] == "healthy")
    assert health(rl, "hc")["FailingStreak"] == 0
    assert ps_row(rl, "hc")["Status"].endswith(" (healthy)")
    r = rl("healthcheck", "run", "hc")
    assert (r.returncode, r.stdout) == (0, "")
    rl("rm", "-f", "hc", check=True)


def test_hanging_healthcheck_is_killed_at_its_timeout(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "-d", "--name", "hang", "--health-cmd", "exec sleep 777",
       "--health-timeout", "200ms", "--health-interval", "100ms", "--rootfs", rootfs,
       "sleep", "1000", check=True)
    until(lambda: bool(health(rl, "hang")["Log"]))
    entry = health(rl, "hang")["Log"][0]
    assert entry["ExitCode"] == -1
    assert entry["Output"] == "Health check exceeded timeout (200ms)"
    # No probe is left behind in the container: at most the one running now.
    ps = rl("exec", "hang", "ps", "-o", "args", check=True).stdout
    assert ps.count("sleep 777") <= 1, ps
    rl("rm", "-f", "hang", check=True)


def test_health_on_failure_stop_and_no_healthcheck(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "-d", "--name", "hcstop", "--restart=always", "--health-cmd", "false",
       "--health-interval", "100ms", "--health-retries", "1", "--health-on-failure", "stop",
       "--stop-timeout", "1",
       "--rootfs", rootfs, "sleep", "1000", check=True)
    until(lambda: state(rl, "hcstop")["Status"] == "exited")
    # stopped as `rl stop` does: its policy (always) does not bring it back
    time.sleep(0.3)
    assert state(rl, "hcstop")["Status"] == "exited"
    assert inspect(rl, "hcstop")["RestartCount"] == 0
    rl("run", "-d", "--name", "later", "--health-cmd", "true", "--health-interval", "1h",
       "--rootfs", rootfs, "sleep", "1000", check=True)
    assert health(rl, "later") == {"Status": "starting", "FailingStreak": 0, "Log": []}
    assert ps_row(rl, "later")["Status"].endswith(" (health: starting)")
    assert rl("container", "restart", "-t", "0", "later", check=True).stdout == "later\n"
    assert health(rl, "later")["Status"] == "starting"
    rl("run", "-d", "--name", "nohc", "--rootfs", rootfs, "sleep", "1000", check=True)
    assert "Health" not in state(rl, "nohc")
    r = rl("healthcheck", "run", "nohc")
    assert r.returncode == 125 and "has no defined healthcheck" in r.stderr
    assert ps_row(rl, "nohc")["Status"].startswith("Up ")
    rl("rm", "-f", "hcstop", "nohc", "later", check=True)


def test_health_on_failure_restart(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "-d", "--name", "hcre", "--health-cmd", "false", "--health-interval", "100ms",
       "--health-retries", "1", "--health-on-failure", "restart", "--rootfs", rootfs,
       "sleep", "1000", check=True)
    until(lambda: inspect(rl, "hcre")["RestartCount"] >= 1)
    until(lambda: state(rl, "hcre")["Running"] and not state(rl, "hcre")["Restarting"])
    rl("rm", "-f", "hcre", check=True)


def test_image_healthcheck_is_used_and_overridden(rl: RlRunner, rootfs: Path,
                                                  tmp_path: Path) -> None:
    support.require_newidmap()
    support.require_busybox()
    tgz = rootfs_tar(rootfs, tmp_path / "bb.tar.gz")
    rl("import", "-c", 'CMD ["sleep", "1000"]', tgz, "hcbase", check=True)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM hcbase\nHEALTHCHECK --interval=100ms --retries=1 CMD echo from-image\n")
    rl("build", "-q", "-t", "hcimg", ctx, check=True, timeout=120)
    rl("run", "-d", "--name", "img1", "hcimg", check=True)
    until(lambda: health(rl, "img1")["Status"] == "healthy")
    assert health(rl, "img1")["Log"][-1]["Output"] == "from-image\n"
    # A flag overrides its own field only; --no-healthcheck disables the image's.
    rl("run", "-d", "--name", "img2", "--health-retries", "4", "hcimg", check=True)
    hc = inspect(rl, "img2")["Config"]["Healthcheck"]
    assert hc["Test"] == ["CMD-SHELL", "echo from-image"] and hc["Retries"] == 4
    rl("run", "-d", "--name", "img3", "--no-healthcheck", "hcimg", check=True)
    assert "Health" not in state(rl, "img3")
    assert inspect(rl, "img3")["Config"]["Healthcheck"] == {"Test": ["NONE"]}
    rl("rm", "-f", "img1", "img2", "img3", check=True)


@pytest.mark.parametrize("driver", ["fuse", "vfs"])
def test_restart_keeps_the_image_root(rl: RlRunner, rootfs: Path, tmp_path: Path,
                                      driver: str) -> None:
    """A restart mounts the container's root again with its driver (the fuse driver's
    server is a trio program forked from the restart); what a run wrote is there."""
    support.require_newidmap()
    if driver == "fuse":
        support.require_fuse()
    tgz = rootfs_tar(rootfs, tmp_path / "bb.tar.gz")
    image = f"rsbase-{driver}"
    rl("import", tgz, image, check=True)
    name = f"rs-{driver}"
    rl("run", "-d", "--name", name, "--storage-driver", driver, "--restart=on-failure:2",
       image, "sh", "-c", "echo seen=$(cat /count 2>/dev/null | wc -l); echo x >> /count; "
       "exit 1", check=True)
    assert rl("wait", name, timeout=60).stdout.strip() == "1"
    assert inspect(rl, name)["RestartCount"] == 2
    logs = rl("logs", name, check=True).stdout
    assert logs.splitlines()[-3:] == ["seen=0", "seen=1", "seen=2"], logs
    rl("rm", name, check=True)
