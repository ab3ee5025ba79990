"""Variable expansion in Dockerfile words, as BuildKit's shell lexer does it.

The builder, not a shell, expands `$V` and `${V...}` in the words of ENV,
ARG, LABEL, WORKDIR, USER, COPY/ADD, EXPOSE, STOPSIGNAL, FROM, VOLUME and
RUN's mounts (RUN/CMD/ENTRYPOINT commands go to the image's shell as
written). The rules are BuildKit's (frontend/dockerfile/shell/lex.go), which
differ from POSIX sh in places a Dockerfile can see: no `~`, no command
substitution, `${V:#p}` is an error, patterns know only `*` and `?`, and a
quoted empty string makes no word. Written here rather than taken from a
library because no Python package implements BuildKit's dialect; shlex and
bashlex follow POSIX/bash and would give other results.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from rootless.errors import InvalidArgument

_EOF = ""

# POSIX special parameters: `$@`, `$#`, ... name one character.
_SPECIAL = frozenset("@*#?-$!0")


def _go_space(ch: str) -> bool:
    """Go's unicode.IsSpace: Latin-1 spaces plus the Z categories (not \\x1c-\\x1f)."""
    if ch in "\t\n\v\f\r \x85\xa0":
        return True
    return ord(ch) > 0xFF and unicodedata.category(ch) == "Zs"


def _go_letter(ch: str) -> bool:
    return unicodedata.category(ch).startswith("L")


def _go_digit(ch: str) -> bool:
    return unicodedata.category(ch) == "Nd"


class ExpansionError(InvalidArgument):
    """A word the lexer cannot expand; the message is BuildKit's."""


@dataclass
class Expanded:
    """One expansion: the word, its split into words, and the names looked up."""

    word: str
    words: list[str]
    matched: set[str] = field(default_factory=set)
    unmatched: set[str] = field(default_factory=set)


class _Words:
    """Word splitting after expansion: unquoted whitespace separates words."""

    def __init__(self) -> None:
        self.buf = ""
        self.words: list[str] = []
        self.in_word = False

    def char(self, ch: str) -> None:
        if _go_space(ch):
            if self.in_word and self.buf:
                self.words.append(self.buf)
                self.buf = ""
                self.in_word = False
        else:
            self.raw_char(ch)

    def raw_char(self, ch: str) -> None:
        self.buf += ch
        self.in_word = True

    def text(self, s: str) -> None:
        for ch in s:
            self.char(ch)

    def raw_text(self, s: str) -> None:
        # A quoted "" sets in_word but adds nothing: it makes no word of its own.
        self.buf += s
        self.in_word = True

    def done(self) -> list[str]:
        if self.buf:
            self.words.append(self.buf)
            self.buf = ""
        return self.words


@dataclass(frozen=True)
class Lexer:
    """BuildKit's lexer settings: the escape character and its four switches.

    raw_quotes keeps quote characters in the result, raw_escapes keeps escape
    characters, skip_quotes treats quotes as ordinary characters (heredoc
    bodies), skip_unset leaves references to unset variables as written.
    """

    escape: str = "\\"
    raw_quotes: bool = False
    raw_escapes: bool = False
    skip_quotes: bool = False
    skip_unset: bool = False

    def expand(self, word: str, env: Mapping[str, str]) -> Expanded:
        """Expand one word; `words` is the same text split as BuildKit splits it."""
        run = _Run(self, word, env)
        try:
            result, words = run.until(_EOF, self.raw_escapes)
        except ExpansionError as e:
            raise ExpansionError(f"failed to process {_go_quote(word)}: {e.message}") from None
        return Expanded(result, words, run.matched, run.unmatched)

    def word(self, word: str, env: Mapping[str, str]) -> str:
        return self.expand(word, env).word

    def words(self, word: str, env: Mapping[str, str]) -> list[str]:
        return self.expand(word, env).words


