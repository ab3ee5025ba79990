"""`rl exec`'s terminal side: the engine runs the process (engine/execute.py),
this module lends it rl's terminal and signals.

rl's own handlers for the proxied signals pass them on once the process
exists; with -t the pty gets rl's window size before the command runs
(ExecOptions.console_size, as Docker's exec ConsoleSize) and on every SIGWINCH,
and with -ti rl's terminal is raw until the process is done (restored
whatever happens). The relay itself is the engine's: a REST face relays
the same Exec to a socket instead.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import termios
import tty as ttymod

from ..engine import execute, wire
from ..engine.options import ExecOptions
from ..engine.store import Container
from .attach import terminal_size


def run(ctr: Container, opts: ExecOptions) -> int:
    """Run opts.command in ctr on rl's terminal; its exit status (-d: 0 once executed)."""

    def spawned(ex: execute.Exec) -> None:
        for sig in wire.PROXIED:
            signal.signal(sig, lambda signum, _frame: ex.signal(signum))

    if opts.tty and opts.console_size is None:
        opts = dataclasses.replace(opts, console_size=terminal_size())
    ex = execute.start(ctr, opts, spawned)
    if opts.detach:
        return 0
    saved_tc = None
    try:
        if ex.master is not None:
            signal.signal(signal.SIGWINCH, lambda *_: (
                ex.resize(*s) if (s := terminal_size()) else None))
        if opts.tty and opts.interactive and os.isatty(0):
            saved_tc = termios.tcgetattr(0)
            ttymod.setraw(0)
        return ex.relay()
    finally:
        if saved_tc is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved_tc)
        ex.close()
