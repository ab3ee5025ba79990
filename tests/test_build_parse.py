"""The Dockerfile as typed data (rootless.build.dockerfile), in process."""

from __future__ import annotations

import time

import pytest

from rootless.build.dockerfile import Healthcheck, Mount, parse, parse_directives, parse_mount
from rootless.errors import InvalidArgument


def only_stage(text: str) -> list[tuple[str, tuple[str, ...]]]:
    df = parse(text)
    assert len(df.stages) == 1
    return [(i.kind, i.args) for i in df.stages[0].instructions]


def at(line: int, message: str) -> str:
    return f"dockerfile parse error on line {line}: {message}"


def fails(text: str) -> str:
    with pytest.raises(InvalidArgument) as info:
        parse(text)
    assert info.value.exit_code == 125
    return info.value.message


def test_directives() -> None:
    df = parse("# syntax=docker/dockerfile:1.7\n#check = skip=all\n# escape=`\nFROM a\n")
    d = df.directives
    assert (d.syntax, d.check, d.escape) == ("docker/dockerfile:1.7", "skip=all", "`")
    assert d.lines == {"syntax": 1, "check": 2, "escape": 3}


def test_directives_stop_at_the_first_other_line() -> None:
    # After a comment, a blank line or an instruction a directive is a comment.
    assert parse_directives("# hello\n# escape=`\nFROM a\n").escape == "\\"
    assert parse_directives("\n# escape=`\nFROM a\n").escape == "\\"
    assert parse_directives("# unknown=1\n# escape=`\n").escape == "\\"
    assert parse_directives("FROM a\n# escape=`\n").escape == "\\"
    assert parse_directives("\ufeff# ESCAPE=`\n").escape == "`"


def test_directive_errors_name_the_line() -> None:
    assert fails("# syntax=a\n# syntax=b\nFROM x\n") == (
        "dockerfile parse error on line 2: only one syntax parser directive can be used"
    )
    assert fails("# escape=x\nFROM a\n") == (
        "dockerfile parse error on line 1: invalid escape token 'x' does not match ` or \\"
    )


def test_escape_directive_changes_continuations() -> None:
    df = parse("# escape=`\nFROM a\nRUN dir C:\\ `\n  /w\nCOPY a\\b c\\\n")
    run, copy = df.stages[0].instructions
    assert run.args == ("dir C:\\   /w",) and (run.start_line, run.end_line) == (3, 4)
    assert copy.args == ("a\\b", "c\\")


def test_stages_and_names() -> None:
    df = parse(
        "ARG BASE=alpine\nARG V\n"
        "FROM $BASE AS Build\nRUN make\n"
        "from --platform=$BUILDPLATFORM scratch as out\ncopy --from=build /a /b\n"
        "FROM build\n"
    )
    assert [a.args for a in df.global_args] == [("BASE=alpine",), ("V",)]
    names = [(s.index, s.base, s.name, s.platform) for s in df.stages]
    assert names == [
        (0, "$BASE", "build", None),
        (1, "scratch", "out", "$BUILDPLATFORM"),
        (2, "build", None, None),
    ]
    assert [i.kind for i in df.stages[1].instructions] == ["COPY"]  # case-insensitive
    assert df.stages[1].instructions[0].flags == {"from": "build"}
    assert df.stages[1].from_.start_line == 5
    stage = df.stage("BUILD")
    assert stage is not None and stage.index == 0
    stage = df.stage("1")
    assert stage is not None and stage.name == "out"
    assert df.stage("nope") is None and df.stage("9") is None


def test_bad_stage_names() -> None:
    assert "invalid name for build stage" in fails("FROM a AS 1st\n")
    assert fails("FROM a b\n") == (
        "dockerfile parse error on line 1: FROM requires either one or three arguments"
    )
    assert fails("FROM a AS\n").endswith("FROM requires either one or three arguments")


def test_exec_and_shell_forms() -> None:
    df = parse(
        'FROM a\nRUN ["echo", "a b"]\nRUN echo  "a b"\nRUN [not json\n'
        "CMD [\"x\"]\nENTRYPOINT top -b\nSHELL [\"/bin/bash\", \"-c\"]\n"
    )
    got = [(i.kind, i.args, i.json) for i in df.stages[0].instructions]
    assert got == [
        ("RUN", ("echo", "a b"), True),
        ("RUN", ('echo  "a b"',), False),
        ("RUN", ("[not json",), False),  # invalid JSON is the shell form, as BuildKit does
        ("CMD", ("x",), True),
        ("ENTRYPOINT", ("top -b",), False),
        ("SHELL", ("/bin/bash", "-c"), True),
    ]


