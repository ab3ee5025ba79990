"""rl-oci, rl's runtime as an OCI runtime command line, driven directly on a bundle
made from a busybox rootfs, as runc's callers (conmon, podman, Slurm) drive it."""

from __future__ import annotations

import array
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import support

RlOci = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def rl_oci_path() -> Path:
    path = Path(sys.executable).parent / "rl-oci"
    support.require(path.exists(), f"{path} not installed (pip install -e .)")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def oci(rl_oci_path: Path, root: Path) -> Iterator[RlOci]:
    def run(*args: str | os.PathLike[str], check: bool = False, timeout: float = 60,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        # Files, not pipes: a created container holds the caller's stdout and
        # stderr (as with runc), so EOF on a pipe would wait for the container.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            kw.setdefault("stdout", out)
            p = subprocess.run([str(rl_oci_path), "--root", str(root), *map(str, args)],
                               text=True, timeout=timeout, check=False, stderr=err, **kw)
            out.seek(0)
            err.seek(0)
            r = subprocess.CompletedProcess(p.args, p.returncode, out.read(), err.read())
        if check and r.returncode != 0:
            raise AssertionError(f"rl-oci {args}: {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    yield run
    # Whatever a test left: killed and deleted, as conmon would.
    if root.exists():
        for cid in os.listdir(root):
            run("delete", "--force", cid)


def make_bundle(rootfs: Path, where: Path, args: list[str], rl_oci_path: Path,
                **process: Any) -> Path:
    """A bundle: `rl-oci spec --rootless`, ./rootfs a copy of rootfs, the given command."""
    support.require_userns()
    where.mkdir(parents=True)
    support.copy_tree(rootfs, where / "rootfs")
    subprocess.run([str(rl_oci_path), "spec", "--rootless", "-b", str(where)], check=True)
    cfg = json.loads((where / "config.json").read_text())
    cfg["process"].update({"args": args, "terminal": False, **process})
    (where / "config.json").write_text(json.dumps(cfg))
    return where


@pytest.fixture
def bundle(rootfs: Path, tmp_path: Path, rl_oci_path: Path) -> Callable[..., Path]:
    count = [0]

    def make(*args: str, **process: Any) -> Path:
        count[0] += 1
        return make_bundle(rootfs, tmp_path / f"b{count[0]}", list(args), rl_oci_path,
                           **process)

    return make


def error_line(r: subprocess.CompletedProcess[str]) -> str:
    """runc's one error line: time="…" level=error msg="…"; the message."""
    lines = r.stderr.splitlines()
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert len(lines) == 1 and " level=error msg=" in lines[0], r.stderr
    return str(json.loads(lines[0].split(" msg=", 1)[1]))


def status(oci: RlOci, cid: str) -> str:
    return str(json.loads(oci("state", cid, check=True).stdout)["status"])


# -- the face -----------------------------------------------------------------------


def test_version_and_features(oci: RlOci) -> None:
    r = oci("--version", check=True)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("rl-oci version ") and lines[1].startswith("spec: 1.")
    feats = json.loads(oci("features", check=True).stdout)
    assert feats["ociVersionMin"] == "1.0.0" and feats["ociVersionMax"].startswith("1.")
    assert "user" in feats["linux"]["namespaces"]
    assert "CAP_SYS_ADMIN" in feats["linux"]["capabilities"]
    assert "SCMP_ACT_ERRNO" in feats["linux"]["seccomp"]["actions"]
    assert "rbind" in feats["mountOptions"]
    assert feats["linux"]["cgroup"]["systemd"] is False  # --systemd-cgroup is only accepted
    assert oci("--systemd-cgroup", "list", check=True).returncode == 0


def test_spec_writes_a_config_and_refuses_to_overwrite(oci: RlOci, tmp_path: Path) -> None:
    oci("spec", "--rootless", "--bundle", tmp_path, check=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["process"]["args"] == ["sh"] and cfg["root"]["path"] == "rootfs"
    assert {"type": "user"} in cfg["linux"]["namespaces"]
    assert cfg["linux"]["uidMappings"] == [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
    assert error_line(oci("spec", "-b", tmp_path)) == "File config.json exists. Remove it first"


# -- lifecycle ----------------------------------------------------------------------


def test_run_foreground_output_and_exit_status(oci: RlOci, bundle: Callable[..., Path]) -> None:
    b = bundle("sh", "-c", "echo out; echo err >&2; id -u; exit 3")
    r = oci("run", "-b", b, "t1")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n0\n", "err\n")
    assert oci("list", "-q", check=True).stdout == ""  # run deletes what it ran


def test_run_killed_by_a_signal_exits_128_plus_n(oci: RlOci, rl_oci_path: Path, root: Path,
                                                 bundle: Callable[..., Path]) -> None:
    b = bundle("sleep", "100")
    p = subprocess.Popen([rl_oci_path, "--root", root, "run", "-b", b, "sig"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert support.wait_until(lambda: oci("state", "sig").returncode == 0
                              and status(oci, "sig") == "running")
    oci("kill", "sig", "KILL", check=True)
    assert p.wait(30) == 128 + 9
    # A signal rl-oci gets is passed on: SIGTERM ends `sh`'s trap with 7.
    b2 = bundle("sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done")
    p = subprocess.Popen([rl_oci_path, "--root", root, "run", "-b", b2, "fwd"])
    assert support.wait_until(lambda: oci("state", "fwd").returncode == 0
                              and status(oci, "fwd") == "running")
    time.sleep(0.3)  # the trap is set up (no timing is asserted: only the outcome)
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 7


def test_create_start_state_kill_delete(oci: RlOci, bundle: Callable[..., Path],
                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    b = bundle("sh", "-c", "echo started; exec sleep 100")
    with open(out, "w") as f:
        oci("create", "--bundle", b, "--pid-file", tmp_path / "pid", "c1", stdout=f,
            check=True)
    pid = int((tmp_path / "pid").read_text())
    st = json.loads(oci("state", "c1", check=True).stdout)
    assert st["id"] == "c1" and st["status"] == "created" and st["pid"] == pid
    assert st["bundle"] == str(b) and st["ociVersion"].startswith("1.")
    assert out.read_text() == ""  # waiting at its gate: nothing ran yet
    assert error_line(oci("create", "-b", b, "c1")) == "container with given ID already exists"

    oci("start", "c1", check=True)
    assert status(oci, "c1") == "running"
    # The container writes to the caller's own stdout, which create was given.
    assert support.wait_until(lambda: out.read_text() == "started\n")
    assert error_line(oci("start", "c1")) == "cannot start an already running container"
    assert error_line(oci("delete", "c1")) == \
        "cannot delete container c1 that is not stopped: running"
    assert json.loads(oci("ps", "-f", "json", "c1", check=True).stdout) == [pid]
    table = oci("ps", "c1", check=True).stdout.splitlines()
    assert "PID" in table[0] and len(table) == 2 and "sleep 100" in table[1], table

    oci("kill", "c1", "9", check=True)  # a signal by number, as podman sends it
    assert support.wait_until(lambda: status(oci, "c1") == "stopped")
    assert json.loads(oci("state", "c1", check=True).stdout)["pid"] == 0
    assert error_line(oci("kill", "c1", "TERM")) == "container not running"
    assert error_line(oci("start", "c1")) == "cannot start a container that has stopped"
    oci("delete", "c1", check=True)
    assert error_line(oci("state", "c1")) == "container does not exist"
    assert oci("delete", "-f", "c1").returncode == 0  # -f of a missing one: nothing to do


def test_delete_of_a_created_container_kills_it(oci: RlOci, bundle: Callable[..., Path],
                                                tmp_path: Path) -> None:
    oci("create", "-b", bundle("true"), "--pid-file", tmp_path / "pid", "c2", check=True)
    pid = int((tmp_path / "pid").read_text())
    oci("delete", "c2", check=True)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert oci("list", "-q", check=True).stdout == ""


def test_kill_all_and_delete_force(oci: RlOci, bundle: Callable[..., Path]) -> None:
    oci("run", "-d", "-b", bundle("sh", "-c", "sleep 100 & sleep 100 & wait"), "k",
        check=True)
    assert support.wait_until(lambda: len(json.loads(oci("ps", "-f", "json", "k").stdout)) == 3)
    oci("kill", "--all", "k", "KILL", check=True)
    assert support.wait_until(lambda: status(oci, "k") == "stopped")
    oci("run", "-d", "-b", bundle("sleep", "100"), "k2", check=True)
    oci("delete", "-f", "k2", check=True)
    assert oci("state", "k2").returncode == 1


def test_container_gets_exactly_stdio_and_preserved_fds(rl_oci_path: Path, root: Path,
                                                        bundle: Callable[..., Path],
                                                        tmp_path: Path) -> None:
    # ls lists its own directory fd too: 3 without --preserve-fds, 4 with one.
    b = bundle("sh", "-c", "ls /proc/self/fd | tr '\\n' ' '; cat <&3 2>/dev/null || true")
    extra = tmp_path / "extra"
    extra.write_text("via fd 3\n")

    def run(*flags: str) -> str:
        # The caller holds fds 3 and 4; only what --preserve-fds names gets through.
        r = subprocess.run(
            ["sh", "-c", 'exec 3<"$1" 4<"$1"; shift; exec "$@"', "sh", str(extra),
             str(rl_oci_path), "--root", str(root), "run", *flags, "-b", str(b), "fds"],
            capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert run() == "0 1 2 3 "
    assert run("--preserve-fds", "1") == "0 1 2 3 4 via fd 3\n"


def test_exec_foreground_detached_and_process_json(oci: RlOci, bundle: Callable[..., Path],
                                                   tmp_path: Path) -> None:
    oci("run", "-d", "-b", bundle("sleep", "100"), "e", check=True)
    r = oci("exec", "--env", "FOO=bar", "--cwd", "/tmp", "e", "sh", "-c",
            "echo $FOO $(pwd); exit 4")
    assert (r.returncode, r.stdout) == (4, "bar /tmp\n")
    proc = {"args": ["sh", "-c", "echo from-json > /dev/shm/j; sleep 100"], "cwd": "/",
            "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}
    (tmp_path / "p.json").write_text(json.dumps(proc))
    oci("exec", "--process", tmp_path / "p.json", "--detach", "--pid-file",
        tmp_path / "epid", "e", check=True)
    epid = int((tmp_path / "epid").read_text())
    assert Path(f"/proc/{epid}").exists()
    assert support.wait_until(
        lambda: oci("exec", "e", "cat", "/dev/shm/j").stdout == "from-json\n")
    # The exec'd process is in the container's PID namespace.
    assert epid in json.loads(oci("ps", "-f", "json", "e", check=True).stdout)
    r = oci("exec", "e", "nonexistent-cmd")
    assert "executable file not found" in error_line(r)
    # --user: the config maps only the caller (as root), so uid 1000 does not exist.
    assert oci("exec", "--user", "0:0", "e", "id", "-u").stdout == "0\n"
    assert "uid 1000 is not mapped" in error_line(oci("exec", "--user", "1000", "e", "id"))


def _console_listener(path: Path) -> socket.socket:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    srv.settimeout(30)
    return srv


def _receive_master(srv: socket.socket) -> tuple[int, bytes]:
    """What conmon does: accept, take the fd from SCM_RIGHTS."""
    conn, _ = srv.accept()
    fds = array.array("i")
    msg, anc, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    conn.close()
    assert len(fds) == 1
    return fds[0], msg


def _read_until(fd: int, want: bytes) -> bytes:
    out = b""
    deadline = time.monotonic() + 30
    while want not in out and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


def test_console_socket_sends_the_pty_master(oci: RlOci, bundle: Callable[..., Path],
                                             tmp_path: Path) -> None:
    b = bundle("sh", "-c", "tty; stty size; read line; echo got:$line", terminal=True,
               consoleSize={"height": 33, "width": 101})
    srv = _console_listener(tmp_path / "c.sock")
    oci("create", "-b", b, "--console-socket", tmp_path / "c.sock", "tty1", check=True)
    master, name = _receive_master(srv)
    assert name.startswith(b"/dev/pts/")
    oci("start", "tty1", check=True)
    os.write(master, b"hello\n")
    out = _read_until(master, b"got:hello")
    assert b"/dev/pts/0" in out and b"33 101" in out and b"got:hello" in out, out
    os.close(master)
    # exec -t: its own pty over a socket too.
    oci("run", "-d", "-b", bundle("sleep", "100"), "tty2", check=True)
    (tmp_path / "c.sock").unlink()
    srv = _console_listener(tmp_path / "c.sock")
    p = subprocess.Popen([str(Path(sys.executable).parent / "rl-oci"), "--root",
                          str(tmp_path / "state"), "exec", "-t", "-d", "--console-socket",
                          str(tmp_path / "c.sock"), "tty2", "sh", "-c", "tty; echo done"])
    master, _ = _receive_master(srv)
    assert p.wait(30) == 0
    out = _read_until(master, b"done")
    assert b"/dev/pts/" in out and b"done" in out, out
    os.close(master)


# -- robustness and bad input --------------------------------------------------------


def test_a_damaged_record_never_blocks_list(oci: RlOci, bundle: Callable[..., Path],
                                            root: Path) -> None:
    oci("run", "-d", "-b", bundle("sleep", "100"), "good", check=True)
    (root / "bad").mkdir()
    (root / "bad" / "state.json").write_text("{not json")
    rows = {r["id"]: r for r in json.loads(oci("list", "-f", "json", check=True).stdout)}
    assert rows["good"]["status"] == "running" and rows["bad"]["status"] == "stopped"
    assert "good" in oci("list", check=True).stdout
    assert "damaged" in error_line(oci("state", "bad"))
    oci("delete", "bad", check=True)
    # A directory a creator killed with -9 left behind (no state, its lock free) is
    # no obstacle to creating that id again.
    (root / "left").mkdir()
    (root / "left" / ".lock").write_text("")
    oci("run", "-b", bundle("true"), "left", check=True)


def test_kill_9_of_create_leaves_nothing_in_the_way(oci: RlOci, rl_oci_path: Path,
                                                    root: Path,
                                                    bundle: Callable[..., Path]) -> None:
    b = bundle("true")
    for _ in range(3):
        p = subprocess.Popen([rl_oci_path, "--root", root, "create", "-b", b, "k9"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.15)  # somewhere in create; where does not matter
        p.kill()
        p.wait()
        oci("list", check=True)
        oci("delete", "--force", "k9", check=True)
    oci("run", "-b", b, "k9", check=True)


def test_bad_input(oci: RlOci, bundle: Callable[..., Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "config.json is missing" in error_line(oci("create", "-b", empty, "x"))
    (empty / "config.json").write_text("{")
    assert "not valid JSON" in error_line(oci("create", "-b", empty, "x"))
    b = bundle("true")
    cfg = json.loads((b / "config.json").read_text())
    assert error_line(oci("create", "-b", b, "a/b")) == "invalid id format: a/b"
    assert error_line(oci("create", "-b", b, "x\n")).startswith("invalid id format: x")
    (b / "config.json").write_text(json.dumps({**cfg, "ociVersion": "2.0.0"}))
    assert "ociVersion '2.0.0' is not supported" in error_line(oci("create", "-b", b, "x"))
    (b / "config.json").write_text(json.dumps({**cfg, "root": {"path": "nowhere"}}))
    assert "does not exist" in error_line(oci("create", "-b", b, "x"))
    (b / "config.json").write_text(json.dumps({**cfg, "process": {**cfg["process"],
                                                                    "args": "true"}}))
    assert "process.args is not a list" in error_line(oci("create", "-b", b, "x"))
    (b / "config.json").write_text(json.dumps(
        {**cfg, "hooks": {"prestart": [{"path": "true"}]}}))
    assert "hooks.prestart[0].path 'true' is not an absolute path" in error_line(
        oci("create", "-b", b, "x"))
    (b / "config.json").write_text(json.dumps(
        {**cfg, "linux": {**cfg["linux"], "resources": {"memory": {"limit": 1 << 20}}}}))
    assert "linux.resources.memory" in error_line(oci("create", "-b", b, "x"))
    (b / "config.json").write_text(json.dumps({**cfg, "process": {**cfg["process"],
                                                                    "terminal": True}}))
    (tmp_path / "notsock").write_text("")
    assert "is not a socket" in error_line(
        oci("create", "-b", b, "--console-socket", tmp_path / "notsock", "x"))
    assert "console socket" in error_line(oci("create", "-b", b, "x"))
    (b / "config.json").write_text(json.dumps({**cfg, "process": {**cfg["process"],
                                                                    "args": ["nope"]}}))
    assert "executable file not found" in error_line(oci("create", "-b", b, "x"))
    assert error_line(oci("start", "x")) == "container does not exist"
    assert error_line(oci("kill", "x")) == "container does not exist"
    assert error_line(oci("kill", "x", "NOSUCH")).startswith("unknown signal")
    assert oci("list", "-q", check=True).stdout == ""  # no failure left a record


def test_the_fast_path_answers_as_the_click_face(oci: RlOci, bundle: Callable[..., Path],
                                                 root: Path) -> None:
    """Engines' calls are parsed without click (fast.py); the click face (main.py)
    must answer the same, and the fast path must not load click."""
    oci("run", "-d", "-b", bundle("sleep", "100"), "fp", check=True)
    probe = (
        "import os, sys\n"
        "os._exit = sys.exit  # fast.main's exit skips the teardown, and this finally\n"
        "from rootless.oci import fast, main\n"
        "entry = fast.main if sys.argv[1] == 'fast' else main.main\n"
        "del sys.modules['click'], main\n"
        "sys.argv = ['rl-oci', *sys.argv[2:]]\n"
        "try:\n"
        "    entry()\n"
        "finally:\n"
        "    sys.stderr.write('click loaded: %s\\n' % ('click' in sys.modules))\n")
    for argv in (["state", "fp"], ["state", "nope"], ["kill", "fp", "0"],
                 ["kill", "--all", "fp", "SIGCONT"], ["start", "fp"], ["delete", "fp"],
                 ["--log-format", "json", "state", "nope"]):
        answers = []
        for entry in ("fast", "click"):
            r = subprocess.run([sys.executable, "-c", probe, entry, "--root", str(root), *argv],
                               capture_output=True, text=True, timeout=60, check=False)
            err, _, loaded = r.stderr.rpartition("click loaded: ")
            untimed = [re.sub(r'"?time"?[=:] ?"[^"]*"', "", line) for line in err.splitlines()]
            answers.append((r.returncode, r.stdout, untimed))
            if entry == "fast":
                assert loaded.strip() == "False", (argv, r.stderr)
        assert answers[0] == answers[1], argv


def test_log_file_and_formats(oci: RlOci, bundle: Callable[..., Path], tmp_path: Path) -> None:
    log = tmp_path / "log"
    r = oci("--log", log, "--log-format", "json", "--debug", "run", "-b", bundle("true"), "lg")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines and all(set(d) == {"level", "msg", "time"} for d in lines)
    assert any(d["level"] == "debug" and "created lg" in d["msg"] for d in lines)
    r = oci("--log", log, "--log-format", "json", "state", "nope")
    err = json.loads(r.stderr)
    assert (r.returncode, err["level"], err["msg"]) == (1, "error", "container does not exist")
    assert json.loads(log.read_text().splitlines()[-1])["msg"] == "container does not exist"


def test_run_in_the_foreground_relays_its_terminal(rl_oci_path: Path, root: Path,
                                                   bundle: Callable[..., Path]) -> None:
    """terminal: true without --console-socket: `run` relays the pty to its own stdio."""
    import pty
    import select

    b = bundle("sh", "-c", "tty; read x; echo got:$x; exit 6", terminal=True)
    master, slave = pty.openpty()
    p = subprocess.Popen([rl_oci_path, "--root", root, "run", "-b", b, "rt"], stdin=slave,
                         stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = _read_until(master, b"/dev/pts/0")
    os.write(master, b"line\r")
    deadline = time.monotonic() + 30
    while b"got:line" not in out and time.monotonic() < deadline:
        if select.select([master], [], [], 1)[0]:
            try:
                out += os.read(master, 4096)
            except OSError:
                break
    assert p.wait(30) == 6
    os.close(master)
    assert b"/dev/pts/0" in out and b"got:line" in out, out


def test_state_start_kill_load_little(oci: RlOci, bundle: Callable[..., Path],
                                      root: Path) -> None:
    """conmon and podman run a fresh rl-oci for each of these: they must not load
    click, dataclasses, typing or shutil (each costs more than the call itself),
    nor, for start, state and delete, json, re and enum (plainjson.py; signal's
    enums are kill's only)."""
    probe = ("import os, sys\n"
             "os._exit = sys.exit  # fast.main's exit skips the teardown, and the print\n"
             "from rootless.oci import fast\n"
             "sys.argv = ['rl-oci', '--root', sys.argv[1], *sys.argv[2:]]\n"
             "try:\n"
             "    fast.main()\n"
             "except SystemExit:\n"
             "    pass\n"
             "heavy = {'click', 'dataclasses', 'typing', 'shutil', 'json', 're', 'enum',\n"
             "         'signal'} & set(sys.modules)\n"
             "print(sorted(heavy))\n")
    def loads(*argv: str) -> str:
        r = subprocess.run([sys.executable, "-c", probe, str(root), *argv],
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0 or argv[0] == "kill", (argv, r.stderr)
        return r.stdout.splitlines()[-1]  # after state's JSON

    oci("create", "-b", bundle("sleep", "100"), "lt", check=True)
    assert loads("state", "lt") == "[]"
    assert loads("start", "lt") == "[]"
    assert loads("state", "lt") == "[]"
    assert loads("kill", "lt", "9") == "['enum', 'signal']"
    deadline = time.monotonic() + 30
    while json.loads(oci("state", "lt", check=True).stdout)["status"] != "stopped":
        assert time.monotonic() < deadline, "PID 1 did not die of SIGKILL"
        time.sleep(0.05)
    assert loads("delete", "lt") == "[]"
    assert oci("list", "-q", check=True).stdout == ""
