"""rl run IMAGE on every storage driver: the root as layers + a writable layer, rl diff,
rl commit and rl export from it, and what happens when the storage goes wrong."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from imagetools import add_entry, add_file, rootfs_tar, storage

import support
from support import RlRunner, RlState

DRIVERS = ["overlay", "fuse", "fuse-overlayfs", "vfs"]


@pytest.fixture(autouse=True)
def _host() -> None:
    support.require_userns()
    support.require_newidmap()
    support.require_busybox()


def _require_driver(driver: str) -> None:
    if driver in ("fuse", "fuse-overlayfs"):
        support.require_fuse()
    if driver == "fuse-overlayfs":
        support.require(bool(__import__("shutil").which("fuse-overlayfs")),
                        "fuse-overlayfs is not installed")


@pytest.fixture(scope="module")
def two_layers(rootfs: Path, tmp_path_factory: pytest.TempPathFactory,
               rl_path: Path, rl_state: RlState) -> str:
    """An image of two layers: busybox, then a layer that deletes and replaces things."""
    tmp = tmp_path_factory.mktemp("storage")

    def extra(tf: tarfile.TarFile) -> None:
        add_file(tf, "./etc/motd", b"base\n")
        add_file(tf, "./data/keep", b"keep\n")
        add_file(tf, "./data/old/a", b"a\n")
        add_file(tf, "./data/hl-a", b"linked\n")
        add_entry(tf, "./data/hl-b", tarfile.LNKTYPE, "./data/hl-a")

    base = rootfs_tar(rootfs, tmp / "base.tar", compress="", extra=extra)
    env = {**os.environ, **rl_state.env()}

    def rl(*args: object) -> str:
        r = subprocess.run([str(rl_path), *map(str, args)], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    rl("import", base, "st-base")
    # The second layer comes from a commit, so it carries real OCI whiteouts.
    cid = rl("run", "-d", "st-base", "sh", "-c",
             "rm /etc/motd && rm -r /data/old && mkdir /data/old && echo b > /data/old/b "
             "&& echo top > /top").strip()
    assert rl("wait", cid).strip() == "0"
    rl("commit", cid, "st-two")
    rl("rm", cid)
    return "st-two"


@pytest.mark.parametrize("driver", DRIVERS)
def test_driver_root_diff_commit_export(rl: RlRunner, two_layers: str, driver: str,
                                        tmp_path: Path) -> None:
    _require_driver(driver)
    name = f"st-{driver}"
    # (the first start changes things; a second start of the same command does not)
    r = rl("run", "--name", name, "--storage-driver", driver, two_layers, "sh", "-c",
           "ls /etc/motd /data/old/a 2>&1; cat /data/old/b /top; "
           "[ -e /new ] || { echo new > /new && rm /data/keep && echo more >> /top && "
           "mkdir /dir && touch /dir/f; } && grep ' / ' /proc/mounts | cut -d' ' -f3",
           check=True)
    lines = r.stdout.splitlines()
    # The whiteouts of the second layer hide what they should.
    assert "ls: /etc/motd: No such file or directory" in lines
    assert "ls: /data/old/a: No such file or directory" in lines
    assert lines[2:4] == ["b", "top"]
    fstype = {"overlay": "overlay", "fuse": "fuse.rl-overlay",
              "fuse-overlayfs": "fuse.fuse-overlayfs", "vfs": "ext4"}[driver]
    if driver != "vfs":
        assert lines[-1] == fstype
    info = json.loads(rl("inspect", name, check=True).stdout)[0]
    assert info["GraphDriver"]["Name"] == driver
    # rl diff, as docker diff prints it; rl's own mount points are not changes.
    diff = rl("diff", name, check=True).stdout.splitlines()
    assert diff == ["C /data", "D /data/keep", "A /dir", "A /dir/f", "A /new", "C /top"]
    # A second start keeps the writable layer.
    assert rl("start", "-a", name, check=True).stdout.endswith("\n")
    assert rl("diff", name, check=True).stdout.splitlines() == diff
    # rl commit makes that a layer with whiteouts; an image of it has the same files.
    rl("commit", name, f"{name}-img", check=True)
    r = rl("run", "--rm", f"{name}-img", "sh", "-c",
           "cat /new /top; ls /data/keep 2>&1; ls /dir", check=True)
    assert r.stdout.splitlines() == ["new", "top", "more",
                                     "ls: /data/keep: No such file or directory", "f"]
    # rl export: the merged tree, whatever the driver.
    out = tmp_path / "x.tar"
    rl("export", "-o", out, name, check=True)
    with tarfile.open(out) as tf:
        names = set(tf.getnames())
    assert {"new", "top", "dir/f", "data/old/b", "bin/busybox"} <= names
    assert not {"data/keep", "etc/motd", "data/old/a"} & names
    assert not [n for n in names if ".wh." in n]
    rl("rm", name, check=True)
    rl("rmi", f"{name}-img", check=True)


@pytest.mark.parametrize("driver", DRIVERS)
def test_unlinked_open_files_and_hard_links(rl: RlRunner, two_layers: str, driver: str) -> None:
    """What apt does with its temporary files (write and read them through an fd
    after rm), and an image's hard links as one inode (du, tar -h, rsync -H)."""
    _require_driver(driver)
    r = rl("run", "--rm", "--storage-driver", driver, two_layers, "sh", "-c",
           "exec 3>/tmp/f; rm /tmp/f; echo hi >&3; cat /proc/self/fd/3; "
           "echo more >&3; stat -L -c '%s' /proc/self/fd/3; "
           "stat -c '%h' /data/hl-a /data/hl-b; "
           "[ $(stat -c %i /data/hl-a) = $(stat -c %i /data/hl-b) ] && echo one inode",
           check=True)
    assert r.stdout.splitlines() == ["hi", "8", "2", "2", "one inode"]


