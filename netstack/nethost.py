"""The user's network host: one user and network namespace that holds every
user-defined network's bridge, one slirp4netns for their way out, and their
DNS (issue 14).

    rl (client) ──fork──> I: setsid ──fork──> H: unshare(USER); [the client
        writes its id maps]; unshare(NET); lo up, forwarding, the FORWARD
        policy; exec `python -m netstack.nethost` (dns.py: the networks'
        resolver; leaves when no container has been plugged for IDLE s)
                          I ──> slirp4netns --configure --exit-fd (ends with H);
                          I exits, so H and slirp4netns belong to no rl process

A container on a network joins H's user namespace (container.py's "J" path:
same maps as its own would have) and makes its own network namespace in it,
so a process in H's namespaces owns both ends: the supervisor forks `plug`,
which enters them, makes the network's bridge on first use, and moves one
end of a veth into the container. Rootless, no other arrangement can move a
veth between two network namespaces (docs/decisions.md, "Networks").

Why a separate process rather than the supervisor: the bridges must outlive
any one container. Why one per user rather than per network: one slirp4netns
and one resolver serve them all, and isolation between networks is the
FORWARD policy's (DROP between bridges), as docker's and podman's is.
kill -9 of H takes its namespace, bridges and slirp4netns with it; running
containers lose their network, and the next `rl run` makes a new H.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rootless import paths
from rootless import syscalls as sc
from rootless.errors import RlError
from rootless.runtime import idmap

from .slirp import find_binary

IDLE = 60.0  # seconds without a plugged container before H leaves
NETS = "nets"  # H's directory of networks: <gateway> -> {"leases": dir, ...}


def state_dir() -> Path:
    d = paths.runtime_dir() / "nethost"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


@contextlib.contextmanager
def locked() -> Iterator[None]:
    fd = os.open(state_dir() / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if fields[0] in ("Z", "X"):  # dead, not yet reaped: its namespaces are gone
        return None
    return fields[19]


def running() -> int | None:
    """H's pid if it runs (the pid file's pid, with its start time), else None."""
    try:
        pid_s, start = (state_dir() / "pid").read_text().split()
        pid = int(pid_s)
    except (OSError, ValueError):
        return None
    return pid if _start_time(pid) == start else None


def ensure() -> int:
    """H's pid, started first if it does not run. Called by clients, never by a
    supervisor: a supervisor is a child subreaper and would adopt H."""
    with locked():
        pid = running()
        if pid is None:
            pid = _start()
        os.utime(state_dir() / "pid")  # H's idle clock starts again
        return pid


def _start() -> int:
    plan = idmap.plan()
    report_r, report_w = os.pipe()  # H -> client: "U<pid>", "N", "R" or "E<why>"
    sync_r, sync_w = os.pipe()  # client -> H: "M" maps written, "S" slirp4netns runs
    go_r, go_w = os.pipe()  # client -> I: "S" start slirp4netns now
    exit_r, exit_w = os.pipe()  # slirp4netns leaves when H (the only writer) is gone
    mid = os.fork()
    if mid == 0:  # pragma: no cover - I: parents H and slirp4netns, then leaves them
        code = 1
        try:
            for fd in (report_r, sync_w, go_w):
                os.close(fd)
            os.setsid()
            hpid = os.fork()
            if hpid == 0:
                os.close(exit_r)
                os.close(go_r)
                _host(report_w, sync_r, exit_w)
            for fd in (exit_w, report_w, sync_r):
                os.close(fd)
            if os.read(go_r, 1) == b"S":
                subprocess.Popen(
                    [find_binary("slirp4netns", "slirp4netns"), "--configure", f"--mtu={MTU}",
                     "--disable-host-loopback", f"--exit-fd={exit_r}", str(hpid), "tap0"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, pass_fds=(exit_r,),
                    env={k: v for k, v in os.environ.items() if k in _HOST_ENV})
                code = 0
        except BaseException:
            pass
        os._exit(code)
    for fd in (report_w, sync_r, exit_w, exit_r, go_r):
        os.close(fd)
    try:
        with os.fdopen(report_r, "rb", buffering=0) as rep:
            line = _read_line(rep)
            if not line.startswith("U"):
                raise RlError(f"the network host did not start: {line or 'it died'}")
            hpid = int(line[1:])
            idmap.write_maps(hpid, plan)
            os.write(sync_w, b"M")
            line = _read_line(rep)
            if line != "N":
                raise RlError(f"the network host did not start: {line[1:] or 'it died'}")
            os.write(go_w, b"S")
            os.close(go_w)
            go_w = -1
            _, status = os.waitpid(mid, 0)
            if status != 0:
                raise RlError("the network host's slirp4netns did not start")
            os.write(sync_w, b"S")
            line = _read_line(rep)
            if line != "R":
                raise RlError(f"the network host did not start: {line[1:] or 'it died'}")
    finally:
        os.close(sync_w)
        if go_w >= 0:
            os.close(go_w)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(mid, 0)
    # A new H has a new network namespace: no port chain of a previous one's is in it
    shutil.rmtree(state_dir() / "ports", ignore_errors=True)
    tmp = state_dir() / f".pid-{secrets.token_hex(4)}"
    tmp.write_text(f"{hpid} {_start_time(hpid)}\n")
    tmp.rename(state_dir() / "pid")
    return hpid


def _read_line(f: object) -> str:
    data = b""
    while not data.endswith(b"\n"):
        c = os.read(f.fileno(), 1)  # type: ignore[attr-defined]
        if not c:
            break
        data += c
    return data.decode(errors="replace").strip()


_HOST_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "XDG_RUNTIME_DIR", "XDG_DATA_HOME",
             "XDG_CONFIG_HOME", "PYTHONPATH")


def _host(report_w: int, sync_r: int, exit_w: int) -> None:  # pragma: no cover - H
    try:
        sc.unshare(sc.CLONE_NEWUSER)
        os.write(report_w, f"U{os.getpid()}\n".encode())
        if os.read(sync_r, 1) != b"M":
            os._exit(1)
        sc.unshare(sc.CLONE_NEWNET)
        _ip("link", "set", "lo", "up")
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        # Between bridges, and from an internal network, nothing passes: each
        # network's rules (plug) accept its own way out.
        _iptables("-P", "FORWARD", "DROP")
        os.write(report_w, b"N\n")
        if os.read(sync_r, 1) != b"S":
            os._exit(1)
        os.close(sync_r)
        fd = os.open("/dev/null", os.O_RDWR)
        for n in (0, 1):
            os.dup2(fd, n)
        log = os.open(state_dir() / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 2)
        os.set_inheritable(exit_w, True)
        os.set_inheritable(report_w, True)  # "R" once the resolver listens
        os.chdir("/")  # the client's cwd may be anything, even unreadable in here
        # Only what finds rl's state and Python's modules: H lives long after the
        # client, and the user's environment (tokens...) is none of its business.
        env = {k: v for k, v in os.environ.items() if k in _HOST_ENV}
        os.execve(sys.executable, [sys.executable, "-m", "netstack.dns", str(state_dir()),
                                   str(exit_w), str(report_w)], env)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.write(report_w, f"E{e}\n".encode())
        os._exit(1)


def _binary(name: str) -> str:
    """iproute2's and iptables' commands live in sbin, rarely on a user's PATH."""
    import shutil

    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    found = shutil.which(name, path=path)
    if found is None:
        raise RlError(f"{name} not found: user-defined networks need it (Debian: apt install "
                      f"{'iproute2' if name == 'ip' else name})")
    return found


