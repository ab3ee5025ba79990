"""COPY and ADD beyond plain files, through the real CLI over an imported busybox:
heredocs, --chown by name, symbolic --chmod, --exclude, --from=IMAGE, ADD of a
local tar (and hostile ones), ONBUILD triggers."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from buildtools import context, saved_config

from support import RlRunner

pytest_plugins = ["buildtools"]
pytestmark = pytest.mark.usefixtures("build_host")


def run_sh(rl: RlRunner, image: str, script: str) -> list[str]:
    r = rl("run", "--rm", "--entrypoint", "sh", "-u", "0", image, "-c", script, check=True)
    return r.stdout.splitlines()


def last_error(r: subprocess.CompletedProcess[str]) -> str:
    return r.stderr.strip().splitlines()[-1]


HEREDOCS = """\
FROM {bb}
RUN echo 'app:x:1234:2345::/home/app:/bin/sh' >> /etc/passwd && \\
    echo 'staff2:x:3456:' >> /etc/group && mv /etc/group /etc/group.real && \\
    ln -s group.real /etc/group
ARG WHO=world
COPY <<EOF /greet.txt
hello $WHO
EOF
COPY <<-"EOT" <<TWO /docs/
\tliteral $WHO
\tEOT
two $WHO
TWO
COPY --chown=app tree/ /owned/
COPY --chown=app:staff2 --chmod=u=rwx,go=rx run.sh /bin/run.sh
COPY --chmod=go-r,u+x secret.txt /secret.txt
COPY --exclude=*.log --exclude=sub/skip tree/ /filtered/
COPY --chown=app secret.txt /made/deep/
"""


def test_heredoc_chown_by_name_chmod_symbolic_exclude(rl: RlRunner, bb: str,
                                                      tmp_path: Path) -> None:
    ctx = context(tmp_path, HEREDOCS.format(bb=bb),
                  {"tree/a.txt": "A\n", "tree/b.log": "L\n", "tree/sub/skip/x": "x\n",
                   "tree/sub/keep": "k\n", "run.sh": "#!/bin/sh\n", "secret.txt": "s\n"},
                  {"secret.txt": 0o644, "run.sh": 0o600})
    r = rl("build", "-t", f"{bb}-cp1", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    out = run_sh(rl, f"{bb}-cp1", "cat /greet.txt /docs/EOT /docs/TWO; "
                 "stat -c '%n %a %u:%g' /greet.txt /docs/EOT /owned/a.txt /bin/run.sh "
                 "/secret.txt; stat -c '%n %a %u:%g' /made /made/deep /bin; "
                 "cd /filtered && find . | sort")
    assert out == [
        "hello world", "literal $WHO", "two world",
        "/greet.txt 644 0:0", "/docs/EOT 644 0:0", "/owned/a.txt 644 1234:2345",
        "/bin/run.sh 755 1234:3456", "/secret.txt 700 0:0",
        # the parents a step makes are --chown's; the ones there stay as they are
        "/made 755 1234:2345", "/made/deep 755 1234:2345", "/bin 755 0:0",
        ".", "./a.txt", "./sub", "./sub/keep",
    ]
    history = saved_config(rl, f"{bb}-cp1", tmp_path)["history"]
    assert isinstance(history, list)
    made = [e["created_by"] for e in history if not e.get("empty_layer")]
    assert made[-7:-2] == [
        "COPY <<EOF /greet.txt # buildkit", "COPY <<EOT <<TWO /docs/ # buildkit",
        "COPY --chown=app tree/ /owned/ # buildkit",
        "COPY --chown=app:staff2 --chmod=u=rwx,go=rx run.sh /bin/run.sh # buildkit",
        "COPY --chmod=go-r,u+x secret.txt /secret.txt # buildkit"]


def test_chown_unknown_name_and_bad_chmod_are_refused(rl: RlRunner, bb: str,
                                                      tmp_path: Path) -> None:
    ctx = context(tmp_path, f"FROM {bb}\nCOPY --chown=nobody-here f /f\n", {"f": "x"})
    r = rl("build", ctx, timeout=60)
    assert r.returncode == 125, r.stderr
    assert last_error(r) == (
        "Error: Dockerfile:2: unable to convert uid/gid chown string to host mapping: "
        "can't find uid for user nobody-here: no such user: nobody-here")
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nCOPY --chmod=u+q f /f\n")
    r = rl("build", ctx, timeout=60)
    assert r.returncode == 125
    assert last_error(r) == "Error: Dockerfile:2: invalid chmod parameter: u+q"
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nCOPY --chmod=8755 f /f\n")
    r = rl("build", ctx, timeout=60)
    assert r.returncode == 125
    assert last_error(r) == ("Error: Dockerfile:2: invalid chmod parameter: '8755'. it should "
                             "be octal string and between 0 and 07777")


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "",
            mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz", "zst"])
def test_add_local_tar_extracts_merged(rl: RlRunner, bb: str, tmp_path: Path,
                                       compression: str) -> None:
    data = _tar([
        (_member("top", tarfile.DIRTYPE, mode=0o750), None),
        (_member("top/f.txt", mode=0o640), b"inside\n"),
        (_member("top/hard", tarfile.LNKTYPE, "top/f.txt"), None),
        (_member("top/abs", tarfile.SYMTYPE, "/etc/passwd"), None),
        (_member("/rooted.txt"), b"rooted\n"),
        (_member("top/dev", tarfile.CHRTYPE), None),
    ], "w:" + compression if compression in ("gz", "bz2", "xz") else "w")
    if compression == "zst":
        data = zstandard.ZstdCompressor().compress(data)
    ctx = context(tmp_path, f"FROM {bb}\nRUN mkdir /opt && echo old > /opt/old\n"
                            "ADD a.tar /opt/\nADD --unpack=false a.tar empty.tar /kept/\n"
                            "ADD empty.tar /e/\n",
                  {"a.tar": data, "empty.tar": _tar([])})
    r = rl("build", "-t", f"{bb}-tar{compression}", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    out = run_sh(rl, f"{bb}-tar{compression}",
                 "cd /opt; cat old top/f.txt rooted.txt; stat -c '%n %a %h' top top/f.txt; "
                 "readlink top/abs; ls top | sort | tr '\\n' ' '; echo; ls /kept /e")
    assert out == ["old", "inside", "rooted", "top 750 2", "top/f.txt 640 2", "/etc/passwd",
                   "abs f.txt hard ",
                   # --unpack=false copies it; an empty tar is no archive (moby's isArchive)
                   "/e:", "empty.tar", "", "/kept:", "a.tar", "empty.tar"]


def test_add_chmod_leaves_an_unpacked_tars_members_alone(rl: RlRunner, bb: str,
                                                         tmp_path: Path) -> None:
    """As BuildKit: ADD's unpacking (file backend `docopy` -> `unpack`) is given the
    owner and the time, never `--chmod`'s mode: each member keeps the archive's mode,
    the destination it makes is 0755; a plain file of the same ADD gets the mode."""
    data = _tar([
        (_member("d", tarfile.DIRTYPE, mode=0o750), None),
        (_member("d/run", mode=0o755), b"#!/bin/sh\n"),
        (_member("conf", mode=0o640), b"c\n"),
        (_member("ln", tarfile.SYMTYPE, "conf", mode=0o777), None),
    ], "w:gz")
    ctx = context(tmp_path, f"FROM {bb}\n"
                            "ADD --chmod=0600 a.tgz plain.txt /dst/\n"
                            "ADD --chmod=u=rw,go= --chown=1234:2345 a.tgz /owned/\n",
                  {"a.tgz": data, "plain.txt": "p\n"}, {"plain.txt": 0o644})
    r = rl("build", "-t", f"{bb}-addchmod", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    out = run_sh(rl, f"{bb}-addchmod",
                 "cd /dst && stat -c '%n %a %u:%g' . d d/run conf plain.txt; readlink ln; "
                 "cd /owned && stat -c '%n %a %u:%g' . d d/run conf")
    assert out == [". 755 0:0", "d 750 0:0", "d/run 755 0:0", "conf 640 0:0",
                   "plain.txt 600 0:0", "conf",
                   ". 755 1234:2345", "d 750 1234:2345", "d/run 755 1234:2345",
                   "conf 640 1234:2345"]


@pytest.mark.parametrize(("members", "why"), [
    ([(_member("../escape.txt"), b"x")], 'member "../escape.txt": is outside of "/opt"'),
    ([(_member("a/../../escape.txt"), b"x")], "is outside of"),
    ([(_member("ln", tarfile.SYMTYPE, "../../../etc"), None)], "invalid symlink"),
    ([(_member("ln", tarfile.SYMTYPE, "/etc"), None), (_member("ln/passwd"), b"x")],
     "a parent directory is a symlink of the archive"),
    ([(_member("h", tarfile.LNKTYPE, "../../etc/shadow"), None)], "invalid hardlink"),
    ([(_member("h", tarfile.LNKTYPE, "etc/passwd"), None)], "invalid hardlink"),
    ([(_member(".wh.old"), b"")], "cannot be stored in an image layer"),
])
def test_add_hostile_tar_is_refused(rl: RlRunner, bb: str, tmp_path: Path,
                                    members: list[tuple[tarfile.TarInfo, bytes | None]],
                                    why: str) -> None:
    ctx = context(tmp_path, f"FROM {bb}\nRUN mkdir /opt && echo old > /opt/old\n"
                            "ADD a.tar /opt/\n", {"a.tar": _tar(members)})
    r = rl("build", "-t", f"{bb}-hostile", ctx, timeout=120)
    assert r.returncode == 125, r.stderr
    assert last_error(r).startswith("Error: Dockerfile:3: ADD a.tar: "), r.stderr
    assert why in r.stderr
    assert rl("image", "inspect", f"{bb}-hostile").returncode != 0


def test_context_symlink_out_of_the_context_is_refused(rl: RlRunner, bb: str,
                                                       tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("secret\n")
    ctx = context(tmp_path, f"FROM {bb}\nCOPY link/outside.txt /x\n")
    (ctx / "link").symlink_to("..")
    r = rl("build", ctx, timeout=60)
    assert r.returncode == 125
    assert "forbidden path outside the build context: link/outside.txt" in last_error(r)


def test_copy_from_image_and_stage_index(rl: RlRunner, bb: str,
                                         tmp_path: Path) -> None:
    ctx = context(tmp_path, f"""\
