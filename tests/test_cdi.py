"""CDI devices (issue 18): `--device vendor.com/class=name` through specs in the CDI
directories — here the user's own ($XDG_CONFIG_HOME/cdi), with specs describing ordinary
devices, since no GPU is on these machines: their device nodes, mounts, environment and
hooks reach the container; a damaged spec is a warning and the others still count."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import support
from support import RlRunner, RlState

pytestmark = pytest.mark.usefixtures("userns")


@pytest.fixture(scope="module")
def userns() -> None:
    support.require_userns()


@pytest.fixture()
def cdi_dir(rl_state: RlState, tmp_path: Path) -> Iterator[Path]:
    d = rl_state.config_home / "cdi"
    d.mkdir(exist_ok=True)
    lib = tmp_path / "libvendor.so.1"
    lib.write_text("vendor library\n")
    lib.chmod(0o644)
    tmp_path.chmod(0o755)
    (d / "example.json").write_text(json.dumps({
        "cdiVersion": "0.6.0",
        "kind": "example.com/dev",
        "containerEdits": {  # once, for any of its devices
            "env": ["CDI_COMMON=1"],
            "mounts": [{"hostPath": str(lib), "containerPath": "/usr/lib/libvendor.so.1",
                        "options": ["ro", "nosuid", "nodev", "bind"]}],
        },
        "devices": [
            {"name": "zero", "containerEdits": {
                "env": ["CDI_DEV=zero"],
                "deviceNodes": [{"path": "/dev/zz", "hostPath": "/dev/zero", "type": "c"}]}},
            {"name": "null", "containerEdits": {
                "deviceNodes": [{"path": "/dev/nn", "hostPath": "/dev/null"}]}},
        ],
    }))
    (d / "other.yaml").write_text(
        "cdiVersion: 0.6.0\nkind: example.com/yaml\ndevices:\n"
        "  - name: full\n    containerEdits:\n      deviceNodes:\n        - path: /dev/full\n"
        "      env: [FROM_YAML=yes]\n")
    try:
        yield d
    finally:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


def run(rl: RlRunner, rootfs: Path, script: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return rl("run", "--rm", *flags, "--rootfs", rootfs, "/bin/sh", "-c", script)


def test_a_cdi_device_brings_its_nodes_mounts_and_env(rl: RlRunner, rootfs: Path,
                                                      cdi_dir: Path) -> None:
    r = run(rl, rootfs, "test -c /dev/zz && head -c 3 /dev/zz | od -An -tx1; "
            "cat /usr/lib/libvendor.so.1; echo $CDI_COMMON $CDI_DEV; test -e /dev/nn || "
            "echo no-nn; echo x > /usr/lib/libvendor.so.1 2>/dev/null || echo ro",
            "--device", "example.com/dev=zero")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n") == [" 00 00 00", "vendor library", "1 zero", "no-nn", "ro", ""]


def test_all_and_yaml_and_several(rl: RlRunner, rootfs: Path, cdi_dir: Path) -> None:
    r = run(rl, rootfs, "ls /dev/zz /dev/nn; echo $CDI_DEV", "--device", "example.com/dev=all")
    assert r.returncode == 0 and r.stdout.split() == ["/dev/nn", "/dev/zz", "zero"], r
    r = run(rl, rootfs, "test -c /dev/full && echo $FROM_YAML $CDI_COMMON",
            "--device", "example.com/yaml=full", "--device", "example.com/dev=null")
    assert r.returncode == 0 and r.stdout.split() == ["yes", "1"], r
    info = json.loads(rl("info", "--format", "json", check=True).stdout)["cdi"]
    assert info["devices"] == ["example.com/dev=null", "example.com/dev=zero",
                               "example.com/yaml=full"]
    assert str(cdi_dir) in info["spec_dirs"]


def test_unknown_and_damaged_specs(rl: RlRunner, rootfs: Path, cdi_dir: Path) -> None:
    before = rl("ps", "-aq", check=True).stdout
    r = rl("run", "--rm", "--device", "example.com/dev=nosuch", "--rootfs", rootfs, "true")
    assert r.returncode == 125 and r.stderr.startswith("Error: "), r
    assert "unresolvable CDI devices example.com/dev=nosuch" in r.stderr
    assert "/etc/cdi" in r.stderr and str(cdi_dir) in r.stderr
    r = rl("run", "--rm", "--device", "example.com/bad kind=x", "--rootfs", rootfs, "true")
    assert r.returncode == 125 and "invalid CDI device name" in r.stderr
    assert rl("ps", "-aq", check=True).stdout == before  # nothing created
    # a damaged spec: one warning naming the file and the field; the others still work
    (cdi_dir / "broken.json").write_text(json.dumps({
        "cdiVersion": "0.6.0", "kind": "example.com/broken",
        "devices": [{"name": "b", "containerEdits": {"deviceNodes": [{"path": "dev/rel"}]}}]}))
    (cdi_dir / "garbage.json").write_text("{not json")
    r = run(rl, rootfs, "test -c /dev/zz", "--device", "example.com/dev=zero")
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if "CDI spec" in ln]
    assert len(warnings) == 2, r.stderr
    assert any("broken.json" in w and "devices[0].containerEdits.deviceNodes[0].path" in w
               for w in warnings)
    assert any("garbage.json" in w for w in warnings)
    assert not any("Traceback" in ln for ln in r.stderr.splitlines())


def test_a_cdi_hook_runs_at_its_point(rl: RlRunner, rootfs: Path, cdi_dir: Path,
                                      tmp_path: Path) -> None:
    mark = tmp_path / "hooked"
    (cdi_dir / "hook.json").write_text(json.dumps({
        "cdiVersion": "0.6.0", "kind": "example.com/hook",
        "devices": [{"name": "h", "containerEdits": {"hooks": [{
            "hookName": "createRuntime", "path": "/bin/sh",
            "args": ["sh", "-c", f"cat > {mark}"]}]}}]}))
    r = run(rl, rootfs, "true", "--device", "example.com/hook=h")
    assert r.returncode == 0, r.stderr
    state = json.loads(mark.read_text())  # the OCI state on the hook's stdin
    assert state["status"] == "creating" and state["pid"] > 0
