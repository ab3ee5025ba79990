"""linux.sysctl: namespaced kernel parameters, written by PID 1 in its new namespaces.

A network or IPC parameter belongs to the namespace of the process that writes
it, whichever /proc it writes through, so PID 1 writes them before its mounts
(through the creator's /proc) as soon as its namespaces exist; the container's
root owns those namespaces, so the kernel lets it. Which keys a user may ask
for is the engine's rule (docker's list); here a key only has to name a file
under /proc/sys.
"""

from __future__ import annotations

import re

from ..errors import RlError

_KEY = re.compile(r"[a-zA-Z0-9_]+(?:[./][a-zA-Z0-9_@:+-]+)+")


def path_of(key: str) -> str:
    """/proc/sys's file for *key* (dots or slashes, as runc takes both); never a path
    out of /proc/sys."""
    if not _KEY.fullmatch(key) or ".." in key:
        raise RlError(f"invalid sysctl key {key!r}")
    return "/proc/sys/" + key.replace(".", "/")


def apply(sysctls: dict[str, str]) -> None:
    for key, value in sysctls.items():
        try:
            with open(path_of(key), "w") as f:
                f.write(value)
        except OSError as e:
            raise RlError(f"setting sysctl {key}={value}: {e.strerror}") from None