FROM {bb}
RUN echo first > /made
FROM scratch
COPY --from={bb} /bin/busybox /bin/busybox
COPY --from=0 /made /made
""")
    r = rl("build", "-t", f"{bb}-from", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    out = rl("run", "--rm", f"{bb}-from", "/bin/busybox", "cat", "/made", check=True)
    assert out.stdout == "first\n"
    (ctx / "Dockerfile").write_text(f"FROM {bb} AS first\nCOPY --from=later /x /x\n"
                                    f"FROM {bb} AS later\n")
    r = rl("build", "--target", "first", ctx, timeout=60)
    assert r.returncode == 125
    assert last_error(r) == ('Error: Dockerfile:2: cannot copy from stage "later", it needs '
                             'to be defined before current stage "first"')
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY --from=no-such-image-here:1 /x /x\n")
    r = rl("build", "--pull=never", ctx, timeout=60)
    assert r.returncode == 125
    assert last_error(r).startswith("Error: Dockerfile:2: COPY --from=no-such-image-here:1: ")


def test_onbuild_triggers_run_in_the_child(rl: RlRunner, bb: str,
                                           tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    parent = context(tmp_path / "p", f"FROM {bb}\nONBUILD COPY data.txt /from-child.txt\n"
                                     "ONBUILD RUN echo triggered > /trig\n")
    r = rl("build", "-t", f"{bb}-onb", parent, timeout=120)
    assert r.returncode == 0, r.stderr
    (tmp_path / "c").mkdir()
    child = context(tmp_path / "c", f"FROM {bb}-onb\nRUN cat /trig /from-child.txt > /both\n",
                    {"data.txt": "child data\n"})
    r = rl("build", "-t", f"{bb}-onb-child", child, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "ONBUILD RUN echo triggered > /trig" in r.stderr
    assert run_sh(rl, f"{bb}-onb-child", "cat /both") == ["triggered", "child data"]
    saved = saved_config(rl, f"{bb}-onb-child", tmp_path)
    cfg = saved["config"]
    assert isinstance(cfg, dict) and not cfg.get("OnBuild")
    entries = saved["history"]
    assert isinstance(entries, list)
    assert "RUN /bin/sh -c echo triggered > /trig # buildkit" in [e["created_by"]
                                                                 for e in entries]
    # A stage FROM an earlier stage runs that stage's triggers too (BuildKit).
    (tmp_path / "s").mkdir()
    staged = context(tmp_path / "s", f"FROM {bb} AS base\nONBUILD RUN echo s > /s\n"
                                     "FROM base\nRUN cat /s\n")
    r = rl("build", "-t", f"{bb}-onb-stage", staged, timeout=120)
    assert r.returncode == 0, r.stderr
    assert run_sh(rl, f"{bb}-onb-stage", "cat /s") == ["s"]
    # A grandchild runs none: the child's config has no triggers left.
    (tmp_path / "g").mkdir()
    grand = context(tmp_path / "g", f"FROM {bb}-onb-child\nRUN true\n")
    r = rl("build", grand, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ONBUILD" not in r.stderr


class _Handler(http.server.BaseHTTPRequestHandler):
    BODY = b"fetched body\n"

    def do_GET(self) -> None:
        if self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
            return
        if self.path == "/short":  # promises more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"only this")
            self.close_connection = True
            return
        if self.path == "/tofile":  # a redirect to the builder's own files
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
            return
        if self.path == "/redir":
            self.send_response(301)
            self.send_header("Location", "/dl/file.txt")
            self.end_headers()
            return
        if self.path in ("/dl/file.txt", "/dl/a.tar", "/dl/", "/dl/%2E%2E"):
            body = self.BODY if self.path.endswith(".txt") else _tar(
                [(_member("inside"), b"i\n")])
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
            # BuildKit names the file after the URL, never after this header.
            self.send_header("Content-Disposition", 'attachment; filename="../../evil"')
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_add_url_name_mode_mtime_checksum_and_no_unpack(rl: RlRunner, bb: str,
                                                        tmp_path: Path, web: str) -> None:
    good = "sha512:" + hashlib.sha512(_Handler.BODY).hexdigest()
    ctx = context(tmp_path, f"""\
