"""`.dockerignore`: Docker's pattern rules, matched against context-relative paths.

The rules are moby's (patternmatcher and its ignorefile reader), which differ
from gitignore's: a pattern is anchored at the context root (`foo` is not
`**/foo`), `*` and `?` never cross a `/`, `**` crosses any number of
directories, a pattern that matches a directory excludes everything below
it, and the last matching pattern wins, so `!` exceptions may re-include a
file below an excluded directory. Written here rather than taken from
pathspec, whose gitignore semantics are the wrong ones; docker-py's
`exclude_paths` (an older port of the same rules) is the test oracle.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from rootless.errors import InvalidArgument


def quote(s: str) -> str:
    """A value as one line, control characters and undecodable bytes escaped (Go's %q, roughly)."""
    s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return json.dumps(s, ensure_ascii=False)


def parse(data: bytes | str, source: str = ".dockerignore") -> list[str]:
    """The patterns of an ignore file, normalised as docker reads them.

    A line whose first character is `#` is a comment; lines are trimmed and
    blank ones dropped; each pattern (after its `!`) is cleaned like Go's
    filepath.Clean and a leading `/` is dropped, so `/a`, `./a` and `a/` are
    all `a`. Exceptions keep their leading `!`.
    """
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    text = text.removeprefix("\ufeff")
    patterns: list[str] = []
    # Lines end at "\n" only (Go's bufio.Scanner; the "\r" of CRLF is trimmed).
    for lineno, raw in enumerate(text.split("\n"), 1):
        if raw.startswith("#"):
            continue
        line = raw.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
            if not line:
                raise InvalidArgument(
                    f'{source}:{lineno}: illegal exclusion pattern: "!"')
        line = posixpath.normpath(line)
        # normpath keeps POSIX's leading "//"; Go's Clean does not.
        line = re.sub(r"^/+", "/", line)
        if len(line) > 1 and line.startswith("/"):
            line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns


def _class(pattern: str, i: int, where: str) -> tuple[str, int]:
    """The bracket expression starting at pattern[i] ('[') as a Python regex class.

    moby hands brackets to Go's regexp, so `[^…]` negates (and may match `/`),
    `\\` escapes and `a-z` is a range; everything else is literal.
    """
    j = i + 1
    out = "["
    if j < len(pattern) and pattern[j] == "^":
        out += "^"
        j += 1
    first = True
    while j < len(pattern):
        ch = pattern[j]
        if ch == "]" and not first:
            return out + "]", j + 1
        first = False
        if ch == "\\":
            j += 1
            if j >= len(pattern):
                break
            ch = pattern[j]
        out += re.escape(ch) if ch != "-" else "-"
        j += 1
    raise InvalidArgument(f"{where}syntax error in pattern: {quote(pattern)}")


def glob_regex(pattern: str, where: str = "", double_star: bool = True) -> str:
    """A Go file pattern as an anchored Python regex (moby's translation).

    With *double_star*, `**` matches any number of directories (dockerignore);
    without it, this is Go's filepath.Match for one path (COPY sources).
    """
    rest = pattern[2:]
    if double_star and pattern.startswith("**") and not any(c in rest for c in "*?[\\"):
        # moby matches "**" and a literal tail as a plain suffix: "**.txt" is
        # any path ending in ".txt", "**/a" is "a" at any depth.
        if rest.startswith("/"):
            return f"^(.*/)?{re.escape(rest[1:])}$"
        return f"^.*{re.escape(rest)}$"
    out = "^"
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if double_star and i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                out += ".*" if i >= n else "(.*/)?"
                continue
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\":
            if i + 1 >= n:
                # Go's Match rejects a trailing backslash (New checks with it).
                raise InvalidArgument(f"{where}syntax error in pattern: {quote(pattern)}")
            i += 1
            out += re.escape(pattern[i])
        elif ch == "[":
            cls, i = _class(pattern, i, where)
            out += cls
            continue
        else:
            out += re.escape(ch)
        i += 1
    return out + "$"


def compile_glob(pattern: str, where: str = "", double_star: bool = True) -> re.Pattern[str]:
    """glob_regex compiled; a range Python cannot compile (`[z-a]`) is the user's error."""
    try:
        return re.compile(glob_regex(pattern, where, double_star), re.DOTALL)
    except re.error:
        raise InvalidArgument(f"{where}syntax error in pattern: {quote(pattern)}") from None


@dataclass(frozen=True)
class Pattern:
    text: str  # cleaned, without the "!"
    exclusion: bool
    regex: re.Pattern[str]


class Matcher:
    """Decides, for a context-relative path, whether the ignore patterns exclude it."""

    def __init__(self, patterns: Iterable[str], source: str = ".dockerignore") -> None:
        self.patterns: list[Pattern] = []
        for p in patterns:
            exclusion = p.startswith("!")
            text = p[1:] if exclusion else p
            rx = compile_glob(text, f"{source}: ")
            self.patterns.append(Pattern(text, exclusion, rx))
        self.exclusions = any(p.exclusion for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, path: str) -> bool:
        """Whether *path* ('/'-separated, relative) is excluded (moby's MatchesOrParentMatches).

        Each pattern is tried on the path and on each of its parent
        directories; the last pattern that matches decides.
        """
        parts = path.split("/")
        parents = ["/".join(parts[:k]) for k in range(1, len(parts))]
        matched = False
        for pat in self.patterns:
            # Only a pattern that could change the answer is tried.
            if pat.exclusion != matched:
                continue
            hit = pat.regex.match(path) is not None or any(
                pat.regex.match(d) is not None for d in parents)
            if hit:
                matched = not pat.exclusion
        return matched

    def may_include_below(self, directory: str) -> bool:
        """Whether an excluded *directory* must still be walked for exceptions.

        Docker's walkers (the classic builder's archive and BuildKit's fsutil)
        descend only if an exception pattern starts with the directory's path,
        so `!*/keep` does not rescue `dir/keep` from `dir`; rl does the same
        so a context holds what docker's would.
        """
        prefix = directory + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self.patterns)
