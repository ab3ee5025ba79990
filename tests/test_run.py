"""`rl run`: namespaces, id maps, mounts and process settings, seen from inside."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import support
from support import RlRunner

pytestmark = pytest.mark.usefixtures("userns")


@pytest.fixture(scope="session")
def userns() -> None:
    support.require_userns()


def sh(rl: RlRunner, rootfs: Path, script: str, *flags: str) -> str:
    r = rl("run", "--rm", *flags, "--rootfs", rootfs, "/bin/sh", "-c", script)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_pid_namespace_sees_only_its_own_processes(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, "echo $$; ps -o pid,comm; true")
    lines = out.splitlines()
    assert lines[0] == "1"
    pids = [int(ln.split()[0]) for ln in lines[1:] if ln.split()[0].isdigit()]
    # the shell (1) and ps (2): nothing of the host
    assert sorted(pids) == [1, 2]


def test_hostname_defaults_to_short_id_and_can_be_set(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, "hostname; cat /etc/hostname", "--hostname", "box1")
    assert out.split() == ["box1", "box1"]
    r = rl("run", "-d", "--rootfs", rootfs, "sleep", "30", check=True)
    cid = r.stdout.strip()
    try:
        out = rl("exec", cid, "hostname", check=True).stdout.strip()
        assert out == cid[:12]
    finally:
        rl("rm", "-f", cid)


def test_hosts_file_names_the_container(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, "cat /etc/hosts", "--name", "hostsnamed", "--hostname", "hn")
    assert "localhost" in out
    assert "hn hostsnamed" in out


def test_subuid_mode_maps_root_to_user_and_range(rl: RlRunner, rootfs: Path) -> None:
    support.require_newidmap()
    out = sh(rl, rootfs, "cat /proc/self/uid_map /proc/self/gid_map")
    rows = [tuple(map(int, ln.split())) for ln in out.splitlines()]
    uid_rows, gid_rows = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    assert uid_rows[0] == (0, os.getuid(), 1)
    assert gid_rows[0] == (0, os.getgid(), 1)
    sub = support.subid_ranges("uid")[0]
    assert uid_rows[1] == (1, sub.start, sub.count)
    out = sh(rl, rootfs, "id -u; id -g", "-u", "1000:1000")
    assert out.split() == ["1000", "1000"]


def test_single_id_mode(rl: RlRunner, rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RL_IDMAP", "single")
    out = sh(rl, rootfs, "cat /proc/self/uid_map; cat /proc/self/setgroups; id -u")
    assert out.split() == ["0", str(os.getuid()), "1", "deny", "0"]
    info = rl("info", "--format", "{{.idmap.mode}}: {{.idmap.reason}}", check=True).stdout
    assert info.strip() == "single: RL_IDMAP=single"
    r = rl("run", "--rm", "-u", "1000", "--rootfs", rootfs, "id")
    assert r.returncode == 125
    assert "not mapped" in r.stderr and "rl info" in r.stderr


def test_user_by_name_with_groups(rl: RlRunner, rootfs: Path) -> None:
    support.require_newidmap()
    out = sh(rl, rootfs, "id", "-u", "user")
    assert out.strip() == "uid=1000(user) gid=1000(user) groups=10(wheel)"
    out = sh(rl, rootfs, "id", "-u", "nobody:wheel")
    assert out.strip() == "uid=65534(nobody) gid=10(wheel)"
    assert sh(rl, rootfs, "echo $HOME", "-u", "user").strip() == "/home/user"


def test_missing_workdir_is_made_as_root_before_the_user_switch(rl: RlRunner,
                                                                 rootfs: Path) -> None:
    # docker makes -w as the container's root, then switches to -u: nobody
    # can enter /srv/app (0755, root's) though it could not have made it.
    support.require_newidmap()
    out = sh(rl, rootfs, "pwd; stat -c '%a %u' .; id -u", "-w", "/srv/app", "-u", "nobody")
    assert out.split() == ["/srv/app", "755", "0", "65534"]


def test_unknown_user_is_126(rl: RlRunner, rootfs: Path) -> None:
    r = rl("run", "--rm", "-u", "bogus", "--rootfs", rootfs, "id")
    assert r.returncode == 126
    assert "unable to find user bogus" in r.stderr


@pytest.mark.parametrize(
    ("cmd", "code", "message"),
    [
        (["sh", "-c", "exit 3"], 3, ""),
        (["nonexistent-cmd"], 127, 'exec: "nonexistent-cmd": executable file not found'),
        (["/bin/notexec"], 126, 'exec: "/bin/notexec": permission denied'),
        (["/etc"], 126, 'exec: "/etc"'),
    ],
)
def test_exit_codes(rl: RlRunner, rootfs: Path, cmd: list[str], code: int, message: str) -> None:
    r = rl("run", "--rm", "--rootfs", rootfs, *cmd)
    assert r.returncode == code, r.stderr
    assert message in r.stderr


def test_killed_by_signal_is_128_plus_n(rl: RlRunner, rootfs: Path) -> None:
    # PID 1 cannot kill itself with a signal it does not handle; with --init the
    # shell is PID 2 and dies of its own SIGKILL.
    r = rl("run", "--rm", "--init", "--rootfs", rootfs, "sh", "-c", "kill -9 $$")
    assert r.returncode == 137
    r = rl("run", "--rm", "--init", "--rootfs", rootfs, "sh", "-c", "kill -TERM $$")
    assert r.returncode == 143


def test_init_is_pid_1_and_reaps(rl: RlRunner, rootfs: Path) -> None:
    # An orphan (the backgrounded sleep's parent subshell exits) is reaped by
    # the init (catatonit); without it a zombie would remain.
    script = "echo $$; (sleep 0.2 &) ; sleep 0.6; ps -o pid,stat,comm | grep -c Z; true"
    out = sh(rl, rootfs, script, "--init")
    first, zombies = out.split()[0], out.split()[-1]
    assert first != "1"
    assert zombies == "0"
    # ps shows the init and its command (as docker's `docker-init -- CMD`), not
    # rl's Python.
    out = sh(rl, rootfs, "tr '\\0' ' ' < /proc/1/cmdline; echo; cat /proc/1/comm; "
             "ps -o pid,comm | grep -w 2", "--init")
    cmdline, comm, second = out.splitlines()
    assert cmdline.startswith("catatonit -- /bin/sh -c tr "), cmdline
    assert comm == "catatonit" and second.split() == ["2", "sh"]


def test_only_stdio_fds_are_open(rl: RlRunner, rootfs: Path) -> None:
    # The runc CVE-2024-21626 class: no host fd may leak into the container.
    out = sh(rl, rootfs, "for f in /proc/self/fd/*; do echo ${f##*/} $(readlink $f); done")
    fds = {int(line.split()[0]) for line in out.splitlines()}
    # 0,1,2 plus the fd the shell's glob itself opened (gone by readlink time)
    assert fds <= {0, 1, 2, 3}
    assert all("rl" not in line for line in out.splitlines() if line.split()[0] == "3")
    out = sh(rl, rootfs, "ls /proc/self/fd | wc -l", "--init")
    assert int(out) <= 4
    # --init's PID 1 lives beside the command: it holds nothing of the supervisor's,
    # only its own signalfd.
    out = sh(rl, rootfs, "for f in /proc/1/fd/*; do echo ${f##*/} $(readlink $f); done",
             "--init")
    assert [ln.split()[0] for ln in out.splitlines()] == ["0", "1", "2", "3"], out
    assert out.splitlines()[3] == "3 anon_inode:[signalfd]", out
    assert sh(rl, rootfs, "pwd; readlink /proc/self/cwd").split() == ["/", "/"]


def test_dev_is_minimal_and_works(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, "ls /dev | sort | tr '\\n' ' '; echo; head -c 4 /dev/zero | wc -c; "
             "echo x > /dev/null && echo nullok; ls -la /dev/ptmx; test -d /dev/shm && "
             "touch /dev/shm/x && echo shmok")
    names = out.splitlines()[0].split()
    for n in ("null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm",
              "mqueue", "fd", "stdin", "stdout", "stderr"):
        assert n in names
    assert "sda" not in names and "vda" not in names and "fuse" not in names
    assert "nullok" in out and "shmok" in out
    assert out.splitlines()[1].strip() == "4"


def test_proc_masks_and_read_only_paths(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, "cat /proc/timer_list | wc -c; ls /sys/firmware | wc -l; "
             "(echo 1 > /proc/sys/kernel/domainname) 2>&1; grep ' /proc/sys ' /proc/mounts")
    lines = out.splitlines()
    assert lines[0].strip() == "0"  # masked by /dev/null
    assert lines[1].strip() == "0"  # empty read-only tmpfs
    assert "Read-only file system" in out
    assert " ro," in lines[-1]


def test_sys_read_only_and_own_net_with_network_none(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, "grep ' /sys ' /proc/mounts; ls /sys/class/net | tr '\\n' ' '; echo; "
             "cat /sys/class/net/lo/operstate", "--network", "none")
    mount_line = out.splitlines()[0]
    assert mount_line.split()[2] == "sysfs" and " ro," in mount_line
    assert out.splitlines()[1].split() == ["lo"]
    assert out.splitlines()[2] in ("unknown", "up")  # lo is up (it reports "unknown")


def test_volumes_tmpfs_and_read_only_root(rl: RlRunner, rootfs: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from host\n")
    out = sh(
        rl, rootfs,
        "cat /data/in.txt; echo written > /data/out.txt; (echo x > /ro/x) 2>&1; "
        "(touch /newfile) 2>&1; echo t > /scratch/t && cat /scratch/t; "
        "grep ' /scratch ' /proc/mounts",
        "-v", f"{data}:/data", "-v", f"{data}:/ro:ro", "--tmpfs", "/scratch:size=1m",
        "--read-only",
    )
    assert "from host" in out
    assert (data / "out.txt").read_text() == "written\n"
    assert out.count("Read-only file system") == 2
    assert "\nt\n" in out
    assert "tmpfs" in out.splitlines()[-1] and "size=1024k" in out.splitlines()[-1]


def test_env_workdir_and_env_file(rl: RlRunner, rootfs: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=1\n\nOVERRIDDEN=file\n")
    monkeypatch.setenv("PASSED_THROUGH", "host-value")
    out = sh(rl, rootfs, "echo $FOO,$FROM_FILE,$OVERRIDDEN,$PASSED_THROUGH,$HOSTNAME; pwd",
             "-e", "FOO=bar", "--env-file", str(env_file), "-e", "OVERRIDDEN=flag",
             "-e", "PASSED_THROUGH", "-w", "/tmp/w/made/by/rl", "--hostname", "envhost")
    assert out.splitlines() == ["bar,1,flag,host-value,envhost", "/tmp/w/made/by/rl"]


def test_capabilities_default_add_drop_and_user(rl: RlRunner, rootfs: Path) -> None:
    docker_default = 0xA80425FB

    def caps(*flags: str) -> tuple[int, int]:
        out = sh(rl, rootfs, "grep -E '^Cap(Eff|Bnd)' /proc/self/status", *flags)
        eff, bnd = (int(line.split()[1], 16) for line in out.splitlines())
        return eff, bnd

    assert caps() == (docker_default, docker_default)
    eff, _ = caps("--cap-drop", "ALL")
    assert eff == 0
    eff, bnd = caps("--cap-add", "SYS_ADMIN", "--cap-drop", "net_raw")
    assert eff == (docker_default | 1 << 21) & ~(1 << 13)
    eff, bnd = caps("-u", "user")
    assert eff == 0 and bnd == docker_default


def test_no_new_privileges_and_ulimit(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, "grep NoNewPrivs /proc/self/status; ulimit -n; ulimit -Hn",
             "--security-opt", "no-new-privileges", "--ulimit", "nofile=100:200")
    assert out.split() == ["NoNewPrivs:", "1", "100", "200"]
    out = sh(rl, rootfs, "grep NoNewPrivs /proc/self/status")
    assert out.split() == ["NoNewPrivs:", "0"]


def test_rootfs_on_disk_is_not_changed(rl: RlRunner, fresh_rootfs: Path) -> None:
    for name in ("hosts", "hostname", "resolv.conf"):
        (fresh_rootfs / "etc" / name).unlink()
    out = sh(rl, fresh_rootfs, "cat /etc/hostname", "--hostname", "keepclean")
    assert out.strip() == "keepclean"
    for name in ("hosts", "hostname", "resolv.conf"):
        assert not (fresh_rootfs / "etc" / name).exists()


def test_symlink_in_rootfs_cannot_redirect_a_mount(rl: RlRunner, fresh_rootfs: Path,
                                                    tmp_path: Path) -> None:
    # /etc/hosts -> a host path: the bind mount must land inside the rootfs.
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    hosts = fresh_rootfs / "etc" / "hosts"
    hosts.unlink()
    hosts.symlink_to(victim)
    out = sh(rl, fresh_rootfs, "cat /etc/hosts", "--name", "symlinked")
    assert "symlinked" in out
    assert victim.read_text() == "untouched\n"


def test_host_network_sys_is_read_only_all_the_way_down(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, "grep -E ' /sys(/| )' /proc/mounts", "--network", "host")
    lines = out.splitlines()
    assert len(lines) > 1  # the host's /sys has submounts (cgroups at least)
    for line in lines:
        assert line.split()[3].split(",")[0] == "ro", line


def test_single_id_mode_ignores_passwd_groups(rl: RlRunner, fresh_rootfs: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    group = fresh_rootfs / "etc" / "group"
    group.write_text(group.read_text().replace("wheel:x:10:user", "wheel:x:10:root,user"))
    monkeypatch.setenv("RL_IDMAP", "single")
    assert sh(rl, fresh_rootfs, "id -u").strip() == "0"
    r = rl("run", "--rm", "--group-add", "10", "--rootfs", fresh_rootfs, "id")
    assert r.returncode == 125 and "single-id mode" in r.stderr


def test_broken_newuidmap_falls_back_and_says_so(rl: RlRunner, rootfs: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # A host where the user has ranges but newuidmap is not setuid (a broken
    # package, a nosuid mount): rl falls back to single-id mode, and says so.
    support.require_newidmap()
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("newuidmap", "newgidmap"):
        (fake / name).write_text("#!/bin/sh\nexit 1\n")
        (fake / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    r = rl("run", "--rm", "--rootfs", rootfs, "cat", "/proc/self/uid_map")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", str(os.getuid()), "1"]
    assert r.stderr.startswith("WARNING: running in single-id mode although you have "
                               "subordinate ids: ")
    assert "neither setuid root nor has file capabilities" in r.stderr
    info = rl("info", "--format", "{{.idmap.mode}}", check=True).stdout.strip()
    assert info == "single"


def test_rl_run_parses_in_the_supervisor_without_click(rl_path: Path, rootfs: Path,
                                                       rl_state: support.RlState) -> None:
    """`rl run` sends its arguments to the fork server, where click is loaded
    already (rootless/entry.py): its own process never imports click, unless
    it must hand over to the full CLI (help, a usage error, a pull)."""
    env = {**os.environ, **rl_state.env(), "PYTHONPROFILEIMPORTTIME": "1"}

    def imports(*args: str) -> tuple[int, str, set[str]]:
        r = subprocess.run([str(rl_path), *args], env=env, capture_output=True, text=True,
                           timeout=60)
        mods = {line.rpartition("|")[2].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:")}
        return r.returncode, r.stdout, mods

    code, out, mods = imports("run", "--rm", "--rootfs", str(rootfs), "sh", "-c", "echo $0", "x")
    assert code == 0 and out == "x\n"
    assert "click" not in mods and "rootless.cli.app" not in mods
    code, out, mods = imports("run", "--help")
    assert code == 0 and out.startswith("Usage: rl run") and "click" in mods
    code, _, mods = imports("run", "--no-such-flag", "--rootfs", str(rootfs), "true")
    assert code == 125 and "click" in mods