def _ip(*args: str, pass_fds: tuple[int, ...] = ()) -> None:
    _command([_binary("ip"), *args], pass_fds)


def _ip_batch(lines: list[str], pass_fds: tuple[int, ...] = ()) -> None:
    """Several ip commands in one process (`ip -batch -`): a start pays per process."""
    _command([_binary("ip"), "-batch", "-"], pass_fds, "\n".join(lines) + "\n")


def _iptables(*args: str) -> None:
    _command([_binary("iptables"), "-w", *args])


def _command(argv: list[str], pass_fds: tuple[int, ...] = (), stdin: str = "") -> None:
    """Run a network tool; its error as RlError. Its stdin is *stdin* (EOF at once by
    default, as /dev/null)."""
    try:
        r = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False,
                           pass_fds=pass_fds)
    except OSError as e:
        raise RlError(f"{argv[0]}: {e.strerror}") from None
    if r.returncode != 0:
        raise RlError(f"{' '.join(argv)}: {r.stderr.strip() or f'exit {r.returncode}'}")


def _ebtables_batch(lines: list[str]) -> None:
    """Filter table changes in one ebtables-restore (one process and one nftables
    transaction, not one of each per rule: each costs a container's start)."""
    if lines:
        _ebtables_wait(_ebtables_start(lines))


