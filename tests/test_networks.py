"""User-defined networks' records (issue 14, first part): `rl network create|ls|inspect|rm|
prune`, their subnets and gateways, docker's messages for bad input, damaged records,
and address leases allocated by concurrent processes. Joining a network at run is not
there yet: run says so, or says docker's "not found"."""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import RlRunner, RlState


@pytest.fixture(autouse=True)
def _clean(rl: RlRunner) -> Iterator[None]:
    yield
    rl("network", "prune", "-f")  # the state is shared by the module's tests


def one_error(r: subprocess.CompletedProcess[str], code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


def test_create_inspect_ls_rm(rl: RlRunner) -> None:
    nid = rl("network", "create", "--subnet", "10.89.3.0/24", "--label", "a=b", "app",
             check=True).stdout.strip()
    assert len(nid) == 64 and int(nid, 16) >= 0
    info = json.loads(rl("network", "inspect", "app", check=True).stdout)
    assert len(info) == 1
    net = info[0]
    assert (net["Name"], net["Id"], net["Driver"], net["Scope"]) == ("app", nid, "bridge", "local")
    assert net["IPAM"]["Config"] == [{"Subnet": "10.89.3.0/24", "Gateway": "10.89.3.1"}]
    assert net["Labels"] == {"a": "b"} and net["Internal"] is False
    # by id prefix, and a template
    assert rl("network", "inspect", "-f", "{{.Name}} {{.Internal}}", nid[:6],
              check=True).stdout == "app false\n"

    out = rl("network", "ls", check=True).stdout.splitlines()
    assert out[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    rows = {line.split()[1]: line.split() for line in out[1:]}
    assert rows["app"] == [nid[:12], "app", "bridge", "local"]
    assert {"host", "none"} <= rows.keys()  # rl's --network modes, as docker's predefined
    assert rl("network", "ls", "-q", "--filter", "type=custom",
              check=True).stdout.split() == [nid[:12]]
    assert rl("network", "ls", "--filter", "label=a=b", "--format", "{{.Name}}",
              check=True).stdout == "app\n"
    assert json.loads(rl("network", "ls", "--filter", "name=app", "--format", "json",
                         check=True).stdout)["Name"] == "app"

    assert rl("network", "rm", "app", check=True).stdout == "app\n"
    one_error(rl("network", "inspect", "app"), 1)
    assert "app" not in rl("network", "ls", check=True).stdout


def test_default_subnets_are_distinct_and_ipv6(rl: RlRunner) -> None:
    subnets = []
    for name in ("n1", "n2", "n3"):
        rl("network", "create", name, check=True)
        cfg = json.loads(rl("network", "inspect", name, check=True).stdout)[0]["IPAM"]["Config"]
        subnets.append(ipaddress.ip_network(cfg[0]["Subnet"]))
        assert ipaddress.ip_address(cfg[0]["Gateway"]) == next(subnets[-1].hosts())
    assert all(s.subnet_of(ipaddress.IPv4Network("10.89.0.0/16")) for s in subnets)
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1:])

    rl("network", "create", "--ipv6", "v6", check=True)
    cfg = json.loads(rl("network", "inspect", "v6", check=True).stdout)[0]
    assert cfg["EnableIPv6"] is True
    versions = [ipaddress.ip_network(c["Subnet"]).version for c in cfg["IPAM"]["Config"]]
    assert versions == [4, 6]
    assert ipaddress.ip_network(cfg["IPAM"]["Config"][1]["Subnet"]).subnet_of(
        ipaddress.IPv6Network("fd00::/8"))
    removed = rl("network", "prune", "-f", check=True).stdout.splitlines()
    assert removed[0] == "Deleted Networks:" and sorted(removed[1:]) == ["n1", "n2", "n3", "v6"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--subnet", "10.1.1/24", "x"], 125, "invalid CIDR address: 10.1.1/24"),
    (["--subnet", "10.1.1.5/24", "x"], 125, "invalid subnet 10.1.1.5/24 : it should be "
                                            "10.1.1.0/24"),
    (["--subnet", "10.2.0.0/24", "--gateway", "10.3.0.1", "x"], 125,
     "no matching subnet for gateway 10.3.0.1"),
    (["--subnet", "10.2.0.0/24", "--gateway", "bogus", "x"], 125,
     "invalid gateway address: bogus"),
    (["--gateway", "10.2.0.1", "x"], 125, "every --gateway needs a --subnet"),
    (["--subnet", "fd00::/64", "x"], 125, "an IPv6 --subnet needs --ipv6"),
    (["a/b"], 125, 'invalid network name "a/b"'),
    (["-d", "macvlan", "x"], 1, "plugin not found"),
    (["host"], 1, "network with name host already exists"),
])
def test_bad_create(rl: RlRunner, args: list[str], code: int, message: str) -> None:
    before = rl("network", "ls", "-q", check=True).stdout
    assert message in one_error(rl("network", "create", *args), code)
    assert rl("network", "ls", "-q", check=True).stdout == before  # nothing made


