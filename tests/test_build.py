"""rl build through the real CLI: a Dockerfile over an imported busybox image."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest
from buildtools import context, leftovers, saved_config

import support
from support import RlRunner, RlState

pytest_plugins = ["buildtools"]
pytestmark = pytest.mark.usefixtures("build_host")


def inspect(rl: RlRunner, ref: str) -> dict[str, object]:
    data = json.loads(rl("image", "inspect", ref, check=True).stdout)[0]
    assert isinstance(data, dict)
    return data


def test_multi_instruction_build_config_history_and_files(
        rl: RlRunner, bb: str, tmp_path: Path) -> None:
    before = leftovers(rl)
    ctx = context(tmp_path, f"""\
FROM {bb}
LABEL org.example.a=1 b="two words"
ENV GREETING=hello TARGET=world
ARG WHO=builder
WORKDIR /app
COPY hello.txt ./
COPY --chown=1000:1001 --chmod=0750 run.sh /usr/local/bin/
COPY tree/ /data/
RUN echo "$GREETING from $WHO" > made.txt && mkdir -p /var/x
USER 1000
EXPOSE 8080 53/udp
STOPSIGNAL SIGUSR1
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/made.txt"]
""", {"hello.txt": "hi there\n", "run.sh": "#!/bin/sh\necho run\n",
      "tree/a": "A\n", "tree/sub/b": "B\n", "ignored.txt": "no\n",
      ".dockerignore": "ignored.txt\n"}, {"hello.txt": 0o640})
    r = rl("build", "-t", f"{bb}-built:1", "--label", "from.cli=yes", "--iidfile",
           tmp_path / "iid", ctx, timeout=180)
    assert r.returncode == 0, r.stderr
    image_id = r.stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    assert (tmp_path / "iid").read_text() == image_id
    assert "[2/6] WORKDIR /app" in r.stderr and "[6/6] RUN echo" in r.stderr

    info = inspect(rl, f"{bb}-built:1")
    assert info["Id"] == image_id
    cfg = info["Config"]
    assert isinstance(cfg, dict)
    assert "GREETING=hello" in cfg["Env"] and "TARGET=world" in cfg["Env"]
    assert "FROM_BASE=yes" in cfg["Env"]
    assert not any(e.startswith("WHO=") for e in cfg["Env"])  # ARG is not in the image
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
    assert cfg["Cmd"] == ["cat /app/made.txt"]
    assert cfg["WorkingDir"] == "/app"
    assert cfg["User"] == "1000"
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert cfg["Labels"] == {"org.example.a": "1", "b": "two words", "from.cli": "yes"}
    assert cfg["StopSignal"] == "SIGUSR1"

    saved = saved_config(rl, f"{bb}-built:1", tmp_path)
    assert saved["config"] == cfg
    entries = saved["history"]
    assert isinstance(entries, list)
    history = [str(e["created_by"]) for e in reversed(entries)]
    assert history[:6] == [
        'CMD ["cat /app/made.txt"]',
        'ENTRYPOINT ["/bin/sh" "-c"]',
        "STOPSIGNAL SIGUSR1",
        "EXPOSE [8080/tcp 53/udp]",
        "USER 1000",
        'RUN |1 WHO=builder /bin/sh -c echo "$GREETING from $WHO" > made.txt && '
        "mkdir -p /var/x # buildkit",
    ]
    assert "ENV GREETING=hello TARGET=world" in history
    assert "LABEL org.example.a=1 b=two words" in history
    assert "WORKDIR /app" in history
    assert "COPY hello.txt ./ # buildkit" in history
    assert "ARG WHO=builder" in history
    # Config steps add no layer (empty_layer); WORKDIR made /app, COPY x3, RUN did.
    layered = [e["created_by"] for e in entries if not e.get("empty_layer")]
    rootfs = saved["rootfs"]
    assert isinstance(rootfs, dict)
    assert len(layered) == len(rootfs["diff_ids"])
    assert layered[-5:] == ["WORKDIR /app", "COPY hello.txt ./ # buildkit",
                            # current BuildKit shows --chown/--chmod (convert_copy.go)
                            "COPY --chown=1000:1001 --chmod=0750 run.sh /usr/local/bin/ "
                            "# buildkit",
                            "COPY tree/ /data/ # buildkit", history[5]]

    out = rl("run", "--rm", f"{bb}-built:1", check=True).stdout
    assert out == "hello from builder\n"
    r = rl("run", "--rm", "--entrypoint", "sh", "-u", "0", f"{bb}-built:1", "-c",
           "pwd; cat hello.txt; stat -c '%a %u:%g' hello.txt /usr/local/bin/run.sh /data "
           "/data/sub/b; cat /data/a /data/sub/b; ls /app; ls / | grep -c tree; "
           "/usr/local/bin/run.sh", check=True)
    assert r.stdout.splitlines() == [
        "/app", "hi there", "640 0:0", "750 1000:1001", "755 0:0", "644 0:0",
        "A", "B", "hello.txt", "made.txt", "0", "run",
    ]
    assert leftovers(rl) == before


def test_failing_run_exits_1_no_tag_no_container(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    before = leftovers(rl)
    ctx = context(tmp_path, f"FROM {bb}\nRUN echo ok > /f\nRUN echo about to fail; exit 3\n")
    r = rl("build", "-t", f"{bb}-fail", ctx, timeout=120)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.strip().splitlines()[-1] == (
        'Error: process "/bin/sh -c echo about to fail; exit 3" did not complete '
        "successfully: exit code: 3")
    lines = r.stderr.splitlines()
    # The RUN's output is relayed under its step line (BuildKit's plain progress).
    step = lines.index("#3 [3/3] RUN echo about to fail; exit 3")
    assert re.fullmatch(r"#3 \d+\.\d{3} about to fail", lines[step + 1])
    assert r.stdout == ""
    assert rl("image", "inspect", f"{bb}-fail").returncode != 0
    assert leftovers(rl) == before


def test_copy_outside_the_context_names_the_line(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    (tmp_path / "x").write_text("secret\n")
    ctx = context(tmp_path, f"FROM {bb}\nENV A=1\nCOPY ../x /x\n")
    r = rl("build", ctx)
    assert r.returncode == 125, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "Error: Dockerfile:3: forbidden path outside the build context: ../x")


def test_multi_stage_copy_from_and_target(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"""\
FROM {bb} AS build
ARG VERSION
RUN mkdir /out && echo "v=$VERSION" > /out/version && chmod 600 /out/version

