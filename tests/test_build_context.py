"""The build context (issue 12, parts 5 and 6): .dockerignore, COPY sources, tar contexts, hashes.

In-process calls of rootless.build. The ignore rules are checked against
docker-py's exclude_paths (the issue's oracle) over generated trees and
pattern sets, and by hand where moby's current rules go beyond that port
(`**` below several levels).
"""

from __future__ import annotations

import functools
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from docker.utils.build import PatternMatcher, exclude_paths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rootless.build import ignore
from rootless.build.context import Context, Source, resolve
from rootless.errors import InvalidArgument


def make_tree(root: Path, spec: dict[str, str | None]) -> None:
    """Files (path: content), directories (path ending in "/": None), symlinks ("@target")."""
    for path, content in spec.items():
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        if path.endswith("/"):
            p.mkdir(exist_ok=True)
        elif content is not None and content.startswith("@"):
            p.symlink_to(content[1:])
        else:
            p.write_text(content or "")


def context_of(root: Path, ignore_text: str | None = None, **kw: str) -> Context:
    if ignore_text is not None:
        (root / ".dockerignore").write_text(ignore_text)
    return Context.directory(str(root), **kw)


def one_line_error(call: Callable[[], object]) -> str:
    with pytest.raises(InvalidArgument) as info:
        call()
    msg = info.value.message
    assert "\n" not in msg and msg
    return msg


# -- .dockerignore against docker-py's exclude_paths ---------------------------------

NAMES = ["a", "b", "a.txt", "b.md", "ab", ".x"]
PATTERN_PARTS = ["a", "b", "ab", "*", "?", "a*", "*.txt", "*.md", "[ab]", ".x", "?b"]


@st.composite
def trees(draw: st.DrawFn) -> set[tuple[str, ...]]:
    paths = draw(st.sets(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(tuple),
                         min_size=1, max_size=25))
    return paths


@st.composite
def pattern_lines(draw: st.DrawFn) -> list[str]:
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        parts = draw(st.lists(st.sampled_from(PATTERN_PARTS), min_size=1, max_size=3))
        line = "/".join(parts)
        line = draw(st.sampled_from(["", "/", "./"])) + line + draw(st.sampled_from(["", "/"]))
        if draw(st.booleans()):
            line = "!" + line
        lines.append(draw(st.sampled_from(["", " "])) + line)
    return lines


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paths=trees(), lines=pattern_lines())
def test_dockerignore_agrees_with_docker_py(tmp_path_factory: pytest.TempPathFactory,
                                            paths: set[tuple[str, ...]], lines: list[str]) -> None:
    root = tmp_path_factory.mktemp("ctx")
    for path in sorted(paths, key=len, reverse=True):
        p = root.joinpath(*path)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("/".join(path))
    # docker-py keeps the Dockerfile and the ignore file whatever the patterns say;
    # rl leaves that to the build, so the same two exceptions are written out here.
    (root / ".dockerignore").write_text("\n".join([*lines, "!Dockerfile", "!.dockerignore"]))
    oracle = exclude_paths(str(root), [line.strip() for line in lines], "Dockerfile")
    # Path by path too, walked or not (without "**" docker-py's parent check is moby's).
    theirs = PatternMatcher([line.strip() for line in lines])
    mine = ignore.Matcher(ignore.parse("\n".join(lines)))
    for p in root.rglob("*"):
        rel = str(p.relative_to(root))
        if rel != ".dockerignore":
            assert mine.excluded(rel) == theirs.matches(rel), rel
    with Context.directory(str(root)) as ctx:
        ours = set(ctx.entries)
        dirs = {p for p, e in ctx.entries.items() if e.kind == "dir"}
        assert ours - dirs == {p for p in oracle if not (root / p).is_dir()}
        assert {p for p in oracle if (root / p).is_dir()} <= dirs
        # docker-py lists no excluded directory; rl keeps one that holds kept entries.
        for d in dirs - oracle:
            assert ctx.matcher.excluded(d)
            assert any(p.startswith(d + "/") and p not in dirs for p in ours)


def excluded_files(spec: dict[str, str | None], text: str, tmp_path: Path) -> set[str]:
    make_tree(tmp_path, spec)
    with context_of(tmp_path, text) as ctx:
        kept = set(ctx.entries)
    return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")} - kept


