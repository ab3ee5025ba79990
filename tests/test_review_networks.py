"""An attacker's review of user-defined networks (issue 14): a container on a network
attacks the network host's resolver (dns.py) and the other networks through it. The
attacker is the host's python, bind-mounted read-only into a busybox root."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import support
from support import RlRunner, RlState


@pytest.fixture(autouse=True)
def _clean(rl: RlRunner) -> Iterator[None]:
    yield
    rl("network", "prune", "-f")


def _serve(rl: RlRunner, rootfs: Path, name: str, network: str) -> None:
    rl("run", "-d", "--name", name, "--hostname", name, "--network", network,
       "--rootfs", rootfs, "httpd", "-f", "-p", "80", "-h", "/etc", check=True)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _argv(d: Path) -> list[bytes]:
    try:
        return (d / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _python(rl: RlRunner, rootfs: Path, network: str, script: str,
            *args: str, caps: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    for d in ("usr", "lib", "lib64"):
        (rootfs / d).mkdir(exist_ok=True)
    return rl("run", "--rm", *caps, "--network", network, "-v", "/usr:/usr:ro",
              "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro", "--rootfs", rootfs,
              "/usr/bin/python3", "-c", script, *args, timeout=60)


def _gateway(rl: RlRunner, network: str) -> str:
    cfg = json.loads(rl("network", "inspect", network, check=True).stdout)[0]
    return str(cfg["IPAM"]["Config"][0]["Gateway"])


def _resolves(rl: RlRunner, rootfs: Path, network: str, name: str) -> bool:
    r = rl("run", "--rm", "--network", network, "--rootfs", rootfs, "sh", "-c",
           f"nslookup {name} | grep -A9 '^Name:' | grep -q '^Address'", timeout=60)
    return r.returncode == 0


# A query for NAME with the response bit set, then a datagram from source port 0 (a raw
# socket: CAP_NET_RAW is in docker's default set): each once raised out of the
# resolver's task, which ended the network host and every network with it.
HOSTILE = r"""
import socket, struct, sys
gw, name = sys.argv[1], sys.argv[2].encode()
q = struct.pack(">HHHHHH", 0x1234, 0x8100, 1, 0, 0, 0)
q += bytes([len(name)]) + name + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    s.sendto(q, (gw, 53))
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
plain = struct.pack(">HHHHHH", 0x4321, 0x0100, 1, 0, 0, 0)
plain += bytes([len(name)]) + name + b"\0" + struct.pack(">HH", 1, 1)
udp = struct.pack(">HHHH", 0, 53, 8 + len(plain), 0) + plain  # checksum 0: none
for _ in range(3):
    r.sendto(udp, (gw, 0))
print("sent")
"""


def test_hostile_datagrams_do_not_end_the_network_host(rl: RlRunner, rootfs: Path,
                                                       fresh_rootfs: Path,
                                                       rl_state: RlState) -> None:
    support.require_userns()
    rl("network", "create", "app", check=True)
    try:
        _serve(rl, rootfs, "tgt", "app")
        pid_file = rl_state.runtime_dir / "rl" / "nethost" / "pid"
        host = int(pid_file.read_text().split()[0])
        r = _python(rl, fresh_rootfs, "app", HOSTILE, _gateway(rl, "app"), "tgt")
        assert r.returncode == 0 and r.stdout == "sent\n", r.stderr
        # the resolver still answers, from the same host (the running container kept its NIC)
        assert _resolves(rl, rootfs, "app", "tgt")
        assert _alive(host) and int(pid_file.read_text().split()[0]) == host
    finally:
        rl("rm", "-f", "tgt")


# Ask another network's gateway (the network host's own address, reached through our
# gateway: local delivery, not FORWARD) for a name of that network.
CROSS = r"""
import socket, struct, sys
gw, name = sys.argv[1], sys.argv[2].encode()
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += bytes([len(name)]) + name + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
for _ in range(3):
    s.sendto(q, (gw, 53))
    try:
        print("answer", len(s.recv(4096)))
        break
    except OSError:
        continue
