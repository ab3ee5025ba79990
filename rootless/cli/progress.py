"""Progress for pull and push: rich bars (one per blob) on a terminal, plain lines otherwise.

Lines go to stderr, so `rl pull -q` and scripts reading stdout see only the result.
"""

from __future__ import annotations

import sys
import threading
from typing import Any


class Task:
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

    def finish(self, note: str = "done") -> None:
        if self.progress.bars is not None:
            self.progress.bars.update(self.id, completed=self.total,
                                      description=f"{self.label} {note}")
        else:
            self.progress.line(f"{self.label} {note}")


class Progress:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: Any = None
        self._lock = threading.Lock()
        if not quiet and sys.stderr.isatty():
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

    def line(self, text: str) -> None:
        if self.quiet and not text.startswith("note:"):
            return
        with self._lock:
            if self.bars is not None:
                self.bars.console.print(text, markup=False, highlight=False)
            else:
                print(text, file=sys.stderr, flush=True)

    def task(self, label: str, total: int) -> Task:
        return Task(self, label, total)
