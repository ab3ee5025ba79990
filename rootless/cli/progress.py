"""The CLI's progress sink (rootless.image.progress) for pull, push, load and save:
rich bars (one per blob) on a terminal, plain lines otherwise.

Lines go to stderr, so `rl pull -q` and scripts reading stdout see only the result.
"""

from __future__ import annotations

import sys
import threading
from typing import Any


class Task:
    """One blob's bar (or, without bars, its line once it is done)."""

    def __init__(self, progress: Progress, label: str, total: int) -> None:
        self.progress = progress
        self.label = label
        self.total = total
        self.id: Any = None
        if progress.bars is not None:
            self.id = progress.bars.add_task(label, total=total or None)

    def advance(self, n: int) -> None:
        if self.progress.bars is not None:
            self.progress.bars.update(self.id, advance=n)

    def restart(self, done: int) -> None:
        if self.progress.bars is not None:
            self.progress.bars.update(self.id, completed=done)

    def done(self) -> None:
        if self.progress.bars is not None:
            self.progress.bars.update(self.id, completed=self.total,
                                      description=f"{self.label} done")
        else:
            self.progress.message(f"{self.label} done")


class Progress:
    """bars=False: plain lines even on a terminal (save and load move no bytes
    they could draw a bar for)."""

    def __init__(self, quiet: bool, bars: bool = True) -> None:
        self.quiet = quiet
        self.bars: Any = None
        self._lock = threading.Lock()
        if bars and not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TransferSpeedColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self.bars = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                     DownloadColumn(), TransferSpeedColumn(),
                                     console=Console(stderr=True))

    def __enter__(self) -> Progress:
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.stop()

    def _print(self, text: str) -> None:
        with self._lock:
            if self.bars is not None:
                self.bars.console.print(text, markup=False, highlight=False)
            else:
                print(text, file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if not self.quiet:
            self._print(text)

    def note(self, text: str) -> None:
        self._print(f"note: {text}")

    def blob(self, digest: str, total: int) -> Task:
        return Task(self, f"Copying blob {digest[:19]}", total)
