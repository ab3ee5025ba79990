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

import contextlib
import fcntl
import os
from collections.abc import Iterator
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


@contextlib.contextmanager
def locked(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold a flock on path (created if missing) for the with block.

    Here, at the bottom, because both stores take such locks: the container
    records (engine) and the image store (image), which must not import the engine.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