def _ebtables_start(lines: list[str]) -> subprocess.Popen[str]:
    argv = [_binary("ebtables-restore"), "--noflush"]
    try:
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise RlError(f"{argv[0]}: {e.strerror}") from None
    assert p.stdin is not None
    p.stdin.write("*filter\n" + "\n".join(lines) + "\nCOMMIT\n")
    p.stdin.close()
    return p


def _ebtables_wait(p: subprocess.Popen[str]) -> None:
    assert p.stdout is not None and p.stderr is not None
    p.stdout.read()
    err = p.stderr.read()
    p.wait()
    p.stdout.close()
    p.stderr.close()
    if p.returncode != 0:
        raise RlError(f"ebtables-restore: {err.strip() or f'exit {p.returncode}'}")


def _port_chain(veth: str) -> str:
    return f"RLV-{veth}"


def _port_rules(att: Attachment) -> list[str]:
    """The bridge port of a container's NIC takes only that NIC's own frames: its MAC as
    the source, its addresses in IP and ARP (IPv6: also link-local, and :: for DAD).
    Else a container with CAP_NET_RAW (docker's default) forges a neighbour's address
    on the network, and the resolver answers it with that neighbour's other networks'
    names; or it poisons the neighbours' ARP caches."""
    chain = _port_chain(att.veth)
    mac = [f"! -s {att.mac}", f"-p ARP ! --arp-mac-src {att.mac}"] if att.mac else []
    v6 = [f"-p IPv6 ! --ip6-src {att.address6} -j DROP"] if att.address6 \
        else ["-p IPv6 -j DROP"]
    drops = [*mac, f"-p IPv4 ! --ip-src {att.address}", f"-p ARP ! --arp-ip-src {att.address}"]
    fast = [f"-A {chain} -p IPv4 -s {att.mac} --ip-src {att.address} -j RETURN"] if att.mac \
        else []  # the common frame, its own IPv4 from its own MAC, checked by one rule
    return [f":{chain} RETURN", *fast,
            *(f"-A {chain} {rule} -j DROP" for rule in drops),
            f"-A {chain} -p IPv6 --ip6-src fe80::/10 -j RETURN",
            f"-A {chain} -p IPv6 --ip6-src ::/128 -j RETURN",
            *(f"-A {chain} {rule}" for rule in v6),
            f"-A INPUT -i {att.veth} -j {chain}", f"-A FORWARD -i {att.veth} -j {chain}"]


def _ports_dir() -> Path:
    d = state_dir() / "ports"  # a file per bridge port with a chain: its veth's name
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def _stale_port_rules(keep: set[str]) -> list[str]:
    """Removals of the port chains of NICs gone (their containers exited: the pair went
    with the namespace), but those of *keep*; their records go with them."""
    out = []
    for veth in sorted(os.listdir(_ports_dir())):
        if veth in keep or not veth.startswith("rlv"):
            continue
        chain = _port_chain(veth)
        # nftables deletes no chain with rules: flushed first
        out += [f"-D INPUT -i {veth} -j {chain}", f"-D FORWARD -i {veth} -j {chain}",
                f"-F {chain}", f"-X {chain}"]
    return out


