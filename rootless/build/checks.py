"""`rl build --check`: BuildKit's build checks over a parsed Dockerfile, as data.

The Dockerfile is parsed and its stages and args resolved as a build
would (an error there is the check's error); then BuildKit's lint rules
run, by BuildKit's names, messages and documentation URLs. Implemented:
StageNameCasing, FromAsCasing, NoEmptyContinuation,
ConsistentInstructionCasing, DuplicateStageName, ReservedStageName,
JSONArgsRecommended, MaintainerDeprecated, UndefinedArgInFrom,
WorkdirRelativePath, UndefinedVar, MultipleInstructionsDisallowed,
LegacyKeyValueFormat, RedundantTargetPlatform, SecretsUsedInArgOrEnv,
InvalidDefaultArgInFrom, FromPlatformFlagConstDisallowed,
ExposeProtoCasing, ExposeInvalidFormat, InvalidBaseImagePlatform. Not the
experimental CopyIgnoredFile and InvalidDefinitionDescription. UndefinedVar
and InvalidBaseImagePlatform need a stage's base image config: for a base
not in the store, `--check` fetches just its config from the registry (the
executor's `check`); one it cannot get leaves that stage unchecked by them,
and `Result.notes` says so.

`# check=skip=A,B;error=true` (or the BUILDKIT_DOCKERFILE_CHECK build arg)
configures it as in BuildKit; `error=true` makes an ordinary build fail
when a rule fires; a `# check=skip=...` comment before an instruction skips
rules for what is reported there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from rootless.build import dockerfile, scope
from rootless.build.dockerfile import Dockerfile, Instruction
from rootless.build.expand import ExpansionError, Lexer
from rootless.errors import InvalidArgument

_DOCS = "https://docs.docker.com/go/dockerfile/rule/"
_RESERVED = ("context", "scratch")
_SECRET = re.compile(r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|"
                     r"passwd|secret|token)(?:_|$)")
_SECRET_ALLOW = re.compile(r"(?i)(?:_|^)(?:public|file|version)(?:_|$)")
_REFERENCE = re.compile(
    r"^(?:[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?"
    r"(?:@[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,})?$")

RULES: dict[str, str] = {  # name: description (BuildKit's ruleset)
    "StageNameCasing": "Stage names should be lowercase",
    "FromAsCasing": "The 'as' keyword should match the case of the 'from' keyword",
    "NoEmptyContinuation": "Empty continuation lines will become errors in a future release",
    "ConsistentInstructionCasing": "All commands within the Dockerfile should use the same "
                                   "casing (either upper or lower)",
    "DuplicateStageName": "Stage names should be unique",
    "ReservedStageName": "Reserved words should not be used as stage names",
    "JSONArgsRecommended": "JSON arguments recommended for ENTRYPOINT/CMD to prevent "
                           "unintended behavior related to OS signals",
    "MaintainerDeprecated": "The MAINTAINER instruction is deprecated, use a label instead "
                            "to define an image author",
    "UndefinedArgInFrom": "FROM command must use declared ARGs",
    "WorkdirRelativePath": "Relative workdir without an absolute workdir declared within "
                           "the build can have unexpected results if the base image changes",
    "UndefinedVar": "Variables should be defined before their use",
    "MultipleInstructionsDisallowed": "Multiple instructions of the same type should not be "
                                      "used in the same stage",
    "LegacyKeyValueFormat": "Legacy key/value format with whitespace separator should not "
                            "be used",
    "RedundantTargetPlatform": "Setting platform to predefined $TARGETPLATFORM in FROM is "
                               "redundant as this is the default behavior",
    "InvalidBaseImagePlatform": "Base image platform does not match expected target "
                                "platform",
    "SecretsUsedInArgOrEnv": "Sensitive data should not be used in the ARG or ENV commands",
    "InvalidDefaultArgInFrom": "Default value for global ARG results in an empty or invalid "
                               "base image name",
    "FromPlatformFlagConstDisallowed": "FROM --platform flag should not use a constant value",
    "ExposeProtoCasing": "Protocol in EXPOSE instruction should be lowercase",
    "ExposeInvalidFormat": "IP address and host-port mapping should not be used in EXPOSE "
                           "instruction. This will become an error in a future release",
}


def url(rule: str) -> str:
    """The rule's page, as BuildKit links it: CamelCase as kebab-case under _DOCS."""
    return _DOCS + re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-",
                          rule).lower() + "/"


