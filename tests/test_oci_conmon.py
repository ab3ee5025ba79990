"""conmon (Debian's 2.1.6) driving rl-oci directly, with the arguments podman 4.3
gives it (libpod's sharedConmonArgs): conmon runs `create`, the caller `start`;
conmon writes the container's output to a k8s-file log, its exit code to the
exit directory, and runs the exit command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import test_oci
from test_oci import RlOci

import support

rl_oci_path, root, oci, bundle = (test_oci.rl_oci_path, test_oci.root, test_oci.oci,
                                  test_oci.bundle)


def _wait_for(path: Path, what: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{what}: {path} never written"
        time.sleep(0.05)
    return path.read_text()


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^PPid:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]


def test_conmon_runs_a_container_through_rl_oci(rl_oci_path: Path, root: Path, oci: RlOci,
                                                bundle: Callable[..., Path],
                                                tmp_path: Path) -> None:
    conmon = shutil.which("conmon")
    support.require(conmon is not None, "conmon not installed (Debian package conmon)")
    assert conmon is not None
    b = bundle("sh", "-c", "echo out; sleep 0.5; echo err >&2; read line; echo got $line; "
               "exit 7")
    cid = "conmon1"
    run = tmp_path / "run"
    exits = run / "exits"
    exits.mkdir(parents=True)
    log, oci_log = run / "ctr.log", run / "oci-log"
    pid_file, conmon_pid = run / "pidfile", run / "conmon.pid"
    marker = run / "exit-command-ran"
    args = [
        conmon, "--api-version", "1", "-c", cid, "-u", cid, "-r", str(rl_oci_path),
        "-b", str(b), "-p", str(pid_file), "-n", "conmon-test", "--exit-dir", str(exits),
        "--full-attach", "-l", f"k8s-file:{log}", "--log-level", "warning",
        "--runtime-arg", "--log-format=json", "--runtime-arg", "--log",
        f"--runtime-arg={oci_log}", "--runtime-arg", "--root", "--runtime-arg", str(root),
        "--conmon-pidfile", str(conmon_pid), "--socket-dir-path", str(run / "sockets"),
        "-i",  # stdin: a pipe to the container, through the attach socket
        "--exit-command", "/bin/sh", "--exit-command-arg", "-c",
        "--exit-command-arg", f'echo "$0 $*" > {marker}', "--exit-command-arg", "podman",
        "--exit-command-arg", "container-cleanup", "--exit-command-arg", cid,
    ]
    (run / "sockets").mkdir()
    # conmon forks itself away once the runtime's create has returned.
    r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, (r.stdout, r.stderr)
    pid = int(_wait_for(pid_file, "the container's pid file"))
    cpid = int(_wait_for(conmon_pid, "conmon's pid file"))
    # PID 1 is conmon's (a child subreaper's) child, not a daemon of rl's.
    assert _parent(pid) == cpid
    assert test_oci.status(oci, cid) == "created"
    oci("start", cid, check=True)
    # conmon's attach socket gives the container its stdin (as podman attach).
    import socket

    # --full-attach: in the bundle, not under --socket-dir-path.
    attach = b / "attach"
    assert attach.exists(), sorted(os.listdir(b))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(str(attach))
    s.send(b"hello\n")
    code = _wait_for(exits / cid, "conmon's exit file")
    s.close()
    assert code.strip() == "7"
    text = _wait_for(marker, "the exit command")
    assert text.strip() == f"podman container-cleanup {cid}"
    lines = log.read_text().splitlines()
    # k8s-file: TIME STREAM F|P TEXT
    parsed = [ln.split(" ", 3) for ln in lines]
    # (conmon reads the two pipes apart: their lines' order between them may differ)
    assert sorted((p[1], p[2], p[3]) for p in parsed) == [
        ("stderr", "F", "err"), ("stdout", "F", "got hello"), ("stdout", "F", "out")], lines
    assert [p[3] for p in parsed if p[1] == "stdout"] == ["out", "got hello"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[-+Z].*", p[0])
               for p in parsed), lines
    assert test_oci.status(oci, cid) == "stopped"
    oci("delete", cid, check=True)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{cpid}").exists() and "Z" not in Path(
            f"/proc/{cpid}/stat").read_text().split(")")[1].split()[0]:
        assert time.monotonic() < deadline, "conmon did not exit after its container"
        time.sleep(0.05)
    assert not os.path.exists(root / cid)
