"""User-defined networks (issue 14): `rl network create|ls|inspect|rm|prune`, their
subnets and gateways, docker's messages for bad input, damaged records, address leases
taken by concurrent processes; and containers on networks reaching each other by name,
alias and address through real bridges, veths and the network host's resolver, while
containers of another network cannot."""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import support
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


def test_bad_run_flags_on_networks(rl: RlRunner, rootfs: Path) -> None:
    before = rl("ps", "-aq", check=True).stdout
    line = one_error(rl("run", "--rm", "--network", "nosuch", "--rootfs", rootfs, "true"), 125)
    assert "network nosuch not found" in line
    rl("network", "create", "--subnet", "10.89.200.0/24", "app", check=True)
    for args, message in [
        (["--network", "app", "-p", "80:80"], "cannot publish host port 80"),
        (["--network-alias", "x"], "--network-alias and --ip need a user-defined network"),
        (["--network", "app", "--ip", "bogus"], "invalid IP address: bogus"),
        (["--network", "app", "--network", "none"], "conflicting options: cannot attach both "
                                                    "user-defined and non-user-defined"),
        (["--network", "none", "--network", "app"], "conflicting options"),
        (["--network", "app", "--network", "app"], "a network can be given only once"),
        (["--network", "app", "--network", "nosuch"], "network nosuch not found"),
        (["--network", "app", "--privileged", "--cap-drop", "NET_ADMIN"],
         "--privileged for a container on network app is not supported"),
        (["--network", "app", "--cap-add", "SYS_ADMIN"],
         "CAP_SYS_ADMIN for a container on network app is not supported"),
    ]:
        assert message in one_error(rl("run", "--rm", *args, "--rootfs", rootfs, "true"), 125)
    assert rl("ps", "-aq", check=True).stdout == before  # nothing created
    r = rl("run", "--rm", "--network", "app", "--ip", "10.9.9.9", "--rootfs", rootfs, "true")
    assert r.returncode == 125 and "no configured subnet contains IP address 10.9.9.9" in r.stderr
    r = rl("run", "--rm", "--network", "app", "--ip", "10.89.200.77", "--rootfs", rootfs,
           "hostname", "-i")
    assert r.returncode == 0 and r.stdout.split() == ["10.89.200.77"], r
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
    # ctr-3 is gone (its record removed, or kill -9 before it was made): once its lease is
    # older than the grace a create needs to write its record, its address is free
    alive = lambda owner: owner != "ctr-3"  # noqa: E731
    with pytest.raises(ipam.Conflict, match="no available IP addresses"):
        leases.allocate(net, ipaddress.IPv4Address("10.89.7.1"), "late", alive)
    old = time.time() - ipam.GRACE - 1
    os.utime(tmp_path / got[3], (old, old))
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


# -------------------------------------------------------------------------------------
# Containers on networks (real bridges, veths and the network host's resolver)


def _serve(rl: RlRunner, rootfs: Path, name: str, network: str, *extra: str) -> None:
    # httpd serves /etc: GET /hostname answers with the server's own hostname
    rl("run", "-d", "--name", name, "--hostname", name, "--network", network, *extra,
       "--rootfs", rootfs, "httpd", "-f", "-p", "80", "-h", "/etc", check=True)


def _get(rl: RlRunner, rootfs: Path, network: str, host: str) -> subprocess.CompletedProcess[str]:
    """GET http://HOST/hostname from a new container on *network*. The name goes through
    busybox's nslookup (the network's resolver): busybox-static's wget crashes resolving a
    name (static glibc's getaddrinfo), and with -T, on every network mode. `; exit` keeps sh
    as PID 1: busybox's timeout execs the command, which as PID 1 would ignore SIGTERM."""
    script = ('a=$(nslookup "$1" 2>/dev/null | awk \'/^Address/ {x=$NF} END {print x}\'); '
              'case "$a" in *:53|"") echo "unresolved: $1" >&2; exit 2;; esac; '
              'timeout 5 wget -q -O- "http://$a/hostname"; exit $?')
    if host[0].isdigit():
        script = 'timeout 5 wget -q -O- "http://$1/hostname"; exit $?'
    return rl("run", "--rm", "--network", network, "--rootfs", rootfs, "sh", "-c", script,
              "sh", host, timeout=60)


