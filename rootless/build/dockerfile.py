"""A Dockerfile as typed data: directives, stages and their instructions.

The syntax is BuildKit's own Go parser, through the PyPI package
`dockerfile` (continuations, comments, JSON vs shell form, heredocs are its
work). This module adds what BuildKit's `instructions` package adds on top:
the instruction set, each instruction's flags, FROM's `AS name`,
HEALTHCHECK's options, ONBUILD's inner instruction, heredoc delimiters
(chomp, quoted = no expansion), stages, and errors that name the line in
BuildKit's words ("dockerfile parse error on line N: ...").
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import dockerfile as _gofile

from rootless.build.expand import ExpansionError, Lexer
from rootless.errors import InvalidArgument

DIRECTIVES = ("syntax", "escape", "check")
_DIRECTIVE = re.compile(r"^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")

# Each instruction's flags and their kinds (BuildKit's instructions/parse.go).
_STRING, _BOOL, _STRINGS = "string", "bool", "strings"
FLAGS: dict[str, dict[str, str]] = {
    "ADD": {
        "chown": _STRING, "chmod": _STRING, "link": _BOOL, "keep-git-dir": _BOOL,
        "checksum": _STRING, "unpack": _BOOL, "exclude": _STRINGS,
    },
    "ARG": {},
    "CMD": {},
    "COPY": {
        "chown": _STRING, "from": _STRING, "chmod": _STRING, "link": _BOOL,
        "exclude": _STRINGS, "parents": _BOOL,
    },
    "ENTRYPOINT": {},
    "ENV": {},
    "EXPOSE": {},
    "FROM": {"platform": _STRING},
    "HEALTHCHECK": {
        "interval": _STRING, "timeout": _STRING, "start-period": _STRING,
        "start-interval": _STRING, "retries": _STRING,
    },
    "LABEL": {},
    "MAINTAINER": {},
    "ONBUILD": {},
    "RUN": {"mount": _STRINGS, "network": _STRING, "security": _STRING},
    "SHELL": {},
    "STOPSIGNAL": {},
    "USER": {},
    "VOLUME": {},
    "WORKDIR": {},
}
INSTRUCTIONS = frozenset(FLAGS)
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")
_HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)([^<]*)$")
NETWORKS = ("default", "none", "host")
SECURITIES = ("sandbox", "insecure")

FlagValue = str | bool | tuple[str, ...]


@dataclass(frozen=True)
class Directives:
    """The parser directives at the top of the file, and the lines they were on."""

    escape: str = "\\"
    syntax: str | None = None
    check: str | None = None
    lines: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Heredoc:
    """A here-document: `<<EOF` (expanded) or `<<"EOF"` (literal), `<<-` strips tabs."""

    name: str
    content: str  # with the tabs of a `<<-` already removed
    expand: bool
    chomp: bool
    fd: int = 0


@dataclass(frozen=True)
class Healthcheck:
    """HEALTHCHECK's test and its options as written (durations unparsed: "5s")."""

    test: tuple[str, ...]  # ("NONE",), ("CMD", argv...) or ("CMD-SHELL", command)
    interval: str = ""
    timeout: str = ""
    start_period: str = ""
    start_interval: str = ""
    retries: int | None = None


@dataclass(frozen=True)
class Mount:
    """One `RUN --mount=...` after BuildKit's checks (type bind when not given)."""

    type: str
    target: str = ""
    source: str = ""
    from_: str = ""
    id: str = ""
    sharing: str = ""
    readonly: bool = True
    required: bool = False
    size: str = ""
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    env: str | None = None