else:
    print("no answer")
"""


def test_another_networks_resolver_is_out_of_reach(rl: RlRunner, rootfs: Path,
                                                   fresh_rootfs: Path) -> None:
    support.require_userns()
    rl("network", "create", "--subnet", "10.89.240.0/24", "front", check=True)
    rl("network", "create", "--subnet", "10.89.241.0/24", "back", check=True)
    try:
        _serve(rl, rootfs, "db2", "back")
        # the attack works where it should: our own gateway answers
        r = _python(rl, fresh_rootfs, "back", CROSS, _gateway(rl, "back"), "db2")
        assert r.stdout.startswith("answer"), (r.stdout, r.stderr)
        r = _python(rl, fresh_rootfs, "front", CROSS, _gateway(rl, "back"), "db2")
        assert r.returncode == 0 and r.stdout == "no answer\n", (r.stdout, r.stderr)
        assert not _resolves(rl, rootfs, "front", "db2")
    finally:
        rl("rm", "-f", "db2")


def test_a_removed_networks_subnet_serves_the_next_network(rl: RlRunner, rootfs: Path) -> None:
    """The network host outlives `network rm`: the old bridge, with the same gateway
    address, once took the new network's routes (its resolver's replies were lost)."""
    support.require_userns()
    rl("network", "create", "--subnet", "10.89.250.0/24", "old", check=True)
    _serve(rl, rootfs, "s0", "old")
    rl("rm", "-f", "s0", check=True)
    rl("network", "rm", "old", check=True)
    rl("network", "create", "--subnet", "10.89.250.0/24", "new", check=True)
    try:
        _serve(rl, rootfs, "s1", "new")
        assert _resolves(rl, rootfs, "new", "s1")
    finally:
        rl("rm", "-f", "s1")


def test_the_network_host_keeps_none_of_the_users_environment(
        rl: RlRunner, rootfs: Path, rl_state: RlState, monkeypatch: pytest.MonkeyPatch) -> None:
    """H outlives the client that started it: the client's environment (a token) stays
    behind, and H's fds are /dev/null, its log, slirp4netns's exit pipe and sockets."""
    support.require_userns()
    rl("network", "create", "app", check=True)
    pid_file = rl_state.runtime_dir / "rl" / "nethost" / "pid"
    if pid_file.exists():  # a host another test started: a new one is started below
        old = int(pid_file.read_text().split()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, 9)
        assert support.wait_until(lambda: not _alive(old))
    monkeypatch.setenv("RL_REVIEW_TOKEN", "hunter2")
    r = rl("run", "--rm", "--network", "app", "--rootfs", rootfs, "env", check=True)
    assert "hunter2" not in r.stdout
    host = int(pid_file.read_text().split()[0])
    assert _alive(host)
    environ = Path(f"/proc/{host}/environ").read_bytes().split(b"\0")
    assert environ and not any(b"hunter2" in e for e in environ), environ
    assert any(e.startswith(b"XDG_RUNTIME_DIR=") for e in environ)
    slirps = [d for d in Path("/proc").iterdir() if d.name.isdigit() and _argv(d)[:1] and
              _argv(d)[0].endswith(b"slirp4netns") and str(host).encode() in _argv(d)]
    assert slirps
    for d in slirps:
        assert b"hunter2" not in (d / "environ").read_bytes()
    for fd in os.listdir(f"/proc/{host}/fd"):
        target = os.readlink(f"/proc/{host}/fd/{fd}")
        assert target in ("/dev/null", str(pid_file.parent / "log")) or target.startswith(
            ("pipe:", "socket:", "anon_inode:")), (fd, target)


# rtnetlink's IFLA_TARGET_NETNSID: the network host's namespace is nsid 0 of a
# container's (eth0's peer is there). With CAP_NET_ADMIN in the network host's user
# namespace (every networked container is in it), this listed and deleted the
# bridges of every network.
NETLINK = r"""
import socket, struct
def attr(t, data):
    n = 4 + len(data)
    return struct.pack("HH", n, t) + data + b"\0" * ((4 - n % 4) % 4)
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
body = struct.pack("BxHiII", 0, 0, 0, 0, 0) + attr(46, struct.pack("i", 0))
s.send(struct.pack("IHHII", 16 + len(body), 18, 0x301, 1, 0) + body)  # RTM_GETLINK dump
names = []
while True:
    data, off, end = s.recv(65536), 0, False
    while off < len(data):
        ln, kind = struct.unpack_from("IH", data, off)
        if kind in (2, 3):  # an error or the dump's end
            end = True
            break
        a = off + 32
        while a + 4 <= off + ln:
            al, at = struct.unpack_from("HH", data, a)
            if al < 4:
                break
            if at == 3:  # IFLA_IFNAME
                names.append(data[a + 4:a + al].rstrip(b"\0").decode())
            a += (al + 3) & ~3
        off += (ln + 3) & ~3
    if end:
        break
