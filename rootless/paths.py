"""Where rl keeps its state.

Runtime state (sockets, per-container scratch files) lives in
$XDG_RUNTIME_DIR/rl: a per-user tmpfs that a reboot empties, which is exactly
the lifetime of a running container. Persistent state (container records,
their logs and liveness locks, images) lives in $XDG_DATA_HOME/rl. The
runtime directory is the caller's and may differ between callers of the same
store (XDG_RUNTIME_DIR unset: /tmp/rl-<uid>), so nothing that every caller
must find lives only there: a supervisor names its own in its record's lock.
"""

from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path

from .errors import RlError


def _ensure_private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
        return _ensure_private_dir(Path(base) / "rl")
    # No logind (common on HPC login nodes and in containers): a private
    # directory in /tmp, refused if somebody else owns it.
    path = Path(f"/tmp/rl-{os.getuid()}")
    _ensure_private_dir(path)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise RlError(f"{path} is not a private directory of this user; set XDG_RUNTIME_DIR")
    return path


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return _ensure_private_dir(Path(base) / "rl")


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "rl"


def containers_dir() -> Path:
    return _ensure_private_dir(data_dir() / "containers")


def container_dir(cid: str) -> Path:
    return containers_dir() / cid


def container_run_dir(cid: str) -> Path:
    return runtime_dir() / cid


_dir_fds: dict[str, int] = {}


def socket_address(path: Path) -> str:
    """An AF_UNIX address for path, even past the 107-byte limit of sun_path.

    A long path is reached through /proc/self/fd/N/<name>, N being an open
    descriptor of its directory (kept for the life of the process).
    """
    text = str(path)
    if len(text.encode()) < 100:
        return text
    parent = str(path.parent)
    fd = _dir_fds.get(parent)
    if fd is None:
        fd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        _dir_fds[parent] = fd
    return f"/proc/self/fd/{fd}/{path.name}"


# The fork server's address (forkserver.py serves it, engine/client.py
# connects): here, at the bottom, so that neither imports the other.
def fingerprint() -> str:
    # A server serves one user in one user namespace with one version of rl.
    # zlib, not hashlib: this runs on every command and needs no cryptography.
    parts = [sys.executable, str(os.geteuid()), os.readlink("/proc/self/ns/user")]
    top = Path(__file__).parent.parent
    # The supervisor runs all of rl's code: rootless and its sub-packages
    # (runtime, image, engine, cli) and the sibling packages (netstack, fs).
    # One level of glob each, not rglob: this is on every command's path.
    for pattern in ("rootless/*.py", "rootless/*/*.py", "netstack/*.py", "fs/*.py"):
        for f in sorted(top.glob(pattern)):
            st = f.stat()
            parts.append(f"{f.relative_to(top)}:{st.st_mtime_ns}:{st.st_size}")
    text = "\n".join(parts).encode()
    return f"{zlib.crc32(text):08x}{zlib.adler32(text):08x}"


def forkserver_socket() -> Path:
    return runtime_dir() / f"fork-{fingerprint()}.sock"