def test_twenty_concurrent_runs_get_twenty_addresses(rl: RlRunner, rl_path: Path,
                                                     rootfs: Path) -> None:
    """20 `rl run -d --network app` at once: 20 distinct addresses of the subnet, each the
    one the container's own eth0 has."""
    support.require_userns()
    rl("network", "create", "--subnet", "10.89.201.0/24", "app", check=True)
    names = [f"many{i}" for i in range(20)]
    procs = [subprocess.Popen([str(rl_path), "run", "-d", "--name", n, "--network", "app",
                               "--rootfs", str(rootfs), "sleep", "300"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in names]
    try:
        for p in procs:
            _, err = p.communicate(timeout=180)
            assert p.returncode == 0, err
        seen = {}
        for n in names:
            nets = json.loads(rl("inspect", "-f", "{{json .NetworkSettings.Networks}}", n,
                                 check=True).stdout)
            seen[n] = nets["app"]["IPAddress"]
            own = rl("exec", n, "ip", "-4", "-o", "addr", "show", "eth0", check=True).stdout
            assert f" {seen[n]}/24 " in own, (n, own)
        assert len(set(seen.values())) == 20, seen
        assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.89.201.0/24")
                   for a in seen.values())
    finally:
        rl("rm", "-f", *names, timeout=120)


def test_containers_reach_each_other_by_name_alias_and_ip(rl: RlRunner, rootfs: Path) -> None:
    support.require_userns()
    rl("network", "create", "app", check=True)
    try:
        _serve(rl, rootfs, "web1", "app", "--network-alias", "site")
        ip = rl("exec", "web1", "hostname", "-i", check=True).stdout.split()[0]
        subnet = json.loads(rl("network", "inspect", "app", check=True).stdout)[0][
            "IPAM"]["Config"][0]["Subnet"]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(subnet)
        for host in ("web1", "site", ip):
            r = _get(rl, rootfs, "app", host)
            assert r.returncode == 0 and r.stdout == "web1\n", (host, r.stdout, r.stderr)
        # inspect shows the endpoint both ways, as docker does; the MAC is the NIC's own
        ep = json.loads(rl("inspect", "-f", "{{json .NetworkSettings.Networks}}", "web1",
                           check=True).stdout)["app"]
        net = json.loads(rl("network", "inspect", "app", check=True).stdout)[0]
        cid = rl("inspect", "-f", "{{.Id}}", "web1", check=True).stdout.strip()
        assert ep["IPAddress"] == ip and ep["NetworkID"] == net["Id"]
        assert ep["Gateway"] == net["IPAM"]["Config"][0]["Gateway"]
        assert ep["IPPrefixLen"] == ipaddress.ip_network(subnet).prefixlen
        assert ep["Aliases"] == ["site"] and {"web1", "site", cid[:12]} <= set(ep["DNSNames"])
        mac = rl("exec", "web1", "cat", "/sys/class/net/eth0/address", check=True).stdout
        assert ep["MacAddress"] == mac.strip() and mac.startswith("02:42:")
        assert list(net["Containers"]) == [cid]
        assert net["Containers"][cid] == {
            "Name": "web1", "EndpointID": ep["EndpointID"], "MacAddress": ep["MacAddress"],
            "IPv4Address": f"{ip}/{ep['IPPrefixLen']}", "IPv6Address": ""}
        rl("stop", "-t", "1", "web1", check=True)  # a stopped container has no endpoint
        assert json.loads(rl("network", "inspect", "app", check=True).stdout)[0][
            "Containers"] == {}
        ep = json.loads(rl("inspect", "-f", "{{json .NetworkSettings.Networks}}", "web1",
                           check=True).stdout)["app"]
        assert ep["IPAddress"] == "" and ep["NetworkID"] == net["Id"]
        # the network cannot go: a container is on it, and rm says which
        line = one_error(rl("network", "rm", "app"), 1)
        assert "web1" in line and "active endpoints" in line
    finally:
        rl("rm", "-f", "web1")


def _client_addresses(rl: RlRunner, rootfs: Path) -> None:
    """What a published port's clients look like inside: the host's own address kept, a
    loopback client as the network's gateway (as slirp4netns shows it as 10.0.2.2)."""
    import socket
    import tempfile
    import urllib.request

    from test_network import local_address

    gateway = json.loads(rl("network", "inspect", "app", check=True).stdout)[0][
        "IPAM"]["Config"][0]["Gateway"]
    with tempfile.TemporaryDirectory() as tmp:
        www = Path(tmp) / "www"
        (www / "cgi-bin").mkdir(parents=True)
        cgi = www / "cgi-bin" / "addr"
        cgi.write_text('#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$REMOTE_ADDR"\n')
        for p in (Path(tmp), www, www / "cgi-bin", cgi):
            p.chmod(0o755)
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        rl("run", "-d", "--name", "paddr", "--network", "app", "-p", f"{port}:80", "-v",
           f"{www}:/www", "--rootfs", rootfs, "httpd", "-f", "-p", "80", "-h", "/www",
           check=True)
        try:
            def seen(host: str) -> str:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        with urllib.request.urlopen(f"http://{host}:{port}/cgi-bin/addr",
                                                    timeout=10) as resp:
                            return str(resp.read().decode().strip())
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)

            assert seen("127.0.0.1") == f"[::ffff:{gateway}]"
            addr = local_address()
            if addr is not None:
                assert seen(addr) == f"[::ffff:{addr}]"  # the client's own address
        finally:
            rl("rm", "-f", "paddr")