def _processes_of_user() -> set[int]:
    uid = os.getuid()
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    out.add(int(d))
            except OSError:
                pass
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _servers_of(cid: str) -> list[int]:
    """Processes serving the container's root: fuse-overlayfs names its upper dir; rl's
    own server is a fork of the supervisor (found by its FUSE fd instead)."""
    found = []
    for pid in _processes_of_user():
        if cid in _cmdline(pid):
            found.append(pid)
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/fuse":
                    found.append(pid)
                    break
            except OSError:
                pass
    return found


@pytest.mark.parametrize("driver", ["fuse", "fuse-overlayfs"])
def test_fuse_server_death_is_an_error_not_a_hang(rl: RlRunner, two_layers: str,
                                                  driver: str) -> None:
    _require_driver(driver)
    before = set(_servers_of("-"))
    cid = rl("run", "-d", "--storage-driver", driver, two_layers, "sh", "-c",
             "while ls / >/dev/null; do sleep 0.05; done; exit 7", check=True).stdout.strip()
    servers = [p for p in _servers_of(cid) if p not in before]
    assert servers, "no server found for the container's root"
    for pid in servers:
        os.kill(pid, signal.SIGKILL)
    r = rl("wait", cid, timeout=30)
    assert r.stdout.strip() != "0"
    info = json.loads(rl("inspect", cid, check=True).stdout)[0]
    assert f"the {driver} server of the container's root filesystem" in info["State"]["Error"]
    assert "was killed by signal 9" in info["State"]["Error"]
    logs = rl("logs", cid, check=True)
    assert f"rl: the {driver} server" in logs.stderr
    rl("rm", cid, check=True)
    assert support.wait_until(lambda: not [p for p in _servers_of(cid) if p not in before])


