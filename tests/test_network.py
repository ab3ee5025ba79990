"""The netstack: the container's own NIC (slirp4netns), published ports, DNS and hosts,
`rl port`, bandwidth limits, cleanup, and the wrong uses of all of them.

Everything stays on loopback or in namespaces the tests create. Host ports are
found by binding port 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import support
from support import RlRunner

pytestmark = pytest.mark.usefixtures("slirp")

HANDLERS = ["rl", "slirp4netns"]


@pytest.fixture(scope="session")
def slirp() -> None:
    support.require_userns()
    support.require_slirp4netns()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_address() -> str | None:
    """A non-loopback address of this host (the source a remote client would have)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout
    except OSError:
        return None
    v4 = [a for a in out.split() if "." in a and not a.startswith("127.")]
    return v4[0] if v4 else None


@pytest.fixture
def www(tmp_path: Path) -> Path:
    """A document root with a file and a CGI that prints the client's address."""
    root = tmp_path / "www"
    (root / "cgi-bin").mkdir(parents=True)
    (root / "index.html").write_text("hello from the container\n")
    cgi = root / "cgi-bin" / "addr"
    cgi.write_text('#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$REMOTE_ADDR"\n')
    cgi.chmod(0o755)
    for p in (tmp_path, root, root / "cgi-bin"):
        p.chmod(0o755)
    return root


