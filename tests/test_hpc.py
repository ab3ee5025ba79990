"""HPC and workstation mode (issue 18): --userns=keep-id, --device, --ipc/--pid/--uts,
--shm-size, seen from inside a container and from the host."""

from __future__ import annotations

import json
import os
import pwd
import uuid
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


def refused(rl: RlRunner, rootfs: Path, *flags: str) -> str:
    r = rl("run", "--rm", *flags, "--rootfs", rootfs, "true")
    assert r.returncode == 125, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


# -- --userns=keep-id ----------------------------------------------------------------


def _keep_id_checks(rl: RlRunner, rootfs: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    me = pwd.getpwuid(os.getuid())
    out = sh(rl, rootfs, "id -u; id -g; id -un; echo $HOME; touch /data/made; mkdir /data/d;"
             " touch /data/d/f", "--userns=keep-id", "-v", f"{data}:/data")
    assert out.split() == [str(os.getuid()), str(os.getgid()), me.pw_name, me.pw_dir]
    for p in (data / "made", data / "d", data / "d/f"):
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid()), p
    # Removable on the host without `rl unshare`: they are the user's own.
    (data / "d/f").unlink()
    (data / "d").rmdir()
    (data / "made").unlink()


def test_keep_id_runs_as_the_user_and_files_stay_theirs(rl: RlRunner, rootfs: Path,
                                                        tmp_path: Path) -> None:
    support.require_newidmap()
    _keep_id_checks(rl, rootfs, tmp_path)
    # The rest of the id space is there, root included (podman's layout).
    out = sh(rl, rootfs, "cat /proc/self/uid_map", "--userns=keep-id")
    rows = [tuple(map(int, ln.split())) for ln in out.splitlines()]
    assert (os.getuid(), os.getuid(), 1) in rows
    assert rows[0][0] == 0 and rows[0][1] != os.getuid()
    # -u still wins; root inside is not the user.
    assert sh(rl, rootfs, "id -u", "--userns=keep-id", "-u", "0").split() == ["0"]


