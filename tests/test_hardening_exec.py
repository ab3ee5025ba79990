"""Hardening of stdio and of `rl exec`, attacked from inside the container.

* No file description of the caller's (its terminal, pipes, files) ever
  enters the container: stdio crosses through pipes or a pty rl owns.
* The joining process of `rl exec` is a copy of the CLI until it execs:
  nothing of it (environment, arguments, descriptors, memory) is readable
  from inside meanwhile.
* The user lookup in the container's files never blocks and never follows
  a /proc magic link.
* Any kind of stdin works with -i: a regular file, /dev/null, a closed one.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import support
from support import RlRunner


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


@pytest.fixture
def ctr(rl: RlRunner, rootfs: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A running container with a private /tmp (the shared rootfs stays untouched)."""
    name = "hx-" + request.node.name.replace("[", "_").replace("]", "")[:50]
    rl("run", "-d", "--name", name, "--tmpfs", "/tmp", "--rootfs", rootfs,
       "sleep", "1000", check=True)
    yield name
    rl("rm", "-f", name)


def spawn(rl_path: Path, *args: str, stdin: int | None = None, stdout: int | None = None,
          stderr: int | None = None) -> subprocess.Popen[bytes]:
    """rl on descriptors of the test's own (the rl fixture's are its own pipes)."""
    return subprocess.Popen([str(rl_path), *args], stdin=stdin, stdout=stdout, stderr=stderr,
                            start_new_session=True)


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"{proc.args} did not exit within {timeout}s", pytrace=False)


