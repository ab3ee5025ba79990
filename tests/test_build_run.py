"""rl build's RUN: heredocs, --mount (bind, cache, tmpfs, secret), --network, --security.

Real builds through the CLI over an imported busybox image, as test_build.py
makes them; what a RUN saw is written into the image and read back with rl run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest
from buildtools import context, leftovers

import support
from support import RlRunner, RlState

pytest_plugins = ["buildtools"]
pytestmark = pytest.mark.usefixtures("build_host")


_counter = iter(range(10_000))


def build(rl: RlRunner, ctx: Path, *flags: str) -> str:
    """The built image's ID; tagged, so that only intermediates would be nameless."""
    tag = f"built-run-{os.getpid()}-{next(_counter)}"
    r = rl("build", "-q", "-t", tag, *flags, ctx, timeout=240)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def cat(rl: RlRunner, image: str, *paths: str) -> str:
    return rl("run", "--rm", "--network=none", image, "cat", *paths, check=True).stdout


def sh(rl: RlRunner, image: str, script: str) -> str:
    return rl("run", "--rm", "--network=none", image, "sh", "-c", script, check=True).stdout


# -- heredocs ------------------------------------------------------------------------


def test_run_heredocs_as_buildkit_runs_them(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"""\
FROM {bb}
ENV V=val
RUN <<EOF
echo one > /one
echo "two $V" >> /one
EOF
RUN <<-EOF
\t\techo tabs-stripped > /tabs
\tEOF
RUN <<-'EOT' sh
\techo "stdin script $V" > /stdin
\tEOT
RUN cat <<A > /a && cat <<"B" > /b
a $V
A
b $V
B
RUN <<EOF
#!/bin/sh
echo "shebang $0" > /shebang
EOF
RUN 3<<EOF cat /proc/self/fd/3 > /fd3
fd three
EOF
RUN <<'EOF'
echo "lone $V" > /lone
EOF
""")
    image = build(rl, ctx)
    assert cat(rl, image, "/one") == "one\ntwo val\n"
    assert cat(rl, image, "/tabs") == "tabs-stripped\n"
    assert cat(rl, image, "/stdin") == "stdin script val\n"
    # The shell reads the heredocs: an unquoted delimiter expands, a quoted one does not.
    assert cat(rl, image, "/a") == "a val\n"
    assert cat(rl, image, "/b") == "b $V\n"
    # A `#!` heredoc is a file BuildKit runs from /dev/pipes; it stays out of the image.
    assert cat(rl, image, "/shebang") == "shebang /dev/pipes/EOF\n"
    assert cat(rl, image, "/fd3") == "fd three\n"
    # A lone heredoc is the script itself: the shell expands it as it runs, quoted or not.
    assert cat(rl, image, "/lone") == "lone val\n"


def test_heredoc_failure_names_its_status(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"FROM {bb}\nRUN <<EOF\ntrue\nexit 3\nEOF\n")
    r = rl("build", "-q", ctx, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        'Error: process "/bin/sh -c true\\nexit 3\\n" did not complete successfully: '
        "exit code: 3")


# -- bind, tmpfs, cache -----------------------------------------------------------------