FROM {bb}
ADD {web}/dl/file.txt /d/
ADD --checksum={good} {web}/redir /named.txt
ADD {web}/dl/a.tar /t/
ADD --unpack {web}/dl/a.tar /u/
ADD {web}/redir {web}/dl/ {web}/dl/%2E%2E /n/
""")
    r = rl("build", "-t", f"{bb}-url", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    out = run_sh(rl, f"{bb}-url", "cat /d/file.txt /named.txt; "
                 "stat -c '%n %a %u:%g %Y' /d/file.txt /named.txt; ls /t; ls /n; ls /../; "
                 "cat /u/inside")
    assert out[:5] == ["fetched body", "fetched body", "/d/file.txt 600 0:0 1445412480",
                       "/named.txt 600 0:0 1445412480", "a.tar"]
    # Named by the URL's own path (not the redirect's), `__unnamed__` when it has none.
    assert out[5:8] == ["__unnamed__", "dl", "redir"]
    assert "evil" not in out
    assert out[-1] == "i"  # --unpack unpacks an archive fetched from a URL (BuildKit)


@pytest.mark.parametrize(("source", "why"), [
    ("--checksum=sha256:" + "0" * 64 + " {web}/dl/file.txt /f", "digest mismatch sha256:"),
    ("{web}/missing /f", "failed to load cache key: invalid response status 404"),
    ("{web}/tofile /f", 'failed to load cache key: Get "{web}/tofile": '),
    ("--keep-git-dir https://example.invalid/repo.git /src",
     "ADD --keep-git-dir is not supported yet"),
    ("{web}/short /f", 'failed to load cache key: Get "{web}/short": '),
    ("{web}/loop /f", 'failed to load cache key: Get "{web}/loop": stopped after 10 redirects'),
    ("--checksum=md5:abc {web}/dl/file.txt /f", "unsupported digest algorithm"),
    ("--checksum=sha256:abc {web}/dl/file.txt /f", "invalid checksum digest length"),
    ("--checksum=sha256 {web}/dl/file.txt /f", "invalid checksum digest format"),
    ("--checksum=sha256:" + "0" * 64 + " local.txt /f",
     "checksum requires HTTP(S) or Git sources"),
    ("--checksum=sha256:" + "0" * 64 + " {web}/dl/file.txt local.txt /f/",
     "checksum can't be specified for multiple sources"),
    ("https://example.invalid/repo.git /src", "ADD of a git repository"),
])
def test_add_url_hostile_answers_are_refused(rl: RlRunner, bb: str,
                                             tmp_path: Path, web: str, source: str,
                                             why: str) -> None:
    ctx = context(tmp_path, f"FROM {bb}\nADD {source.format(web=web)}\n",
                  {"local.txt": "l\n"})
    r = rl("build", "-t", f"{bb}-badurl", ctx, timeout=120)
    assert r.returncode == 125, r.stderr
    assert last_error(r).startswith("Error: Dockerfile:2: "), r.stderr
    assert why.format(web=web) in r.stderr
    assert rl("image", "inspect", f"{bb}-badurl").returncode != 0


def test_copy_parents_with_and_without_a_pivot(rl: RlRunner, bb: str,
                                               tmp_path: Path) -> None:
    ctx = context(tmp_path, f"""\