def test_keep_id_in_single_id_mode(rl: RlRunner, rootfs: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RL_IDMAP", "single")
    _keep_id_checks(rl, rootfs, tmp_path)
    out = sh(rl, rootfs, "cat /proc/self/uid_map", "--userns=keep-id")
    assert [tuple(map(int, ln.split())) for ln in out.splitlines()] == [
        (os.getuid(), os.getuid(), 1)]


def test_keep_id_other_uid_and_the_root_is_untouched(rl: RlRunner, fresh_rootfs: Path) -> None:
    support.require_newidmap()
    before = (fresh_rootfs / "etc/passwd").read_text()
    out = sh(rl, fresh_rootfs, "id -u; id -g; grep ':4242:' /etc/passwd | cut -d: -f3,4",
             "--userns=keep-id:uid=4242,gid=4343")
    assert out.split() == ["4242", "4343", "4242:4343"]
    # The entry lives in the run dir's copy, never in the root's own file.
    assert (fresh_rootfs / "etc/passwd").read_text() == before


def test_keep_id_root_without_passwd_or_group(rl: RlRunner, fresh_rootfs: Path) -> None:
    support.require_newidmap()
    (fresh_rootfs / "etc/passwd").unlink()
    (fresh_rootfs / "etc/group").unlink()
    out = sh(rl, fresh_rootfs, "id -un; cat /etc/passwd /etc/group", "--userns=keep-id")
    name = pwd.getpwuid(os.getuid()).pw_name
    assert out.splitlines()[0] == name
    assert f":{os.getuid()}:{os.getgid()}:" in out
    # The empty files bound on are gone with the container (--rm).
    assert not (fresh_rootfs / "etc/passwd").exists()
    assert not (fresh_rootfs / "etc/group").exists()


def test_keep_id_process_cannot_touch_the_roots_files(rl: RlRunner, fresh_rootfs: Path
                                                     ) -> None:
    """From inside, as the user: /etc/passwd written in the container is the run dir's
    copy; the root's own file keeps its text."""
    support.require_newidmap()
    before = (fresh_rootfs / "etc/passwd").read_text()
    out = sh(rl, fresh_rootfs, "echo 'evil:x:0:0::/:/bin/sh' >> /etc/passwd 2>&1; "
             "grep -c evil /etc/passwd || true", "--userns=keep-id")
    assert out.strip() == "1"  # written: to the container's own copy
    assert (fresh_rootfs / "etc/passwd").read_text() == before


# -- keep-id over an image ------------------------------------------------------------


def _keep_id_image(rl: RlRunner, rootfs: Path, tmp_path: Path, name: str) -> str:
    """busybox (root's), /home/user (1000's), a setuid root file, a uid-5 file with a
    second hard link (shifted once, not twice)."""
    import tarfile

    from imagetools import add_entry, add_file, rootfs_tar

    def extra(tf: tarfile.TarFile) -> None:
        add_file(tf, "./suid", b"x", mode=0o4755)
        add_file(tf, "./five", b"5", uid=5, gid=5)
        add_entry(tf, "./five-link", tarfile.LNKTYPE, linkname="./five")

    tar = rootfs_tar(rootfs, tmp_path / "img.tar", compress="", extra=extra)
    rl("import", str(tar), name, check=True)
    return name


def _idmapped(rl_state: support.RlState) -> list[str]:
    d = rl_state.data_home / "rl" / "storage" / "idmapped"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


@pytest.mark.parametrize("driver", ["overlay", "vfs"])
def test_keep_id_over_an_image_keeps_its_owners(rl: RlRunner, rootfs: Path, tmp_path: Path,
                                                rl_state: support.RlState, driver: str
                                                ) -> None:
    support.require_newidmap()
    image = _keep_id_image(rl, rootfs, tmp_path, f"keepid-{driver}")
    data = tmp_path / "data"
    data.mkdir()
    script = ("id -u; stat -c '%u:%g' / /bin/busybox /home/user /five /five-link; "
              "stat -c %A /suid; grep -c '^root:' /etc/passwd; id -un; touch /data/mine")
    r = rl("run", "--rm", "--storage-driver", driver, "--userns=keep-id", "-v",
           f"{data}:/data", image, "/bin/sh", "-c", script)
    assert r.returncode == 0, r.stderr
    me = pwd.getpwuid(os.getuid()).pw_name
    assert r.stdout.split() == [str(os.getuid()), "0:0", "0:0", "1000:1000", "5:5", "5:5",
                                "-rwsr-xr-x", "1", me]
    assert (data / "mine").stat().st_uid == os.getuid()
    # As root inside, the image's root files are root's: writable without being you.
    r = rl("run", "--rm", "--storage-driver", driver, "--userns=keep-id", "-u", "0", image,
           "/bin/sh", "-c", "echo y > /suid && stat -c %u /suid")
    assert r.returncode == 0 and r.stdout.split() == ["0"], r.stderr


def test_keep_id_image_container_exports_and_commits_the_images_owners(
        rl: RlRunner, rootfs: Path, tmp_path: Path) -> None:
    """rl export and rl commit read the copy through the container's map: image root's
    files are 0, what the container's root and the user made are 0 and the user's id."""
    import tarfile

    support.require_newidmap()
    image = _keep_id_image(rl, rootfs, tmp_path, "keepid-commit")
    cid = "keepid-commit-ctr"
    rl("run", "--name", cid, "--storage-driver", "overlay", "--userns=keep-id", "-u", "0",
       image, "/bin/sh", "-c", f"touch /by-root /tmp/by-me && chown {os.getuid()} /tmp/by-me",
       check=True)
    try:
        out = tmp_path / "export.tar"
        rl("export", "-o", out, cid, check=True)
        with tarfile.open(out) as tf:
            owners = {m.name.removeprefix("./"): (m.uid, m.gid) for m in tf.getmembers()}
        assert owners["bin/busybox"] == (0, 0)
        assert owners["home/user"] == (1000, 1000)
        assert owners["by-root"] == (0, 0)
        assert owners["tmp/by-me"][0] == os.getuid()
        rl("commit", cid, "keepid-committed", check=True)
        r = rl("run", "--rm", "keepid-committed", "stat", "-c", "%u", "/by-root",
               "/bin/busybox", "/tmp/by-me")
        assert r.returncode == 0 and r.stdout.split() == ["0", "0", str(os.getuid())], r.stderr
    finally:
        rl("rm", "-f", cid)


def test_keep_id_on_vfs_refuses_diff_and_commit(rl: RlRunner, rootfs: Path, tmp_path: Path
                                                 ) -> None:
    support.require_newidmap()
    image = _keep_id_image(rl, rootfs, tmp_path, "keepid-vfs")
    cid = rl("create", "--storage-driver", "vfs", "--userns=keep-id", image, "true",
             check=True).stdout.strip()
    try:
        for args in (("diff", cid), ("commit", cid, "keepid-vfs-commit")):
            r = rl(*args)
            assert r.returncode == 125 and "vfs" in r.stderr, r.stderr
            assert len(r.stderr.strip().splitlines()) == 1
    finally:
        rl("rm", "-f", cid)


def test_keep_id_image_copy_is_cached_per_mapping_and_goes_with_rmi(
        rl: RlRunner, rootfs: Path, tmp_path: Path, rl_state: support.RlState) -> None:
    support.require_newidmap()
    image = _keep_id_image(rl, rootfs, tmp_path, "keepid-cache")
    before = _idmapped(rl_state)
    run = ("run", "--rm", "--storage-driver", "overlay")
    rl(*run, "--userns=keep-id", image, "true", check=True)
    one = _idmapped(rl_state)
    assert len(one) == len(before) + 1
    rl(*run, "--userns=keep-id", image, "true", check=True)
    assert _idmapped(rl_state) == one  # reused
    cid = rl("create", "--storage-driver", "overlay", "--userns=keep-id:uid=2000", image,
             "true", check=True).stdout.strip()
    two = _idmapped(rl_state)
    assert len(two) == len(before) + 2  # another mapping, another copy
    assert rl("rmi", image).returncode != 0  # in use: nothing goes
    assert _idmapped(rl_state) == two
    assert rl("start", "-a", cid).returncode == 0
    rl("rm", cid, check=True)
    rl("rmi", image, check=True)
    assert _idmapped(rl_state) == before  # both mappings' copies went with the image


@pytest.mark.parametrize("flags,words", [
    (("--userns=keep-id", "--uidmap", "0:1:65536"), "--uidmap"),
    (("--userns=bogus",), "bogus"),
    (("--userns=host",), "rootless"),
    (("--userns=keep-id:size=3",), "size=3"),
    (("--userns=keep-id:uid=9999999",), "outside"),
])
def test_userns_bad_input(rl: RlRunner, rootfs: Path, flags: tuple[str, ...], words: str
                          ) -> None:
    if "outside" in words:
        support.require_newidmap()
    assert words in refused(rl, rootfs, *flags)


# -- --uidmap / --gidmap ---------------------------------------------------------------


def _rows(text: str) -> list[tuple[int, ...]]:
    return [tuple(map(int, ln.split())) for ln in text.splitlines() if ln.strip()]


def test_uidmap_puts_you_where_asked(rl: RlRunner, rootfs: Path, tmp_path: Path) -> None:
    """podman's toolbox layout: intermediate 0 (you) at 1000, your range around it; the
    gid map follows the uid map when --gidmap is not given (podman's)."""
    support.require_newidmap()
    (start, size), = [(r.start, r.count) for r in support.subid_ranges("uid")][:1]
    data = tmp_path / "data"
    data.mkdir()
    flags = ("--uidmap", "0:1:1000", "--uidmap", "1000:0:1",
             "--uidmap", f"1001:1001:{size - 1000}", "-v", f"{data}:/data")
    out = sh(rl, rootfs, "cat /proc/self/uid_map; echo --; cat /proc/self/gid_map", *flags)
    uids, gids = out.split("--")
    want = [(0, start, 1000), (1000, os.getuid(), 1), (1001, start + 1000, size - 1000)]
    assert _rows(uids) == want
    assert [r[0] for r in _rows(gids)] == [0, 1000, 1001]
    assert (1000, os.getgid(), 1) in _rows(gids)
    # Container root is a subuid; 1000 is you: its files are yours on the host.
    out = sh(rl, rootfs, "id -u; touch /data/mine; stat -c %u /bin/busybox", *flags,
             "-u", "1000:1000")
    assert out.split() == ["1000", "1000"]  # the root's files (yours) show as 1000
    st = (data / "mine").stat()
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    sh(rl, rootfs, "touch /data/root", *flags)  # as the container's root: a subuid
    assert (data / "root").stat().st_uid == start


def test_uidmap_in_single_id_mode(rl: RlRunner, rootfs: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RL_IDMAP", "single")
    data = tmp_path / "data"
    data.mkdir()
    out = sh(rl, rootfs, "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; "
             "touch /data/f", "--uidmap", "5:0:1", "--gidmap", "7:0:1", "-u", "5:7",
             "-v", f"{data}:/data")
    lines = out.splitlines()
    assert _rows("\n".join(lines[:2])) == [(5, os.getuid(), 1), (7, os.getgid(), 1)]
    assert lines[2:] == ["5", "7"]
    assert (data / "f").stat().st_uid == os.getuid()


def test_uidmap_shows_in_inspect(rl: RlRunner, rootfs: Path) -> None:
    support.require_newidmap()
    start = support.subid_ranges("uid")[0].start
    cid = rl("create", "--uidmap", "0:1:10,10:0:1", "--rootfs", rootfs, "true",
             check=True).stdout.strip()
    try:
        info = json.loads(rl("inspect", cid, check=True).stdout)[0]
        assert info["IdMappings"]["UidMap"] == [f"0:{start}:10", f"10:{os.getuid()}:1"]
    finally:
        rl("rm", "-f", cid)


@pytest.mark.parametrize("flags,words", [
    (("--uidmap", "0:1"), "expected CONTAINER:HOST:SIZE"),
    (("--uidmap", "a:b:c"), "expected CONTAINER:HOST:SIZE"),
    (("--uidmap", "0:0:0"), "at least 1"),
    (("--uidmap", "0:0:1", "--uidmap", "0:1:1"), "overlap in their container ids"),
    (("--gidmap", "0:0:1", "--gidmap", "1:0:1"), "overlap in their host ids"),
    (("--uidmap", "0:0:4000000000"), "outside yours"),
    (("--uidmap", "0:1:10,10:0:1", "--subuidname", "x"), "cannot be used together"),
    (("--subuidname", "x"), "not supported"),
    (("--subgidname", "x"), "not supported"),
    (("--uidmap", "7:0:1"), "uid 0 (its user's) is not mapped"),
    (("--uidmap", "0:0:1", "--network", "container:x"), "another's user namespace"),
])
def test_uidmap_bad_input(rl: RlRunner, rootfs: Path, flags: tuple[str, ...], words: str
                          ) -> None:
    assert words in refused(rl, rootfs, *flags)


def test_uidmap_must_keep_you_in(rl: RlRunner, rootfs: Path) -> None:
    """A map of only subordinate ids: refused, as rl's runtime mounts as you."""
    support.require_newidmap()
    assert "must map your own uid" in refused(rl, rootfs, "--uidmap", "0:1:100")
    assert "must map your own gid" in refused(rl, rootfs, "--uidmap", "0:0:1",
                                              "--gidmap", "0:1:100")


# -- --group-add keep-groups ---------------------------------------------------------

KEEP_GROUP = "rl-keepgroups"  # scripts/setup-host adds the test user to it


def _group_file(tmp_path: Path) -> Path:
    """A file only the test user's supplementary group may read (mode 0040)."""
    import grp

    try:
        gid = grp.getgrnam(KEEP_GROUP).gr_gid
    except KeyError:
        gid = -1
    support.require(gid in os.getgroups(), f"the test user is not in the {KEEP_GROUP} group "
                    "(scripts/setup-host USER adds it)")
    f = tmp_path / "secret"
    f.write_text("for the group\n")
    os.chown(f, -1, gid)
    f.chmod(0o040)
    return f


def test_keep_groups_keeps_the_users_supplementary_groups(rl: RlRunner, rootfs: Path,
                                                          tmp_path: Path) -> None:
    """As a container user that is not the file's owner (so no capability reaches it),
    only the kept group opens it; without keep-groups rl drops the groups (setgroups)."""
    support.require_newidmap()
    f = _group_file(tmp_path)
    flags = ("-u", "1000", "-v", f"{f}:/secret")
    assert sh(rl, rootfs, "cat /secret", "--group-add", "keep-groups", *flags) == \
        "for the group\n"
    out = sh(rl, rootfs, "cat /secret 2>&1 || echo refused", *flags)
    assert "refused" in out and "for the group" not in out
    # rl exec into such a container keeps them too (crun's annotation is read there).
    cid = rl("run", "-d", "--group-add", "keep-groups", *flags, "--rootfs", rootfs,
             "sleep", "60", check=True).stdout.strip()
    try:
        assert rl("exec", cid, "cat", "/secret", check=True).stdout == "for the group\n"
        info = json.loads(rl("inspect", cid, check=True).stdout)[0]
        assert info["HostConfig"]["GroupAdd"] == ["keep-groups"]
    finally:
        rl("rm", "-f", cid)


def test_keep_groups_is_exclusive(rl: RlRunner, rootfs: Path) -> None:
    assert "not allowed with other groups" in refused(
        rl, rootfs, "--group-add", "keep-groups", "--group-add", "10")


# -- --tz, --env-host, --http-proxy ----------------------------------------------------


def test_tz_names_a_zone_and_local_is_the_hosts(rl: RlRunner, fresh_rootfs: Path) -> None:
    support.require(Path("/usr/share/zoneinfo/Asia/Tokyo").is_file(), "no host zoneinfo")
    assert not (fresh_rootfs / "etc/localtime").exists()
    assert sh(rl, fresh_rootfs, "date +%Z", "--tz", "Asia/Tokyo").strip() == "JST"
    assert not (fresh_rootfs / "etc/localtime").exists()  # its mountpoint went with --rm
    local = Path(os.path.realpath("/etc/localtime")).read_bytes()
    assert sh(rl, fresh_rootfs, "cat /etc/localtime | od -An -tx1", "--tz", "local") == \
        sh(rl, fresh_rootfs, f"cat {os.path.realpath('/etc/localtime')} | od -An -tx1",
           "-v", "/usr/share/zoneinfo:/usr/share/zoneinfo:ro")
    assert local.startswith(b"TZif")
    # Read-only: the host's zone file is not the container's to write.
    out = sh(rl, fresh_rootfs, "echo x > /etc/localtime 2>/dev/null && echo wrote || echo ro",
             "--tz", "Asia/Tokyo", "-u", "0")
    assert out.strip() == "ro"
    cid = rl("create", "--tz", "Europe/Paris", "--rootfs", fresh_rootfs, "true",
             check=True).stdout.strip()
    try:
        info = json.loads(rl("inspect", cid, check=True).stdout)[0]
        assert info["Config"]["Timezone"] == "Europe/Paris"
    finally:
        rl("rm", "-f", cid)


def test_tz_over_a_roots_symlink(rl: RlRunner, fresh_rootfs: Path) -> None:
    """Debian's /etc/localtime -> /usr/share/zoneinfo/Etc/UTC: the zone shows through
    the link; a dangling one is refused, nothing made in the root."""
    support.require(Path("/usr/share/zoneinfo/Asia/Tokyo").is_file(), "no host zoneinfo")
    (fresh_rootfs / "etc/localtime").symlink_to("/usr/share/zoneinfo/Etc/UTC")
    before = sorted(p.name for p in fresh_rootfs.iterdir())
    line = refused(rl, fresh_rootfs, "--tz", "Asia/Tokyo")
    assert "symlink to /usr/share/zoneinfo/Etc/UTC" in line
    assert sorted(p.name for p in fresh_rootfs.iterdir()) == before
    utc = fresh_rootfs / "usr/share/zoneinfo/Etc/UTC"
    utc.parent.mkdir(parents=True)
    utc.write_bytes(b"TZif not a real one")
    assert sh(rl, fresh_rootfs, "date +%Z", "--tz", "Asia/Tokyo").strip() == "JST"
    assert utc.read_bytes() == b"TZif not a real one"  # bound over, never written


@pytest.mark.parametrize("tz", ["Foo/Bar", "../../etc/passwd", "/etc/passwd", "zone.tab",
                                "Asia", ""])
def test_tz_bad_input(rl: RlRunner, rootfs: Path, tz: str) -> None:
    if tz == "":
        r = rl("run", "--rm", "--tz", tz, "--rootfs", rootfs, "/bin/sh", "-c",
               "test -e /etc/localtime || echo none")
        assert r.returncode == 0 and r.stdout == "none\n", r.stderr  # empty: no --tz
        return
    assert refused(rl, rootfs, "--tz", tz) == f"Error: finding timezone: unknown time zone {tz}"


def test_host_environment_reaches_the_container_only_when_asked(
        rl: RlRunner, rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's environment stays out unless --env-host or --http-proxy=true asks."""
    monkeypatch.setenv("RL_CANARY", "sekrit")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "localhost")
    plain = sh(rl, rootfs, "env")
    assert "sekrit" not in plain and "proxy.example" not in plain and "no_proxy" not in plain
    proxied = sh(rl, rootfs, "env", "--http-proxy=true").splitlines()
    assert "HTTP_PROXY=http://proxy.example:3128" in proxied and "no_proxy=localhost" in proxied
    assert not any("sekrit" in ln for ln in proxied)
    assert "proxy.example" not in sh(rl, rootfs, "env", "--http-proxy=false")
    # -e wins over the caller's value, as over the image's (podman's order).
    assert "HTTP_PROXY=http://other:1" in sh(rl, rootfs, "env", "--http-proxy=true",
                                             "-e", "HTTP_PROXY=http://other:1").splitlines()
    hosted = sh(rl, rootfs, "env", "--env-host", "-e", "RL_CANARY=mine").splitlines()
    assert "RL_CANARY=mine" in hosted and "HTTP_PROXY=http://proxy.example:3128" in hosted
    assert "RL_CANARY=sekrit" in sh(rl, rootfs, "env", "--env-host").splitlines()


# -- --device ------------------------------------------------------------------------


def test_device_at_a_new_path_and_read_only(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, "head -c 4 /dev/zz | od -An -tx1; echo x > /dev/zz && echo wrote",
             "--device", "/dev/zero:/dev/zz")
    assert out.split() == ["00", "00", "00", "00", "wrote"]
    assert sh(rl, rootfs, "test -c /dev/zw && echo ok", "--device",
              "/dev/zero:/dev/zw:rwm").split() == ["ok"]
    # A read-only device cannot be enforced rootless: refused, not silently writable.
    assert "cannot be enforced" in refused(rl, rootfs, "--device", "/dev/zero:/dev/zr:r")


def test_device_fuse_present_inside(rl: RlRunner, rootfs: Path) -> None:
    support.require_fuse()
    out = sh(rl, rootfs, "stat -c '%F %t:%T' /dev/fuse", "--device", "/dev/fuse")
    st = os.stat("/dev/fuse")
    assert out.strip() == f"character special file {os.major(st.st_rdev):x}:" \
                          f"{os.minor(st.st_rdev):x}"


def test_device_bad_input(rl: RlRunner, rootfs: Path, tmp_path: Path) -> None:
    regular = tmp_path / "plain"
    regular.write_text("x")
    assert "not a device node" in refused(rl, rootfs, "--device", str(regular))
    missing = f"/dev/nope-{uuid.uuid4().hex[:6]}"
    assert missing in refused(rl, rootfs, "--device", missing)
    assert "bad format" in refused(rl, rootfs, "--device", "dev/zero")


# -- --ipc, --pid, --uts, --shm-size -------------------------------------------------


def test_ipc_host_shares_posix_shm_with_the_host(rl: RlRunner, rootfs: Path) -> None:
    name = f"rl-test-{uuid.uuid4().hex[:8]}"
    host_seg = Path("/dev/shm") / name
    host_seg.write_text("from the host\n")
    try:
        out = sh(rl, rootfs, f"cat /dev/shm/{name}; echo from inside > /dev/shm/{name}.b",
                 "--ipc=host")
        assert out == "from the host\n"
        assert (Path("/dev/shm") / f"{name}.b").read_text() == "from inside\n"
        # A private IPC namespace's /dev/shm is its own.
        out = sh(rl, rootfs, f"ls /dev/shm/{name} 2>&1 || echo absent")
        assert "absent" in out
    finally:
        host_seg.unlink(missing_ok=True)
        (Path("/dev/shm") / f"{name}.b").unlink(missing_ok=True)


def test_ipc_host_two_containers_exchange_through_dev_shm(rl: RlRunner, rootfs: Path) -> None:
    """Two ranks in two containers, as MPI's shared-memory transport would place them."""
    name = f"rl-rank-{uuid.uuid4().hex[:8]}"
    shm = Path("/dev/shm")
    wait_for = "i=0; while [ ! -e /dev/shm/{0} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done"
    rank0 = rl("run", "-d", "--ipc=host", "--rootfs", rootfs, "/bin/sh", "-c",
               f"echo rank0 > /dev/shm/{name}.a; {wait_for.format(name + '.b')}; "
               f"cat /dev/shm/{name}.b > /dev/shm/{name}.done", check=True).stdout.strip()
    try:
        out = sh(rl, rootfs, f"{wait_for.format(name + '.a')}; cat /dev/shm/{name}.a; "
                 f"echo rank1 > /dev/shm/{name}.b", "--ipc=host")
        assert out == "rank0\n"
        assert rl("wait", rank0, check=True).stdout.strip() == "0"
        assert (shm / f"{name}.done").read_text() == "rank1\n"
    finally:
        rl("rm", "-f", rank0)
        for suffix in ("a", "b", "done"):
            (shm / f"{name}.{suffix}").unlink(missing_ok=True)


def test_pid_host_sees_host_pids(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, f"echo $$; test -d /proc/{os.getpid()} && echo seen", "--pid=host")
    pid, seen = out.split()
    assert int(pid) != 1 and seen == "seen"


def test_uts_host_has_the_hosts_name(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, "hostname; echo $HOSTNAME", "--uts=host")
    assert out.split() == [os.uname().nodename] * 2
    assert "hostname" in refused(rl, rootfs, "--uts=host", "-h", "x")


def test_shm_size(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, "df -k /dev/shm | tail -1", "--shm-size", "1m")
    assert out.split()[1] == "1024"
    out = sh(rl, rootfs, "df -k /dev/shm | tail -1")
    assert out.split()[1] == str(64 * 1024)  # docker's default


@pytest.mark.parametrize("flags,words", [
    (("--shm-size", "lots"), "invalid size: 'lots'"),
    (("--shm-size", "-1m"), "invalid size"),
    (("--ipc", "bogus"), "--ipc: invalid IPC mode"),
    (("--pid", "bogus"), "--pid: invalid PID mode"),
    (("--uts", "bogus"), "--uts: invalid UTS mode"),
    (("--ipc", "container:x"), "not supported yet"),
])
def test_namespace_flags_bad_input(rl: RlRunner, rootfs: Path, flags: tuple[str, ...],
                                   words: str) -> None:
    assert words in refused(rl, rootfs, *flags)


def test_sysctl_sets_the_containers_own_parameters(rl: RlRunner, rootfs: Path) -> None:
    """--sysctl writes namespaced parameters of the container's own namespaces: the
    container sees them, the host's stay as they were."""
    host_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    host_shmmni = Path("/proc/sys/kernel/shmmni").read_text()
    out = sh(rl, rootfs, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni "
             "/proc/sys/net/ipv4/ping_group_range",
             "--sysctl", "net.ipv4.ip_forward=1", "--sysctl", "kernel.shmmni=1234",
             "--sysctl", "net.ipv4.ping_group_range=0 0")
    assert out.split() == ["1", "1234", "0", "0"]
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host_forward
    assert Path("/proc/sys/kernel/shmmni").read_text() == host_shmmni
    cid = rl("create", "--sysctl", "net.ipv4.ip_forward=1", "--rootfs", rootfs, "true",
             check=True).stdout.strip()
    try:
        shown = rl("inspect", "-f", "{{json .HostConfig.Sysctls}}", cid, check=True).stdout
        assert json.loads(shown) == {"net.ipv4.ip_forward": "1"}
    finally:
        rl("rm", cid)


@pytest.mark.parametrize("flags,words", [
    (("--sysctl", "vm.swappiness=10"), "sysctl 'vm.swappiness' is not allowed"),
    (("--sysctl", "kernel.hostname=x"), "is not allowed"),
    (("--sysctl", "net.ipv4.ip_forward"), "not in the KEY=VALUE format"),
    (("--sysctl", "net.ipv4.ip_forward=1", "--network", "host"), "not allowed with --network"),
    (("--sysctl", "kernel.shmmax=1", "--ipc", "host"), "not allowed with --ipc=host"),
    (("--sysctl", "net.../../x=1"), "invalid sysctl key"),
])
def test_sysctl_bad_input(rl: RlRunner, rootfs: Path, flags: tuple[str, ...],
                          words: str) -> None:
    assert words in refused(rl, rootfs, *flags)


def test_sysctl_the_kernel_refuses_is_a_clear_error(rl: RlRunner, rootfs: Path) -> None:
    # namespaced, but no such parameter: the container does not start, one Error line
    r = rl("run", "--rm", "--sysctl", "net.ipv4.no_such_knob=1", "--rootfs", rootfs, "true")
    assert r.returncode == 125 and r.stderr.startswith("Error: ")
    assert "setting sysctl net.ipv4.no_such_knob=1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def _status(text: str, field: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.startswith(field + ":"))


def test_privileged_holds_every_capability_and_no_filter(rl: RlRunner, rootfs: Path) -> None:
    """--privileged, rootless: the full bounding set inside, no seccomp, /proc unmasked,
    the host's devices the user may open (here /dev/fuse), but never its terminals; a
    --cap-drop still drops."""
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    full = (1 << (last + 1)) - 1
    masks = "grep -c ' /proc/keys ' /proc/self/mountinfo || true"
    out = sh(rl, rootfs, f"cat /proc/self/status; echo ==; ls /dev; echo ==; {masks}",
             "--privileged")
    status, devs, masked = out.split("==\n")
    assert masked.strip() == "0"  # no mask mounted over /proc/keys
    assert sh(rl, rootfs, masks).strip() == "1"
    assert int(_status(status, "CapBnd"), 16) == full
    assert int(_status(status, "CapEff"), 16) == full
    assert _status(status, "Seccomp") == "0"
    names = devs.split()
    if os.access("/dev/fuse", os.R_OK | os.W_OK):
        assert "fuse" in names
    assert not any(n.startswith(("tty", "console", "vcs")) and n != "tty" for n in names)
    plain = sh(rl, rootfs, "cat /proc/self/status")
    assert int(_status(plain, "CapBnd"), 16) != full and _status(plain, "Seccomp") == "2"
    dropped = sh(rl, rootfs, "cat /proc/self/status", "--privileged", "--cap-drop", "NET_RAW")
    assert int(_status(dropped, "CapBnd"), 16) == full & ~(1 << 13)  # CAP_NET_RAW is 13
    cid = rl("create", "--privileged", "--rootfs", rootfs, "true", check=True).stdout.strip()
    try:
        assert rl("inspect", "-f", "{{.HostConfig.Privileged}}", cid,
                  check=True).stdout.strip() == "true"
    finally:
        rl("rm", cid)


def test_privileged_never_binds_a_terminal_or_the_session(tmp_path: Path) -> None:
    """--privileged's filter over /dev entries: terminals under any name or directory
    (by their majors: the kernel's tty drivers' and the pty, console, input and
    framebuffer ones), session devices by name; and over this host's real /dev."""
    import stat as st

    from rootless.engine import hpc

    chr_ = st.S_IFCHR | 0o666
    refused = hpc._refused_majors()
    cases = {  # (name, major, minor): bound?
        ("hvc0", 229, 0): False, ("xvc0", 204, 191): False, ("ptyp0", 2, 0): False,
        ("tty1", 4, 1): False, ("uinput", 10, 223): False, ("event0", 13, 64): False,
        ("fb0", 29, 0): False, ("pts", 136, 3): False, ("mine", 136, 7): False,
        ("weird", 4, 70): False, ("fuse", 10, 229): True, ("card0", 226, 0): True,
        ("kvm", 10, 232): True,
    }
    for (name, major, minor), want in cases.items():
        assert hpc.bindable(name, chr_, os.makedev(major, minor), refused) is want, name
    # a tty driver the kernel lists is refused whole, whatever its major
    drivers = tmp_path / "drivers"
    drivers.write_text("rfcomm               /dev/rfcomm   216 0-255 serial\n")
    assert 216 in hpc._refused_majors(str(drivers))
    assert not hpc.bindable("rfcomm0", chr_, os.makedev(216, 0),
                            hpc._refused_majors(str(drivers)))
    # and this host's /dev: nothing bound is a terminal
    for m in hpc.privileged_devices():
        rdev = os.stat(m.source).st_rdev
        assert os.major(rdev) not in refused, m.source
        assert "/tty" not in m.source and "/pts" not in m.source, m.source