def inside(rl: RlRunner, name: str, script: str) -> str:
    r = rl("exec", name, "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    return r.stdout


def pipe_inode(fd: int) -> str:
    return f"pipe:[{os.fstat(fd).st_ino}]"


def read_available(fd: int) -> bytes:
    """What the pipe holds now, without waiting for its writers."""
    os.set_blocking(fd, False)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


# --------------------------------------------------------------------------
# 1. The caller's stdio never enters the container

THIEF = r"""
while [ ! -s /tmp/pid ]; do sleep 0.05; done
p=$(cat /tmp/pid)
exec 3>/proc/$p/fd/1 4</proc/$p/fd/0 5>/proc/$p/fd/2
for f in 0 1 2; do readlink /proc/$p/fd/$f; done > /tmp/links
touch /tmp/stolen
while [ ! -e /tmp/after ]; do sleep 0.05; done
(echo LATE-OUT >&3; echo LATE-ERR >&5) 2>/dev/null
timeout 10 head -n 1 <&4 > /tmp/read
touch /tmp/done
"""


def test_exec_stdio_reopened_from_inside_is_only_rls_pipe(rl: RlRunner, rl_path: Path,
                                                          ctr: str) -> None:
    # A process of the container reopens the exec'd process's stdio through
    # /proc/<pid>/fd and keeps them. It must get rl's pipes, and through
    # them nothing of the caller's once the exec has ended: neither a line
    # the user types afterwards, nor a way to print onto the user's output.
    rl("exec", "-d", ctr, "sh", "-c", THIEF, check=True)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    callers = {pipe_inode(fd) for fd in (in_r, out_w, err_w)}
    proc = spawn(rl_path, "exec", "-i", ctr, "sh", "-c",
                 "echo $$ > /tmp/pid; while [ ! -e /tmp/stolen ]; do sleep 0.05; done; "
                 "echo victim-done", stdin=in_r, stdout=out_w, stderr=err_w)
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    try:
        assert finish(proc) == 0
        links = inside(rl, ctr, "cat /tmp/links").split()
        assert len(links) == 3 and all(re.fullmatch(r"pipe:\[\d+\]", x) for x in links), links
        assert not callers & set(links), "the caller's own pipe is in the container"
        # The user types a line after `rl exec` returned.
        try:
            os.write(in_w, b"typed-afterwards\n")
        except BrokenPipeError:
            pass  # nobody holds the caller's stdin any more: the point
        inside(rl, ctr, "touch /tmp/after")
        assert support.wait_until(
            lambda: rl("exec", ctr, "test", "-e", "/tmp/done").returncode == 0, timeout=60)
        assert inside(rl, ctr, "cat /tmp/read") == ""
        assert read_available(out_r) == b"victim-done\n"
        assert read_available(err_r) == b""
    finally:
        for fd in (in_w, out_r, err_r):
            os.close(fd)


def test_exec_stdin_without_i_is_dev_null_and_output_pipes_are_rls(rl: RlRunner,
                                                                   ctr: str) -> None:
    out = inside(rl, ctr, "for f in 0 1 2; do readlink /proc/$$/fd/$f; done")
    stdin, stdout, stderr = out.split()
    assert stdin == "/dev/null"
    assert re.fullmatch(r"pipe:\[\d+\]", stdout) and re.fullmatch(r"pipe:\[\d+\]", stderr)
    assert stdout != stderr  # two streams, kept apart as docker keeps them


@pytest.mark.parametrize("how", ["run", "start"])
def test_container_stdio_are_the_supervisors_pipes(rl: RlRunner, rl_path: Path, rootfs: Path,
                                                   how: str) -> None:
    # rl run and rl start -a give PID 1 the supervisor's pipes, never the
    # descriptors of the rl command that attached.
    script = "for f in 0 1 2; do readlink /proc/1/fd/$f; done"
    name = f"hx-sup-{how}"
    if how == "run":
        args = ["run", "--rm", "-i", "--name", name, "--rootfs", str(rootfs), "sh", "-c", script]
    else:
        rl("create", "-i", "--name", name, "--rootfs", rootfs, "sh", "-c", script, check=True)
        args = ["start", "-a", "-i", name]
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    callers = {pipe_inode(fd) for fd in (in_r, out_w, err_w)}
    proc = spawn(rl_path, *args, stdin=in_r, stdout=out_w, stderr=err_w)
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    try:
        os.close(in_w)
        assert finish(proc) == 0, read_available(err_r)
        links = read_available(out_r).decode().split()
        assert len(links) == 3 and all(re.fullmatch(r"pipe:\[\d+\]", x) for x in links), links
        assert not callers & set(links)
    finally:
        for fd in (out_r, err_r):
            os.close(fd)
        rl("rm", "-f", name)
    r = rl("run", "--rm", "--rootfs", rootfs, "readlink", "/proc/1/fd/0")
    assert r.stdout == "/dev/null\n"


@pytest.mark.parametrize("flags", [[], ["-t"]])
def test_exec_returns_when_its_process_exits_though_a_child_keeps_the_output(
        rl: RlRunner, ctr: str, flags: list[str]) -> None:
    # The background sleep keeps the pipes (or the pty) open for 1000 s:
    # rl exec returns once sh has exited and the output is drained (2 s at
    # most, as docker's daemon waits for an exec's streams).
    r = rl("exec", *flags, ctr, "sh", "-c", "trap '' HUP; sleep 1000 & echo started; exit 4",
           timeout=30)
    assert r.returncode == 4
    assert r.stdout.replace("\r\n", "\n") == "started\n"


def test_exec_output_to_a_closed_reader_stops_the_writer(rl: RlRunner, rl_path: Path,
                                                        ctr: str) -> None:
    # `rl exec ctr yes | head -1`: when nobody reads rl's output any more, the
    # container's writer gets EPIPE, as in a shell pipeline.
    r = subprocess.run(["sh", "-c", f"'{rl_path}' exec {ctr} yes | head -n 1"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout == "y\n"
    assert support.wait_until(lambda: "yes" not in inside(rl, ctr, "ps -o comm"), timeout=30)


# --------------------------------------------------------------------------
# 2. Nothing of the CLI is readable through the joining process

WATCHER = r"""
while :; do
  for d in /proc/[0-9]*; do
    read -r c < $d/comm 2>/dev/null || continue
    [ "$c" = rl ] || continue
    p=${d#/proc/}
    kill -STOP $p 2>/dev/null || continue
    while read -r x x s x < $d/stat 2>/dev/null && [ "$s" != T ] && [ "$s" != Z ]; do :; done
    read -r c < $d/comm 2>/dev/null
    if [ "$c" != rl ]; then kill -CONT $p; continue; fi
    r=/tmp/caught.$p
    {
      cat $d/environ && echo ENVIRON-READ
      ls -l $d/fd/ && echo FD-LISTED
      for f in fd/0 fd/1 fd/2 root cwd exe; do readlink $d/$f && echo "LINK $f"; done
      true < $d/mem && echo MEM-OPENED
      cat $d/maps && echo MAPS-READ
      echo; echo "CMDLINE $(tr '\0' ' ' < $d/cmdline)"
      read -r c < $d/comm; echo "STILL $c"
    } > $r.tmp 2>&1
    mv $r.tmp $r
    kill -CONT $p
  done
done
"""


def test_joining_process_is_unreadable_from_inside(rl: RlRunner, rootfs: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # A watcher inside stops every process that is still rl (E2 before its
    # exec), then reads what /proc shows of it: environment, descriptors,
    # memory, root, maps and arguments of the CLI must all stay out of reach,
    # even of a container with CAP_SYS_PTRACE (without it, the kernel only
    # denies ptrace access until E2 has dropped to the container's capabilities).
    name = "hx-watched"
    rl("run", "-d", "--name", name, "--cap-add", "SYS_PTRACE", "--tmpfs", "/tmp",
       "--rootfs", rootfs, "sh", "-c", WATCHER, check=True)
    secret = "host-secret-" + secrets.token_hex(8)
    marker = "RL_ARGV_MARKER_" + secrets.token_hex(8)  # unset: it never reaches the container
    monkeypatch.setenv("RL_TEST_SECRET", secret)
    try:
        records: list[str] = []
        for _ in range(100):
            r = rl("exec", "-e", marker, name, "true")
            assert r.returncode == 0, r.stderr
            out = rl("exec", name, "sh", "-c", "cat /tmp/caught.* 2>/dev/null").stdout
            records = [c for c in out.split("STILL rl\n") if "CMDLINE" in c]
            if records:
                break
        assert records, "the watcher never caught a joining process before its exec"
        for rec in records:
            for leak in ("ENVIRON-READ", "FD-LISTED", "LINK ", "MEM-OPENED", "MAPS-READ"):
                assert leak not in rec, rec
            assert secret not in rec and marker not in rec, rec
            cmdline = rec.partition("CMDLINE ")[2].split()
            assert cmdline == ["rl", "exec"], rec
    finally:
        rl("rm", "-f", name)


# --------------------------------------------------------------------------
# 5. The user lookup never blocks and follows no magic link


@pytest.mark.parametrize(("setup", "why"), [
    ("rm /etc/passwd; mkfifo /etc/passwd", "not a regular file"),
    ("rm /etc/group; mkfifo /etc/group", "not a regular file"),
    ("rm /etc/passwd; ln -s /dev/null /etc/passwd", "not a regular file"),
    ("rm /etc/passwd; ln -s /proc/self/fd/0 /etc/passwd", "Too many levels of symbolic links"),
    ("truncate -s 40M /etc/passwd", "larger than 32 MiB"),
    # No magic links, but files of the joining process itself: its environ is
    # the CLI's (refused at the open: the process is non-dumpable), and no
    # file of /proc is an account file either.
    ("rm /etc/passwd; ln -s /proc/self/environ /etc/passwd", "Permission denied"),
    ("rm /etc/passwd; ln -s /proc/self/status /etc/passwd", "a file of /proc or /sys"),
    ("rm /etc/group; ln -s /proc/self/stat /etc/group", "a file of /proc or /sys"),
])
def test_exec_user_lookup_refuses_what_is_no_account_file(rl: RlRunner, fresh_rootfs: Path,
                                                          setup: str, why: str) -> None:
    name = "hx-users"
    rl("run", "-d", "--name", name, "--rootfs", fresh_rootfs, "sleep", "1000", check=True)
    try:
        inside(rl, name, setup)
        # -i: a passwd read from its own stdin would take the caller's input.
        r = rl("exec", "-i", "-u", "user", name, "id", input="evil:x:0:0::/:/bin/sh\n",
               timeout=30)
        assert r.returncode == 126, r.stderr
        assert r.stderr.startswith("Error: unable to read /etc/"), r.stderr
        assert why in r.stderr and "Traceback" not in r.stderr
    finally:
        rl("rm", "-f", name)


def test_run_user_lookup_stays_in_the_root_and_never_blocks(rl: RlRunner,
                                                            fresh_rootfs: Path) -> None:
    # A ../ symlink means the container's own file, never the host's; a FIFO
    # is refused at once (the start used to hang with it).
    etc = fresh_rootfs / "etc"
    (etc / "passwd").rename(etc / "passwd.real")
    (etc / "passwd").symlink_to("../../../../../../etc/passwd.real")
    r = rl("run", "--rm", "-u", "user", "--rootfs", fresh_rootfs, "id", "-u", timeout=30)
    assert (r.returncode, r.stdout) == (0, "1000\n"), r.stderr
    (etc / "group").unlink()
    os.mkfifo(etc / "group")
    r = rl("run", "--rm", "-u", "user", "--rootfs", fresh_rootfs, "id", timeout=30)
    assert r.returncode == 126
    assert r.stderr == "Error: unable to read /etc/group of the container: " \
                       "not a regular file\n"


# --------------------------------------------------------------------------
# 11. Any kind of stdin


@pytest.mark.parametrize("kind", ["file", "devnull", "closed"])
@pytest.mark.parametrize("how", ["run", "start", "exec", "exec-t"])
def test_interactive_with_any_stdin(rl: RlRunner, rl_path: Path, rootfs: Path,
                                    tmp_path: Path, request: pytest.FixtureRequest,
                                    kind: str, how: str) -> None:
    # More than a pipe holds, in lines short enough for a pty's line editing.
    text_file = tmp_path / "input.txt"
    text_file.write_text("".join(f"line {i:05d}\n" for i in range(20000)))
    redirect = {"file": f"< '{text_file}'", "devnull": "< /dev/null", "closed": "<&-"}[kind]
    expected = text_file.read_text() if kind == "file" else ""
    ctr = request.getfixturevalue("ctr") if how.startswith("exec") else ""
    if how == "run":
        args = f"run --rm -i --rootfs '{rootfs}' cat"
    elif how == "start":
        rl("create", "-i", "--name", "hx-stdin", "--rootfs", rootfs, "cat", check=True)
        args = "start -a -i hx-stdin"
    elif how == "exec":
        args = f"exec -i {ctr} cat"
    else:
        # The pty echoes what arrives before `stty -echo`; cat's copy comes last.
        args = f"exec -i -t {ctr} sh -c 'stty -echo; cat'"
    try:
        r = subprocess.run(["sh", "-c", f"exec '{rl_path}' {args} {redirect}"],
                           capture_output=True, text=True, timeout=60)
    finally:
        if how == "start":
            rl("rm", "-f", "hx-stdin")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    if how == "exec-t":
        assert r.stdout.replace("\r\n", "\n").endswith(expected)
    else:
        assert r.stdout == expected


def test_closed_stdout_is_not_a_crash(rl_path: Path, rootfs: Path) -> None:
    r = subprocess.run(["sh", "-c", f"exec '{rl_path}' run --rm --rootfs '{rootfs}' "
                        "echo hi >&-"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, "")
