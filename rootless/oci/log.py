"""rl-oci's output of errors and debug lines, in runc's (logrus') text or JSON form."""

from __future__ import annotations

import sys
import time

from .records import Root, default_root

# typing.TYPE_CHECKING without importing typing (mypy knows the name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


class Globals:
    """The global flags (a plain class: see records.py on imports)."""

    def __init__(self, root: Root, log_file: str | None, log_format: str, debug: bool,
                 rootless: str) -> None:
        self.root = root
        self.log_file = log_file
        self.log_format = log_format
        self.debug = debug
        self.rootless = rootless

    def line(self, level: str, msg: str) -> str:
        import json  # errors and --debug only: kept off the engines' calls' imports

        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.log_format == "json":
            return json.dumps({"level": level, "msg": msg, "time": now})
        return f"time=\"{now}\" level={level} msg={json.dumps(msg)}"

    def write_log(self, level: str, msg: str) -> None:
        if not self.log_file:
            return
        try:
            with open(self.log_file, "a") as f:
                f.write(self.line(level, msg) + "\n")
        except OSError:
            pass  # a log that cannot be written must not fail the operation

    def debug_log(self, msg: str) -> None:
        if self.debug:
            self.write_log("debug", msg)
            if not self.log_file:
                sys.stderr.write(self.line("debug", msg) + "\n")


def fail(g: Globals | None, msg: str) -> NoReturn:
    g = g or Globals(Root(default_root()), None, "text", False, "auto")
    g.write_log("error", msg)
    try:
        sys.stderr.write(g.line("error", msg) + "\n")
        sys.stderr.flush()
    except OSError:
        pass
    sys.exit(1)


def warn(msg: str) -> None:
    """A warning on stderr in logrus' text form (a failed poststart or poststop hook)."""
    import json  # warnings only, as line()

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        sys.stderr.write(f"time=\"{now}\" level=warning msg={json.dumps(msg)}\n")
        sys.stderr.flush()
    except OSError:
        pass
