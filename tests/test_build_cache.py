"""rl build's cache (issue 12, part 6): real builds over an imported busybox image."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from buildtools import STEP, context, leftovers, plain

import support
from support import RlRunner, RlState

pytest_plugins = ["buildtools"]
pytestmark = pytest.mark.usefixtures("build_host")


def store_root(rl_state: RlState) -> Path:
    return rl_state.data_home / "rl" / "storage"


def build(rl: RlRunner, *args: str | Path) -> tuple[str, list[str]]:
    """Build; (image ID, progress lines)."""
    r = rl("build", "--progress=plain", *args, timeout=180)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip(), plain(r.stderr)


def cached(lines: list[str], step: str) -> bool:
    """Whether the step line starting with *step* is followed by CACHED."""
    i = next(i for i, line in enumerate(lines) if line.startswith(step))
    return i + 1 < len(lines) and lines[i + 1] == "CACHED"


def file_in(rl: RlRunner, image: str, path: str) -> str:
    return rl("run", "--rm", image, "cat", path, check=True).stdout


DOCKERFILE = """\
FROM {bb}
ENV GREETING=hi
COPY a.txt /a.txt
RUN echo ran-one; cat /proc/sys/kernel/random/uuid > /one
COPY b.txt /b.txt
RUN echo ran-two; cat /proc/sys/kernel/random/uuid > /two
CMD ["cat", "/a.txt"]
"""


def test_unchanged_rebuild_is_all_cached_same_id_and_mtime_does_not_count(
        rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, DOCKERFILE.format(bb=bb), {"a.txt": "A\n", "b.txt": "B\n"})
    first, lines = build(rl, "-t", f"{bb}-c:1", ctx)
    assert "ran-one" in lines and "ran-two" in lines
    assert not any(line == "CACHED" for line in lines)
    one, two = file_in(rl, first, "/one"), file_in(rl, first, "/two")

    # Times and the owner's touch are not content: every step is a hit.
    os.utime(ctx / "a.txt", (1, 1))
    os.utime(ctx / "b.txt", None)
    again, lines = build(rl, "-t", f"{bb}-c:2", ctx)
    assert again == first
    assert "ran-one" not in lines and "ran-two" not in lines
    for step in ("[2/5] COPY a.txt", "[3/5] RUN echo ran-one", "[4/5] COPY b.txt",
                 "[5/5] RUN echo ran-two"):
        assert cached(lines, step), lines
    assert rl("image", "inspect", "-f", "{{.Id}}", f"{bb}-c:2",
              check=True).stdout.strip() == first

    # One copied file changes: the steps before it stay cached, it and what follows run.
    (ctx / "b.txt").write_text("B2\n")
    changed, lines = build(rl, ctx)
    assert changed != first
    assert cached(lines, "[2/5] COPY a.txt") and cached(lines, "[3/5] RUN echo ran-one")
    assert not cached(lines, "[4/5] COPY b.txt") and "ran-two" in lines
    assert "ran-one" not in lines
    assert file_in(rl, changed, "/one") == one
    assert file_in(rl, changed, "/two") != two
    assert file_in(rl, changed, "/b.txt") == "B2\n"

    # A different value of a variable RUN sees is another key; going back hits again.
    (ctx / "b.txt").write_text("B\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(bb=bb).replace("GREETING=hi",
                                                                     "GREETING=ho"))
    _, lines = build(rl, ctx)
    assert "ran-one" in lines
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(bb=bb))
    back, lines = build(rl, ctx)
    assert back == first and "ran-one" not in lines


def test_network_and_build_args_are_in_the_key(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"FROM {bb}\nARG V=1\nRUN echo ran-v=$V\n")
    _, lines = build(rl, ctx)
    assert "ran-v=1" in lines
    _, lines = build(rl, "--build-arg", "V=2", ctx)
    assert "ran-v=2" in lines
    _, lines = build(rl, "--network=none", "--build-arg", "V=2", ctx)
    assert "ran-v=2" in lines  # another network: not the same step
    _, lines = build(rl, "--network=none", "--build-arg", "V=2", ctx)
    assert "ran-v=2" not in lines and cached(lines, "[2/2] RUN")


def test_no_cache_runs_everything_and_refreshes_the_records(
        rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"FROM {bb}\nRUN echo ran; cat /proc/sys/kernel/random/uuid > /u\n")
    first, _ = build(rl, ctx)
    fresh, lines = build(rl, "--no-cache", ctx)
    assert "ran" in lines and "CACHED" not in lines
    assert fresh != first and file_in(rl, fresh, "/u") != file_in(rl, first, "/u")
    # As BuildKit: what --no-cache built is the cache from then on.
    after, lines = build(rl, ctx)
    assert after == fresh and "ran" not in lines


def test_no_cache_filter_names_stages(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"""\
FROM {bb} AS base
RUN echo ran-base; cat /proc/sys/kernel/random/uuid > /u