def test_continuations_comments_and_blank_lines() -> None:
    df = parse("FROM a\nRUN apt-get update && \\\n# a comment\n\n    apt-get install x\nUSER me\n")
    run, user = df.stages[0].instructions
    assert run.args == ("apt-get update &&     apt-get install x",)
    assert (run.start_line, run.end_line) == (2, 5)
    assert (user.kind, user.start_line) == ("USER", 6)


def test_env_and_label_pairs() -> None:
    df = parse('FROM a\nENV A=1 B="two words" C=\\$x\nENV OLD form with spaces\nLABEL "a b"=c d=\n')
    env, old, label = df.stages[0].instructions
    assert env.pairs() == [("A", "1"), ("B", '"two words"'), ("C", "\\$x")]  # raw: expanded later
    assert old.pairs() == [("OLD", "form with spaces")]
    assert label.pairs() == [('"a b"', "c"), ("d", "")]


def test_env_errors() -> None:
    assert fails("FROM a\nRUN x\nENV\n") == (
        "dockerfile parse error on line 3: ENV requires at least one argument"
    )
    assert fails("FROM a\nENV ONLY\n") == at(2, "ENV must have two arguments")
    assert fails("FROM a\n\nENV A=1 B\n") == (
        "dockerfile parse error on line 3: Syntax error - can't find = in \"B\". "
        "Must be of the form: name=value"
    )
    assert fails("FROM a\nLABEL =x\n") == at(2, "LABEL names can not be blank")
    assert fails("FROM a\nARG =x\n") == at(2, "ARG names can not be blank")


def test_copy_and_add_flags() -> None:
    df = parse(
        "FROM a\n"
        "COPY --from=build --chown=app:app --chmod=0755 --link --exclude=*.md --exclude=x "
        "--parents a/ b/ /dst/\n"
        "ADD --checksum=sha256:abc --keep-git-dir=true --unpack=false --link=false u /d\n"
    )
    copy, add = df.stages[0].instructions
    assert copy.flags == {
        "from": "build", "chown": "app:app", "chmod": "0755", "link": True,
        "exclude": ("*.md", "x"), "parents": True,
    }
    assert copy.args == ("a/", "b/", "/dst/")
    assert add.flags == {
        "checksum": "sha256:abc", "keep-git-dir": True, "unpack": False, "link": False,
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("COPY --bogus=1 a b", "unknown flag: --bogus"),
        ("ADD --from=x a b", "unknown flag: --from"),  # ADD has no --from
        ("ADD --parents a b", "unknown flag: --parents"),
        ("RUN --chown=1 true", "unknown flag: --chown"),
        ("WORKDIR --x=1 /a", "unknown flag: --x"),
        ("COPY --from=a --from=b x y", "duplicate flag specified: --from"),
        ("COPY --from a b", "missing a value on flag: --from"),
        ("COPY --link= a b", "missing a value on flag: --link"),
        ("COPY --link=yes a b", "expecting boolean value for flag --link, not: yes"),
        ("COPY onlyone", "COPY requires at least two arguments, but only one was provided. "
         "Destination could not be determined"),
        ("COPY a <<EOF\nx\nEOF", "COPY cannot accept a heredoc as a destination"),
        ("RUN --network=bridge true", 'invalid network mode "bridge"'),
        ("RUN --network=$NET true", 'invalid network mode "$NET"'),
        ("RUN --security=privileged true", 'security "privileged" is not valid'),
        ("COPY --from=$STAGE a b", "variable expansion is not supported for --from, define a new "
         "stage with FROM using ARG from global scope as a workaround"),
        ("RUN --mount=type=bind,from=$S,target=/a true",
         "'from' doesn't support variable expansion, define alias stage instead"),
        ("WORKDIR", "WORKDIR requires exactly one argument"),
        ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
        ("EXPOSE", "EXPOSE requires at least one argument"),
        ("VOLUME", "VOLUME requires at least one argument"),
        ("SHELL /bin/sh -c", "SHELL requires the arguments to be in JSON form"),
        ("FOO bar", "unknown instruction: FOO"),
        ("frobnicate", "unknown instruction: frobnicate"),
    ],
)
def test_instruction_errors_name_the_line(line: str, message: str) -> None:
    assert fails(f"FROM a\n# comment\n{line}\n") == f"dockerfile parse error on line 3: {message}"