@pytest.mark.parametrize(("text", "excluded"), [
    ("**/*.go", {"a.go", "x/b.go", "x/y/c.go"}),
    ("**", {"a.go", "x", "x/b.go", "x/y", "x/y/c.go", "x/y/d", "keep"}),
    ("x/**/d", {"x/y/d"}),
    ("x/**", {"x/b.go", "x/y", "x/y/c.go", "x/y/d"}),
    ("*.go", {"a.go"}),  # anchored at the root: x/b.go stays
    ("x/*", {"x/b.go", "x/y", "x/y/c.go", "x/y/d"}),  # a directory excludes its contents
    ("*\n!keep", {"a.go", "x", "x/b.go", "x/y", "x/y/c.go", "x/y/d"}),
    ("!keep\n*", {"a.go", "x", "x/b.go", "x/y", "x/y/c.go", "x/y/d", "keep"}),  # order matters
    ("x\n!x/y/c.go", {"x/b.go", "x/y/d"}),  # x and x/y come back as parents
    ("x\n!*/y/c.go", {"x", "x/b.go", "x/y", "x/y/c.go", "x/y/d"}),  # docker walks no further
    ("/a.go\n./keep\nx/y/", {"a.go", "keep", "x/y", "x/y/c.go", "x/y/d"}),
    ("# a comment\n#a.go\n\n   keep   ", {"keep"}),
    ("x/y/../b.go", {"x/b.go"}),  # cleaned like Go's filepath.Clean
    ("x/?.go\nx/[a-c].*", {"x/b.go"}),
    (".", set()),  # "for historical reasons, the pattern . is ignored"
    ("\ufeffkeep", {"keep"}),  # a UTF-8 BOM is not part of the first pattern
    ("**.go", {"a.go", "x/b.go", "x/y/c.go"}),  # "**" and a literal tail: a plain suffix
    ("**/d", {"x/y/d"}),
    ("keep\r\n*.go\r\n", {"keep", "a.go"}),  # CRLF
    ("x/y\n!x/y/d\n", {"x/y/c.go"}),
])
def test_dockerignore_rules(tmp_path: Path, text: str, excluded: set[str]) -> None:
    spec: dict[str, str | None] = {"a.go": "", "x/b.go": "", "x/y/c.go": "", "x/y/d": "",
                                   "keep": ""}
    assert excluded_files(spec, text, tmp_path) - {".dockerignore"} == excluded


def test_dockerignore_moby_parent_rule_below_double_star() -> None:
    # moby matches each parent directory, at any depth: x/y matches x/**/y, so
    # x/y/z is excluded (docker-py's older port checks one depth only).
    m = ignore.Matcher(ignore.parse("x/**/y"))
    assert m.excluded("x/y/z") and m.excluded("x/a/b/y/z") and m.excluded("x/y")
    assert not m.excluded("x/yz") and not m.excluded("y")
    assert ignore.Matcher(ignore.parse("**/y")).excluded("y")


def test_dockerignore_bad_patterns_name_the_line() -> None:
    assert one_line_error(lambda: ignore.parse("a\n\n!\n")) == \
        '.dockerignore:3: illegal exclusion pattern: "!"'
    assert "syntax error in pattern" in one_line_error(lambda: ignore.Matcher(["a["]))
    assert "syntax error in pattern" in one_line_error(lambda: ignore.Matcher(["a\\"]))
    assert "syntax error in pattern" in one_line_error(lambda: ignore.Matcher(["[z-a]"]))


def test_named_dockerfile_ignore_file_wins(tmp_path: Path) -> None:
    make_tree(tmp_path, {"x": "", "y": "", "sub/Dockerfile": "FROM scratch",
                         "sub/Dockerfile.dockerignore": "y\n", ".dockerignore": "x\n"})
    with Context.directory(str(tmp_path)) as ctx:
        assert "x" not in ctx.entries and "y" in ctx.entries
    with Context.directory(str(tmp_path), dockerfile="sub/Dockerfile") as ctx:
        assert "x" in ctx.entries and "y" not in ctx.entries
    outside = tmp_path.parent / f"{tmp_path.name}-df"
    outside.mkdir()
    (outside / "Dockerfile").write_text("FROM scratch")
    (outside / "Dockerfile.dockerignore").write_text("x\ny\n")
    with Context.directory(str(tmp_path), dockerfile=str(outside / "Dockerfile")) as ctx:
        assert "x" not in ctx.entries and "y" not in ctx.entries
    # No ignore file beside it: the context's own applies.
    (outside / "Dockerfile.dockerignore").unlink()
    with Context.directory(str(tmp_path), dockerfile=str(outside / "Dockerfile")) as ctx:
        assert "x" not in ctx.entries and "y" in ctx.entries


# -- COPY sources ----------------------------------------------------------------------


def names(sources: list[Source]) -> dict[str, str]:
    return {s.name: s.entry.path for s in sources}