FROM {bb} AS other
RUN echo ran-other; echo o > /o

FROM base AS final
COPY --from=other /o /o
RUN echo ran-final
""")
    first, _ = build(rl, ctx)
    _, lines = build(rl, "--no-cache-filter", "final", ctx)
    assert "ran-final" in lines and "ran-base" not in lines and "ran-other" not in lines
    # A stage not served from the cache: it and the stages over it or copying from it.
    _, lines = build(rl, "--no-cache-filter", "other", ctx)
    assert "ran-other" in lines and "ran-final" in lines and "ran-base" not in lines
    _, lines = build(rl, "--no-cache-filter", "base,other", ctx)
    assert {"ran-base", "ran-other", "ran-final"} <= set(lines)
    _, lines = build(rl, "--no-cache-filter", "other", "--no-cache-filter", "base", ctx)
    assert {"ran-base", "ran-other", "ran-final"} <= set(lines)
    last, lines = build(rl, ctx)
    assert not {"ran-base", "ran-other", "ran-final"} & set(lines)
    assert last != first  # the base's RUN ran again meanwhile: /u changed


def test_damaged_records_are_misses(rl: RlRunner, bb: str, tmp_path: Path,
                                    rl_state: RlState) -> None:
    ctx = context(tmp_path, f"FROM {bb}\nENV A=1\nRUN echo ran-1; echo 1 > /one\n"
                            "RUN echo ran-2; echo 2 > /two\n")
    build(rl, ctx)

    def last_record() -> Path:
        """The record of the last RUN (its history ends with it)."""
        for p in (store_root(rl_state) / "build-cache").glob("*.json"):
            text = p.read_text()
            if f"BASE={bb}" in text and \
                    "ran-2" in json.loads(text)["config"]["history"][-1]["created_by"]:
                return p
        raise AssertionError("no record of the last step")

    def wrong_size(doc: dict[str, Any]) -> dict[str, Any]:
        doc["layers"][-1]["size"] += 1
        return doc

    def other_key(doc: dict[str, Any]) -> dict[str, Any]:
        return {**doc, "key": "sha256:" + "0" * 64}

    def bad_config(doc: dict[str, Any]) -> dict[str, Any]:
        return {**doc, "config": {**doc["config"], "rootfs": 7}}

    def gone_layer(doc: dict[str, Any]) -> dict[str, Any]:
        doc["diff_ids"][-1] = doc["config"]["rootfs"]["diff_ids"][-1] = "sha256:" + "1" * 64
        return doc

    damages: list[bytes | Callable[[dict[str, Any]], dict[str, Any]]] = [
        b"", b"{not json", b"[]", b'{"key": 1, "layers": 2}', wrong_size, other_key,
        bad_config, gone_layer]
    for damage in damages:
        path = last_record()
        data = damage if isinstance(damage, bytes) else \
            json.dumps(damage(json.loads(path.read_bytes()))).encode()
        path.write_bytes(data)
        _, lines = build(rl, ctx)
        # Only the damaged step runs again; the one before is still a hit.
        assert "ran-2" in lines and "ran-1" not in lines, (damage, lines)
    # The rewritten records serve the next build, also once the store collected.
    assert rl("image", "prune", "-f").returncode == 0  # the untagged results go
    _, lines = build(rl, ctx)
    assert "ran-1" not in lines and "ran-2" not in lines


def test_cache_from_a_local_image_seeds_run_steps(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"FROM {bb}\nWORKDIR /w\nRUN echo ran-1; "
                            "cat /proc/sys/kernel/random/uuid > u\nENV X=1\nRUN echo ran-2\n")
    first, _ = build(rl, "-t", f"{bb}-seed", ctx)
    r = rl("builder", "prune", "-af", check=True)
    assert r.stdout.splitlines()[-1].startswith("Total reclaimed space: ")
    # No record left: without --cache-from everything runs...
    other, lines = build(rl, ctx)
    assert "ran-1" in lines and other != first
    rl("builder", "prune", "-af", check=True)
    # ... with it, the image's own history and layers give the hits: the same image.
    seeded, lines = build(rl, "--cache-from", f"{bb}-seed", ctx)
    assert "ran-1" not in lines and "ran-2" not in lines
    assert cached(lines, "[3/4] RUN echo ran-1") and cached(lines, "[4/4] RUN echo ran-2")
    assert seeded == first
    # A cache source that is not in the store is a warning, not a failure.
    _, lines = build(rl, "--cache-from", "type=registry,ref=nosuch/image:1", ctx)
    assert any("nosuch/image:1" in line and "WARNING" in line for line in lines)
    r = rl("build", "--cache-from", "type=local,src=/tmp", ctx)
    assert r.returncode == 125 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("Error: --cache-from type=local,src=/tmp")


def test_builder_prune(rl: RlRunner, bb: str, tmp_path: Path, rl_state: RlState) -> None:
    ctx = context(tmp_path, f"FROM {bb}\nRUN echo ran; head -c 300000 /dev/zero > /z\n")
    build(rl, "-t", f"{bb}-p", ctx)
    mounts = store_root(rl_state) / "build-mounts"
    (mounts / "m1").mkdir(parents=True, exist_ok=True)
    (mounts / "m1" / "f").write_bytes(b"x" * 5000)

    # A recent record is kept by until=, and a record over a tagged image's own layers
    # is not dangling: plain prune keeps it and the mounts.
    r = rl("builder", "prune", "-f", "--filter", "until=24h", check=True)
    assert r.stdout.splitlines()[-1].startswith("Total reclaimed space: ")
    r = rl("builder", "prune", "-f", check=True)
    _, lines = build(rl, ctx)
    assert "ran" not in lines
    assert (mounts / "m1" / "f").exists()

    # Without the image the record is what holds the RUN's layer: dangling.
    rl("rmi", f"{bb}-p", check=True)
    r = rl("builder", "prune", "-f", check=True)
    assert r.stdout.startswith("Deleted build cache objects:\n")
    size = r.stdout.splitlines()[-1].removeprefix("Total reclaimed space: ")
    assert size.endswith("kB") and float(size[:-2]) >= 300, r.stdout
    _, lines = build(rl, ctx)
    assert "ran" in lines

    r = rl("builder", "prune", "-a", "-f", check=True)
    assert "m1" in r.stdout.splitlines()
    assert not mounts.exists() or not any(mounts.iterdir())
    assert not list((store_root(rl_state) / "build-cache").glob("*.json"))

    r = rl("builder", "prune", "-f", "--filter", "label=x")
    assert r.returncode == 125 and r.stderr.startswith("Error: invalid filter")
    r = rl("builder", "prune", "-f", "--filter", "until=forever")
    assert r.returncode == 125 and r.stderr == 'Error: time: invalid duration "forever"\n'
    # Without -f, a "no" leaves everything.
    build(rl, ctx)
    r = rl("builder", "prune", input="n\n")
    assert r.returncode == 0 and "Total reclaimed" not in r.stdout
    _, lines = build(rl, ctx)
    assert "ran" not in lines


def test_kill_9_mid_run_leaves_nothing_and_the_next_build_works(
        rl: RlRunner, rl_path: Path, rl_state: RlState, bb: str, tmp_path: Path) -> None:
    before = leftovers(rl)
    ctx = context(tmp_path, f"FROM {bb}\nRUN echo first > /f\nRUN echo started; sleep 60\n")
    proc = subprocess.Popen([str(rl_path), "build", "-t", f"{bb}-k9", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **rl_state.env()}, start_new_session=True)
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        while not seen or seen[-1] != "started\n":  # the second RUN's container runs
            line = proc.stderr.readline()
            assert line, seen
            seen.append(STEP.sub("", line))
        assert rl("ps", "-a", "-q", check=True).stdout != before[0]  # the RUN's container
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        # The reaper keeps the build's stderr until it has cleaned up.
        proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rl("image", "inspect", f"{bb}-k9").returncode != 0
    assert leftovers(rl) == before
    builds = store_root(rl_state) / "build-cache" / "builds"
    assert not list(builds.iterdir())
    # The next build works, its first RUN from the cache; prune does not wait for a lock.
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nRUN echo first > /f\nCMD [\"cat\", \"/f\"]\n")
    image_id, lines = build(rl, "-t", f"{bb}-k9", ctx)
    assert cached(lines, "[2/2] RUN echo first")
    assert rl("run", "--rm", image_id, check=True).stdout == "first\n"
    rl("builder", "prune", "-f", check=True, timeout=30)
    assert leftovers(rl) == before


def test_a_journal_of_a_dead_build_is_swept_by_the_next(
        rl: RlRunner, bb: str, tmp_path: Path, rl_state: RlState) -> None:
    """Should the reaper die with the build (kill -9 of both), the next build cleans up."""
    before = leftovers(rl)
    cid = rl("create", bb, "true", check=True).stdout.strip()
    builds = store_root(rl_state) / "build-cache" / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    (builds / "1-dead.lock").write_bytes(b"")
    (builds / "1-dead.json").write_text(json.dumps({"containers": [cid], "images": []}))
    (builds / "2-damaged.lock").write_bytes(b"")
    (builds / "2-damaged.json").write_text("{")
    ctx = context(tmp_path, f"FROM {bb}\nRUN true\n")
    build(rl, "-t", f"{bb}-swept", ctx)
    assert leftovers(rl) == before
    assert not list(builds.iterdir())


def test_concurrent_builds_on_one_store(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    ctxs = [context(tmp_path, f"FROM {bb}\nRUN echo ran-{i % 2}\nRUN echo again-{i % 2}\n",
                    name=f"ctx{i}") for i in range(4)]
    results: list[tuple[str, list[str]]] = []

    def one(ctx: Path) -> None:
        results.append(build(rl, ctx))

    threads = [threading.Thread(target=one, args=(c,)) for c in ctxs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    # Every record any of them wrote is whole: the same builds are now all hits.
    for c in ctxs:
        _, lines = build(rl, c)
        assert not any(line.startswith(("ran-", "again-")) for line in lines), lines


def test_independent_stages_run_at_once_and_a_shared_stage_once(
        rl: RlRunner, bb: str, tmp_path: Path) -> None:
    """The listener's RUN ends only when the talker's has reached it: built one after
    the other, the listener would wait for its 60 s timeout and fail."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = context(tmp_path, f"""\
