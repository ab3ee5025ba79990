"""`rl events`: the per-user event log, written where things happen, read as docker's."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

import support
from support import RlRunner, RlState


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


def _log(rl_state: RlState) -> Path:
    return Path(rl_state.env()["XDG_DATA_HOME"]) / "rl" / "events" / "events.log"


def _events(rl: RlRunner, *args: str) -> list[dict[str, object]]:
    out = rl("events", "--since", "10m", "--until", "0s", "--format", "json", *args,
             check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def _of(evs: list[dict[str, object]], cid: str) -> list[str]:
    return [str(e["Action"]) for e in evs
            if isinstance(e["Actor"], dict) and e["Actor"]["ID"] == cid]


def test_a_containers_life_in_docker_order_and_shape(rl: RlRunner, rootfs: Path) -> None:
    cid = rl("run", "-d", "--name", "evlife", "--label", "team=blue", "--rootfs", str(rootfs),
             "sleep", "30", check=True).stdout.strip()
    rl("rename", "evlife", "evlife2", check=True)
    rl("kill", "evlife2", check=True)
    rl("wait", "evlife2", check=True)
    rl("rm", "evlife2", check=True)
    evs = _events(rl)
    assert _of(evs, cid) == ["create", "start", "rename", "kill", "die", "destroy"]
    die = next(e for e in evs if e["Action"] == "die" and e["Actor"]["ID"] == cid)  # type: ignore[index]
    assert die["Type"] == "container" and die["scope"] == "local"
    assert die["Actor"]["Attributes"] == {  # type: ignore[index]
        "exitCode": str(128 + signal.SIGKILL), "image": str(rootfs), "name": "evlife2",
        "team": "blue"}
    assert die["status"] == "die" and die["id"] == cid
    assert die["time"] == die["timeNano"] // 1_000_000_000  # type: ignore[operator]
    kill = next(e for e in evs if e["Action"] == "kill" and e["Actor"]["ID"] == cid)  # type: ignore[index]
    assert kill["Actor"]["Attributes"]["signal"] == str(int(signal.SIGKILL))  # type: ignore[index]
    rename = next(e for e in evs if e["Action"] == "rename" and e["Actor"]["ID"] == cid)  # type: ignore[index]
    assert rename["Actor"]["Attributes"]["oldName"] == "/evlife"  # type: ignore[index]


def test_stop_and_rm_of_a_run_rm_container(rl: RlRunner, rootfs: Path) -> None:
    cid = rl("run", "-d", "--name", "evstop", "--rootfs", str(rootfs), "sh", "-c",
             "trap 'exit 7' TERM; while :; do sleep 0.1; done", check=True).stdout.strip()
    rl("stop", "evstop", check=True)
    rl("rm", "evstop", check=True)
    rm = rl("run", "--rm", "--name", "evrm", "--rootfs", str(rootfs), "sh", "-c", "exit 4")
    assert rm.returncode == 4
    evs = _events(rl)
    assert _of(evs, cid) == ["create", "start", "kill", "die", "stop", "destroy"]
    die = [e for e in evs if e["Action"] == "die" and e["Actor"]["Attributes"]["name"] == "evrm"]  # type: ignore[index]
    assert die and die[0]["Actor"]["Attributes"]["exitCode"] == "4"  # type: ignore[index]
    rm_id = die[0]["Actor"]["ID"]  # type: ignore[index]
    assert _of(evs, str(rm_id)) == ["create", "start", "die", "destroy"]


def test_filters_text_line_and_template(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "--name", "evfa", "--label", "k=v", "--rootfs", str(rootfs), "true", check=True)
    rl("run", "--name", "evfb", "--rootfs", str(rootfs), "sh", "-c", "exit 2")
    try:
        out = rl("events", "--since", "10m", "--until", "0s", "--filter", "event=die",
                 "--filter", "container=evfb", check=True).stdout.splitlines()
        assert len(out) == 1
        assert out[0].endswith("(exitCode=2, image=" + str(rootfs) + ", name=evfb)")
        assert " container die " in out[0]
        stamp = out[0].split(" ")[0]
        assert stamp[19] == "." and len(stamp.split(".")[1].rstrip("Z").split("+")[0]) == 9
        labelled = rl("events", "--since", "10m", "--until", "0s", "--filter", "label=k=v",
                      "--filter", "event=create", "--format",
                      "{{.Type}}/{{.Action}}/{{.Actor.Attributes.name}}", check=True)
        assert labelled.stdout == "container/create/evfa\n"
        either = _events(rl, "--filter", "container=evfa", "--filter", "container=evfb",
                         "--filter", "event=start")
        assert sorted(e["Actor"]["Attributes"]["name"] for e in either) == ["evfa", "evfb"]  # type: ignore[index]
        assert _events(rl, "--filter", "type=image", "--filter", "container=evfa") == []
    finally:
        rl("rm", "evfa", "evfb")


def test_exec_events(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "-d", "--name", "evexec", "--rootfs", str(rootfs), "sleep", "30", check=True)
    try:
        rl("exec", "evexec", "echo", "hi", check=True)
        evs = _events(rl, "--filter", "container=evexec", "--filter", "event=exec_start",
                      "--filter", "event=exec_create")
        assert [e["Action"] for e in evs] == ["exec_create: echo hi", "exec_start: echo hi"]
        ids = {e["Actor"]["Attributes"]["execID"] for e in evs}  # type: ignore[index]
        assert len(ids) == 1 and len(ids.pop()) == 64
    finally:
        rl("rm", "-f", "evexec")


def test_follow_streams_new_events_live(rl_path: Path, rl_state: RlState, rl: RlRunner,
                                        rootfs: Path) -> None:
    env = {**os.environ, **rl_state.env()}
    since = f"{time.time():.6f}"  # from before the run, whenever the follower starts
    follower = subprocess.Popen([str(rl_path), "events", "--since", since,
                                 "--filter", "container=evlive",
                                 "--format", "{{.Action}}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert follower.stdout is not None
        rl("run", "--name", "evlive", "--rootfs", str(rootfs), "true", check=True)
        seen = [follower.stdout.readline().strip() for _ in range(3)]
        assert seen == ["create", "start", "die"]
        rl("rm", "evlive", check=True)
        assert follower.stdout.readline().strip() == "destroy"
        assert follower.poll() is None  # still following
    finally:
        follower.kill()
        follower.wait()
        rl("rm", "-f", "evlive")


def test_an_until_in_the_future_follows_until_then(rl: RlRunner, rootfs: Path) -> None:
    proc = rl("events", "--since", "0s", "--until", "-1s", "--filter", "type=volume",
              timeout=30)
    assert proc.returncode == 0 and proc.stderr == ""


def test_a_future_since_streams_live_events_as_docker(rl_path: Path, rl_state: RlState,
                                                      rl: RlRunner, rootfs: Path) -> None:
    # docker applies --since to its buffered past, not to what happens next.
    env = {**os.environ, **rl_state.env()}
    future = str(int(time.time()) + 3600)
    follower = subprocess.Popen([str(rl_path), "events", "--since", future, "--filter",
                                 "container=evfuture", "--format", "{{.Action}}"],
                                stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert follower.stdout is not None
        # The follower starts at the log's end whenever it is ready: run until it sees one.
        for _ in range(20):
            rl("run", "--rm", "--name", "evfuture", "--rootfs", str(rootfs), "true", check=True)
            if select.select([follower.stdout], [], [], 2)[0]:
                break
        assert follower.stdout.readline().strip() in ("create", "start", "die", "destroy")
    finally:
        follower.kill()
        follower.wait()


def test_bad_input_is_one_error_line(rl: RlRunner) -> None:
    for args, needle in [
        (["--since", "yesterday-ish"], 'failed to parse time "yesterday-ish"'),
        (["--since", "1m", "--until", "1h"], "cannot be after `until` time"),
        (["--filter", "colour=red"], "invalid filter 'colour'"),
        (["--filter", "type=box"], "invalid filter 'type=box'"),
        (["--filter", "novalue"], "bad format of filter"),
        (["--format", "{{.Action"], "template parsing error"),
    ]:
        proc = rl("events", "--until", "0s", *args)
        assert proc.returncode == 125, (args, proc.stderr)
        assert proc.stderr.startswith("Error: ") and needle in proc.stderr, proc.stderr
        assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    typo = rl("events", "--sinse", "1h")  # the quick path leaves it to click
    assert typo.returncode == 125
    assert "No such option" in typo.stderr and "--sinse" in typo.stderr


def test_system_events_is_events(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "--rm", "--name", "evsys", "--rootfs", str(rootfs), "true", check=True)
    out = rl("system", "events", "--since", "10m", "--until", "0s", "--filter",
             "container=evsys", "--format", "{{.Action}}", check=True).stdout
    assert out.split() == ["create", "start", "die", "destroy"]


def test_a_damaged_line_is_skipped_with_one_warning(rl: RlRunner, rl_state: RlState,
                                                    rootfs: Path) -> None:
    rl("run", "--rm", "--name", "evdmg1", "--rootfs", str(rootfs), "true", check=True)
    log = _log(rl_state)
    with open(log, "ab") as f:
        f.write(b'{"Type": "container", "truncated\n[1, 2]\n\xff\xfe garbage\n')
    rl("run", "--rm", "--name", "evdmg2", "--rootfs", str(rootfs), "true", check=True)
    # container events only: the module shares its log with every test of the session
    proc = rl("events", "--since", "10m", "--until", "0s", "--filter", "type=container",
              "--format", "{{.Actor.Attributes.name}}")
    assert proc.returncode == 0
    names = proc.stdout.splitlines()
    assert "evdmg1" in names and "evdmg2" in names
    assert proc.stderr.count("WARNING") == 1 and "3 damaged line" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_log_rotates_at_its_bound_and_both_generations_are_read(
        rl: RlRunner, rl_state: RlState, rootfs: Path) -> None:
    from rootless.engine import events

    log = _log(rl_state)
    old = log.with_name(events.OLD)
    # Fill the log to its bound with genuine, old events (as a long life would).
    line = json.dumps({"Type": "volume", "Action": "create", "Actor": {
        "ID": "filler", "Attributes": {}}, "scope": "local", "time": 1,
        "timeNano": 1_000_000_000}) + "\n"
    with open(log, "a") as f:
        f.write(line * (events.MAX_BYTES // len(line) + 1))
    rl("run", "--rm", "--name", "evrot", "--rootfs", str(rootfs), "true", check=True)
    assert old.exists() and log.stat().st_size < events.MAX_BYTES
    names = rl("events", "--since", "10m", "--until", "0s", "--filter", "container=evrot",
               "--format", "{{.Action}}", check=True).stdout.split()
    assert names == ["create", "start", "die", "destroy"]
    assert rl("events", "--since", "0", "--until", "2", "--filter", "type=volume",
              check=True).stdout.count("volume create filler") > 1000


def test_volume_and_image_events(rl: RlRunner, rootfs: Path, tmp_path: Path) -> None:
    rl("volume", "create", "evvol", check=True)
    rl("volume", "rm", "evvol", check=True)
    tar = tmp_path / "root.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    image_id = rl("import", str(tar), "evimg:1", check=True).stdout.strip()
    rl("tag", "evimg:1", "evimg:2", check=True)
    rl("rmi", "evimg:1", "evimg:2", check=True)
    vols = _events(rl, "--filter", "volume=evvol")
    assert [e["Action"] for e in vols] == ["create", "destroy"]
    imgs = _events(rl, "--filter", "type=image")
    acts = [(e["Action"], e["Actor"]["ID"]) for e in imgs][-5:]  # type: ignore[index]
    assert acts[0] == ("import", image_id)
    assert acts[1] == ("tag", "evimg:1")
    assert [a for a, _ in acts[2:]][:2] == ["untag", "untag"] and acts[-1][0] == "delete"


def test_restarts_and_health_changes_are_events(rl: RlRunner, rootfs: Path) -> None:
    """docker's die/start pair per restart, and health_status on each change."""
    cid = rl("run", "-d", "--restart", "on-failure:2", "--rootfs", str(rootfs), "sh", "-c",
             "exit 3", check=True).stdout.strip()
    try:
        assert rl("wait", cid, check=True, timeout=120).stdout.strip() == "3"
        acts = [a for a in _of(_events(rl, "--filter", f"container={cid}"), cid)
                if a in ("start", "die")]
        assert acts == ["start", "die"] * 3, acts
    finally:
        rl("rm", "-f", cid)
    cid = rl("run", "-d", "--health-cmd", "true", "--health-interval", "1s", "--rootfs",
             str(rootfs), "sleep", "100", check=True).stdout.strip()
    try:
        deadline = time.monotonic() + 60
        while "health_status: healthy" not in _of(_events(rl), cid):
            assert time.monotonic() < deadline, _of(_events(rl), cid)
            time.sleep(0.5)
    finally:
        rl("rm", "-f", cid)
