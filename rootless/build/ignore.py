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


# Tokens of a compiled glob. A glob is matched by simulating its automaton
# over a set of positions, one character at a time: O(len(name) * len(pattern))
# whatever the pattern, where a backtracking regex over `*a*a*a…b` is
# exponential in the number of stars (review 10, finding 5).
_STAR = "*"  # any run of characters but "/"
_ANY = "?"  # one character but "/"
_DSTAR = "**"  # any run of characters, "/" included
_DSTAR_DIR = "**/"  # nothing, or any run of characters that ends in "/"
_CHAR = "c"  # one given character
_CLASS = "["  # one character of a bracket expression


@dataclass(frozen=True)
class _Token:
    kind: str
    char: str = ""  # a _CHAR's character
    chars: frozenset[str] = frozenset()  # a _CLASS's characters and ranges
    ranges: tuple[tuple[str, str], ...] = ()
    negate: bool = False

    def takes(self, ch: str) -> bool:
        """Whether a _CLASS takes *ch*."""
        hit = ch in self.chars or any(lo <= ch <= hi for lo, hi in self.ranges)
        return hit != self.negate


def _class(pattern: str, i: int, where: str) -> tuple[_Token, int]:
    """The bracket expression starting at pattern[i] ('[') as a class token.

    moby hands brackets to Go's regexp, so `[^…]` negates (and may match `/`),
    `\\` escapes and `a-z` is a range; everything else is literal.
    """
    j = i + 1
    negate = j < len(pattern) and pattern[j] == "^"
    if negate:
        j += 1
    items: list[str] = []
    first = True
    while j < len(pattern):
        ch = pattern[j]
        if ch == "]" and not first:
            chars: set[str] = set()
            ranges: list[tuple[str, str]] = []
            k = 0
            while k < len(items):
                if k + 2 < len(items) and items[k + 1] == "-":
                    lo, hi = items[k], items[k + 2]
                    if lo > hi:  # `[z-a]`: Go's regexp refuses it too
                        raise InvalidArgument(f"{where}syntax error in pattern: {quote(pattern)}")
                    ranges.append((lo, hi))
                    k += 3
                else:
                    chars.add(items[k])
                    k += 1
            return _Token(_CLASS, chars=frozenset(chars), ranges=tuple(ranges),
                          negate=negate), j + 1
        first = False
        if ch == "\\":
            j += 1
            if j >= len(pattern):
                break
            ch = pattern[j]
        items.append(ch)
        j += 1
    raise InvalidArgument(f"{where}syntax error in pattern: {quote(pattern)}")


def _literals(text: str) -> list[_Token]:
    return [_Token(_CHAR, ch) for ch in text]


def _tokens(pattern: str, where: str, double_star: bool) -> list[_Token]:
    """A Go file pattern as tokens (moby's translation of it).

    With *double_star*, `**` matches any number of directories (dockerignore);
    without it, this is Go's filepath.Match for one path (COPY sources).
    """
    rest = pattern[2:]
    if double_star and pattern.startswith("**") and not any(c in rest for c in "*?[\\"):
        # moby matches "**" and a literal tail as a plain suffix: "**.txt" is
        # any path ending in ".txt", "**/a" is "a" at any depth.
        if rest.startswith("/"):
            return [_Token(_DSTAR_DIR), *_literals(rest[1:])]
        return [_Token(_DSTAR), *_literals(rest)]
    out: list[_Token] = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if double_star and i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(_Token(_DSTAR if i >= n else _DSTAR_DIR))
                continue
            if not out or out[-1].kind != _STAR:  # `**` without double_star is `*`
                out.append(_Token(_STAR))
        elif ch == "?":
            out.append(_Token(_ANY))
        elif ch == "\\":
            if i + 1 >= n:
                # Go's Match rejects a trailing backslash (New checks with it).
                raise InvalidArgument(f"{where}syntax error in pattern: {quote(pattern)}")
            i += 1
            out.append(_Token(_CHAR, pattern[i]))
        elif ch == "[":
            cls, i = _class(pattern, i, where)
            out.append(cls)
            continue
        else:
            out.append(_Token(_CHAR, ch))
        i += 1
    return out