FROM {bb} AS shared
RUN echo ran-shared; echo s > /s

FROM shared AS listener
RUN echo ran-listener; for i in $(seq 3); do \\
      timeout 60 nc -l -p {port} > /got; grep -q hello /got && exit 0; done; exit 1

FROM shared AS talker
RUN echo ran-talker; for i in $(seq 300); do \\
      echo hello | nc 127.0.0.1 {port} && echo ok > /sent && exit 0; usleep 100000; done; exit 1

FROM {bb}
COPY --from=listener /got /got
COPY --from=talker /sent /sent
COPY --from=shared /s /s
""")
    image_id, lines = build(rl, "--network=host", ctx)
    assert lines.count("ran-shared") == 1 and "ran-listener" in lines and "ran-talker" in lines
    assert file_in(rl, image_id, "/got") == "hello\n"
    assert file_in(rl, image_id, "/sent") == "ok\n"
    # What the forked stages built is in the cache like the rest.
    again, lines = build(rl, "--network=host", ctx)
    assert again == image_id and not any(line.startswith("ran-") for line in lines)

    # A failing stage fails the build with its step's error, and its sibling stops.
    before = leftovers(rl)
    (ctx / "Dockerfile").write_text(f"""\
FROM {bb} AS slow
RUN echo ran-slow; sleep 60