def test_published_ports_of_containers_on_a_network(rl: RlRunner, rootfs: Path) -> None:
    """-p and -P on a user network: the host reaches the container through rl's port
    driver, while the network's containers still reach it by name."""
    import urllib.request

    support.require_userns()
    rl("network", "create", "app", check=True)
    try:
        _serve(rl, rootfs, "pweb", "app", "-p", "127.0.0.1::80", "-P", "--expose", "8080")
        ports = rl("port", "pweb", check=True).stdout.splitlines()
        assert len(ports) == 2 and ports[0].startswith("80/tcp -> 127.0.0.1:"), ports
        assert ports[1].startswith("8080/tcp -> 0.0.0.0:"), ports
        port = int(ports[0].rsplit(":", 1)[1])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=10) as resp:
            assert resp.read() == b"pweb\n"
        shown = json.loads(rl("inspect", "-f", "{{json .NetworkSettings.Ports}}", "pweb",
                              check=True).stdout)
        assert shown["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
        assert _get(rl, rootfs, "app", "pweb").stdout == "pweb\n"
    finally:
        rl("rm", "-f", "pweb")
    _client_addresses(rl, rootfs)
    with pytest.raises(OSError):  # the port went with the container
        urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=5)


def _transfer_rate(rl: RlRunner, rootfs: Path, server: str, client: str, mib: int) -> float:
    """Mbit/s of a download of *mib* MiB from the server container (by address) by the
    client's `rl run` (start-up included: it only lowers the figure)."""
    ip = rl("exec", server, "hostname", "-i", check=True).stdout.split()[0]
    script = f"timeout 120 wget -q -O /dev/null http://{ip}/big{mib}"
    start = time.monotonic()
    rl("run", "--rm", "--network", "app", *client.split(), "--rootfs", rootfs, "sh", "-c",
       script, check=True, timeout=180)
    return mib * 8 * 1.048576 / (time.monotonic() - start)


@pytest.mark.parametrize("limited", ["server", "client"], ids=["egress", "ingress"])
def test_network_bandwidth_on_a_network(rl: RlRunner, rootfs: Path, limited: str) -> None:
    """--network-bandwidth limits a container's NIC on a network both ways: 10mbit holds
    (tbf bounds the rate from above whatever the load), and without it the same
    transfer goes well beyond (measured again, for up to a minute, while a busy
    machine keeps it below three times that: a limit that stuck never gets there)."""
    support.require_userns()
    rl("network", "create", "app", check=True)
    limit = ["--network-bandwidth", "10mbit"]
    serve = ("mkdir /tmp/w && for n in 4 16; do dd if=/dev/zero of=/tmp/w/big$n bs=1M "
             "count=$n 2>/dev/null; done; exec httpd -f -p 80 -h /tmp/w")
    try:
        for name, flags in (("bwlimited", limit), ("bwfree", [])):
            rl("run", "-d", "--name", name, "--network", "app", *flags, "--rootfs", rootfs,
               "sh", "-c", serve, check=True)
        time.sleep(1)  # the files are written
        if limited == "server":
            rate = _transfer_rate(rl, rootfs, "bwlimited", "", 4)
        else:
            rate = _transfer_rate(rl, rootfs, "bwfree", " ".join(limit), 4)
        assert rate < 15, f"10mbit limit, measured {rate:.1f} Mbit/s"
        deadline = time.monotonic() + 60
        rates = [_transfer_rate(rl, rootfs, "bwfree", "", 16)]
        while rates[-1] < 3 * rate and time.monotonic() < deadline:
            rates.append(_transfer_rate(rl, rootfs, "bwfree", "", 16))
        assert max(rates) > 3 * rate, (rates, rate)
    finally:
        rl("rm", "-f", "bwlimited", "bwfree")