@dataclass(frozen=True)
class Warning:
    rule: str
    detail: str
    start_line: int
    end_line: int

    @property
    def description(self) -> str:
        return RULES[self.rule]

    @property
    def url(self) -> str:
        return url(self.rule)


@dataclass(frozen=True)
class Config:
    skip_all: bool = False
    skip: frozenset[str] = frozenset()
    error: bool = False


@dataclass
class Result:
    warnings: list[Warning] = field(default_factory=list)
    config: Config = field(default_factory=Config)
    notes: list[str] = field(default_factory=list)  # checks that could not run, and why

    @property
    def failed(self) -> bool:
        """Whether an ordinary build must fail: `error=true` and a rule fired."""
        return self.config.error and bool(self.warnings)

    def error_message(self) -> str:
        rules = sorted({w.rule for w in self.warnings})
        return f"lint violation found for rules: {', '.join(rules)}"


def parse_config(text: str) -> Config:
    """`skip=A,B;error=true;experimental=...` as BuildKit's ParseLintOptions reads it."""
    text = text.strip()
    if not text:
        return Config()
    skip: set[str] = set()
    skip_all = error = False
    for part in text.split(";", 2):
        key, eq, value = part.partition("=")
        if not eq:
            raise InvalidArgument(f'invalid check option "{part}"')
        key, value = key.strip(), value.strip()
        if key == "skip":
            if value == "all":
                skip_all = True
            else:
                skip.update(r.strip() for r in value.split(","))
        elif key == "experimental":
            pass  # rl runs no experimental rule
        elif key == "error":
            if value.lower() not in ("1", "t", "true", "0", "f", "false"):
                raise InvalidArgument(f'failed to parse check option "{part}": '
                                      f'strconv.ParseBool: parsing "{value}": invalid syntax')
            error = value.lower() in ("1", "t", "true")
        else:
            raise InvalidArgument(f'invalid check option "{key}"')
    return Config(skip_all, frozenset(skip), error)


class _Linter:
    def __init__(self, config: Config, local: dict[int, Config] | None = None) -> None:
        self.config = config
        self.local = local or {}  # by an instruction's first line: its `# check=` comment
        self.warnings: list[Warning] = []

    def warn(self, rule: str, detail: str, ins: Instruction) -> None:
        for cfg in (self.config, self.local.get(ins.start_line, Config())):
            if cfg.skip_all or rule in cfg.skip:
                return
        self.warnings.append(Warning(rule, detail, ins.start_line, ins.end_line))


_CHECK_COMMENT = re.compile(r"^\s*check\s*=\s*(.*)$", re.IGNORECASE)


def _local_configs(df: Dockerfile, text: str) -> dict[int, Config]:
    """`# check=skip=...` in the comments just before an instruction (since the one
    before it; an empty `#` resets them; the file's directives are not comments), as
    BuildKit merges them for the rules that instruction fires. A comment that does not
    parse is ignored, as there."""
    lines = text.split("\n")
    directive_lines = set(df.directives.lines.values())
    out: dict[int, Config] = {}
    prev_end = 0
    for ins in _all(df):
        comments: list[str] = []
        for number in range(prev_end + 1, ins.start_line):
            line = lines[number - 1].strip() if number <= len(lines) else ""
            if not line.startswith("#") or number in directive_lines:
                continue
            body = line[1:].strip()
            comments = [*comments, body] if body else []
        prev_end = ins.end_line
        for body in comments:
            m = _CHECK_COMMENT.match(body)
            if m is None:
                continue
            try:
                out[ins.start_line] = parse_config(m.group(1).split(" ", 1)[0])
            except InvalidArgument:
                pass
            break
    return out


def _keyword(ins: Instruction) -> str:
    return ins.original.split(None, 1)[0] if ins.original.strip() else ins.kind


def _consistent(s: str) -> bool:
    return s in (s.lower(), s.upper())


