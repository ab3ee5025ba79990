"""The bundle loader (runtime/bundle.py) on configs shaped as the OCI runtime spec's
config.md and config-linux.md describe them: every section the spec's examples
use loads into rl's typed spec (unknown properties ignored, as "Extensibility"
asks), and a wrong one is refused with one line naming the field's JSON path.
The configs are this project's own, with the spec's field shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rootless.errors import InvalidArgument
from rootless.runtime import bundle
from rootless.runtime.bundle import Bundle


def _full() -> dict[str, Any]:
    """A config using every section of config.md and config-linux.md."""
    return {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": True,
            "consoleSize": {"height": 40, "width": 132},
            "user": {"uid": 7, "gid": 8, "umask": 0o027, "additionalGids": [9, 10]},
            "args": ["/bin/app", "--serve"],
            "env": ["PATH=/bin", "MODE=test"],
            "cwd": "/srv",
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL"],
                             "permitted": ["CAP_CHOWN", "CAP_KILL"], "inheritable": [],
                             "ambient": ["CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 2048},
                        {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}],
            "noNewPrivileges": True,
            # Platform properties rl does not apply: loaded, not refused.
            "apparmorProfile": "some_profile", "oomScoreAdj": 50,
            "selinuxLabel": "system_u:system_r:container_t:s0:c1,c2",
            "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 3},
            "scheduler": {"policy": "SCHED_OTHER", "nice": 5},
            "execCPUAffinity": {"initial": "0", "final": "0-1"},
        },
        "root": {"path": "fs", "readonly": True},
        "hostname": "box",
        "domainname": "box.example",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": "/srv/data",
             "options": ["rbind", "ro"],
             "uidMappings": [{"containerID": 0, "hostID": 2000, "size": 10}],
             "gidMappings": [{"containerID": 0, "hostID": 2000, "size": 10}]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "size=1m"]},
        ],
        "hooks": {
            "prestart": [{"path": "/usr/libexec/a", "args": ["a", "1"], "env": ["K=v"]}],
            "createRuntime": [{"path": "/usr/libexec/b", "timeout": 3}],
            "createContainer": [{"path": "/usr/libexec/c"}],
            "startContainer": [{"path": "/bin/d"}],
            "poststart": [{"path": "/usr/libexec/e", "timeout": 1}],
            "poststop": [{"path": "/usr/libexec/f", "args": ["f", "-x"]},
                         {"path": "/usr/libexec/g"}],
        },
        "annotations": {"org.example.key": "value", "org.example.empty": ""},
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/n1"},
                           {"type": "mount"}, {"type": "ipc"}, {"type": "uts"},
                           {"type": "user"}, {"type": "cgroup"}],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                         "fileMode": 0o666, "uid": 0, "gid": 0}],
            "netDevices": {"eth7": {"name": "eth0"}},
            "cgroupsPath": "/tenant/box",
            "resources": {
                "devices": [{"allow": False, "access": "rwm"},
                            {"allow": True, "type": "c", "major": 10, "minor": 229,
                             "access": "rw"}],
                "memory": {"limit": 256 << 20, "reservation": 128 << 20, "swap": 512 << 20,
                           "kernel": -1, "kernelTCP": -1, "swappiness": 0,
                           "disableOOMKiller": False, "useHierarchy": True,
                           "checkBeforeUpdate": True},
                "cpu": {"shares": 512, "quota": 20000, "burst": 1000, "period": 100000,
                        "realtimeRuntime": 0, "realtimePeriod": 0, "cpus": "0-1",
                        "mems": "0", "idle": 0},
                "blockIO": {"weight": 300, "leafWeight": 0,
                            "weightDevice": [{"major": 8, "minor": 0, "weight": 400}],
                            "throttleReadBpsDevice": [{"major": 8, "minor": 0,
                                                       "rate": 1 << 20}],
                            "throttleWriteIOPSDevice": [{"major": 8, "minor": 16,
                                                         "rate": 50}]},
                "hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 30},
                                   {"pageSize": "1GB", "limit": 0}],
                "network": {"classID": 7, "priorities": [{"name": "eth0", "priority": 9}]},
                "pids": {"limit": 64},
                "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
                "unified": {"memory.high": "200M", "io.weight": "default 200"},
            },
            "intelRdt": {"closID": "c1", "l3CacheSchema": "L3:0=ff"},
            "memoryPolicy": {"mode": "MPOL_INTERLEAVE", "nodes": "0"},
            "sysctl": {"net.ipv4.ip_forward": "0", "kernel.msgmax": "8192"},
            "seccomp": {
                "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls": [
                    {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                    {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
                     "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0,
                               "op": "SCMP_CMP_MASKED_EQ"}]},
                ],
            },
            "rootfsPropagation": "rslave",
            "maskedPaths": ["/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys"],
            "mountLabel": "system_u:object_r:container_file_t:s0",
            "personality": {"domain": "LINUX"},
            "timeOffsets": {"monotonic": {"secs": 1, "nanosecs": 0}},
        },
        # Other platforms' sections and a property from the future: ignored.
        "windows": {"layerFolders": ["C:\\l"]},
        "vm": {"kernel": {"path": "/k"}},
        "org.example.future": {"anything": [1, 2]},
    }


def _load(tmp_path: Path, data: Any) -> Bundle:
    (tmp_path / "config.json").write_text(json.dumps(data))
    return bundle.load(str(tmp_path))


def test_a_config_using_every_section_loads_into_the_typed_spec(tmp_path: Path) -> None:
    spec = _load(tmp_path, _full()).spec
    p = spec.process
    assert (p.args, p.cwd, p.terminal, p.no_new_privileges) == (
        ["/bin/app", "--serve"], "/srv", True, True)
    assert p.console_size is not None and (p.console_size.height, p.console_size.width) == (
        40, 132)
    assert (p.user.uid, p.user.gid, p.user.umask, p.user.additional_gids) == (7, 8, 0o027,
                                                                             [9, 10])
    assert p.capabilities.ambient == ["CAP_KILL"] and p.capabilities.inheritable == []
    assert [(r.type, r.soft, r.hard) for r in p.rlimits] == [("RLIMIT_NOFILE", 2048, 4096),
                                                            ("RLIMIT_CORE", 0, 0)]
    assert spec.root.path == str(tmp_path / "fs") and spec.root.readonly  # bundle-relative
    assert spec.hostname == "box" and spec.oci_version == "1.2.0"
    assert [(m.destination, m.type, m.options) for m in spec.mounts][1] == (
        "/data", "bind", ["rbind", "ro"])
    assert spec.annotations == {"org.example.key": "value", "org.example.empty": ""}
    h = spec.hooks
    assert h is not None
    assert (h.prestart[0].path, h.prestart[0].args, h.prestart[0].env) == (
        "/usr/libexec/a", ["a", "1"], ["K=v"])
    assert h.create_runtime[0].timeout == 3 and h.poststart[0].timeout == 1
    assert [x.path for x in h.poststop] == ["/usr/libexec/f", "/usr/libexec/g"]
    assert (h.create_container[0].path, h.start_container[0].path) == ("/usr/libexec/c",
                                                                      "/bin/d")
    lx = spec.linux
    assert [(n.type, n.path) for n in lx.namespaces][:2] == [("pid", None),
                                                             ("network", "/run/netns/n1")]
    assert [(m.container_id, m.host_id, m.size) for m in lx.uid_mappings] == [
        (0, 100000, 65536)]
    assert lx.cgroups_path == "/tenant/box"
    assert lx.sysctl == {"net.ipv4.ip_forward": "0", "kernel.msgmax": "8192"}
    assert lx.masked_paths == ["/proc/kcore", "/sys/firmware"]
    assert lx.readonly_paths == ["/proc/sys"]
    sc = lx.seccomp
    assert sc is not None and (sc.default_action, sc.default_errno_ret) == ("SCMP_ACT_ERRNO", 1)
    assert sc.syscalls[2].errno_ret == 38
    assert (sc.syscalls[2].args[0].op, sc.syscalls[2].args[0].value) == (
        "SCMP_CMP_MASKED_EQ", 0x7E020000)
    r = lx.resources
    assert r is not None and r.memory is not None and r.cpu is not None
    assert (r.memory.limit, r.memory.reservation, r.memory.swap, r.memory.kernel_tcp) == (
        256 << 20, 128 << 20, 512 << 20, -1)
    assert r.memory.disable_oom_killer is False and r.memory.check_before_update is True
    assert (r.cpu.shares, r.cpu.quota, r.cpu.period, r.cpu.cpus, r.cpu.burst) == (
        512, 20000, 100000, "0-1", 1000)
    assert r.pids is not None and r.pids.limit == 64
    assert r.block_io is not None and r.block_io.weight == 300
    assert [(d.major, d.minor, d.rate) for d in r.block_io.throttle_read_bps_device] == [
        (8, 0, 1 << 20)]
    assert [(d.major, d.minor, d.rate) for d in r.block_io.throttle_write_iops_device] == [
        (8, 16, 50)]
    assert [(x.page_size, x.limit) for x in r.hugepage_limits] == [("2MB", 1 << 30),
                                                                  ("1GB", 0)]
    assert r.unified == {"memory.high": "200M", "io.weight": "default 200"}
    assert [(d.allow, d.access) for d in r.devices] == [(False, "rwm"), (True, "rw")]
    assert r.rdma == {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}}


def test_the_resources_become_rls_limits(tmp_path: Path) -> None:
    """What the cgroup code is given (rl's Resources, the files written as they are)."""
    from rootless.runtime import resources

    data = _full()
    data["linux"]["resources"].pop("network")
    data["linux"]["resources"].pop("rdma")
    spec = _load(tmp_path, data).spec
    assert spec.linux.resources is not None
    res, files = resources.from_oci(spec.linux.resources)
    assert (res.memory, res.memory_reservation, res.memory_swap) == (256 << 20, 128 << 20,
                                                                     512 << 20)
    assert (res.cpu_shares, res.cpu_quota, res.cpu_period, res.cpuset_cpus) == (
        512, 20000, 100000, "0-1")
    assert res.pids_limit == 64 and res.blkio_weight == 300
    assert [(t.major, t.minor, t.rate) for t in res.device_write_iops] == [(8, 16, 50)]
    assert files == {"cpu.max.burst": "1000", "cpu.idle": "0", "hugetlb.2MB.max": str(1 << 30),
                     "hugetlb.1GB.max": "0", "memory.high": "200M",
                     "io.weight": "default 200"}
    assert resources.controllers_of(res, files) == {"memory", "cpu", "cpuset", "pids", "io",
                                                    "hugetlb"}


def test_the_smallest_config_loads(tmp_path: Path) -> None:
    spec = _load(tmp_path, {"ociVersion": "1.0.0", "process": {"args": ["sh"]},
                            "root": {"path": "rootfs"},
                            "linux": {"namespaces": [{"type": "pid"}]}}).spec
    assert spec.process.cwd == "/" and spec.hooks is None and spec.linux.resources is None
    assert [n.type for n in spec.linux.namespaces] == ["pid"]


def _set(path: str, value: Any) -> dict[str, Any]:
    """_full() with value at a dotted path (a number is a list index); None deletes."""
    data = _full()
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(last) if last.isdigit() else last
    if value is None:
        del node[key]
    else:
        node[key] = value
    return data


@pytest.mark.parametrize(("path", "value", "why"), [
    ("root", None, "root is missing"),
    ("process.user.uid", "7", "process.user.uid is not an integer"),
    ("process.user.additionalGids", [1, "2"], "process.user.additionalGids[1] is not an "
     "integer"),
    ("process.env", "PATH=/bin", "process.env is not a list"),
    ("process.rlimits.0.hard", None, "process.rlimits[0].hard is missing"),
    ("process.capabilities.bounding", {"CAP_KILL": True}, "process.capabilities.bounding is "
     "not a list"),
    ("process.consoleSize.width", 80.5, "process.consoleSize.width is not an integer"),
    ("process.noNewPrivileges", 1, "process.noNewPrivileges is not true or false"),
    ("mounts.1.destination", None, "mounts[1].destination is missing"),
    ("mounts.2.options", "nosuid", "mounts[2].options is not a list"),
    ("annotations.org.example.key", 3, None),  # (a dotted key: set below)
    ("linux.namespaces.0.type", None, "linux.namespaces[0].type is missing"),
    ("linux.namespaces.2.type", "pid", "linux.namespaces[2].type: the pid namespace is given "
     "twice"),
    ("linux.namespaces.3.type", "mnt", "linux.namespaces[3].type 'mnt' is not a namespace "
     "type"),
    ("linux.namespaces.4.type", "time", "linux.namespaces[4].type 'time': time namespaces "
     "are not supported"),
    ("linux.uidMappings.0.containerID", "0", "linux.uidMappings[0].containerID is not an "
     "integer"),
    ("linux.gidMappings.0.size", None, "linux.gidMappings[0].size is missing"),
    ("linux.sysctl.kernel.msgmax", None, None),
    ("linux.cgroupsPath", 5, "linux.cgroupsPath is not a string"),
    ("linux.resources.memory.limit", "256M", "linux.resources.memory.limit is not an integer"),
    ("linux.resources.cpu.cpus", [0, 1], "linux.resources.cpu.cpus is not a string"),
    ("linux.resources.pids.limit", None, "linux.resources.pids.limit is missing"),
    ("linux.resources.blockIO.weightDevice.0.major", None,
     "linux.resources.blockIO.weightDevice[0].major is missing"),
    ("linux.resources.blockIO.throttleReadBpsDevice.0.rate", "1M",
     "linux.resources.blockIO.throttleReadBpsDevice[0].rate is not an integer"),
    ("linux.resources.hugepageLimits.0.pageSize", None,
     "linux.resources.hugepageLimits[0].pageSize is missing"),
    ("linux.resources.unified", {"memory.high": 200}, "linux.resources.unified['memory.high'] "
     "is not a string"),
    ("linux.resources.devices.0.allow", "no", "linux.resources.devices[0].allow is not true "
     "or false"),
    ("linux.seccomp.defaultAction", None, "linux.seccomp.defaultAction is missing"),
    ("linux.seccomp.syscalls.1.names", None, "linux.seccomp.syscalls[1].names is missing"),
    ("linux.seccomp.syscalls.2.args.0.value", "0x7E020000",
     "linux.seccomp.syscalls[2].args[0].value is not an integer"),
    ("hooks.prestart.0.path", "usr/libexec/a", "hooks.prestart[0].path 'usr/libexec/a' is not "
     "an absolute path"),
    ("hooks.createRuntime.0.timeout", 0, "hooks.createRuntime[0].timeout is 0: it must be "
     "greater than zero"),
    ("hooks.createRuntime.0.timeout", -2, "hooks.createRuntime[0].timeout is -2"),
    ("hooks.poststart.0.timeout", "1", "hooks.poststart[0].timeout is not an integer"),
    ("hooks.poststop.1.path", None, "hooks.poststop[1].path is missing"),
    ("hooks.prestart.0.env", ["K"], "hooks.prestart[0].env 'K' is not KEY=value"),
    ("hooks.startContainer", {"path": "/bin/d"}, "hooks.startContainer is not a list"),
    ("hooks", [], "hooks is not an object"),
])
def test_a_wrong_field_is_refused_by_its_path(tmp_path: Path, path: str, value: Any,
                                              why: str | None) -> None:
    if path.startswith("annotations."):
        data = _full()
        data["annotations"]["org.example.key"] = value
        why = "annotations['org.example.key'] is not a string"
    elif path.startswith("linux.sysctl."):
        data = _full()
        data["linux"]["sysctl"]["kernel.msgmax"] = 8192
        why = "linux.sysctl['kernel.msgmax'] is not a string"
    else:
        data = _set(path, value)
    with pytest.raises(InvalidArgument) as info:
        _load(tmp_path, data)
    msg = info.value.message
    assert msg.startswith(f"invalid bundle {tmp_path}: config.json is wrong: {why}"), msg
    assert "\n" not in msg and info.value.exit_code == 125
