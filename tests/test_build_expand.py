"""BuildKit's variable expansion and ARG/ENV scoping (rootless.build.expand, .scope), in process."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rootless.build.dockerfile import Instruction, Mount, parse
from rootless.build.expand import ExpansionError, Lexer
from rootless.build.scope import (
    Platform,
    build_args,
    expand_instruction,
    global_args,
    platform_args,
    scopes,
)
from rootless.errors import InvalidArgument

ENV = {
    "NAME": "world",
    "EMPTY": "",
    "PATHV": "/usr/local/lib/python3.11",
    "FILE": "archive.tar.gz",
    "SPACED": "a  b c",
    "DOLLAR": "x$y",
    "Ünï": "unicode",
}
LEX = Lexer()


def word(text: str, env: dict[str, str] | None = None, lexer: Lexer = LEX) -> str:
    return lexer.word(text, ENV if env is None else env)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # plain references
        ("$NAME", "world"),
        ("${NAME}", "world"),
        ("hello-$NAME!", "hello-world!"),
        ("${NAME}s", "worlds"),
        ("$NAMEs", ""),  # the name runs on while it is a name
        ("$UNSET", ""),
        ("a${UNSET}b", "ab"),
        ("$Ünï", "unicode"),  # Go's unicode.IsLetter
        ("$", "$"),
        ("a$", "a$"),
        ("$-x", "x"),  # $- is a special parameter, never set
        ("$.x", "$.x"),  # a dot starts no name
        ("$1x", "x"),  # positional: digits only
        ("$12ab", "ab"),
        ("$DOLLAR", "x$y"),  # a value is never expanded again
        # defaults: unset only, or unset and empty with the colon
        ("${UNSET-def}", "def"),
        ("${EMPTY-def}", ""),
        ("${UNSET:-def}", "def"),
        ("${EMPTY:-def}", "def"),
        ("${NAME:-def}", "world"),
        ("${UNSET:-}", ""),
        ("${UNSET:-a b}", "a b"),
        ("${UNSET:-$NAME}", "world"),
        ("${UNSET:-${EMPTY:-${NAME}}}", "world"),
        ("${UNSET:-${ALSO:-deep}}x", "deepx"),
        ("${UNSET:-\"quoted } brace\"}", "quoted } brace"),
        ("${UNSET:-'$NAME'}", "$NAME"),
        ("${UNSET:-\\}}", "}"),
        ("${UNSET:-\\$NAME}", "$NAME"),
        ("${UNSET:-\\${NAME}x}", "${NAMEx}"),  # the first } ends the default
        # alternatives
        ("${NAME+alt}", "alt"),
        ("${EMPTY+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${UNSET+alt}", ""),
        ("${NAME:+[$NAME]}", "[world]"),
        ("${NAME:+${UNSET}}", ""),
        # required: an error only when unset (or empty, with the colon)
        ("${NAME?}", "world"),
        ("${EMPTY?}", ""),
        ("${NAME:?must}", "world"),
        # prefix and suffix removal, shortest and longest
        ("${PATHV#*/}", "usr/local/lib/python3.11"),
        ("${PATHV##*/}", "python3.11"),
        ("${PATHV%/*}", "/usr/local/lib"),
        ("${PATHV%%/l*}", "/usr"),
        ("${FILE%.*}", "archive.tar"),
        ("${FILE%%.*}", "archive"),
        ("${FILE#*.}", "tar.gz"),
        ("${FILE##*.}", "gz"),
        ("${FILE#arch}", "ive.tar.gz"),
        ("${FILE#nomatch}", "archive.tar.gz"),
        ("${FILE%?z}", "archive.tar."),
        ("${FILE#???}", "hive.tar.gz"),
        ("${FILE#*}", "archive.tar.gz"),  # shortest * is empty
        ("${FILE##*}", ""),
        ("${UNSET#x}", ""),
        ("${FILE%.gz}", "archive.tar"),
        ("${FILE#a[r]}", "archive.tar.gz"),  # no brackets: [ is literal
        # replacement
        ("${FILE/a/A}", "Archive.tar.gz"),
        ("${FILE//a/A}", "Archive.tAr.gz"),
        ("${FILE/.*/}", "archive"),  # * is greedy in replacements
        ("${FILE//./_}", "archive_tar_gz"),
        ("${FILE/x/}", "archive.tar.gz"),
        ("${FILE/zz/yy}", "archive.tar.gz"),
        ("${PATHV//\\//:}", ":usr:local:lib:python3.11"),  # an escaped / in the pattern
        ("${FILE//a/$$}", "rchive.tr.gz"),  # $$ is a special parameter, expanded first
        # The replacement keeps its escapes; replacing all then reads it as a
        # Go template ($0 the match), replacing one takes it as is.
        ("${FILE//ar/<\\$0>}", "<\\ar>chive.t<\\ar>.gz"),
        ("${FILE//a/\\$\\$}", "\\$\\$rchive.t\\$\\$r.gz"),  # a $ that starts no name stays
        ("${FILE/a/\\$0}", "\\$0rchive.tar.gz"),
        ("${UNSET/a/b}", ""),
        # quoting
        ("'$NAME'", "$NAME"),
        ('"$NAME"', "world"),
        ('"${NAME}"\'${NAME}\'', "world${NAME}"),
        ("'a\\b'", "a\\b"),  # no escapes between single quotes
        ('"a\\b"', "a\\b"),  # only " $ and \ are escaped between double quotes
        ('"a\\"b"', 'a"b'),
        ('"a\\$NAME"', "a$NAME"),
        ('"a\\\\b"', "a\\b"),
        ("\"it's\"", "it's"),
        ("'say \"hi\"'", 'say "hi"'),
        ('""', ""),
        ("a''b", "ab"),
        # escapes outside quotes
        ("\\$NAME", "$NAME"),
        ("\\\\$NAME", "\\world"),
        ("a\\ b", "a b"),
        ("\\'x", "'x"),
        ("\\n", "n"),
        ("end\\", "end"),  # a trailing escape is dropped
        # heredoc markers pass through
        ("<<EOF", "<<EOF"),
        ("a<b", "a<b"),
    ],
)
def test_word(text: str, expected: str) -> None:
    assert word(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${NAME", "syntax error: missing '}'"),
        ("${", "syntax error: missing '}'"),
        ("${UNSET:-abc", "syntax error: missing '}'"),
        ("${UNSET:-${X}", "syntax error: missing '}'"),
        ("${}", "syntax error: bad substitution"),
        ("${:-x}", "syntax error: bad substitution"),
        ("${{NAME}}", "syntax error: bad substitution"),
        ("${NAME:=x}", "unsupported modifier (:=) in substitution"),
        ("${NAME=x}", "unsupported modifier (=) in substitution"),
        ("${NAME:x}", "unsupported modifier (:x) in substitution"),
        ("${NAME:#x}", "unsupported modifier (:#) in substitution"),
        ("${NAME:%x}", "unsupported modifier (:%) in substitution"),
        ("${NAME x}", "unsupported modifier ( ) in substitution"),
        ("${#NAME}", "unsupported modifier (N) in substitution"),  # no ${#V} length
        ("${UNSET?}", "UNSET: is not allowed to be unset"),
        ("${UNSET:?}", "UNSET: is not allowed to be unset"),
        ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
        ("${UNSET?set it please}", "UNSET: set it please"),
        ("${EMPTY:?give $NAME}", "EMPTY: give world"),
        ("'open", "unexpected end of statement while looking for matching single-quote"),
        ('"open', "unexpected end of statement while looking for matching double-quote"),
        ('"open\\"', "unexpected end of statement while looking for matching double-quote"),
        ("${FILE/a", "syntax error: missing '/' in ${}"),
        ("${FILE/a/b", "syntax error: missing '}'"),
        ("${FILE#\\x}", "invalid pattern (\\x) in substitution: invalid escape '\\x'"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(ExpansionError) as info:
        word(text)
    assert info.value.message.endswith(": " + message), info.value.message
    assert info.value.message.startswith("failed to process ")
    assert isinstance(info.value, InvalidArgument) and info.value.exit_code == 125


def test_error_quotes_the_word_as_go_does() -> None:
    with pytest.raises(ExpansionError) as info:
        word('a"b\\${X')
    assert info.value.message.startswith('failed to process "a\\"b\\\\${X": ')


def test_escaped_star_in_a_pattern_is_literal() -> None:
    env = {"V": "a*b*c", "W": "abc"}
    assert word("${V#*\\*}", env) == "b*c"
    assert word("${V##*\\*}", env) == "c"
    assert word("${V%\\**}", env) == "a*b"
    assert word("${V%%\\**}", env) == "a"
    assert word("${W#\\*}", env) == "abc"


def test_backtick_escape() -> None:
    tick = Lexer(escape="`")
    env = {"V": "x"}
    assert tick.word("`$V", env) == "$V"
    assert tick.word("C:\\dir\\$V", env) == "C:\\dir\\x"  # \ is an ordinary character
    assert tick.word('"a`"b"', env) == 'a"b'
    assert tick.word("a` b", env) == "a b"
    assert tick.words("a` b c", env) == ["a b", "c"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a b  c", ["a", "b", "c"]),
        ("  lead and trail  ", ["lead", "and", "trail"]),
        ("$SPACED", ["a", "b", "c"]),  # an unquoted value splits
        ('"$SPACED"', ["a  b c"]),  # a quoted one does not
        ("'$SPACED' x", ["$SPACED", "x"]),
        ("x${SPACED}y", ["xa", "b", "cy"]),
        ('""', []),  # an empty quoted string makes no word
        ("a '' b", ["a", "b"]),
        ("a\\ b c", ["a b", "c"]),
        ("$EMPTY", []),
        ("80/tcp ${PORT:-443}/udp", ["80/tcp", "443/udp"]),
        ("a\tb\nc", ["a", "b", "c"]),
    ],
)
def test_words(text: str, words: list[str]) -> None:
    assert LEX.words(text, {**ENV, "PORT": ""}) == words


def test_raw_modes() -> None:
    raw = Lexer(raw_quotes=True, raw_escapes=True)
    assert raw.word("'a b' \"c\" \\d", {}) == "'a b' \"c\" \\d"
    skip = Lexer(skip_unset=True)
    assert skip.word("$A ${B} ${C:-x} ${D/a/b} $SET", {"SET": "1"}) == "$A ${B} ${C:-x} ${D/a/b} 1"
    # Heredoc bodies: quotes are text, variables still expand.
    body = Lexer(skip_quotes=True)
    assert body.word("echo '$V' \"$V\"", {"V": "v"}) == "echo 'v' \"v\""


def test_matched_and_unmatched_names() -> None:
    result = LEX.expand("$NAME ${UNSET:-$EMPTY} ${OTHER+x}", ENV)
    assert result.matched == {"NAME", "EMPTY"}
    assert result.unmatched == {"UNSET", "OTHER"}


# --- ARG/ENV scoping -------------------------------------------------------------

PLAT = platform_args(Platform("linux", "amd64"), Platform("linux", "arm64", "v8"), "final")


def test_platform_args() -> None:
    assert PLAT["BUILDPLATFORM"] == "linux/amd64"
    assert PLAT["TARGETPLATFORM"] == "linux/arm64/v8"
    assert (PLAT["TARGETOS"], PLAT["TARGETARCH"], PLAT["TARGETVARIANT"]) == ("linux", "arm64", "v8")
    assert PLAT["TARGETSTAGE"] == "final"
    assert platform_args(Platform())["TARGETSTAGE"] == "default"


def test_build_args_from_the_given_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_OS", "leaked")
    assert build_args(["A=1", "B=", "C", "D", "E=x=y", "FROM_OS"], {"C": "from env"}) == {
        "A": "1", "B": "", "C": "from env", "E": "x=y",
    }
    with pytest.raises(InvalidArgument):
        build_args(["=v"], {})


def vars_at(text: str, args: dict[str, str] | None = None) -> list[list[dict[str, str]]]:
    result = scopes(parse(text), args or {}, PLAT)
    return [[dict(step.vars) for step in sc.steps] for sc in result]


def test_global_args_reach_from_lines_only() -> None:
    df = parse(
        "ARG BASE=alpine\nARG TAG=3.${MINOR:-19}\nARG MINOR\n"
        "FROM --platform=$BUILDPLATFORM $BASE:$TAG AS one\nRUN echo $BASE\n"
    )
    (sc,) = scopes(df, {}, PLAT)
    assert sc.base == "alpine:3.19"
    assert sc.platform == "linux/amd64"
    assert sc.steps[0].vars == {}  # not seen without a re-declaration
    (sc,) = scopes(df, {"BASE": "debian", "MINOR": "5", "TAG": "12"}, PLAT)
    assert sc.base == "debian:12"  # a build arg replaces the default, unexpanded


def test_redeclared_arg_takes_the_global_value() -> None:
    text = (
        "ARG V=global\nFROM x\nARG V\nRUN a\n"
        "FROM y\nARG V=own\nRUN b\n"
        "FROM z\nARG V\nARG W\nRUN c\n"
    )
    assert vars_at(text) == [
        [{}, {"V": "global"}],
        [{}, {"V": "own"}],
        [{}, {"V": "global"}, {"V": "global"}],  # W: declared, no value: unset
    ]
    assert vars_at(text, {"V": "cli", "W": "w"})[2][2] == {"V": "cli", "W": "w"}
    assert vars_at(text, {"V": "cli"})[1][1] == {"V": "cli"}  # the build arg beats a default


def test_predefined_platform_args_need_a_declaration_in_a_stage() -> None:
    text = "FROM x\nRUN a\nARG TARGETARCH\nARG BUILDOS TARGETPLATFORM\nRUN b\n"
    steps = vars_at(text)[0]
    assert steps[0] == {}
    assert steps[3] == {
        "TARGETARCH": "arm64", "BUILDOS": "linux", "TARGETPLATFORM": "linux/arm64/v8",
    }
    assert vars_at(text, {"TARGETARCH": "riscv64"})[0][3]["TARGETARCH"] == "riscv64"


def test_env_and_arg_in_order() -> None:
    text = (
        "FROM x\nARG V=arg\nENV V=env\nRUN a\n"
        "ENV A=1 B=$A C=${V}\nRUN b\nARG D=$A-$B E=$D\nRUN c\n"
        "ENV V=${V}2 \\\n  W=\"two words\"\nRUN d\n"
    )
    sc = scopes(parse(text), {"V": "cli"}, PLAT)[0]
    steps = [dict(s.vars) for s in sc.steps]
    assert steps[2] == {"V": "env"}  # ENV overrides the ARG (and its build arg)
    # One ENV sees the state before it: B is not the A beside it.
    assert steps[4] == {"V": "env", "A": "1", "B": "", "C": "env"}
    assert steps[6] == {"V": "env", "A": "1", "B": "", "C": "env", "D": "1-", "E": "1-"}
    assert sc.vars["V"] == "env2" and sc.vars["W"] == "two words"
    assert "D" not in sc.env and sc.env["W"] == "two words"  # only ENV reaches the image


def test_env_keys_and_legacy_form_expand() -> None:
    sc = scopes(parse("FROM x\nARG K=key\nENV ${K}_X=1\nENV OLD some $K value\n"), {}, PLAT)[0]
    assert sc.env == {"key_X": "1", "OLD": "some key value"}


def test_stage_from_a_stage_inherits_variables() -> None:
    text = (
        "FROM img AS base\nARG A=1\nENV E=2\n"
        "FROM BASE AS child\nRUN x\n"
        "FROM other\nRUN y\n"
    )
    result = scopes(parse(text), {}, PLAT, image_env={"img": {"PATH": "/bin"}, "other": {"O": "o"}})
    assert result[1].base_stage == 0
    assert result[1].steps[0].vars == {"PATH": "/bin", "A": "1", "E": "2"}
    assert result[1].steps[0].env == {"PATH": "/bin", "E": "2"}
    assert result[2].base_stage is None and result[2].steps[0].vars == {"O": "o"}


def test_a_later_stage_name_is_an_image_not_a_stage() -> None:
    result = scopes(parse("FROM later\nRUN a\nFROM img AS later\nRUN b\n"), {}, PLAT)
    assert result[0].base_stage is None


def test_proxy_args_reach_run_without_declaration() -> None:
    sc = scopes(parse("FROM x\nRUN a\n"), {"http_proxy": "p:1", "NO_PROXY": "n", "V": "v"}, PLAT)[0]
    assert sc.proxy == {"http_proxy": "p:1", "NO_PROXY": "n"}
    assert sc.steps[0].vars == {}


def test_missing_build_arg_in_from_names_the_line() -> None:
    with pytest.raises(InvalidArgument) as info:
        scopes(parse("ARG BASE\n\nFROM $BASE\n"), {}, PLAT)
    assert info.value.message == "Dockerfile:3: base name ($BASE) should not be blank"
    (sc,) = scopes(parse("ARG BASE\n\nFROM $BASE\n"), {"BASE": "b"}, PLAT)
    assert sc.base == "b"


def test_expansion_errors_name_the_line() -> None:
    with pytest.raises(InvalidArgument) as info:
        scopes(parse("FROM x\nRUN ok\nENV A=${B:?needed}\n"), {}, PLAT)
    assert info.value.message == 'Dockerfile:3: failed to process "${B:?needed}": B: needed'
    with pytest.raises(InvalidArgument) as info:
        global_args(parse("ARG A=${\nFROM x\n"), {}, PLAT)
    assert info.value.message.startswith("Dockerfile:1: failed to process")
    with pytest.raises(InvalidArgument) as info:
        scopes(parse("FROM --platform=$NOPE x\n"), {}, PLAT)
    assert info.value.message == "Dockerfile:1: empty platform value from expression $NOPE"


def test_backtick_escape_directive_applies_to_scoping() -> None:
    sc = scopes(parse("# escape=`\nFROM x\nENV A=`$B C=1\n"), {}, PLAT)[0]
    assert sc.env == {"A": "$B", "C": "1"}


# --- the words of each instruction -----------------------------------------------


def expanded(text: str, vars_: dict[str, str]) -> list[Instruction]:
    df = parse(text)
    return [expand_instruction(i, vars_, df.directives.escape) for i in df.stages[0].instructions]


def test_instruction_words_are_expanded_where_buildkit_expands_them() -> None:
    v = {"D": "/srv", "U": "app", "P": "80/tcp 443", "S": "SIGINT", "N": "x y", "M": "0640"}
    got = expanded(
        "FROM a\n"
        "WORKDIR $D/w\nUSER ${U}:${G:-grp}\nVOLUME $D/data ['$D']\nSTOPSIGNAL $S\n"
        "EXPOSE $P 22\nLABEL \"$U.k\"=\"$N\" plain=$U\n"
        "COPY --chown=$U --chmod=$M src/$U* \"$D/\"\n"
        "ADD --checksum=sha256:${SUM:-0} https://x/$U.tgz /\n"
        "RUN echo $D\nCMD echo $D\nENTRYPOINT [\"$D\"]\nHEALTHCHECK CMD test $D\n"
        "MAINTAINER $U\nONBUILD RUN echo $D\n",
        v,
    )
    workdir, user, volume, stop, expose, label, copy, add, *rest = got
    assert [i.args for i in (workdir, user, volume, stop)] == [
        ("/srv/w",), ("app:grp",), ("/srv/data", "[$D]"), ("SIGINT",),
    ]
    assert expose.args == ("80/tcp", "443", "22")
    assert label.pairs() == [("app.k", "x y"), ("plain", "app")]
    assert copy.flags == {"chown": "app", "chmod": "0640"}
    assert copy.args == ("src/app*", "/srv/")
    assert add.flags == {"checksum": "sha256:0"}
    assert add.args == ("https://x/app.tgz", "/")
    original = parse(
        "FROM a\nRUN echo $D\nCMD echo $D\nENTRYPOINT [\"$D\"]\nHEALTHCHECK CMD test $D\n"
        "MAINTAINER $U\nONBUILD RUN echo $D\n"
    ).stages[0].instructions
    # Left to the shell (or to the build that runs the trigger), as written.
    assert [(i.kind, i.args, i.healthcheck) for i in rest] == [
        (i.kind, i.args, i.healthcheck) for i in original
    ]
    assert rest[-1].trigger is not None and rest[-1].trigger.args == ("echo $D",)


def test_heredoc_bodies_expand_unless_the_delimiter_is_quoted() -> None:
    (copy,) = expanded(
        "FROM a\nCOPY <<one <<\"two\" /etc/\n'$V' \"$V\" \\$V\none\nkeep $V\ntwo\n", {"V": "v"}
    )
    assert [h.content for h in copy.heredocs] == ["'v' \"v\" $V\n", "keep $V\n"]
    assert copy.args == ("<<one", '<<"two"', "/etc/")


def test_run_mounts_are_expanded_then_checked() -> None:
    (run,) = expanded(
        "FROM a\nRUN --mount=type=$T,target=${DIR:-/cache},id=$ID,uid=$UID make\n",
        {"T": "cache", "ID": "pip", "UID": "1000"},
    )
    assert run.mounts == (Mount("cache", target="/cache", id="pip", uid=1000, readonly=False),)
    assert run.args == ("make",)
    with pytest.raises(InvalidArgument) as info:
        expanded("FROM a\n\nRUN --mount=type=$T,target=/a true\n", {"T": "nfs"})
    assert info.value.message == 'Dockerfile:3: unsupported mount type "nfs"'


def test_instruction_expansion_errors_name_the_line() -> None:
    with pytest.raises(InvalidArgument) as info:
        expanded("FROM a\nRUN x\nWORKDIR ${D:?no dir}\n", {})
    assert info.value.message == 'Dockerfile:3: failed to process "${D:?no dir}": D: no dir'


def test_backtick_escape_in_instruction_words() -> None:
    (workdir, copy) = expanded("# escape=`\nFROM a\nWORKDIR C:\\$D`$D\nCOPY `$x C:\\\n", {"D": "d"})
    assert workdir.args == ("C:\\d$D",)
    assert copy.args == ("$x", "C:\\")


def test_one_arg_line_mixing_globals_and_defaults() -> None:
    text = (
        'ARG g1="one two" g2=beta\nARG g3="$g2-x"\n'
        "FROM img$g2 AS s\nARG g3 own=\"4 5\" g1 g2=${g3}!\nRUN run\n"
    )
    (sc,) = scopes(parse(text), {}, PLAT)
    assert sc.base == "imgbeta"
    # g3 and g1 come from the global scope, g2's default sees the g3 just declared.
    assert sc.steps[1].vars == {"g3": "beta-x", "own": "4 5", "g1": "one two", "g2": "beta-x!"}


def test_env_built_from_an_arg_with_a_default() -> None:
    text = 'FROM a\nARG opt\nENV opt "v=${opt:-none}"\nENV cut "${opt%%=*}"\nRUN x\n'
    for args, want in [({}, "v=none"), ({"opt": ""}, "v=none"), ({"opt": "yes"}, "v=yes")]:
        (sc,) = scopes(parse(text), args, PLAT)
        assert sc.env == {"opt": want, "cut": "v"}


def test_a_later_arg_overrides_an_earlier_env_for_later_steps() -> None:
    # BuildKit keeps ARG and ENV values in one list: the last one set wins for
    # expansion and RUN; the image's Env keeps the ENV value.
    (sc,) = scopes(parse("FROM a\nENV V=env\nARG V=arg\nRUN x\n"), {}, PLAT)
    assert sc.steps[2].vars == {"V": "arg"}
    assert sc.env == {"V": "env"}


# --- properties ------------------------------------------------------------------

_ALPHABET = "ab $${}:-+?#%/*\\'\"` \t<=_1é"


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=30), st.sampled_from(["\\", "`"]))
def test_any_word_expands_or_fails_with_a_message(text: str, escape: str) -> None:
    env = {"a": "x y", "b": "", "_1": "one"}
    try:
        result = Lexer(escape=escape).expand(text, env)
    except ExpansionError as e:
        assert e.message.startswith("failed to process ")
        return
    assert " ".join(result.words) == " ".join(result.word.split()) or any(
        q in text for q in "'\"\\`"
    )
    assert result.matched <= set(env) and not result.unmatched & set(env)


@given(st.text(alphabet=st.characters(blacklist_characters="$'\"\\<`"), max_size=40))
def test_words_without_special_characters_are_unchanged(text: str) -> None:
    assert Lexer().word(text, {"a": "b"}) == text
