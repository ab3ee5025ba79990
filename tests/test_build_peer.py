"""rl build against the peer: the same contexts built by `rl build` and by
`podman build` (Debian's podman 4.3, `--runtime=runc`, rootless) give the same
image config and the same file tree.

Both tools start from one busybox image, loaded into each from one
docker-archive. The config is read from each tool's own `save` (the image
config blob); the tree from each tool's `export` of a container created from
the result (the flattened root filesystem: paths, types, modes, owners, link
targets, contents; times are not compared). Podman gets a store of its own
under the test's temp dir (`--root`, `--runroot`, its own XDG_RUNTIME_DIR and
config), so nothing of the user's podman is read or changed.

Podman 4.3 builds with buildah 1.28, not BuildKit, and the issue asks for what
docker does. Where buildah is known to differ from docker, the case names
podman's value and the reason (`Case.podman`): the test then checks rl against
docker's value, and podman against its own, so a podman that changes, or an
rl that drifts, both show.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from imagetools import owners, rootfs_tar

import support
from support import RlRunner, RlState

BASE = "localhost/peer-busybox:1"

# The image config fields the issue names; OnBuild too (ONBUILD is recorded, not run).
KEYS = ("Entrypoint", "Cmd", "Env", "WorkingDir", "User", "ExposedPorts", "Labels",
        "StopSignal", "Healthcheck", "Volumes", "Shell", "OnBuild")

# One node of a flattened tree: tar type, permission bits, uid, gid, link target,
# sha256 of the content (regular files).
Node = tuple[str, int, int, int, str, str]

_TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir",
          tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink", tarfile.FIFOTYPE: "fifo",
          tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block"}


@dataclass(frozen=True)
class Case:
    name: str
    dockerfile: str
    files: dict[str, str] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # context symlinks: name → target
    build_args: tuple[str, ...] = ()
    # Known podman 4.3 / buildah 1.28 divergences from docker, by config key or tree path.
    podman: dict[str, Divergence] = field(default_factory=dict)


@dataclass(frozen=True)
class Divergence:
    """rl is held to *docker*'s value, podman to its own; *why* says where buildah differs."""

    docker: object
    podman: object
    why: str


def file_node(text: str, mode: int = 0o644, uid: int = 0, gid: int = 0,
              linked: str = "") -> Node:
    """A regular file as `flattened` shows it; *linked*: the names of its hard links."""
    return ("file", mode, uid, gid, f"linked:{linked}" if linked else "",
            hashlib.sha256(text.encode()).hexdigest()[:16])


# --------------------------------------------------------------------------
# The peer


