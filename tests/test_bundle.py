"""The runtime's input (runtime/bundle.py) and its create/start gate (runtime/gate.py),
called as a library: no rl command, no supervisor, no record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import support
from rootless.errors import Conflict, InvalidArgument, NotRunning, RlError
from rootless.runtime import bundle, container, gate, idmap
from rootless.runtime.bundle import Extras, Ipv6, Storage
from rootless.runtime.spec import Capabilities, Mount, Namespace, Process, Root, Spec

# -- the bundle on disk ----------------------------------------------------------


def _extras() -> Extras:
    return Extras(storage=Storage("overlay", ["/s/init", "/s/l1"], "/s/diff", "/s/work"),
                  init=True, user="app:staff", ipv6=Ipv6("tap0", "fd00::100", 64, "fd00::2"))


def test_round_trip(tmp_path: Path) -> None:
    spec = Spec(process=Process(args=["sh", "-c", "true"], env=["A=1"], terminal=True),
                root=Root("rootfs", readonly=True), hostname="box",
                mounts=[Mount("/proc", "proc", "proc", ["nosuid"])],
                annotations={"org.example.owner": "me"})
    spec.linux.namespaces = [Namespace("pid"), Namespace("network", "/proc/1/ns/net")]
    bundle.write(str(tmp_path), spec, _extras())

    data = json.loads((tmp_path / "config.json").read_text())
    assert data["ociVersion"] == "1.1.0"
    assert data["process"]["args"] == ["sh", "-c", "true"]
    assert data["annotations"] == {
        "org.example.owner": "me",
        "run.rl.storage.driver": "overlay",
        "run.rl.storage.lower": '["/s/init", "/s/l1"]',
        "run.rl.storage.upper": "/s/diff",
        "run.rl.storage.work": "/s/work",
        "run.rl.init": "true",
        "run.rl.user": "app:staff",
        "run.rl.ipv6.interface": "tap0",
        "run.rl.ipv6.address": "fd00::100/64",
        "run.rl.ipv6.gateway": "fd00::2",
    }
    assert spec.annotations == {"org.example.owner": "me"}  # the caller's spec is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary file left

    loaded = bundle.load(str(tmp_path))
    assert loaded.extras == _extras()
    spec.root.path = str(tmp_path / "rootfs")  # relative to the bundle, as OCI says
    assert loaded.spec == spec


def test_no_extras_no_annotations(tmp_path: Path) -> None:
    bundle.write(str(tmp_path), Spec(process=Process(args=["true"]), root=Root("/r")))
    assert "annotations" not in json.loads((tmp_path / "config.json").read_text())
    assert bundle.load(str(tmp_path)).extras == Extras()


def test_rewrite_replaces_rl_annotations(tmp_path: Path) -> None:
    spec = Spec(process=Process(args=["true"]), root=Root("/r"),
                annotations={"run.rl.init": "true", "other": "kept"})
    bundle.write(str(tmp_path), spec, Extras(user="1000"))
    assert json.loads((tmp_path / "config.json").read_text())["annotations"] == {
        "other": "kept", "run.rl.user": "1000"}


def test_storage_drivers_are_the_overlay_ones() -> None:
    from fs.drivers import OVERLAYS

    assert bundle.STORAGE_DRIVERS == OVERLAYS


GOOD = {"ociVersion": "1.1.0", "process": {"args": ["true"]}, "root": {"path": "rootfs"}}


def _with(path: str, value: object) -> dict[str, object]:
    """GOOD with one value set, at a dotted path of the spec."""
    data = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return data


def _annotated(**ann: str) -> dict[str, object]:
    return {**GOOD, "annotations": {"run.rl." + k.replace("_", "."): v for k, v in ann.items()}}


@pytest.mark.parametrize(("text", "why"), [
    ("", "is empty"),
    ("{\"ociVersion\": ", "is not valid JSON"),
    ("[]", "is not a JSON object"),
    (json.dumps({"ociVersion": "1.1.0", "root": {"path": "r"}}), "is wrong: process is missing"),
    (json.dumps(_with("process.args", "true")), "is wrong: process.args is not a list"),
    (json.dumps(_with("process.args", [])), "is wrong: process.args is empty: there is no command"),
    (json.dumps(_with("process.terminal", "yes")),
     "is wrong: process.terminal is not true or false"),
    (json.dumps(_with("root.path", "")), "is wrong: root.path is empty"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "ociVersion"}),
     "is wrong: ociVersion is missing"),
    (json.dumps(_annotated(init="yes")),
     "is wrong: annotation run.rl.init is 'yes', not true or false"),
    (json.dumps(_annotated(storage_driver="overlay")),
     "is wrong: annotation run.rl.storage.lower is missing (given run.rl.storage.driver)"),
    (json.dumps(_annotated(storage_driver="btrfs", storage_lower='["/l"]',
                           storage_upper="/u", storage_work="/w")),
     "is wrong: annotation run.rl.storage.driver is 'btrfs', not one of overlay, fuse, "
     "fuse-overlayfs"),
    (json.dumps(_annotated(storage_driver="overlay", storage_lower="/l1:/l2",
                           storage_upper="/u", storage_work="/w")),
     "is wrong: annotation run.rl.storage.lower is not a JSON list of directories"),
    # Nested past json's recursion limit: a RecursionError, not a ValueError.
    (json.dumps(_annotated(storage_driver="overlay", storage_lower="[" * 100000,
                           storage_upper="/u", storage_work="/w")),
     "is wrong: annotation run.rl.storage.lower is not a JSON list of directories"),
    (json.dumps(_annotated(ipv6_interface="tap0", ipv6_address="10.0.2.100/24",
                           ipv6_gateway="fd00::2")),
     "is wrong: annotation run.rl.ipv6.address is '10.0.2.100/24', not an IPv6 "
     "address/prefix length"),
    (json.dumps(_annotated(future="x")),
     "is wrong: annotation run.rl.future is not one this runtime knows"),
])
def test_damaged_config_is_one_invalid_argument(tmp_path: Path, text: str, why: str) -> None:
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(InvalidArgument) as info:
        bundle.load(str(tmp_path))
    assert info.value.message == f"invalid bundle {tmp_path}: config.json {why}"
    assert info.value.exit_code == 125
    assert "\n" not in info.value.message


def test_missing_or_odd_config_json(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"config.json is missing$"):
        bundle.load(str(tmp_path))
    (tmp_path / "config.json").mkdir()
    with pytest.raises(InvalidArgument, match=r"config.json is not a regular file$"):
        bundle.load(str(tmp_path))
    (tmp_path / "config.json").rmdir()
    os.mkfifo(tmp_path / "config.json")  # must not hang the runtime
    with pytest.raises(InvalidArgument, match=r"config.json is not a regular file$"):
        bundle.load(str(tmp_path))


def test_runtime_imports_nothing_above_it() -> None:
    """runtime/ knows nothing of the engine, images, the netstack or click."""
    code = ("import sys; import rootless.runtime.container, rootless.runtime.bundle; "
            "print(' '.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True).stdout.split()
    above = [m for m in loaded if m.startswith(("rootless.engine", "rootless.image",
                                                 "rootless.cli", "netstack", "click", "rich"))]
    assert above == []


# -- the gate ----------------------------------------------------------------------

RELEASE = "import sys; from rootless.runtime import container; container.start(sys.argv[1])"


def test_gate_released_by_another_process(tmp_path: Path) -> None:
    fd = gate.make(str(tmp_path))
    assert (tmp_path / "exec.fifo").is_fifo()
    assert (tmp_path / "exec.fifo").stat().st_mode & 0o777 == 0o600
    subprocess.run([sys.executable, "-c", RELEASE, str(tmp_path)], check=True)
    assert not (tmp_path / "exec.fifo").exists()
    gate.wait(fd)  # the byte waited in the FIFO for its reader
    with pytest.raises(Conflict, match="it has no gate"):
        container.start(str(tmp_path))


def test_gate_nobody_waits_at(tmp_path: Path) -> None:
    os.close(gate.make(str(tmp_path)))
    with pytest.raises(NotRunning, match="its process died before it was started"):
        container.start(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_launched_container_has_no_gate(tmp_path: Path) -> None:
    """rl's own launch starts what it creates: no gate to find, none to open."""
    with pytest.raises(Conflict, match="it has no gate"):
        container.start(str(tmp_path))


