"""The content of the container's /etc/resolv.conf and /etc/hosts."""

from __future__ import annotations

from pathlib import Path

from .options import PASTA_DNS, SLIRP_ADDR, SLIRP_DNS, SLIRP_GATEWAY, NetOptions


def _host_resolv() -> str:
    try:
        return Path("/etc/resolv.conf").read_text()
    except OSError:
        return ""


def _joined_file(joined: Path | None, name: str) -> str | None:
    """--network container:NAME shares that container's /etc/hosts and resolv.conf
    (joined: its runtime directory, found by the engine; None: not found)."""
    if joined is None:
        return None
    try:
        return (joined / name).read_text()
    except OSError:
        return None


def resolv_conf(opts: NetOptions, joined: Path | None = None) -> str:
    """--dns wins; else the stack's resolver (slirp4netns) or the host's own servers.

    The host's search and options lines are kept, as docker does. With pasta,
    the container asks PASTA_DNS, which pasta forwards to the host's resolver
    (as podman does): a loopback resolver (systemd-resolved's 127.0.0.53)
    serves the container too.
    """
    if opts.mode == "container" and not opts.dns:
        text = _joined_file(joined, "resolv.conf")
        if text is not None:
            return text
    host = _host_resolv()
    kept = [ln for ln in host.splitlines() if ln.split()[:1] in (["search"], ["options"])]
    if opts.mode == "none" and not opts.dns:
        return ""
    if opts.dns:
        servers = opts.dns
    elif opts.mode == "slirp4netns":
        servers = [SLIRP_DNS]
    elif opts.mode == "pasta":
        servers = [PASTA_DNS]
    elif opts.mode == "network" and opts.gateway:
        servers = [opts.gateway]  # the network host's resolver (dns.py)
    else:  # host, container: whatever the host uses
        return host
    return "".join(f"nameserver {s}\n" for s in servers) + "".join(ln + "\n" for ln in kept)


def hosts(opts: NetOptions, hostname: str, name: str, joined: Path | None = None) -> str:
    if opts.mode == "container":
        text = _joined_file(joined, "hosts")
        if text is not None:
            return text + "".join(f"{ip}\t{host}\n" for host, ip in opts.add_hosts)
    own = {"slirp4netns": SLIRP_ADDR, "network": opts.address}.get(opts.mode) or "127.0.1.1"
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{own}\t{hostname} {name}"]
    if opts.mode == "slirp4netns":
        # podman's name for the host, reachable when allow_host_loopback=true.
        lines.append(f"{SLIRP_GATEWAY}\thost.containers.internal host.docker.internal")
    lines += [f"{ip}\t{host}" for host, ip in opts.add_hosts]
    return "\n".join(lines) + "\n"