def test_resolve_docker_semantics(tmp_path: Path) -> None:
    make_tree(tmp_path, {"app/main.py": "m", "app/lib/u.py": "u", "app/empty/": None,
                         "a.txt": "a", "b.txt": "b", "c.md": "c", "l": "@app/lib",
                         "lf": "@l/u.py", "rel": "@app/../a.txt", "[x]": "lit",
                         "secret": "s", ".dockerignore": None})
    with context_of(tmp_path, "secret\n") as ctx:
        # A directory brings its contents (and itself as "", for the mode of the target).
        assert names(resolve(ctx, "app")) == {
            "": "app", "main.py": "app/main.py", "lib": "app/lib", "lib/u.py": "app/lib/u.py",
            "empty": "app/empty"}
        assert names(resolve(ctx, "./app/")) == names(resolve(ctx, "app"))
        assert names(resolve(ctx, "*.txt")) == {"a.txt": "a.txt", "b.txt": "b.txt"}
        assert names(resolve(ctx, "?.md")) == {"c.md": "c.md"}
        assert names(resolve(ctx, "[ab].txt")) == {"a.txt": "a.txt", "b.txt": "b.txt"}
        assert names(resolve(ctx, "[^a].txt")) == {"b.txt": "b.txt"}
        assert names(resolve(ctx, "\\[x]")) == {"[x]": "[x]"}
        assert names(resolve(ctx, "app/*/u.py")) == {"u.py": "app/lib/u.py"}
        # Symlinks inside the context are followed, under the source's own name.
        assert names(resolve(ctx, "lf")) == {"lf": "app/lib/u.py"}
        assert names(resolve(ctx, "l/*.py")) == {"u.py": "app/lib/u.py"}
        assert names(resolve(ctx, "rel")) == {"rel": "a.txt"}
        assert names(resolve(ctx, "l"))["u.py"] == "app/lib/u.py"
        # In a copied directory, a symlink is copied as one.
        whole = names(resolve(ctx, "."))
        assert whole["l"] == "l" and ctx.entries["l"].kind == "symlink"
        assert "secret" not in whole  # .dockerignore filters what COPY . sends
        msg = one_line_error(lambda: resolve(ctx, "secret", "Dockerfile:4: "))
        assert msg == 'Dockerfile:4: failed to compute cache key: "/secret": not found'
        assert "not found" in one_line_error(lambda: resolve(ctx, "*.none"))
        assert "not found" in one_line_error(lambda: resolve(ctx, "a.txt/x"))


def test_resolve_refuses_what_leaves_the_context(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_text("host secret")
    ctxdir = tmp_path / "ctx"
    make_tree(ctxdir, {"ok": "", "d/deep/": None, "abs": f"@{outside}/x", "absdir": "@/etc",
                       "up": "@../outside/x", "d/deep/up2": "@../../../outside",
                       "chain": "@d/deep/up2", "loop": "@loop2", "loop2": "@loop",
                       "dotdot": "@..", "g/in": "@../../outside/x"})
    with Context.directory(str(ctxdir)) as ctx:
        # The walk never follows a symlink: nothing of /etc or ../outside is listed.
        assert not any(p.startswith(("absdir/", "up/", "chain/")) for p in ctx.entries)
        for src in ["../outside/x", "/etc/passwd", "a/../../outside/x", "..", "abs", "absdir",
                    "absdir/passwd", "up", "chain/x", "d/deep/up2", "dotdot/outside/x",
                    "g/*", "g/in", "*"]:
            msg = one_line_error(lambda s=src: resolve(ctx, s, "Dockerfile:2: "))
            assert msg.startswith(
                f"Dockerfile:2: forbidden path outside the build context: {src}"), msg
        assert "too many levels of symbolic links" in one_line_error(lambda: resolve(ctx, "loop"))
        assert names(resolve(ctx, "ok")) == {"ok": "ok"}


def test_unreadable_context_files_are_one_line(tmp_path: Path) -> None:
    make_tree(tmp_path, {"secret": "s", "closed/x": "x", "ok": "o"})
    (tmp_path / "secret").chmod(0)
    with Context.directory(str(tmp_path)) as ctx:
        msg = one_line_error(lambda: ctx.sources_digest(resolve(ctx, "secret")))
        assert msg == 'error from sender: open "secret": Permission denied'
        # Swapped for a symlink after the walk: the read does not follow it.
        (tmp_path / "ok").unlink()
        (tmp_path / "ok").symlink_to("/etc/passwd")
        msg = one_line_error(lambda: ctx.sources_digest(resolve(ctx, "ok")))
        assert msg.startswith('error from sender: open "ok": ')
    (tmp_path / "closed").chmod(0)
    try:
        msg = one_line_error(lambda: Context.directory(str(tmp_path)))
        assert msg == 'error checking context: "closed": Permission denied'
    finally:
        (tmp_path / "closed").chmod(0o755)
    assert "not found" in one_line_error(lambda: Context.directory(str(tmp_path / "none")))
    assert "must be a directory" in one_line_error(
        lambda: Context.directory(str(tmp_path / "secret")))


# -- a tar context -----------------------------------------------------------------------


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None], gz: bool = False) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "",
           mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    info.mtime = 1_700_000_000
    return info


def snapshot(root: Path) -> set[tuple[str, int]]:
    return {(str(p.relative_to(root)), p.lstat().st_mode) for p in root.rglob("*")}