FROM {bb} AS bad
RUN echo ran-bad; exit 5

FROM {bb}
COPY --from=slow /etc /a
COPY --from=bad /etc /b
""")
    r = rl("build", ctx, timeout=50)
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines()[-1] == ('Error: process "/bin/sh -c echo ran-bad; exit 5" '
                                         "did not complete successfully: exit code: 5")
    assert leftovers(rl) == before


def test_kill_9_with_stages_in_children_leaves_nothing(
        rl: RlRunner, rl_path: Path, rl_state: RlState, bb: str, tmp_path: Path) -> None:
    before = leftovers(rl)
    ctx = context(tmp_path, f"""\
FROM {bb} AS one
RUN echo started-one; sleep 60

FROM {bb} AS two
RUN echo started-two; sleep 60

FROM {bb}
COPY --from=one /etc /one
COPY --from=two /etc /two
""")
    proc = subprocess.Popen([str(rl_path), "build", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **rl_state.env()}, start_new_session=True)
    try:
        assert proc.stderr is not None
        seen: set[str] = set()
        while not {"started-one\n", "started-two\n"} <= seen:  # both RUNs run at once
            line = proc.stderr.readline()
            assert line, seen
            seen.add(STEP.sub("", line))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        proc.stderr.read()  # every reaper has cleaned up
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert leftovers(rl) == before
    assert not list((store_root(rl_state) / "build-cache" / "builds").iterdir())
    # Ctrl-C of the whole process group, as a terminal sends it: 130, nothing left.
    proc = subprocess.Popen([str(rl_path), "build", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **rl_state.env()}, start_new_session=True,
                            preexec_fn=support.as_foreground_job)
    try:
        assert proc.stderr is not None
        seen = set()
        while not {"started-one\n", "started-two\n"} <= seen:
            line = proc.stderr.readline()
            assert line, seen
            seen.add(STEP.sub("", line))
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert leftovers(rl) == before


def test_a_build_ends_while_another_runs(rl: RlRunner, rl_path: Path, rl_state: RlState,
                                         bb: str, tmp_path: Path) -> None:
    """A build's end does not wait for another's (its collection is skipped, not queued
    behind the running build's hold of the store)."""
    long_ctx = context(tmp_path, f"FROM {bb}\nRUN echo started-long; sleep 60\n", name="long")
    short_ctx = context(tmp_path, f"FROM {bb}\nRUN echo short > /s\n", name="short")
    proc = subprocess.Popen([str(rl_path), "build", str(long_ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **rl_state.env()}, start_new_session=True,
                            preexec_fn=support.as_foreground_job)
    try:
        assert proc.stderr is not None
        while STEP.sub("", line := proc.stderr.readline()) != "started-long\n":
            assert line
        image_id, _ = build(rl, short_ctx)  # done while the long one still runs
        assert proc.poll() is None
        assert file_in(rl, image_id, "/s") == "short\n"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_100000_file_context_reports_its_hashing_and_caches(rl: RlRunner, bb: str,
                                                              tmp_path: Path) -> None:
    """The issue's large context: the COPY step says how far its hashing got (a
    line every 25,000 files), the files all arrive, and the rebuild is a hit."""
    ctx = context(tmp_path, f"FROM {bb}\nCOPY tree /tree\nRUN find /tree -type f | wc -l\n")
    for d in range(100):
        sub = ctx / "tree" / f"d{d:02}"
        sub.mkdir(parents=True)
        for f in range(1000):
            (sub / f"f{f:03}").write_bytes(b"x")
    r = rl("build", "--progress=plain", ctx, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = plain(r.stderr)
    hashing = [ln for ln in lines if ln.startswith("hashing the context: ")]
    counts = [int(ln.split()[3]) for ln in hashing]  # entries: the files and their dirs
    assert len(counts) == 4 and all(25_000 * (i + 1) <= c < 25_000 * (i + 1) + 300
                                    for i, c in enumerate(counts)), hashing
    assert "100000" in lines  # find | wc -l in the RUN step
    _, again = build(rl, ctx)
    at = again.index("[2/3] COPY tree /tree")
    step = again[at:again.index("", at)]
    assert step[-1] == "CACHED" and "100000" not in again, step  # hashed again, not run
