"""`rl attach`: a running container's stdio or terminal through its supervisor."""

from __future__ import annotations

import os
import select
import signal
import subprocess
from pathlib import Path

import pytest
from test_tty import Terminal

import support
from support import RlRunner, RlState


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


def _attached(term: Terminal) -> Terminal:
    """Wait until the shell answers through the attach: input typed before rl put the
    terminal in raw mode is the terminal's, flushed by that switch (as a user's is)."""
    for _ in range(30):
        term.send(b"\r")
        try:
            term.expect(b"/ # ", timeout=1)
            return term
        except AssertionError:
            continue
    raise AssertionError(f"no prompt through the attach: {term.buf[-300:]!r}")


def _running(rl: RlRunner, name: str) -> bool:
    out = rl("inspect", "-f", "{{.State.Status}}", name).stdout.strip()
    return out == "running"


def test_run_d_then_attach_a_terminal_and_detach_with_ctrl_p_ctrl_q(
        rl: RlRunner, rl_path: Path, rootfs: Path) -> None:
    rl("run", "-d", "-it", "--name", "attty", "--rootfs", str(rootfs), "sh", check=True)
    try:
        term = _attached(Terminal([str(rl_path), "attach", "attty"]))
        term.send(b"echo $((6*7))\r")
        term.expect(b"42")
        term.send(b"\x10\x11")  # Ctrl-P Ctrl-Q
        assert term.wait() == 0
        assert b"read escape" not in term.buf
        assert _running(rl, "attty")
        # The shell is still there for the next attacher, and its exit is attach's.
        again = _attached(Terminal([str(rl_path), "attach", "attty"]))
        again.send(b"exit 5\r")
        assert again.wait() == 5
    finally:
        rl("rm", "-f", "attty")


def test_two_attachers_see_the_same_output_and_custom_detach_keys(
        rl: RlRunner, rl_path: Path, rootfs: Path) -> None:
    rl("run", "-d", "-it", "--name", "attwo", "--rootfs", str(rootfs), "sh", check=True)
    try:
        a = _attached(Terminal([str(rl_path), "attach", "--detach-keys", "ctrl-x,e",
                                "attwo"]))
        b = _attached(Terminal([str(rl_path), "attach", "attwo"]))
        a.send(b"echo a-$((1+1))\r")
        a.expect(b"a-2")
        b.expect(b"a-2")  # what a typed, b saw the answer of
        a.send(b"\x18e")  # ctrl-x,e
        assert a.wait() == 0
        b.send(b"echo still-b\r")
        b.expect(b"still-b")
        b.send(b"\x10\x11")
        assert b.wait() == 0
        assert _running(rl, "attwo")
    finally:
        rl("rm", "-f", "attwo")