FROM {bb} AS broken
RUN echo broken stage ran; exit 7

FROM build AS test
RUN test -f /out/version

FROM scratch AS final
COPY --from=build /out/version /v
COPY --from=build /out /all/
CMD ["/v"]
""")
    r = rl("build", "-t", f"{bb}-ms", "--build-arg", "VERSION=42", "--target", "final", ctx,
           timeout=180)
    assert r.returncode == 0, r.stderr
    assert "broken stage ran" not in r.stderr and "[test" not in r.stderr
    assert "[build 2/2] RUN" in r.stderr and "[final 2/3] COPY --from=build" in r.stderr
    info = inspect(rl, f"{bb}-ms")
    cfg = info["Config"]
    assert isinstance(cfg, dict)
    assert cfg["Cmd"] == ["/v"]
    rootfs = info["RootFS"]
    assert isinstance(rootfs, dict) and len(rootfs["Layers"]) == 2  # scratch + two COPYs
    # Run it with busybox's shell: export the files through a container of the image.
    out = tmp_path / "final.tar"
    cid = rl("create", f"{bb}-ms", check=True).stdout.strip()
    rl("export", "-o", out, cid, check=True)
    rl("rm", cid, check=True)
    with tarfile.open(out) as tf:
        names = {m.name.lstrip("./"): m for m in tf.getmembers()}
        assert names["v"].mode == 0o600
        v = tf.extractfile(names["v"])
        assert v is not None and v.read() == b"v=42\n"
        assert "all/version" in names

    # The broken stage fails when it is the target; the default target is the last.
    r = rl("build", "--target", "broken", ctx, timeout=120)
    assert r.returncode == 1 and "exit code: 7" in r.stderr


def test_build_arg_reaches_run_and_quiet(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"FROM {bb}\nARG MSG=default\nRUN echo \"msg=$MSG\" > /msg\n"
                            "CMD [\"cat\", \"/msg\"]\n")
    r = rl("build", "-q", "-t", f"{bb}-arg", "--build-arg", "MSG=from-cli", ctx, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and r.stdout.startswith("sha256:") and len(r.stdout.split()) == 1
    assert rl("run", "--rm", f"{bb}-arg", check=True).stdout == "msg=from-cli\n"
    r = rl("build", "-q", "-t", f"{bb}-arg2", ctx, timeout=120)
    assert rl("run", "--rm", f"{bb}-arg2", check=True).stdout == "msg=default\n"


def test_config_instructions_as_docker_records_them(rl: RlRunner, bb: str,
                                                    tmp_path: Path) -> None:
    ctx = context(tmp_path, f"""\