@pytest.mark.parametrize(("members", "why"), [
    ([(member("/etc/evil"), b"x")], "absolute path"),
    ([(member("../evil"), b"x")], "path outside the build context"),
    ([(member("ok"), b"x"), (member("a/../../evil"), b"x")], "path outside the build context"),
    ([(member("l", tarfile.SYMTYPE, "/etc"), None)], "symlink to an absolute path"),
    ([(member("d/l", tarfile.SYMTYPE, "../../evil"), None)], "symlink pointing outside"),
    ([(member("h", tarfile.LNKTYPE, "/etc/passwd"), None)], "hardlink"),
    ([(member("h", tarfile.LNKTYPE, "../evil"), None)], "path outside the build context"),
    ([(member("h", tarfile.LNKTYPE, "nothing"), None)], "not an earlier file"),
    ([(member("d", tarfile.DIRTYPE, mode=0o755), None),
      (member("h", tarfile.LNKTYPE, "d"), None)], "not an earlier file"),
    ([(member("null", tarfile.CHRTYPE), None)], "device nodes"),
    ([(member("sda", tarfile.BLKTYPE), None)], "device nodes"),
    ([(member("fifo", tarfile.FIFOTYPE), None)], "FIFOs"),
    # A link inside the context, then a member written through it.
    ([(member("sub", tarfile.DIRTYPE, mode=0o755), None),
      (member("l", tarfile.SYMTYPE, "sub"), None), (member("l/x"), b"x")], "a parent is not"),
    ([(member("f"), b"x"), (member("f/x"), b"x")], "a parent is not"),
    ([(member("d", tarfile.DIRTYPE, mode=0o755), None), (member("d"), b"x")],
     "would replace a directory"),
    ([(member("evil\nline"), b"x"), (member("../x"), b"x")], "path outside"),
])
def test_hostile_tar_refused_nothing_written_outside(
        tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], why: str) -> None:
    tmp = tmp_path / "a" / "b" / "tmp"
    tmp.mkdir(parents=True)
    before = snapshot(tmp_path)
    msg = one_line_error(lambda: Context.from_tar(tar_of(*members), tmpdir=str(tmp)))
    assert msg.startswith("invalid build context tar: member ") and why in msg, msg
    assert snapshot(tmp_path) == before  # no evil file anywhere, the temp dir gone


def test_tar_that_is_not_a_tar(tmp_path: Path) -> None:
    msg = one_line_error(lambda: Context.from_tar(io.BytesIO(b"FROM scratch\n" * 100),
                                                  tmpdir=str(tmp_path)))
    assert msg.startswith("invalid build context tar: ")
    assert list(tmp_path.iterdir()) == []


def test_tar_context_extracts_and_goes_away(tmp_path: Path) -> None:
    stream = tar_of(
        (member("./", tarfile.DIRTYPE, mode=0o755), None),
        (member("./ro", tarfile.DIRTYPE, mode=0o555), None),
        (member("./ro/f", mode=0o4755), b"setuid"),
        (member("deep/er/file"), b"parents made"),
        (member("ro/link", tarfile.SYMTYPE, "../deep/er/file"), None),
        (member("hard", tarfile.LNKTYPE, "ro/f"), None),
        (member("again"), b"old"), (member("again"), b"new wins"),
        (member("locked", mode=0), b"unreadable in the tar"),
        (member(".dockerignore"), b"deep/er\n!deep/er/file\n"),
        (member("Dockerfile.dockerignore"), b"hard\n"),
        gz=True)
    with Context.from_tar(stream, tmpdir=str(tmp_path)) as ctx:
        root = Path(ctx.root)
        assert root.parent == tmp_path and stat.S_IMODE(root.stat().st_mode) == 0o700
        e = ctx.entries
        # The tar's modes, though on disk the owner keeps rwx to fill and remove them.
        assert e["ro"].kind == "dir" and e["ro"].mode == 0o555
        assert stat.S_IMODE((root / "ro").stat().st_mode) == 0o755
        assert e["locked"].mode == 0 and ctx.content_digest(e["locked"])
        assert e["ro/f"].mode == 0o4755 and e["ro/link"].target == "../deep/er/file"
        assert (root / "again").read_bytes() == b"new wins"
        assert os.path.samefile(root / "hard", root / "ro/f")
        assert "deep/er/file" in e and "deep/er" in e
        assert names(resolve(ctx, "ro/link")) == {"link": "deep/er/file"}
        assert (root / "ro/f").stat().st_mtime == 1_700_000_000
    assert list(tmp_path.iterdir()) == []
    with Context.from_tar(tar_of((member("hard"), b"x")), dockerfile="Dockerfile",
                          tmpdir=str(tmp_path)) as ctx:
        assert "hard" in ctx.entries  # no Dockerfile.dockerignore in this one