def fetch(url: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return str(r.read().decode())
        except (ConnectionError, OSError):
            # httpd may still be starting in the container
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def container(rl: RlRunner, *args: str | os.PathLike[str]) -> Iterator[str]:
    r = rl("run", "-d", *args)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    try:
        yield cid
    finally:
        rl("rm", "-f", cid)


def sh(rl: RlRunner, rootfs: Path, script: str, *flags: str) -> str:
    r = rl("run", "--rm", *flags, "--rootfs", rootfs, "/bin/sh", "-c", script)
    assert r.returncode == 0, r.stderr
    return r.stdout


def slirp_procs(marker: str) -> list[int]:
    """Pids of slirp4netns processes working in marker (a run dir) or below it."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(d / "cwd")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"slirp4netns") and cwd.startswith(marker):
            pids.append(int(d.name))
    return pids


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- the container's own network -----------------------------------------------------


def test_default_network_has_its_own_interface_and_route(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, "ip addr; ip route")
    assert "tap0" in out
    assert "inet 10.0.2.100/24" in out
    assert "mtu 65520" in out
    assert "default via 10.0.2.2 dev tap0" in out
    r = rl("run", "--rm", "--name", "nettap", "--rootfs", rootfs, "true", check=True)
    assert r.returncode == 0


def test_none_and_host_keep_their_meaning(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, "ip addr", "--network", "none")
    assert "tap0" not in out and "127.0.0.1" in out
    assert sh(rl, rootfs, "cat /etc/resolv.conf", "--network", "none") == ""
    host_ifaces = set(os.listdir("/sys/class/net"))
    out = sh(rl, rootfs, "ls /sys/class/net", "--network", "host")
    assert set(out.split()) == host_ifaces


def test_resolv_conf_and_hosts(rl: RlRunner, rootfs: Path) -> None:
    out = sh(rl, rootfs, "cat /etc/resolv.conf", "--name", "dnsbox")
    assert "nameserver 10.0.2.3" in out.splitlines()
    out = sh(rl, rootfs, "cat /etc/resolv.conf", "--dns", "192.0.2.53", "--dns", "2001:db8::53")
    servers = [ln.split()[1] for ln in out.splitlines() if ln.startswith("nameserver")]
    assert servers == ["192.0.2.53", "2001:db8::53"]
    out = sh(rl, rootfs, "cat /etc/hosts; ping -c1 -W1 myhost.example 2>&1 | head -1",
             "--name", "hostsbox", "--hostname", "hb", "--add-host", "myhost.example:127.0.0.7")
    assert "10.0.2.100\thb hostsbox" in out
    assert "127.0.0.7\tmyhost.example" in out
    assert "(127.0.0.7)" in out  # the name resolves through /etc/hosts
    # host networking keeps the host's resolver
    host = Path("/etc/resolv.conf").read_text() if Path("/etc/resolv.conf").exists() else ""
    assert sh(rl, rootfs, "cat /etc/resolv.conf", "--network", "host") == host


def test_exec_joins_the_network(rl: RlRunner, rootfs: Path) -> None:
    with container(rl, "--rootfs", rootfs, "sleep", "60") as cid:
        out = rl("exec", cid, "ip", "addr", check=True).stdout
        assert "inet 10.0.2.100/24" in out


@contextlib.contextmanager
def _answering(family: int, host: str, reply: bytes) -> Iterator[int]:
    """A TCP server on the host that sends reply to every client; yields its port."""
    import threading

    with socket.socket(family, socket.SOCK_STREAM) as srv:
        srv.bind((host, 0))
        srv.listen(8)

        def answer() -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(reply)

        threading.Thread(target=answer, daemon=True).start()
        try:
            yield srv.getsockname()[1]
        finally:
            srv.shutdown(socket.SHUT_RDWR)


def test_host_loopback_only_when_allowed(rl: RlRunner, rootfs: Path) -> None:
    with _answering(socket.AF_INET, "127.0.0.1", b"pong\n") as port:
        script = f"nc 10.0.2.2 {port} </dev/null 2>&1; true"
        assert "pong" not in sh(rl, rootfs, script)
        out = sh(rl, rootfs, script, "--network", "slirp4netns:allow_host_loopback=true")
        assert out == "pong\n"


def test_ipv6_inside_the_container(rl: RlRunner, rootfs: Path) -> None:
    # Its address and route are there before its command runs (no waiting for a
    # router advertisement), and it reaches the host's ::1 through fd00::2.
    with _answering(socket.AF_INET6, "::1", b"pong6\n") as port:
        out = sh(rl, rootfs, f"ip -6 addr show tap0 | grep -c 'inet6 fd00::100/64'; "
                 f"ip -6 route | grep -c '^default via fd00::2'; "
                 f"nc fd00::2 {port} </dev/null 2>&1; true",
                 "--network", "slirp4netns:enable_ipv6=true,allow_host_loopback=true")
        assert out.split() == ["1", "1", "pong6"], out
    # Without the option the container has no IPv6 address but its link-local one.
    out = sh(rl, rootfs, "ip -6 addr show tap0 | grep -c 'scope global'; true")
    assert out.strip() == "0"
    r = rl("run", "--rm", "--network", "slirp4netns:enable_ipv6=maybe", "--rootfs", rootfs,
           "true")
    assert r.returncode == 125 and "enable_ipv6" in r.stderr


# -- published ports ----------------------------------------------------------------


@pytest.mark.parametrize("handler", HANDLERS)
def test_publish_tcp_and_rl_port(rl: RlRunner, rootfs: Path, www: Path, handler: str) -> None:
    port = free_port()
    with container(rl, "--network", f"slirp4netns:port_handler={handler}",
                   "-p", f"127.0.0.1:{port}:80", "-v", f"{www}:/www", "--name", f"web{handler}",
                   "--rootfs", rootfs, "httpd", "-f", "-p", "80", "-h", "/www") as cid:
        assert fetch(f"http://127.0.0.1:{port}/index.html") == "hello from the container\n"
        assert rl("port", cid, check=True).stdout == f"80/tcp -> 127.0.0.1:{port}\n"
        assert rl("port", f"web{handler}", "80").stdout == f"127.0.0.1:{port}\n"
        r = rl("port", cid, "81/tcp")
        assert r.returncode == 1 and "no public port '81/tcp'" in r.stderr
        ps = rl("ps", "--format", "{{.Names}} {{.Ports}}", check=True).stdout
        assert f"web{handler} 127.0.0.1:{port}->80/tcp" in ps.splitlines()
        info = json.loads(rl("inspect", cid, check=True).stdout)[0]
        assert info["NetworkSettings"]["IPAddress"] == "10.0.2.100"
        slirp = info["NetworkSettings"]["Networks"]["slirp4netns"]  # as `network ls` names it
        assert (slirp["IPAddress"], slirp["Gateway"]) == ("10.0.2.100", "10.0.2.2")
        assert info["NetworkSettings"]["Ports"] == {
            "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        assert info["HostConfig"]["PortBindings"] == {
            "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        # A loopback client shows up as the host's gateway address, for both drivers.
        assert fetch(f"http://127.0.0.1:{port}/cgi-bin/addr").strip() == "[::ffff:10.0.2.2]"
    assert port_free(port)


@pytest.mark.parametrize("handler", HANDLERS)
def test_client_source_address_is_kept(rl: RlRunner, rootfs: Path, www: Path,
                                       handler: str) -> None:
    addr = local_address()
    support.require(addr is not None, "the host has no non-loopback IPv4 address")
    port = free_port()
    with container(rl, "--network", f"slirp4netns:port_handler={handler}",
                   "-p", f"{port}:80", "-v", f"{www}:/www",
                   "--rootfs", rootfs, "httpd", "-f", "-p", "80", "-h", "/www"):
        seen = fetch(f"http://{addr}:{port}/cgi-bin/addr").strip()
        assert seen == f"[::ffff:{addr}]"


def test_publish_all_range_and_free_port(rl: RlRunner, rootfs: Path, www: Path) -> None:
    a = free_port()
    b = a + 1 if port_free(a + 1) else None
    support.require(b is not None, "no two consecutive free ports")
    with container(rl, "-P", "--expose", "80", "--expose", "8080/tcp",
                   "-p", f"127.0.0.1:{a}-{b}:81-82", "-v", f"{www}:/www",
                   "--rootfs", rootfs, "httpd", "-f", "-p", "80", "-h", "/www") as cid:
        lines = rl("port", cid, check=True).stdout.splitlines()
        mapping = dict(ln.split(" -> ") for ln in lines)
        assert mapping["81/tcp"] == f"127.0.0.1:{a}"
        assert mapping["82/tcp"] == f"127.0.0.1:{b}"
        host80 = mapping["80/tcp"]
        assert host80.startswith("0.0.0.0:") and int(host80.split(":")[1]) > 0
        assert "8080/tcp" in mapping
        got = fetch(f"http://127.0.0.1:{host80.split(':')[1]}/index.html")
        assert got == "hello from the container\n"
        info = json.loads(rl("inspect", cid, check=True).stdout)
        assert info[0]["HostConfig"]["NetworkMode"] == "slirp4netns"


def test_publish_udp(rl: RlRunner, fresh_rootfs: Path) -> None:
    """A UDP echo server in the container (the host's python, bind-mounted read-only)."""
    for d in ("usr", "lib", "lib64"):
        (fresh_rootfs / d).mkdir(exist_ok=True)
    port = free_port(socket.SOCK_DGRAM)
    echo = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.bind(('0.0.0.0',53))\nwhile True:\n d,a=s.recvfrom(2048)\n"
            " s.sendto(b'echo:'+d+str(a[0]).encode(),a)\n")
    with container(rl, "-p", f"127.0.0.1:{port}:53/udp", "-v", "/usr:/usr:ro",
                   "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro",
                   "--rootfs", fresh_rootfs, "/usr/bin/python3", "-c", echo) as cid:
        assert rl("port", cid).stdout == f"53/udp -> 127.0.0.1:{port}\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(0.5)
            answer = b""
            for _ in range(40):  # the server may still be starting: UDP just drops
                c.sendto(b"ping", ("127.0.0.1", port))
                try:
                    answer = c.recv(2048)
                    break
                except TimeoutError:
                    continue
            # UDP through the fast driver comes from the container's loopback
            assert answer == b"echo:ping127.0.0.1"


def test_udp_flows_are_capped(rl: RlRunner, fresh_rootfs: Path, rl_state: support.RlState) -> None:
    """More client source ports than the cap: the supervisor's fds stay bounded
    (least recently used flows are evicted) and the port keeps forwarding, to
    new clients and to evicted ones alike."""
    from netstack.forwarder import UDP_FLOWS

    for d in ("usr", "lib", "lib64"):
        (fresh_rootfs / d).mkdir(exist_ok=True)
    port = free_port(socket.SOCK_DGRAM)
    echo = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.bind(('0.0.0.0',53))\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto(d,a)\n")

    def ask(c: socket.socket, data: bytes, tries: int = 40) -> bytes:
        for _ in range(tries):  # UDP drops: until the server is up, or a busy moment
            c.sendto(data, ("127.0.0.1", port))
            try:
                return c.recv(2048)
            except TimeoutError:
                continue
        return b""

    def fds(pid: int) -> int:
        return len(os.listdir(f"/proc/{pid}/fd"))

    with container(rl, "-p", f"127.0.0.1:{port}:53/udp", "-v", "/usr:/usr:ro",
                   "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro",
                   "--rootfs", fresh_rootfs, "/usr/bin/python3", "-c", echo) as cid:
        sup = int((rl_state.runtime_dir / "rl" / cid / "sup.pid").read_text())
        first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        first.settimeout(0.5)
        assert ask(first, b"first") == b"first"
        baseline = fds(sup)
        ports = set()
        n = 0
        while len(ports) < UDP_FLOWS + 100:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                c.settimeout(0.5)
                c.bind(("127.0.0.1", 0))
                ports.add(c.getsockname()[1])
                assert ask(c, b"%d" % n, tries=10) == b"%d" % n
                n += 1
        # One fd per flow, none beyond the cap (the first flow was one of them).
        assert fds(sup) <= baseline + UDP_FLOWS, (fds(sup), baseline)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(0.5)
            assert ask(c, b"new") == b"new"
        # The first client's flow was the least recently used: evicted, and made anew.
        assert ask(first, b"again") == b"again"
        first.close()
        assert fds(sup) <= baseline + UDP_FLOWS


def test_ipv6_host_address(rl: RlRunner, rootfs: Path, www: Path) -> None:
    with socket.socket(socket.AF_INET6) as s:
        try:
            s.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback on this host")
        port = s.getsockname()[1]
    with container(rl, "-p", f"[::1]:{port}:80", "-v", f"{www}:/www",
                   "--rootfs", rootfs, "httpd", "-f", "-p", "80", "-h", "/www") as cid:
        assert rl("port", cid).stdout == f"80/tcp -> [::1]:{port}\n"
        assert fetch(f"http://[::1]:{port}/index.html") == "hello from the container\n"


@pytest.mark.parametrize("handler", HANDLERS)
def test_nobody_listening_is_refused_not_hung(rl: RlRunner, rootfs: Path, handler: str) -> None:
    port = free_port()
    with (container(rl, "--network", f"slirp4netns:port_handler={handler}",
                    "-p", f"127.0.0.1:{port}:80", "--rootfs", rootfs, "sleep", "60"),
          socket.create_connection(("127.0.0.1", port), timeout=10) as c):
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        try:
            data = c.recv(100)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            pytest.fail("a connection to a port nobody listens on hung")
        assert data == b""


def test_ports_and_helpers_go_with_the_container(rl: RlRunner, rootfs: Path,
                                                  rl_state: support.RlState) -> None:
    port = free_port()
    with container(rl, "-p", f"127.0.0.1:{port}:80", "--rootfs", rootfs, "sleep", "60") as cid:
        run_dir = rl_state.runtime_dir / "rl" / cid
        assert slirp_procs(str(run_dir))
        assert not port_free(port)
        rl("stop", "-t", "0", cid, check=True)
        assert not slirp_procs(str(run_dir))
        assert port_free(port)
        assert not (run_dir / "slirp4netns.sock").exists()


@pytest.mark.parametrize("handler", HANDLERS)
def test_kill_9_of_the_supervisor_leaves_nothing(rl: RlRunner, rootfs: Path,
                                                 rl_state: support.RlState,
                                                 handler: str) -> None:
    port = free_port()
    with container(rl, "--network", f"slirp4netns:port_handler={handler}",
                   "-p", f"127.0.0.1:{port}:80", "--rootfs", rootfs, "sleep", "60") as cid:
        run_dir = rl_state.runtime_dir / "rl" / cid
        sup = int((run_dir / "sup.pid").read_text())
        helpers = slirp_procs(str(run_dir))
        assert helpers
        children = [int(p) for p in Path(f"/proc/{sup}/task/{sup}/children").read_text().split()]
        os.kill(sup, signal.SIGKILL)
        assert support.wait_until(lambda: not slirp_procs(str(run_dir)))
        assert support.wait_until(lambda: port_free(port))
        # every child of the supervisor (PID 1, slirp4netns, the connector) is gone
        assert support.wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in children))
        assert not (run_dir / "slirp4netns.sock").exists()
        # and the next command works on the same port
        r = rl("run", "--rm", "-p", f"127.0.0.1:{port}:80", "--rootfs", rootfs, "true")
        assert r.returncode == 0, r.stderr