class Glob:
    """A compiled glob: `match(name)` is whether it matches the whole of *name*."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        # Without a wildcard the pattern is its own text: a plain comparison.
        self.literal = "".join(t.char for t in tokens) if all(
            t.kind == _CHAR for t in tokens) else None
        # The automaton is made deterministic lazily: each set of positions
        # seen gets a number, each (number, character) step is computed once,
        # so a walk of 100,000 paths costs a dict lookup per character.
        self._sets: list[frozenset[int]] = []
        self._ids: dict[frozenset[int], int] = {}
        self._accepts: list[bool] = []
        self._steps: dict[tuple[int, str], int] = {}
        self._start = self._id(self._closure({0}))
        self._dead = self._id(frozenset())

    def _id(self, states: frozenset[int]) -> int:
        found = self._ids.get(states)
        if found is None:
            found = self._ids[states] = len(self._sets)
            self._sets.append(states)
            self._accepts.append(len(self.tokens) in states)
        return found

    def _next(self, state: int, ch: str) -> int:
        nxt = self._steps.get((state, ch))
        if nxt is None:
            if len(self._steps) > 1 << 16:  # a bound on memory for hostile names
                self._steps.clear()
            nxt = self._steps[(state, ch)] = self._id(self._step(self._sets[state], ch))
        return nxt

    def _closure(self, states: set[int]) -> frozenset[int]:
        """*states* plus those reached without a character (past a star that matches nothing).

        A state i < len(tokens) is "before token i"; i + len(tokens) + 1 is
        "inside the **/ at token i" (past its start, owing a final "/")."""
        todo = list(states)
        seen = set(states)
        n = len(self.tokens)
        while todo:
            i = todo.pop()
            if i < n and self.tokens[i].kind in (_STAR, _DSTAR, _DSTAR_DIR) and i + 1 not in seen:
                seen.add(i + 1)
                todo.append(i + 1)
        return frozenset(seen)

    def _step(self, states: frozenset[int], ch: str) -> frozenset[int]:
        n = len(self.tokens)
        nxt: set[int] = set()
        for i in states:
            if i > n:  # inside a **/
                k = i - n - 1
                nxt.add(i)
                if ch == "/":
                    nxt.add(k + 1)
                continue
            if i == n:
                continue
            tok = self.tokens[i]
            kind = tok.kind
            if kind == _CHAR:
                if tok.char == ch:
                    nxt.add(i + 1)
            elif kind == _ANY:
                if ch != "/":
                    nxt.add(i + 1)
            elif kind == _STAR:
                if ch != "/":
                    nxt.add(i)
            elif kind == _DSTAR:
                nxt.add(i)
            elif kind == _DSTAR_DIR:
                nxt.add(i + n + 1 if ch != "/" else i + 1)
                if ch == "/":
                    nxt.add(i + n + 1)
            elif tok.takes(ch):  # a _CLASS
                nxt.add(i + 1)
        return self._closure(nxt)

    def match(self, name: str) -> bool:
        if self.literal is not None:
            return name == self.literal
        state = self._start
        for ch in name:
            state = self._next(state, ch)
            if state == self._dead:
                return False
        return self._accepts[state]

    def match_or_parents(self, path: str) -> bool:
        """Whether it matches *path* or one of its parent directories (one pass:
        a parent is a prefix of *path* that ends before a "/")."""
        if self.literal is not None:
            return path == self.literal or path.startswith(self.literal + "/")
        state = self._start
        for ch in path:
            if ch == "/" and self._accepts[state]:
                return True
            state = self._next(state, ch)
            if state == self._dead:
                return False
        return self._accepts[state]


def compile_glob(pattern: str, where: str = "", double_star: bool = True) -> Glob:
    """A Go file pattern compiled to a Glob; a bad one is the user's error, naming *where*."""
    return Glob(_tokens(pattern, where, double_star))


@dataclass(frozen=True)
class Pattern:
    text: str  # cleaned, without the "!"
    exclusion: bool
    glob: Glob


class Matcher:
    """Decides, for a context-relative path, whether the ignore patterns exclude it."""

    def __init__(self, patterns: Iterable[str], source: str = ".dockerignore") -> None:
        self.patterns: list[Pattern] = []
        for p in patterns:
            exclusion = p.startswith("!")
            text = p[1:] if exclusion else p
            self.patterns.append(Pattern(text, exclusion, compile_glob(text, f"{source}: ")))
        self.exclusions = any(p.exclusion for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, path: str) -> bool:
        """Whether *path* ('/'-separated, relative) is excluded (moby's MatchesOrParentMatches).

        Each pattern is tried on the path and on each of its parent
        directories; the last pattern that matches decides.
        """
        matched = False
        for pat in self.patterns:
            # Only a pattern that could change the answer is tried.
            if pat.exclusion != matched:
                continue
            if pat.glob.match_or_parents(path):
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