def test_tar_dockerfile_ignore_file(tmp_path: Path) -> None:
    stream = tar_of((member("x"), b"x"), (member("y"), b"y"),
                    (member("df/Dockerfile"), b"FROM scratch"),
                    (member("df/Dockerfile.dockerignore"), b"x\n"))
    with Context.from_tar(stream, dockerfile="df/Dockerfile", tmpdir=str(tmp_path)) as ctx:
        assert "x" not in ctx.entries and "y" in ctx.entries


# -- content hashes -------------------------------------------------------------------


TREE: dict[str, str | None] = {"app/main.py": "print(1)\n", "app/lib/u.py": "u = 2\n",
                               "app/empty/": None, "app/link": "@lib/u.py",
                               "app/big": "x" * 300_000}


def digest(root: Path, src: str = "app", uid: int = 0, gid: int = 0) -> str:
    with Context.directory(str(root)) as ctx:
        return ctx.sources_digest(resolve(ctx, src), uid, gid)


def test_hash_stable_and_blind_to_times_and_place(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    make_tree(one, TREE)
    make_tree(two, TREE)
    first = digest(one)
    assert first.startswith("sha256:") and len(first) == 71
    assert digest(one) == first and digest(two) == first
    for p in (one / "app").rglob("*"):
        os.utime(p, (1, 2), follow_symlinks=False)
    assert digest(one) == first
    # A tar context of the same files, other times and owners: the same hash.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(one / "app"), arcname="app")
    buf.seek(0)
    with Context.from_tar(buf, tmpdir=str(tmp_path)) as ctx:
        assert ctx.sources_digest(resolve(ctx, "app")) == first


@pytest.mark.parametrize("change", [
    "content", "same-size-content", "mode", "dir-mode", "link-target", "rename", "add", "remove",
    "uid", "gid",
])
def test_hash_sensitive_to_what_the_image_sees(tmp_path: Path, change: str) -> None:
    make_tree(tmp_path, TREE)
    with Context.directory(str(tmp_path)) as ctx:
        before = ctx.sources_digest(resolve(ctx, "app"))
        file_before = ctx.entry_digest("main.py", ctx.entries["app/main.py"])
        main = tmp_path / "app/main.py"
        st0 = main.stat()
        uid = gid = 0
        if change == "content":
            main.write_text("print(2); more\n")
        elif change == "same-size-content":
            main.write_text("print(2)\n")  # same size, times put back: the cache must miss
            os.utime(main, ns=(st0.st_atime_ns, st0.st_mtime_ns))
        elif change == "mode":
            main.chmod(0o755)
        elif change == "dir-mode":
            (tmp_path / "app/empty").chmod(0o700)
        elif change == "link-target":
            (tmp_path / "app/link").unlink()
            (tmp_path / "app/link").symlink_to("main.py")
        elif change == "rename":
            main.rename(tmp_path / "app/main2.py")
        elif change == "add":
            (tmp_path / "app/empty/new").write_text("")
        elif change == "remove":
            (tmp_path / "app/lib/u.py").unlink()
        elif change == "uid":
            uid = 1000
        elif change == "gid":
            gid = 1000
    # A fresh walk (what a rebuild does) sees it.
    assert digest(tmp_path, uid=uid, gid=gid) != before
    if change in ("content", "same-size-content", "mode"):
        with Context.directory(str(tmp_path)) as fresh:
            assert fresh.entry_digest("main.py", fresh.entries["app/main.py"]) != file_before


def test_hash_progress(tmp_path: Path) -> None:
    make_tree(tmp_path, {f"d/f{i}": "x" * i for i in range(600)})
    seen: list[tuple[int, int]] = []
    with Context.directory(str(tmp_path)) as ctx:
        ctx.sources_digest(resolve(ctx, "d"), progress=lambda n, b: seen.append((n, b)))
    assert [n for n, _ in seen] == [256, 512, 601]  # 600 files and the directory itself
    assert seen[-1][1] == sum(range(600))


def test_hash_cache_follows_rewrites_in_one_context(tmp_path: Path) -> None:
    make_tree(tmp_path, TREE)
    with Context.directory(str(tmp_path)) as ctx:
        e = ctx.entries["app/main.py"]
        a = ctx.content_digest(e)
        st0 = (tmp_path / "app/main.py").stat()
        (tmp_path / "app/main.py").write_text("print(9)\n")
        os.utime(tmp_path / "app/main.py", ns=(st0.st_atime_ns, st0.st_mtime_ns))
        assert ctx.content_digest(e) != a


# -- review 10's findings: no traceback, nothing left behind ----------------------------


def leftovers(tmp_path: Path) -> list[str]:
    return [p.name for p in tmp_path.iterdir() if p.name.startswith("rl-build-context-")]


def test_tar_deep_tree_removed_and_refusal_kept(tmp_path: Path) -> None:
    deep = "/".join(["a"] * 1500) + "/f"  # past Python's recursion limit when removed
    with Context.from_tar(tar_of((member(deep), b"x")), tmpdir=str(tmp_path)) as ctx:
        assert deep in ctx.entries
    assert leftovers(tmp_path) == []
    msg = one_line_error(lambda: Context.from_tar(
        tar_of((member(deep), b"x"), (member("../x"), b"x")), tmpdir=str(tmp_path)))
    assert '"../x"' in msg
    assert leftovers(tmp_path) == []


def test_tar_removes_directories_that_deny_their_owner(tmp_path: Path) -> None:
    stream = tar_of((member("d", tarfile.DIRTYPE, mode=0o000), None),
                    (member("d/f", mode=0o000), b"x"), (member("../x"), b"x"))
    one_line_error(lambda: Context.from_tar(stream, tmpdir=str(tmp_path)))
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("times", [{"mtime": "nan"}, {"mtime": "1e400"}, {"mtime": "-1e300"}])
def test_tar_directory_times_out_of_range_are_clamped(tmp_path: Path,
                                                      times: dict[str, str]) -> None:
    info = member("d", tarfile.DIRTYPE)
    info.pax_headers = times
    big = member("e", tarfile.DIRTYPE)
    big.mtime = 2**70
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info)
        tar.addfile(big)
    buf.seek(0)
    with Context.from_tar(buf, tmpdir=str(tmp_path)) as ctx:
        assert ctx.entries["d"].kind == "dir" and ctx.entries["e"].kind == "dir"