@dataclass(frozen=True)
class Instruction:
    """One instruction: kind (upper case), its words, flags, form and lines.

    `args` are the words as the parser left them, before expansion (ENV and
    LABEL: key, value, key, value ...; RUN/CMD/ENTRYPOINT shell form: one
    string). `json` is the exec form.
    """

    kind: str
    args: tuple[str, ...]
    flags: dict[str, FlagValue]
    json: bool
    original: str
    start_line: int
    end_line: int
    heredocs: tuple[Heredoc, ...] = ()
    stage_name: str | None = None  # FROM ... AS name, lower-cased as BuildKit does
    healthcheck: Healthcheck | None = None
    trigger: Instruction | None = None  # ONBUILD's inner instruction
    mounts: tuple[Mount, ...] = ()  # RUN's --mount values without variables

    def flag(self, name: str) -> FlagValue | None:
        return self.flags.get(name)

    def sources(self) -> tuple[str, ...]:
        """COPY/ADD's source paths: the words before the destination, heredocs left out."""
        return tuple(w for w in self.args[:-1] if not is_heredoc_word(w))

    def dest(self) -> str:
        """COPY/ADD's destination: the last word."""
        return self.args[-1]

    def pairs(self) -> list[tuple[str, str]]:
        """ENV/LABEL's key=value pairs (unexpanded)."""
        return list(zip(self.args[0::2], self.args[1::2], strict=True))


@dataclass(frozen=True)
class Stage:
    """FROM to the next FROM: the base, its name and its instructions."""

    index: int
    base: str  # unexpanded: `$BASE` is resolved with the global args
    name: str | None
    platform: str | None
    from_: Instruction
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True)
class Dockerfile:
    directives: Directives
    global_args: tuple[Instruction, ...]  # the ARGs before the first FROM
    stages: tuple[Stage, ...]

    def stage(self, name_or_index: str) -> Stage | None:
        """A stage by name (the first of that name: a duplicate is a lint warning) or index."""
        for st in self.stages:
            if st.name == name_or_index.lower():
                return st
        if name_or_index.isdigit() and int(name_or_index) < len(self.stages):
            return self.stages[int(name_or_index)]
        return None


def _lines(text: str) -> list[str]:
    """Lines as Go's parser counts them: ended by \n only (not \x85 or \u2028)."""
    parts = [part + "\n" for part in text.split("\n")]
    parts[-1] = parts[-1][:-1]
    return parts if parts[-1] else parts[:-1]


def is_heredoc_word(word: str) -> bool:
    """`<<EOF`, `<<-"EOF"`, `3<<EOF`: a word that names a heredoc (BuildKit's test)."""
    m = _HEREDOC_WORD.match(word)
    if m is None or not m.group(3):
        return False
    try:
        return len(Lexer(skip_unset=True).words(m.group(3), {})) == 1
    except ExpansionError:
        return False


def _error(line: int, message: str) -> InvalidArgument:
    return InvalidArgument(f"dockerfile parse error on line {line}: {message}")


def parse_directives(text: str) -> Directives:
    """`# syntax=`, `# escape=`, `# check=` at the top, until the first other line."""
    found: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(_lines(text.removeprefix("\ufeff")), 1):
        line = line.rstrip("\r\n")
        if not line.startswith("#"):
            break
        m = _DIRECTIVE.match(line[1:].lstrip())
        if m is None or m.group(1).lower() not in DIRECTIVES:
            break
        key = m.group(1).lower()
        if key in found:
            raise _error(number, f"only one {key} parser directive can be used")
        found[key] = m.group(2)
        lines[key] = number
    escape = found.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise _error(lines["escape"], f"invalid escape token '{escape}' does not match ` or \\")
    return Directives(escape, found.get("syntax"), found.get("check"), lines)


def _outcome(lines: list[str], k: int) -> tuple[str | None, tuple[_gofile.Command, ...]]:
    """The error of the first k lines (None if they parse), and their commands."""
    try:
        return None, tuple(_gofile.parse_string("".join(lines[:k])))
    except _gofile.GoParseError as e:
        message = str(e)
        return (None if message == "file with no instructions" else message), ()