def check(text: str, build_args: Mapping[str, str], predefined: Mapping[str, str],
          image_env: Mapping[str, Mapping[str, str]], target: str | None = None,
          image_platform: Mapping[str, str] | None = None) -> Result:
    """Parse and resolve *text* as a build would, then lint it. A parse or resolve
    error raises (InvalidArgument naming the line); warnings come back as data.
    *image_env*: the Env of the base images known (by expanded FROM name);
    *image_platform*: their platforms ("os/arch[/variant]")."""
    df = dockerfile.parse(text)
    config = parse_config(build_args.get("BUILDKIT_DOCKERFILE_CHECK", "") or
                          df.directives.check or "")
    lint = _Linter(config, _local_configs(df, text))
    if target is not None and df.stage(target) is None:
        raise InvalidArgument(f'target stage "{target}" could not be found')
    scopes = scope.scopes(df, build_args, predefined, image_env)
    _empty_continuations(lint, df, text)
    _casing(lint, df)
    _stage_names(lint, df)
    _from_args(lint, df, build_args, predefined)
    for sc in scopes:
        known = sc.base_stage is not None or sc.base.lower() == "scratch" or \
            sc.base in image_env
        _stage(lint, df, sc, build_args, known)
    chosen = df.stage(target) if target is not None else None
    wanted = chosen.index if chosen is not None else len(df.stages) - 1
    for i in sorted(_needed(df, scopes, wanted)):
        sc = scopes[i]
        actual = (image_platform or {}).get(sc.base)
        if sc.base_stage is None and actual:
            _base_platform(lint, sc, actual, sc.platform or predefined.get("TARGETPLATFORM", ""))
    lint.warnings.sort(key=lambda w: w.start_line)
    return Result(lint.warnings, config)


def _needed(df: Dockerfile, scopes: list[scope.StageScope], target: int) -> set[int]:
    """The stages a build of *target* reaches (BuildKit checks base platforms only there)."""
    needed: set[int] = set()
    todo = [target]
    while todo:
        i = todo.pop()
        if i in needed:
            continue
        needed.add(i)
        parent = scopes[i].base_stage
        if parent is not None:
            todo.append(parent)
        for ins in scopes[i].stage.instructions:
            src = ins.flag("from")
            st = df.stage(src) if isinstance(src, str) else None
            if st is not None and st.index < i:
                todo.append(st.index)
    return needed


def _base_platform(lint: _Linter, sc: scope.StageScope, actual: str, expected: str) -> None:
    """InvalidBaseImagePlatform: the base in the store is for another os/arch than the
    stage is built for."""
    if not expected or actual.split("/")[:2] == expected.split("/")[:2]:
        return
    lint.warn("InvalidBaseImagePlatform", f'Base image {sc.stage.base} was pulled with platform '
              f'"{actual}", expected "{expected}" for current build', sc.stage.from_)


def _empty_continuations(lint: _Linter, df: Dockerfile, text: str) -> None:
    lines = text.split("\n")
    for ins in _all(df):
        if ins.end_line <= ins.start_line or ins.heredocs:
            continue
        inner = lines[ins.start_line:ins.end_line]  # the lines after the first, 0-based
        if any(not line.strip() for line in inner):
            lint.warn("NoEmptyContinuation", "Empty continuation line",
                      Instruction(ins.kind, (), {}, False, "", ins.end_line, ins.end_line))


def _all(df: Dockerfile) -> list[Instruction]:
    out = list(df.global_args)
    for st in df.stages:
        out.append(st.from_)
        out.extend(st.instructions)
    return sorted(out, key=lambda i: i.start_line)


def _casing(lint: _Linter, df: Dockerfile) -> None:
    # BuildKit counts the stages' FROMs and their commands, not the global ARGs.
    counted = [i for st in df.stages for i in (st.from_, *st.instructions)]
    lower = sum(1 for i in counted if _consistent(_keyword(i)) and _keyword(i).islower())
    upper = sum(1 for i in counted if _consistent(_keyword(i)) and not _keyword(i).islower())
    majority_lower = lower > upper
    for ins in counted:
        word = _keyword(ins)
        if majority_lower and word.lower() != word:
            lint.warn("ConsistentInstructionCasing",
                      f"Command '{word}' should match the case of the command majority "
                      "(lowercase)", ins)
        elif not majority_lower and word.upper() != word:
            lint.warn("ConsistentInstructionCasing",
                      f"Command '{word}' should match the case of the command majority "
                      "(uppercase)", ins)


