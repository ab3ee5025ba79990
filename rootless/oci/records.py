"""rl-oci's state under --root: one directory per container, as runc keeps.

    <root>/<id>/state.json  the container's record (written atomically, once
                            its PID 1 exists; never rewritten after)
    <root>/<id>/.lock       flock'd by the creating rl-oci for as long as it runs
    <root>/<id>/exec.fifo   the create/start gate (runtime/gate.py)

Every call of rl-oci is a fresh process and conmon makes several per
container: this module (with control.py and fast.py) imports no dataclasses,
shutil, typing, json or re at run time, which together cost more than a
`state` does (plainjson.py reads and prints the JSON).

The status is computed, never stored: a record can then not go stale when a
process dies or rl-oci is killed. PID 1 is known by pid and its start time
(/proc/PID/stat field 22), so a reused pid is not mistaken for it:

    creating  the creator still holds .lock
    created   PID 1 is alive and its gate is still there
    running   PID 1 is alive and the gate is gone (started)
    stopped   PID 1 is gone, or the record is damaged or was left half-made
              by a creator killed before it wrote state.json
"""

from __future__ import annotations

import errno
import fcntl
import os

from ..errors import Conflict, InvalidArgument, NotFound, RlError
from ..runtime import gate
from . import plainjson

# typing.TYPE_CHECKING without importing typing (mypy knows the name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

STATE = "state.json"
LOCK = ".lock"
_ID_PUNCT = frozenset("_+-.")


def _valid_id(cid: str) -> bool:
    """runc's id grammar, ^[\\w+\\-.]+$ (\\w: str.isalnum or _), without re."""
    return bool(cid) and all(c.isalnum() or c in _ID_PUNCT for c in cid)


def default_root() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
        return os.path.join(base, "rl-oci")
    return f"/tmp/rl-oci-{os.getuid()}"


def check_id(cid: str) -> None:
    if not cid or cid in (".", "..") or not _valid_id(cid):
        raise InvalidArgument(f"invalid id format: {cid}")


class Record:
    """A container's state.json (plain attributes: see the module's docstring)."""

    FIELDS = ("id", "pid", "pid_start", "bundle", "rootfs", "created", "owner",
              "annotations", "userns")

    def __init__(self, id: str, pid: int, pid_start: int, bundle: str, rootfs: str,
                 created: str, owner: str, annotations: dict[str, str] | None = None,
                 userns: bool = True) -> None:
        self.id = id
        self.pid = pid
        self.pid_start = pid_start  # PID 1's start time in clock ticks after boot
        self.bundle = bundle
        self.rootfs = rootfs
        self.created = created  # RFC 3339, UTC
        self.owner = owner
        self.annotations = annotations or {}
        self.userns = userns  # rl-oci made the user namespace (exec joins it)

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.FIELDS}

    @classmethod
    def from_json(cls, data: Any) -> Record | None:
        """The record, or None if data is not one (a damaged state.json)."""
        if not isinstance(data, dict) or set(data) != set(cls.FIELDS):
            return None
        ints = ("pid", "pid_start")
        texts = ("id", "bundle", "rootfs", "created", "owner")
        if not (all(isinstance(data[k], int) for k in ints)
                and all(isinstance(data[k], str) for k in texts)
                and isinstance(data["annotations"], dict)
                and isinstance(data["userns"], bool)):
            return None
        return cls(**data)


class Entry:
    """A directory under --root as list/state see it; record None if damaged."""

    def __init__(self, id: str, status: str, record: Record | None) -> None:
        self.id = id
        self.status = status
        self.record = record