# -- wrong uses -----------------------------------------------------------------------


@pytest.mark.parametrize("spec,why", [
    ("80:", "no container port"),
    ("abc", "not a number"),
    ("70000:80", "out of range"),
    ("8080:0", "out of range"),
    ("8080:80/sctp", "protocol 'sctp'"),
    ("1.2.3.4.5:8080:80", "not an IP address"),
    ("8000-8002:80-81", "the host range has 3 ports"),
    ("8002-8000:80-82", "reversed"),
    ("::1:8080:80", "too many ':'"),
    ("[::1]8080:80", "unbalanced"),
])
def test_malformed_publish(rl: RlRunner, rootfs: Path, spec: str, why: str) -> None:
    r = rl("run", "--rm", "--name", "badport", "-p", spec, "--rootfs", rootfs, "true")
    assert r.returncode == 125
    assert r.stderr.startswith("Error: invalid port specification")
    assert why in r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert "badport" not in rl("ps", "-a").stdout  # nothing was created


@pytest.mark.parametrize("args,why", [
    (["--network", "bogus"], "network bogus not found"),  # docker's: a network's name
    (["--network", "slirp4netns:port_handler=x"], "invalid port_handler"),
    (["--network", "slirp4netns:mtu=99"], "invalid mtu"),
    (["--network", "slirp4netns:foo=1"], "unknown slirp4netns option"),
    (["--network", "none", "-p", "8080:80"], "cannot publish ports with --network=none"),
    (["--network", "host", "-p", "8080:80"], "cannot publish ports with --network=host"),
    (["--dns", "not-an-ip"], "invalid --dns"),
    (["--add-host", "nocolon"], "invalid --add-host"),
    (["--add-host", "h:999.1.1.1"], "is not an IP address"),
    (["--network-bandwidth", "fast"], "invalid --network-bandwidth"),
    (["--network", "none", "--network-bandwidth", "1mbit"], "needs --network=slirp4netns"),
    (["--network", "container:"], "needs a container name"),
    (["--network", "container:nosuchbox"], "no such container"),
])
def test_bad_network_flags(rl: RlRunner, rootfs: Path, args: list[str], why: str) -> None:
    r = rl("run", "--rm", *args, "--rootfs", rootfs, "true")
    assert r.returncode == 125, r.stderr
    assert why in r.stderr.lower() if why.islower() else why in r.stderr
    assert r.stderr.startswith("Error: ")