def _failing_line(text: str, message: str, escape: str) -> int:
    """The first line of the instruction BuildKit's parser fails on.

    The package reports no line, so it is searched for over prefixes of
    whole lines: the shortest prefix failing with the same message ends on
    the faulty line. A prefix that cuts a good heredoc fails too ("unterminated
    heredoc"), so for other messages that outcome counts as parsing, and the
    search bisects; an unterminated heredoc is found among the `<<` lines.
    """
    lines = _lines(text)
    if message == "unterminated heredoc":
        # The open heredoc is on a line with `<<` whose preceding lines parse;
        # a later `<<` line inside its body has preceding lines that do not.
        good = 0
        for number in reversed([i for i, ln in enumerate(lines, 1) if "<<" in ln]):
            if _outcome(lines, number - 1)[0] is None:
                good = number - 1
                break
    else:
        lo, hi = 0, len(lines)  # prefix(lo) does not fail so, prefix(hi) does
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _outcome(lines, mid)[0] == message:
                hi = mid
            else:
                lo = mid
        good = lo
    _, commands = _outcome(lines, good)
    # Blank lines and comments may sit inside a continuation.
    code = [ln.strip() for ln in lines[:good] if ln.strip() and not ln.lstrip().startswith("#")]
    if commands and code and code[-1].endswith(escape):
        return int(commands[-1].start_line)
    for number in range(good + 1, len(lines) + 1):
        stripped = lines[number - 1].strip()
        if stripped and not stripped.startswith("#"):
            return number
    return max(good, 1)


def _check_text(text: str) -> None:
    """What the package cannot carry: it passes a C string to Go.

    A NUL would silently end the file there, and a lone surrogate (bytes
    that were not UTF-8, decoded with surrogateescape) crashes the process.
    """
    for number, line in enumerate(_lines(text), 1):
        if "\0" in line:
            raise _error(number, "the Dockerfile contains a NUL byte")
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            raise _error(number, "the Dockerfile is not valid UTF-8") from None


def parse(text: str) -> Dockerfile:
    """Parse a Dockerfile's text; InvalidArgument names the line of any fault."""
    _check_text(text)
    directives = parse_directives(text)
    try:
        commands = _gofile.parse_string(text)
    except _gofile.GoParseError as e:
        message = str(e)
        if message == "file with no instructions":
            raise _error(1, message) from None
        raise _error(_failing_line(text, message, directives.escape), message) from None
    global_args: list[Instruction] = []
    stages: list[tuple[Instruction, list[Instruction]]] = []
    for command in commands:
        ins = _instruction(command, directives)
        if ins.kind == "FROM":
            stages.append((ins, []))
        elif not stages and ins.kind == "ARG":
            global_args.append(ins)
        elif not stages:
            raise _error(ins.start_line, "no build stage in current context")
        else:
            stages[-1][1].append(ins)
    if not stages:
        # Only ARGs: BuildKit's converter says this, with no line to name.
        raise InvalidArgument("dockerfile contains no stages to build")
    out: list[Stage] = []
    for index, (frm, body) in enumerate(stages):
        platform = frm.flags.get("platform")
        out.append(Stage(
            index, frm.args[0], frm.stage_name,
            platform if isinstance(platform, str) else None, frm, tuple(body),
        ))
    return Dockerfile(directives, tuple(global_args), tuple(out))


def _split_flags(known: dict[str, str], raw: tuple[str, ...], line: int) -> dict[str, FlagValue]:
    """BuildKit's BFlags: `--name=value`, booleans may stand alone, some repeat."""
    flags: dict[str, FlagValue] = {}
    for arg in raw:
        if arg == "--":
            break
        if not arg.startswith("--"):
            raise _error(line, f"arg should start with -- : {arg}")
        name, eq, value = arg.partition("=")
        key = name[2:]
        kind_of = known.get(key)
        if kind_of is None:
            raise _error(line, f"unknown flag: {name}")
        if key in flags and kind_of != _STRINGS:
            raise _error(line, f"duplicate flag specified: {name}")
        if kind_of == _BOOL:
            if eq and not value:
                raise _error(line, f"missing a value on flag: {name}")
            if value.lower() not in ("", "true", "false"):
                raise _error(line, f"expecting boolean value for flag {name}, not: {value}")
            flags[key] = value.lower() != "false"
        elif not eq:
            raise _error(line, f"missing a value on flag: {name}")
        elif kind_of == _STRINGS:
            before = flags.get(key, ())
            assert isinstance(before, tuple)
            flags[key] = (*before, value)
        else:
            flags[key] = value
    return flags