def start_time(pid: int) -> int | None:
    """pid's start time, or None if it is not alive (gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


class Root:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def ensure(self) -> None:
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as e:
            raise RlError(f"cannot make the state directory {self.path}: {e.strerror}"
                          ) from None

    def dir(self, cid: str) -> str:
        return os.path.join(self.path, cid)

    def claim(self, cid: str) -> int:
        """Make cid's directory; the flock'd .lock fd the creator holds while it works.

        A directory without state.json whose creator is gone (killed) is
        debris: it is removed and claimed anew.
        """
        check_id(cid)
        self.ensure()
        d = self.dir(cid)
        for _ in range(3):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                if os.path.exists(os.path.join(d, STATE)) or _locked(d):
                    raise Conflict("container with given ID already exists") from None
                _rmtree(d)
                continue
            fd = os.open(os.path.join(d, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd
        raise Conflict("container with given ID already exists")

    def write(self, rec: Record) -> None:
        d = self.dir(rec.id)
        tmp = os.path.join(d, f".{STATE}.{os.getpid()}.tmp")
        import json  # create's: it has json loaded for the bundle already

        with open(tmp, "w") as f:
            json.dump(rec.as_json(), f)
        os.replace(tmp, os.path.join(d, STATE))

    def remove(self, cid: str) -> None:
        _rmtree(self.dir(cid))

    def entry(self, cid: str) -> Entry:
        """cid's entry; NotFound if there is no such container."""
        check_id(cid)
        d = self.dir(cid)
        if not os.path.isdir(d):
            raise NotFound("container does not exist")
        rec = _load(d)
        return Entry(cid, _status(d, rec), rec)

    def get(self, cid: str) -> tuple[Record, str]:
        """cid's record and status; NotFound, or RlError for a damaged record."""
        e = self.entry(cid)
        if e.record is None:
            if e.status == "creating":
                raise Conflict(f"container {cid} is being created")
            raise RlError(f"the state of container {cid} is damaged: delete it "
                          "(rl-oci delete --force)")
        return e.record, e.status

    def entries(self) -> Iterator[Entry]:
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(".") or not _valid_id(name):
                continue
            d = self.dir(name)
            if os.path.isdir(d):
                rec = _load(d)
                yield Entry(name, _status(d, rec), rec)


def _rmtree(d: str) -> None:
    """Remove a container's directory: files only (its state, lock, gate), so
    without shutil (its imports cost a `delete` ~3 ms), which takes the rest."""
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError:
        fd = -1  # not a directory (a symlink, say): shutil's answer
    try:
        if fd >= 0:
            try:
                for name in os.listdir(fd):
                    os.unlink(name, dir_fd=fd)
            finally:
                os.close(fd)
            os.rmdir(d)
            return
    except OSError:
        pass  # a directory in it, or removed meanwhile
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def _locked(d: str) -> bool:
    try:
        fd = os.open(os.path.join(d, LOCK), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)
    return False


def _load(d: str) -> Record | None:
    try:
        with open(os.path.join(d, STATE), "rb") as f:
            data: Any = plainjson.loads(f.read())
        return Record.from_json(data)
    except (OSError, ValueError, TypeError, RecursionError):
        return None


def _status(d: str, rec: Record | None) -> str:
    if _locked(d):
        return "creating"
    if rec is None or not isinstance(rec.pid, int) or rec.pid <= 0:
        return "stopped"
    if start_time(rec.pid) != rec.pid_start:
        return "stopped"
    return "created" if os.path.exists(gate.path(d)) else "running"


def state_json(rec: Record, status: str) -> dict[str, Any]:
    """The OCI runtime spec's state (runtime.md), with runc's extra fields."""
    out: dict[str, Any] = {
        "ociVersion": "1.0.2", "id": rec.id, "pid": rec.pid if status != "stopped" else 0,
        "status": status, "bundle": rec.bundle, "rootfs": rec.rootfs,
        "created": rec.created, "owner": rec.owner,
    }
    if rec.annotations:
        out["annotations"] = rec.annotations
    return out


def pidfd(rec: Record) -> int | None:
    """A pidfd for the record's PID 1 if that very process is alive (the caller
    closes it), else None."""
    try:
        fd = os.pidfd_open(rec.pid)
    except OSError:
        return None
    # Opened first, checked after: the pid cannot be reused under the fd.
    if start_time(rec.pid) == rec.pid_start:
        return fd
    os.close(fd)
    return None