def test_stale_gate_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "exec.fifo").write_text("left by a killed creator")
    fd = gate.make(str(tmp_path))
    try:
        assert (tmp_path / "exec.fifo").is_fifo()
    finally:
        os.close(fd)


# -- a container created by one process, started by another ------------------------

# A child subreaper (so the container's PID 1 is its child once the creator
# exits) forks the creator; the creator creates the container detached and
# exits; the reaper says so with PID 1's pid, then reports how PID 1 ended.
AGENT = r"""
import os, sys
from rootless import syscalls as sc
from rootless.runtime import bundle, container, idmap
bundle_dir, state_dir = sys.argv[1:3]
sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
r, w = os.pipe()
creator = os.fork()
if creator == 0:
    os.close(r)
    try:
        b = bundle.load(bundle_dir)
        linux = b.spec.linux
        plan = idmap.plan_for(idmap.plan().mode, linux.uid_mappings, linux.gid_mappings)
        created = container.create(b, plan, state_dir, devnull_stdin=True, detached=True)
        os.write(w, str(created.launched.pid).encode())
    except BaseException as e:
        os.write(w, f"error {e}".encode())
    os._exit(0)
os.close(w)
said = os.read(r, 200).decode()
os.waitpid(creator, 0)
print("created", said, flush=True)
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    print("ended", pid, container.exit_code(status), flush=True)
"""


