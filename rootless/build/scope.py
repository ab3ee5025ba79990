"""Which variables each instruction sees: ARG and ENV across stages, BuildKit's way.

Pure data: the parsed Dockerfile, the build args and the predefined values
in, per stage the variables visible at each instruction out. BuildKit's
rules (dockerfile2llb/convert.go), which differ from the docs in one place:
- the global scope (ARGs before the first FROM) starts with the platform
  args (BUILDPLATFORM, TARGETARCH, ...); build args override their defaults;
  it is seen by FROM lines (image and --platform) only;
- in a stage, `ARG K` without a default takes the build arg, else the
  global value; `ARG K=d` takes the build arg, else `d` expanded there;
- ARG and ENV both set the variables later instructions (and RUN) see,
  in order, so a later ARG overrides an earlier ENV too (the docs say ENV
  always wins; BuildKit's state has one list); only ENV goes to the image;
- a stage FROM an earlier stage starts with that stage's variables;
- the proxy args (HTTP_PROXY, ...) reach RUN without an ARG but are not
  variables for expansion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from rootless.build.dockerfile import (
    Dockerfile,
    Instruction,
    Stage,
    is_heredoc_word,
    parse_mount,
)
from rootless.build.expand import ExpansionError, Lexer
from rootless.errors import InvalidArgument

PROXY_ARGS = (
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
)
PLATFORM_ARGS = (
    "BUILDPLATFORM", "BUILDOS", "BUILDOSVERSION", "BUILDARCH", "BUILDVARIANT",
    "TARGETPLATFORM", "TARGETOS", "TARGETOSVERSION", "TARGETARCH", "TARGETVARIANT",
    "TARGETSTAGE",
)


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    arch: str = "amd64"
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.arch, self.variant) if p)


def platform_args(
    build: Platform, target: Platform | None = None, target_stage: str = ""
) -> dict[str, str]:
    """The predefined platform args, as BuildKit fills them before any ARG."""
    tp = target or build
    return {
        "BUILDPLATFORM": str(build), "BUILDOS": build.os, "BUILDOSVERSION": "",
        "BUILDARCH": build.arch, "BUILDVARIANT": build.variant,
        "TARGETPLATFORM": str(tp), "TARGETOS": tp.os, "TARGETOSVERSION": "",
        "TARGETARCH": tp.arch, "TARGETVARIANT": tp.variant,
        "TARGETSTAGE": target_stage or "default",
    }


def build_args(given: Iterable[str], environ: Mapping[str, str]) -> dict[str, str]:
    """`--build-arg K=V` and `--build-arg K` (K's value in the caller's environment).

    A bare K that the environment lacks is no build arg at all, as with
    docker's CLI. The environment is the caller's, passed in: a service
    must not lend its own.
    """
    out: dict[str, str] = {}
    for item in given:
        key, eq, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid build arg {item!r}: the name is empty")
        if eq:
            out[key] = value
        elif key in environ:
            out[key] = environ[key]
    return out


@dataclass(frozen=True)
class Step:
    """An instruction and what it sees: `vars` for expansion and RUN, `env` the image's."""

    instruction: Instruction
    vars: Mapping[str, str]
    env: Mapping[str, str]


@dataclass(frozen=True)
class StageScope:
    stage: Stage
    base: str  # FROM's image or stage, expanded with the global args
    base_stage: int | None  # the earlier stage FROM names, if it names one
    platform: str | None  # --platform, expanded
    steps: tuple[Step, ...]
    vars: Mapping[str, str]  # after the last instruction
    env: Mapping[str, str]  # the image's Env after the last instruction
    proxy: Mapping[str, str] = field(default_factory=dict)  # build args RUN gets unasked


def _at(line: int, e: InvalidArgument) -> InvalidArgument:
    return InvalidArgument(f"Dockerfile:{line}: {e.message}")


def global_args(
    df: Dockerfile, args: Mapping[str, str], predefined: Mapping[str, str]
) -> dict[str, str]:
    """The values FROM lines see: the predefined ones, then each ARG before FROM."""
    lexer = Lexer(escape=df.directives.escape)
    scope = {k: args.get(k, v) for k, v in predefined.items()}
    for ins in df.global_args:
        for key, default in _arg_pairs(ins):
            if key in args:
                scope[key] = args[key]
            elif default is not None:
                try:
                    scope[key] = lexer.word(default, scope)
                except ExpansionError as e:
                    raise _at(ins.start_line, e) from None
    return scope


def _arg_pairs(ins: Instruction) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    for word in ins.args:
        key, eq, value = word.partition("=")
        pairs.append((key, value if eq else None))
    return pairs


