"""The CLI's output helpers (rootless/cli/format.py) as a library: the --format choice,
the lines a listing prints, docker's tables, inspect's output and the `Error:` line.

In-process calls only; the commands' output through them is tested in test_lifecycle.py,
test_images.py, test_info.py and test_quotas.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from rootless.cli import format as fmt
from rootless.cli.template import TemplateError
from rootless.errors import EXIT_RL, InvalidArgument

ROWS = [{"ID": "abc", "Name": "web"}, {"ID": "de", "Name": "database"}]


def _view(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [["ID", "NAME"], *([r["ID"], r["Name"]] for r in rows)]


def _never(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    raise AssertionError("the table is built only for the default view")


def test_table_pads_all_but_the_last_column_three_spaces_apart() -> None:
    assert fmt.table([["A", "LONG HEADER", "Z"], ["wide cell", "x", "last"]]) == (
        "A           LONG HEADER   Z\n"
        "wide cell   x             last")
    # An empty last cell leaves no trailing blanks.
    assert fmt.table([["A", "B"], ["x", ""]]) == "A   B\nx"


def test_truncate_ends_with_an_ellipsis_within_the_width() -> None:
    assert fmt.truncate("abcdef", 6) == "abcdef"
    assert fmt.truncate("abcdefg", 6) == "abcde…"


@pytest.mark.parametrize("value", [None, "", "table"])
def test_select_default_view(value: str | None) -> None:
    shape = fmt.select(value)
    assert shape.default and not shape.json and shape.template is None


def test_select_json_and_templates() -> None:
    assert fmt.select("json").json
    tmpl = fmt.select("table {{.ID}}\\t{{.Name}}").template
    assert tmpl is not None and tmpl.render(ROWS[0]) == "abc\tweb"  # no header, no "table "
    plain = fmt.select("{{.Name}}").template
    assert plain is not None and plain.render(ROWS[1]) == "database"


def test_select_without_the_table_keyword_reads_table_as_a_template() -> None:
    # rl info: only "json" is a keyword; "table" is literal text, printed as given.
    tmpl = fmt.select("table", table_keyword=False).template
    assert tmpl is not None and tmpl.render({}) == "table"
    assert fmt.select("json", table_keyword=False).json
    assert fmt.select(None, table_keyword=False).default


def test_select_parses_the_template_at_once() -> None:
    with pytest.raises(TemplateError) as e:
        fmt.select("{{.ID")
    assert isinstance(e.value, InvalidArgument) and e.value.exit_code == EXIT_RL
    assert e.value.message == "template parsing error: template: :1: unclosed action"


def test_render_json_a_line_per_row() -> None:
    # docker prints one object per line for ps and images alike
    assert list(fmt.render(fmt.select("json"), ROWS, _never)) == [json.dumps(r) for r in ROWS]
    assert list(fmt.render(fmt.select("json"), [], _never)) == []


def test_render_table_template_has_docker_headers_and_aligned_cells() -> None:
    shape = fmt.select("table {{.ID}}\t{{.Name}}")
    assert shape.table
    assert list(fmt.render(shape, ROWS, _never, {"ID": "CONTAINER ID"})) == [
        "CONTAINER ID   NAME\n"
        "abc            web\n"
        "de             database"]
    # no rows: the header alone, from the names given
    assert list(fmt.render(shape, [], _never, {"ID": "CONTAINER ID", "Name": "NAME"})) == [
        "CONTAINER ID   NAME"]
    # literal text and a template without tabs: one column, still a header
    one = fmt.select("table id={{.ID}}")
    assert list(fmt.render(one, ROWS[:1], _never)) == ["id=ID\nid=abc"]
    # a plain template has no header
    assert not fmt.select("{{.ID}}").table


def test_render_template_a_line_per_row() -> None:
    assert list(fmt.render(fmt.select("{{.ID}}:{{.Name}}"), ROWS, _never)) == [
        "abc:web", "de:database"]


def test_render_default_is_the_views_table_with_its_header() -> None:
    assert list(fmt.render(fmt.select(None), ROWS, _view)) == [
        "ID    NAME\nabc   web\nde    database"]
    assert list(fmt.render(fmt.select("table"), [], _view)) == ["ID   NAME"]


def test_render_is_lazy_rows_before_a_failing_one_come_out() -> None:
    lines = fmt.render(fmt.select("{{.Name}}"), [ROWS[0], {"ID": "x"}], _never)
    assert next(lines) == "web"
    with pytest.raises(InvalidArgument, match="can't evaluate field Name"):
        next(lines)


def test_print_inspect_json_array_or_a_template_line_each(
        capsys: pytest.CaptureFixture[str]) -> None:
    objs = [{"Id": "a", "State": {"Status": "running"}}, {"Id": "b", "State": {}}]
    fmt.print_inspect(objs, None, failed=False)
    assert capsys.readouterr().out == json.dumps(objs, indent=4) + "\n"
    fmt.print_inspect(objs, "{{.Id}} {{json .State}}", failed=False)
    assert capsys.readouterr().out == 'a {"Status": "running"}\nb {}\n'
    # Inspect has no keywords: "json" is a template, and prints as such.
    fmt.print_inspect(objs[:1], "json", failed=False)
    assert capsys.readouterr().out == "json\n"


def test_print_inspect_exits_1_after_printing_what_it_found(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        fmt.print_inspect([], None, failed=True)
    assert e.value.code == 1
    assert capsys.readouterr().out == "[]\n"


def test_error_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    fmt.error("bad\nthing")
    out, err = capsys.readouterr()
    assert (out, err) == ("", "Error: bad\\nthing\n")


def test_image_commands_do_not_import_the_app() -> None:
    # cli/images.py shares its output helpers with app through format.py: no cycle.
    code = ("import sys, rootless.cli.images; "
            "sys.exit('rootless.cli.app' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False,
                          timeout=60).returncode == 0
