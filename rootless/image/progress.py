"""What pull, push, load and save report as they go: the ProgressSink protocol.

The image layer says what happens and never draws it: the CLI's sink
(rootless.cli.progress) draws rich bars or prints plain lines, a Docker
Engine API face would write Docker's JSON progress stream. Calls may come
from several threads at once (pull downloads in parallel): a sink locks
what it shares.

Lines are worded here, in the words rl has always printed ("Copying blob
sha256:… skipped: already exists"); a blob whose bytes move is reported by
digest and size, for a sink to draw or word as it likes.
"""

from __future__ import annotations

from typing import Protocol


class BlobProgress(Protocol):
    """One blob on its way (downloaded or uploaded)."""

    def advance(self, n: int) -> None:
        """n more bytes moved."""

    def restart(self, done: int) -> None:
        """The transfer starts over at byte `done` (a resumed or refused range)."""

    def done(self) -> None:
        """The blob is in place: verified and, for a pulled layer, unpacked."""


class ProgressSink(Protocol):
    def message(self, text: str) -> None:
        """A line about the operation ("Pulling HOST/NAME:TAG from https://HOST")."""

    def note(self, text: str) -> None:
        """What the user must hear even with progress silenced (a layer lost its device nodes)."""

    def blob(self, digest: str, total: int) -> BlobProgress:
        """A blob of `total` bytes (0: unknown) starts to move."""


class _NoBlob:
    def advance(self, n: int) -> None:
        pass

    def restart(self, done: int) -> None:
        pass

    def done(self) -> None:
        pass


class Silent:
    """A sink that drops everything (library callers that want no progress)."""

    def message(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def blob(self, digest: str, total: int) -> BlobProgress:
        return _NoBlob()
