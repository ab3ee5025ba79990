"""`rl info`: what the kernel and the host offer, and which choices rl made from it."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any

from . import idmap, paths


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
    mounts = _read("/proc/self/mounts") or ""
    v2_root = next((ln.split()[1] for ln in mounts.splitlines() if ln.split()[2:3] == ["cgroup2"]),
                   None)
    v1 = any(ln.split()[2:3] == ["cgroup"] for ln in mounts.splitlines())
    version = "v2" if v2_root and not v1 else ("hybrid" if v2_root else "v1")
    own = (_read("/proc/self/cgroup") or "").splitlines()
    v2_path = next((ln.split(":", 2)[2] for ln in own if ln.startswith("0::")), None)
    controllers: list[str] = []
    delegated = False
    if v2_root and v2_path is not None:
        here = os.path.join(v2_root, v2_path.lstrip("/"))
        controllers = (_read(os.path.join(here, "cgroup.controllers")) or "").split()
        delegated = os.access(os.path.join(here, "cgroup.subtree_control"), os.W_OK) and \
            os.access(os.path.join(here, "cgroup.procs"), os.W_OK)
    return {"version": version, "v2_mount": v2_root, "own_cgroup": v2_path,
            "controllers": controllers, "delegated": delegated}


def _fuse() -> dict[str, Any]:
    ok = os.access("/dev/fuse", os.R_OK | os.W_OK)
    filesystems = _read("/proc/filesystems") or ""
    return {"dev_fuse": ok, "kernel_fuse": "fuse" in filesystems.split(),
            "overlay": "overlay" in filesystems.split(),
            "fuse_overlayfs": shutil.which("fuse-overlayfs")}


def _storage() -> dict[str, Any]:
    # fs/ owns the storage drivers; the probe mounts a tiny overlay in a throwaway userns
    from fs import drivers

    choice = drivers.detect_default()
    return {"default_driver": choice.driver, "reason": choice.reason,
            "drivers": list(drivers.DRIVERS)}


def gather() -> dict[str, Any]:
    plan = idmap.plan()
    from . import api

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
            "newuidmap": shutil.which("newuidmap"),
            "newgidmap": shutil.which("newgidmap"),
        },
        "fuse": _fuse(),
        "storage": _storage(),
        "cgroups": _cgroups(),
        "network": {
            "default": api.DEFAULT_NETWORK,
            "slirp4netns": shutil.which("slirp4netns"),
            "pasta": shutil.which("pasta"),
            "dev_net_tun": os.access("/dev/net/tun", os.R_OK | os.W_OK),
        },
        "store": {
            "runtime_dir": str(paths.runtime_dir()),
            "data_dir": str(paths.data_dir()),
            "containers": len(list(paths.containers_dir().glob("[0-9a-f]*"))),
        },
    }


def render(data: dict[str, Any], indent: int = 0) -> str:
    """Nested dict as indented 'key: value' lines (podman info's shape)."""
    out = []
    for key, value in data.items():
        pad = "  " * indent
        if isinstance(value, dict):
            out.append(f"{pad}{key}:\n{render(value, indent + 1)}")
        elif isinstance(value, list):
            items = ", ".join(":".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
                              for v in value)
            out.append(f"{pad}{key}: [{items}]\n")
        else:
            out.append(f"{pad}{key}: {'' if value is None else value}\n")
    return "".join(out)