_GET_BY_NAME = ('a=$(nslookup "$1" 2>/dev/null | awk \'/^Address/ {x=$NF} END {print x}\'); '
                'case "$a" in *:53|"") echo "unresolved: $1" >&2; exit 2;; esac; '
                'timeout 5 wget -q -O- "http://$a/hostname"')


def _host_links(state: RlState) -> str:
    """The network host's interfaces (its namespaces are the user's to enter)."""
    pid = (state.runtime_dir / "rl" / "nethost" / "pid").read_text().split()[0]
    return subprocess.run(["nsenter", "-U", "-n", "--preserve-credentials", "-t", pid, "ip",
                           "-o", "link"], capture_output=True, text=True, check=True).stdout


def test_connect_and_disconnect(rl: RlRunner, rootfs: Path, rl_state: RlState) -> None:
    """`network connect` gives a running container on one network a NIC on another (its
    names resolve both ways, its own route stays), a restart brings it back, and
    `disconnect` takes it away; docker's messages for the wrong cases."""
    support.require_userns()
    rl("network", "create", "front", check=True)
    rl("network", "create", "back", check=True)

    def get(ctr: str, host: str) -> subprocess.CompletedProcess[str]:
        return rl("exec", ctr, "sh", "-c", _GET_BY_NAME, "sh", host, timeout=60)

    try:
        _serve(rl, rootfs, "cdb", "back")
        _serve(rl, rootfs, "cweb", "front")
        assert get("cweb", "cdb").returncode == 2  # another network's name
        rl("network", "connect", "--alias", "web-b", "back", "cweb", check=True)
        assert get("cweb", "cdb").stdout == "cdb\n"  # by the connected network's resolver
        assert get("cdb", "web-b").stdout == "cweb\n"  # and the other way, by alias
        route = rl("exec", "cweb", "ip", "route", check=True).stdout
        assert route.startswith("default via ") and "dev eth0" in route.splitlines()[0]
        ps = rl("ps", "--format", "{{.Names}} {{.Networks}}", check=True).stdout.splitlines()
        assert "cweb front,back" in ps and "cdb back" in ps
        nets = json.loads(rl("inspect", "-f", "{{json .NetworkSettings.Networks}}", "cweb",
                             check=True).stdout)
        assert list(nets) == ["front", "back"] and nets["back"]["Aliases"] == ["web-b"]
        eth1 = rl("exec", "cweb", "ip", "-4", "-o", "addr", "show", "eth1", check=True).stdout
        assert f" {nets['back']['IPAddress']}/24 " in eth1
        cid = rl("inspect", "-f", "{{.Id}}", "cweb", check=True).stdout.strip()
        assert cid in json.loads(rl("network", "inspect", "back", check=True).stdout)[0][
            "Containers"]
        for args, code, message in [
            (["connect", "back", "cweb"], 1, "endpoint with name cweb already exists in "
                                             "network back"),
            (["connect", "back", "nosuch"], 1, "no such container: nosuch"),
            (["connect", "nosuch", "cweb"], 1, "network nosuch not found"),
            (["connect", "--ip", "bogus", "back", "cweb"], 125, "invalid IP address: bogus"),
            (["disconnect", "front", "cweb"], 1, "was created on network front"),
        ]:
            assert message in one_error(rl("network", *args), code)
        line = one_error(rl("network", "rm", "back"), 1)  # cweb holds a lease there
        assert "cdb" in line and "cweb" in line
        # a restart plugs the connected network again, at the same address
        rl("restart", "-t", "1", "cweb", check=True)
        assert get("cweb", "cdb").stdout == "cdb\n"
        assert f" {nets['back']['IPAddress']}/24 " in rl(
            "exec", "cweb", "ip", "-4", "-o", "addr", "show", "eth1", check=True).stdout
        # disconnect deletes the NIC's host end in the network host, whatever the
        # container did with its own end
        veth = json.loads((rl_state.runtime_dir / "rl" / cid / "nics.json").read_text())["eth1"]
        assert veth in _host_links(rl_state)
        # rm -f disconnects the connected container; the one created on it keeps it
        line = one_error(rl("network", "rm", "-f", "back"), 1)
        assert "cdb" in line and "cweb" not in line
        assert "eth1" not in rl("exec", "cweb", "ip", "-o", "link", check=True).stdout
        assert veth not in _host_links(rl_state)
        rl("network", "connect", "back", "cweb", check=True)
        rl("network", "disconnect", "back", "cweb", check=True)
        assert "eth1" not in rl("exec", "cweb", "ip", "-o", "link", check=True).stdout
        assert get("cweb", "cdb").returncode == 2
        assert "is not connected to network back" in one_error(
            rl("network", "disconnect", "back", "cweb"), 1)
        assert list(json.loads(rl("inspect", "-f", "{{json .NetworkSettings.Networks}}",
                                  "cweb", check=True).stdout)) == ["front"]
    finally:
        rl("rm", "-f", "cweb", "cdb")
    # several --network NAMEs: the first's NIC eth0, the others' as network connect's
    r = rl("run", "--rm", "--network", "front", "--network", "back", "--rootfs", rootfs,
           "sh", "-c", "ip -4 -o addr show eth1 && ip route | head -1", timeout=60)
    assert r.returncode == 0 and " eth1 " in r.stdout and "dev eth0" in r.stdout, r
    # a container on rl's own stack has no NIC the network host could add to
    rl("run", "-d", "--name", "cown", "--rootfs", rootfs, "sleep", "60", check=True)
    try:
        assert "is not on a user-defined network" in one_error(
            rl("network", "connect", "back", "cown"), 1)
    finally:
        rl("rm", "-f", "cown")