def _stage_names(lint: _Linter, df: Dockerfile) -> None:
    seen: set[str] = set()
    for st in df.stages:
        words = st.from_.original.split()
        if len(words) >= 4 and words[-2].lower() == "as":
            name, as_word, from_word = words[-1], words[-2], words[0]
            if name != name.lower():
                lint.warn("StageNameCasing", f"Stage name '{name}' should be lowercase",
                          st.from_)
            if _consistent(from_word) and (from_word.islower() != as_word.islower() or
                                           not _consistent(as_word)):
                lint.warn("FromAsCasing",
                          f"'{as_word}' and '{from_word}' keywords' casing do not match",
                          st.from_)
        if st.name is None:
            continue
        if st.name in _RESERVED:
            lint.warn("ReservedStageName", "Stage name should not use the same name as "
                      f'reserved stage "{st.name}"', st.from_)
        if st.name in seen:
            lint.warn("DuplicateStageName",
                      f'Duplicate stage name "{st.name}", stage names should be unique',
                      st.from_)
        seen.add(st.name)


def _suggest(word: str, options: list[str]) -> str:
    """BuildKit's suggestion: the closest option within an edit distance of 2 (case
    matters on Linux); none when the word itself is an option."""
    best, best_d = "", 3
    for opt in sorted(set(options)):
        if opt == word:
            return ""
        d = _distance(word, opt)
        if d < best_d:
            best, best_d = opt, d
    return best


def _distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _arg_keys(ins: Instruction) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for word in ins.args:
        key, eq, value = word.partition("=")
        out.append((key, value if eq else None))
    return out


def _from_args(lint: _Linter, df: Dockerfile, build_args: Mapping[str, str],
               predefined: Mapping[str, str]) -> None:
    lexer = Lexer(escape=df.directives.escape)
    declared = [k for ins in df.global_args for k, _ in _arg_keys(ins)]
    meta = scope.global_args(df, build_args, predefined)
    defaults = scope.global_args(df, {}, predefined)
    keys = [*declared, *predefined]
    for st in df.stages:
        for word in (st.base, *([st.platform] if st.platform else [])):
            try:
                res = lexer.expand(word, meta)
            except ExpansionError:
                continue
            for name in sorted(res.unmatched):
                if name in keys:
                    continue
                hint = _suggest(name, keys)
                lint.warn("UndefinedArgInFrom", f"FROM argument '{name}' is not declared" +
                          (f" (did you mean {hint}?)" if hint else ""), st.from_)
        if st.platform:
            _platform(lint, st, lexer, meta)
        try:
            base = lexer.word(st.base, defaults)
        except ExpansionError:
            continue
        if not base or (base.lower() != "scratch" and not _REFERENCE.match(base)
                        and df.stage(base) is None):
            lint.warn("InvalidDefaultArgInFrom",
                      f"Default value for ARG {st.base} results in empty or invalid base "
                      "image name", st.from_)


def _platform(lint: _Linter, st: dockerfile.Stage, lexer: Lexer,
              meta: Mapping[str, str]) -> None:
    assert st.platform is not None
    try:
        res = lexer.expand(st.platform, meta)
    except ExpansionError:
        return
    if res.matched == {"TARGETPLATFORM"} and not res.unmatched and \
            res.word == meta.get("TARGETPLATFORM"):
        lint.warn("RedundantTargetPlatform",
                  f"Setting platform to predefined {st.platform} in FROM is redundant as this "
                  "is the default behavior", st.from_)
    if res.matched or res.unmatched:
        return
    parts = res.word.split("/")
    if len(parts) < 2 or not all(parts):
        return  # the build would fail on it: no lint
    os_, arch = parts[0].lower(), parts[1].lower()
    name = st.name or ""
    if os_ in name or arch in name:
        return
    lint.warn("FromPlatformFlagConstDisallowed",
              f'FROM --platform flag should not use constant value "{res.word}"', st.from_)


def _legacy(ins: Instruction) -> bool:
    """ENV/LABEL in the whitespace-separated `KEY value` form."""
    rest = ins.original.split(None, 1)
    return len(rest) == 2 and "=" not in rest[1].split(None, 1)[0]


