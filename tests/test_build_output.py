"""rl build's output side (issue 12, parts 7 and 8): reproducible images, progress,
--output, --check, stdin contexts and history, through the real CLI."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from buildtools import context

import support
from support import RlRunner, RlState

pytest_plugins = ["buildtools"]
pytestmark = pytest.mark.usefixtures("build_host")


Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def second_state(rl_path: Path) -> Iterator[Runner]:
    """A second, fresh rl state (its own store): a runner like the rl fixture's."""
    base = Path(tempfile.mkdtemp(prefix="rl2-", dir="/tmp"))
    state = RlState(base, base / "run", base / "data", base / "config")
    for d in (state.runtime_dir, state.data_home, state.config_home):
        d.mkdir(mode=0o700)

    def run(*args: str | os.PathLike[str], env: dict[str, str] | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(rl_path), *map(str, args)], capture_output=True, text=True,
                              env={**os.environ, **state.env(), **(env or {})},
                              timeout=timeout, stdin=subprocess.DEVNULL)

    try:
        yield run
    finally:
        support.kill_recorded_pids(state.runtime_dir)
        support.remove_tree(base)


# -- reproducible output (part 7) ---------------------------------------------------------


def _layer_members(rl: RlRunner, ref: str, tmp_path: Path) -> list[list[tuple[str, int, str]]]:
    """Each layer of *ref* as (name, mtime, uname) per member, from `rl save`."""
    out = tmp_path / "saved.tar"
    rl("save", "-o", out, ref, check=True)
    layers = []
    with tarfile.open(out) as tf:
        manifest = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        for name in manifest[0]["Layers"]:
            data = tf.extractfile(name).read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                layers.append([(m.name, m.mtime, m.uname) for m in layer.getmembers()])
    out.unlink()
    return layers