def test_ipv6_addresses_on_an_ipv6_network(rl: RlRunner, rootfs: Path) -> None:
    """--ipv6 networks give each container an address of the IPv6 subnet too: reachable
    within the network, answered as AAAA by its resolver, shown by both inspects; and
    still no way from another network (the network host forwards no IPv6)."""
    support.require_userns()
    rl("network", "create", "--ipv6", "--subnet", "fd00:89:1::/64", "six", check=True)
    rl("network", "create", "--ipv6", "--subnet", "fd00:89:2::/64", "other6", check=True)
    try:
        _serve(rl, rootfs, "web6", "six")
        ep = json.loads(rl("inspect", "-f", "{{json .NetworkSettings.Networks}}", "web6",
                           check=True).stdout)["six"]
        ip6 = ep["GlobalIPv6Address"]
        assert ipaddress.ip_address(ip6) in ipaddress.ip_network("fd00:89:1::/64")
        assert ep["GlobalIPv6PrefixLen"] == 64 and ep["IPv6Gateway"] == "fd00:89:1::1"
        shown = rl("exec", "web6", "ip", "-6", "-o", "addr", "show", "eth0", check=True).stdout
        assert f" {ip6}/64 " in shown
        cid = rl("inspect", "-f", "{{.Id}}", "web6", check=True).stdout.strip()
        net = json.loads(rl("network", "inspect", "six", check=True).stdout)[0]
        assert net["Containers"][cid]["IPv6Address"] == f"{ip6}/64"
        script = ('nslookup -type=AAAA web6 2>/dev/null | grep -q "$1" || exit 3; '
                  'timeout 5 wget -q -O- "http://[$1]/hostname"; exit $?')
        r = rl("run", "--rm", "--network", "six", "--rootfs", rootfs, "sh", "-c", script, "sh",
               ip6, timeout=60)
        assert r.returncode == 0 and r.stdout == "web6\n", r
        r = rl("run", "--rm", "--network", "other6", "--rootfs", rootfs, "sh", "-c",
               'timeout 5 wget -q -O- "http://[$1]/hostname"; exit $?', "sh", ip6, timeout=60)
        assert r.returncode != 0 and r.stdout == ""
    finally:
        rl("rm", "-f", "web6")


