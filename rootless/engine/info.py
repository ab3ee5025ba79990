"""`rl info`: what the kernel and the host offer, and which choices rl made from it."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any

from .. import paths
from ..defaults import DEFAULT_NETWORK
from ..image import rootfs
from ..runtime import cgroups, idmap
from . import store


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _userns() -> dict[str, Any]:
    out: dict[str, Any] = {
        "max_user_namespaces": _read("/proc/sys/user/max_user_namespaces"),
    }
    for key, path in (
        ("unprivileged_userns_clone", "/proc/sys/kernel/unprivileged_userns_clone"),
        ("apparmor_restrict_unprivileged_userns",
         "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
    ):
        value = _read(path)
        if value is not None:
            out[key] = value
    probe = subprocess.run(["unshare", "-U", "true"], capture_output=True, text=True) \
        if shutil.which("unshare") else None
    out["unprivileged"] = bool(probe and probe.returncode == 0)
    return out


def _cgroups() -> dict[str, Any]:
    host = cgroups.probe()
    try:
        mode = cgroups.mode_from_env()
    except Exception as e:
        mode = str(e)
    usable = host.base is not None and mode == "enabled"
    return {"version": host.version, "v2_mount": host.mount, "own_cgroup": host.own,
            "v1_controllers": host.v1_controllers, "controllers": host.controllers,
            "delegated": host.delegated, "base": host.base,
            "systemd_user_instance": host.systemd_user, "mode": mode,
            "limits": "enforced" if usable else
            ("disabled (RL_CGROUPS)" if mode != "enabled" else f"unavailable: {host.reason}")}


def _fuse() -> dict[str, Any]:
    ok = os.access("/dev/fuse", os.R_OK | os.W_OK)
    filesystems = _read("/proc/filesystems") or ""
    return {"dev_fuse": ok, "kernel_fuse": "fuse" in filesystems.split(),
            "overlay": "overlay" in filesystems.split(),
            "fuse_overlayfs": shutil.which("fuse-overlayfs")}


def _storage() -> dict[str, Any]:
    # The probe (fs.drivers.detect_default) mounts a tiny overlay in a throwaway
    # userns on the storage's own file system; rootfs.py caches its verdict per boot.
    from fs import drivers


    driver, reason = rootfs.default_driver()
    chosen = os.environ.get("RL_STORAGE_DRIVER")
    if chosen:
        driver, reason = rootfs.choose_driver(chosen), "RL_STORAGE_DRIVER is set"
    return {"default_driver": driver, "reason": reason, "drivers": list(drivers.DRIVERS),
            "root": str(rootfs.containers_root().parent)}


# What single-id mode cannot do, said where a user looks (docs/decisions.md).
SINGLE_ID_LIMITS = ("only the container's root is mapped (to you): an image's other users "
                    "(USER, -u, apt's _apt, nobody) cannot be switched to and setgroups is "
                    "denied, so apt-get update fails; ask for a range in /etc/subuid and "
                    "/etc/subgid")


def _cdi() -> dict[str, Any]:
    """The CDI spec directories and the devices they define (engine/cdi.py)."""
    from . import cdi

    warnings: list[str] = []
    found = cdi.registry(warnings.append)
    return {"spec_dirs": cdi.spec_dirs(), "devices": sorted(found),
            **({"warnings": warnings} if warnings else {})}


def gather() -> dict[str, Any]:
    plan = idmap.plan()

    return {
        "host": {
            "kernel": platform.release(),
            "arch": platform.machine(),
            "uid": os.getuid(),
            "rootless": os.geteuid() != 0,
        },
        "userns": _userns(),
        "idmap": {
            "mode": plan.mode,
            "reason": plan.reason,
            "uid_map": [f"{m.container_id}:{m.host_id}:{m.size}" for m in plan.uid_mappings],
            "gid_map": [f"{m.container_id}:{m.host_id}:{m.size}" for m in plan.gid_mappings],
            "subuid": idmap.subordinate_ranges("/etc/subuid"),
            "subgid": idmap.subordinate_ranges("/etc/subgid"),
            **({"limits": SINGLE_ID_LIMITS} if plan.mode == "single" else {}),
            "newuidmap": shutil.which("newuidmap"),
            "newgidmap": shutil.which("newgidmap"),
        },
        "fuse": _fuse(),
        "storage": _storage(),
        "cgroups": _cgroups(),
        "network": {
            "default": DEFAULT_NETWORK,
            "slirp4netns": shutil.which("slirp4netns"),
            "pasta": shutil.which("pasta"),
            "dev_net_tun": os.access("/dev/net/tun", os.R_OK | os.W_OK),
        },
        "cdi": _cdi(),
        "store": {
            "runtime_dir": str(paths.runtime_dir()),
            "data_dir": str(paths.data_dir()),
            "containers": len(store.all_containers()),  # records, not containers.lock
        },
    }