def test_bind_tmpfs_and_stage_mounts(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    before = leftovers(rl)
    ctx = context(tmp_path, f"""\
FROM {bb} AS tools
RUN echo tool > /tool.txt && mkdir /tooldir && echo in-dir > /tooldir/f

FROM {bb}
WORKDIR /w
RUN --mount=type=bind,target=/ctx cat /ctx/data.txt > /copied && \\
    (test -e /ctx/ignored.txt && echo seen || echo absent) > /ignored && \\
    (touch /ctx/new 2>/dev/null && echo writable || echo read-only) > /ro
RUN --mount=type=bind,source=sub,target=rel,rw echo x > rel/written && cat rel/f > /sub-f && \\
    cat /w/rel/written > /rw-seen
ARG SRC=data.txt
RUN --mount=type=bind,source=$SRC,target=/one-file cat /one-file > /file-bound
RUN --mount=type=bind,from=tools,source=/tool.txt,target=/t.txt \\
    --mount=type=bind,from=tools,source=tooldir,target=/td cat /t.txt /td/f > /from-stage
RUN --mount=type=bind,from={bb},source=/bin,target=/img-bin ls /img-bin/busybox > /from-image
RUN --mount=type=tmpfs,target=/scratch,size=1m grep ' /scratch ' /proc/mounts > /tmpfs && \\
    echo hi > /scratch/x
""", {"data.txt": "context data\n", "sub/f": "sub file\n", "ignored.txt": "no\n",
      ".dockerignore": "ignored.txt\n"})
    image = build(rl, ctx)
    assert cat(rl, image, "/copied") == "context data\n"
    assert cat(rl, image, "/ignored") == "absent\n"  # .dockerignore'd files are not bound
    assert cat(rl, image, "/ro") == "read-only\n"  # a context bind is read-only by default
    assert cat(rl, image, "/sub-f", "/rw-seen") == "sub file\nx\n"
    assert not (ctx / "sub" / "written").exists()  # rw writes are thrown away
    assert cat(rl, image, "/file-bound") == "context data\n"
    assert cat(rl, image, "/from-stage") == "tool\nin-dir\n"
    assert cat(rl, image, "/from-image") == "/img-bin/busybox\n"  # an image, not a stage
    line = cat(rl, image, "/tmpfs").split()
    assert line[2] == "tmpfs" and "size=1024k" in line[3]
    # Mount targets and what was written in a mount stay out of the layers.
    assert sh(rl, image, "for p in /ctx /w/rel /one-file /t.txt /td /img-bin /scratch; do "
                         "test -e $p && echo $p; done; true") == ""
    assert leftovers(rl) == before


def test_cache_mount_persists_between_builds(rl: RlRunner, rl_state: RlState, bb: str,
                                             tmp_path: Path) -> None:
    cid = f"cache-{os.getpid()}-{next(_counter)}"
    home = rl_state.data_home / "rl" / "storage" / "build-mounts" / \
        hashlib.sha256(cid.encode()).hexdigest()
    for n in (1, 2):
        # Each build's RUN differs, so no step cache can skip it.
        ctx = context(tmp_path, f"""\
FROM {bb}
RUN --mount=type=cache,id={cid},target=/var/cache/x,sharing=locked \\
    echo run{n} >> /var/cache/x/log && cat /var/cache/x/log > /seen
RUN --mount=type=cache,target=/c2,uid=1000,gid=1001,mode=0700 stat -c '%u %g %a' /c2 > /owner
RUN --mount=type=cache,id={cid},target=/a,sharing=locked \\
    --mount=type=cache,id={cid},target=/b,sharing=locked,ro cat /a/log /b/log > /twice
""")
        image = build(rl, ctx)
        assert cat(rl, image, "/seen") == "".join(f"run{i}\n" for i in range(1, n + 1))
        assert cat(rl, image, "/owner") == "1000 1001 700\n"
        assert cat(rl, image, "/twice") == 2 * cat(rl, image, "/seen")
        assert sh(rl, image, "test -e /var/cache/x/log && echo leaked; true") == ""
    assert (home / "data" / "log").read_text() == "run1\nrun2\n"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_step_frees_the_cache_lock_copies_and_secret(
        rl: RlRunner, rl_path: Path, rl_state: RlState, bb: str, tmp_path: Path,
        signum: int) -> None:
    before = set(rl("ps", "-a", "-q", check=True).stdout.split())  # other tests' are theirs
    cid = f"killed-{os.getpid()}-{next(_counter)}"
    (tmp_path / "s").write_text("secret\n")
    step = (f"RUN --mount=type=cache,id={cid},target=/c,sharing=locked "
            "--mount=type=bind,target=/ctx --mount=type=secret,id=s")
    ctx = context(tmp_path, f"FROM {bb}\n{step} echo started; sleep 600\n", {"f": "x\n"})
    proc = subprocess.Popen([str(rl_path), "build", "--secret", f"id=s,src={tmp_path / 's'}",
                             str(ctx)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **rl_state.env()}, start_new_session=True,
                            preexec_fn=support.as_foreground_job)
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        while not seen or not seen[-1].endswith(" started\n"):  # buildx: "#N 0.1 started"
            line = proc.stderr.readline()
            assert line, seen
            seen.append(line)
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == (130 if signum == signal.SIGINT else -9)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    tmp = rl_state.data_home / "rl" / "storage" / "build-tmp"
    secrets = rl_state.runtime_dir / "rl" / "build-secrets"

    def mine(base: Path) -> list[Path]:
        return [p for p in base.iterdir() if p.name.startswith(f"{proc.pid}-")]

    if signum == signal.SIGINT:  # Ctrl-C: the build undoes the step itself
        assert mine(tmp) == [] and mine(secrets) == []
        assert set(rl("ps", "-a", "-q", check=True).stdout.split()) <= before
    else:
        assert mine(tmp)
    # The next build takes the same locked cache at once and sweeps a dead build's copies.
    ctx2 = context(tmp_path / "two", f"FROM {bb}\n{step} cat /ctx/f > /got\n", {"f": "y\n"})
    assert cat(rl, build(rl, ctx2, "--secret", f"id=s,src={tmp_path / 's'}"), "/got") == "y\n"
    assert mine(tmp) == [] and mine(secrets) == []
    for ctr in rl("ps", "-a", "-q", check=True).stdout.split():
        rl("rm", "-f", ctr, check=True)


def test_cache_mount_seeded_from_a_stage(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    cid = f"seed-{os.getpid()}-{next(_counter)}"
    ctx = context(tmp_path, f"""\
FROM {bb} AS seed
RUN mkdir -p /s && echo seeded > /s/file
FROM {bb}
RUN --mount=type=cache,id={cid},target=/c,from=seed,source=/s cat /c/file > /got
""")
    assert cat(rl, build(rl, ctx), "/got") == "seeded\n"


def test_mount_cache_key_holds_bound_content_and_only_a_secrets_id(tmp_path: Path) -> None:
    from rootless.build import dockerfile, runmounts
    from rootless.build.context import Context

    ctx = context(tmp_path, "", {"f": "one\n"})

    def key(line: str) -> str:
        (ins,) = dockerfile.parse(f"FROM x\n{line}\n").stages[0].instructions
        with Context.directory(str(ctx)) as c:
            return runmounts.key(ins, c, "/")

    bind = key("RUN --mount=type=bind,target=/m true")
    secret = key("RUN --mount=type=secret,id=a true")
    assert key("RUN --mount=type=secret,id=b true") != secret
    (ctx / "f").write_text("two\n")
    assert key("RUN --mount=type=bind,target=/m true") != bind  # the bound files are inputs
    assert key("RUN --mount=type=secret,id=a true") == secret  # a secret's value never is


def test_bind_sources_cannot_leave_the_context(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    before = leftovers(rl)
    outside = tmp_path / "outside.txt"
    outside.write_text("host secret\n")
    cases = {
        "../outside.txt": "forbidden path outside the build context: ../outside.txt",
        "link-out": "forbidden path outside the build context: link-out",
        "up/outside.txt": "forbidden path outside the build context: up/outside.txt",
        "/etc": "not found",
    }
    for source, message in cases.items():
        ctx = context(tmp_path, f"FROM {bb}\nRUN --mount=type=bind,source={source},target=/m "
                                "cat /m > /got\n")
        for name, target in (("link-out", str(outside)), ("up", "..")):
            if not (ctx / name).is_symlink():
                (ctx / name).symlink_to(target)
        r = rl("build", "-q", ctx, timeout=120)
        assert r.returncode == 125, (source, r.stderr)
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith("Error: Dockerfile:2: ") and message in line, line
    assert leftovers(rl) == before


def test_symlinks_in_a_bound_tree_resolve_inside_the_container(
        rl: RlRunner, bb: str, tmp_path: Path) -> None:
    # From inside: a link in the bound context that points at the host's file
    # finds only the container's own (or nothing), never the host's.
    host = tmp_path / "host-only.txt"
    host.write_text("host content\n")
    ctx = context(tmp_path, f"""\
FROM {bb}
RUN --mount=type=bind,target=/ctx,rw \\
    (cat /ctx/abs /ctx/rel 2>/dev/null; echo end) > /seen && \\
    rm -f /ctx/abs && echo replaced > /ctx/abs && ln -sf /etc/passwd /ctx/rel2
""")
    (ctx / "abs").symlink_to(host)
    depth = "/".join([".."] * len(host.parts))
    (ctx / "rel").symlink_to(depth + str(host))
    image = build(rl, ctx)
    assert cat(rl, image, "/seen") == "end\n"
    assert host.read_text() == "host content\n" and (ctx / "abs").is_symlink()
    assert not (ctx / "rel2").exists()


# -- secrets -------------------------------------------------------------------------


def _layer_bytes(rl: RlRunner, image: str, tmp_path: Path) -> list[bytes]:
    """Every blob of the saved image (layers decompressed), its config and manifest."""
    out = tmp_path / "saved.tar"
    rl("save", "-o", out, image, check=True)
    blobs = []
    with tarfile.open(out) as tf:
        for m in tf.getmembers():
            f = tf.extractfile(m) if m.isfile() else None
            if f is None:
                continue
            data = f.read()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            blobs.append(data)
            if data[257:262] == b"ustar":  # a layer: each member's content too
                with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                    names = [x.name for x in layer.getmembers()]
                    blobs.append("\n".join(names).encode())
    out.unlink()
    return blobs


def test_secrets_mounted_and_never_in_a_layer(rl: RlRunner, bb: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    file_secret = f"file-secret-{os.urandom(8).hex()}"
    env_secret = f"env-secret-{os.urandom(8).hex()}"
    (tmp_path / "tok").write_text(file_secret)
    monkeypatch.setenv("RL_TEST_TOKEN", env_secret)
    ctx = context(tmp_path, f"""\
FROM {bb}
RUN --mount=type=secret,id=tok test "$(sha256sum < /run/secrets/tok | cut -d' ' -f1)" = \\
    {hashlib.sha256(file_secret.encode()).hexdigest()} && \\
    stat -c '%a %u' /run/secrets/tok > /default-stat
RUN --mount=type=secret,id=tok,target=/x/tok,mode=0444,uid=1000 stat -c '%a %u' /x/tok > /stat
RUN --mount=type=secret,id=envsec,env=TOKEN,required \\
    test -n "$TOKEN" && test ! -e /run/secrets/envsec && echo "${{#TOKEN}}" > /len
RUN --mount=type=secret,id=absent (test -e /run/secrets/absent && echo there || echo \\
    absent) > /optional
""")
    image = build(rl, ctx, "--secret", f"id=tok,src={tmp_path / 'tok'}",
                  "--secret", "id=envsec,env=RL_TEST_TOKEN")
    assert cat(rl, image, "/default-stat") == "400 0\n"
    assert cat(rl, image, "/stat") == "444 1000\n"
    assert cat(rl, image, "/len") == f"{len(env_secret)}\n"
    assert cat(rl, image, "/optional") == "absent\n"
    assert sh(rl, image, "test -e /run/secrets/tok || test -e /x/tok && echo left; true") == ""
    blobs = _layer_bytes(rl, image, tmp_path)
    assert len(blobs) >= 4
    for data in blobs:
        assert file_secret.encode() not in data and env_secret.encode() not in data
    history = rl("history", "--no-trunc", image).stdout
    assert file_secret not in history and env_secret not in history


def test_secret_errors(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    before = leftovers(rl)
    ctx = context(tmp_path, f"FROM {bb}\nRUN --mount=type=secret,id=s,required=true true\n")
    missing = tmp_path / "nope"
    r = rl("build", "--secret", f"id=s,src={missing}", ctx, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"Error: failed to stat {missing}: stat {missing}: "
                                "no such file or directory")
    r = rl("build", ctx, timeout=120)
    assert r.returncode == 125
    assert r.stderr.strip().splitlines()[-1] == "Error: Dockerfile:2: secret s: not found"
    r = rl("build", "--secret", "id=s,bogus=1", ctx, timeout=60)
    assert r.returncode == 125 and "unexpected key 'bogus'" in r.stderr
    assert leftovers(rl) == before


# -- network, security, what is refused ---------------------------------------------------


def test_run_network_and_security_flags(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"""\
FROM {bb}
RUN --network=none grep : /proc/net/dev | cut -d: -f1 | tr -d ' ' > /none
RUN --network=host grep : /proc/net/dev | cut -d: -f1 | tr -d ' ' > /host
RUN --security=sandbox --network=default echo ok > /sandbox
""")
    image = build(rl, ctx, "--network=none")
    assert cat(rl, image, "/none") == "lo\n"
    host = {line.split(":")[0].strip() for line in
            Path("/proc/net/dev").read_text().splitlines() if ":" in line}
    assert set(cat(rl, image, "/host").split()) == host
    assert cat(rl, image, "/sandbox") == "ok\n"


@pytest.mark.parametrize(("line", "message"), [
    ("RUN --security=insecure true",
     "Dockerfile:2: RUN --security=insecure: granting entitlement security.insecure is not "
     "allowed by build daemon configuration"),
    ("RUN --mount=type=ssh true",
     "Dockerfile:2: RUN --mount=type=ssh is not supported: rl build forwards no SSH agent"),
    ("RUN --mount=type=tmpfs,target=/t,size=lots true",
     "Dockerfile:2: invalid tmpfs size 'lots'"),
    ("RUN --mount=type=bind,target=/a:b true",
     "Dockerfile:2: a mount target with ':' is not supported: /a:b"),
    ("RUN --mount=type=tmpfs,target=/proc/x true",
     'Dockerfile:2: invalid mount target /proc/x: "/proc/x" cannot be mounted because it is '
     "inside /proc"),
    ("RUN --mount=type=cache,target=.. true",
     "Dockerfile:2: invalid mount target /: invalid specification: destination can't be '/'"),
])
def test_refused_run_flags_name_the_line(rl: RlRunner, bb: str, tmp_path: Path, line: str,
                                         message: str) -> None:
    before = leftovers(rl)
    ctx = context(tmp_path, f"FROM {bb}\n{line}\n")
    r = rl("build", "-q", ctx, timeout=120)
    assert r.returncode == 125
    assert r.stderr.strip().splitlines() == [f"Error: {message}"]
    assert leftovers(rl) == before