def test_networks_are_isolated(rl: RlRunner, rootfs: Path) -> None:
    support.require_userns()
    rl("network", "create", "front", check=True)
    rl("network", "create", "back", check=True)
    try:
        _serve(rl, rootfs, "db1", "back")
        ip = rl("exec", "db1", "hostname", "-i", check=True).stdout.split()[0]
        assert _get(rl, rootfs, "back", "db1").stdout == "db1\n"
        # from the other network: the name does not resolve, the address does not answer
        r = _get(rl, rootfs, "front", "db1")
        assert r.returncode == 2 and "unresolved: db1" in r.stderr, r.stderr
        r = _get(rl, rootfs, "front", ip)
        assert r.returncode != 0 and r.stdout == ""
    finally:
        rl("rm", "-f", "db1")


def test_an_internal_network_has_no_way_out(rl: RlRunner, rootfs: Path) -> None:
    support.require_userns()
    rl("network", "create", "--internal", "sealed", check=True)
    rl("network", "create", "open", check=True)
    out = rl("run", "--rm", "--network", "sealed", "--rootfs", rootfs, "sh", "-c",
             "ip route; nslookup example.org >/dev/null 2>&1; echo dns=$?", check=True).stdout
    assert "default" not in out and "dns=1" in out, out
    out = rl("run", "--rm", "--network", "open", "--rootfs", rootfs, "ip", "route",
             check=True).stdout
    assert "default via" in out


def _alive(pid: int) -> bool:
    """Running (a zombie is not: this machine's init may be slow to reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _slirps_of(host: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"slirp4netns") and str(host).encode() in argv and _alive(
                    int(d.name)):
                out.append(int(d.name))
    return out


def test_a_killed_network_host_is_replaced(rl: RlRunner, rootfs: Path,
                                           rl_state: RlState) -> None:
    support.require_userns()
    rl("network", "create", "app", check=True)
    try:
        _serve(rl, rootfs, "web2", "app")
        pid_file = rl_state.runtime_dir / "rl" / "nethost" / "pid"
        old = int(pid_file.read_text().split()[0])
        os.kill(old, 9)
        # the next container gets a new host; the one that lost its network is restarted
        r = rl("run", "--rm", "--network", "app", "--rootfs", rootfs, "hostname", "-i")
        assert r.returncode == 0, r.stderr
        new = int(pid_file.read_text().split()[0])
        assert new != old and not _alive(old)
        # nothing of the old host lives on: its slirp4netns followed it (its exit fd)
        deadline = time.monotonic() + 10
        while _slirps_of(old) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _slirps_of(old) == []
        rl("rm", "-f", "web2", check=True)
        _serve(rl, rootfs, "web2", "app")
        assert _get(rl, rootfs, "app", "web2").stdout == "web2\n"
        # now every rl process serving the network at once: the host and the supervisor
        cid = rl("inspect", "-f", "{{.Id}}", "web2", check=True).stdout.strip()
        lock = rl_state.data_home / "rl" / "containers" / cid / "sup.lock"
        supervisor = int(json.loads(lock.read_text())["pid"])
        host = int(pid_file.read_text().split()[0])
        for pid in (host, supervisor):
            os.kill(pid, 9)
        r = rl("run", "--rm", "--network", "app", "--rootfs", rootfs, "hostname", "-i")
        assert r.returncode == 0, r.stderr
        assert not _alive(host) and not _alive(supervisor)
        rl("rm", "-f", "web2", check=True)
    finally:
        rl("rm", "-f", "web2")
    net_id = json.loads(rl("network", "inspect", "app", check=True).stdout)[0]["Id"]
    assert rl("network", "rm", "app", check=True).stdout == "app\n"
    # nothing of it is left: no record, no lease, no slirp4netns of a host killed
    assert not (rl_state.data_home / "rl" / "networks" / net_id).exists()
    assert _slirps_of(host) == []