def test_tar_path_beyond_path_max_is_one_line(tmp_path: Path) -> None:
    deep = "/".join(["a" * 200] * 30)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member(deep, tarfile.DIRTYPE))
    buf.seek(0)
    msg = one_line_error(lambda: Context.from_tar(buf, tmpdir=str(tmp_path)))
    assert "path longer than 4095 bytes" in msg and len(msg) < 300
    assert leftovers(tmp_path) == []


# Corrupt gzip headers that crash tarfile's stream reader itself (found by fuzzing).
BAD_GZIP = [
    bytes.fromhex("1f8b08f5cc87116b02ffed013d0ac3300c86611dc537b01df9e73c851ced102834ed336b"
                  "3274484321057bf1fb0cfc370d1fb23c5aa9cecd31c67116fb7a704f3e2531511a78adcf"),
    bytes.fromhex("1f8b0805"),
]


@pytest.mark.parametrize("raw", BAD_GZIP)
def test_tar_reader_crashes_are_one_line(tmp_path: Path, raw: bytes) -> None:
    msg = one_line_error(lambda: Context.from_tar(io.BytesIO(raw), tmpdir=str(tmp_path)))
    assert msg.startswith("invalid build context tar: ")
    assert leftovers(tmp_path) == []


def test_directory_os_errors_are_one_line(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    (locked / "ctx").mkdir(parents=True)
    locked.chmod(0)
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "wx").mkdir(mode=0o300)
    try:
        for path in (locked / "ctx", tmp_path / "loop", tmp_path / "wx"):
            msg = one_line_error(functools.partial(Context.directory, str(path)))
            assert msg.startswith("unable to prepare context: ")
    finally:
        locked.chmod(0o700)
        (tmp_path / "wx").chmod(0o700)
    assert "embedded null byte" in one_line_error(lambda: Context.directory("x\0y"))
    assert "File name too long" in one_line_error(lambda: Context.directory("x" * 5000))
    assert "\\n" in one_line_error(lambda: Context.directory(str(tmp_path / "a\nb")))


@pytest.mark.parametrize(("pattern", "path"), [
    ("*a*a*a*a*a*a*a*a*a*a*b", "a" * 40),
    ("**/**/**/**/**/**/**/**/**/**/x", "a/" * 25 + "y"),
    ("[a-z]*?*?*?*?*?*?*?*?*?*?*?*?*b", "a" * 200),
])
def test_dockerignore_glob_does_not_backtrack(pattern: str, path: str) -> None:
    import time
    start = time.monotonic()
    m = ignore.Matcher([pattern])
    assert not m.excluded(path)
    assert m.excluded(path[:-1] + pattern[-1])
    assert time.monotonic() - start < 2  # a backtracking regex takes minutes here


def test_copy_glob_does_not_backtrack(tmp_path: Path) -> None:
    import time
    make_tree(tmp_path, {"a" * 255: "", "a" * 254 + "b": ""})
    start = time.monotonic()
    with Context.directory(str(tmp_path)) as ctx:
        found = [s.name for s in resolve(ctx, "*a*a*a*a*a*a*a*a*a*b")]
    assert found == ["a" * 254 + "b"]
    assert time.monotonic() - start < 2


