"""The content of the container's /etc/resolv.conf and /etc/hosts."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from .options import SLIRP_ADDR, SLIRP_DNS, SLIRP_GATEWAY, NetOptions


def _host_resolv() -> str:
    try:
        return Path("/etc/resolv.conf").read_text()
    except OSError:
        return ""


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _joined_file(opts: NetOptions, name: str) -> str | None:
    """--network container:NAME shares that container's /etc/hosts and resolv.conf."""
    from rootless import store

    try:
        return (store.lookup(opts.container).run_dir / name).read_text()
    except Exception:
        return None


def resolv_conf(opts: NetOptions) -> str:
    """--dns wins; else the stack's resolver (slirp4netns) or the host's own servers.

    The host's search and options lines are kept, as docker does. pasta copies
    the host's servers, except loopback ones, which cannot be reached from the
    container: those become pasta's forwarder at the gateway.
    """
    if opts.mode == "container" and not opts.dns:
        joined = _joined_file(opts, "resolv.conf")
        if joined is not None:
            return joined
    host = _host_resolv()
    kept = [ln for ln in host.splitlines() if ln.split()[:1] in (["search"], ["options"])]
    host_servers = [ln.split()[1] for ln in host.splitlines()
                    if ln.split()[:1] == ["nameserver"] and len(ln.split()) > 1]
    if opts.mode == "none" and not opts.dns:
        return ""
    if opts.dns:
        servers = opts.dns
    elif opts.mode == "slirp4netns":
        servers = [SLIRP_DNS]
    elif opts.mode == "pasta":
        servers = [s for s in host_servers if not _is_loopback(s)]
    else:  # host, container: whatever the host uses
        return host
    return "".join(f"nameserver {s}\n" for s in servers) + "".join(ln + "\n" for ln in kept)


def hosts(opts: NetOptions, hostname: str, name: str) -> str:
    if opts.mode == "container":
        joined = _joined_file(opts, "hosts")
        if joined is not None:
            return joined + "".join(f"{ip}\t{host}\n" for host, ip in opts.add_hosts)
    own = SLIRP_ADDR if opts.mode == "slirp4netns" else "127.0.1.1"
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{own}\t{hostname} {name}"]
    if opts.mode == "slirp4netns":
        # podman's name for the host, reachable when allow_host_loopback=true.
        lines.append(f"{SLIRP_GATEWAY}\thost.containers.internal host.docker.internal")
    lines += [f"{ip}\t{host}" for host, ip in opts.add_hosts]
    return "\n".join(lines) + "\n"
