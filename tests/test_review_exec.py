"""Review of `rl exec` (the h-stdio branch), attacked from inside the container."""

from __future__ import annotations

import os
import re
import shutil
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
def admin_ctr(rl: RlRunner, rootfs: Path) -> Iterator[str]:
    """A running container whose root may mount (CAP_SYS_ADMIN)."""
    name = "rv-admin"
    rl("run", "-d", "--name", name, "--cap-add", "SYS_ADMIN", "--tmpfs", "/tmp",
       "--rootfs", rootfs, "sleep", "1000", check=True)
    yield name
    rl("rm", "-f", name)


def test_exec_does_not_read_the_containers_own_proc(rl: RlRunner, admin_ctr: str) -> None:
    # The joining process checked setgroups and the id maps through the
    # container's /proc, which its root may cover with anything: FIFOs there
    # hung every later `rl exec` (as the FIFO at /etc/passwd did), and other
    # contents would have decided which ids count as mapped.
    r = rl("exec", admin_ctr, "sh", "-c",
           "mkdir -p /tmp/fake/self && mkfifo /tmp/fake/self/setgroups "
           "/tmp/fake/self/uid_map /tmp/fake/self/gid_map && mount --bind /tmp/fake /proc",
           timeout=30)
    assert r.returncode == 0, r.stderr
    r = rl("exec", admin_ctr, "echo", "joined", timeout=30)
    assert (r.returncode, r.stdout) == (0, "joined\n"), r.stderr
    r = rl("exec", "-u", "1000:1000", admin_ctr, "id", "-u", timeout=30)
    assert (r.returncode, r.stdout) == (0, "1000\n"), r.stderr


@pytest.fixture
def ctr(rl: RlRunner, rootfs: Path) -> Iterator[str]:
    name = "rv-exec"
    rl("run", "-d", "--name", name, "--tmpfs", "/tmp", "--rootfs", rootfs, "sleep", "1000",
       check=True)
    yield name
    rl("rm", "-f", name)


def test_exec_never_signals_a_pid_it_does_not_own(rl_path: Path, ctr: str,
                                                  tmp_path: Path) -> None:
    # rl forwarded a signal to E2's pid with kill(2), though E2 is E1's child:
    # once E1 had reaped it (and for the 2 s of draining after E1's exit),
    # that pid could be any other process of the user's. rl now signals only
    # E1, through a pidfd, and E1 its own child.
    strace = shutil.which("strace")
    support.require(strace is not None, "strace is not installed")
    assert strace is not None
    log = tmp_path / "strace.log"
    proc = subprocess.Popen(
        [strace, "-o", str(log), "-e", "trace=kill,tgkill,pidfd_send_signal,wait4",
         str(rl_path), "exec", ctr, "sh", "-c", "sleep 1000 & echo started; exit 0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        # sh has exited (the sleep keeps the output: rl drains it for 2 s).
        assert support.wait_until(lambda: "wait4(" in log.read_text(), timeout=30)
        time.sleep(0.3)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        os.kill(int(children[0]), signal.SIGTERM)  # rl, traced by strace
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert "--- SIGTERM" in text, text
    assert not re.search(r"^(kill|tgkill)\(", text, re.M), text


def test_exec_forwards_a_terminal_interrupt_once(rl: RlRunner, rl_path: Path,
                                                 ctr: str) -> None:
    # ^C reaches the whole foreground process group of the caller: rl and,
    # unless it left that group, E1, which now forwards signals too.
    script = ('trap "echo INT" INT; echo ready; '
              'while [ ! -e /tmp/stop ]; do sleep 0.1; done; echo end')
    proc = subprocess.Popen([str(rl_path), "exec", ctr, "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(1)
        assert rl("exec", ctr, "touch", "/tmp/stop").returncode == 0
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert out == b"INT\nend\n"