@contextlib.contextmanager
def _plug_lock(wait: bool = True) -> Iterator[bool]:
    """One plug, unplug or sweep at a time in H (plug's comment says why); without *wait*,
    False when another holds it."""
    fd = os.open(state_dir() / "plug.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def sweep_ports() -> None:
    """H's chore, every few seconds: the port chains of NICs gone with their containers
    (skipped while a plug holds the lock: the next round does it)."""
    with _plug_lock(wait=False) as held:
        if not held:
            return
        links = {name for _, name in socket_if_names()}
        rules = _stale_port_rules(links)
        if rules:
            _ebtables_batch(rules)
            _forget_ports(links)


def _forget_ports(keep: set[str]) -> None:
    for veth in os.listdir(_ports_dir()):
        if veth not in keep:
            with contextlib.suppress(FileNotFoundError):
                (_ports_dir() / veth).unlink()


@dataclass
class Attachment:
    """One container's NIC on one network, as plug makes it."""

    network: str  # its name (the resolver's answers are per network)
    bridge: str
    subnet: str
    gateway: str
    address: str
    internal: bool
    leases: str  # the network's leases directory: the resolver's names
    mac: str = ""  # the NIC's address (the engine derives it from the IPv4 address)
    ifname: str = "eth0"  # eth1... for the networks `network connect` added
    default_route: bool = True  # the first network's; a connected one routes its subnet
    # an IPv6 subnet's (--ipv6): within the network only, H forwards no IPv6
    subnet6: str = ""
    gateway6: str = ""
    address6: str = ""
    veth: str = ""  # the host end's name in H (plug names it): what unplug deletes


MTU = 65520  # tap0's, the bridges' and every veth's


def bridge_name(network_id: str) -> str:
    return f"rl-{network_id[:12]}"


def plug(pid: int, att: Attachment, host: int | None = None) -> None:
    """Give container PID 1 *pid* (in H's user namespace) its NIC on *att*'s network:
    run in a child that enters H's namespaces (the caller owns H's user namespace)."""
    host = host or running()
    if host is None:
        raise RlError("the network host is not running (it left or was killed): start the "
                      "container again")

    att.veth = att.veth or f"rlv{secrets.token_hex(5)}"

    def work(container_net: int) -> None:
        _plug_host_side(container_net, att)
        sc.setns(container_net, sc.CLONE_NEWNET)
        _plug_container_side(att)

    _in_host(host, pid, work, f"attaching to network {att.network}")


def unplug(veth: str, network: str, host: int | None = None) -> None:
    """Take a container's NIC off its network (`network disconnect`): its veth's host end
    is deleted in H, which deletes the pair and the bridge's port whatever the container
    did to its own end (renamed it, moved it into a namespace of its own...)."""
    host = host or running()
    if host is None:
        return  # the host is gone, and every NIC it plugged with it

    def work(container_net: int) -> None:
        del container_net
        with _plug_lock():
            links = {name for _, name in socket_if_names()}
            if veth in links:
                _ip("link", "del", veth)
            _ebtables_batch(_stale_port_rules(links - {veth}))
            _forget_ports(links - {veth})

    _in_host(host, 0, work, f"detaching from network {network}")


NICS = "nics.json"  # in the container's run directory: its NICs' host ends, by ifname


def record_nics(run_dir: Path, nics: dict[str, str]) -> None:
    """Add ifname -> host veth names to the run directory's record of them."""
    data = {**recorded_nics(run_dir), **nics}
    tmp = run_dir / f".{NICS}.{secrets.token_hex(4)}"
    tmp.write_text(json.dumps(data))
    tmp.rename(run_dir / NICS)


def recorded_nics(run_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((run_dir / NICS).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _in_host(host: int, pid: int, work: Callable[[int], None], what: str) -> None:
    """Run *work* in a child in H's user and network namespaces, given an fd of the
    container's network namespace; its error as RlError."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child in H
        code = 0
        try:
            os.close(r)
            ufd = os.open(f"/proc/{host}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            nfd = os.open(f"/proc/{host}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            cfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC) if pid else -1
            sc.setns(ufd, sc.CLONE_NEWUSER)
            sc.setns(nfd, sc.CLONE_NEWNET)
            work(cfd)
        except BaseException as e:
            os.write(w, (str(e) or type(e).__name__).encode()[:4000])
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        err = f.read().decode(errors="replace")
    os.waitpid(child, 0)
    if err:
        raise RlError(f"{what}: {err}")


def _plug_host_side(container_net: int, att: Attachment) -> None:
    # One plug at a time in H: concurrent starts would each find a new network's bridge
    # missing and make it (the second: EEXIST), add its rules twice, and remove the same
    # dead port chains (the second: not found).
    with _plug_lock():
        _plug_host_side_locked(container_net, att)


def _plug_host_side_locked(container_net: int, att: Attachment) -> None:
    net = ipaddress.ip_network(att.subnet)
    names = {name for _, name in socket_if_names()}
    if att.bridge not in names:
        _drop_stale_bridges(att)
        _ip("link", "add", att.bridge, "mtu", str(MTU), "type", "bridge")
        _ip("addr", "add", f"{att.gateway}/{net.prefixlen}", "dev", att.bridge)
        if att.subnet6:
            prefix6 = ipaddress.ip_network(att.subnet6).prefixlen
            _ip("-6", "addr", "add", f"{att.gateway6}/{prefix6}", "dev", att.bridge, "nodad")
        _ip("link", "set", att.bridge, "up")
        # The host's addresses are all local to it: without this a container reaches
        # every network's gateway through its own (local delivery, not FORWARD), and
        # the resolver there answers with that network's names, or forwards an
        # internal network's queries out.
        _iptables("-A", "INPUT", "-i", att.bridge, "!", "-d", att.gateway, "-j", "DROP")
        # Nor a forged source: the resolver's answer would go to that address, on
        # another (even an internal) network's bridge.
        _iptables("-A", "INPUT", "-i", att.bridge, "!", "-s", att.subnet, "-j", "DROP")
        # Within a network everything passes (with br_netfilter loaded, bridged frames
        # meet the FORWARD policy too).
        _iptables("-A", "FORWARD", "-i", att.bridge, "-o", att.bridge, "-j", "ACCEPT")
        if not att.internal:
            # Only its own sources: slirp4netns answers any, and a forged one's answer
            # (ESTABLISHED) would come back into another network.
            _iptables("-A", "FORWARD", "-i", att.bridge, "-o", "tap0", "-s", att.subnet,
                      "-j", "ACCEPT")
            _iptables("-A", "FORWARD", "-i", "tap0", "-o", att.bridge, "-m", "conntrack",
                      "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
            _iptables("-t", "nat", "-A", "POSTROUTING", "-s", att.subnet, "-o", "tap0",
                      "-j", "MASQUERADE")
    nets = state_dir() / NETS
    nets.mkdir(mode=0o700, exist_ok=True)
    tmp = nets / f".{secrets.token_hex(4)}"
    tmp.write_text(json.dumps({"network": att.network, "leases": att.leases,
                               "internal": att.internal}))
    tmp.rename(nets / att.gateway)
    veth = att.veth
    mac = f" address {att.mac}" if att.mac else ""
    # The port's rules (by the name: the chains of the NICs gone are swept by H, off a
    # start's path, as a deletion's commit waits for RCU) go in while ip makes the pair
    # and the port; the container's end comes up only once they are in (plug), and no
    # frame crosses a veth before both ends are up.
    rules = _ebtables_start(_port_rules(att))
    (_ports_dir() / veth).touch()
    # slirp4netns's MTU, not Ethernet's 1500: every hop is virtual (no wire to fragment
    # for), and 64 KiB frames move ~1.5x the bytes per packet between containers.
    # The peer goes to the namespace this child opened (an fd, not /proc/PID again:
    # the same namespace for every step, whatever became of the pid meanwhile).
    try:
        _ip_batch([f"link add {veth} mtu {MTU} type veth peer name {att.ifname} mtu {MTU}"
                   f"{mac} netns /proc/self/fd/{container_net}",
                   f"link set {veth} master {att.bridge} up"], pass_fds=(container_net,))
    finally:
        _ebtables_wait(rules)


def _drop_stale_bridges(att: Attachment) -> None:
    """A removed network's bridge holding addresses of this subnet (the host outlived
    the `network rm`; a new network got the subnet again) would take the routes of
    the new one, and its replies: removed first."""
    out = subprocess.run([_binary("ip"), "-o", "-4", "addr", "show", "to", att.subnet],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         check=False).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[1].startswith("rl-") and fields[1] != att.bridge:
            _ip("link", "del", fields[1])


def _plug_container_side(att: Attachment) -> None:
    net = ipaddress.ip_network(att.subnet)
    lines = ["link set lo up", f"addr add {att.address}/{net.prefixlen} dev {att.ifname}"]
    if att.address6:
        prefix6 = ipaddress.ip_network(att.subnet6).prefixlen
        # nodad: no second of "tentative" before the first packet (the host hands out
        # each address once, under the leases' lock)
        lines.append(f"addr add {att.address6}/{prefix6} dev {att.ifname} nodad")
    lines.append(f"link set {att.ifname} up")
    if not att.internal and att.default_route:
        lines.append(f"route add default via {att.gateway}")
    _ip_batch(lines)


def socket_if_names() -> list[tuple[int, str]]:
    import socket

    return socket.if_nameindex()
