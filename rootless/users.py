"""Resolve `-u user[:group]` against the container's own /etc/passwd and /etc/group.

Called inside the container after pivot_root, so a rootfs whose /etc/passwd is
a symlink can only ever point at a file of the container itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import EXIT_CANNOT_EXEC, RlError


@dataclass
class ResolvedUser:
    uid: int
    gid: int
    home: str = "/"
    additional_gids: list[int] = field(default_factory=list)


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path, errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip()
                    and not line.startswith("#")]
    except OSError:
        return []


def resolve(spec: str, passwd: str = "/etc/passwd", group: str = "/etc/group") -> ResolvedUser:
    """docker's rules: numeric ids need no passwd entry; names must exist."""
    user_part, _, group_part = spec.partition(":")
    users = [e for e in _read_db(passwd) if len(e) >= 7]
    groups = [e for e in _read_db(group) if len(e) >= 3]
    user_part = user_part or "0"

    entry = None
    if user_part.isdigit():
        uid = int(user_part)
        entry = next((e for e in users if e[2] == user_part), None)
    else:
        entry = next((e for e in users if e[0] == user_part), None)
        if entry is None:
            raise RlError(
                f"unable to find user {user_part}: no matching entries in passwd file",
                EXIT_CANNOT_EXEC,
            )
        uid = int(entry[2])
    gid = int(entry[3]) if entry else 0
    home = entry[5] if entry else "/"

    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            g = next((e for e in groups if e[0] == group_part), None)
            if g is None:
                raise RlError(
                    f"unable to find group {group_part}: no matching entries in group file",
                    EXIT_CANNOT_EXEC,
                )
            gid = int(g[2])

    extra: list[int] = []
    if entry is not None and not group_part:
        name = entry[0]
        for g in groups:
            members = g[3].split(",") if len(g) > 3 and g[3] else []
            if name in members and g[2].isdigit() and int(g[2]) != gid:
                extra.append(int(g[2]))
    return ResolvedUser(uid, gid, home, extra)