def _spec(rootfs: Path, args: list[str]) -> Spec:
    plan = idmap.plan()
    spec = Spec(process=Process(args=args, env=["PATH=/bin"]), root=Root(str(rootfs)),
                hostname="gated", mounts=[
                    Mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
                    Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "mode=755", "size=1024k"]),
                    Mount("/dev/null", "bind", "/dev/null", ["bind", "nosuid", "noexec"])])
    spec.linux.namespaces = [Namespace(t) for t in ("pid", "mount", "ipc", "uts", "user")]
    spec.linux.uid_mappings = plan.uid_mappings
    spec.linux.gid_mappings = plan.gid_mappings
    spec.linux.masked_paths = ["/proc/kcore"]
    spec.linux.readonly_paths = ["/proc/sys"]
    return spec


class _Created:
    """The agent, and the pid of the PID 1 it created (the creator has exited)."""

    def __init__(self, rootfs: Path, tmp_path: Path, args: list[str]) -> None:
        self.bundle_dir, self.state_dir = tmp_path / "bundle", tmp_path / "state"
        self.state_dir.mkdir(mode=0o700)
        bundle.write(str(self.bundle_dir), _spec(rootfs, args))
        self.agent = subprocess.Popen(
            [sys.executable, "-c", AGENT, str(self.bundle_dir), str(self.state_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.agent.stdout is not None
        word, _, said = self.agent.stdout.readline().strip().partition(" ")
        assert word == "created" and said.isdigit(), said
        self.pid = int(said)

    def ended(self) -> list[str]:
        out, err = self.agent.communicate(timeout=30)
        assert self.agent.returncode == 0, err
        return out.splitlines()

    def close(self) -> None:
        if self.agent.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.agent.communicate(timeout=30)


def _executed(pid: int) -> bool:
    """Whether pid runs the command already (its name is no longer the runtime's)."""
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip() in ("sh", "ls")


def test_created_runs_only_once_started_by_another_process(
        fresh_rootfs: Path, tmp_path: Path) -> None:
    support.require_userns()
    marker = fresh_rootfs / "marker"
    run = _Created(fresh_rootfs, tmp_path, ["sh", "-c", "ls /proc/self/fd > /marker"])
    try:
        time.sleep(0.3)
        assert not marker.exists()  # set up, its creator gone: it waits
        assert not _executed(run.pid)
        gate_path = run.state_dir / "exec.fifo"
        assert gate_path.is_fifo()
        assert fresh_rootfs not in gate_path.parents  # outside the container's root

        subprocess.run([sys.executable, "-c", RELEASE, str(run.state_dir)], check=True)
        assert run.ended() == [f"ended {run.pid} 0"]
    finally:
        run.close()
    # The command holds nothing of the runtime's: only stdio and ls's own directory.
    assert set(marker.read_text().split()) <= {"0", "1", "2", "3"}
    assert list(run.state_dir.iterdir()) == []


def test_killed_at_the_gate_leaves_nothing(fresh_rootfs: Path, tmp_path: Path) -> None:
    support.require_userns()
    run = _Created(fresh_rootfs, tmp_path, ["sh", "-c", "echo ran > /marker"])
    try:
        assert not _executed(run.pid)
        os.kill(run.pid, signal.SIGKILL)
        assert run.ended() == [f"ended {run.pid} 137"]
    finally:
        run.close()
    assert not os.path.exists(f"/proc/{run.pid}")
    with pytest.raises(NotRunning, match="its process died before it was started"):
        container.start(str(run.state_dir))
    assert list(run.state_dir.iterdir()) == []
    assert not (fresh_rootfs / "marker").exists()


def test_failure_before_the_gate_is_the_creators(fresh_rootfs: Path, tmp_path: Path) -> None:
    """An error in the set-up (here an unknown user) is reported by create, not start."""
    support.require_userns()
    b = bundle.Bundle(_spec(fresh_rootfs, ["true"]), Extras(user="nosuchuser"))
    plan = idmap.plan_for(idmap.plan().mode, b.spec.linux.uid_mappings,
                          b.spec.linux.gid_mappings)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    with pytest.raises(RlError) as info:
        container.create(b, plan, str(state_dir), devnull_stdin=True, detached=True)
    assert info.value.message.startswith("unable to find user nosuchuser")
    assert info.value.exit_code == 126
    assert list(state_dir.iterdir()) == []  # no gate left


def test_detached_fuse_root_is_refused(tmp_path: Path) -> None:
    b = bundle.Bundle(Spec(process=Process(args=["true"]), root=Root(str(tmp_path))),
                      Extras(storage=Storage("fuse", ["/l"], "/u", "/w")))
    plan = idmap.plan()
    with pytest.raises(InvalidArgument, match="dies with its creator"):
        container.create(b, plan, str(tmp_path), devnull_stdin=True, detached=True)


def test_a_record_makes_a_valid_bundle(rootfs: Path, tmp_path: Path) -> None:
    """What the supervisor hands the runtime for a record is a bundle that survives disk."""
    from rootless.engine import store, supervisor
    from rootless.runtime import capabilities, seccomp

    cfg = store.ContainerConfig(
        id="c" * 64, name="n", created=0.0, spec=_spec(rootfs, ["true"]), image="img",
        rootfs=str(rootfs), user="1000:1000", init=True, network="slirp4netns",
        net={"mode": "slirp4netns", "enable_ipv6": True}, storage_driver="overlay",
        layers=["/s/init", "/s/l1"], upper="/s/diff", work="/s/work")
    caps = capabilities.resolve([], [])
    cfg.spec.process.capabilities = Capabilities(bounding=caps, effective=caps, permitted=caps)
    cfg.spec.linux.seccomp = seccomp.default_profile(caps)
    b = supervisor.bundle_of(cfg)
    assert b.spec is cfg.spec
    assert b.extras == Extras(
        storage=Storage("overlay", ["/s/init", "/s/l1"], "/s/diff", "/s/work"), init=True,
        user="1000:1000", ipv6=Ipv6("tap0", "fd00::100", 64, "fd00::2"))
    bundle.write(str(tmp_path), b.spec, b.extras)
    assert bundle.load(str(tmp_path)) == b

    cfg.storage_driver, cfg.net, cfg.init, cfg.user = "vfs", {"mode": "none"}, False, ""
    assert supervisor.bundle_of(cfg).extras == Extras()