print(" ".join(names) or "none")
"""


def test_no_networked_container_administers_the_network_host(rl: RlRunner, rootfs: Path,
                                                            fresh_rootfs: Path) -> None:
    support.require_userns()
    rl("network", "create", "app", check=True)
    r = _python(rl, fresh_rootfs, "app", NETLINK)
    assert r.returncode == 0, r.stderr
    assert "tap0" not in r.stdout and "rl-" not in r.stdout, r.stdout
    # CAP_NET_ADMIN would be over the host's namespace too: refused before anything is made
    before = rl("ps", "-aq", check=True).stdout
    for caps in (("--cap-add", "NET_ADMIN"), ("--cap-add", "ALL")):
        r = _python(rl, fresh_rootfs, "app", NETLINK, caps=caps)
        assert r.returncode == 125 and r.stderr.strip() == (
            "Error: CAP_NET_ADMIN for a container on network app is not supported yet"), r
    assert rl("ps", "-aq", check=True).stdout == before
    # the capability stays on rl's own stack, whose namespaces are the container's own
    r = rl("run", "--rm", "--cap-add", "NET_ADMIN", "--rootfs", rootfs, "ip", "link", "set",
           "lo", "mtu", "1400")
    assert r.returncode == 0, r.stderr


LISTEN = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
s.settimeout(20)
print("listening", flush=True)
try:
    print("got", s.recvfrom(4096)[1][0], flush=True)
except OSError:
    print("nothing", flush=True)
"""

# A query to our own gateway from a forged source: an address of another network. The
# resolver's answer (a payload we chose, to a port we chose) went into that network.
SPOOF = r"""
import socket, struct, sys
gw, src, name = sys.argv[1], sys.argv[2], sys.argv[3].encode()
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += bytes([len(name)]) + name + b"\0" + struct.pack(">HH", 1, 1)
udp = struct.pack(">HHHH", 5353, 53, 8 + len(q), 0) + q
ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(gw))
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(5):
    r.sendto(ip + udp, (gw, 0))
print("sent")
"""


def test_a_forged_source_gets_no_answer_into_another_network(rl: RlRunner, rootfs: Path,
                                                             fresh_rootfs: Path) -> None:
    support.require_userns()
    rl("network", "create", "--subnet", "10.89.242.0/24", "front", check=True)
    rl("network", "create", "--subnet", "10.89.243.0/24", "--internal", "back", check=True)
    for d in ("usr", "lib", "lib64"):
        (fresh_rootfs / d).mkdir(exist_ok=True)
    try:
        rl("run", "-d", "--name", "ear", "--network", "back", "-v", "/usr:/usr:ro",
           "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro", "--rootfs", fresh_rootfs,
           "/usr/bin/python3", "-c", LISTEN, check=True)
        assert support.wait_until(lambda: "listening" in rl("logs", "ear").stdout, 30)
        ear = rl("exec", "ear", "hostname", "-i", check=True).stdout.split()[0]
        r = _python(rl, fresh_rootfs, "front", SPOOF, _gateway(rl, "front"), ear, "atk",
                    caps=("--hostname", "atk"))
        assert r.returncode == 0 and r.stdout == "sent\n", r.stderr
        rl("wait", "ear", timeout=60, check=True)
        assert rl("logs", "ear", check=True).stdout.split("\n")[1] == "nothing"
    finally:
        rl("rm", "-f", "ear")