def test_globs_do_not_match_before_a_trailing_newline(tmp_path: Path) -> None:
    make_tree(tmp_path, {"key\n": "", "key": ""})
    with Context.directory(str(tmp_path)) as ctx:
        assert [s.name for s in resolve(ctx, "ke?")] == ["key"]
    assert ignore.Matcher(["*", "!app"]).excluded("app\n")
    assert not ignore.Matcher(["secret"]).excluded("secret\n")
    assert ignore.Matcher(["[^a]"]).excluded("/")  # a negated class matches "/", as in Go's regexp
    assert ignore.Matcher(["x/**/y"]).excluded("x/a/b/y")
    assert ignore.Matcher(["**x"]).excluded("a/bx")


def test_walk_holds_one_fd_however_wide(tmp_path: Path) -> None:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    make_tree(tmp_path, {f"d{i}/f": "" for i in range(300)})
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 100, hard))
    try:
        with Context.directory(str(tmp_path)) as ctx:
            assert len([p for p in ctx.entries if p.endswith("/f")]) == 300
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("swap", ["dir", "fifo"])
def test_reads_refuse_a_file_swapped_since_the_walk(tmp_path: Path, swap: str) -> None:
    make_tree(tmp_path, {"f": "x"})
    with Context.directory(str(tmp_path)) as ctx:
        (tmp_path / "f").unlink()
        if swap == "dir":
            (tmp_path / "f").mkdir()
        else:
            os.mkfifo(tmp_path / "f")  # reading it would block until a writer came
        msg = one_line_error(lambda: ctx.content_digest(ctx.entries["f"]))
        assert msg == 'error from sender: open "f": not a regular file'
        one_line_error(lambda: ctx.open("f"))


def test_fifo_or_directory_ignore_file_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".dockerignore")
    assert one_line_error(lambda: Context.directory(str(tmp_path))) == \
        'error reading ".dockerignore": not a regular file'
    (tmp_path / ".dockerignore").unlink()
    (tmp_path / ".dockerignore").mkdir()
    assert "not a regular file" in one_line_error(lambda: Context.directory(str(tmp_path)))


def test_tar_symlink_chain_leaving_the_context_is_refused(tmp_path: Path) -> None:
    chain = tar_of((member("a/b/c", tarfile.DIRTYPE), None),
                   (member("a/b/c/u", tarfile.SYMTYPE, "../../.."), None),  # lexically "."
                   (member("a/b/c/w", tarfile.SYMTYPE, "u/../../../../etc/passwd"), None))
    msg = one_line_error(lambda: Context.from_tar(chain, tmpdir=str(tmp_path)))
    assert msg.startswith('invalid build context tar: member "a/b/c/w": symlink pointing outside')
    assert "../../.." in msg
    assert leftovers(tmp_path) == []
    # Order does not matter: the link through u may come before u.
    early = tar_of((member("d", tarfile.DIRTYPE), None),
                   (member("d/v", tarfile.SYMTYPE, "u/../.."), None),
                   (member("d/u", tarfile.SYMTYPE, ".."), None))
    assert '"d/v"' in one_line_error(lambda: Context.from_tar(early, tmpdir=str(tmp_path)))
    # Links that stay inside, dangle or loop are kept, as docker keeps them.
    fine = tar_of((member("d", tarfile.DIRTYPE), None),
                  (member("d/u", tarfile.SYMTYPE, ".."), None),
                  (member("d/w", tarfile.SYMTYPE, "u/d/u/x"), None),
                  (member("loop", tarfile.SYMTYPE, "loop"), None),
                  (member("gone", tarfile.SYMTYPE, "nowhere"), None))
    with Context.from_tar(fine, tmpdir=str(tmp_path)) as ctx:
        assert {"d/u", "d/w", "loop", "gone"} <= set(ctx.entries)


def gnu_sparse(name: str, realsize: int) -> bytes:
    """An old-GNU sparse member of *realsize* bytes that stores no data (1.5 KB of tar)."""
    hdr = bytearray(tarfile.TarInfo(name).tobuf(format=tarfile.GNU_FORMAT))

    def octal(n: int) -> bytes:
        return b"%011o\0" % n
    hdr[156:157] = b"S"
    hdr[124:136] = octal(0)  # stored data
    hdr[386:398] = octal(realsize)  # the map's one entry: 0 bytes at the end
    hdr[398:410] = octal(0)
    hdr[483:495] = octal(realsize)
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\0 " % sum(hdr[:512])
    return bytes(hdr[:512]) + bytes(1024)


