"""What rl-oci says about itself: `spec`'s default config.json and `features`' JSON."""

from __future__ import annotations

import os
from typing import Any

from .. import __version__
from ..runtime import capabilities, mounts, seccomp
from ..runtime import spec as oci
from ..runtime.spec import (
    Capabilities,
    IDMapping,
    Linux,
    Mount,
    Namespace,
    Process,
    Rlimit,
    Root,
    Spec,
)

# The capabilities an OCI runtime's default config grants (runc spec's set).
_SPEC_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_spec(rootless: bool) -> dict[str, Any]:
    """A config.json for a shell on a terminal in ./rootfs, as `runc spec` writes.

    --rootless: a user namespace mapping the caller as root, and /sys bound
    from the host (a fresh sysfs needs a network namespace of its own, which
    this config does not have) without a cgroup mount.
    """
    caps = list(_SPEC_CAPS)
    proc = Process(
        args=["sh"], env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                          "TERM=xterm"],
        cwd="/", terminal=True,
        capabilities=Capabilities(bounding=caps, effective=list(caps), permitted=list(caps),
                                  ambient=list(caps)),
        rlimits=[Rlimit("RLIMIT_NOFILE", 1024, 1024)], no_new_privileges=True)
    proc.user.umask = None
    ms = [
        Mount("/proc", "proc", "proc"),
        Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount("/dev/pts", "devpts", "devpts",
              ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
              + ([] if rootless else ["gid=5"])),
        Mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777",
                                            "size=65536k"]),
        Mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
    ]
    namespaces = [Namespace("pid"), Namespace("ipc"), Namespace("uts"), Namespace("mount")]
    linux = Linux(namespaces=namespaces)
    if rootless:
        ms.append(Mount("/sys", "none", "/sys", ["rbind", "nosuid", "noexec", "nodev", "ro"]))
        linux.namespaces.append(Namespace("user"))
        linux.uid_mappings = [IDMapping(0, os.getuid(), 1)]
        linux.gid_mappings = [IDMapping(0, os.getgid(), 1)]
    else:
        ms.append(Mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]))
        ms.append(Mount("/sys/fs/cgroup", "cgroup", "cgroup",
                        ["nosuid", "noexec", "nodev", "relatime", "ro"]))
        linux.namespaces.insert(1, Namespace("network"))
    spec = Spec(process=proc, root=Root("rootfs", readonly=True), hostname="rl-oci",
                mounts=ms, linux=linux)
    data: dict[str, Any] = oci.to_json(spec)
    data.pop("annotations", None)
    return data


def features() -> dict[str, Any]:
    """What this runtime supports, in the shape of runc's `features`."""
    options = sorted({*mounts._FLAGS, *mounts._PROPAGATION})
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": oci.OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": options,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": list(capabilities.CAP_NAMES),
            "cgroup": {"v1": False, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {
                "enabled": True,
                "actions": sorted([*seccomp._RETURNS, "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"]),
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                              "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": sorted(seccomp._AUDIT_ARCH),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {
            "run.rl.version": __version__,
            # No systemd cgroup manager: --systemd-cgroup is accepted and ignored.
            "run.rl.systemd-cgroup": "unsupported: --systemd-cgroup is accepted and ignored",
            "run.rl.cgroups": "v2 where delegated to the user; elsewhere linux.resources "
                              "are refused (annotation run.rl.cgroups=disabled: ignored)",
        },
    }