def test_same_context_two_fresh_stores_same_image_id(
        rl: RlRunner, busybox_tgz: Path, second_state: Runner, tmp_path: Path) -> None:
    dockerfile = """\
FROM base
COPY hello.txt /app/
WORKDIR /work
RUN echo made > /app/made && mkdir -p /var/new/deep && touch /var/new/deep/f
ENV A=1
CMD ["cat", "/app/made"]
"""
    ctx = context(tmp_path, dockerfile, {"hello.txt": "hi\n"})
    rl("import", "-c", 'CMD ["sh"]', busybox_tgz, "base", check=True)
    r = rl("build", "-t", "repro:1", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", ctx,
           timeout=180)
    assert r.returncode == 0, r.stderr
    first = r.stdout.strip()

    # The other store, another copy of the context (other file times), the environment's
    # variable this time; the files the RUN touched have other now-times.
    ctx2 = context(tmp_path, dockerfile, {"hello.txt": "hi\n"}, name="ctx2")
    os.utime(ctx2 / "hello.txt", (1800000000, 1800000000))
    assert second_state("import", "-c", 'CMD ["sh"]', busybox_tgz, "base").returncode == 0
    r2 = second_state("build", "-t", "repro:1", ctx2, env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.strip() == first
    # Every new layer's members are clamped and nameless, in both stores.
    layers = _layer_members(rl, "repro:1", tmp_path)
    new = layers[1:]
    assert len(new) == 3  # COPY, WORKDIR, RUN
    names = [n for layer in new for n, _, _ in layer]
    assert "var/new/deep/f" in names and "app/hello.txt" in names
    assert all(mtime <= 1700000000 for layer in new for _, mtime, _ in layer)
    assert all(uname == "" for layer in new for _, _, uname in layer)
    info = json.loads(rl("image", "inspect", "repro:1", check=True).stdout)[0]
    assert info["Created"].startswith("2023-11-14T22:13:20")
    assert rl("run", "--rm", "repro:1", check=True).stdout == "made\n"

    # The flag does it too; another epoch is another image; without one, now-times.
    a = rl("build", "-q", "--source-date-epoch", "1700000000", ctx, check=True,
           timeout=180).stdout.strip()
    assert a == first
    c = rl("build", "-q", "--source-date-epoch", "1600000000", ctx, check=True,
           timeout=180).stdout.strip()
    assert c != a
    plain = rl("build", "-q", "-t", "plain:1", ctx, check=True, timeout=180).stdout.strip()
    assert plain != a
    assert any(mtime > 1700000000 for layer in _layer_members(rl, "plain:1", tmp_path)[1:]
               for _, mtime, _ in layer)
    r = rl("build", "-q", "--source-date-epoch", "soon", ctx)
    assert r.returncode == 125
    assert r.stderr.strip().startswith("Error: invalid --source-date-epoch 'soon'")


# -- contexts and Dockerfiles on stdin (CLI forms) ------------------------------------


def _tar_of(ctx: Path, gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        for path in sorted(ctx.rglob("*")):
            tf.add(path, str(path.relative_to(ctx)), recursive=False)
    return buf.getvalue()


def test_context_tar_on_stdin(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"FROM {bb}\nCOPY a.txt /a\nCMD [\"cat\", \"/a\"]\n",
                  {"a.txt": "from the tar\n", "sub/Other": f"FROM {bb}\nCOPY a.txt /o\n"
                   "CMD [\"cat\", \"/o\"]\n"})
    for gz in (False, True):
        r = rl("build", "-q", "-t", f"{bb}-tar", "-", input=_tar_of(ctx, gz), timeout=120)
        assert r.returncode == 0, r.stderr
        assert rl("run", "--rm", f"{bb}-tar", check=True).stdout == "from the tar\n"
    # -f names a Dockerfile inside the tar, relative to its root.
    r = rl("build", "-q", "-f", "sub/Other", "-t", f"{bb}-tar2", "-", input=_tar_of(ctx),
           timeout=120)
    assert r.returncode == 0, r.stderr
    assert rl("run", "--rm", f"{bb}-tar2", check=True).stdout == "from the tar\n"
    r = rl("build", "-q", "-f", "nope", "-", input=_tar_of(ctx))
    assert r.returncode == 125
    assert r.stderr.strip() == ("Error: failed to read dockerfile: open nope: "
                                "no such file or directory")
    # A hostile member is refused and nothing lands outside the temp dir.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = f"FROM {bb}\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        evil = tarfile.TarInfo(f"../../../../../..{tmp_path}/escaped")
        tf.addfile(evil, io.BytesIO(b""))
    r = rl("build", "-", input=buf.getvalue())
    assert r.returncode == 125 and r.stderr.startswith("Error: "), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "escaped").exists()


def test_dockerfile_on_stdin(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM nothing-here\n", {"b.txt": "context file\n"})
    text = f"FROM {bb}\nCOPY b.txt /b\nCMD [\"cat\", \"/b\"]\n"
    r = rl("build", "-q", "-t", f"{bb}-df", "-f", "-", ctx, input=text, timeout=120)
    assert r.returncode == 0, r.stderr
    assert rl("run", "--rm", f"{bb}-df", check=True).stdout == "context file\n"
    # A bare Dockerfile as the context "-": no context at all, COPY finds nothing.
    r = rl("build", "-q", "-t", f"{bb}-bare", "-", input=f"FROM {bb}\nRUN echo hi > /h\n"
           "CMD [\"cat\", \"/h\"]\n", timeout=120)
    assert r.returncode == 0, r.stderr
    assert rl("run", "--rm", f"{bb}-bare", check=True).stdout == "hi\n"
    r = rl("build", "-", input=text)
    assert r.returncode == 125
    assert 'Error: Dockerfile:2: failed to compute cache key: "/b.txt": not found' \
        in r.stderr
    r = rl("build", "-f", "-", "-", input=text)
    assert r.returncode == 125
    assert r.stderr.strip() == ("Error: invalid argument: can't use stdin for both build "
                                "context and dockerfile")


# -- --output (part 8) ------------------------------------------------------------------


def inspect_id(rl: RlRunner, ref: str) -> str:
    return str(json.loads(rl("image", "inspect", ref, check=True).stdout)[0]["Id"])


def _names_in(rl: RlRunner) -> str:
    return rl("images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout


def test_output_local_tar_and_shorthands(rl: RlRunner, bb: str, rl_path: Path,
                                         rl_state: RlState, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"""\
FROM {bb}
RUN mkdir -p /sub && echo built > /sub/file && chmod 750 /sub/file \\
    && ln -s /etc/passwd /abs-link && ln /sub/file /hard
COPY note.txt /
""", {"note.txt": "a note\n"})
    images_before = _names_in(rl)
    dest = tmp_path / "out"
    r = rl("build", "-t", f"{bb}-notstored", "--output", f"type=local,dest={dest}", ctx,
           timeout=180)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # a file tree has no image ID
    assert (dest / "sub" / "file").read_text() == "built\n"
    assert (dest / "sub" / "file").stat().st_mode & 0o777 == 0o750
    assert os.readlink(dest / "abs-link") == "/etc/passwd"  # kept, not followed
    assert (dest / "hard").stat().st_ino == (dest / "sub" / "file").stat().st_ino
    assert (dest / "note.txt").read_text() == "a note\n"
    assert (dest / "bin" / "busybox").is_file()  # the whole tree, the base's files too
    assert _names_in(rl) == images_before  # neither stored nor tagged

    # -o DIR is the same; -o - and type=tar,dest=- write one tar to stdout.
    r = rl("build", "-q", "-o", tmp_path / "short", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "short" / "note.txt").read_text() == "a note\n"
    for spec in ("-", "type=tar,dest=-"):
        proc = subprocess.run([str(rl_path), "build", "-q", "-o", spec, str(ctx)],
                              capture_output=True, env={**os.environ, **rl_state.env()},
                              timeout=180, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
        with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tf:
            names = {m.name.lstrip("./") for m in tf.getmembers()}
        assert {"note.txt", "sub/file", "abs-link", "hard"} <= names
    r = rl("build", "-q", "--output", f"type=tar,dest={tmp_path / 'x.tar'}",
           "--source-date-epoch", "0", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    with tarfile.open(tmp_path / "x.tar") as tf:
        assert all(m.mtime == 0 for m in tf.getmembers())
    assert _names_in(rl) == images_before

    for bad, words in (("type=nope,dest=x", "unsupported type 'nope'"),
                       ("type=local", "dest is required"),
                       ("type=tar,dest=x,foo=1", "unsupported attribute 'foo'"),
                       ("dest=x", "type is required")):
        r = rl("build", "-o", bad, ctx)
        assert r.returncode == 125 and words in r.stderr, (bad, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_several_outputs_each_exported(rl: RlRunner, bb: str, rl_path: Path,
                                       rl_state: RlState, tmp_path: Path) -> None:
    """buildx 0.13+ takes several --output: each is written; type=image beside them
    stores and tags the image too; a repeated one counts once; two to stdout refused."""
    ctx = context(tmp_path, f"FROM {bb}\nRUN echo several > /s\n")
    images_before = _names_in(rl)
    tree, tar, oci = tmp_path / "tree", tmp_path / "t.tar", tmp_path / "o.tar"
    r = rl("build", "--progress=plain", "-o", tree, "-o", f"type=tar,dest={tar}",
           "-o", f"type=oci,dest={oci}", "-o", f"type=tar,dest={tar}", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    assert (tree / "s").read_text() == "several\n"
    with tarfile.open(tar) as tf:
        member = tf.extractfile("s")
        assert member is not None and member.read() == b"several\n"
    image_id = r.stdout.strip()  # the oci archive has an image ID: it is printed
    with tarfile.open(oci) as tf:
        assert f"blobs/sha256/{image_id.partition(':')[2]}" in tf.getnames()
    steps = [line.split(" ", 1)[1] for line in r.stderr.splitlines()
             if re.fullmatch(r"#\d+ exporting .*", line)]
    assert steps == ["exporting to client directory", "exporting to client tarball",
                     "exporting to oci image format"]
    assert _names_in(rl) == images_before  # nothing stored

    tag = f"{bb}-several:1"
    r = rl("build", "-q", "-o", f"type=image,name={tag}", "-o", tmp_path / "tree2", ctx,
           timeout=180)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "tree2" / "s").read_text() == "several\n"
    assert inspect_id(rl, tag) == r.stdout.strip()

    r = rl("build", "-o", "-", "-o", "type=oci,dest=-", ctx)
    assert r.returncode == 125
    assert r.stderr.strip() == ("Error: invalid outputs: only one of them can write to "
                                "stdout (dest=-)")


def _podman_loads(archive: Path, image_id: str) -> None:
    """The peer reads the archive: podman load into a private store, same image ID."""
    support.require(shutil.which("podman") is not None, "podman not installed")
    root = Path(tempfile.mkdtemp(prefix="rlpm-", dir="/tmp"))  # podman: runroot < 50 chars
    base = ["podman", "--root", str(root / "root"), "--runroot", str(root / "run"),
            "--storage-driver", "vfs"]
    try:
        r = subprocess.run([*base, "load", "-i", str(archive)], capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        ids = subprocess.run([*base, "images", "-q", "--no-trunc"], capture_output=True,
                             text=True, timeout=60, check=True).stdout.split()
        assert image_id in ids, (ids, r.stdout)
    finally:
        subprocess.run(["podman", "unshare", "rm", "-rf", str(root)], capture_output=True,
                       timeout=60)


def test_output_image_archives_load(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"FROM {bb}\nRUN echo archived > /a\nCMD [\"cat\", \"/a\"]\n")
    images_before = _names_in(rl)
    for kind in ("oci", "docker"):
        dest = tmp_path / f"{kind}.tar"
        tag = f"{bb}-{kind}:1"
        r = rl("build", "-t", tag, "--output", f"type={kind},dest={dest}", ctx, timeout=180)
        assert r.returncode == 0, r.stderr
        image_id = r.stdout.strip()
        assert image_id.startswith("sha256:")
        assert _names_in(rl) == images_before  # not stored, not tagged
        with tarfile.open(dest) as tf:
            names = tf.getnames()
        assert ("index.json" in names) if kind == "oci" else ("manifest.json" in names)
        r = rl("load", "-i", dest, check=True)
        assert rl("run", "--rm", tag, check=True).stdout == "archived\n"
        _podman_loads(dest, image_id)
        assert json.loads(rl("image", "inspect", tag, check=True).stdout)[0]["Id"] == image_id
        rl("rmi", tag, check=True)
    # compression=gzip: BuildKit's default for oci; gzip streams with no name nor time,
    # so the same build gives the same archive; the image ID is unchanged.
    archives = []
    for i in range(2):
        dest = tmp_path / f"gz{i}.tar"
        r = rl("build", "-t", f"{bb}-gz:1", "--source-date-epoch", "0", "--output",
               f"type=oci,dest={dest},compression=gzip", ctx, timeout=180)
        assert r.returncode == 0, r.stderr
        archives.append(dest.read_bytes())
    gz_id = r.stdout.strip()
    assert archives[0] == archives[1]
    with tarfile.open(fileobj=io.BytesIO(archives[0])) as tf:
        index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
        mdigest = index["manifests"][0]["digest"].partition(":")[2]
        manifest = json.loads(tf.extractfile(f"blobs/sha256/{mdigest}").read())  # type: ignore[union-attr]
        for layer in manifest["layers"]:
            assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
            head = tf.extractfile(f"blobs/sha256/{layer['digest'][7:]}").read(10)  # type: ignore[union-attr]
            assert head[:2] == b"\x1f\x8b" and head[4:8] == b"\0\0\0\0"  # MTIME 0
            assert not head[3] & 0x08  # no FNAME
    rl("load", "-i", tmp_path / "gz0.tar", check=True)
    assert json.loads(rl("image", "inspect", f"{bb}-gz:1", check=True).stdout)[0]["Id"] == gz_id
    assert rl("run", "--rm", f"{bb}-gz:1", check=True).stdout == "archived\n"
    _podman_loads(tmp_path / "gz0.tar", gz_id)
    # type=docker without a dest stores and tags, as docker's --load.
    r = rl("build", "-q", "-t", f"{bb}-loaded", "--output", "type=docker", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    assert rl("run", "--rm", f"{bb}-loaded", check=True).stdout == "archived\n"
    r = rl("build", "-q", "--output", f'type=image,"name={bb}-named:1,{bb}-named:2"', ctx,
           timeout=180)
    assert r.returncode == 0, r.stderr
    for tag in ("1", "2"):
        assert inspect_id(rl, f"{bb}-named:{tag}") == r.stdout.strip()


def test_local_output_never_writes_through_a_link(tmp_path: Path) -> None:
    """A hostile tree (a symlink out of DIR, then a file under its name; a hard link to
    a host file) is refused in one line and nothing lands outside DIR."""
    from rootless.build import output
    from rootless.errors import InvalidArgument

    outside = tmp_path / "outside"
    outside.mkdir()
    for members in (
            [("evil", tarfile.SYMTYPE, str(outside)), ("evil/planted", tarfile.REGTYPE, "")],
            [("up", tarfile.SYMTYPE, "../outside"), ("up/planted", tarfile.REGTYPE, "")],
            [("../outside/planted", tarfile.REGTYPE, "")],
            [("h", tarfile.LNKTYPE, "../outside/secret")]):
        tar = tmp_path / "t.tar"
        with tarfile.open(tar, "w") as tf:
            for name, kind, link in members:
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, link
                tf.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
        dest = tmp_path / "dest"
        with pytest.raises(InvalidArgument, match="refusing to"):
            output._extract(str(tar), str(dest))
        assert list(outside.iterdir()) == []
        support.remove_tree(dest)


# -- progress (docker buildx's displays) ------------------------------------------------


def test_plain_progress_steps_output_done_and_failure(rl: RlRunner, bb: str,
                                                      tmp_path: Path) -> None:
    ctx = context(tmp_path, f"""\
FROM {bb} AS base
RUN echo one && echo two
COPY f.txt /f
FROM base
RUN for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line$i; done; exit 4
""", {"f.txt": "f\n"})
    r = rl("build", "--progress=plain", "--target", "base", "-t", f"{bb}-prog", ctx,
           timeout=180)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == f"#1 [base 1/3] FROM {bb}"
    assert re.fullmatch(r"#1 DONE \d+\.\ds", lines[1])
    assert lines[2] == "" and lines[3] == "#2 [base 2/3] RUN echo one && echo two"
    assert re.fullmatch(r"#2 \d+\.\d{3} one", lines[4])
    assert re.fullmatch(r"#2 \d+\.\d{3} two", lines[5])
    assert re.fullmatch(r"#2 DONE \d+\.\ds", lines[6])
    assert "#3 [base 3/3] COPY f.txt /f" in lines
    assert "#4 exporting to image" in lines
    image_id = r.stdout.strip()
    assert f"#4 {lines[lines.index('#4 exporting to image') + 1].split(' ', 2)[1]} " \
           f"writing image {image_id} done" in lines

    r = rl("build", "--progress=plain", ctx, timeout=180)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    error = ('process "/bin/sh -c for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line$i; done; '
             'exit 4" did not complete successfully: exit code: 4')
    at = lines.index(f"#5 ERROR: {error}")
    assert lines[at + 1:at + 3] == ["------",
                                    " > [stage-1 2/2] RUN for i in 1 2 3 4 5 6 7 8 9 10 11 12; "
                                    "do echo line$i; done; exit 4:"]
    assert lines[at + 3:at + 14] == [f"line{i}" for i in range(3, 13)] + ["------"]
    assert lines[-1] == f"Error: {error}"

    # rawjson: BuildKit's SolveStatus objects; quiet: nothing; -q too.
    r = rl("build", "--progress=rawjson", "--no-cache", "--target", "base", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    objs = [json.loads(line) for line in r.stderr.splitlines()]
    names = [v["name"] for o in objs for v in o.get("vertexes", []) if "completed" in v]
    assert names[:3] == [f"[base 1/3] FROM {bb}", "[base 2/3] RUN echo one && echo two",
                         "[base 3/3] COPY f.txt /f"]
    logs = [base64.b64decode(x["data"]) for o in objs for x in o.get("logs", [])]
    assert b"one\n" in logs and b"two\n" in logs
    for flags in (["--progress=quiet"], ["-q"]):
        r = rl("build", *flags, "--target", "base", ctx, timeout=180)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert r.stdout.startswith("sha256:")


def test_tty_progress_draws_live(rl: RlRunner, bb: str, rl_path: Path, rl_state: RlState,
                                 tmp_path: Path) -> None:
    """--progress=tty on a pseudo-terminal: rich's live view, finished steps kept."""
    import pty

    ctx = context(tmp_path, f"FROM {bb}\nRUN echo in-tty\n")
    main, sub = pty.openpty()
    proc = subprocess.Popen([str(rl_path), "build", "--progress=tty", str(ctx)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=sub,
                            env={**os.environ, **rl_state.env(), "TERM": "xterm",
                                 "COLUMNS": "120"}, start_new_session=True)
    os.close(sub)
    seen = b""
    try:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=180) == 0
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = seen.decode(errors="replace")
    assert "[+] Building" in text
    assert f"=> [1/2] FROM {bb}" in text and "=> [2/2] RUN echo in-tty" in text
    assert "\x1b[" in text  # drawn with terminal control sequences, not plain lines
    assert "#1 " not in text


# -- --check (docker's build checks) ----------------------------------------------------


def test_check_reports_rules_in_dockers_format(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"""\
FROM {bb} as Builder
MAINTAINER someone
ENV API_TOKEN abc
WORKDIR app
COPY $NOPE /x
RUN echo never runs > /proof
CMD echo first
from {bb} AS other
EXPOSE 80:80 53/UDP
CMD ["true"]
""")
    before = rl("images", "-q", check=True).stdout
    r = rl("build", "--check", ctx)
    assert r.returncode == 1, (r.stdout, r.stderr)
    out = r.stdout
    assert out.startswith("Check complete, 12 warnings have been found!\n"), out
    expected = [
        ("FromAsCasing", "'as' and 'FROM' keywords' casing do not match"),
        ("StageNameCasing", "Stage name 'Builder' should be lowercase"),
        ("MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label"),
        ("LegacyKeyValueFormat",
         '"ENV key=value" should be used instead of legacy "ENV key value" format'),
        ("SecretsUsedInArgOrEnv",
         'Do not use ARG or ENV instructions for sensitive data (ENV "API_TOKEN")'),
        ("WorkdirRelativePath",
         'Relative workdir "app" can have unexpected results if the base image changes'),
        ("UndefinedVar", "Usage of undefined variable '$NOPE'"),
        ("JSONArgsRecommended", "JSON arguments recommended for CMD to prevent unintended "
                                "behavior related to OS signals"),
        ("ConsistentInstructionCasing",
         "Command 'from' should match the case of the command majority (uppercase)"),
        ("FromAsCasing", "'AS' and 'from' keywords' casing do not match"),
        ("ExposeInvalidFormat", "EXPOSE instruction should not define an IP address or "
                                "host-port mapping, found '80:80'"),
        ("ExposeProtoCasing", "Defined protocol '53/UDP' in EXPOSE instruction should be "
                              "lowercase"),
    ]
    blocks = out.split("\n\nWARNING: ")[1:]
    seen = [(b.split(" - ", 1)[0], b.splitlines()[1]) for b in blocks]
    for rule, detail in expected:
        assert (rule, detail) in seen, (rule, seen)
    assert len(seen) == len(expected), seen
    kebab = {"JSONArgsRecommended": "json-args-recommended",
             "FromAsCasing": "from-as-casing"}
    for rule, slug in kebab.items():
        assert f"WARNING: {rule} - https://docs.docker.com/go/dockerfile/rule/{slug}/" in out
    # The source excerpt: the line marked, two lines of context each side.
    assert ("Dockerfile:2\n--------------------\n   1 |     FROM " + bb + " as Builder\n"
            "   2 | >>> MAINTAINER someone\n   3 |     ENV API_TOKEN abc\n"
            "   4 |     WORKDIR app\n--------------------\n") in out
    assert rl("images", "-q", check=True).stdout == before  # nothing built or pulled
    assert r.stderr == ""

    # A clean Dockerfile; skip= and error= honoured; a normal build prints the summary.
    (ctx / "Dockerfile").write_text(f'FROM {bb}\nCMD ["true"]\n')
    r = rl("build", "--check", ctx)
    assert r.returncode == 0 and r.stdout == "Check complete, no warnings found.\n"
    (ctx / "Dockerfile").write_text(f"# check=skip=JSONArgsRecommended\nFROM {bb}\nCMD true\n")
    r = rl("build", "--check", ctx)
    assert r.returncode == 0, r.stdout
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nMAINTAINER x\nCMD true\n")
    r = rl("build", "-t", f"{bb}-warned", ctx, timeout=120)
    assert r.returncode == 0, r.stderr
    assert " 2 warnings found (use docker --debug to expand):\n" \
           " - MaintainerDeprecated: Maintainer instruction is deprecated in favor of using " \
           "label (line 2)\n" in r.stderr
    (ctx / "Dockerfile").write_text(
        f"# check=skip=MaintainerDeprecated;error=true\nFROM {bb}\nMAINTAINER x\n"
        "RUN echo ran > /ran\nCMD true\n")
    r = rl("build", "-t", f"{bb}-strict", ctx, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "Error: lint violation found for rules: JSONArgsRecommended")
    assert "RUN echo ran" not in r.stderr  # no step ran
    assert rl("image", "inspect", f"{bb}-strict").returncode != 0

    # A parse error is the check's error: one line, exit 1.
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nNOPE x\n")
    r = rl("build", "--check", ctx)
    assert r.returncode == 1
    assert r.stderr == "Error: dockerfile parse error on line 2: unknown instruction: NOPE\n"


def test_check_fetches_a_missing_bases_config_only(rl: RlRunner, busybox_tgz: Path,
                                                   tmp_path: Path) -> None:
    """A base not in the store: --check fetches its manifest and config from the
    registry (Debian's docker-registry on 127.0.0.1, plain HTTP as dockerd allows
    loopback) and runs UndefinedVar and InvalidBaseImagePlatform with it; no layer is
    pulled. Unreachable, or --pull=never: one line says what was skipped and why."""
    from test_registry import REGISTRY, free_port, start_registry

    support.require(os.access(REGISTRY, os.X_OK), "docker-registry not installed")
    reg = start_registry(tmp_path / "registry")
    try:
        local = f"chkbase{os.getpid()}"
        rl("import", "-c", "ENV FROM_BASE=yes", busybox_tgz, local, check=True)
        remote = f"{reg.host}/me/{local}:1"
        rl("push", "--tls-verify=false", local, remote, check=True, timeout=120)
        rl("rmi", local, check=True)
        assert rl("image", "inspect", remote).returncode != 0  # not in the store
        before = rl("images", "-q", "-a", check=True).stdout
        ctx = context(tmp_path, f"FROM --platform=linux/s390x {remote}\n"
                                "ENV A=$FROM_BASE B=$NOPE\n")
        r = rl("build", "--check", ctx, timeout=120)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert r.stderr == "", r.stderr
        blocks = r.stdout.split("\n\nWARNING: ")[1:]
        seen = [(b.split(" - ", 1)[0], b.splitlines()[1]) for b in blocks]
        # The base's Env is known: $FROM_BASE is defined, $NOPE is not.
        assert ("UndefinedVar", "Usage of undefined variable '$NOPE'") in seen, seen
        assert not any("FROM_BASE" in detail for _, detail in seen), seen
        assert ("InvalidBaseImagePlatform",
                f'Base image {remote} was pulled with platform "linux/{_go_arch()}", '
                'expected "linux/s390x" for current build') in seen, seen
        assert rl("images", "-q", "-a", check=True).stdout == before  # nothing pulled
        assert rl("image", "inspect", remote).returncode != 0

        # --pull=never asks no registry; an unreachable one is named with its error.
        r = rl("build", "--check", "--pull=never", ctx, timeout=120)
        assert r.returncode == 1 and "UndefinedVar" not in r.stdout, (r.stdout, r.stderr)
        assert "InvalidBaseImagePlatform" not in r.stdout
        assert r.stderr.splitlines() == [
            f"WARNING: base image {remote} is not in the store and its config could not "
            "be fetched (--pull=never): UndefinedVar and InvalidBaseImagePlatform not "
            "checked for stage 0"]
        gone = f"127.0.0.1:{free_port()}/me/{local}:1"
        (ctx / "Dockerfile").write_text(f"FROM {gone}\nENV B=$NOPE\n")
        r = rl("build", "--check", ctx, timeout=120)
        assert r.returncode == 0 and "UndefinedVar" not in r.stdout, (r.stdout, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"WARNING: base image {gone} is not in the store and its config could not be "
            "fetched (cannot reach registry 127.0.0.1:"), lines
        assert lines[0].endswith("): UndefinedVar and InvalidBaseImagePlatform not checked "
                                 "for stage 0")
    finally:
        reg.proc.kill()
        reg.proc.wait()


def _go_arch() -> str:
    from rootless.image.images import go_arch

    return go_arch()


def _lint(text: str, args: dict[str, str] | None = None,
          env: dict[str, dict[str, str]] | None = None,
          platforms: dict[str, str] | None = None) -> list[tuple[str, str, int]]:
    from rootless.build import checks, scope

    predefined = scope.platform_args(scope.Platform(arch="amd64"))
    result = checks.check(text, args or {}, predefined, env or {"base": {"PATH": "/bin"}},
                          None, platforms)
    return [(w.rule, w.detail, w.start_line) for w in result.warnings]


def test_check_rules_one_by_one() -> None:
    """The rules the CLI test does not reach, each on the smallest Dockerfile that fires
    it, and the look-alikes that must not."""
    assert _lint("FROM base AS a\nFROM base AS a\nFROM base AS scratch\n") == [
        ("DuplicateStageName", 'Duplicate stage name "a", stage names should be unique', 2),
        ("ReservedStageName", 'Stage name should not use the same name as reserved stage '
                              '"scratch"', 3)]
    # base: with an empty tag is no reference either (BuildKit reports both).
    assert _lint("ARG TAG=1\nFROM base:$TAGG\n") == [
        ("UndefinedArgInFrom", "FROM argument 'TAGG' is not declared (did you mean TAG?)", 2),
        ("InvalidDefaultArgInFrom", "Default value for ARG base:$TAGG results in empty or "
                                    "invalid base image name", 2)]
    assert _lint("ARG TAG=1\nFROM base:$TAG\n") == []
    assert _lint("ARG IMG=\nFROM $IMG\n", {"IMG": "base"}) == [
        ("InvalidDefaultArgInFrom", "Default value for ARG $IMG results in empty or invalid "
                                    "base image name", 2)]
    assert _lint("FROM --platform=$TARGETPLATFORM base\n") == [
        ("RedundantTargetPlatform", "Setting platform to predefined $TARGETPLATFORM in FROM "
                                    "is redundant as this is the default behavior", 1)]
    assert _lint("FROM --platform=linux/amd64 base\n") == [
        ("FromPlatformFlagConstDisallowed",
         'FROM --platform flag should not use constant value "linux/amd64"', 1)]
    assert _lint("FROM --platform=linux/amd64 base AS build-amd64\n") == []
    assert _lint('FROM base\nCMD ["a"]\nCMD ["b"]\nENTRYPOINT ["x"]\n') == [
        ("MultipleInstructionsDisallowed", "Multiple CMD instructions should not be used in "
                                           "the same stage because only the last one will "
                                           "be used", 2)]
    assert _lint("FROM base\nRUN echo a \\\n\n    b\n") == [
        ("NoEmptyContinuation", "Empty continuation line", 4)]
    # A SHELL makes shell-form CMD deliberate; JSON form never warns.
    assert _lint('FROM base\nSHELL ["/bin/sh", "-ec"]\nCMD echo\n') == []
    # ARG names: secrets by word, with BuildKit's allow list.
    assert [r for r, _, _ in _lint("FROM base\nARG GITHUB_TOKEN\nARG PUBLIC_KEY\n"
                                   "ARG KEYBOARD\nARG password\n")] == [
        "SecretsUsedInArgOrEnv", "SecretsUsedInArgOrEnv"]
    # UndefinedVar: base Env and declared ARGs count, an unset one is reported, with a
    # suggestion; a base not in the store leaves the stage unchecked.
    assert _lint("FROM base\nARG A\nENV X=$A$PATH\nCOPY $PAHT /d\n") == [
        ("UndefinedVar", "Usage of undefined variable '$PAHT' (did you mean $PATH?)", 4)]
    assert _lint("FROM other\nCOPY $PAHT /d\n") == []
    # A base in the store for another arch, in a stage the target needs.
    assert _lint("FROM base\n", env={"base": {}}, platforms={"base": "linux/arm64/v8"}) == [
        ("InvalidBaseImagePlatform", 'Base image base was pulled with platform '
                                     '"linux/arm64/v8", expected "linux/amd64" for current '
                                     "build", 1)]
    assert _lint("FROM base AS unused\nFROM scratch\n", env={"base": {}},
                 platforms={"base": "linux/arm64"}) == []
    assert _lint("FROM base\n", env={"base": {}}, platforms={"base": "linux/amd64"}) == []
    # A `# check=` comment just before an instruction skips rules for it alone.
    assert [w[2] for w in _lint("FROM base\n# check=skip=MaintainerDeprecated\nMAINTAINER a\n"
                                "MAINTAINER b\n")] == [4]
    assert [w[2] for w in _lint("FROM base\n# check=skip=MaintainerDeprecated\n#\n"
                                "MAINTAINER a\n")] == [4]  # an empty comment resets
    # skip=all, and a bad directive is an error as in BuildKit.
    assert _lint("# check=skip=all\nFROM base AS A\nMAINTAINER x\n") == []
    from rootless.errors import InvalidArgument
    with pytest.raises(InvalidArgument, match='invalid check option "nope"'):
        _lint("# check=nope=1\nFROM base\n")


# -- rl history of a built image (part 8) ------------------------------------------------


def test_history_one_row_per_instruction_as_docker_shows_it(rl: RlRunner, bb: str,
                                                             tmp_path: Path) -> None:
    ctx = context(tmp_path, f"""\
FROM {bb}
ARG V=1
ENV A=$V
WORKDIR /app
COPY f.txt ./
RUN echo hi > made
EXPOSE 80
CMD ["cat", "made"]
""", {"f.txt": "abc"})
    image_id = rl("build", "-q", ctx, check=True, timeout=180).stdout.strip()
    base_rows = len(rl("history", "-q", bb, check=True).stdout.splitlines())
    out = rl("history", "--no-trunc", image_id, check=True).stdout.splitlines()
    header = re.split(r"\s{2,}", out[0].strip())
    assert header == ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
    rows = [re.split(r"\s{2,}", line.strip()) for line in out[1:]]
    assert len(rows) == base_rows + 7  # one per instruction after FROM
    mine = rows[:7]
    assert [r[2] for r in mine] == [
        'CMD ["cat" "made"]',
        "EXPOSE [80/tcp]",
        "RUN |1 V=1 /bin/sh -c echo hi > made # buildkit",
        "COPY f.txt ./ # buildkit",
        "WORKDIR /app",
        "ENV A=1",
        "ARG V=1",
    ]
    assert all(r[-1] == "buildkit.dockerfile.v0" for r in mine)
    assert mine[0][0] == image_id and all(r[0] == "<missing>" for r in rows[1:])
    assert all(r[1].endswith(" ago") for r in mine)
    sizes = {r[2]: r[3] for r in mine}
    assert sizes["ENV A=1"] == "0B" and sizes['CMD ["cat" "made"]'] == "0B"
    assert sizes["COPY f.txt ./ # buildkit"] != "0B"
    # Truncated by default at docker's width, with its ellipsis.
    short = rl("history", image_id, check=True).stdout.splitlines()
    assert "RUN |1 V=1 /bin/sh -c echo hi > made # build…" in short[3]
    assert short[1].startswith(image_id[7:19] + " ") and short[3].startswith("<missing> ")


def test_a_cached_step_renders_as_buildx_shows_it() -> None:
    """The step cache ends a step with Tracker.cached(): plain shows `#N CACHED`, rawjson
    marks the vertex cached."""
    from rootless.build.progress import Tracker
    from rootless.cli.buildprogress import Plain, RawJSON

    plain, raw = io.StringIO(), io.StringIO()
    sinks = (Plain(plain), RawJSON(raw))
    tracker = Tracker(lambda ev: [s(ev) for s in sinks])
    tracker.start("[1/2] FROM base")
    tracker.start("[2/2] RUN make")
    tracker.cached()
    tracker.start("exporting to image")
    tracker.log("writing image sha256:x done")
    tracker.fail("boom")
    lines = plain.getvalue().splitlines()
    assert lines[0] == "#1 [1/2] FROM base" and re.fullmatch(r"#1 DONE \d+\.\ds", lines[1])
    assert lines[2:5] == ["", "#2 [2/2] RUN make", "#2 CACHED"]
    assert lines[6] == "#3 exporting to image"
    assert re.fullmatch(r"#3 \d+\.\d{3} writing image sha256:x done", lines[7])
    assert lines[8:] == ["#3 ERROR: boom", "------", " > exporting to image:",
                         "writing image sha256:x done", "------"]
    done = [v for line in raw.getvalue().splitlines()
            for v in json.loads(line).get("vertexes", []) if "completed" in v]
    assert [v.get("cached", False) for v in done] == [False, True, False]
    assert done[2]["error"] == "boom"


def test_relayed_steps_interleave_as_buildx_prints_them() -> None:
    """Two stage children's events, relayed into the build's numbering: each line names
    its own step, `#N ...` leaves an open step when another's line comes, the step's
    header heads its lines again when it goes on; the encoding keeps every field."""
    from rootless.build import progress
    from rootless.cli.buildprogress import Plain

    out = io.StringIO()
    parent = progress.Tracker(Plain(out))
    parent.start("[internal] load")
    parent.finish()
    children = {pid: progress.Tracker(
        lambda ev, pid=pid: parent.relay(pid, progress.decode(progress.encode(ev))))
        for pid in (101, 102)}
    for tracker in children.values():
        tracker.count = 1  # both forked at the same count: the same local numbers
    a, b = children[101], children[102]
    a.start("[a 2/2] RUN echo a")
    a.log("a-1")
    b.start("[b 2/2] RUN echo b")
    b.log("b-1 \udcff")  # an undecodable byte survives the pipe
    a.log("a-2")
    a.finish()
    b.fail("process did not complete successfully: exit code: 3")
    a.start("[a 3/3] RUN more")
    a.fail(progress.CANCELED)
    lines = [re.sub(r" \d+\.\d{3} ", " T ", re.sub(r"DONE \d+\.\ds", "DONE", line))
             for line in out.getvalue().splitlines()]
    assert lines == [
        "#1 [internal] load", "#1 DONE",
        "", "#2 [a 2/2] RUN echo a", "#2 T a-1", "#2 ...",
        "", "#3 [b 2/2] RUN echo b", "#3 T b-1 \udcff", "#3 ...",
        "", "#2 [a 2/2] RUN echo a", "#2 T a-2", "#2 DONE",
        "", "#3 [b 2/2] RUN echo b",
        "#3 ERROR: process did not complete successfully: exit code: 3",
        "------", " > [b 2/2] RUN echo b:", "b-1 \udcff", "------",
        "", "#4 [a 3/3] RUN more", "#4 CANCELED"]
    with pytest.raises(ValueError):
        progress.decode(b'{"event": "nothing"}')


PLAIN_STEP = re.compile(r"#(\d+) (.*)")
PLAIN_LOG = re.compile(r"\d+\.\d{3} (.*)")


def _plain_steps(stderr: str) -> tuple[dict[int, str], dict[int, list[str]]]:
    """buildx plain output read back: each step number's name (one name per number,
    asserted) and the lines each step printed (outputs, DONE, ERROR...)."""
    names: dict[int, str] = {}
    said: dict[int, list[str]] = {}
    for line in stderr.splitlines():
        m = PLAIN_STEP.fullmatch(line)
        if not m:
            continue
        n, rest = int(m.group(1)), m.group(2)
        if n not in names:
            names[n] = rest
            said[n] = []
        elif rest != names[n]:
            said[n].append(rest)
    return names, said


def test_parallel_stages_progress_one_numbering(rl: RlRunner, bb: str,
                                                tmp_path: Path) -> None:
    """Stages built at once in forked children: one numbering for the whole build,
    every output line prefixed with its own step's number, and a failing stage's
    error naming its step with its own output (the sibling's step is CANCELED)."""
    ctx = context(tmp_path, f"""\
FROM {bb} AS left
RUN for i in 1 2 3 4 5; do echo left-$i; usleep 50000; done

FROM {bb} AS right
RUN for i in 1 2 3 4 5; do echo right-$i; usleep 50000; done

FROM {bb}
COPY --from=left /etc/hostname /l
COPY --from=right /etc/hostname /r
""")
    r = rl("build", "--progress=plain", "--no-cache", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    names, said = _plain_steps(r.stderr)
    assert sorted(names) == list(range(1, len(names) + 1))  # each number once, no gap
    assert sorted(names.values()) == sorted(set(names.values()))  # each step once
    by_name = {name: n for n, name in names.items()}
    for side in ("left", "right"):
        run = by_name[f"[{side} 2/2] RUN for i in 1 2 3 4 5; do echo {side}-$i; "
                      "usleep 50000; done"]
        outputs = [m.group(1) for x in said[run] if (m := PLAIN_LOG.fullmatch(x))]
        assert outputs == [f"{side}-{i}" for i in range(1, 6)], r.stderr
        assert by_name[f"[{side} 1/2] FROM {bb}"] < run
    for n, lines in said.items():  # no step shows another's output
        other = "right" if "left" in names[n] else "left"
        assert not any(other in x for x in lines), (names[n], lines)
    assert max(names) == by_name["exporting to image"]
    assert by_name["[stage-2 2/3] COPY --from=left /etc/hostname /l"] > max(
        n for n, name in names.items() if name.startswith(("[left", "[right")))

    ctx = context(tmp_path, f"""\
FROM {bb} AS slow
RUN echo slow-out; sleep 60

FROM {bb} AS bad
RUN echo bad-out-1; echo bad-out-2; exit 3

FROM {bb}
COPY --from=slow /etc/hostname /s
COPY --from=bad /etc/hostname /b
""", name="failing")
    r = rl("build", "--progress=plain", "--no-cache", ctx, timeout=120)
    assert r.returncode == 1, r.stderr
    error = ('process "/bin/sh -c echo bad-out-1; echo bad-out-2; exit 3" did not complete '
             "successfully: exit code: 3")
    assert r.stderr.splitlines()[-1] == f"Error: {error}"
    names, said = _plain_steps(r.stderr)
    bad = next(n for n, name in names.items() if name.startswith("[bad 2/2] RUN "))
    assert f"ERROR: {error}" in said[bad]
    lines = r.stderr.splitlines()
    at = lines.index(f"#{bad} ERROR: {error}")
    assert lines[at + 1:at + 6] == ["------", f" > {names[bad]}:", "bad-out-1",
                                    "bad-out-2", "------"]
    slow = [n for n, name in names.items() if name.startswith("[slow ")]
    assert any("CANCELED" in said[n] for n in slow), r.stderr
    assert not any(x.startswith("ERROR") for n in slow for x in said[n])