def _stage(lint: _Linter, df: Dockerfile, sc: scope.StageScope, build_args: Mapping[str, str],
           env_known: bool) -> None:
    lexer = Lexer(escape=df.directives.escape)
    declared: set[str] = set()
    workdir_set = False
    shell_set = False
    last: dict[str, Instruction] = {}
    for step in sc.steps:
        ins = step.instruction
        kind = ins.kind
        if env_known:
            _undefined(lint, lexer, step, declared | set(build_args))
        if kind == "ARG":
            for key, _ in _arg_keys(ins):
                declared.add(key)
                _secret(lint, "ARG", key, ins)
        elif kind == "ENV":
            if _legacy(ins):
                lint.warn("LegacyKeyValueFormat", '"ENV key=value" should be used instead of '
                          'legacy "ENV key value" format', ins)
            for key, _ in ins.pairs():
                _secret(lint, "ENV", key, ins)
        elif kind == "LABEL" and _legacy(ins):
            lint.warn("LegacyKeyValueFormat", '"LABEL key=value" should be used instead of '
                      'legacy "LABEL key value" format', ins)
        elif kind == "MAINTAINER":
            lint.warn("MaintainerDeprecated",
                      "Maintainer instruction is deprecated in favor of using label", ins)
        elif kind == "SHELL":
            shell_set = True
        elif kind == "WORKDIR":
            path = ins.args[0] if ins.args else ""
            if not workdir_set and not path.startswith("/") and "$" not in path:
                lint.warn("WorkdirRelativePath", f'Relative workdir "{path}" can have '
                          "unexpected results if the base image changes", ins)
            workdir_set = True
        elif kind in ("CMD", "ENTRYPOINT", "HEALTHCHECK"):
            if kind != "HEALTHCHECK" and not ins.json and not shell_set:
                lint.warn("JSONArgsRecommended", f"JSON arguments recommended for {kind} to "
                          "prevent unintended behavior related to OS signals", ins)
            if kind in last:  # the earlier one is the one ignored: BuildKit names it
                lint.warn("MultipleInstructionsDisallowed", f"Multiple {kind} instructions "
                          "should not be used in the same stage because only the last one "
                          "will be used", last[kind])
            last[kind] = ins
        elif kind == "EXPOSE":
            for word in ins.args:
                try:
                    ports = lexer.words(word, step.vars)
                except ExpansionError:
                    continue
                for port in ports:
                    _expose(lint, port, ins)


def _secret(lint: _Linter, kind: str, key: str, ins: Instruction) -> None:
    if _SECRET.search(key) and not _SECRET_ALLOW.search(key):
        lint.warn("SecretsUsedInArgOrEnv",
                  f'Do not use ARG or ENV instructions for sensitive data ({kind} "{key}")', ins)


def _expose(lint: _Linter, port: str, ins: Instruction) -> None:
    number, _, proto = port.partition("/")
    if proto and proto != proto.lower():
        lint.warn("ExposeProtoCasing",
                  f"Defined protocol '{port}' in EXPOSE instruction should be lowercase", ins)
    if ":" in number:
        lint.warn("ExposeInvalidFormat", "EXPOSE instruction should not define an IP address "
                  f"or host-port mapping, found '{port}'", ins)


_EXPANDED = ("ENV", "LABEL", "WORKDIR", "USER", "VOLUME", "STOPSIGNAL", "EXPOSE", "COPY", "ADD")


def _undefined(lint: _Linter, lexer: Lexer, step: scope.Step, declared: set[str]) -> None:
    """UndefinedVar: names an expanded word looks up that nothing defines (ARGs declared
    without a value count as defined, as BuildKit's build args do)."""
    ins = step.instruction
    if ins.kind not in _EXPANDED:
        return
    words: list[str] = []
    if ins.kind in ("COPY", "ADD"):
        words = [w for w in ins.args if not dockerfile.is_heredoc_word(w)]
        words += [v for k in ("chown", "chmod") if isinstance(v := ins.flag(k), str)]
    else:
        words = list(ins.args)
    missing: set[str] = set()
    for word in words:
        try:
            missing |= lexer.expand(word, step.vars).unmatched
        except ExpansionError:
            continue
    for name in sorted(missing - declared):
        hint = _suggest(name, list(step.vars))
        lint.warn("UndefinedVar", f"Usage of undefined variable '${name}'" +
                  (f" (did you mean ${hint}?)" if hint else ""), ins)
