"""A build's progress as data: steps that start, log, finish, come from the cache or fail.

The builder says what happens and never draws it; a face renders the
events (the CLI: BuildKit's plain and tty displays, rawjson, quiet). A
step is what BuildKit shows as a vertex: `[stage i/n] INSTRUCTION` for
FROM and the layer instructions, plus `exporting to image`. Times are
measured here (monotonic seconds) so every face shows the same ones.

`Tracker` is the builder's side: `start` opens a step (closing the open
one as done), `log` adds an output line to it, `cached` marks it as
served from the cache (the step cache calls it; the step then ends as
`CACHED`), `finish` closes it, `fail` closes it with the error and the
tail of its output.

A stage built in a forked child (executor `_fork_stage`) sends its events to
the build's process as `encode`d lines; there `Tracker.relay` gives each of
its steps the next number of the one numbering of the whole build (BuildKit
numbers a vertex when it first shows), so only the build's process draws.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TAIL = 10  # output lines a failed step shows again
CANCELED = "context canceled"  # a step stopped because another failed (BuildKit's words)


@dataclass(frozen=True)
class Step:
    number: int  # 1, 2, ... in the order steps start (BuildKit's #N)
    name: str  # "[build 2/3] RUN make", "exporting to image"


@dataclass(frozen=True)
class Started:
    step: Step


@dataclass(frozen=True)
class Log:
    step: Step
    line: str
    at: float  # seconds since the step started


@dataclass(frozen=True)
class Done:
    step: Step
    seconds: float
    cached: bool = False


@dataclass(frozen=True)
class Failed:
    step: Step
    error: str  # the error's one line, as the build's Error: line says it
    tail: tuple[str, ...]  # the step's last output lines
    seconds: float


Event = Started | Log | Done | Failed
Sink = Callable[[Event], None]


def discard(event: Event) -> None:
    """A sink for callers that want no progress."""


class Tracker:
    """The open step of a build and the events it sends to *sink*."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.count = 0
        self.step: Step | None = None
        self._began = 0.0
        self._cached = False
        self._tail: deque[str] = deque(maxlen=TAIL)
        self._relayed: dict[tuple[int, int], Step] = {}  # (source, its number) -> ours

    def start(self, name: str) -> Step:
        self.finish()
        self.count += 1
        self.step = Step(self.count, name)
        self._began = time.monotonic()
        self._cached = False
        self._tail.clear()
        self.sink(Started(self.step))
        return self.step

    def log(self, line: str) -> None:
        if self.step is None:
            self.start("[internal]")
        assert self.step is not None
        self._tail.append(line)
        self.sink(Log(self.step, line, time.monotonic() - self._began))

    def cached(self) -> None:
        """The open step's result came from the cache: it ends as CACHED."""
        self._cached = True

    def finish(self) -> None:
        if self.step is not None:
            step, self.step = self.step, None
            self.sink(Done(step, time.monotonic() - self._began, self._cached))

    def fail(self, error: str) -> None:
        if self.step is not None:
            step, self.step = self.step, None
            self.sink(Failed(step, error, tuple(self._tail), time.monotonic() - self._began))

    def relay(self, source: int, event: Event) -> None:
        """An event of another process's tracker (a stage child, *source*), renumbered
        into this build's numbering and sent on."""
        key = (source, event.step.number)
        step = self._relayed.get(key)
        if step is None:
            self.count += 1
            step = self._relayed[key] = Step(self.count, event.step.name)
        self.sink(dataclasses.replace(event, step=step))


_KINDS: dict[str, type[Event]] = {"started": Started, "log": Log, "done": Done,
                                  "failed": Failed}


def encode(event: Event) -> bytes:
    """One event as a JSON line (a child's pipe to the build's process)."""
    doc: dict[str, Any] = {"event": next(k for k, t in _KINDS.items()
                                         if isinstance(event, t))}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        doc[f.name] = dataclasses.asdict(value) if isinstance(value, Step) else value
    # ensure_ascii keeps a lone surrogate (an undecodable output byte) as an escape.
    return json.dumps(doc).encode() + b"\n"


def decode(line: bytes) -> Event:
    """The event `encode` wrote; ValueError if *line* is not one."""
    try:
        doc = json.loads(line)
        kind = _KINDS[doc.pop("event")]
        doc["step"] = Step(int(doc["step"]["number"]), str(doc["step"]["name"]))
        if "tail" in doc:
            doc["tail"] = tuple(str(x) for x in doc["tail"])
        return kind(**doc)
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"not a progress event: {e}") from None
