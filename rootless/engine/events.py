"""The user's event log: what `rl events` reads, docker's event messages as data.

There is no daemon to hold events in memory, so every rl process that does a
thing (a command, a supervisor for `die`) appends one JSON line to
`<data>/events/events.log`. One `os.write` of the whole line on an O_APPEND
descriptor: the kernel positions and writes it under the inode's lock, so
lines of concurrent writers never interleave (a line longer than PIPE_BUF is
written under the log's flock as well, for file systems that split writes).

Bounded on disk: once the log passes MAX_BYTES it is renamed to
`events.log.1` (the previous generation dropped) under the flock; readers
read both generations. A damaged line is skipped and counted, never fatal.

Emitting never fails the operation it reports: an unwritable log loses the
event, not the container.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import InvalidArgument
from .store import Container, RecordError

LOG = "events.log"
OLD = "events.log.1"
LOCK = "events.lock"
MAX_BYTES = 4 << 20  # ~15,000 container events per generation; two generations kept
PIPE_BUF = 4096
POLL = 0.1  # seconds between two looks at the log while following

TYPES = ("container", "image", "volume", "network", "builder", "daemon", "plugin", "node",
         "service", "secret", "config")
FILTER_KEYS = ("type", "event", "container", "image", "label", "volume", "network")


def log_dir() -> Path:
    path = paths.data_dir() / "events"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


# -- writing -----------------------------------------------------------------------


def emit(type_: str, action: str, actor_id: str, attributes: dict[str, str] | None = None
         ) -> None:
    """Append one event; never raises (an event lost beats an operation failed)."""
    now = time.time_ns()
    msg = {"status": action, "id": actor_id, "from": (attributes or {}).get("image", ""),
           "Type": type_, "Action": action,
           "Actor": {"ID": actor_id, "Attributes": {k: str(v) for k, v in
                                                    (attributes or {}).items()}},
           "scope": "local", "time": now // 1_000_000_000, "timeNano": now}
    if type_ != "container":  # docker's legacy fields are for containers only
        del msg["status"], msg["id"], msg["from"]
    line = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
    with contextlib.suppress(OSError):
        _append(log_dir(), line)


def _append(d: Path, line: bytes) -> None:
    fd = os.open(d / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    try:
        if len(line) <= PIPE_BUF:
            os.write(fd, line)
            size = os.fstat(fd).st_size
        else:
            with paths.locked(d / LOCK):
                os.write(fd, line)
                size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        _rotate(d)


def _rotate(d: Path) -> None:
    with paths.locked(d / LOCK):
        try:
            if os.stat(d / LOG).st_size <= MAX_BYTES:
                return  # another writer rotated it first
        except FileNotFoundError:
            return
        os.replace(d / LOG, d / OLD)


def container_event(cfg: Any, action: str, **extra: Any) -> None:
    """A container event with docker's attributes: name, image and the labels."""
    attrs = {**{str(k): str(v) for k, v in (getattr(cfg, "labels", None) or {}).items()},
             "image": getattr(cfg, "image", "") or "", "name": cfg.name}
    attrs.update({k: str(v) for k, v in extra.items()})
    emit("container", action, cfg.id, attrs)


def health_status(cfg: Any, status: str) -> None:
    """For the healthcheck runner: docker's `health_status: healthy` event."""
    container_event(cfg, f"health_status: {status}")


# -- reading -----------------------------------------------------------------------


def parse_time(value: str, now: float | None = None) -> float:
    """docker's --since/--until: an RFC 3339 time (or a date), a Unix time with a
    fraction, or a Go duration meaning that long ago."""
    now = time.time() if now is None else now
    v = value.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", v):
        return float(v)
    if re.fullmatch(r"(-?\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", v):
        return now - _duration(v)
    try:
        iso = v.replace("Z", "+00:00")
        # Python 3.11 takes at most 6 fraction digits; docker prints 9.
        iso = re.sub(r"(\.\d{6})\d+", r"\1", iso)
        dt = datetime.datetime.fromisoformat(iso)
    except ValueError:
        raise InvalidArgument(f'failed to parse time "{value}": expected an RFC 3339 time, '
                              "a Unix timestamp or a duration such as 10m") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # docker: a time without a zone is local time
    return dt.timestamp()


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    return sum(float(n) * _UNITS[u] for n, u in re.findall(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)",
                                                           text))