def test_signals_are_proxied_and_sig_proxy_false_leaves_them(
        rl: RlRunner, rl_path: Path, rl_state: RlState, rootfs: Path) -> None:
    script = "trap 'echo got-term; exit 3' TERM; while :; do echo tick; sleep 0.1; done"
    rl("run", "-d", "--name", "atsig", "--rootfs", str(rootfs), "sh", "-c", script, check=True)
    env = {**os.environ, **rl_state.env()}
    try:
        quiet = subprocess.Popen([str(rl_path), "attach", "--sig-proxy=false", "atsig"],
                                 stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        assert quiet.stdout is not None
        assert quiet.stdout.readline() == b"tick\n"
        quiet.send_signal(signal.SIGTERM)
        assert quiet.wait(timeout=20) != 3
        assert _running(rl, "atsig")
        proxy = subprocess.Popen([str(rl_path), "attach", "atsig"], stdout=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, env=env)
        assert proxy.stdout is not None
        assert proxy.stdout.readline() == b"tick\n"
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(timeout=20) == 3
        assert b"got-term" in proxy.stdout.read()
    finally:
        rl("rm", "-f", "atsig")


def test_no_stdin_and_a_pipe_attacher_that_detaches_leaves_stdin_open(
        rl: RlRunner, rl_path: Path, rl_state: RlState, rootfs: Path) -> None:
    # cat echoes what it reads: stdin must stay open across a detach (docker's).
    rl("run", "-d", "-i", "--name", "atpipe", "--rootfs", str(rootfs), "cat", check=True)
    env = {**os.environ, **rl_state.env()}
    try:
        watcher = subprocess.Popen([str(rl_path), "attach", "--no-stdin", "atpipe"],
                                   stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        assert watcher.stdout is not None
        # The watcher is attached once a line typed by a writer comes back to it.
        for _ in range(50):
            writer = subprocess.run([str(rl_path), "attach", "atpipe"],
                                    input=b"line-one\n\x10\x11", env=env,
                                    capture_output=True, timeout=30)
            assert writer.returncode == 0, writer.stderr
            if select.select([watcher.stdout], [], [], 0.5)[0]:
                break
        assert watcher.stdout.readline() == b"line-one\n"
        assert _running(rl, "atpipe")
        # stdin still open: another attacher's line reaches cat.
        # A Ctrl-P that does not begin the sequence goes through as it was typed.
        subprocess.run([str(rl_path), "attach", "atpipe"], input=b"line\x10two\n\x10\x11",
                       env=env, capture_output=True, timeout=30, check=True)
        line = watcher.stdout.readline()
        while line == b"line-one\n":
            line = watcher.stdout.readline()
        assert line == b"line\x10two\n"
        rl("kill", "atpipe", check=True)
        assert watcher.wait(timeout=20) == 137
    finally:
        rl("rm", "-f", "atpipe")


def test_attach_to_a_stopped_or_created_container_is_refused(rl: RlRunner,
                                                             rootfs: Path) -> None:
    rl("create", "--name", "atcreated", "--rootfs", str(rootfs), "true", check=True)
    rl("run", "--name", "atexited", "--rootfs", str(rootfs), "sh", "-c", "exit 4")
    try:
        for name in ("atcreated", "atexited"):
            proc = rl("attach", name, timeout=20)
            assert proc.returncode == 1
            assert proc.stderr == ("Error: You cannot attach to a stopped container, "
                                   "start it first\n")
        missing = rl("attach", "atnosuch")
        assert missing.returncode == 1 and "no such container: atnosuch" in missing.stderr
        bad = rl("attach", "--detach-keys", "ctrl-1", "atexited")
        assert bad.returncode == 125 and "Invalid detach keys (ctrl-1)" in bad.stderr
    finally:
        rl("rm", "atcreated", "atexited")


def test_attach_emits_its_event(rl: RlRunner, rl_path: Path, rootfs: Path) -> None:
    rl("run", "-d", "-it", "--name", "atev", "--rootfs", str(rootfs), "sh", check=True)
    try:
        term = _attached(Terminal([str(rl_path), "attach", "atev"]))
        term.send(b"echo ok-$((2+2))\r")
        term.expect(b"ok-4")
        term.send(b"\x10\x11")
        assert term.wait() == 0
        out = rl("events", "--since", "10m", "--until", "0s", "--filter", "container=atev",
                 "--filter", "event=attach", "--format", "{{.Action}}", check=True).stdout
        assert out == "attach\n"
    finally:
        rl("rm", "-f", "atev")


def test_run_it_detaches_with_ctrl_p_ctrl_q_and_attach_takes_over(
        rl: RlRunner, rl_path: Path, rootfs: Path) -> None:
    term = Terminal([str(rl_path), "run", "-it", "--name", "atrun", "--rootfs", str(rootfs),
                     "sh"])
    try:
        term.expect(b"/ # ")
        term.send(b"echo run-$((5+5))\r")
        term.expect(b"run-10")
        term.send(b"\x10\x11")
        assert term.wait() == 0
        assert _running(rl, "atrun")
        again = _attached(Terminal([str(rl_path), "attach", "atrun"]))
        again.send(b"echo back-$((1+2))\r")
        again.expect(b"back-3")
        again.send(b"exit 6\r")
        assert again.wait() == 6
        # start -ai takes the same keys
        term = Terminal([str(rl_path), "start", "-ai", "atrun"])
        _attached(term)
        term.send(b"\x10\x11")
        assert term.wait() == 0
        assert _running(rl, "atrun")
    finally:
        rl("rm", "-f", "atrun")