def test_run_flags_and_mounts() -> None:
    df = parse(
        "FROM a\n"
        "RUN --mount=type=cache,target=/root/.cache,id=pip,sharing=locked,uid=1000,mode=0700 "
        "--mount=type=bind,from=build,source=/out,target=/in,rw "
        "--mount=type=secret,id=npmrc,required "
        "--mount=type=tmpfs,target=/t,size=64m "
        "--mount=target=/plain "
        "--mount=type=cache,target=$DIR "
        "--network=none --security=sandbox make\n"
    )
    (run,) = df.stages[0].instructions
    assert run.flags["network"] == "none" and run.flags["security"] == "sandbox"
    assert len(run.flags["mount"]) == 6  # type: ignore[arg-type]
    assert run.mounts == (
        Mount("cache", target="/root/.cache", id="pip", sharing="locked", uid=1000, mode=0o700,
              readonly=False),
        Mount("bind", target="/in", source="/out", from_="build", readonly=False),
        Mount("secret", id="npmrc", required=True, readonly=True),
        Mount("tmpfs", target="/t", size="64m", readonly=False),
        Mount("bind", target="/plain", readonly=True),  # bind by default, read-only by default
    )  # the one naming $DIR is checked after expansion
    assert run.args == ("make",)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("type=nfs,target=/a", 'unsupported mount type "nfs"'),
        ("type=cache,target", "invalid field 'target' must be a key=value pair"),
        ("type=cache,colour=red", "unexpected key 'colour' in 'colour=red'"),
        ("type=bind,target=/a,required", "unexpected key 'required' for mount type 'bind'"),
        ("type=cache,size=1m", "unexpected key 'size' for mount type 'cache'"),
        ("type=bind,target=/a,uid=0", 'uid not allowed for "bind" type mounts'),
        ("type=tmpfs,target=/a,mode=0755", 'mode not allowed for "tmpfs" type mounts'),
        ("type=cache,target=/a,mode=9", "invalid value 9 for mode"),
        ("type=cache,target=/a,uid=-1", "invalid value -1 for uid"),
        ("type=cache,target=/a,ro=maybe", "invalid value for ro: maybe"),
        ("type=cache,target=/a,sharing=all", 'unsupported sharing value "all"'),
        ("type=bind,target=/a,sharing=shared", "invalid cache sharing set for bind mount"),
        ("type=secret", "invalid secret mount. one of source, target required"),
        ("type=secret,id=a,source=b", "both source and id can't be set"),
        ("type=secret,id=a,from=b", "secret mount should not have a from"),
    ],
)
def test_malformed_mounts(value: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_mount(value)
    assert info.value.message.startswith(message), info.value.message
    assert fails(f"FROM a\nRUN --mount={value} true\n").startswith(
        f"dockerfile parse error on line 2: {message}"
    )


def test_mount_csv_errors() -> None:
    # Not reachable from a Dockerfile line, whose parser removes the quotes
    # first, but from a value the builder expanded.
    with pytest.raises(InvalidArgument) as info:
        parse_mount('type=bind,"target=/a')
    assert info.value.message.startswith("failed to parse csv mounts: ")


def test_mount_csv_quoting_and_case() -> None:
    m = parse_mount('TYPE=Cache,"target=/a,b",Sharing=PRIVATE,ro=1')
    assert m == Mount("cache", target="/a,b", sharing="private", readonly=True)


def test_healthcheck() -> None:
    df = parse(
        "FROM a\n"
        "HEALTHCHECK --interval=5s --timeout=2s --start-period=1m --start-interval=1s "
        "--retries=4 CMD curl -f http://x/ || exit 1\n"
        'HEALTHCHECK CMD ["/bin/check", "--quick"]\n'
        "healthcheck none\n"
    )
    shell, exec_, none = (i.healthcheck for i in df.stages[0].instructions)
    assert shell == Healthcheck(
        ("CMD-SHELL", "curl -f http://x/ || exit 1"), "5s", "2s", "1m", "1s", 4
    )
    assert exec_ == Healthcheck(("CMD", "/bin/check", "--quick"))
    assert none == Healthcheck(("NONE",))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("HEALTHCHECK NONE extra", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK --interval=1s NONE", "unknown flag: --interval"),
        ("HEALTHCHECK RUN x", 'Unknown type "RUN" in HEALTHCHECK (try CMD)'),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
        ("HEALTHCHECK --retries=two CMD x", 'strconv.ParseInt: parsing "two": invalid syntax'),
        ("HEALTHCHECK --every=1s CMD x", "unknown flag: --every"),
    ],
)
def test_healthcheck_errors(line: str, message: str) -> None:
    assert fails(f"FROM a\n{line}\n") == f"dockerfile parse error on line 2: {message}"