@dataclass
class Filters:
    """`--filter KEY=VALUE`s: values of one key are alternatives, keys all must match."""

    given: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Filters:
        given: dict[str, list[str]] = {}
        for spec in specs:
            key, sep, value = spec.partition("=")
            if not sep:
                raise InvalidArgument(f"bad format of filter (expected name=value): {spec}")
            if key not in FILTER_KEYS:
                raise InvalidArgument(f"invalid filter '{key}'")
            if key == "type" and value not in TYPES:
                raise InvalidArgument(f"invalid filter 'type={value}'")
            given.setdefault(key, []).append(value)
        return cls(given)

    def match(self, ev: dict[str, Any]) -> bool:
        actor = ev.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        ident = str(actor.get("ID", ""))
        action = str(ev.get("Action", ""))
        typ = str(ev.get("Type", ""))
        for key, values in self.given.items():
            if key == "type":
                ok = typ in values
            elif key == "event":  # `exec_start: sh -c x` matches event=exec_start
                ok = action in values or action.partition(":")[0] in values
            elif key == "label":
                ok = any(_label(attrs, v) for v in values)
            elif key == "image":
                image = attrs.get("image", ident if typ == "image" else "")
                ok = any(v in (image, ident, image.split(":")[0]) for v in values)
            else:  # container, volume, network: its ID (or a prefix) or its name
                ok = typ == key and any(
                    v == attrs.get("name") or (len(v) >= 1 and ident.startswith(v))
                    for v in values)
            if not ok:
                return False
        return True


def _label(attrs: dict[str, str], spec: str) -> bool:
    key, sep, value = spec.partition("=")
    return key in attrs and (not sep or attrs[key] == value)


@dataclass
class Reader:
    """The log read from its start: past events, then (follow) new ones as they come."""

    since: float | None = None
    until: float | None = None
    filters: Filters = field(default_factory=Filters)
    skipped: int = 0  # damaged lines passed over
    _offset: int = field(default=0, init=False)  # where follow() reads on
    _ino: int | None = field(default=None, init=False)

    def _lines(self, path: Path, offset: int = 0) -> tuple[list[str], int, int | None]:
        """Whole lines from offset; the offset after them and the file's inode."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            return [], 0, None
        try:
            st = os.fstat(fd)
            if st.st_size < offset:
                offset = 0  # truncated or replaced: from its start
            data = os.pread(fd, max(st.st_size - offset, 0), offset)
        finally:
            os.close(fd)
        end = data.rfind(b"\n") + 1
        # One decode for the lot: json.loads of bytes sniffs each line's encoding.
        return data[:end].decode(errors="replace").split("\n")[:-1], offset + end, st.st_ino

    def _decode(self, lines: list[str]) -> Iterator[dict[str, Any]]:
        since_ns = None if self.since is None else int(self.since * 1e9)
        until_ns = None if self.until is None else int(self.until * 1e9)
        for line in lines:
            try:
                ev = json.loads(line)
                t = int(ev["timeNano"])
                if not isinstance(ev.get("Type"), str) or not isinstance(ev.get("Actor"), dict):
                    raise ValueError
            except (ValueError, KeyError, TypeError, RecursionError):
                self.skipped += 1
                continue
            if since_ns is not None and t < since_ns:
                continue
            if until_ns is not None and t > until_ns:
                continue
            if self.filters.match(ev):
                yield ev

    def past(self) -> Iterator[dict[str, Any]]:
        d = log_dir()
        old, _, _ = self._lines(d / OLD)
        yield from self._decode(old)
        lines, self._offset, self._ino = self._lines(d / LOG)
        yield from self._decode(lines)

    def skip_past(self) -> None:
        """Start follow() at the log's end (appends are whole lines: a line boundary)."""
        with contextlib.suppress(OSError):
            st = os.stat(log_dir() / LOG)
            self._offset, self._ino = st.st_size, st.st_ino

    def follow(self, stop: float | None = None) -> Iterator[dict[str, Any]]:
        """New events as they are appended (after past()); until `stop` (a Unix time)
        if given. docker applies --since to past events only: so does this."""
        d = log_dir()
        since, self.since = self.since, None
        try:
            while stop is None or time.time() < stop:
                time.sleep(POLL if stop is None else max(min(POLL, stop - time.time()), 0))
                try:
                    ino = os.stat(d / LOG).st_ino
                except FileNotFoundError:
                    ino = None
                if ino != self._ino and self._ino is not None:
                    # Rotated: the rest of the generation we were reading is now OLD.
                    rest, _, old_ino = self._lines(d / OLD, self._offset)
                    if old_ino == self._ino:
                        yield from self._decode(rest)
                    self._offset = 0
                lines, self._offset, self._ino = self._lines(d / LOG, self._offset)
                yield from self._decode(lines)
        finally:
            self.since = since