@dataclass
class Peer:
    """Rootless podman with a private store, and rl, each holding BASE."""

    podman: list[str]
    env: dict[str, str]
    root: Path
    rl: list[str]
    rl_env: dict[str, str]

    def pm(self, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([*self.podman, *map(str, args)], capture_output=True, text=True,
                           env=self.env, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        assert r.returncode == 0, (args, r.stdout, r.stderr[-3000:])
        return r

    def rl_(self, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([*self.rl, *map(str, args)], capture_output=True, text=True,
                           env=self.rl_env, timeout=timeout, stdin=subprocess.DEVNULL,
                           check=False)
        assert r.returncode == 0, (args, r.stdout, r.stderr[-3000:])
        return r


def base_archive(rootfs: Path, dest: Path) -> Path:
    """A docker-archive of the busybox rootfs as BASE (owned by root; /run exists, as in
    Debian's and Docker Hub's images, so buildah's RUN mount point adds nothing)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(str(rootfs), arcname=".", filter=owners)
        run = tarfile.TarInfo("./run")
        run.type, run.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(run)
    data = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "busybox rootfs"}]}).encode()
    cfg_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [BASE],
                            "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(dest, "w") as tf:
        for name, blob in ((cfg_name, config), ("layer.tar", data), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return dest


@pytest.fixture(scope="module")
def peer(rootfs: Path, rl_path: Path, rl_state: RlState) -> Iterator[Peer]:
    support.require_userns()
    support.require_newidmap()
    support.require_busybox()
    support.require(shutil.which("podman") is not None, "podman not installed")
    support.require(shutil.which("runc") is not None, "runc not installed")
    # A short path: podman's run root must stay under ~50 characters.
    root = Path(tempfile.mkdtemp(prefix="rlpeer-", dir="/tmp"))
    run = root / "xdg-run"
    run.mkdir(mode=0o700)
    (root / "registries.conf").write_text("unqualified-search-registries = []\n")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(run), "XDG_CONFIG_HOME": str(root / "config"),
           "XDG_DATA_HOME": str(root / "data"),
           "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf")}
    podman = ["podman", "--runtime=runc", "--root", str(root / "storage"), "--runroot",
              str(root / "runroot"), "--storage-driver=vfs", "--cgroup-manager=cgroupfs",
              "--events-backend=file"]
    p = Peer(podman, env, root, [str(rl_path)], {**os.environ, **rl_state.env()})
    try:
        archive = base_archive(rootfs, root / "base.tar")
        p.pm("load", "-i", archive)
        p.rl_("load", "-i", archive)
        yield p
    finally:
        subprocess.run([*podman, "unshare", "rm", "-rf", str(root / "storage")], env=env,
                       capture_output=True, check=False, timeout=300)
        # podman's pause process (it holds podman's user namespace) is ours: it was
        # started for this private XDG_RUNTIME_DIR.
        pidfile = run / "libpod" / "tmp" / "pause.pid"
        try:
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass
        support.remove_tree(root)


# --------------------------------------------------------------------------
# What each tool built


def saved_config(archive: Path) -> dict[str, object]:
    with tarfile.open(archive) as tf:
        manifest = tf.extractfile("manifest.json")
        assert manifest is not None
        blob = tf.extractfile(json.load(manifest)[0]["Config"])
        assert blob is not None
        config = json.load(blob)
    cc = config.get("config") or {}
    assert isinstance(cc, dict)
    return cc


def _clean(name: str) -> str:
    return os.path.normpath("/" + name.lstrip("/").removeprefix("./")) if name.strip("./") \
        else "/"


def flattened(archive: Path) -> dict[str, Node]:
    """Every path of an exported root filesystem and what it is. A hard link is shown
    as the file it shares, plus the group of names sharing it (which name a tar writes
    first is the exporter's walk order, not the image)."""
    out: dict[str, Node] = {}
    groups: dict[str, set[str]] = {}
    with tarfile.open(archive) as tf:
        for m in tf:
            name = _clean(m.name)
            if m.islnk():
                target = _clean(m.linkname)
                out[name] = out[target]
                group = groups.setdefault(target, {target})
                group.add(name)
                groups[name] = group
                continue
            digest = ""
            if m.isreg():
                f = tf.extractfile(m)
                assert f is not None
                digest = hashlib.sha256(f.read()).hexdigest()[:16]
            out[name] = (_TYPES.get(m.type, repr(m.type)), m.mode & 0o7777, m.uid, m.gid,
                         m.linkname, digest)
    for name, group in groups.items():
        kind, mode, uid, gid, _, digest = out[name]
        out[name] = (kind, mode, uid, gid, "linked:" + ",".join(sorted(group)), digest)
    return out


def normalise(key: str, value: object) -> object:
    """docker's null, an absent key, "" and an empty list or map all mean "none" in a config."""
    if value in (None, "", [], {}):
        return None
    if key == "Labels" and isinstance(value, dict):
        # buildah stamps its version on every image; docker adds no label of its own.
        value = {k: v for k, v in value.items() if k != "io.buildah.version"}
        return value or None
    return value


def make_context(case: Case, dest: Path) -> Path:
    dest.mkdir()
    (dest / "Dockerfile").write_text(case.dockerfile)
    for name, data in case.files.items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(data)
    for name, target in case.links.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, dest / name)
    # Deepest first, so a directory made unwritable keeps its children settable.
    for name, mode in sorted(case.modes.items(), key=lambda kv: -kv[0].count("/")):
        (dest / name).chmod(mode)
    return dest


def built_by_both(peer: Peer, case: Case, tmp_path: Path
                  ) -> tuple[dict[str, object], dict[str, object],
                             dict[str, Node], dict[str, Node]]:
    ctx = make_context(case, tmp_path / "ctx")
    tag = f"localhost/peer-{case.name}:1"
    args = [a for arg in case.build_args for a in ("--build-arg", arg)]
    peer.rl_("build", "-q", "-t", tag, *args, ctx)
    # docker's image format: buildah's default (OCI) drops Healthcheck, Shell, OnBuild.
    peer.pm("build", "-q", "--format=docker", "--pull=never", "--network=none", "-t", tag,
            *args, ctx)
    peer.rl_("save", "-o", tmp_path / "rl.img", tag)
    peer.pm("save", "--format=docker-archive", "-o", tmp_path / "pm.img", tag)
    rl_ctr = peer.rl_("create", tag, "true").stdout.strip()
    peer.rl_("export", "-o", tmp_path / "rl.tree", rl_ctr)
    peer.rl_("rm", "-v", rl_ctr)  # -v: a VOLUME's anonymous volumes too, as docker's
    pm_ctr = peer.pm("create", "--pull=never", tag, "true").stdout.strip()
    peer.pm("export", "-o", tmp_path / "pm.tree", pm_ctr)
    peer.pm("rm", "-v", pm_ctr)
    peer.rl_("rmi", tag)
    peer.pm("rmi", tag)
    return (saved_config(tmp_path / "rl.img"), saved_config(tmp_path / "pm.img"),
            flattened(tmp_path / "rl.tree"), flattened(tmp_path / "pm.tree"))


# --------------------------------------------------------------------------
# The contexts


CASES = [
    Case("multistage", """\
FROM localhost/peer-busybox:1 AS build
WORKDIR /src
COPY main.c lib/ ./
RUN mkdir -p out/bin && cat main.c util.c > out/bin/app && chmod 0751 out/bin/app \\
 && ln -s app out/bin/app-link && echo unused > /src/junk
FROM localhost/peer-busybox:1 AS other
RUN echo never > /never
FROM build AS test
RUN echo tested > /src/out/tested
FROM localhost/peer-busybox:1
COPY --from=build /src/out/bin/app /usr/local/bin/
COPY --from=build /src/out /opt/out
COPY --from=test /src/out/tested /tested
CMD ["/usr/local/bin/app"]
""", {"main.c": "int main(void) { return 0; }\n", "lib/util.c": "int util;\n"}),

    Case("arg-env-scoping", """\
ARG BASE=localhost/peer-busybox:1
ARG GLOBAL=g1
FROM $BASE
ARG GLOBAL
ARG FROM_CLI=default
ARG UNSET
ENV A=$GLOBAL B=${FROM_CLI}-x C="${UNSET:-fallback}" D='$GLOBAL' E=${UNSET:+set}
ENV A=${A}2 PATH=/opt/bin:$PATH
ARG A=from-arg
RUN echo "$A $B $C $D" > /vars
ENV F=$A
""", build_args=("FROM_CLI=cli",), podman={
        # BuildKit's dispatchArg adds an ARG's value to the state's environment, the
        # one expansion and RUN read: a later ARG A wins over ENV A there (decisions,
        # Build 3), while the image keeps ENV's value. buildah lets ENV win (the
        # Dockerfile reference's wording). And BuildKit's addEnv replaces a variable in
        # place; buildah moves a redefined one (PATH) to the end.
        "Env": Divergence(
            ["PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "A=g12", "B=cli-x", "C=fallback", "D=$GLOBAL", "E=", "F=from-arg"],
            ["A=g12", "B=cli-x", "C=fallback", "D=$GLOBAL", "E=",
             "PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "F=g12"],
            "buildah: ENV beats a later ARG; a redefined ENV moves to the end"),
        "/vars": Divergence(file_node("from-arg cli-x fallback $GLOBAL\n"),
                            file_node("g12 cli-x fallback $GLOBAL\n"),
                            "buildah: ENV beats a later ARG in RUN's environment"),
    }),

    Case("workdir", """\
FROM localhost/peer-busybox:1
WORKDIR /a/b/c
WORKDIR d
ENV NAME=e
WORKDIR $NAME/f
COPY x.txt .
WORKDIR /etc
WORKDIR /tmp
RUN pwd > /pwd
""", {"x.txt": "x\n"}),

    Case("user", """\
FROM localhost/peer-busybox:1
USER user
RUN touch /tmp/by-user && mkdir /home/user/made && id > /home/user/id
WORKDIR /home/user/work/dir
USER 1000:10
RUN touch /tmp/by-1000-10
WORKDIR /var/by-id
USER root
RUN mkdir -p /srv/data && chown 1000:1000 /srv/data && chmod 2775 /srv/data
USER nobody:nogroup
WORKDIR /tmp/nobody
""", {}, podman={
        # runc (docker's and BuildKit's) sets the supplementary groups the group file
        # gives the user; podman and buildah add the primary group to them.
        "/home/user/id": Divergence(
            file_node("uid=1000(user) gid=1000(user) groups=10(wheel)\n", uid=1000, gid=1000),
            file_node("uid=1000(user) gid=1000(user) groups=10(wheel),1000(user)\n",
                      uid=1000, gid=1000),
            "buildah adds the primary gid to a RUN's supplementary groups"),
        # BuildKit's WORKDIR is a mkdir -p as the USER of that moment (dispatchWorkdir:
        # llb.Mkdir WithParents WithUser). buildah makes the directory only when the next
        # RUN starts, as that RUN's user, and not at all when no RUN follows.
        **{path: Divergence(("dir", 0o755, *docker, "", ""), podman, why) for path, docker,
           podman, why in (
               ("/home/user/work", (1000, 1000), ("dir", 0o755, 1000, 10, "", ""),
                "buildah: made by the next RUN, as USER 1000:10"),
               ("/home/user/work/dir", (1000, 1000), ("dir", 0o755, 1000, 10, "", ""),
                "buildah: made by the next RUN, as USER 1000:10"),
               ("/var/by-id", (1000, 10), ("dir", 0o755, 0, 0, "", ""),
                "buildah: made by the next RUN, as USER root"),
               ("/tmp/nobody", (65534, 65534), None,
                "buildah: no RUN follows, so never made"))},
    }),

    Case("chown-chmod", """\
FROM localhost/peer-busybox:1
COPY --chown=1000:10 owned.txt /owned/
COPY --chown=1000 tree /tree-owned
COPY --chmod=0600 owned.txt /secret.txt
COPY --chmod=755 run.sh /usr/local/bin/run
COPY --chown=65534:65534 --chmod=0640 owned.txt /both
""", {"owned.txt": "mine\n", "run.sh": "#!/bin/sh\n", "tree/a": "a\n", "tree/sub/b": "b\n"},
        {"owned.txt": 0o664, "run.sh": 0o644, "tree/sub": 0o750}),

    Case("directory-contents", """\
FROM localhost/peer-busybox:1
COPY dir /no-slash
COPY dir/ /with-slash/
COPY dir /etc/
COPY one.txt /renamed
COPY one.txt /into/
COPY one.txt two.txt /many/
COPY one.txt /home/user
COPY empty/ /empty/
COPY dir/sub /sub-only
""", {"dir/a": "a\n", "dir/sub/b": "b\n", "dir/sub/deeper/c": "c\n", "one.txt": "1\n",
      "two.txt": "2\n", "empty/": ""},
        {"dir": 0o750, "dir/sub": 0o700, "empty": 0o711}),

    Case("globs", """\
FROM localhost/peer-busybox:1
COPY *.txt /g1/
COPY [ab].conf /g2/
COPY d?r /g3/
COPY sub/*/x.txt /g4/
COPY d[io]r /g5/
""", {"one.txt": "1\n", "two.txt": "2\n", "a.conf": "a\n", "b.conf": "b\n", "c.conf": "c\n",
      "dir/in-dir": "d\n", "dor/in-dor": "o\n", "sub/p/x.txt": "px\n", "sub/q/x.txt": "qx\n"}),

    Case("dockerignore", """\
FROM localhost/peer-busybox:1
COPY . /ctx/
""", {".dockerignore": "*.log\n!keep.log\nsecret/\n**/*.tmp\ndocs/*\n!docs/README\n"
                       "/Dockerfile\n",
      "a.log": "no\n", "keep.log": "yes\n", "secret/key": "no\n", "src/x.tmp": "no\n",
      "src/x.py": "yes\n", "src/deep/y.tmp": "no\n", "docs/README": "yes\n",
      "docs/other": "no\n", "top.txt": "yes\n"}),

    Case("symlinks", """\
FROM localhost/peer-busybox:1
COPY tree /tree
COPY link-to-file /followed
COPY rel-link /kept/
RUN ln -s /tree/file /abs-link && ln /tree/file /hard && ln -s missing /dangling
""", {"tree/file": "content\n", "tree/sub/f2": "two\n", "file": "top\n"},
        links={"tree/link": "file", "tree/sub/up": "../file", "tree/dir-link": "sub",
               "link-to-file": "file", "rel-link": "tree/file"}, podman={
        # RUN's `ln` makes one file with two names; docker's overlay diff and export keep
        # the hard link. podman on vfs storage exports the two names as two files.
        path: Divergence(file_node("content\n", linked="/hard,/tree/file"),
                         file_node("content\n"),
                         "podman (vfs storage) exports a hard link as two separate files")
        for path in ("/hard", "/tree/file")}),

    Case("entrypoint-cmd", """\
FROM localhost/peer-busybox:1 AS shell-forms
ENTRYPOINT echo "from entrypoint" $HOME
CMD echo cmd
FROM localhost/peer-busybox:1 AS exec-entry
CMD ["will", "be", "dropped"]
ENTRYPOINT ["/bin/echo", "a b"]
FROM exec-entry
CMD ["c", "d"]
""", {}),

    Case("entrypoint-resets-base-cmd", """\
FROM localhost/peer-busybox:1
ENTRYPOINT ["/bin/sh", "-c", "echo hi"]
""", {}),

    Case("shell", """\
FROM localhost/peer-busybox:1
SHELL ["/bin/sh", "-e", "-c"]
RUN echo "shell: $0" > /shell
SHELL ["/bin/busybox", "sh", "-c"]
RUN echo again >> /shell
CMD echo via-shell
ENTRYPOINT ["/bin/sh"]
""", {}, podman={
        # Docker (BuildKit and the classic builder) prefixes a shell-form CMD or
        # ENTRYPOINT with the SHELL in force; imagebuilder hard-codes /bin/sh -c.
        "Cmd": Divergence(["/bin/busybox", "sh", "-c", "echo via-shell"],
                          ["/bin/sh", "-c", "echo via-shell"],
                          "buildah's imagebuilder ignores SHELL for a shell-form CMD"),
    }),

    Case("healthcheck", """\
FROM localhost/peer-busybox:1 AS none
HEALTHCHECK CMD wget -q -O- http://localhost/ || exit 1
HEALTHCHECK NONE
FROM localhost/peer-busybox:1
HEALTHCHECK --interval=30s --timeout=5s --start-period=1m30s --retries=4 \\
  CMD ["wget", "-q", "-O-", "http://localhost/"]
""", {}),

    Case("onbuild", """\
FROM localhost/peer-busybox:1
ONBUILD RUN echo triggered > /trigger
ONBUILD COPY . /app/src
ONBUILD ENV X=1
""", {}),

    Case("metadata", """\
FROM localhost/peer-busybox:1
LABEL a=1 "b c"="d e" multi="line \\
two"
LABEL a=override org.opencontainers.image.title=peer
MAINTAINER someone <a@example.com>
EXPOSE 80 443/tcp 53/udp
EXPOSE 8080
VOLUME /data
VOLUME ["/var/lib/x", "/logs"]
STOPSIGNAL SIGQUIT
""", {}),

    Case("run-deletes-and-overwrites", """\
FROM localhost/peer-busybox:1
RUN rm -rf /var/log /home && mkdir /var/log && echo new > /var/log/only \\
 && chmod 0700 /root && echo changed > /etc/group
COPY passwd /etc/passwd
COPY passwd /tmp/in-sticky/
COPY passwd /var/tmp/
RUN rm /bin/notexec && mkfifo /fifo && chmod 4755 /bin/busybox
""", {"passwd": "root:x:0:0:root:/root:/bin/sh\n"}, {"passwd": 0o600}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_config_and_tree_as_podman(peer: Peer, case: Case, tmp_path: Path) -> None:
    rl_cfg, pm_cfg, rl_tree, pm_tree = built_by_both(peer, case, tmp_path)
    problems = []

    def compare(what: str, rl_value: object, pm_value: object) -> None:
        known = case.podman.get(what)
        if known is None:
            if rl_value != pm_value:
                problems.append(f"{what}: rl {rl_value!r} != podman {pm_value!r}")
            return
        docker, podman = known.docker, known.podman
        if what in KEYS:
            docker, podman = normalise(what, docker), normalise(what, podman)
        if rl_value != docker:
            problems.append(f"{what}: rl {rl_value!r} != docker's {docker!r}")
        if pm_value != podman:
            problems.append(f"{what}: podman {pm_value!r}, no longer the known {podman!r} "
                            f"({known.why})")

    for key in KEYS:
        compare(key, normalise(key, rl_cfg.get(key)), normalise(key, pm_cfg.get(key)))
    for path in sorted(set(rl_tree) | set(pm_tree) | set(case.podman) - set(KEYS)):
        compare(path, rl_tree.get(path), pm_tree.get(path))
    assert not problems, "\n".join(problems)


def test_parent_directories_as_buildkit_makes_them(rl: RlRunner, rootfs: Path,
                                                   tmp_path: Path) -> None:
    """rl alone (no podman needed): what the comparison above found. A layer written by
    COPY or WORKDIR keeps the image's parent directories as they are (/tmp's sticky bit,
    /home/user's owner); missing ones are 0755 and owned by --chown's or USER's ids; a
    directory source's destination is 0755 whatever the source directory's mode."""
    support.require_userns()
    support.require_newidmap()
    support.require_busybox()
    base = f"localhost/peer-parents-{os.getpid()}:1"
    rl("import", "-c", 'CMD ["sh"]', rootfs_tar(rootfs, tmp_path / "bb.tar.gz"), base,
       check=True)
    ctx = make_context(Case("parents", f"""\
FROM {base}
USER user
WORKDIR /home/user/app/sub
USER root
COPY f /tmp/x/
COPY f /home/user/
COPY --chown=1000:10 f /opt/new/deep/
COPY dir /made-by-dir
""", {"f": "f\n", "dir/inner": "i\n"}, {"dir": 0o700}), tmp_path / "ctx")
    image = f"{base}-built"
    rl("build", "-q", "-t", image, ctx, check=True, timeout=300)
    paths = ["/tmp", "/tmp/x", "/home/user", "/home/user/app", "/home/user/app/sub", "/opt",
             "/opt/new", "/opt/new/deep", "/opt/new/deep/f", "/made-by-dir"]
    r = rl("run", "--rm", "--network=none", image, "stat", "-c", "%n %a %u:%g", *paths,
           check=True)
    assert r.stdout.splitlines() == [
        "/tmp 1777 0:0", "/tmp/x 755 0:0", "/home/user 755 1000:1000",
        "/home/user/app 755 1000:1000", "/home/user/app/sub 755 1000:1000",
        "/opt 755 1000:10", "/opt/new 755 1000:10", "/opt/new/deep 755 1000:10",
        "/opt/new/deep/f 644 1000:10", "/made-by-dir 755 0:0"]
    rl("rmi", image, base, check=True)
