"""User-defined networks: their records (docker's `bridge` driver, rootless).

A network is `<data>/networks/<id>/` holding `network.json` (name, subnets,
options) and `leases/` (netstack.ipam). Records are written under a temporary
name and renamed into place under the store-wide lock, which is also what
makes "no two networks share a name or overlapping subnets" hold under
concurrent creates; kill -9 leaves only a dot-name the next create sweeps.
A damaged record is skipped with a warning by every listing and reported
by name by inspect/rm, never blocking the others.

The predefined networks are rl's --network modes (host, none, slirp4netns,
pasta): listed as docker lists bridge/host/none, never stored, never removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netstack import ipam
from netstack.nethost import Attachment, bridge_name
from netstack.options import NetOptions

from .. import paths
from ..errors import Conflict, InvalidArgument, NotFound, RlError
from . import store

RECORD = "network.json"
_TMP = ".tmp-"
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
# rl's --network modes, shown as docker shows its predefined networks.
PREDEFINED = {"host": "host", "none": "null", "slirp4netns": "slirp4netns", "pasta": "pasta"}


@dataclass
class Subnet:
    subnet: str
    gateway: str

    def network(self) -> ipam.Network:
        return ipam.parse_subnet(self.subnet)


@dataclass
class Network:
    id: str
    name: str
    created: float
    driver: str = "bridge"
    subnets: list[Subnet] = field(default_factory=list)
    internal: bool = False
    ipv6: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    def leases(self) -> ipam.Leases:
        return ipam.Leases(root() / self.id / "leases")

    def inspect(self, containers: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
        """docker network inspect's view."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.created))
        frac = f"{self.created % 1:.9f}"[1:]
        zone = time.strftime("%z", time.localtime(self.created))
        return {
            "Name": self.name, "Id": self.id,
            "Created": f"{stamp}{frac}{zone[:3]}:{zone[3:]}",
            "Scope": "local", "Driver": self.driver, "EnableIPv4": True,
            "EnableIPv6": self.ipv6,
            "IPAM": {"Driver": "default", "Options": {},
                     "Config": [{"Subnet": s.subnet, "Gateway": s.gateway}
                                for s in self.subnets]},
            "Internal": self.internal, "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
            "Containers": containers or {}, "Options": self.options, "Labels": self.labels,
        }


