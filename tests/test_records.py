"""Container records: damaged ones never block rl, rl finds what runs for any of
them, concurrent commands never trip over each other's records, and liveness
does not depend on the caller's XDG_RUNTIME_DIR."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import support
from rootless.engine import store
from rootless.runtime.spec import Spec
from support import RlRunner, RlState


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def in_pidns(ns: str) -> list[int]:
    """The processes (of this user: the others' are not readable) in PID namespace ns."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                    out.append(int(entry))
            except OSError:
                continue
    return out


def record_dir(rl_state: RlState, cid: str) -> Path:
    return rl_state.data_home / "rl" / "containers" / cid


def run_dir(rl_state: RlState, cid: str) -> Path:
    return rl_state.runtime_dir / "rl" / cid


def ps_rows(rl: RlRunner, *flags: str, env: dict[str, str] | None = None
            ) -> dict[str, dict[str, str]]:
    r = rl("ps", "--no-trunc", "--format", "json", *flags) if env is None else \
        _run_env(rl, env, "ps", "--no-trunc", "--format", "json", *flags)
    assert r.returncode == 0 and not r.stderr, r.stderr
    return {row["ID"]: row for row in map(json.loads, r.stdout.splitlines())}


def _run_env(rl: RlRunner, env: dict[str, str], *args: str
             ) -> subprocess.CompletedProcess[str]:
    rl_path = rl("--version").args[0]
    return subprocess.run([rl_path, *args], env=env, capture_output=True, text=True, timeout=60)


def one_error_line(r: subprocess.CompletedProcess[str]) -> None:
    """Success, or exactly one `Error:` line and docker's status for a management command."""
    assert "Traceback" not in r.stderr, r.stderr
    if r.returncode != 0:
        assert r.returncode == 1, (r.args, r.returncode, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (r.args, r.stderr)


def damage(path: Path, how: str, cid: str) -> None:
    """Do `how` to a record's file, replacing it (a supervisor keeps what it holds open)."""
    if how == "unreadable":
        if not path.exists() or path.is_socket():
            path.unlink(missing_ok=True)
            path.write_text("{}")
        path.chmod(0)
        return
    data = path.read_bytes() if path.is_file() else b""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    if how == "missing":
        return
    if how == "directory":
        path.mkdir()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "wrong-shape":
        # Valid JSON, of the wrong types (a config keeps its head: id, name).
        shapes = {
            "config.json": {"id": cid, "name": "x", "created": "yesterday", "spec": [1]},
            "state.json": {"status": "running", "pid": "one", "exit_code": None},
        }
        path.write_text(json.dumps(shapes.get(path.name, [1, "two", {"three": 3}])))
    else:
        raise AssertionError(how)


FILES = ["config.json", "state.json", "ctr.log", "sup.lock", "ctl.sock"]
DAMAGES = ["missing", "empty", "truncated", "wrong-shape", "directory", "unreadable"]


def _dead(file: str, how: str) -> bool:
    """Whether rl must call a record so damaged Dead (it cannot read it any more)."""
    return file in ("config.json", "state.json") or (
        file == "sup.lock" and how in ("directory", "unreadable"))


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("file", FILES)
def test_a_damaged_record(rl: RlRunner, rl_state: RlState, rootfs: Path, file: str,
                          how: str) -> None:
    """Damage one file of a running and of a stopped record: rl ps -a lists both,
    other containers work, every command on them succeeds or says why in one
    line, plain rm refuses the running one, and rm -f removes both and stops
    every process of the running one."""
    tag = f"{FILES.index(file)}{DAMAGES.index(how)}"
    sleeper = f"sleep 97{tag}"  # a command line no other test runs
    running = rl("run", "-d", "--name", f"rec-run-{tag}", "--network", "none", "--rootfs",
                 rootfs, "sh", "-c", f"echo up; exec {sleeper}", check=True).stdout.strip()
    stopped_id = rl("create", "--name", f"rec-stop-{tag}", "--network", "none", "--rootfs",
                    rootfs, "echo", "done", check=True).stdout.strip()
    assert rl("start", "-a", stopped_id, check=True).stdout == "done\n"
    pid1 = int(json.loads(rl("inspect", running, check=True).stdout)[0]["State"]["Pid"])
    sup = int((run_dir(rl_state, running) / "sup.pid").read_text())
    pidns = os.readlink(f"/proc/{pid1}/ns/pid")
    assert alive(pid1) and alive(sup)
    for cid in (running, stopped_id):
        target = (run_dir(rl_state, cid) if file == "ctl.sock" else record_dir(rl_state, cid))
        if target.is_dir():  # a stopped container has no runtime directory
            damage(target / file, how, cid)
    try:
        rows = ps_rows(rl, "-a")
        for cid in (running, stopped_id):
            assert cid in rows, (cid, rows)
            assert (rows[cid]["State"] == "dead") == _dead(file, how), rows[cid]
        if not _dead(file, how):
            assert rows[running]["State"] == "running"
        # Something still runs for it: plain rl ps shows it too.
        assert running in ps_rows(rl)
        # The others are not in the way.
        r = rl("run", "--rm", "--network", "none", "--rootfs", rootfs, "echo", "fine")
        assert r.returncode == 0 and r.stdout == "fine\n", r.stderr
        other = rl("create", "--network", "none", "--rootfs", rootfs, "true", check=True)
        rl("rm", other.stdout.strip(), check=True)
        for cid in (running, stopped_id):
            for args in (["inspect", cid], ["logs", cid], ["kill", "-s", "WINCH", cid],
                         ["top", cid], ["port", cid], ["start", cid],
                         ["rename", cid, f"renamed-{tag}"]):
                one_error_line(rl(*args))
        one_error_line(rl("wait", stopped_id))
        one_error_line(rl("stop", stopped_id))
        r = rl("rm", running)
        one_error_line(r)
        assert r.returncode == 1 and "running" in r.stderr
        assert alive(sup) and alive(pid1)
    finally:
        r = rl("rm", "-f", running, stopped_id)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [running, stopped_id]
    rows = ps_rows(rl, "-a")
    assert running not in rows and stopped_id not in rows
    assert support.wait_until(lambda: not alive(sup) and not alive(pid1))
    assert support.wait_until(lambda: not in_pidns(pidns))
    for cid in (running, stopped_id):
        assert not record_dir(rl_state, cid).exists()
        assert not run_dir(rl_state, cid).exists()


@pytest.mark.parametrize(("file", "how"), [("config.json", "missing"),
                                         ("state.json", "truncated")])
def test_stop_a_damaged_running_record(rl: RlRunner, rl_state: RlState, rootfs: Path,
                                       file: str, how: str) -> None:
    """rl stop reaches the supervisor of a record it cannot read; a state.json the
    supervisor rewrites at the exit is whole again."""
    cid = rl("run", "-d", "--network", "none", "--rootfs", rootfs, "sleep", "300",
             check=True).stdout.strip()
    sup = int((run_dir(rl_state, cid) / "sup.pid").read_text())
    damage(record_dir(rl_state, cid) / file, how, cid)
    try:
        assert ps_rows(rl)[cid]["State"] == "dead"
        r = rl("stop", "-t", "1", cid)
        assert r.returncode == 0 and r.stdout == f"{cid}\n", r.stderr
        assert support.wait_until(lambda: not alive(sup))
        row = ps_rows(rl, "-a")[cid]
        if file == "state.json":
            assert row["State"] == "exited" and row["Status"].startswith("Exited (137)"), row
        else:
            assert row["State"] == "dead"
            assert cid not in ps_rows(rl)  # nothing runs for it any more
    finally:
        rl("rm", "-f", cid, check=True)


@pytest.mark.parametrize("state", ["valid", "damaged"])
def test_rm_f_never_kills_a_process_a_record_names(rl: RlRunner, rl_state: RlState,
                                                  rootfs: Path, state: str) -> None:
    """A pid a record names may be anyone's by now: only a holder of its lock is killed."""
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        cid = rl("create", "--network", "none", "--rootfs", rootfs, "true",
                 check=True).stdout.strip()
        rec = record_dir(rl_state, cid)
        (rec / "sup.lock").write_text(json.dumps({"pid": bystander.pid, "run_dir": "/"}))
        st = {"status": "running", "pid": bystander.pid, "supervisor_pid": bystander.pid}
        (rec / "state.json").write_text(json.dumps(st)[: 20 if state == "damaged" else None])
        row = ps_rows(rl, "-a")[cid]
        assert row["State"] == ("dead" if state == "damaged" else "exited"), row
        rl("rm", "-f", cid, check=True)  # nothing runs for it
        assert not rec.exists()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


# -- concurrency -------------------------------------------------------------------


def _all(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    return [(p.wait(timeout=120), *p.communicate()) for p in procs]


def test_100_concurrent_run_rm(rl: RlRunner, rl_path: Path, rootfs: Path) -> None:
    before = set(ps_rows(rl, "-a"))
    procs = [subprocess.Popen([str(rl_path), "run", "--rm", "--network", "none", "--rootfs",
                               str(rootfs), "true"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(100)]
    failed = [r for r in _all(procs) if r[0] != 0]
    assert not failed, failed[:5]
    assert support.wait_until(lambda: set(ps_rows(rl, "-a")) == before)


def test_50_concurrent_run_d_and_rm_f(rl: RlRunner, rl_path: Path, rootfs: Path) -> None:
    """Generated names that collide are picked again; rm -f of each succeeds."""
    before = set(ps_rows(rl, "-a"))
    procs = [subprocess.Popen([str(rl_path), "run", "-d", "--network", "none", "--rootfs",
                               str(rootfs), "sleep", "300"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(50)]
    started = _all(procs)
    ids = [out.strip() for code, out, _ in started if code == 0]
    try:
        assert [r for r in started if r[0] != 0] == []
        names = [r["Names"] for cid, r in ps_rows(rl).items() if cid in ids]
        assert len(names) == 50 and len(set(names)) == 50
    finally:
        procs = [subprocess.Popen([str(rl_path), "rm", "-f", cid], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for cid in ids]
        removed = _all(procs)
    assert [r for r in removed if r[0] != 0] == []
    assert set(ps_rows(rl, "-a")) == before


def test_concurrent_generated_names_in_a_crowded_store(rl: RlRunner, rl_state: RlState,
                                                      rl_path: Path, rootfs: Path) -> None:
    """With most of the 256 generated names taken, 40 concurrent `rl run -d` all
    get free, distinct ones: a name is picked under the lock that keeps names
    unique, never before it."""
    from rootless.engine.store import _LEFT, _RIGHT

    model = rl("create", "--network", "none", "--rootfs", rootfs, "true",
               check=True).stdout.strip()
    fakes = []
    try:
        raw = json.loads((record_dir(rl_state, model) / "config.json").read_text())
        for i, name in enumerate(f"{a}_{b}" for a in _LEFT for b in _RIGHT):
            if i % 256 >= 200:
                continue
            fake = os.urandom(32).hex()
            d = record_dir(rl_state, fake)
            d.mkdir()
            (d / "config.json").write_text(json.dumps({**raw, "id": fake, "name": name}))
            shutil.copy(record_dir(rl_state, model) / "state.json", d / "state.json")
            fakes.append(d)
        procs = [subprocess.Popen([str(rl_path), "run", "-d", "--network", "none", "--rootfs",
                                   str(rootfs), "sleep", "300"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(40)]
        started = _all(procs)
        ids = [out.strip() for code, out, _ in started if code == 0]
        taken = {json.loads((d / "config.json").read_text())["name"] for d in fakes}
        try:
            assert [r for r in started if r[0] != 0] == []
            names = [r["Names"] for cid, r in ps_rows(rl).items() if cid in ids]
            assert len(set(names)) == 40 and not set(names) & taken
        finally:
            procs = [subprocess.Popen([str(rl_path), "rm", "-f", cid]) for cid in ids]
            _all(procs)
    finally:
        for d in fakes:
            shutil.rmtree(d)
        rl("rm", model)


# -- the caller's runtime directory ---------------------------------------------


@pytest.fixture
def elsewhere(rl_state: RlState, tmp_path: Path) -> Iterator[dict[str, dict[str, str]]]:
    """The environments of a caller with another XDG_RUNTIME_DIR, and with none."""
    other = tmp_path / "other-run"
    other.mkdir(mode=0o700)
    base = {**os.environ, **rl_state.env()}
    unset = {k: v for k, v in base.items() if k != "XDG_RUNTIME_DIR"}
    fallback = Path(f"/tmp/rl-{os.getuid()}")  # what the unset caller uses
    made_here = not fallback.exists()
    try:
        yield {"other": {**base, "XDG_RUNTIME_DIR": str(other)}, "unset": unset}
    finally:
        support.kill_recorded_pids(other)  # a fork server `rl start` started there
        if made_here and fallback.is_dir():  # the unset caller's, made by this test
            support.kill_recorded_pids(fallback, sub="")
            support.remove_tree(fallback)


@pytest.mark.parametrize("caller", ["other", "unset"])
def test_liveness_does_not_depend_on_the_runtime_dir(rl: RlRunner, rl_state: RlState,
                                                    rootfs: Path, caller: str,
                                                    elsewhere: dict[str, dict[str, str]]
                                                    ) -> None:
    env = elsewhere[caller]
    cid = rl("run", "-d", "--network", "none", "--rootfs", rootfs, "sleep", "300",
             check=True).stdout.strip()
    sup = int((run_dir(rl_state, cid) / "sup.pid").read_text())
    try:
        assert ps_rows(rl, env=env)[cid]["State"] == "running"
        r = _run_env(rl, env, "exec", cid, "echo", "inside")
        assert r.returncode == 0 and r.stdout == "inside\n", r.stderr
        r = _run_env(rl, env, "rm", cid)
        assert r.returncode == 1 and "running" in r.stderr
        r = _run_env(rl, env, "stop", "-t", "1", cid)
        assert r.returncode == 0, r.stderr
        assert support.wait_until(lambda: not alive(sup))
        assert ps_rows(rl, "-a")[cid]["Status"].startswith("Exited (137)")
    finally:
        _run_env(rl, env, "rm", "-f", cid)
    assert cid not in ps_rows(rl, "-a")
    assert not run_dir(rl_state, cid).exists()


def test_start_from_another_runtime_dir(rl: RlRunner, rootfs: Path,
                                        elsewhere: dict[str, dict[str, str]]) -> None:
    """A record created by one caller starts for another: /etc/hostname and friends
    come from the starting supervisor's runtime directory, and the creator's rl
    sees it run and stops it."""
    cid = rl("create", "--network", "none", "--rootfs", rootfs, "sh", "-c",
             "cat /etc/hostname; exec sleep 300", check=True).stdout.strip()
    try:
        r = _run_env(rl, elsewhere["other"], "start", cid)
        assert r.returncode == 0, r.stderr
        assert ps_rows(rl)[cid]["State"] == "running"
        assert support.wait_until(lambda: rl("logs", cid).stdout == cid[:12] + "\n")
        rl("kill", cid, check=True)
        assert rl("wait", cid, check=True).stdout == f"{128 + signal.SIGKILL}\n"
    finally:
        rl("rm", "-f", cid)


def test_warm_up_resolves_every_record_type_the_checks_meet() -> None:
    # The fork server calls it so that no supervisor pays get_type_hints.
    store._hints.cache_clear()
    store.warm_up()
    warmed = store._hints.cache_info().currsize
    before = store._hints.cache_info().misses
    store._check(store.State, {"status": "running", "pid": 1}, "", top=True)
    store._check(Spec, {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                        "process": {"args": ["true"], "cwd": "/"},
                        "linux": {"namespaces": [{"type": "pid"}]}}, "spec")
    assert store._hints.cache_info().misses == before, "a record type was not warmed"
    assert warmed >= 10


def test_no_container_id_has_an_all_digit_short_form() -> None:
    """The short id is the default hostname, and "194159999124" reads as an IPv4 number to
    a resolver (busybox's `hostname -i` failed on one in CI): such an id is drawn again."""
    from rootless.engine import store

    draws = iter([bytes.fromhex("194159999124" + "0" * 52), bytes.fromhex("1a" * 32)])
    assert store.new_id(lambda: next(draws)) == "1a" * 32
    assert not store.new_id()[:12].isdigit()
