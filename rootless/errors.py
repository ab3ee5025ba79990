"""rl's error type, carrying the exit status docker gives for the same failure.

125: rl's own error (bad flag, missing rootfs, name in use).
126: the command cannot be executed (not executable, unknown user).
127: the command was not found.
1:   a failing management command (no such container, not running).
"""

from __future__ import annotations

EXIT_RL = 125
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127


class RlError(Exception):
    """An error with a one-line message meant for the user."""

    def __init__(self, message: str, exit_code: int = EXIT_RL) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0])


class NeedsFullCli(Exception):
    """`rl run`'s quick path (entry.py) hands over to click: help, a usage error, a pull."""


class NoSuchImage(RlError):
    def __init__(self, ref: str, exit_code: int = 1) -> None:
        super().__init__(f"no such image: {ref}", exit_code)
        self.ref = ref


class NoSuchContainer(RlError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no such container: {ref}", 1)