def test_host_port_in_use_fails_before_start(rl: RlRunner, rootfs: Path,
                                             rl_state: support.RlState, tmp_path: Path) -> None:
    for handler in HANDLERS:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            marker = tmp_path / f"started-{handler}"
            r = rl("run", "--name", f"busy{handler}", "--network",
                   f"slirp4netns:port_handler={handler}", "-p", f"127.0.0.1:{port}:80",
                   "-v", f"{tmp_path}:/out", "--rootfs", rootfs, "touch", f"/out/{marker.name}")
            assert r.returncode == 125
            assert r.stderr == (f"Error: cannot publish port 127.0.0.1:{port}/tcp: the address "
                                "is already in use\n")
            assert not marker.exists()  # the command never ran
            assert not slirp_procs(str(rl_state.runtime_dir))
            ps = rl("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
            assert f"busy{handler} Created" in ps


def test_privileged_port_explains_the_sysctl(rl: RlRunner, rootfs: Path) -> None:
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    support.require(start > 80 and os.geteuid() != 0, "port 80 is not privileged here")
    r = rl("run", "--rm", "-p", "80:80", "--rootfs", rootfs, "true")
    assert r.returncode == 125
    assert "net.ipv4.ip_unprivileged_port_start" in r.stderr
    assert "privileged" in r.stderr


def test_missing_slirp4netns_names_the_package(rl: RlRunner, rootfs: Path,
                                               tmp_path: Path) -> None:
    # A PATH with everything rl needs but slirp4netns.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in os.listdir("/usr/bin"):
        if name != "slirp4netns":
            (bin_dir / name).symlink_to(f"/usr/bin/{name}")
    venv_bin = Path(sys.executable).parent
    path = f"{venv_bin}:{bin_dir}" if venv_bin.is_dir() else str(bin_dir)
    saved = os.environ["PATH"]
    os.environ["PATH"] = path
    try:
        r = rl("run", "--rm", "--rootfs", rootfs, "true")
        assert r.returncode == 125
        assert "slirp4netns is not installed" in r.stderr
        assert "Debian package slirp4netns" in r.stderr
        # --network none does not need it
        assert rl("run", "--rm", "--network", "none", "--rootfs", rootfs, "true").returncode == 0
    finally:
        os.environ["PATH"] = saved


def test_tun_device_not_accessible(rl_path: Path, rootfs: Path, tmp_path: Path,
                                   rl_state: support.RlState) -> None:
    """In a user+mount namespace of our own, /dev/net is hidden under an empty tmpfs."""
    env = {**os.environ, **rl_state.env(), "RL_IDMAP": "single"}
    script = f"mount -t tmpfs none /dev/net && exec {rl_path} run --rm --rootfs {rootfs} true"
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                        script], capture_output=True, text=True, env=env, timeout=60)
    support.require("mount" not in r.stderr, f"cannot hide /dev/net here: {r.stderr}")
    assert r.returncode == 125, r.stderr
    assert "/dev/net/tun is not accessible" in r.stderr