def format_time(ns: int) -> str:
    """docker's RFC3339NanoFixed in local time: 2026-12-04T03:50:05.123456789Z."""
    lt = time.localtime(ns // 1_000_000_000)
    off = lt.tm_gmtoff or 0
    zone = "Z" if off == 0 else (f"{'-' if off < 0 else '+'}{abs(off) // 3600:02d}:"
                                 f"{abs(off) % 3600 // 60:02d}")
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', lt)}.{ns % 1_000_000_000:09d}{zone}"


def text_line(ev: dict[str, Any]) -> str:
    """docker's default line: time, type, action, actor id, (sorted attributes)."""
    actor = ev.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    line = f"{format_time(int(ev['timeNano']))} {ev['Type']} {ev['Action']} {actor.get('ID', '')}"
    if attrs:
        line += " (" + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs)) + ")"
    return line


def started(cfg: Any) -> None:
    """The supervisor's `start`, after its named volumes' `mount`s (docker's order)."""
    for name in _named_volumes(cfg):
        emit("volume", "mount", name, {"container": cfg.id, "driver": "local"})
    container_event(cfg, "start")


def died(cfg: Any, exit_code: int, oom_killed: bool) -> None:
    """The supervisor's `oom` (when the kernel said so) and `die` with the exit code."""
    with contextlib.suppress(RecordError, OSError):  # its name now (a rename meanwhile)
        cfg = Container(cfg.id).config
    if oom_killed:
        container_event(cfg, "oom")
    container_event(cfg, "die", exitCode=exit_code)


def _named_volumes(cfg: Any) -> list[str]:
    out = []
    for bind in getattr(cfg, "binds", None) or []:
        src = str(bind).split(":")[0]
        if src and not src.startswith("/"):
            out.append(src)
    return out


def exec_event(cfg: Any, action: str, argv: list[str], exec_id: str = "") -> str:
    """docker's `exec_create: CMD ARGS` / `exec_start: ...`, with the exec's id."""
    exec_id = exec_id or os.urandom(32).hex()
    container_event(cfg, f"{action}: {' '.join(argv)}", execID=exec_id)
    return exec_id


def image_removed(removed: Iterable[Any]) -> None:
    """rmi's records as docker's `untag` and `delete` events."""
    for r in removed:
        action = "untag" if r.action == "Untagged" else "delete"
        emit("image", action, r.ref, {"name": r.ref})


def volume_event(action: str, name: str) -> None:
    emit("volume", action, name, {"driver": "local"})