FROM {bb}
COPY --parents x/*/a.txt y/ /p/
COPY --parents ./base/./deep/er/f.txt /q/
COPY --parents --exclude=**/*.log base/./deep /r/
""", {"x/1/a.txt": "1\n", "x/2/a.txt": "2\n", "x/2/b.txt": "no\n", "y/z/c": "c\n",
      "base/deep/er/f.txt": "f\n", "base/deep/er/g.log": "g\n"})
    r = rl("build", "-t", f"{bb}-parents", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    out = run_sh(rl, f"{bb}-parents", "cd /p && find . | sort; cd /q && find . | sort; "
                 "cd /r && find . | sort")
    assert out == [".", "./x", "./x/1", "./x/1/a.txt", "./x/2", "./x/2/a.txt",
                   "./y", "./y/z", "./y/z/c",
                   ".", "./deep", "./deep/er", "./deep/er/f.txt",
                   ".", "./deep", "./deep/er", "./deep/er/f.txt"]


LINK = """\
FROM {bb}
RUN mkdir -p /srv/a /srv/b /keep && ln -s /srv/a /la && ln -s /srv/b /lb && \\
    echo old > /keep/old && chmod 700 /keep
COPY f.txt /la/f.txt
COPY --link f.txt /lb/f.txt
COPY --link f.txt /keep/
COPY --link f.txt /newdir/sub/
COPY --link tree /keep
"""


def test_copy_link_ignores_the_parent_as_docker(rl: RlRunner, bb: str,
                                                tmp_path: Path) -> None:
    ctx = context(tmp_path, LINK.format(bb=bb), {"f.txt": "f\n", "tree/t": "t\n"})
    r = rl("build", "-t", f"{bb}-link", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    out = run_sh(rl, f"{bb}-link", "readlink /la; ls /srv/a; ls -ld /lb | cut -c1; ls /lb; "
                 "ls /srv/b | wc -l; stat -c '%n %a' /keep /newdir /newdir/sub; ls /keep")
    assert out == [
        "/srv/a", "f.txt",        # without --link a symlink on the way is followed
        "d", "f.txt", "0",        # with it the path is made of directories only
        "/keep 755", "/newdir 755", "/newdir/sub 755",
        "f.txt", "old", "t",      # merged over what the parent had
    ]


FROM_STAGE = """\
FROM {bb} AS src
RUN mkdir -p /usr/lib/x /opt/app/sub && ln -s usr/lib /lib2 && \\
    echo a > /usr/lib/x/a.so && echo b > /usr/lib/x/b.log && \\
    ln /usr/lib/x/a.so /usr/lib/x/c.so && echo k > /opt/app/sub/keep && \\
    echo s > /opt/app/sub/skip.log && ln -s /usr/lib/x /abs
