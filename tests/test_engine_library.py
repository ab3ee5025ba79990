"""The engine as a library (issue 11): list and stats calls return records, filters are
arguments, and an error raised in a forked child comes back of its own kind.

Everything here calls rl in-process (rootless.engine.*, rootless.runtime.report), as a
REST handler would; the CLI's output of the same calls is tested in test_lifecycle.py
and test_quotas.py.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import support
from rootless import errors
from rootless.engine import containers as api
from rootless.engine import execute, humanize, listing, quotas, store
from rootless.engine.listing import ContainerSummary, Filters
from rootless.engine.options import ExecOptions
from rootless.engine.quotas import Stats
from rootless.errors import (
    CannotExecute,
    Conflict,
    InvalidArgument,
    NotFound,
    RlError,
    Unavailable,
)
from rootless.runtime import cgroups, report

# -- filters ----------------------------------------------------------------------------


def test_filters_parse_and_refuse_unknown_keys() -> None:
    f = Filters.parse(["name=web", "status=running", "id=ab", "name=1"])
    assert f == Filters(names=("web", "1"), statuses=("running",), ids=("ab",))
    assert not Filters.parse([]) and Filters.parse(["name"])  # "name" alone: name=""
    for bad, key in (("label=a=b", "label"), ("bogus", "bogus"), ("=x", "")):
        with pytest.raises(RlError) as exc:
            Filters.parse([bad])
        e = exc.value
        assert isinstance(e, InvalidArgument)
        assert (e.exit_code, e.http_status, e.message) == (125, 400, f"invalid filter '{key}'")


def test_filters_match_every_one_given() -> None:
    s = ContainerSummary(id="abc123", name="web-1", image="i", command="true", created=1.0,
                         state="exited", exit_code=3, finished_at=10.0)
    assert Filters().match(s)
    assert Filters(names=("web", "-1"), statuses=("exited",), ids=("abc",)).match(s)
    assert not Filters(names=("web", "db")).match(s)
    assert not Filters(statuses=("running",)).match(s)
    assert not Filters(ids=("bc",)).match(s)


def test_status_text_is_a_function_of_the_record() -> None:
    s = ContainerSummary(id="a", name="n", image="", command="", created=0.0, state="exited",
                         exit_code=3, started_at=50.0, finished_at=100.0)
    assert s.status(now=160.0) == "Exited (3) About a minute ago"
    assert humanize.status("running", started_at=100.0, now=105.5) == "Up 5 seconds"
    assert humanize.status("created") == "Created"
    assert humanize.status("dead") == "Dead"
    assert (humanize.binary_size(1.5 * 2**20), humanize.human_size(1200)) == ("1.5MiB", "1.2kB")


# -- listing real containers -----------------------------------------------------------


@pytest.fixture(scope="module")
def made(rootfs: Path) -> Iterator[dict[str, str]]:
    """Three containers made with the library: created, running, exited (name -> id)."""
    support.require_userns()
    prefix = f"lib{os.getpid()}"
    out = {}
    try:
        for state, command in (("created", ["true"]), ("exited", ["true"]),
                               ("running", ["sleep", "600"])):
            ctr = api.create(api.CreateOptions(rootfs=str(rootfs), command=command,
                                            name=f"{prefix}-{state}"))
            out[state] = ctr.id
            if state != "created":
                assert api.start(ctr, attach=False, stdin=False) is None
        assert api.wait(store.lookup(out["exited"])) == 0
        yield out
    finally:
        for cid in out.values():
            api.remove(store.Container(cid), force=True)


def _ids(summaries: list[ContainerSummary], made: dict[str, str]) -> set[str]:
    mine = set(made.values())
    return {s.id for s in summaries if s.id in mine}


def test_list_containers_returns_typed_records(made: dict[str, str]) -> None:
    before = time.time()
    running = listing.list_containers()
    assert _ids(running, made) == {made["running"]}
    everyone = listing.list_containers(all_=True)
    assert _ids(everyone, made) == set(made.values())
    assert [s.created for s in everyone] == sorted((s.created for s in everyone), reverse=True)
    by_id = {s.id: s for s in everyone}
    for state, cid in made.items():
        s = by_id[cid]
        assert s.state == state and s.name.endswith(f"-{state}")
        assert isinstance(s.created, float) and 0 < s.created <= before
        assert s.ports == ()
    up, ended = by_id[made["running"]], by_id[made["exited"]]
    assert up.command == "sleep 600" and up.started_at > 0
    assert up.status().startswith("Up ")
    assert (ended.exit_code, ended.finished_at >= ended.started_at > 0) == (0, True)
    assert ended.status().startswith("Exited (0) ") and ended.status().endswith(" ago")
    assert by_id[made["created"]].status() == "Created"


def test_filters_and_last_are_library_arguments(made: dict[str, str]) -> None:
    prefix = f"lib{os.getpid()}-"
    # A filter implies all: the created and exited ones are listed without all_.
    named = listing.list_containers(filters=Filters(names=(prefix,)))
    assert _ids(named, made) == set(made.values()) and len(named) == 3
    exited = listing.list_containers(filters=Filters(names=(prefix,), statuses=("exited",)))
    assert [s.id for s in exited] == [made["exited"]]
    by_id = listing.list_containers(filters=Filters(ids=(made["created"][:12],)))
    assert [s.id for s in by_id] == [made["created"]]
    # last counts the newest of all containers, stopped ones too (docker's -n, -l).
    newest = listing.list_containers(all_=True)[:2]
    assert listing.list_containers(last=2) == newest
    assert listing.list_containers(last=0) == []
    with pytest.raises(InvalidArgument):
        listing.list_containers(filters=Filters.parse(["ancestor=x"]))


def test_port_of_a_container_without_published_ports(made: dict[str, str]) -> None:
    name = store.Container(made["running"]).name
    assert listing.port(name) == []
    with pytest.raises(RlError) as exc:
        listing.port(name, "80")
    e = exc.value
    assert isinstance(e, NotFound)
    assert (e.exit_code, e.message) == (1, f"no public port '80/tcp' published for {name}")
    with pytest.raises(RlError) as exc:
        listing.port(name, "80/sctp")
    assert isinstance(exc.value, InvalidArgument) and exc.value.exit_code == 1
    assert exc.value.message == "invalid port '80/sctp': expected PORT[/tcp|/udp]"


def test_stats_is_a_record_of_numbers(made: dict[str, str]) -> None:
    [s] = quotas.stats([made["running"]], 0.1)
    assert isinstance(s, Stats) and (s.id, s.name) == (made["running"],
                                                       store.Container(made["running"]).name)
    numbers = (s.cpu_usec, s.mem_usage, s.mem_limit, s.pids, s.pids_limit, s.block_read,
               s.block_write, s.net_rx, s.net_tx)
    assert all(isinstance(n, int) for n in numbers)
    assert isinstance(s.cpu_percent, float) and isinstance(s.mem_percent, float)
    if cgroups.probe().base is None:
        # This host delegates no cgroup v2 controllers: rl has no cgroup to read, only
        # /proc's tasks and network counters (the container's sleep is one task).
        cgroup_only = (s.cpu_usec, s.mem_usage, s.mem_limit, s.pids_limit, s.block_read,
                       s.block_write)
        assert not s.available and set(cgroup_only) == {0} and s.cpu_percent == 0.0
        assert s.pids >= 1 and s.net_rx >= 0
    else:
        assert s.available and s.mem_limit > 0 and s.pids >= 1
    with pytest.raises(RlError) as exc:
        quotas.stats([made["exited"]], 0.1)
    assert exc.value.message == f"container {store.Container(made['exited']).name} is not running"
    assert quotas.stats([made["exited"]], 0.1, strict=False) == []


# -- kinds across the report pipe -------------------------------------------------------


def _from_child(exc: BaseException) -> RlError:
    """The error a forked child reports with report.fail_with, as its parent raises it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        report.fail_with(w, exc)
    os.close(w)
    with os.fdopen(r, "rb", buffering=0) as f:
        line = report.read_line(f)
        assert report.read_line(f) == ""  # one line, then EOF
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == (exc.exit_code if isinstance(exc, RlError)
                                                 else errors.EXIT_RL)
    assert len(line.encode()) < select.PIPE_BUF
    with pytest.raises(RlError) as caught:
        report.raise_error(line)
    return caught.value