def _heredocs(command: _gofile.Command, words: tuple[str, ...]) -> tuple[Heredoc, ...]:
    """The package gives names and bodies; the delimiter words say chomp and quoting."""
    if not command.heredocs:
        return ()
    raw = Lexer(raw_quotes=True, raw_escapes=True, skip_unset=True)
    plain, quoted = Lexer(skip_unset=True), Lexer(raw_quotes=True, skip_unset=True)
    marks: dict[str, tuple[bool, bool, int]] = {}
    for word in raw.words(" ".join(words), {}):
        m = _HEREDOC_WORD.match(word)
        if m is None or not m.group(3):
            continue
        names = plain.words(m.group(3), {})
        if len(names) != 1:
            continue
        spelled = quoted.words(m.group(3), {})[0]
        # Quotes anywhere in the delimiter turn expansion of the body off.
        expand = sum(names[0].count(q) for q in "'\"") == sum(spelled.count(q) for q in "'\"")
        marks[names[0]] = (m.group(2) == "-", expand, int(m.group(1) or 0))
    docs = []
    for doc in command.heredocs:
        chomp, expand, fd = marks.get(doc.name, (False, True, doc.file_descriptor))
        content = re.sub(r"(?m)^\t+", "", doc.content) if chomp else doc.content
        docs.append(Heredoc(doc.name, content, expand, chomp, fd))
    return tuple(docs)


def _instruction(command: _gofile.Command, directives: Directives) -> Instruction:
    kind = command.cmd.upper()
    line = command.start_line
    if kind not in INSTRUCTIONS:
        raise _error(line, f"unknown instruction: {command.cmd}")
    if kind == "ONBUILD":
        return _onbuild(command, directives)
    args = tuple(command.value)
    known = FLAGS[kind]
    if kind == "HEALTHCHECK" and args and args[0].upper() == "NONE":
        known = {}  # NONE takes no options: BuildKit defines none, so any flag is unknown
    flags = _split_flags(known, tuple(command.flags), line)
    try:
        heredocs = _heredocs(command, args)
    except ExpansionError as e:
        raise _error(line, e.message) from None
    ins = Instruction(
        kind, args, flags, bool(command.json), command.original, line, command.end_line, heredocs,
    )
    return _check(ins, directives.escape)