def test_tar_sparse_member_keeps_its_holes(tmp_path: Path) -> None:
    with Context.from_tar(io.BytesIO(gnu_sparse("zeros", 64 << 20)), tmpdir=str(tmp_path)) as ctx:
        st_ = os.stat(os.path.join(ctx.root, "zeros"))
        assert st_.st_size == 64 << 20 and st_.st_blocks * 512 < 1 << 20
        assert ctx.entries["zeros"].size == 64 << 20
        import hashlib
        assert ctx.content_digest(ctx.entries["zeros"]) == \
            hashlib.sha256(bytes(64 << 20)).hexdigest()
    # Zeros among data keep the data where it was.
    data = b"a" * 10 + bytes(3 << 20) + b"b"
    with Context.from_tar(tar_of((member("mixed"), data)), tmpdir=str(tmp_path)) as ctx:
        assert Path(ctx.root, "mixed").read_bytes() == data


def test_tar_budget_refuses_beyond_its_limits(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from rootless.build import context
    monkeypatch.setattr(context, "MAX_MEMBERS", 3)
    many = tar_of(*[(member(f"f{i}"), b"") for i in range(4)])
    assert one_line_error(lambda: Context.from_tar(many, tmpdir=str(tmp_path))) == \
        'invalid build context tar: member "f3": build context has more than 3 members'
    monkeypatch.setattr(context, "MAX_BYTES", 1 << 30)
    assert "larger than 1 GiB" in one_line_error(lambda: Context.from_tar(
        io.BytesIO(gnu_sparse("zeros", 2 << 30)), tmpdir=str(tmp_path)))
    assert leftovers(tmp_path) == []


def test_tar_hardlinks_share_their_mode(tmp_path: Path) -> None:
    stream = tar_of((member("f", mode=0o444), b"x"),
                    (member("g", tarfile.LNKTYPE, "f", mode=0o444), None),
                    (member("h", mode=0o400), b"y"),
                    (member("h", tarfile.LNKTYPE, "h", mode=0o400), None))  # a link to itself
    with Context.from_tar(stream, tmpdir=str(tmp_path)) as ctx:
        assert {p: e.mode for p, e in ctx.entries.items()} == {"f": 0o444, "g": 0o444,
                                                               "h": 0o400}
        assert Path(ctx.root, "h").read_bytes() == b"y"
    # One inode, one mode: a link's header cannot give the file another.
    stream = tar_of((member("f", mode=0o600), b"x"),
                    (member("g", tarfile.LNKTYPE, "f", mode=0o755), None))
    with Context.from_tar(stream, tmpdir=str(tmp_path)) as ctx:
        assert ctx.entries["f"].mode == ctx.entries["g"].mode == 0o600


def test_messages_escape_control_characters(tmp_path: Path) -> None:
    make_tree(tmp_path, {"f": "", "abs": "@/etc\nX"})
    with Context.directory(str(tmp_path)) as ctx:
        assert one_line_error(lambda: resolve(ctx, "../x\ny")) == \
            'forbidden path outside the build context: "../x\\ny"'
        assert one_line_error(lambda: resolve(ctx, "nope\nInjected: line")) == \
            'failed to compute cache key: "/nope\\nInjected: line": not found'
        assert '"/etc\\nX"' in one_line_error(lambda: resolve(ctx, "abs/passwd"))
        assert one_line_error(lambda: resolve(ctx, "../x")) == \
            "forbidden path outside the build context: ../x"  # docker's wording, unquoted
    stream = tar_of((member("s", tarfile.SYMTYPE, "../a\nb"), None))
    assert '"../a\\nb"' in one_line_error(lambda: Context.from_tar(stream, tmpdir=str(tmp_path)))


def test_nul_in_a_name_is_refused_not_truncated(tmp_path: Path) -> None:
    make_tree(tmp_path, {"x": "x\nsecret*\n", "secret.txt": ""})
    assert one_line_error(lambda: Context.directory(str(tmp_path), "x\0junk")) == \
        'error reading "x\\u0000junk.dockerignore": embedded null byte'
    with Context.directory(str(tmp_path)) as ctx:
        assert "embedded null byte" in one_line_error(lambda: ctx.open("x\0junk"))


def test_tar_negative_size_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("f", b"x" * 600), ("g", b"y")):
            info = member(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = bytearray(buf.getvalue())
    raw[124:136] = b"\xff" * 11 + b"\x00"  # base-256: -256
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    assert one_line_error(lambda: Context.from_tar(io.BytesIO(bytes(raw)), tmpdir=str(tmp_path))) \
        == 'invalid build context tar: member "f": negative size'


@settings(max_examples=300, deadline=None)
@given(pattern=st.lists(st.sampled_from(["a", "b", "/", "*", "**", "?", "[ab]", "[^a]", "\\*"]),
                        min_size=1, max_size=6).map("".join),
       path=st.lists(st.sampled_from(["a", "b", "ab", "*", "/"]), min_size=1,
                     max_size=8).map("".join))
def test_glob_one_pass_agrees_with_each_parent(pattern: str, path: str) -> None:
    glob = ignore.compile_glob(pattern)
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    assert glob.match_or_parents(path) == any(glob.match(p) for p in prefixes)