@pytest.mark.parametrize("exc", [
    NotFound("no such file: /x"), Conflict("in use", 125), InvalidArgument("bad user", 1),
    Unavailable("no userns"), errors.NotRunning("not running"), CannotExecute("denied"),
    errors.CommandNotFound("nope"), RlError("plain", 3), errors.NoSuchContainer("c"),
    NotFound("Conflict is the first word of this message"),
], ids=lambda e: type(e).__name__)
def test_a_kind_raised_in_a_child_arrives_as_that_kind(exc: RlError) -> None:
    got = _from_child(exc)
    assert type(got) is errors.KINDS[errors.kind_of(exc)]
    assert (got.message, got.exit_code, got.http_status) == (exc.message, exc.exit_code,
                                                             exc.http_status)


def test_other_exceptions_in_a_child_arrive_as_rl_errors() -> None:
    got = _from_child(FileNotFoundError(2, "No such file or directory", "/nope"))
    assert type(got) is RlError
    assert (got.message, got.exit_code) == ("No such file or directory: /nope", 125)
    got = _from_child(ValueError("odd"))
    assert type(got) is RlError and got.message == "ValueError: odd"


def test_a_long_message_is_cut_to_one_atomic_write() -> None:
    got = _from_child(NotFound("é" * 5000))
    assert isinstance(got, NotFound) and got.exit_code == 1
    assert got.message and set(got.message) == {"é"}