def test_onbuild_keeps_its_trigger_whole() -> None:
    df = parse(
        "FROM a\nONBUILD COPY --chown=app . /src\nONBUILD RUN [\"make\"]\n"
        "onbuild healthcheck --interval=3s CMD true\n"
    )
    copy, run, hc = df.stages[0].instructions
    assert copy.kind == "ONBUILD" and copy.args == ("COPY --chown=app . /src",)
    assert copy.trigger is not None
    assert (copy.trigger.kind, copy.trigger.flags, copy.trigger.args) == (
        "COPY", {"chown": "app"}, (".", "/src"),
    )
    assert copy.trigger.start_line == 2
    assert run.trigger is not None and run.trigger.json and run.trigger.args == ("make",)
    assert hc.trigger is not None and hc.trigger.healthcheck == Healthcheck(
        ("CMD-SHELL", "true"), interval="3s"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
        ("ONBUILD maintainer me", "MAINTAINER isn't allowed as an ONBUILD trigger"),
        ("ONBUILD COPY --bad=1 a b", "unknown flag: --bad"),
        ("ONBUILD NOPE x", "unknown instruction: NOPE"),
    ],
)
def test_onbuild_errors(line: str, message: str) -> None:
    assert fails(f"FROM a\n{line}\n") == f"dockerfile parse error on line 2: {message}"


def test_heredocs() -> None:
    df = parse(
        "FROM a\n"
        "RUN <<EOF\necho $HOME\nEOF\n"
        "COPY <<-'EOT' <<two /etc/\n\tliteral $X\n\t\tdeep\n\tEOT\nsecond\ntwo\n"
        'RUN 3<<"A B" cat <&3\nx\nA B\n'
        "RUN << NOTONE\n"  # a blank after << makes no heredoc for BuildKit's parser
    )
    run, copy, fd3, spaced = df.stages[0].instructions
    assert [(h.name, h.content, h.expand, h.chomp) for h in run.heredocs] == [
        ("EOF", "echo $HOME\n", True, False),
    ]
    assert (run.start_line, run.end_line) == (2, 4)
    assert [(h.name, h.content, h.expand, h.chomp) for h in copy.heredocs] == [
        ("EOT", "literal $X\ndeep\n", False, True),  # <<- strips the leading tabs
        ("two", "second\n", True, False),
    ]
    assert copy.args == ("<<-'EOT'", "<<two", "/etc/")
    assert [(h.name, h.fd, h.expand) for h in fd3.heredocs] == [("A B", 3, False)]
    assert spaced.heredocs == () and spaced.args == ("<< NOTONE",)


def test_heredoc_never_closed_names_its_line() -> None:
    assert fails("FROM a\nRUN <<EOF\necho ok\nEOF\nRUN true\nRUN <<END cat\nnever\n") == (
        "dockerfile parse error on line 6: unterminated heredoc"
    )


def test_no_from_and_empty_files() -> None:
    assert fails("") == "dockerfile parse error on line 1: file with no instructions"
    assert fails("# only\n\n# comments\n") == at(1, "file with no instructions")
    assert fails("ARG A\nRUN true\n") == (
        "dockerfile parse error on line 2: no build stage in current context"
    )
    assert fails("\n\nCOPY a b\nFROM x\n") == (
        "dockerfile parse error on line 3: no build stage in current context"
    )
    assert fails("ARG A=1\n") == "dockerfile contains no stages to build"