def root() -> Path:
    d = paths.data_dir() / "networks"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    fd = os.open(root() / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _predefined(name: str) -> Network:
    nid = hashlib.sha256(f"rl-network-{name}".encode()).hexdigest()
    return Network(nid, name, 0.0, PREDEFINED[name])


def _load(d: Path) -> Network:
    try:
        raw = json.loads((d / RECORD).read_text())
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        return Network(
            d.name, str(raw["name"]), float(raw["created"]), str(raw.get("driver", "bridge")),
            [Subnet(str(s["subnet"]), str(s["gateway"])) for s in raw.get("subnets", [])],
            bool(raw.get("internal")), bool(raw.get("ipv6")),
            {str(k): str(v) for k, v in (raw.get("labels") or {}).items()},
            {str(k): str(v) for k, v in (raw.get("options") or {}).items()})
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise RlError(f"network {d.name[:12]}: damaged record ({e})") from None


def _stored(problems: list[str] | None = None) -> list[Network]:
    out = []
    for d in sorted(root().iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        try:
            out.append(_load(d))
        except RlError as e:
            if problems is not None:
                problems.append(e.message)
    return out


def list_networks() -> tuple[list[Network], list[str]]:
    """Every network (the predefined ones, then the user's by name) and what could not be
    read: a damaged record is named there and hides no other."""
    problems: list[str] = []
    nets = sorted(_stored(problems), key=lambda n: n.name)
    return [_predefined(n) for n in PREDEFINED] + nets, problems


def get(ref: str) -> Network:
    """A network by name, full id or unique id prefix (docker's order)."""
    if ref in PREDEFINED:
        return _predefined(ref)
    nets = _stored()
    for n in nets:
        if n.name == ref or n.id == ref:
            return n
    if re.fullmatch(r"[0-9a-f]{1,64}", ref):
        hits = [n for n in nets if n.id.startswith(ref)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise Conflict(f"network {ref} is ambiguous ({len(hits)} matches found based on ID"
                           " prefix)", 1)
    if (root() / ref).is_dir() and re.fullmatch(r"[0-9a-f]{64}", ref):
        _load(root() / ref)  # a damaged record says so by name
    raise NotFound(f"network {ref} not found", 1)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(f'invalid network name "{name}": only "[a-zA-Z0-9][a-zA-Z0-9_.-]" '
                              "are allowed")
    return name


def create(name: str, subnets: list[str] | None = None, gateways: list[str] | None = None,
           internal: bool = False, ipv6: bool = False, labels: dict[str, str] | None = None,
           driver: str = "bridge", options: dict[str, str] | None = None) -> Network:
    """A new bridge network; its subnets are checked against every other network's."""
    check_name(name)
    if driver != "bridge":
        raise NotFound(f"could not find plugin {driver} in v1 plugin registry: plugin not "
                       "found", 1)
    asked = [ipam.parse_subnet(s) for s in subnets or []]
    gws = list(gateways or [])
    if len(gws) > len(asked):
        raise InvalidArgument("every --gateway needs a --subnet (in the same order)")
    if sum(1 for s in asked if s.version == 4) > 1 or sum(1 for s in asked if s.version == 6) > 1:
        raise InvalidArgument("at most one IPv4 and one IPv6 --subnet")
    if any(s.version == 6 for s in asked) and not ipv6:
        raise InvalidArgument("an IPv6 --subnet needs --ipv6")
    with _locked():
        _sweep()
        if name in PREDEFINED:
            raise Conflict(f"network with name {name} already exists", 1)
        others = _stored()
        if any(n.name == name for n in others):
            raise Conflict(f"network with name {name} already exists", 1)
        used = [(n.name, s.network()) for n in others for s in n.subnets]
        ipam.check_no_overlap(asked, used)
        if not any(s.version == 4 for s in asked):
            asked.insert(0, ipam.free_subnet(u for _, u in used))
            gws.insert(0, "")
        if ipv6 and not any(s.version == 6 for s in asked):
            asked.append(ipam.random_ula())
        gws += [""] * (len(asked) - len(gws))
        subs = [Subnet(str(s), str(ipam.gateway_for(s, g or None)))
                for s, g in zip(asked, gws, strict=True)]
        nid = secrets.token_hex(32)
        tmp = root() / f"{_TMP}{secrets.token_hex(8)}"
        tmp.mkdir(mode=0o700)
        try:
            record = {"name": name, "created": time.time(), "driver": driver,
                      "subnets": [{"subnet": s.subnet, "gateway": s.gateway} for s in subs],
                      "internal": internal, "ipv6": ipv6, "labels": labels or {},
                      "options": options or {}}
            (tmp / RECORD).write_text(json.dumps(record))
            os.rename(tmp, root() / nid)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _load(root() / nid)


def _sweep() -> None:
    for d in root().iterdir():
        if d.name.startswith(_TMP):
            shutil.rmtree(d, ignore_errors=True)


def containers_on(net: Network) -> dict[str, str]:
    """id -> name of the containers holding a lease on *net* (a lease whose container
    record is gone, say after kill -9 of a create, holds nothing)."""
    live = {c.id: c for c in store.all_containers()}
    out = {}
    for owner in set(net.leases().held().values()):
        if owner in live:
            out[owner] = store.name_or_id(live[owner])
    return out


def mac_address(ip: str) -> str:
    """The MAC of a NIC with IPv4 address *ip*: docker's 02:42 and the address's four bytes
    (plug sets it, so it is known without asking the kernel, and stable across restarts)."""
    return "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))


def _endpoint_id(net: Network, cid: str) -> str:
    return hashlib.sha256(f"{net.id}/{cid}".encode()).hexdigest()


def _leases_of(net: Network, cid: str,
               entries: dict[str, tuple[str, list[str], float]] | None = None
               ) -> dict[int, tuple[str, int, list[str]]]:
    """The container's leases on *net* by IP version: (address, prefix length, the names it
    answers to); *entries*: the network's leases, when the caller read them already."""
    out: dict[int, tuple[str, int, list[str]]] = {}
    for addr, (owner, names, _) in (entries if entries is not None
                                    else net.leases().entries()).items():
        if owner == cid:
            ip = ipam.parse_address(addr, "IP")
            prefix = next((s.network().prefixlen for s in net.subnets if ip in s.network()), 32)
            out.setdefault(ip.version, (addr, prefix, names))
    return out


def endpoint_settings(net: Network, cid: str, aliases: list[str], running: bool,
                      requested_ip: str = "") -> dict[str, Any]:
    """docker inspect's NetworkSettings.Networks[NAME]: the address while the container
    runs (docker's endpoint exists only then), the network's identity always."""
    leases = _leases_of(net, cid) if running else {}
    gateway = next((s.gateway for s in net.subnets if s.network().version == 4), "")
    gateway6 = next((s.gateway for s in net.subnets if s.network().version == 6), "")
    ip, prefix, names = leases.get(4) or ("", 0, [])
    ip6, prefix6, _ = leases.get(6) or ("", 0, [])
    return {
        "IPAMConfig": {"IPv4Address": requested_ip} if requested_ip else None,
        "Links": None, "Aliases": aliases or None,
        "MacAddress": mac_address(ip) if ip else "", "DriverOpts": None,
        "GwPriority": 0, "NetworkID": net.id,
        "EndpointID": _endpoint_id(net, cid) if ip else "",
        "Gateway": gateway if ip else "", "IPAddress": ip, "IPPrefixLen": prefix,
        "IPv6Gateway": gateway6 if ip6 else "", "GlobalIPv6Address": ip6,
        "GlobalIPv6PrefixLen": prefix6,
        "DNSNames": names or None,  # what the network's resolver answers with it
    }


def inspect(ref: str) -> dict[str, Any]:
    """docker network inspect's object, with its Containers: the endpoints of the
    running containers on it (a stopped one keeps its lease, not an endpoint)."""
    net = get(ref)
    live = {c.id: c for c in store.all_containers()}
    entries = net.leases().entries()  # read once for every container on it
    found: dict[str, dict[str, str]] = {}
    for addr4, (owner, _, _) in sorted(entries.items()):
        ctr = live.get(owner)
        if ctr is None or ipam.parse_address(addr4, "IP").version != 4:
            continue
        leases = _leases_of(net, owner, entries)
        with contextlib.suppress(RlError, OSError):
            if ctr.state().status != "running":
                continue
            addr, prefix, _ = leases[4]  # addr4's own
            v6 = leases.get(6)
            found[owner] = {"Name": store.name_or_id(ctr),
                            "EndpointID": _endpoint_id(net, owner),
                            "MacAddress": mac_address(addr),
                            "IPv4Address": f"{addr}/{prefix}",
                            "IPv6Address": f"{v6[0]}/{v6[1]}" if v6 else ""}
    return net.inspect(found)


def lease_names(cfg: store.ContainerConfig, aliases: list[str]) -> list[str]:
    """What a network's resolver answers with a container's lease: its name, hostname,
    short id and its aliases on that network."""
    return list(dict.fromkeys(n for n in (cfg.name, cfg.spec.hostname or cfg.id[:12],
                                          cfg.id[:12], *aliases) if n))


def remove(ref: str, disconnect_all: bool = False) -> Network:
    """Remove a user network no container is on. disconnect_all (rm -f): first
    disconnect the containers `network connect` (or a further --network) put on it; the
    ones created on it still keep it (it is their eth0, route and resolver)."""
    if ref in PREDEFINED:
        raise Conflict(f"{ref} is a pre-defined network and cannot be removed", 1)
    if disconnect_all:
        net = get(ref)
        for cid in containers_on(net):
            with contextlib.suppress(RlError):
                disconnect(net.id, cid, force=True)
    with _locked():
        net = get(ref)
        users = containers_on(net)
        if users:
            raise Conflict(f"error while removing network: network {net.name} id {net.id} has "
                           f"active endpoints ({', '.join(sorted(users.values()))})", 1)
        trash = root() / f"{_TMP}rm-{secrets.token_hex(8)}"
        os.rename(root() / net.id, trash)  # one step: the name is gone, then the files
        shutil.rmtree(trash, ignore_errors=True)
    return net


def prune() -> list[str]:
    """Remove every user network no container is on; their names."""
    removed = []
    for net in _stored():
        with contextlib.suppress(Conflict, NotFound):
            removed.append(remove(net.id).name)
    return removed


def attachment(cid: str, names: list[str], network: str, ip: str = "",
               ifname: str = "eth0") -> Attachment:
    """The NIC a container gets on *network* at start (or at `network connect`): its lease
    (kept across restarts, taken back once its record is gone) with the names the
    resolver answers. eth0 carries the default route; a connected network's NIC its
    subnet only."""
    net = get(network)
    sub = next(s for s in net.subnets if s.network().version == 4)
    subnet = sub.network()
    gateway = ipam.parse_address(sub.gateway, "gateway")
    live = {c.id for c in store.all_containers()}
    addr = net.leases().allocate(subnet, gateway, cid, lambda owner: owner in live,
                                 want=ip or None, names=names)
    att = Attachment(net.name, bridge_name(net.id), str(subnet), sub.gateway, str(addr),
                     net.internal, str(net.leases().dir), mac_address(str(addr)),
                     ifname, ifname == "eth0")
    sub6 = next((s for s in net.subnets if s.network().version == 6), None)
    if sub6 is not None:
        gateway6 = ipam.parse_address(sub6.gateway, "gateway")
        addr6 = net.leases().allocate(sub6.network(), gateway6, cid,
                                      lambda owner: owner in live, names=names)
        att.subnet6, att.gateway6, att.address6 = sub6.subnet, sub6.gateway, str(addr6)
    return att


# -- network connect / disconnect ---------------------------------------------------------

def _on_user_network(cfg: store.ContainerConfig, shown: str) -> NetOptions:
    opts = NetOptions.from_dict(cfg.net) if cfg.net else None
    if opts is None or opts.mode != "network":
        # Its network namespace is owned by its own user namespace, not the network
        # host's: no process of the host may move a NIC into it (docs/decisions.md).
        raise InvalidArgument(f"container {shown} is not on a user-defined network: rl "
                              "connects only containers created with --network NAME", 1)
    return opts


def connect(ref: str, ctr_ref: str, aliases: list[str] | None = None, ip: str = "") -> None:
    """`rl network connect`: a further NIC for a container on a user network, at once if
    it runs (else at its next start); its lease is taken now, so the network cannot go
    while the container's record names it."""
    from netstack import nethost
    from netstack.options import Link

    net = get(ref)
    if net.predefined:
        raise InvalidArgument(f"container cannot be connected to network {net.name}: rl's "
                              f"{net.name} mode is not a network to join", 1)
    for alias in aliases or []:
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", alias):
            raise InvalidArgument(f"invalid alias {alias!r}")
    if ip:
        ipam.parse_address(ip, "IP")
    ctr = store.lookup(ctr_ref)
    with store.registry_lock():
        cfg = store.Container(ctr.id).config
        opts = _on_user_network(cfg, ctr_ref)
        if net.name in (opts.network, *(c.network for c in opts.connected)):
            raise Conflict(f"endpoint with name {cfg.name} already exists in network "
                           f"{net.name}", 1)
        used = {"eth0", *(c.ifname for c in opts.connected)}
        ifname = next(f"eth{i}" for i in range(1, 1 + len(used) + 1) if f"eth{i}" not in used)
        link = Link(net.name, ifname, list(aliases or []), ip)
        att = attachment(cfg.id, lease_names(cfg, link.aliases), net.name, ip, ifname)
        try:
            st = ctr.state()
            if st.status == "running" and st.pid:
                nethost.plug(st.pid, att)
                nethost.record_nics(ctr.run_dir, {ifname: att.veth})
            opts.connected.append(link)
            cfg.net = opts.to_dict()
            store.write_json_atomic(ctr.dir / "config.json", cfg.to_dict())
        except BaseException:
            net.leases().release(cfg.id)
            raise


def disconnect(ref: str, ctr_ref: str, force: bool = False) -> None:
    """`rl network disconnect`: a connected network's NIC goes (at once if the container
    runs) with its lease. The network a container was created on stays: it holds the
    default route and the container's resolver (docs/decisions.md)."""
    from netstack import nethost

    net = get(ref)
    ctr = store.lookup(ctr_ref)
    with store.registry_lock():
        cfg = store.Container(ctr.id).config
        opts = _on_user_network(cfg, ctr_ref)
        if net.name == opts.network:
            raise InvalidArgument(f"container {ctr_ref} was created on network {net.name}: rl "
                                  "disconnects only the networks `network connect` added", 1)
        link = next((c for c in opts.connected if c.network == net.name), None)
        if link is None:
            raise Conflict(f"container {cfg.id} is not connected to network {net.name}", 1)
        st = ctr.state()
        veth = nethost.recorded_nics(ctr.run_dir).get(link.ifname)
        if st.status == "running" and veth:
            try:
                nethost.unplug(veth, net.name)
            except RlError:
                if not force:
                    raise
        opts.connected.remove(link)
        cfg.net = opts.to_dict()
        store.write_json_atomic(ctr.dir / "config.json", cfg.to_dict())
        net.leases().release(cfg.id)