@pytest.mark.parametrize("driver", ["fuse", "fuse-overlayfs"])
def test_supervisor_kill_9_stops_the_fuse_server(rl: RlRunner, two_layers: str, driver: str,
                                                 rl_state: RlState) -> None:
    _require_driver(driver)
    before = set(_servers_of("-"))
    cid = rl("run", "-d", "--storage-driver", driver, two_layers, "sleep", "600",
             check=True).stdout.strip()
    servers = [p for p in _servers_of(cid) if p not in before]
    assert servers
    sup = int((rl_state.runtime_dir / "rl" / cid / "sup.pid").read_text())
    os.kill(sup, signal.SIGKILL)
    # The container (PDEATHSIG) and the server (its life pipe) go with it.
    assert support.wait_until(lambda: not any(os.path.exists(f"/proc/{p}") and
                                              "zombie" not in _state(p) for p in servers))
    info = json.loads(rl("inspect", cid, check=True).stdout)[0]
    assert "supervisor died" in info["State"]["Error"]
    # Nothing left stops the next commands.
    rl("rm", "-f", cid, check=True)
    assert not (storage(rl_state.data_home) / "containers" / cid).exists()


def _state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line
    except OSError:
        pass
    return ""


def _fd_targets(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


@pytest.mark.parametrize("driver", ["fuse", "fuse-overlayfs"])
def test_fuse_server_holds_nothing_of_the_supervisors(rl: RlRunner, two_layers: str,
                                                      rl_state: RlState, driver: str) -> None:
    # Not sup.lock (rl would think the container runs after its supervisor died),
    # not a published port, not the client's socket.
    import socket

    _require_driver(driver)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = set(_servers_of("-"))
    cid = rl("run", "-d", "-p", f"127.0.0.1:{port}:80", "--storage-driver", driver,
             two_layers, "sleep", "600", check=True).stdout.strip()
    try:
        servers = [p for p in _servers_of(cid) if p not in before]
        sup = int((rl_state.runtime_dir / "rl" / cid / "sup.pid").read_text())
        keepers = [p for p in _processes_of_user()
                   if _ppid(p) == sup and driver in _cmdline(p) + _children_cmdlines(p)]
        supervisors = {t for t in _fd_targets(sup) if t.startswith("socket:")}
        assert supervisors  # the published port, ctl.sock
        for pid in {*servers, *keepers}:
            targets = _fd_targets(pid)
            assert not [t for t in targets if t.endswith("sup.lock")], (pid, targets)
            assert not targets & supervisors, (pid, targets & supervisors)
    finally:
        rl("rm", "-f", cid, check=True)


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _children_cmdlines(pid: int) -> str:
    return " ".join(_cmdline(c) for c in _processes_of_user() if _ppid(c) == pid)


def test_missing_layer_is_a_clear_error_at_start(rl: RlRunner, two_layers: str,
                                                 rl_state: RlState) -> None:
    cid = rl("create", "--storage-driver", "overlay", two_layers, "true",
             check=True).stdout.strip()
    cfg = json.loads((rl_state.data_home / "rl" / "containers" / cid / "config.json")
                     .read_text())
    upper = Path(cfg["upper"])
    upper.rename(upper.with_name("diff-moved"))
    try:
        r = rl("start", "-a", cid)
        assert r.returncode == 1, r  # docker start's status for a failed start
        assert "the container's storage is incomplete" in r.stderr
        assert "diff is missing" in r.stderr
        # Nothing half-started: the record says created, with the error.
        info = json.loads(rl("inspect", cid, check=True).stdout)[0]
        assert info["State"]["Status"] == "created"
        assert "incomplete" in info["State"]["Error"]
    finally:
        upper.with_name("diff-moved").rename(upper)
    assert rl("start", "-a", cid, check=True).returncode == 0
    rl("rm", cid, check=True)


def test_overlay_container_outlives_rmi_of_its_image(rl: RlRunner, two_layers: str) -> None:
    rl("tag", two_layers, "st-doomed", check=True)
    cid = rl("create", "--storage-driver", "overlay", "st-doomed", "cat", "/top",
             check=True).stdout.strip()
    rl("rmi", "-f", "st-doomed", check=True)
    rl("image", "prune", "-a", "-f", check=False)
    r = rl("start", "-a", cid, check=True)
    assert r.stdout == "top\n"
    rl("rm", cid, check=True)


def test_read_only_overlay_root(rl: RlRunner, two_layers: str) -> None:
    r = rl("run", "--rm", "--read-only", "--storage-driver", "overlay", two_layers, "sh", "-c",
           "touch /x 2>&1; echo rc=$?")
    assert "Read-only file system" in r.stdout and "rc=1" in r.stdout


def test_storage_driver_wrong_uses(rl: RlRunner, two_layers: str, rootfs: Path,
                                   tmp_path: Path) -> None:
    r = rl("run", "--storage-driver", "btrfs", two_layers, "true")
    assert r.returncode == 125 and "invalid storage driver 'btrfs'" in r.stderr
    r = rl("run", "--rootfs", "--storage-driver", "overlay", rootfs, "true")
    assert r.returncode == 125 and "--storage-driver applies to images" in r.stderr
    # fuse-overlayfs missing: said at create, with the package to install
    import shutil as _sh

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in os.listdir("/usr/bin"):
        if name != "fuse-overlayfs":
            (bin_dir / name).symlink_to(f"/usr/bin/{name}")
    saved = os.environ["PATH"]
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{bin_dir}"
    try:
        assert _sh.which("fuse-overlayfs") is None
        r = rl("create", "--storage-driver", "fuse-overlayfs", two_layers, "true")
        assert r.returncode == 125 and "Debian package fuse-overlayfs" in r.stderr, r.stderr
    finally:
        os.environ["PATH"] = saved
    r = rl("diff", "nosuchcontainer")
    assert r.returncode == 1 and "no such container" in r.stderr
    cid = rl("create", "--rootfs", rootfs, "true", check=True).stdout.strip()
    r = rl("diff", cid)
    assert r.returncode == 125 and "not created from an image" in r.stderr
    rl("rm", cid, check=True)


def test_rm_of_fuse_container_leaves_nothing(rl: RlRunner, two_layers: str,
                                             rl_state: RlState) -> None:
    support.require_fuse()
    before = set(_servers_of("-"))
    r = rl("run", "--rm", "--storage-driver", "fuse", two_layers, "cat", "/top", check=True)
    assert r.stdout == "top\n"
    assert support.wait_until(lambda: set(_servers_of("-")) <= before)
    left = os.listdir(storage(rl_state.data_home) / "containers")
    assert not [n for n in left if n.startswith(".")]


def test_info_names_the_default_driver(rl: RlRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    out = rl("info", "--format", "json", check=True).stdout
    st = json.loads(out)["storage"]
    # This machine's kernel mounts overlayfs in a user namespace: the probe must say so.
    assert st["default_driver"] == "overlay", st
    assert "user namespace" in st["reason"]
    monkeypatch.setenv("RL_STORAGE_DRIVER", "vfs")
    out = rl("info", "--format", "json", check=True).stdout
    assert json.loads(out)["storage"]["default_driver"] == "vfs"


@pytest.mark.parametrize("driver", ["overlay", "vfs"])
def test_diff_and_commit_of_a_tree_at_path_max_depth(rl: RlRunner, two_layers: str,
                                                    driver: str) -> None:
    # 1,900 levels: the path is 3,800 bytes long, and a walk holds more fds than
    # the usual soft limit of 1,024.
    script = ("i=0; while [ $i -lt 1900 ]; do mkdir a && cd a || exit 1; i=$((i+1)); done; "
              "echo deep > leaf")
    name = f"deep-{driver}"
    rl("run", "--name", name, "--storage-driver", driver, "-w", "/", two_layers, "sh", "-c",
       script, check=True, timeout=180)
    diff = rl("diff", name, check=True, timeout=120).stdout.splitlines()
    assert len(diff) == 1901 and diff[0] == "A /a" and diff[-1].endswith("/a/leaf")
    rl("commit", name, f"{name}-img", check=True, timeout=120)
    leaf = "/" + "a/" * 1900 + "leaf"
    # the image of that commit runs on this driver too (vfs copies the deep layer)
    assert rl("run", "--rm", "--storage-driver", driver, f"{name}-img", "cat", leaf,
              check=True, timeout=120).stdout == "deep\n"
    rl("rm", name, check=True)
    rl("rmi", f"{name}-img", check=True)


@pytest.mark.parametrize("driver", ["overlay", "fuse", "fuse-overlayfs"])
def test_an_image_of_many_layers(rl: RlRunner, rootfs: Path, tmp_path: Path,
                                 driver: str) -> None:
    # 80 layers: their paths alone pass the page mount(2) takes for options.
    from test_archive import docker_archive

    _require_driver(driver)
    base = rootfs_tar(rootfs, tmp_path / "base.tar", compress="").read_bytes()
    layers = [base]
    for i in range(79):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            add_file(tf, f"./many/l{i:02d}", f"{i}\n".encode())
            if i == 78:
                add_file(tf, "./many/.wh.l00")  # the top layer deletes the first file
        layers.append(buf.getvalue())
    rl("load", "-i", docker_archive(tmp_path / "many.tar", layers, ["many:latest"]),
       check=True, timeout=180)
    r = rl("run", "--rm", "--storage-driver", driver, "many", "sh", "-c",
           "ls /many | wc -l; cat /many/l78; ls /many/l00 2>&1; true", check=True, timeout=120)
    assert r.stdout.splitlines() == ["78", "78", "ls: /many/l00: No such file or directory"]


@pytest.mark.parametrize("driver", ["overlay", "fuse", "vfs"])
def test_mount_points_keep_the_images_owners_and_modes(rl: RlRunner, rootfs: Path,
                                                       tmp_path: Path, driver: str) -> None:
    # The init layer holds the parents of -v targets: they must look as in the image
    # (a user's 0700 home stays the user's; a 0550 /root still takes /root/data).
    _require_driver(driver)

    def extra(tf: tarfile.TarFile) -> None:
        add_file(tf, "./home/user", mode=0o700, uid=1000, gid=1000, type=tarfile.DIRTYPE)
        add_file(tf, "./home/user/f", b"mine\n", mode=0o600, uid=1000, gid=1000)
        add_file(tf, "./root", mode=0o550, type=tarfile.DIRTYPE)

    rl("import", rootfs_tar(rootfs, tmp_path / "own.tar", extra=extra), "st-owners",
       check=True)
    vol = tmp_path / "vol"
    vol.mkdir()
    r = rl("run", "--rm", "--storage-driver", driver, "-u", "1000", "-v",
           f"{vol}:/home/user/data", "-v", f"{vol}:/root/data", "st-owners", "sh", "-c",
           "stat -c '%U %a %Y' /home/user /root; cat /home/user/f", check=True)
    lines = r.stdout.splitlines()
    if driver == "vfs":  # the copy is the container's own: the targets were made in it
        lines = [" ".join(x.split()[:2]) if x != "mine" else x for x in lines]
        assert lines == ["user 700", "root 550", "mine"]
    else:
        assert lines == ["user 700 1700000000", "root 550 1700000000", "mine"]


def test_walk_does_not_follow_a_directory_swapped_for_a_symlink(tmp_path: Path) -> None:
    from fs import walk

    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "inside").write_text("x")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "host-file").write_text("do not read")
    it = walk.walk(str(root))
    first = next(it)
    assert first.rel == "a"
    # The container swaps the directory for a symlink after we saw it.
    (root / "a" / "inside").unlink()
    (root / "a").rmdir()
    (root / "a").symlink_to(secret)
    rest = [e.rel for e in it]
    assert rest == []
