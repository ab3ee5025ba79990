"""Linux capabilities: names, Docker's default set, --cap-add/--cap-drop, applying them.

All capabilities here are relative to the container's user namespace: even
CAP_SYS_ADMIN grants nothing over the host, but the default set stays Docker's
so that programs see what they would see under Docker.
"""

from __future__ import annotations

from .. import syscalls as sc
from ..errors import InvalidArgument

CAP_NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]
CAP_NUMBERS = {name: i for i, name in enumerate(CAP_NAMES)}

# moby's default capability set (oci/caps/defaults.go).
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]


def normalize(name: str) -> str:
    """'net_admin', 'NET_ADMIN' and 'CAP_NET_ADMIN' all name CAP_NET_ADMIN; 'ALL' stays."""
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    if not upper.startswith("CAP_"):
        upper = "CAP_" + upper
    if upper not in CAP_NUMBERS:
        raise InvalidArgument(f"unknown capability: {name!r}")
    return upper


def resolve(cap_add: list[str], cap_drop: list[str]) -> list[str]:
    """Docker's rule: start from the default set, drop, then add (ALL allowed on either side)."""
    adds = [normalize(c) for c in cap_add]
    drops = [normalize(c) for c in cap_drop]
    caps = [] if "ALL" in drops else [c for c in DEFAULT_CAPS if c not in drops]
    if "ALL" in adds:
        caps = [c for c in CAP_NAMES if c not in drops or c in adds]
    for c in adds:
        if c != "ALL" and c not in caps:
            caps.append(c)
    return sorted(caps, key=CAP_NUMBERS.__getitem__)


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return len(CAP_NAMES) - 1


def mask(names: list[str]) -> int:
    m = 0
    for n in names:
        m |= 1 << CAP_NUMBERS[n]
    return m


def drop_bounding(keep: list[str]) -> None:
    keep_mask = mask(keep)
    for cap in range(last_cap() + 1):
        if not keep_mask & (1 << cap):
            sc.prctl(sc.PR_CAPBSET_DROP, cap)


def set_process_caps(effective: list[str], permitted: list[str], inheritable: list[str]) -> None:
    sc.capset(mask(effective), mask(permitted), mask(inheritable))