FROM {bb}
MAINTAINER someone <a@example.org>
SHELL ["/bin/sh", "-ec"]
RUN case "$-" in *e*) echo errexit > /shell ;; esac
VOLUME /data /cache
HEALTHCHECK --interval=5s --timeout=1m30s --retries=2 CMD wget -q localhost || exit 1
ONBUILD RUN echo triggered
ENTRYPOINT cat /shell
""")
    r = rl("build", "-t", f"{bb}-cfg", "--network=none", ctx, timeout=120)
    assert r.returncode == 0, r.stderr
    saved = saved_config(rl, f"{bb}-cfg", tmp_path)
    cfg = saved["config"]
    assert isinstance(cfg, dict)
    assert saved["author"] == "someone <a@example.org>"
    assert cfg["Shell"] == ["/bin/sh", "-ec"]
    assert cfg["Volumes"] == {"/data": {}, "/cache": {}}
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q localhost || exit 1"],
                                  "Interval": 5_000_000_000, "Timeout": 90_000_000_000,
                                  "Retries": 2}
    assert cfg["OnBuild"] == ["RUN echo triggered"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-ec", "cat /shell"]
    assert "Cmd" not in cfg  # ENTRYPOINT drops the base image's CMD, as in docker
    entries = saved["history"]
    assert isinstance(entries, list)
    mine = [e for e in entries if e.get("comment") == "buildkit.dockerfile.v0"]
    assert [e["created_by"] for e in mine] == [
        "MAINTAINER someone <a@example.org>",
        "SHELL [/bin/sh -ec]",
        'RUN /bin/sh -ec case "$-" in *e*) echo errexit > /shell ;; esac # buildkit',
        "VOLUME [/data /cache]",
        'HEALTHCHECK ["CMD-SHELL" "wget -q localhost || exit 1"]',
        "ONBUILD RUN echo triggered",
        'ENTRYPOINT ["/bin/sh" "-ec" "cat /shell"]',
    ]
    assert [bool(e.get("empty_layer")) for e in mine] == [True, True, False, True, True,
                                                          True, True]
    volumes = rl("volume", "ls", "-q", check=True).stdout
    assert rl("run", "--rm", f"{bb}-cfg", check=True).stdout == "errexit\n"

    # A child of it runs the trigger first (tests/test_build_copy.py has more); its
    # RUN writes below a VOLUME path into the layer (BuildKit's way), making no volume.
    (tmp_path / "child").mkdir()
    child = context(tmp_path / "child",
                    f"FROM {bb}-cfg\nRUN mkdir -p /data && echo kept > /data/f\n")
    r = rl("build", "-t", f"{bb}-cfg-child", child, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "triggered" in r.stderr
    assert rl("volume", "ls", "-q", check=True).stdout == volumes  # --rm took its two
    # run from it: the anonymous volume's first use copies the layer's file
    assert rl("run", "--rm", "--entrypoint", "cat", f"{bb}-cfg-child", "/data/f",
              check=True).stdout == "kept\n"
    assert rl("volume", "ls", "-q", check=True).stdout == volumes


def test_ctrl_c_mid_run_leaves_nothing(rl: RlRunner, rl_path: Path, rl_state: RlState,
                                       bb: str, tmp_path: Path) -> None:
    before = leftovers(rl)
    ctx = context(tmp_path, f"FROM {bb}\nRUN echo first > /f\nRUN echo started; sleep 60\n")
    proc = subprocess.Popen([str(rl_path), "build", "-t", f"{bb}-int", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **rl_state.env()}, start_new_session=True,
                            preexec_fn=support.as_foreground_job)
    try:
        assert proc.stderr is not None
        seen = []
        while not seen or not seen[-1].endswith(" started\n"):  # the second RUN runs
            line = proc.stderr.readline()
            assert line, seen
            seen.append(line)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rl("image", "inspect", f"{bb}-int").returncode != 0
    assert leftovers(rl) == before
    # The next build works.
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nRUN echo again > /f\nCMD [\"cat\", \"/f\"]\n")
    image_id = rl("build", "-q", ctx, check=True, timeout=120).stdout.strip()
    assert rl("run", "--rm", image_id, check=True).stdout == "again\n"
    rl("rmi", image_id, check=True)


def test_add_copies_plain_files_and_unpacks_archives(rl: RlRunner, bb: str,
                                                     tmp_path: Path) -> None:
    buf = tmp_path / "a.tar"
    with tarfile.open(buf, "w") as tf:
        info = tarfile.TarInfo("inside")
        tf.addfile(info)
    ctx = context(tmp_path, f"FROM {bb}\nADD notes.txt one.txt /opt/\nCMD [\"cat\", "
                            "\"/opt/notes.txt\", \"/opt/one.txt\"]\n",
                  {"notes.txt": "plain\n", "one.txt": "1\n", "a.tar": buf.read_bytes()})
    r = rl("build", "-t", f"{bb}-add", ctx, timeout=120)
    assert r.returncode == 0, r.stderr
    assert rl("run", "--rm", f"{bb}-add", check=True).stdout == "plain\n1\n"
    # A local tar is unpacked (tests/test_build_copy.py has the rest).
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nADD a.tar /opt/\n")
    image_id = rl("build", "-q", ctx, check=True, timeout=120).stdout.strip()
    assert rl("run", "--rm", image_id, "ls", "/opt", check=True).stdout == "inside\n"
    rl("rmi", image_id, check=True)
    # Several sources need a directory destination, as docker says.
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nCOPY notes.txt one.txt /opt\n")
    r = rl("build", ctx)
    assert r.returncode == 125
    assert r.stderr.strip().splitlines()[-1] == (
        "Error: Dockerfile:2: When using COPY with more than one source file, the "
        "destination must be a directory and end with a /")


def test_network_reaches_run_and_unknown_target(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"FROM {bb}\nRUN grep : /proc/net/dev | cut -d: -f1 | tr -d ' ' "
                            "> /ifaces\nCMD [\"cat\", \"/ifaces\"]\n")
    image_id = rl("build", "-q", "--network=none", ctx, check=True, timeout=120).stdout.strip()
    assert rl("run", "--rm", "--network=none", image_id, "cat", "/ifaces",
              check=True).stdout == "lo\n"
    image_id = rl("build", "-q", "--network=host", ctx, check=True, timeout=120).stdout.strip()
    host = {line.split(":")[0].strip() for line in
            Path("/proc/net/dev").read_text().splitlines() if ":" in line}
    out = rl("run", "--rm", "--network=none", image_id, "cat", "/ifaces", check=True).stdout
    assert set(out.split()) == host
    r = rl("build", "--target", "nope", ctx)
    assert r.returncode == 125
    assert r.stderr.strip() == 'Error: target stage "nope" could not be found'
