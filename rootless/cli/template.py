"""--format templates: docker's Go-template syntax, the part of it rl renders.

rl renders `{{.A.B}}`, `{{.}}`, `{{json .A}}` and `{{json .}}`, with Go's
`{{- -}}` trim markers and `{{/* comments */}}`. A template is parsed once,
before any data is seen, so a template that does not parse is an error even
when there is nothing to print (docker: `template parsing error: template:
:1: unclosed action`). What Go would parse but rl cannot render (range, if,
pipes, variables...) is refused at the same point, saying so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument

_FIELD = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = frozenset({"if", "else", "end", "range", "with", "define", "template", "block",
                       "break", "continue", "nil", "true", "false"})
_SPACE = " \t\r\n"
_KNOWN = "{{.Field}}, {{.}}, {{json .Field}} and {{json .}}"
_UNTERMINATED = {'"': "unterminated quoted string", "'": "unterminated character constant",
                 "`": "unterminated raw quoted string"}


@dataclass(frozen=True)
class _Action:
    func: str  # "" (print the value) or "json"
    path: tuple[str, ...]  # field names; () is the data itself


class TemplateError(InvalidArgument):
    def __init__(self, line: int, message: str, parsing: bool = True) -> None:
        head = "template parsing error: " if parsing else ""
        super().__init__(f"{head}template: :{line}: {message}")


class Template:
    def __init__(self, parts: list[str | _Action]) -> None:
        self._parts = parts

    def render(self, data: Any) -> str:
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = data
            for name in part.path:
                if not isinstance(value, dict) or name not in value:
                    raise InvalidArgument(f"template: can't evaluate field {name}")
                value = value[name]
            out.append(json.dumps(value) if part.func == "json" else _text(value))
        return "".join(out)


def _text(v: Any) -> str:
    """A value as Go's template prints it (JSON for lists and maps: docker's habit)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "<no value>"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def parse(text: str) -> Template:
    """A --format value as a Template (`\\t` and `\\n`: tab and newline, as docker reads them)."""
    src = text.replace("\\t", "\t").replace("\\n", "\n")
    parts: list[str | _Action] = []
    pos = 0
    trim_next = False
    while True:
        start = src.find("{{", pos)
        literal = src[pos:] if start < 0 else src[pos:start]
        if trim_next:
            literal = literal.lstrip(_SPACE)
        if start < 0:
            parts.append(literal)
            return Template([p for p in parts if p != ""])
        line = 1 + src.count("\n", 0, start)
        i = start + 2
        if src.startswith("-", i) and src[i + 1:i + 2] in tuple(_SPACE):
            literal = literal.rstrip(_SPACE)
            i += 2
        parts.append(literal)
        if src.startswith("/*", i):
            close = src.find("*/", i + 2)
            if close < 0:
                raise TemplateError(line, "unclosed comment")
            end = close + 2
            if src.startswith(" -}}", end):
                end, trim_next = end + 2, True
            elif src.startswith("}}", end):
                trim_next = False
            else:
                raise TemplateError(line, "comment ends before closing delimiter")
            pos = end + 2
            continue
        end = _action_end(src, i, line)
        body = src[i:end]
        trim_next = len(body) >= 2 and body[-1] == "-" and body[-2] in _SPACE
        if trim_next:
            body = body[:-1]
        parts.append(_action(body, line))
        pos = end + 2


def _action_end(src: str, i: int, line: int) -> int:
    """Where the action starting at i ends ("}}" outside quotes), as Go's lexer finds it."""
    while i < len(src):
        if src.startswith("}}", i):
            return i
        if src[i] in "\"'`":
            close = _quote_end(src, i)
            if close < 0:
                raise TemplateError(line, _UNTERMINATED[src[i]])
            i = close
        i += 1
    raise TemplateError(line, "unclosed action")


def _quote_end(src: str, i: int) -> int:
    q = src[i]
    i += 1
    while i < len(src):
        c = src[i]
        if c == "\\" and q != "`":
            i += 2
            continue
        if c == q:
            return i
        if c == "\n" and q != "`":
            return -1
        i += 1
    return -1


def _action(body: str, line: int) -> _Action:
    words = body.split()
    if not words:
        raise TemplateError(line, "missing value for command")
    head = words[0]
    if _IDENT.fullmatch(head) and head not in _KEYWORDS:
        if head != "json":
            raise TemplateError(line, f'function "{head}" not defined')
        if len(words) == 2 and _FIELD.fullmatch(words[1]):
            return _Action("json", _path(words[1]))
    elif len(words) == 1 and _FIELD.fullmatch(head):
        return _Action("", _path(head))
    raise TemplateError(line, f"rl cannot render {{{{{' '.join(words)}}}}} (it knows {_KNOWN})",
                        parsing=False)


def _path(field: str) -> tuple[str, ...]:
    return tuple(p for p in field.split(".") if p)
