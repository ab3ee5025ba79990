"""`rl build --progress`: the builder's events (rootless.build.progress) drawn as
docker buildx draws them, on stderr.

plain: `#N [stage i/n] INSTRUCTION`, each output line as `#N 0.123 line`,
`#N DONE 0.3s` or `#N CACHED`; a failed step `#N ERROR: ...` and its last
output lines between `------` rules, as BuildKit prints them before the
error. tty: a rich live view of the steps with the running one's latest
output, the finished list left on the screen. rawjson: one JSON object per
event, shaped as BuildKit's SolveStatus (vertexes, logs). quiet: nothing.
auto: tty on a terminal, else plain.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import sys
import time
from collections import deque
from typing import IO, Any

from ..build.progress import CANCELED, Done, Event, Failed, Log, Started, Step

MODES = ("auto", "plain", "tty", "quiet", "rawjson")


def _failure_block(ev: Failed) -> list[str]:
    return ["------", f" > {ev.step.name}:", *ev.tail, "------"]


def _canceled(ev: Event) -> bool:
    return isinstance(ev, Failed) and ev.error.endswith(CANCELED)


class Plain:
    """buildx's plain printer: every line names its step (`#N`); when another step's
    line comes while one is open (parallel stages), `#N ...` closes the view of the
    open one and the other's `#M NAME` heads what follows, as buildx prints it."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.current: Step | None = None  # the step the last lines were of, while open
        self.first = True

    def __call__(self, ev: Event) -> None:
        n = ev.step.number
        lines = []
        if ev.step != self.current:
            if self.current is not None:
                lines.append(f"#{self.current.number} ...")
            if not self.first:
                lines.append("")
            self.first = False
            lines.append(f"#{n} {ev.step.name}")
            self.current = ev.step
        if isinstance(ev, Log):
            lines.append(f"#{n} {ev.at:.3f} {ev.line}")
        elif isinstance(ev, Done):
            lines.append(f"#{n} CACHED" if ev.cached else f"#{n} DONE {ev.seconds:.1f}s")
        elif _canceled(ev):
            lines.append(f"#{n} CANCELED")
        elif isinstance(ev, Failed):
            lines += [f"#{n} ERROR: {ev.error}", *_failure_block(ev)]
        if isinstance(ev, Done | Failed):
            self.current = None
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()

    def close(self) -> None:
        pass


class RawJSON:
    """BuildKit's rawjson: SolveStatus objects, one a line."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.started: dict[int, str] = {}

    @staticmethod
    def _now() -> str:
        return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    @staticmethod
    def _digest(step: Step) -> str:
        return "sha256:" + hashlib.sha256(f"{step.number} {step.name}".encode()).hexdigest()

    def __call__(self, ev: Event) -> None:
        digest = self._digest(ev.step)
        vertex: dict[str, Any] = {"digest": digest, "name": ev.step.name}
        status: dict[str, Any]
        if isinstance(ev, Started):
            self.started[ev.step.number] = vertex["started"] = self._now()
            status = {"vertexes": [vertex]}
        elif isinstance(ev, Log):
            status = {"logs": [{"vertex": digest, "stream": 1, "timestamp": self._now(),
                                "data": base64.b64encode((ev.line + "\n").encode(
                                    "utf-8", "surrogateescape")).decode()}]}
        else:
            vertex["started"] = self.started.get(ev.step.number, self._now())
            vertex["completed"] = self._now()
            if isinstance(ev, Done) and ev.cached:
                vertex["cached"] = True
            if isinstance(ev, Failed):
                vertex["error"] = ev.error
            status = {"vertexes": [vertex]}
        self.out.write(json.dumps(status) + "\n")
        self.out.flush()

    def close(self) -> None:
        pass


class Quiet:
    def __call__(self, ev: Event) -> None:
        pass

    def close(self) -> None:
        pass


class Live:
    """The tty display: rich's Live over the steps, the running one's output below it."""

    LINES = 6

    def __init__(self, out: IO[str]) -> None:
        from rich.console import Console
        from rich.live import Live as RichLive

        self.console = Console(file=out, highlight=False)
        self.began = time.monotonic()
        self.rows: list[tuple[Step, str, float | None]] = []  # step, state, seconds
        self.start_at: dict[int, float] = {}
        self.tails: dict[int, deque[str]] = {}  # each running step's latest output
        self.failures: list[Failed] = []
        # Started at the first event: a base image's pull (its own rich bars) comes first.
        self.live = RichLive(console=self.console, refresh_per_second=8,
                             get_renderable=self._render, transient=False)
        self.running = False

    def _render(self) -> Any:
        from rich.text import Text

        elapsed = time.monotonic() - self.began
        text = Text()
        text.append(f"[+] Building {elapsed:.1f}s ({sum(1 for r in self.rows if r[1] != 'run')}"
                    f"/{len(self.rows)})\n", style="bold")
        for step, state, seconds in self.rows:
            shown = seconds if seconds is not None else (
                time.monotonic() - self.start_at.get(step.number, self.began))
            prefix = {"cached": " => CACHED ", "error": " => ERROR ",
                      "canceled": " => CANCELED "}.get(state, " => ")
            style = "red" if state == "error" else ("blue" if state == "run" else "")
            text.append(f"{prefix}{step.name}", style=style)
            text.append(f"  {shown:.1f}s\n", style="dim")
            if state == "run":
                for line in self.tails.get(step.number, ()):
                    text.append(f" => => # {line}\n", style="dim")
        return text

    def _set(self, step: Step, state: str, seconds: float | None) -> None:
        for i, row in enumerate(self.rows):
            if row[0] == step:
                self.rows[i] = (step, state, seconds)
                return
        self.rows.append((step, state, seconds))

    def __call__(self, ev: Event) -> None:
        if not self.running:
            self.live.start()
            self.running = True
        if isinstance(ev, Started):
            self.start_at[ev.step.number] = time.monotonic()
            self.tails[ev.step.number] = deque(maxlen=self.LINES)
            self._set(ev.step, "run", None)
        elif isinstance(ev, Log):
            self.tails.setdefault(ev.step.number, deque(maxlen=self.LINES)).append(ev.line)
        elif isinstance(ev, Done):
            self._set(ev.step, "cached" if ev.cached else "done", ev.seconds)
        elif _canceled(ev):
            self._set(ev.step, "canceled", ev.seconds)
        else:
            self._set(ev.step, "error", ev.seconds)
            self.failures.append(ev)
        self.live.refresh()

    def close(self) -> None:
        if self.running:
            self.live.stop()
            self.running = False
        for ev in self.failures:
            for line in _failure_block(ev):
                self.console.print(line, markup=False, highlight=False)


Renderer = Plain | RawJSON | Quiet | Live


def renderer(mode: str, quiet: bool) -> Renderer:
    """The display for --progress=*mode* (-q wins: nothing is drawn)."""
    if quiet or mode == "quiet":
        return Quiet()
    if mode == "auto":
        mode = "tty" if sys.stderr.isatty() else "plain"
    if mode == "tty":
        return Live(sys.stderr)
    if mode == "rawjson":
        return RawJSON(sys.stderr)
    return Plain(sys.stderr)