def _onbuild(command: _gofile.Command, directives: Directives) -> Instruction:
    # The package keeps the trigger's words but drops its flags: parse the
    # trigger's own text again, with the same escape character.
    line = command.start_line
    inner_text = re.sub(r"(?i)^\s*ONBUILD\s*", "", command.original)
    if not inner_text.strip():
        raise _error(line, "ONBUILD requires at least one argument")
    trigger_kind = inner_text.split(None, 1)[0].upper()
    if trigger_kind == "ONBUILD":
        raise _error(line, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger_kind in ("MAINTAINER", "FROM"):
        raise _error(line, f"{trigger_kind} isn't allowed as an ONBUILD trigger")
    prefix = f"# escape={directives.escape}\n"
    try:
        (inner,) = _gofile.parse_string(prefix + inner_text)
    except _gofile.GoParseError as e:
        raise _error(line, str(e)) from None
    trigger = replace(
        _instruction(inner, directives), start_line=line, end_line=command.end_line
    )
    return Instruction(
        "ONBUILD", (inner_text,), {}, False, command.original, line, command.end_line,
        trigger=trigger,
    )


def _check(ins: Instruction, escape: str) -> Instruction:
    """BuildKit's per-instruction argument checks, and the typed extras."""
    kind, args, line = ins.kind, ins.args, ins.start_line
    if kind in ("ENV", "LABEL"):
        if not args:
            raise _error(line, f"{kind} requires at least one argument")
        if any(not key for key in args[0::2]):
            raise _error(line, f"{kind} names can not be blank")
    elif kind in ("ARG", "EXPOSE", "VOLUME", "ONBUILD") and not args:
        raise _error(line, f"{kind} requires at least one argument")
    elif kind in ("USER", "STOPSIGNAL", "MAINTAINER", "WORKDIR") and len(args) != 1:
        raise _error(line, f"{kind} requires exactly one argument")
    elif kind in ("COPY", "ADD"):
        if len(args) < 2:
            raise _error(
                line, f"{kind} requires at least two arguments, but only one was provided. "
                "Destination could not be determined",
            )
        if is_heredoc_word(args[-1]):
            raise _error(line, f"{kind} cannot accept a heredoc as a destination")
        source = ins.flags.get("from")
        if isinstance(source, str) and _expands(source, escape):
            raise _error(
                line, "variable expansion is not supported for --from, define a new stage "
                "with FROM using ARG from global scope as a workaround",
            )
    elif kind == "SHELL" and not ins.json:
        raise _error(line, "SHELL requires the arguments to be in JSON form")
    elif kind == "SHELL" and not args:
        raise _error(line, "SHELL requires at least one argument")
    if kind == "ARG":
        for arg in args:
            if arg.startswith("="):
                raise _error(line, "ARG names can not be blank")
    if kind == "VOLUME" and any(not a.strip() for a in args):
        raise _error(line, "VOLUME specified can not be an empty string")
    if kind == "FROM":
        return _from(ins)
    if kind == "HEALTHCHECK":
        return replace(ins, healthcheck=_healthcheck(ins))
    if kind == "RUN":
        return replace(ins, mounts=_run_flags(ins))
    return ins


def _expands(word: str, escape: str) -> bool:
    """Whether a word changes under expansion even with nothing set (`$X`, quotes)."""
    try:
        return Lexer(escape=escape).word(word, {}) != word
    except ExpansionError:
        return True


def _from(ins: Instruction) -> Instruction:
    args = ins.args
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise _error(
                ins.start_line,
                f'invalid name for build stage: "{args[2]}", '
                "name can't start with a number or contain symbols",
            )
        return replace(ins, stage_name=name)
    if len(args) != 1:
        raise _error(ins.start_line, "FROM requires either one or three arguments")
    return ins


def _healthcheck(ins: Instruction) -> Healthcheck:
    line = ins.start_line
    if not ins.args:
        raise _error(line, "HEALTHCHECK requires at least one argument")
    kind = ins.args[0].upper()
    rest = ins.args[1:]
    if kind == "NONE":
        if rest:
            raise _error(line, "HEALTHCHECK NONE takes no arguments")
        return Healthcheck(("NONE",))
    if kind != "CMD":
        raise _error(line, f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    if not rest or not any(rest):
        raise _error(line, "Missing command after HEALTHCHECK CMD")
    test = ("CMD", *rest) if ins.json else ("CMD-SHELL", " ".join(rest))
    retries_text = ins.flags.get("retries")
    retries: int | None = None
    if isinstance(retries_text, str):
        try:
            retries = int(retries_text, 10)
        except ValueError:
            raise _error(
                line, f'strconv.ParseInt: parsing "{retries_text}": invalid syntax'
            ) from None
        if retries < 0:
            raise _error(line, f"--retries cannot be negative ({retries})")

    def text(name: str) -> str:
        value = ins.flags.get(name, "")
        return value if isinstance(value, str) else ""

    return Healthcheck(
        test, text("interval"), text("timeout"), text("start-period"), text("start-interval"),
        retries,
    )


def _run_flags(ins: Instruction) -> tuple[Mount, ...]:
    line = ins.start_line
    # Neither is expanded by BuildKit: `--network=$NET` is an invalid mode.
    network = ins.flags.get("network")
    if isinstance(network, str) and network not in NETWORKS:
        raise _error(line, f'invalid network mode "{network}"')
    security = ins.flags.get("security")
    if isinstance(security, str) and security not in SECURITIES:
        raise _error(line, f'security "{security}" is not valid')
    mounts = ins.flags.get("mount", ())
    assert isinstance(mounts, tuple)
    out = []
    for text in mounts:
        # A mount naming a variable is checked once the builder has expanded it,
        # but its stage must be known now.
        if "$" in text:
            for item in text.split(","):
                key, _, value = item.partition("=")
                if key.lower() == "from" and "$" in value[:-1]:
                    raise _error(line, "'from' doesn't support variable expansion, "
                                 "define alias stage instead")
            continue
        try:
            out.append(parse_mount(text))
        except InvalidArgument as e:
            raise _error(line, e.message) from None
    return tuple(out)


MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_SHARING = ("shared", "private", "locked")


def _go_bool(key: str, value: str) -> bool:
    # Go's strconv.ParseBool spellings.
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise InvalidArgument(f"invalid value for {key}: {value}")


def _number(key: str, value: str, base: int) -> int:
    try:
        n = int(value, base)
    except ValueError:
        n = -1
    if not 0 <= n < 1 << 32 or not value.isalnum():
        raise InvalidArgument(f"invalid value {value} for {key}")
    return n


def parse_mount(text: str, expand: Callable[[str], str] | None = None) -> Mount:
    """One `--mount` value, with BuildKit's rules and words.

    `expand` is applied to each field's value (never to keys or the commas
    between fields), as BuildKit expands a mount.
    """
    try:
        (fields,) = list(csv.reader([text], strict=True)) or [[]]
    except csv.Error as e:
        raise InvalidArgument(f"failed to parse csv mounts: {e}") from None
    values: dict[str, object] = {"type": "bind"}
    readonly: bool | None = None
    for item in fields:
        key, eq, value = item.partition("=")
        key = key.lower()
        mtype = str(values["type"])
        if eq and expand is not None:
            value = expand(value)
        if not eq:
            if key in ("readonly", "ro"):
                readonly = True
            elif key in ("readwrite", "rw"):
                readonly = False
            elif key == "required" and mtype in ("secret", "ssh"):
                values["required"] = True
            elif key == "required":
                raise InvalidArgument(f"unexpected key '{key}' for mount type '{mtype}'")
            else:
                raise InvalidArgument(f"invalid field '{item}' must be a key=value pair")
            continue
        if key == "type":
            if value.lower() not in MOUNT_TYPES:
                raise InvalidArgument(f'unsupported mount type "{value}"')
            values["type"] = value.lower()
        elif key == "from":
            values["from_"] = value
        elif key in ("source", "src"):
            values["source"] = value
        elif key in ("target", "dst", "destination"):
            values["target"] = value
        elif key in ("readonly", "ro"):
            readonly = _go_bool(key, value)
        elif key in ("readwrite", "rw"):
            readonly = not _go_bool(key, value)
        elif key == "required":
            if mtype not in ("secret", "ssh"):
                raise InvalidArgument(f"unexpected key '{key}' for mount type '{mtype}'")
            values["required"] = _go_bool(key, value)
        elif key == "size":
            if mtype != "tmpfs":
                raise InvalidArgument(f"unexpected key '{key}' for mount type '{mtype}'")
            values["size"] = value
        elif key == "id":
            values["id"] = value
        elif key == "sharing":
            if value.lower() not in _SHARING:
                raise InvalidArgument(f'unsupported sharing value "{value}"')
            values["sharing"] = value.lower()
        elif key == "mode":
            values["mode"] = _number("mode", value, 8)
        elif key in ("uid", "gid"):
            values[key] = _number(key, value, 10)
        elif key == "env":
            values["env"] = value
        else:
            raise InvalidArgument(f"unexpected key '{key}' in '{item}'")
    mtype = str(values["type"])
    if mtype not in ("secret", "ssh", "cache"):
        for key in ("mode", "uid", "gid"):
            if key in values:
                raise InvalidArgument(f'{key} not allowed for "{mtype}" type mounts')
    if readonly is None:
        readonly = mtype not in ("cache", "tmpfs")
    if mtype == "secret":
        if values.get("from_"):
            raise InvalidArgument("secret mount should not have a from")
        if values.get("sharing"):
            raise InvalidArgument("secret mount should not define sharing")
        if not (values.get("source") or values.get("target") or values.get("id")):
            raise InvalidArgument("invalid secret mount. one of source, target required")
        if values.get("source") and values.get("id"):
            raise InvalidArgument("both source and id can't be set")
    if values.get("sharing") and mtype != "cache":
        raise InvalidArgument(f"invalid cache sharing set for {mtype} mount")
    values["readonly"] = readonly
    return Mount(**values)  # type: ignore[arg-type]