def _go_quote(s: str) -> str:
    """Go's %q for the common case: a double-quoted string with \\ and " escaped."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class _Run:
    """One pass over a word: a cursor, the environment and what was looked up."""

    def __init__(self, lex: Lexer, text: str, env: Mapping[str, str]) -> None:
        self.lex = lex
        self.text = text
        self.pos = 0
        self.env = env
        self.raw_escapes = lex.raw_escapes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else _EOF

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def get(self, name: str) -> str | None:
        value = self.env.get(name)
        (self.unmatched if value is None else self.matched).add(name)
        return value

    def until(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Process up to `stop` (consumed) or the end when stop is _EOF."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._until(stop)
        finally:
            self.raw_escapes = saved

    def _until(self, stop: str) -> tuple[str, list[str]]:
        out: list[str] = []
        words = _Words()
        quotes = not self.lex.skip_quotes
        while (ch := self.peek()) != _EOF:
            if stop and ch == stop:
                self.next()
                return "".join(out), words.done()
            if ch == "$":
                value = self.dollar()
                out.append(value)
                words.text(value)  # an expanded value is split on its spaces
            elif ch == "<":
                value = self.heredoc_marker()
                out.append(value)
                words.raw_text(value)
            elif quotes and ch == "'":
                value = self.single_quoted()
                out.append(value)
                words.raw_text(value)
            elif quotes and ch == '"':
                value = self.double_quoted()
                out.append(value)
                words.raw_text(value)
            else:
                self.next()
                if ch == self.lex.escape:
                    if self.raw_escapes:
                        words.raw_char(ch)
                        out.append(ch)
                    ch = self.next()
                    if ch == _EOF:  # a trailing escape is dropped
                        break
                    words.raw_char(ch)
                else:
                    words.char(ch)
                out.append(ch)
        if stop:
            raise ExpansionError(
                f"unexpected end of statement while looking for matching {stop}"
            )
        return "".join(out), words.done()

    def single_quoted(self) -> str:
        # Everything up to the next ' is literal; a ' cannot be escaped inside.
        opening = self.next()
        out = [opening] if self.lex.raw_quotes else []
        while True:
            ch = self.next()
            if ch == _EOF:
                raise ExpansionError(
                    "unexpected end of statement while looking for matching single-quote"
                )
            if ch == "'":
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quoted(self) -> str:
        # Literal except $ and the escape, which quotes only ", $ and itself.
        opening = self.next()
        out = [opening] if self.lex.raw_quotes else []
        while True:
            ch = self.peek()
            if ch == _EOF:
                raise ExpansionError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.next()
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.lex.escape:
                if self.raw_escapes:
                    out.append(ch)
                following = self.peek()
                if following == _EOF:
                    continue  # then the missing " is reported
                if following in ('"', "$", self.lex.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        """A variable name: letters, digits, _; or digits alone; or one special."""
        first = self.peek()
        if first == _EOF:
            return ""
        if _go_digit(first):
            start = self.pos
            while (ch := self.peek()) != _EOF and _go_digit(ch):
                self.next()
            return self.text[start : self.pos]
        if first in _SPECIAL:
            return self.next()
        start = self.pos
        while (ch := self.peek()) != _EOF and (_go_letter(ch) or _go_digit(ch) or ch == "_"):
            self.next()
        return self.text[start : self.pos]

    def unset(self, value: str | None) -> bool:
        return value is None and self.lex.skip_unset

    def dollar(self) -> str:
        self.next()  # the $
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value = self.get(name)
            if self.unset(value):
                return "$" + name
            return value or ""
        self.next()  # the {
        first = self.peek()
        if first == _EOF:
            raise ExpansionError("syntax error: missing '}'")
        if first in "{}:":
            raise ExpansionError("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if op == "}":
            value = self.get(name)
            if self.unset(value):
                return "${" + name + "}"
            return value or ""
        if op == "/":
            return self.replace(name)
        null_is_unset = op == ":"
        if null_is_unset:
            op = self.next()
        spelled = (":" if null_is_unset else "") + op
        if op not in ("+", "-", "?", "#", "%") or (null_is_unset and op in "#%"):
            if op == _EOF:
                raise ExpansionError("syntax error: missing '}'")
            raise ExpansionError(f"unsupported modifier ({spelled}) in substitution")
        # A pattern keeps its escapes: `\*` there is a literal star.
        word = self._operand("}", op in "#%", "syntax error: missing '}'")
        value = self.get(name)
        if self.unset(value):
            return "${" + name + spelled + word + "}"
        empty = value is None or (null_is_unset and value == "")
        if op == "-":
            return word if empty else (value or "")
        if op == "+":
            return "" if empty else word
        if op == "?":
            if value is None:
                raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
            if empty:
                raise ExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        greedy = word.startswith(op)
        if greedy:
            word = word[1:]
        if op == "#":
            return _trim_prefix(word, value or "", greedy)
        return _trim_suffix(word, value or "", greedy)

    def _operand(self, stop: str, raw_escapes: bool, eof_message: str) -> str:
        try:
            word, _ = self.until(stop, raw_escapes)
        except ExpansionError:
            if self.peek() == _EOF:
                raise ExpansionError(eof_message) from None
            raise
        return word

    def replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        pattern = self._operand("/", True, "syntax error: missing '/' in ${}")
        replacement = self._operand("}", True, "syntax error: missing '}'")
        value = self.get(name)
        if self.unset(value):
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        regex = _pattern(pattern, greedy=True, anchored=False)
        text = value or ""
        if replace_all:
            # BuildKit replaces all with Go's template rules, one with the text as is.
            return regex.sub(lambda m: _go_template(replacement, m), text)
        m = regex.search(text)
        if m is None:
            return text
        return text[: m.start()] + replacement + text[m.end() :]

    def heredoc_marker(self) -> str:
        # `<<` and the blanks after it stay together, so `<< EOF` is one word.
        self.next()
        if self.peek() != "<":
            return "<"
        self.next()
        start = self.pos
        while self.peek() in ("\t", "\r", " "):
            self.next()
        return "<<" + self.text[start : self.pos]


_GO_GROUP = re.compile(r"\$(\$|\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)?")


def _go_template(replacement: str, match: re.Match[str]) -> str:
    """What Go's Regexp.ReplaceAllString makes of a template when the pattern has no groups.

    `$$` is a dollar; `$0`/`${0}` the whole match; any other `$name` or
    `${name}` names a group that does not exist, so it vanishes; a `$` that
    starts no name stays.
    """

    def one(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref is None:
            return "$"
        if ref == "$":
            return "$"
        ref = ref.strip("{}")
        return match.group(0) if ref.isdigit() and int(ref) == 0 else ""

    return _GO_GROUP.sub(one, replacement)


def _pattern(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """A shell pattern (`*`, `?`, `\\` escapes; no brackets) as a regex."""
    out = ["^"] if anchored else []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(".*" if greedy else ".*?")
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            following = pattern[i] if i < len(pattern) else ""
            if following in ("}", "/"):
                continue  # escaped to end the ${} word, not part of the pattern
            if following not in ("*", "?", "\\"):
                shown = following or "\ufffd"
                raise ExpansionError(
                    f"invalid pattern ({pattern}) in substitution: invalid escape '\\{shown}'"
                )
            out.append(re.escape(following))
            i += 1
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    m = _pattern(pattern, greedy=greedy, anchored=True).search(value)
    return value[m.end() :] if m else value


def _reverse_pattern(pattern: str) -> str:
    # Reverse, keeping each `\x` escape in front of what it escapes.
    units: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            units.append(pattern[i : i + 2])
            i += 2
        else:
            units.append(pattern[i])
            i += 1
    return "".join(reversed(units))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # The shortest match at the right end is the shortest at the left of the reversal.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]