def test_lines_without_a_kind_mean_what_their_code_means() -> None:
    # rl's format before kinds: the kind is the one the code stands for.
    assert type(report.parse_error("E1 no such container: x")) is RlError
    assert type(report.parse_error("E127 exec: x")) is errors.CommandNotFound
    e = report.parse_error("E1 Conflict the name is in use")
    assert (type(e), e.message, e.exit_code) == (Conflict, "the name is in use", 1)


def test_a_kind_from_the_container_process_reaches_exec(made: dict[str, str]) -> None:
    # E2 resolves the user inside the container and fails with CannotExecute.
    ctr = store.lookup(made["running"])
    with pytest.raises(RlError) as exc:
        execute.run(ctr, ExecOptions(["true"], user="nosuchuser"))
    e = exc.value
    assert isinstance(e, CannotExecute) and e.exit_code == 126
    assert e.message == "unable to find user nosuchuser: no matching entries in passwd file"
    assert store.lookup(made["running"]).running


def test_top_returns_titles_and_processes(made: dict[str, str]) -> None:
    top = api.top(store.lookup(made["running"]), [])
    assert top.titles[-1] == "CMD" and "PID" in top.titles
    assert top.lines[0].split() == top.titles
    assert [p[-1] for p in top.processes] == ["sleep 600"]  # the command keeps its spaces
    assert all(len(p) == len(top.titles) for p in top.processes)



def test_a_kind_from_the_container_process_reaches_start(rootfs: Path) -> None:
    # C2 finds the working directory is a file: InvalidArgument crosses the
    # report pipe to the supervisor, then its error event to this process.
    support.require_userns()
    ctr = api.create(api.CreateOptions(rootfs=str(rootfs), command=["true"],
                                    workdir="/etc/passwd", name=f"lib{os.getpid()}-cwd"))
    try:
        with pytest.raises(RlError) as exc:
            api.start(ctr, attach=False, stdin=False)
        e = exc.value
        assert isinstance(e, InvalidArgument)
        assert (e.exit_code, e.http_status) == (125, 400)
        assert e.message == "working directory /etc/passwd is not a directory"
    finally:
        api.remove(store.Container(ctr.id), force=True)


def test_a_kind_from_exec_s_process_reaches_exec(made: dict[str, str]) -> None:
    with pytest.raises(RlError) as exc:
        execute.run(store.lookup(made["running"]), ExecOptions(["true"], workdir="/etc/passwd"))
    e = exc.value
    assert isinstance(e, InvalidArgument) and e.exit_code == 125
    assert e.message == "working directory /etc/passwd is not a directory"