# -- bandwidth ------------------------------------------------------------------------


def _rate(rl_path: Path, rootfs: Path, upload: bool, *flags: str, size: int = 3 << 20) -> float:
    """Mbit/s of a container <-> host TCP transfer of size bytes through tap0, timed on
    the host.

    upload: the container sends, the host receives until EOF; the clock starts
    at the first bytes received, which are not counted (they may have waited in
    buffers). Download: the host sends and half-closes, and waits for the
    container to close once it has read everything, so no buffer hides part of
    the transfer. A busy machine can only make either figure lower.
    """
    size = -(-size // 65536) * 65536  # whole dd blocks
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.settimeout(120)
        port = srv.getsockname()[1]
        if upload:
            blocks = size // 65536
            script = f"dd if=/dev/zero bs=64k count={blocks} 2>/dev/null | nc 10.0.2.2 {port}"
        else:
            # stdin: a fifo opened read-write, never at EOF, so nc sends nothing
            # and leaves only when the host closes
            script = f"mknod /tmp/in p; nc 10.0.2.2 {port} 0<>/tmp/in | wc -c"
        proc = subprocess.Popen(
            [str(rl_path), "run", "--rm", "--network", "slirp4netns:allow_host_loopback=true",
             *flags, "--rootfs", str(rootfs), "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            conn, _ = srv.accept()
            got = timed = 0
            with conn:
                conn.settimeout(120)
                start = time.monotonic()
                if upload:
                    got = len(conn.recv(1 << 20))
                    start = time.monotonic()
                    while chunk := conn.recv(1 << 20):
                        got += len(chunk)
                        timed += len(chunk)
                else:
                    conn.sendall(bytes(size))
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):
                        pass
                    got = timed = size
                elapsed = time.monotonic() - start
        finally:
            out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        if not upload:
            assert int(out) == size
        assert got == size
        return timed * 8 / elapsed / 1e6


@pytest.mark.parametrize("upload", [True, False], ids=["egress", "ingress"])
def test_network_bandwidth_limits_the_container(rl_path: Path, rootfs: Path,
                                                upload: bool) -> None:
    """A 10mbit limit holds, and without the flag the same machine goes well beyond it.

    tbf bounds the limited rate from above whatever the machine's speed (load
    only lowers it). The unlimited rate is compared with the limited one of
    the same run, and measured again while a busy machine keeps it below
    three times that, for up to a minute: a limit that stuck would never get
    there, a passing load does.
    """
    limited = _rate(rl_path, rootfs, upload, "--network-bandwidth", "10mbit")
    assert limited < 15, f"10mbit limit, measured {limited:.1f} Mbit/s"
    deadline = time.monotonic() + 60
    rates = [_rate(rl_path, rootfs, upload, size=16 << 20)]
    while rates[-1] < 3 * limited and time.monotonic() < deadline:
        rates.append(_rate(rl_path, rootfs, upload, size=16 << 20))
    assert max(rates) > 3 * limited, (f"no limit: measured only {rates} Mbit/s, "
                                      f"{limited:.1f} with 10mbit")


# -- --network container:NAME ---------------------------------------------------------


def test_network_container_joins_the_other_containers_stack(rl: RlRunner, rootfs: Path,
                                                            www: Path) -> None:
    port = free_port()
    with container(rl, "--name", "podhost", "-p", f"127.0.0.1:{port}:80", "-v", f"{www}:/www",
                   "--rootfs", rootfs, "httpd", "-f", "-p", "80", "-h", "/www") as cid:
        fetch(f"http://127.0.0.1:{port}/index.html")  # podhost's httpd is up
        out = sh(rl, rootfs, "ip addr show tap0; wget -q -O - http://127.0.0.1/index.html; "
                 "cat /etc/resolv.conf; readlink /proc/self/ns/net; readlink /proc/self/ns/user",
                 "--network", "container:podhost")
        assert "inet 10.0.2.100/24" in out
        assert "hello from the container" in out
        assert "nameserver 10.0.2.3" in out
        ns = rl("exec", cid, "sh", "-c", "readlink /proc/self/ns/net; readlink "
                "/proc/self/ns/user", check=True).stdout
        assert ns.split() == out.split()[-2:]
        info = json.loads(rl("inspect", cid).stdout)
        assert info[0]["HostConfig"]["NetworkMode"] == "slirp4netns"
    r = rl("run", "--rm", "--network", "container:podhost", "--rootfs", rootfs, "true")
    assert r.returncode == 125
    assert "no such container" in r.stderr.lower() or "is not running" in r.stderr
    with container(rl, "--name", "podgone", "--rootfs", rootfs, "true"):
        rl("wait", "podgone")
        r = rl("run", "--rm", "--network", "container:podgone", "--rootfs", rootfs, "true")
        assert r.returncode == 125 and "is not running" in r.stderr


# -- pasta ------------------------------------------------------------------------------


def pasta_procs(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if b"pasta" in cmd.split(b"\0")[0] and marker.encode() in cmd:
            pids.append(int(d.name))
    return pids


def test_pasta_mirrors_the_host_and_publishes(rl: RlRunner, rootfs: Path, www: Path,
                                              rl_state: support.RlState) -> None:
    support.require_pasta()
    out = sh(rl, rootfs, "ip -4 addr; ip route", "--network", "pasta")
    host_v4 = local_address()
    if host_v4 is not None:
        assert f"inet {host_v4}/" in out  # pasta copies the host's address
    assert "default via" in out
    port = free_port()
    with container(rl, "--network", "pasta", "-p", f"127.0.0.1:{port}:80", "-v", f"{www}:/www",
                   "--rootfs", rootfs, "httpd", "-f", "-p", "80", "-h", "/www") as cid:
        assert fetch(f"http://127.0.0.1:{port}/index.html") == "hello from the container\n"
        assert rl("port", cid).stdout == f"80/tcp -> 127.0.0.1:{port}\n"
        run_dir = rl_state.runtime_dir / "rl" / cid
        assert pasta_procs(str(run_dir))
        sup = int((run_dir / "sup.pid").read_text())
        os.kill(sup, signal.SIGKILL)
        assert support.wait_until(lambda: not pasta_procs(str(run_dir)))
        assert support.wait_until(lambda: port_free(port))


def _host_resolver_answers() -> bool:
    """Whether the host's first nameserver answers a query at all (NXDOMAIN is an answer)."""
    import struct

    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
        server = next(ln.split()[1] for ln in lines if ln.split()[:1] == ["nameserver"])
    except (OSError, StopIteration, IndexError):
        return False
    query = struct.pack(">HHHHHH", 0x2a2a, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00" \
        + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET,
                       socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        try:
            s.sendto(query, (server, 53))
            return len(s.recv(512)) >= 12
        except OSError:
            return False


def test_pasta_forwards_dns_to_the_host_resolver(rl: RlRunner, rootfs: Path) -> None:
    # podman's way: the container asks 169.254.1.1 and pasta forwards to the host's
    # resolver, so a resolver on the host's loopback (127.0.0.53) serves it too.
    support.require_pasta()
    out = sh(rl, rootfs, "cat /etc/resolv.conf", "--network", "pasta")
    assert out.splitlines()[0] == "nameserver 169.254.1.1"
    support.require(_host_resolver_answers(), "the host's resolver does not answer here")
    r = rl("run", "--rm", "--network", "pasta", "--rootfs", rootfs, "nslookup", "example.com")
    text = r.stdout + r.stderr
    assert "timed out" not in text and "no servers could be reached" not in text, text
    assert "169.254.1.1" in text and ("can't find" in text or "Address" in text), text
    # --dns: the user's servers, no forwarder
    out = sh(rl, rootfs, "cat /etc/resolv.conf", "--network", "pasta", "--dns", "192.0.2.53")
    assert out.splitlines()[0] == "nameserver 192.0.2.53"


def test_missing_pasta_names_the_package(rl: RlRunner, rootfs: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in os.listdir("/usr/bin"):
        if name not in ("pasta", "passt"):
            (bin_dir / name).symlink_to(f"/usr/bin/{name}")
    saved = os.environ["PATH"]
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{bin_dir}"
    try:
        r = rl("run", "--rm", "--network", "pasta", "--rootfs", rootfs, "true")
        assert r.returncode == 125
        assert "pasta is not installed" in r.stderr and "Debian package passt" in r.stderr
    finally:
        os.environ["PATH"] = saved


def test_port_wrong_uses(rl: RlRunner, rootfs: Path) -> None:
    r = rl("port", "nosuchbox")
    assert r.returncode == 1 and "no such container" in r.stderr.lower()
    with container(rl, "--name", "portbox", "--rootfs", rootfs, "sleep", "60"):
        r = rl("port", "portbox", "80/sctp")
        assert r.returncode == 1 and "invalid port '80/sctp'" in r.stderr
        assert rl("port", "portbox").stdout == ""  # nothing published: nothing shown


def test_published_ports_survive_a_restart(rl: RlRunner, rootfs: Path, www: Path) -> None:
    port = free_port()
    r = rl("create", "-p", f"127.0.0.1:{port}:80", "-v", f"{www}:/www", "--rootfs", rootfs,
           "httpd", "-f", "-p", "80", "-h", "/www")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    try:
        assert rl("port", cid).stdout == ""  # created, not running
        for _ in range(2):
            rl("start", cid, check=True)
            assert fetch(f"http://127.0.0.1:{port}/index.html") == "hello from the container\n"
            rl("stop", "-t", "0", cid, check=True)
            assert port_free(port)
            assert rl("port", cid).stdout == ""
    finally:
        rl("rm", "-f", cid)


def test_publish_all_uses_the_images_exposed_ports(rl: RlRunner, rootfs: Path,
                                                   tmp_path: Path) -> None:
    from imagetools import rootfs_tar

    tar = rootfs_tar(rootfs, tmp_path / "bb.tar.gz")
    name = f"exposing-{os.getpid()}"
    rl("import", "-c", "EXPOSE 80 5353/udp", tar, name, check=True)
    try:
        with container(rl, "-P", name, "sleep", "60") as cid:
            mapping = dict(ln.split(" -> ") for ln in rl("port", cid).stdout.splitlines())
            assert set(mapping) == {"80/tcp", "5353/udp"}
            assert all(int(v.rsplit(":", 1)[1]) > 0 for v in mapping.values())
    finally:
        rl("rmi", name)
