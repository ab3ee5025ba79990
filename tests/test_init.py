"""--init: PID 1 is catatonit exec'd with the container's environment; nothing of the
caller's environment, argv or memory is readable from inside."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import support
from support import RlRunner


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


# Inside the container: every few moments, read every process's environ,
# cmdline, fds, cwd, root and exe, and all of PID 1's readable memory, and
# note any string that looks like the host-only marker (the pattern cannot
# match itself). An exec'd probe waits until the watcher has seen it, so the
# watcher provably looked while rl exec's processes were there.
WATCHER = r"""
scan() {
    for p in /proc/[0-9]*; do
        tr '\0' '\n' < $p/environ
        tr '\0' '\n' < $p/cmdline
        for l in $p/fd/* $p/cwd $p/root $p/exe; do readlink $l; done
        readlink $p/exe >> /w/exes
    done 2>/dev/null
}
mem() {
    while read -r range perms rest; do
        case $perms in r*) ;; *) continue ;; esac
        s=${range%-*}; e=${range#*-}
        case $s in ffffffff*) continue ;; esac
        dd if=/proc/$1/mem bs=4096 skip=$((0x$s / 4096)) count=$(((0x$e - 0x$s) / 4096))
    done < /proc/$1/maps 2>/dev/null | tr -c 'A-Za-z0-9=_' '\n'
}
n=0
while [ ! -e /w/stop ]; do
    scan > /w/scan
    mem 1 > /w/mem
    cat /w/scan /w/mem | grep -o 'h[o]stonly[0-9a-f]*' >> /w/found
    grep -qx 'SECRET=given' /w/scan && touch /w/env-ok
    grep -qx 'SECRET=given' /w/mem && touch /w/mem-ok
    for t in $(grep -o 'pr[o]be-[0-9][0-9]*' /w/scan); do touch /w/seen-$t; done
    n=$((n + 1))
done
echo rounds $n
sort -u /w/found | sed 's/^/found /'
sort -u /w/exes | sed 's/^/exe /'
[ -e /w/env-ok ] && echo env-ok
[ -e /w/mem-ok ] && echo mem-ok
for f in /proc/1/fd/*; do echo "pid1fd ${f##*/} $(readlink $f)"; done
"""


def test_nothing_of_the_callers_environment_is_readable_inside(
        rl: RlRunner, rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = "hostonly" + os.urandom(8).hex()
    # In the environment of the rl commands and in their working directory, not
    # passed with -e: the supervisor and rl exec's joining processes hold both,
    # the container must not see them.
    cwd = tmp_path / marker
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("RL_TEST_HOST_ONLY", marker)
    rl("run", "-d", "--init", "--name", "initwatch", "-e", "SECRET=given", "--tmpfs", "/w",
       "--rootfs", rootfs, "sh", "-c", WATCHER, check=True)
    try:
        for i in range(5):
            rl("exec", "initwatch", "sh", "-c", "until [ -e /w/seen-$0 ]; do sleep 0.05; done",
               f"probe-{i}", check=True)
        rl("exec", "initwatch", "touch", "/w/stop", check=True)
        assert rl("wait", "initwatch", check=True).stdout.strip() == "0"
        out = rl("logs", "initwatch", check=True).stdout.splitlines()
    finally:
        rl("rm", "-f", "initwatch")
    assert [line for line in out if line.startswith("found")] == []
    # The watcher could read what it looked at: the container's own variable
    # is in PID 1's environ and memory.
    assert "env-ok" in out and "mem-ok" in out, out
    exes = [line.split(None, 1)[1] for line in out if line.startswith("exe ")]
    assert any(e.endswith("/catatonit") for e in exes), exes
    assert not any("python" in e for e in exes), exes
    # catatonit holds stdio and its signalfd, nothing of the supervisor's.
    fds = dict(line.split()[1:3] for line in out if line.startswith("pid1fd"))
    assert sorted(fds) == ["0", "1", "2", "3"], fds
    assert fds["0"] == "/dev/null" and fds["3"] == "anon_inode:[signalfd]", fds
    assert fds["1"].startswith("pipe:") and fds["2"].startswith("pipe:"), fds


def test_the_init_runs_as_the_command_does(rl: RlRunner, rootfs: Path) -> None:
    # -u, the capabilities and the seccomp filter apply to catatonit as to the command.
    script = ("s() { grep -E '^(Uid|Gid|Groups|CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' "
              "/proc/$1/status; }; s 1; echo --; s self")
    for flags, uid in (([], "0"), (["-u", "1000:1000"], "1000")):
        r = rl("run", "--rm", "--init", *flags, "--rootfs", rootfs, "sh", "-c", script,
               check=True)
        pid1, mine = r.stdout.split("--\n")
        assert pid1 == mine, r.stdout
        assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in pid1, pid1
        assert "Seccomp:\t2" in pid1, pid1


def test_exec_failures_keep_their_codes(rl: RlRunner, rootfs: Path) -> None:
    # catatonit itself would report any of these as its exit 1 after the start.
    for args, code, message in (
        (["nosuch"], 127, 'exec: "nosuch": executable file not found in $PATH'),
        (["/etc"], 126, 'exec: "/etc": permission denied'),
        (["/etc/passwd"], 126, 'exec: "/etc/passwd": permission denied'),
    ):
        for mode in (["--rm"], ["-d", "--rm"]):  # -d too: the error comes before "started"
            r = rl("run", *mode, "--init", "--rootfs", rootfs, *args)
            assert r.returncode == code, r.stderr
            assert r.stderr == f"Error: {message}\n"
    r = rl("run", "--rm", "--init", "-e", "PATH=/nowhere:/bin", "--rootfs", rootfs, "true")
    assert r.returncode == 0, r.stderr


def test_without_catatonit_init_is_refused_at_create(rl: RlRunner, rl_path: Path,
                                                    rootfs: Path, tmp_path: Path) -> None:
    # Hide catatonit behind /dev/null (not executable) in a mount namespace of our own.
    hide = " && ".join(f"mount --bind /dev/null {p}" for p in
                       ("/usr/bin/catatonit", "/usr/libexec/podman/catatonit")
                       if os.path.exists(p))
    support.require(bool(hide), "catatonit is not installed (Debian package catatonit)")
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    script = (f"{hide} && export XDG_RUNTIME_DIR={run_dir} && "
              f"for c in create run; do {rl_path} $c --init --name nocatatonit "
              f"--rootfs {rootfs} true; echo rc=$?; done")
    try:
        r = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True,
                           text=True, timeout=60)
    finally:
        support.kill_recorded_pids(run_dir)  # the fork server it started
    assert r.stdout.split() == ["rc=125", "rc=125"], r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and all(ln == lines[0] for ln in lines), r.stderr
    assert lines[0].startswith("Error: --init needs catatonit") and \
        "Debian package catatonit" in lines[0], lines
    assert "nocatatonit" not in rl("ps", "-a", "--format", "{{.Names}}", check=True).stdout