ICMP_EAR = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(20)
print("listening", flush=True)
try:
    while True:
        data, peer = s.recvfrom(4096)
        if data[20] == 0 and data[24:26] == b"\x52\x4c":  # an echo reply with our id
            print("got", peer[0], flush=True)
            break
except OSError:
    print("nothing", flush=True)
"""

# An echo request to slirp4netns's gateway from a forged source on another network:
# slirp4netns answers whoever asks, and the answer came back (ESTABLISHED) into it.
PING = r"""
import socket, struct, sys
gw, src = sys.argv[1], sys.argv[2]
def csum(b):
    s = sum(struct.unpack(f">{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF
icmp = struct.pack(">BBHHH", 8, 0, 0, 0x524C, 1) + b"rl-review"[:8]
icmp = icmp[:2] + struct.pack(">H", csum(icmp)) + icmp[4:]
ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0,
                 socket.inet_aton(src), socket.inet_aton(gw))
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(5):
    r.sendto(ip + icmp, (gw, 0))
print("sent")
"""


def test_a_forged_source_gets_no_answer_from_outside(rl: RlRunner, rootfs: Path,
                                                     fresh_rootfs: Path) -> None:
    support.require_userns()
    rl("network", "create", "--subnet", "10.89.244.0/24", "front", check=True)
    rl("network", "create", "--subnet", "10.89.245.0/24", "back", check=True)
    for d in ("usr", "lib", "lib64"):
        (fresh_rootfs / d).mkdir(exist_ok=True)
    try:
        rl("run", "-d", "--name", "ear2", "--network", "back", "-v", "/usr:/usr:ro",
           "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro", "--rootfs", fresh_rootfs,
           "/usr/bin/python3", "-c", ICMP_EAR, check=True)
        assert support.wait_until(lambda: "listening" in rl("logs", "ear2").stdout, 30)
        # slirp4netns's gateway answers our own pings (the attack's premise)
        r = rl("run", "--rm", "--network", "front", "--rootfs", rootfs, "ping", "-c1",
               "-W5", "10.0.2.2")
        assert r.returncode == 0, r.stdout + r.stderr
        ear = rl("exec", "ear2", "hostname", "-i", check=True).stdout.split()[0]
        r = _python(rl, fresh_rootfs, "front", PING, "10.0.2.2", ear)
        assert r.returncode == 0 and r.stdout == "sent\n", r.stderr
        rl("wait", "ear2", timeout=60, check=True)
        assert rl("logs", "ear2", check=True).stdout.split("\n")[1] == "nothing"
    finally:
        rl("rm", "-f", "ear2")


def test_pid_host_is_refused_on_a_network(rl: RlRunner, rootfs: Path) -> None:
    """--pid=host would show a networked container the network host's process (same
    user namespace, same uid): refused, nothing created."""
    rl("network", "create", "pidnet", check=True)
    try:
        before = rl("ps", "-aq", check=True).stdout
        r = rl("run", "--rm", "--network", "pidnet", "--pid=host", "--rootfs", rootfs, "true")
        assert r.returncode == 125 and "--pid=host for a container on network pidnet" in r.stderr
        assert r.stderr.count("\n") == 1 and rl("ps", "-aq", check=True).stdout == before
    finally:
        rl("network", "rm", "pidnet")


# On network app, as the container at VICTIM: tell the gateway VICTIM is at this NIC's MAC
# (ARP), send it a query for NAME from VICTIM (an Ethernet frame, AF_PACKET: CAP_NET_RAW is
# in docker's default set), and watch for the answer. Prints the A records seen, or none.
FORGE = r"""
import os, socket, struct, sys, time
victim, gw, name = sys.argv[1], sys.argv[2], sys.argv[3].encode()
ifname = "eth0"
mac = bytes.fromhex(open(f"/sys/class/net/{ifname}/address").read().strip().replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((ifname, 0))
def arp(op, dst_mac, tha):
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, socket.inet_aton(victim),
                       tha, socket.inet_aton(gw))
    return dst_mac + mac + b"\x08\x06" + body