def scopes(
    df: Dockerfile,
    args: Mapping[str, str],
    predefined: Mapping[str, str],
    image_env: Mapping[str, Mapping[str, str]] | None = None,
) -> list[StageScope]:
    """Per stage, the variables visible at each instruction.

    `args` are the build args (see build_args), `predefined` the platform
    args (see platform_args), `image_env` the Env of base images by the
    expanded FROM name (what a pull would give; absent: none).
    """
    lexer = Lexer(escape=df.directives.escape)
    meta = global_args(df, args, predefined)
    proxy = {k: v for k, v in args.items() if k.lower() in {p.lower() for p in PROXY_ARGS}}
    done: list[StageScope] = []
    names: dict[str, int] = {}
    for stage in df.stages:
        line = stage.from_.start_line
        try:
            base = lexer.word(stage.base, meta)
            platform = lexer.word(stage.platform, meta) if stage.platform else None
        except ExpansionError as e:
            raise _at(line, e) from None
        if not base:
            raise _at(line, InvalidArgument(f"base name ({stage.base}) should not be blank"))
        if stage.platform and not platform:
            raise _at(line, InvalidArgument(
                f"empty platform value from expression {stage.platform}"
            ))
        parent = names.get(base.lower())
        if parent is not None:
            vars_ = dict(done[parent].vars)
            env = dict(done[parent].env)
        else:
            env = dict((image_env or {}).get(base, {}))
            vars_ = dict(env)
        steps: list[Step] = []
        for ins in stage.instructions:
            steps.append(Step(ins, dict(vars_), dict(env)))
            try:
                _apply(ins, lexer, vars_, env, args, meta)
            except ExpansionError as e:
                raise _at(ins.start_line, e) from None
        done.append(StageScope(stage, base, parent, platform, tuple(steps), vars_, env, proxy))
        if stage.name is not None:
            names.setdefault(stage.name, stage.index)
    return done


def _apply(
    ins: Instruction,
    lexer: Lexer,
    vars_: dict[str, str],
    env: dict[str, str],
    args: Mapping[str, str],
    meta: Mapping[str, str],
) -> None:
    if ins.kind == "ENV":
        # Every pair of one ENV is expanded against the variables before it.
        before = dict(vars_)
        for key, value in ins.pairs():
            k, v = lexer.word(key, before), lexer.word(value, before)
            vars_[k] = v
            env[k] = v
    elif ins.kind == "ARG":
        for key, default in _arg_pairs(ins):
            if key in args:
                vars_[key] = args[key]
            elif default is not None:
                # Pairs of one ARG are sequential: `ARG A=1 B=$A` gives B=1.
                vars_[key] = lexer.word(default, vars_)
            elif key in meta:
                vars_[key] = meta[key]


def expand_instruction(
    ins: Instruction, vars_: Mapping[str, str], escape: str = "\\"
) -> Instruction:
    """An instruction with its words expanded as BuildKit expands them before dispatch.

    Expanded: ENV and LABEL keys and values, COPY/ADD sources, destination,
    --chown, --chmod (ADD's --checksum), WORKDIR, USER, VOLUME, STOPSIGNAL,
    EXPOSE (split into words: `EXPOSE $PORTS`), RUN's --mount values (then
    checked), and the bodies of COPY/ADD heredocs with unquoted delimiters
    (quotes in them are text). Not expanded, as in BuildKit: RUN, CMD,
    ENTRYPOINT, SHELL and HEALTHCHECK commands (the image's shell does it),
    MAINTAINER, ONBUILD (its trigger is expanded in the build that runs it),
    COPY --from (refused with a variable at parse time). ARG and FROM are
    expanded by `scopes`. Errors name the instruction's line.
    """
    lexer = Lexer(escape=escape)
    body = Lexer(skip_quotes=True)  # BuildKit's heredoc lexer: \ always, quotes as text

    def one(word: str) -> str:
        return lexer.word(word, vars_)

    try:
        return _expand(ins, one, lambda w: lexer.words(w, vars_), lambda w: body.word(w, vars_))
    except InvalidArgument as e:
        raise _at(ins.start_line, e) from None


def _expand(
    ins: Instruction,
    one: Callable[[str], str],
    split: Callable[[str], list[str]],
    body: Callable[[str], str],
) -> Instruction:
    kind = ins.kind
    if kind in ("ENV", "LABEL"):
        args = tuple(one(w) for w in ins.args)
        return replace(ins, args=args)
    if kind in ("WORKDIR", "USER", "VOLUME", "STOPSIGNAL"):
        return replace(ins, args=tuple(one(w) for w in ins.args))
    if kind == "EXPOSE":
        return replace(ins, args=tuple(p for w in ins.args for p in split(w)))
    if kind in ("COPY", "ADD"):
        flags = dict(ins.flags)
        for name in ("chown", "chmod", "checksum"):
            value = flags.get(name)
            if isinstance(value, str):
                flags[name] = one(value)
        # Heredoc sources are names, not paths: they stay as written.
        args = tuple(w if is_heredoc_word(w) else one(w) for w in ins.args)
        docs = tuple(
            replace(h, content=body(h.content)) if h.expand else h for h in ins.heredocs
        )
        return replace(ins, args=args, flags=flags, heredocs=docs)
    if kind == "RUN":
        texts = ins.flags.get("mount", ())
        assert isinstance(texts, tuple)
        mounts = tuple(parse_mount(text, one) for text in texts)
        return replace(ins, mounts=mounts)
    return ins

