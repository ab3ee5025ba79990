"""rl-oci and a config's linux.resources on a host that delegates no cgroup v2
controller to the user (this one: a v1/v2 hybrid). The limits are refused naming
the field and the reason, or, with run.rl.cgroups=disabled, ignored with a
warning; the delegated case runs in the cgroup v2 guest (tests/guest)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_oci
from test_oci import RlOci, error_line

import support

rl_oci_path, root, oci, bundle = (test_oci.rl_oci_path, test_oci.root, test_oci.oci,
                                  test_oci.bundle)


@pytest.fixture(scope="module")
def no_delegation() -> None:
    from rootless.runtime import cgroups

    host = cgroups.probe()
    support.require(host.base is None or "memory" not in host.controllers,
                    "this host delegates a memory controller: the refusal cannot be shown")


def _set(b: Path, resources: dict[str, Any] | None, **top: Any) -> None:
    cfg = json.loads((b / "config.json").read_text())
    if resources is not None:
        cfg["linux"]["resources"] = resources
    cfg.update(top)
    (b / "config.json").write_text(json.dumps(cfg))


def test_limits_that_cannot_be_enforced_are_refused(
        no_delegation: None, oci: RlOci, bundle: Callable[..., Path]) -> None:
    b = bundle("true")
    for res, field in (({"memory": {"limit": 64 << 20}}, "linux.resources.memory"),
                       ({"pids": {"limit": 10}}, "linux.resources.pids"),
                       ({"cpu": {"quota": 50000, "period": 100000}}, "linux.resources.cpu"),
                       ({"unified": {"memory.high": "1G"}}, "linux.resources.unified")):
        _set(b, res)
        msg = error_line(oci("create", "-b", b, "r1"))
        assert msg.startswith(f"{field}: cannot be enforced: "), msg
        assert "run.rl.cgroups=disabled" in msg
    assert oci("list", "-q", check=True).stdout == ""


def test_disabled_cgroups_warn_and_run(no_delegation: None, oci: RlOci,
                                       bundle: Callable[..., Path]) -> None:
    b = bundle("sh", "-c", "echo ran; cat /proc/self/cgroup | grep -c .")
    _set(b, {"memory": {"limit": 64 << 20}, "pids": {"limit": 10}},
         annotations={"run.rl.cgroups": "disabled"})
    r = oci("run", "-b", b, "r2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ran\n")
    warning = [ln for ln in r.stderr.splitlines() if "level=warning" in ln]
    assert len(warning) == 1, r.stderr
    assert "linux.resources.memory, linux.resources.pids ignored" in warning[0]


def test_devices_and_a_bare_cgroups_path_run(oci: RlOci, bundle: Callable[..., Path]) -> None:
    """Device rules are runc's rootless no-op; a cgroupsPath without limits asks
    nothing that needs enforcing."""
    b = bundle("echo", "ok")
    cfg = json.loads((b / "config.json").read_text())
    cfg["linux"]["cgroupsPath"] = "/rl-oci-test/r3"
    cfg["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    (b / "config.json").write_text(json.dumps(cfg))
    r = oci("run", "-b", b, "r3")
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr


def test_settings_cgroup_v2_lacks_are_refused_by_name(oci: RlOci,
                                                      bundle: Callable[..., Path]) -> None:
    b = bundle("true")
    for res, want in (
            ({"memory": {"swappiness": 10}}, "linux.resources.memory.swappiness: cgroup v2 "
             "has no such setting"),
            ({"cpu": {"realtimeRuntime": 1000}}, "linux.resources.cpu.realtimeRuntime"),
            ({"unified": {"../x": "1"}}, "linux.resources.unified: '../x' is not a cgroup v2"),
            ({"unified": {"cgroup.procs": "1"}}, "linux.resources.unified: 'cgroup.procs'"),
            ({"hugepageLimits": [{"pageSize": "2 MB", "limit": 1}]},
             "linux.resources.hugepageLimits: pageSize '2 MB'"),
            ({"memory": {"limit": 1 << 30, "swap": 1 << 20}}, "linux.resources.memory.swap"),
            ({"memory": {"limit": "1G"}}, "linux.resources.memory.limit is not an integer"),
            ({"pids": {}}, "linux.resources.pids.limit is missing")):
        _set(b, res)
        assert want in error_line(oci("create", "-b", b, "r4")), res
    _set(b, {"memory": {"limit": 1 << 20}}, annotations={"run.rl.cgroups": "maybe"})
    assert "run.rl.cgroups is 'maybe'" in error_line(oci("create", "-b", b, "r4"))
