"""User-namespace id maps: the subordinate-id mode and the single-id fallback.

Subordinate mode (the norm on a laptop): container 0 is the user, container
1..N are the user's /etc/subuid range, written by the setuid helpers
newuidmap/newgidmap. Single-id mode (LDAP/HPC machines without a range, or no
usable newuidmap): only container 0 exists and is the user; an unprivileged
process may write such a map itself once it has denied setgroups.

RL_IDMAP=single forces the fallback, RL_IDMAP=subuid refuses to fall back.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass

from ..errors import RlError
from .spec import IDMapping


@dataclass
class IdMapPlan:
    mode: str  # "subuid" | "single"
    reason: str
    uid_mappings: list[IDMapping]
    gid_mappings: list[IDMapping]
    newuidmap: str | None = None
    newgidmap: str | None = None
    warning: str | None = None  # a fallback the user should hear about


def _user_names() -> set[str]:
    names = {str(os.getuid())}
    try:
        names.add(pwd.getpwuid(os.getuid()).pw_name)
    except KeyError:
        pass
    return names


def subordinate_ranges(path: str) -> list[tuple[int, int]]:
    """This user's (start, count) ranges from /etc/subuid or /etc/subgid."""
    names = _user_names()
    ranges = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in names:
                    try:
                        start, count = int(parts[1]), int(parts[2])
                    except ValueError:
                        continue
                    if count > 0:
                        ranges.append((start, count))
    except OSError:
        pass
    return ranges


def _which(name: str) -> str | None:
    """shutil.which's answer for a plain name, without importing shutil (its
    compressors: several ms of each rl-oci create, which looks up newuidmap)."""
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(d or os.curdir, name)
        if os.access(path, os.F_OK | os.X_OK) and not os.path.isdir(path):
            return path
    return None


def _helper_usable(name: str) -> tuple[str | None, str]:
    path = _which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        return None, f"{name} is not installed (Debian package uidmap)"
    st = os.stat(path)
    setuid_root = bool(st.st_mode & stat.S_ISUID) and st.st_uid == 0
    try:
        has_fcaps = os.getxattr(path, "security.capability") != b""
    except OSError:
        has_fcaps = False
    if not (setuid_root or has_fcaps or os.geteuid() == 0):
        return None, f"{path} is neither setuid root nor has file capabilities"
    return path, ""


def _mappings(base: int, ranges: list[tuple[int, int]]) -> list[IDMapping]:
    maps = [IDMapping(container_id=0, host_id=base, size=1)]
    next_id = 1
    for start, count in ranges:
        maps.append(IDMapping(container_id=next_id, host_id=start, size=count))
        next_id += count
    return maps


def plan() -> IdMapPlan:
    uid, gid = os.getuid(), os.getgid()
    single = [IDMapping(0, uid, 1)], [IDMapping(0, gid, 1)]
    forced = os.environ.get("RL_IDMAP", "auto")
    if forced not in ("auto", "single", "subuid"):
        raise RlError(f"RL_IDMAP={forced}: expected auto, single or subuid")
    if forced == "single":
        return IdMapPlan("single", "RL_IDMAP=single", *single)
    reasons = []
    subuids = subordinate_ranges("/etc/subuid")
    subgids = subordinate_ranges("/etc/subgid")
    if not subuids:
        reasons.append("no range for this user in /etc/subuid")
    if not subgids:
        reasons.append("no range for this user in /etc/subgid")
    newuidmap, why_u = _helper_usable("newuidmap")
    newgidmap, why_g = _helper_usable("newgidmap")
    reasons += [r for r in (why_u, why_g) if r]
    if not reasons and newuidmap and newgidmap:
        return IdMapPlan(
            "subuid",
            "ranges from /etc/subuid and /etc/subgid via newuidmap/newgidmap",
            _mappings(uid, subuids),
            _mappings(gid, subgids),
            newuidmap,
            newgidmap,
        )
    reason = "; ".join(reasons)
    if forced == "subuid":
        raise RlError(f"RL_IDMAP=subuid but the subordinate-id mode is unusable: {reason}")
    warning = None
    if subuids and subgids:
        # The user has ranges, so this is a broken host, not an HPC account
        # without ranges (where single-id mode is the norm and stays quiet).
        warning = f"running in single-id mode although you have subordinate ids: {reason}"
    return IdMapPlan("single", reason, *single, warning=warning)


def plan_for(mode: str, uid_mappings: list[IDMapping], gid_mappings: list[IDMapping]) -> IdMapPlan:
    """The plan recorded in a container's config, with this host's helpers."""
    if mode != "subuid":
        return IdMapPlan(mode, "recorded", uid_mappings, gid_mappings)
    newuidmap, why_u = _helper_usable("newuidmap")
    newgidmap, why_g = _helper_usable("newgidmap")
    if not (newuidmap and newgidmap):
        raise RlError(f"this container needs subordinate ids: {why_u or why_g}")
    return IdMapPlan(mode, "recorded", uid_mappings, gid_mappings, newuidmap, newgidmap)


def _helper_args(pid: int, maps: list[IDMapping]) -> list[str]:
    args = [str(pid)]
    for m in maps:
        args += [str(m.container_id), str(m.host_id), str(m.size)]
    return args


def write_maps(pid: int, p: IdMapPlan) -> None:
    """Write pid's uid_map and gid_map from outside its new user namespace."""
    if p.mode == "subuid":
        assert p.newuidmap and p.newgidmap
        # Both helpers at once: each is a setuid exec of a few milliseconds.
        running = []
        for helper, maps in ((p.newuidmap, p.uid_mappings), (p.newgidmap, p.gid_mappings)):
            err_r, err_w = os.pipe()
            actions = [(os.POSIX_SPAWN_DUP2, err_w, 2), (os.POSIX_SPAWN_DUP2, err_w, 1)]
            try:
                child = os.posix_spawn(helper, [helper, *_helper_args(pid, maps)], os.environ,
                                       file_actions=actions)
            finally:
                os.close(err_w)
            running.append((helper, child, err_r))
        failures = []
        for helper, child, err_r in running:
            with os.fdopen(err_r, "rb") as f:
                output = f.read().decode(errors="replace").strip().splitlines()
            _, status = os.waitpid(child, 0)
            if status != 0:
                failures.append(f"{os.path.basename(helper)} failed: "
                                f"{output[-1] if output else 'status ' + str(status)}")
        if failures:
            raise RlError("; ".join(failures))
        return
    with open(f"/proc/{pid}/uid_map", "w") as f:
        f.write("".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in p.uid_mappings))
    with open(f"/proc/{pid}/setgroups", "w") as f:
        f.write("deny")
    with open(f"/proc/{pid}/gid_map", "w") as f:
        f.write("".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in p.gid_mappings))


def mapped_size(maps: list[IDMapping]) -> int:
    return max((m.container_id + m.size for m in maps), default=0)
