"""podman (Debian's 4.3) with rl-oci as its OCI runtime: conmon calls create (with
--pid-file and, for -t, --console-socket), podman start, state, exec --detach, kill with
a signal number and delete --force, all as runc's callers do (tests/test_oci.py covers
the verbs one by one)."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import support

Podman = Callable[..., subprocess.CompletedProcess[str]]
IMAGE = "localhost/rloci-bb:1"


@pytest.fixture(scope="module")
def podman(rootfs: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    support.require(shutil.which("podman") is not None, "podman not installed")
    support.require(shutil.which("conmon") is not None, "conmon not installed")
    support.require_userns()
    rl_oci = Path(sys.executable).parent / "rl-oci"
    support.require(rl_oci.exists(), f"{rl_oci} not installed (pip install -e .)")
    base = Path(tempfile.mkdtemp(prefix="rlpo-", dir="/tmp"))  # podman: runroot < 50 chars
    cmd = ["podman", f"--runtime={rl_oci}", "--root", str(base / "root"), "--runroot",
           str(base / "run"), "--storage-driver", "vfs", "--cgroup-manager=cgroupfs",
           "--events-backend=file"]
    env = {**os.environ, "XDG_CONFIG_HOME": str(base / "cfg")}
    try:
        tar = base / "bb.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
        subprocess.run([*cmd, "import", str(tar), IMAGE], check=True, env=env,
                       capture_output=True, timeout=120)
        yield cmd, env
    finally:
        subprocess.run(["podman", "unshare", "rm", "-rf", str(base)], env=env,
                       capture_output=True, check=False)
        support.remove_tree(base)


@pytest.fixture
def pm(podman: tuple[list[str], dict[str, str]]) -> Podman:
    cmd, env = podman

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)

    return run


def _quiet(stderr: str) -> str:
    """podman's stderr without its warning about / not being a shared mount."""
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if "is not a shared mount" not in line)


def test_run_rm_output_and_exit_codes(pm: Podman) -> None:
    r = pm("run", "--rm", IMAGE, "echo", "hi")
    assert (r.returncode, r.stdout, _quiet(r.stderr)) == (0, "hi\n", "")
    r = pm("run", "--rm", IMAGE, "sh", "-c", "echo to-err >&2; exit 3")
    assert (r.returncode, _quiet(r.stderr)) == (3, "to-err\n")
    # create's error reaches podman, which maps runc's words to docker's 127.
    r = pm("run", "--rm", IMAGE, "no-such-command")
    assert r.returncode == 127, r.stderr
    assert "executable file not found" in r.stderr
    assert pm("ps", "-aq").stdout == ""


def test_run_detached_exec_logs_stop_rm(pm: Podman) -> None:
    r = pm("run", "-d", "--name", "d1", IMAGE, "sh", "-c", "echo logged; exec sleep 100")
    assert r.returncode == 0, r.stderr
    try:
        r = pm("exec", "d1", "sh", "-c", "echo in-exec; cat /etc/hostname; exit 4")
        assert r.returncode == 4, r.stderr
        assert r.stdout.startswith("in-exec\n")
        assert support.wait_until(lambda: pm("logs", "d1").stdout == "logged\n")
        assert pm("inspect", "-f", "{{.State.Status}}", "d1").stdout == "running\n"
        # sleep as PID 1 ignores SIGTERM: podman's kill 15, then kill 9 after the timeout.
        assert pm("stop", "-t", "1", "d1").returncode == 0
        assert pm("inspect", "-f", "{{.State.ExitCode}}", "d1").stdout == "137\n"
        # A stopped container starts again: conmon creates it anew under the same id.
        assert pm("start", "d1").returncode == 0
        assert pm("inspect", "-f", "{{.State.Status}}", "d1").stdout == "running\n"
    finally:
        pm("rm", "-f", "-t", "0", "d1")
    assert pm("ps", "-aq").stdout == ""


def _on_pty(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, bytes]:
    """argv with a pty as its stdio (a user's terminal); its status and what it wrote."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                         start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break  # EIO: the last slave closed
            if not chunk:
                break
            out += chunk
        elif p.poll() is not None:
            break
    os.close(master)
    return p.wait(timeout), out


def test_run_it_and_exec_it_through_a_pty(podman: tuple[list[str], dict[str, str]],
                                          pm: Podman) -> None:
    cmd, env = podman
    code, out = _on_pty([*cmd, "run", "--rm", "-it", IMAGE, "sh", "-c",
                         "tty; test -t 0 && echo stdin-is-a-tty; exit 2"], env)
    assert code == 2, out
    assert b"/dev/pts/0" in out and b"stdin-is-a-tty" in out, out
    assert pm("run", "-d", "--name", "t1", IMAGE, "sleep", "100").returncode == 0
    try:
        code, out = _on_pty([*cmd, "exec", "-it", "t1", "sh", "-c", "tty; exit 5"], env)
        assert code == 5, out
        assert b"/dev/pts/" in out, out
    finally:
        pm("rm", "-f", "-t", "0", "t1")


def test_published_port(pm: Podman) -> None:
    """-p: podman's port forwarder into the network namespace it gives rl-oci by path."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = pm("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:8080", IMAGE, "sh", "-c",
           "echo hello-web > /tmp/index.html; exec httpd -f -p 8080 -h /tmp")
    assert r.returncode == 0, r.stderr
    try:
        def fetch() -> bytes:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html",
                                            timeout=5) as resp:
                    return bytes(resp.read())
            except OSError:
                return b""

        assert support.wait_until(lambda: fetch() == b"hello-web\n", 30)
    finally:
        pm("rm", "-f", "-t", "0", "web")


def test_hooks_from_a_hooks_dir_run_through_rl_oci(pm: Podman, tmp_path: Path) -> None:
    """podman writes a hooks.d hook into the config's hooks; rl-oci runs it with the
    state on stdin (tests/test_oci_hooks.py covers the kinds one by one)."""
    log = tmp_path / "hooks.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$1 $(cat)" >> {log}\n')
    hook.chmod(0o755)
    hooks_dir = tmp_path / "hooks.d"
    hooks_dir.mkdir()
    for stage in ("prestart", "poststart"):
        (hooks_dir / f"{stage}.json").write_text(json.dumps({
            "version": "1.0.0", "hook": {"path": str(hook), "args": ["hook.sh", stage]},
            "when": {"always": True}, "stages": [stage]}))
    r = pm("--hooks-dir", str(hooks_dir), "run", "--rm", "--name", "hk1", IMAGE, "true")
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    assert [ln.split(" ", 1)[0] for ln in lines] == ["prestart", "poststart"], lines
    states = [json.loads(ln.split(" ", 1)[1]) for ln in lines]
    assert [s["status"] for s in states] == ["creating", "running"]
    assert states[0]["id"] == states[1]["id"] and len(states[0]["id"]) == 64
    assert states[0]["pid"] > 0 and states[0]["bundle"].endswith("/userdata")