def test_names_and_subnets_are_unique(rl: RlRunner) -> None:
    rl("network", "create", "--subnet", "10.90.0.0/16", "big", check=True)
    assert "network with name big already exists" in one_error(
        rl("network", "create", "big"), 1)
    line = one_error(rl("network", "create", "--subnet", "10.90.5.0/24", "inner"), 1)
    assert "Pool overlaps with other one on this address space" in line and "big" in line
    one_error(rl("network", "rm", "inner"), 1)
    assert rl("network", "rm", "-f", "inner", check=True).stdout == ""  # -f: missing is fine
    line = one_error(rl("network", "rm", "host"), 1)
    assert "host is a pre-defined network and cannot be removed" in line


def test_a_damaged_record_blocks_no_other(rl: RlRunner, rl_state: RlState) -> None:
    good = rl("network", "create", "good", check=True).stdout.strip()
    bad = rl("network", "create", "bad", check=True).stdout.strip()
    record = rl_state.data_home / "rl" / "networks" / bad / "network.json"
    record.write_text("{not json")
    r = rl("network", "ls")
    assert r.returncode == 0 and "good" in r.stdout and good[:12] in r.stdout
    assert r.stderr.count("damaged record") == 1 and "Traceback" not in r.stderr
    assert "damaged record" in one_error(rl("network", "inspect", bad), 1)
    rl("network", "create", "later", check=True)  # creates still work
    rl("network", "rm", "good", "later", check=True)
    shutil.rmtree(record.parent)


def test_run_on_a_network_says_what_it_cannot_do(rl: RlRunner, rootfs: Path) -> None:
    before = rl("ps", "-aq", check=True).stdout
    line = one_error(rl("run", "--rm", "--network", "nosuch", "--rootfs", rootfs, "true"), 125)
    assert "network nosuch not found" in line
    rl("network", "create", "app", check=True)
    line = one_error(rl("run", "--rm", "--network", "app", "--rootfs", rootfs, "true"), 125)
    assert "network app" in line and "not supported yet" in line
    assert rl("ps", "-aq", check=True).stdout == before  # nothing created
    # docker's default network name is rl's default stack
    assert rl("run", "--rm", "--network", "bridge", "--rootfs", rootfs, "true").returncode == 0


def _take(args: tuple[str, str, int]) -> str:
    from netstack import ipam

    subnet, directory, n = args
    net = ipaddress.ip_network(subnet)
    leases = ipam.Leases(Path(directory))
    return str(leases.allocate(net, next(net.hosts()), f"ctr-{n}", lambda owner: True))


def test_concurrent_leases_are_distinct_and_stale_ones_come_back(tmp_path: Path) -> None:
    from netstack import ipam

    subnet = "10.89.7.0/29"  # 8 addresses: network, gateway, broadcast, 5 hosts
    with multiprocessing.get_context("fork").Pool(5) as pool:
        got = pool.map(_take, [(subnet, str(tmp_path), n) for n in range(5)])
    assert len(set(got)) == 5
    assert {"10.89.7.0", "10.89.7.1", "10.89.7.7"}.isdisjoint(got)
    net = ipaddress.IPv4Network(subnet)
    leases = ipam.Leases(tmp_path)
    with pytest.raises(ipam.Conflict, match="no available IP addresses"):
        leases.allocate(net, ipaddress.IPv4Address("10.89.7.1"), "late", lambda o: True)
    # ctr-3 is gone (its record removed, or kill -9 before it was made): its address is free
    alive = lambda owner: owner != "ctr-3"  # noqa: E731
    again = leases.allocate(net, ipaddress.IPv4Address("10.89.7.1"), "late", alive)
    assert str(again) == got[3]
    # the same owner asking twice keeps its address; --ip in use or outside is refused
    assert leases.allocate(net, ipaddress.IPv4Address("10.89.7.1"), "late", alive) == again
    leases.release("ctr-0")
    with pytest.raises(ipam.InvalidArgument, match="no configured subnet contains"):
        leases.allocate(net, ipaddress.IPv4Address("10.89.7.1"), "x", alive, want="10.9.9.9")
    with pytest.raises(ipam.Conflict, match="Address already in use"):
        leases.allocate(net, ipaddress.IPv4Address("10.89.7.1"), "x", alive, want=got[1])
    assert str(leases.allocate(net, ipaddress.IPv4Address("10.89.7.1"), "x", alive,
                               want=got[0])) == got[0]
    assert sorted(os.listdir(tmp_path)) == sorted([".lock", *got])