# the gateway's MAC, learnt honestly first (a datagram from our own address)
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", (gw, 9))
time.sleep(0.2)
s.send(arp(1, b"\xff" * 6, b"\0" * 6))  # who-has gw, tell victim (at my MAC)
gw_mac = None
deadline = time.time() + 2
s.settimeout(0.2)
while time.time() < deadline and gw_mac is None:
    try:
        f = s.recv(2048)
    except OSError:
        continue
    if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02" and f[28:32] == socket.inet_aton(gw):
        gw_mac = f[22:28]
if gw_mac is None:  # the gateway never answered the forged request: take it from our cache
    for line in open("/proc/net/arp").read().splitlines()[1:]:
        if line.split()[0] == gw:
            gw_mac = bytes.fromhex(line.split()[3].replace(":", ""))
q = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p for p in name.split(b".")) + b"\0" + struct.pack("!HH", 1, 1)
udp = struct.pack("!HHHH", 40000, 53, 8 + len(q), 0) + q
def csum(b):
    b += b"\0" * (len(b) % 2)
    t = sum(struct.unpack(f"!{len(b)//2}H", b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                  socket.inet_aton(victim), socket.inet_aton(gw))
hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
for _ in range(3):
    s.send(gw_mac + mac + b"\x08\x00" + hdr + udp)
    s.send(arp(2, gw_mac, gw_mac))  # "victim is at my MAC", to the gateway
    time.sleep(0.3)
deadline = time.time() + 3
seen = []
while time.time() < deadline:
    try:
        f = s.recv(4096)
    except OSError:
        continue
    if f[12:14] == b"\x08\x00" and f[23] == 17 and f[34:36] == b"\x00\x35":
        dns = f[42:]
        if dns[:2] == b"\x42\x42" and struct.unpack("!H", dns[6:8])[0] > 0:
            seen.append(socket.inet_ntoa(dns[-4:]))
print("answers", " ".join(seen) or "none")
"""


def test_a_forged_neighbour_learns_nothing_of_its_other_networks(rl: RlRunner,
                                                                 fresh_rootfs: Path) -> None:
    """A container on app forges the address (IP and ARP) of a stopped neighbour that is
    also connected to network secret: the bridge port takes only its own addresses, so
    the resolver never answers the forged query with secret's names."""
    support.require_userns()
    rl("network", "create", "app", check=True)
    rl("network", "create", "secret", check=True)
    try:
        rl("run", "-d", "--name", "hidden", "--network", "secret", "--rootfs", fresh_rootfs,
           "sleep", "300", check=True)
        rl("run", "-d", "--name", "bridgec", "--network", "app", "--rootfs", fresh_rootfs,
           "sleep", "300", check=True)
        rl("network", "connect", "secret", "bridgec", check=True)
        victim = rl("exec", "bridgec", "hostname", "-i", check=True).stdout.split()[0]
        rl("stop", "-t", "0", "bridgec", check=True)  # keeps its leases: nobody answers ARP
        assert not _resolves(rl, fresh_rootfs, "app", "hidden")
        r = _python(rl, fresh_rootfs, "app", FORGE, victim, _gateway(rl, "app"), "hidden")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "answers none", r.stdout
    finally:
        rl("rm", "-f", "hidden", "bridgec")
