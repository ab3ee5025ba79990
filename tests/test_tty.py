"""-t: a real terminal in the container; resizing and Ctrl-C reach it."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import termios
import time
from pathlib import Path

import pytest

import support
from support import RlRunner


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


class Terminal:
    """rl running on the slave side of a pty we own, like a user's terminal."""

    def __init__(self, argv: list[str], rows: int = 30, cols: int = 100) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - child
            os.execv(argv[0], argv)
        self.resize(rows, cols, notify=False)
        self.buf = b""

    def resize(self, rows: int, cols: int, notify: bool = True) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if notify:
            os.kill(self.pid, signal.SIGWINCH)

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def expect(self, needle: bytes, timeout: float = 15) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen; got {self.buf[-500:]!r}")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"EOF before {needle!r}; got {self.buf[-500:]!r}")
                self.buf += chunk
        head, _, self.buf = self.buf.partition(needle)
        return head

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            # keep draining so rl never blocks on a full pty
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if r:
                try:
                    os.read(self.fd, 4096)
                except OSError:
                    pass
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("rl did not exit")


def test_run_it_is_a_real_terminal(rl_path: Path, rootfs: Path) -> None:
    term = Terminal([str(rl_path), "run", "-it", "--rm", "--rootfs", str(rootfs), "sh"],
                    rows=33, cols=111)
    term.expect(b"/ # ")  # the shell is up (rl has put the terminal in raw mode)
    term.send(b"tty; stty size; echo MA''RK1\r")
    out = term.expect(b"MARK1\r\n")
    assert b"/dev/pts/0" in out
    assert b"33 111" in out
    term.resize(40, 120)
    # The resize travels rl -> supervisor -> pty asynchronously: ask until seen.
    for _ in range(50):
        term.send(b"stty size; echo MA''RK2\r")
        if b"40 120" in term.expect(b"MARK2\r\n"):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the container never saw the new terminal size")
    # Ctrl-C interrupts the foreground job, not rl or the shell.
    term.send(b"sleep 30\r")
    time.sleep(0.5)
    term.send(b"\x03")
    term.send(b"echo af''ter; echo MA''RK3\r")
    term.expect(b"after\r\nMARK3\r\n")
    term.send(b"exit 7\r")
    assert term.wait() == 7


def test_init_puts_the_command_in_the_terminals_foreground(rl_path: Path,
                                                          rootfs: Path) -> None:
    # catatonit runs the command in a process group of its own and hands it the
    # terminal: the shell's group is the tty's foreground group, so Ctrl-C is
    # the command's (and the init, in another group, is left alone).
    term = Terminal([str(rl_path), "run", "-it", "--rm", "--init", "--rootfs", str(rootfs),
                     "sh", "-c", "cut -d' ' -f1,5,8 /proc/$$/stat; cat /proc/1/comm; "
                     "echo READY; sleep 30"])
    out = term.expect(b"READY\r\n").decode()
    pid, pgrp, tpgid = out.splitlines()[-2].split()
    assert pid == pgrp == tpgid and pid != "1", out
    assert out.splitlines()[-1] == "catatonit", out
    term.send(b"\x03")
    assert term.wait() == 130


def test_run_it_restores_the_terminal_and_exec_it(rl: RlRunner, rl_path: Path,
                                                  rootfs: Path) -> None:
    rl("run", "-d", "--name", "ttyexec", "--rootfs", rootfs, "sleep", "60", check=True)
    try:
        term = Terminal([str(rl_path), "exec", "-it", "ttyexec", "sh"], rows=25, cols=90)
        term.expect(b"/ # ")
        term.send(b"tty; stty size; echo $$; echo MA''RK\r")
        out = term.expect(b"MARK\r\n")
        assert b"/dev/pts/" in out and b"25 90" in out
        term.send(b"exit 5\r")
        assert term.wait() == 5
    finally:
        rl("rm", "-f", "ttyexec")


def test_exec_with_a_tty_sets_term_as_docker(rl: RlRunner, rl_path: Path,
                                              rootfs: Path) -> None:
    # docker: TERM=xterm for a tty, under the container's Env and exec's -e
    # (`rl exec -it CTR clear` said "TERM environment variable not set").
    rl("run", "-d", "--name", "ttyterm", "-e", "KEEP=1", "--rootfs", rootfs, "sleep", "60",
       check=True)
    try:
        term = Terminal([str(rl_path), "exec", "-it", "ttyterm", "sh", "-c",
                         'echo "T=$TERM K=$KEEP"'])
        term.expect(b"T=xterm K=1\r\n")
        assert term.wait() == 0
        term = Terminal([str(rl_path), "exec", "-it", "-e", "TERM=vt100", "ttyterm", "sh", "-c",
                         'echo "T=$TERM"'])
        term.expect(b"T=vt100\r\n")
        assert term.wait() == 0
        plain = rl("exec", "ttyterm", "sh", "-c", 'echo "T=${TERM-unset}"', check=True)
        assert plain.stdout.strip() == "T=unset"
    finally:
        rl("rm", "-f", "ttyterm")


def test_tty_output_is_logged(rl: RlRunner, rl_path: Path, rootfs: Path) -> None:
    term = Terminal([str(rl_path), "run", "-t", "--name", "ttylog", "--rootfs", str(rootfs),
                     "sh", "-c", "echo logged-through-pty"])
    assert term.wait() == 0
    try:
        assert "logged-through-pty" in rl("logs", "ttylog", check=True).stdout
    finally:
        rl("rm", "ttylog")


def test_a_killed_client_leaves_a_tty_container_running(rl: RlRunner, rl_path: Path,
                                                        rootfs: Path) -> None:
    term = Terminal([str(rl_path), "run", "-it", "--name", "ttysurvivor", "--rootfs",
                     str(rootfs), "sh"])
    try:
        term.expect(b"/ # ")
        os.kill(term.pid, signal.SIGKILL)
        os.waitpid(term.pid, 0)
        time.sleep(0.3)
        out = rl("exec", "ttysurvivor", "echo", "alive", check=True).stdout
        assert out == "alive\n"
    finally:
        rl("rm", "-f", "ttysurvivor")