def test_lines_of_every_instruction() -> None:
    df = parse("# syntax=x\n\nFROM a\n\nRUN a \\\n  b \\\n  c\n\n# c\nUSER u\n")
    assert [(i.kind, i.start_line, i.end_line) for i in df.stages[0].instructions] == [
        ("RUN", 5, 7), ("USER", 10, 10),
    ]
    assert df.stages[0].from_.start_line == 3


def test_maintainer_expose_volume_stopsignal_workdir() -> None:
    assert only_stage(
        "FROM a\nMAINTAINER Jane Doe <j@d>\nEXPOSE 80/tcp 53/udp\nVOLUME /a /b\n"
        'VOLUME ["/c"]\nSTOPSIGNAL SIGTERM\nWORKDIR /w\n'
    ) == [
        ("MAINTAINER", ("Jane Doe <j@d>",)),
        ("EXPOSE", ("80/tcp", "53/udp")),
        ("VOLUME", ("/a", "/b")),
        ("VOLUME", ("/c",)),
        ("STOPSIGNAL", ("SIGTERM",)),
        ("WORKDIR", ("/w",)),
    ]


def test_a_fault_inside_a_continuation_names_the_instructions_first_line() -> None:
    bad_b = "Syntax error - can't find = in \"B\". Must be of the form: name=value"
    assert fails("FROM a\nENV A=1 \\\n  B\nRUN x\n") == at(2, bad_b)
    assert fails("FROM a\nRUN <<EOF\nx\nEOF\nENV A=1 \\\n\n# c\n  B\n") == at(5, bad_b)
    assert fails("# escape=`\nFROM a\nLABEL a=b `\n  B\n") == at(3, bad_b)
    assert fails("FROM a\nRUN ok\n\n# note\nENV ONLY\nRUN later\n") == at(
        5, "ENV must have two arguments"
    )


def test_heredoc_errors_among_good_heredocs() -> None:
    good = "RUN <<E\nx\nE\n" * 50
    open_one = "FROM a\n" + good + "RUN <<E\n" + "RUN x\n" * 40
    assert fails(open_one) == at(152, "unterminated heredoc")
    # A `<<` inside the open heredoc's body is body, not a heredoc.
    assert fails("FROM a\nRUN <<A\nRUN <<B\nB\n") == at(2, "unterminated heredoc")
    assert fails("FROM a\nRUN x && \\\n  cat <<E\nbody\n") == at(2, "unterminated heredoc")
    assert fails("FROM a\n" + good + "ENV Q\n" + "RUN x\n" * 40) == at(
        152, "ENV must have two arguments"
    )


def test_a_fault_in_a_long_file_is_found_quickly() -> None:
    text = "FROM a\n" + "RUN x\n" * 3000 + "ENV Q\n" + "RUN y\n" * 3000
    start = time.monotonic()
    assert fails(text) == at(3002, "ENV must have two arguments")
    assert time.monotonic() - start < 10  # a bisection, not a parse per line


def test_text_the_go_parser_cannot_carry() -> None:
    # A NUL would end the file early; a lone surrogate would crash the process.
    assert fails("FROM a\nRUN x\x00y\n") == at(2, "the Dockerfile contains a NUL byte")
    assert fails("FROM a\n\nRUN \udcff\n") == at(3, "the Dockerfile is not valid UTF-8")
    df = parse("\ufeffFROM a\r\nRUN caf\u00e9 \\\r\n  \u2603\r\n")
    assert df.stages[0].instructions[0].args == ("caf\u00e9   \u2603",)


def test_lines_are_counted_as_go_counts_them() -> None:
    # \u2028 and \x85 end lines for str.splitlines, not for BuildKit.
    assert fails("FROM a\nRUN a\u2028b\x85c\nENV Q\n") == at(3, "ENV must have two arguments")
    assert parse_directives("# check=a\u2028# escape=`\n").escape == "\\"


def test_copy_sources_and_destination() -> None:
    df = parse("FROM a\nCOPY a <<one b <<-two /d/\nx\none\ny\ntwo\nCOPY << <<\n")
    copy, odd = df.stages[0].instructions
    assert copy.sources() == ("a", "b") and copy.dest() == "/d/"
    assert [h.name for h in copy.heredocs] == ["one", "two"]
    # A bare << names nothing: a path, even as the destination (as BuildKit takes it).
    assert odd.sources() == ("<<",) and odd.dest() == "<<" and odd.heredocs == ()