FROM scratch
COPY --from=src /bin/busybox /bin/
COPY --from=src /lib2/x/*.so /glob/
COPY --from=src --exclude=*.log /abs /excl
COPY --from=src --parents /opt/./app/sub/keep /usr/lib/x/a.so /par/
COPY --from=src /usr/lib/x/c.so /usr/lib/x/a.so /hl/
"""


def test_copy_from_globs_symlinks_exclude_parents(rl: RlRunner, bb: str,
                                                  tmp_path: Path) -> None:
    ctx = context(tmp_path, FROM_STAGE.format(bb=bb))
    r = rl("build", "-t", f"{bb}-fromx", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    out = rl("run", "--rm", f"{bb}-fromx", "/bin/busybox", "sh", "-c",
             "cd /glob && /bin/busybox find . | /bin/busybox sort; "
             "cd /excl && /bin/busybox find . | /bin/busybox sort; "
             "cd /par && /bin/busybox find . | /bin/busybox sort; "
             "/bin/busybox stat -c %h /hl/a.so /hl/c.so", check=True).stdout.splitlines()
    assert out == [".", "./a.so", "./c.so",
                   ".", "./a.so", "./c.so",
                   ".", "./app", "./app/sub", "./app/sub/keep", "./usr", "./usr/lib",
                   "./usr/lib/x", "./usr/lib/x/a.so",
                   "2", "2"]


FROM_LAYERS = """\
FROM {bb} AS src
RUN mkdir -p /d/gone /op && echo g > /d/gone/f && echo x > /d/del && echo o > /op/old && \\
    echo h > /d/h1 && ln /d/h1 /d/h2 && ln -s /etc/passwd /d/abs && ln -s {escape} /d/esc && \\
    echo s > /d/secret && chown 1234:2345 /d/secret && chmod 600 /d/secret
RUN rm -rf /d/gone /d/del /op && mkdir /op /d/gone && echo n > /op/new && \\
    echo back > /d/gone/again && echo t > /d/later
RUN rm /d/later
FROM scratch
COPY --from=src /bin/busybox /bin/
COPY --from=src /d /d
COPY --from=src /op /op
COPY --from=src /d/h2 /d/h1 /hl/
"""


def test_copy_from_reads_the_stage_as_its_layers_compose(rl: RlRunner, bb: str,
                                                         tmp_path: Path) -> None:
    """COPY --from reads the stage's layer directories: a file deleted in a later layer
    (a whiteout) and a directory replaced (opaque) are not copied; owners and a
    sub-id's 0600 file come as stored; hard links stay links; a symlink pointing
    out of the stage is copied as a link, and as a source it resolves inside the
    stage root, never on the host."""
    host = tmp_path / "host-secret.txt"
    host.write_text("host\n")
    escape = "../" * 30 + str(host).lstrip("/")
    ctx = context(tmp_path, FROM_LAYERS.format(bb=bb, escape=escape))
    r = rl("build", "-t", f"{bb}-fromlayers", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    out = rl("run", "--rm", "-u", "0", f"{bb}-fromlayers", "/bin/busybox", "sh", "-c",
             "/bin/busybox find /d /op /hl | /bin/busybox sort; "
             "/bin/busybox stat -c '%n %a %u:%g %h' /d/secret /d/h1 /d/h2 /hl/h1 /hl/h2; "
             "/bin/busybox readlink /d/abs; /bin/busybox readlink /d/esc; "
             "/bin/busybox cat /d/secret /op/new /d/gone/again", check=True).stdout.splitlines()
    assert out == [
        "/d", "/d/abs", "/d/esc", "/d/gone", "/d/gone/again", "/d/h1", "/d/h2", "/d/secret",
        "/hl", "/hl/h1", "/hl/h2", "/op", "/op/new",
        "/d/secret 600 1234:2345 1", "/d/h1 644 0:0 2", "/d/h2 644 0:0 2",
        "/hl/h1 644 0:0 2", "/hl/h2 644 0:0 2",
        "/etc/passwd", escape, "s", "n", "back"]
    for source in ("/d/esc", "/d/esc/../host-secret.txt"):
        (ctx / "Dockerfile").write_text(FROM_LAYERS.format(bb=bb, escape=escape).split(
            "FROM scratch")[0] + f"FROM scratch\nCOPY --from=src {source} /x\n")
        r = rl("build", ctx, timeout=180)
        assert r.returncode == 125, r.stderr
        assert last_error(r).endswith(": not found"), r.stderr


def test_copy_of_a_url_is_refused(rl: RlRunner, bb: str, tmp_path: Path,
                                  web: str) -> None:
    ctx = context(tmp_path, f"FROM {bb}\nCOPY {web}/dl/file.txt /f\n")
    r = rl("build", ctx, timeout=60)
    assert r.returncode == 125
    assert last_error(r) == "Error: Dockerfile:2: source can't be a URL for COPY"


def _with_triggers(rl: RlRunner, ref: str, new: str, triggers: list[str],
                   tmp_path: Path) -> None:
    """*ref* saved, its config's OnBuild replaced (as a hostile image could have it),
    loaded back as *new*."""
    saved, edited = tmp_path / "saved.tar", tmp_path / "edited.tar"
    rl("save", "-o", saved, ref, check=True)
    with tarfile.open(saved) as src, tarfile.open(edited, "w") as dst:
        manifest = json.loads(src.extractfile("manifest.json").read())  # type: ignore[union-attr]
        old = manifest[0]["Config"]
        config = json.loads(src.extractfile(old).read())  # type: ignore[union-attr]
        config["config"]["OnBuild"] = triggers
        blob = json.dumps(config).encode()
        name = f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}" if old.startswith(
            "blobs/") else f"{hashlib.sha256(blob).hexdigest()}.json"
        manifest[0]["Config"], manifest[0]["RepoTags"] = name, [f"{new}:latest"]
        for m in src.getmembers():
            if m.name in ("manifest.json", old, "index.json", "repositories"):
                continue
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        for member_name, data in ((name, blob), ("manifest.json",
                                                 json.dumps(manifest).encode())):
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    rl("load", "-i", edited, check=True)
    saved.unlink()
    edited.unlink()


@pytest.mark.parametrize(("triggers", "why"), [
    (["ONBUILD RUN true"], "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    (["FROM scratch"], "FROM isn't allowed as an ONBUILD trigger"),
    (["MAINTAINER me"], "MAINTAINER isn't allowed as an ONBUILD trigger"),
    (["RUN true\nRUN touch /smuggled"], "onbuild trigger should be a single expression"),
    (["RUN true\nFROM scratch"], "onbuild trigger should be a single expression"),
])
def test_hostile_onbuild_triggers_of_a_base_are_refused(
        rl: RlRunner, bb: str, tmp_path: Path, triggers: list[str],
        why: str) -> None:
    _with_triggers(rl, bb, f"{bb}-trig", triggers, tmp_path)
    ctx = context(tmp_path, f"FROM {bb}-trig\nRUN true\n")
    r = rl("build", "-t", f"{bb}-trigchild", ctx, timeout=120)
    assert r.returncode == 125, r.stderr
    assert last_error(r).startswith("Error: Dockerfile:1: "), r.stderr
    assert why in last_error(r)
    assert rl("image", "inspect", f"{bb}-trigchild").returncode != 0
