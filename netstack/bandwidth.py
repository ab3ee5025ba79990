"""--network-bandwidth: tc qdiscs on the container's interface (slirp4netns's tap0, pasta's
copy of the host's), set over netlink with pyroute2.

Egress (container -> world): a token bucket filter (tbf) as tap0's root qdisc.
Ingress (world -> container): tap0's ingress qdisc redirects every packet
(u32 match-all, mirred action) to an IFB device, `ifb-tap0`, whose root is a
second tbf. The simpler ingress policer (act_police) is not used: kernels
such as this project's build it out. Both are set from a
child process that joins the container's user and network namespaces (the
container's root owns that netns, so it may change its qdiscs); the supervisor
forks it while it is still single-threaded, before the command starts.
"""

from __future__ import annotations

import os
import signal
import traceback

from rootless import syscalls as sc
from rootless.errors import RlError

IFNAME = "tap0"
IFB = "ifb-tap0"


def _burst(rate_bit: int) -> int:
    # Enough for the timer granularity at this rate (rate/HZ at HZ=250),
    # and at least a few 64 KiB segments for the tap's large MTU.
    return max(rate_bit // 8 // 250, 4 * 65536)


def _apply_here(rate_bit: int) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        # slirp4netns's tap0; pasta names its interface after the host's (eth0…)
        links = [(ln.get_attr("IFLA_IFNAME"), ln["index"]) for ln in ipr.get_links()]
        idx = next((i for n, i in links if n == IFNAME), None)
        if idx is None:
            idx = next(i for n, i in links if n != "lo" and not n.startswith("ifb"))
        rate = rate_bit // 8  # pyroute2 takes bytes per second
        burst = _burst(rate_bit)
        ipr.tc("add", "tbf", idx, 0x10000, rate=rate, burst=burst, latency=50000)
        ipr.link("add", ifname=IFB, kind="ifb")
        ifb = ipr.link_lookup(ifname=IFB)[0]
        mtu = ipr.get_links(idx)[0].get_attr("IFLA_MTU")
        ipr.link("set", index=ifb, state="up", mtu=mtu)
        ipr.tc("add", "tbf", ifb, 0x10000, rate=rate, burst=burst, latency=50000)
        ipr.tc("add", "ingress", idx, 0xFFFF0000)
        ipr.tc("add-filter", "u32", idx, parent=0xFFFF0000, prio=1, protocol=0x0003,
               target=0x10000, keys=["0x0/0x0+0"],
               action={"kind": "mirred", "direction": "egress", "action": "redirect",
                       "ifindex": ifb})


def apply(pid: int, rate_bit: int) -> None:
    r, w = os.pipe()
    user_fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    net_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(r)
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            sc.setns(user_fd, sc.CLONE_NEWUSER)
            sc.setns(net_fd, sc.CLONE_NEWNET)
            _apply_here(rate_bit)
            code = 0
        except BaseException:
            os.write(w, traceback.format_exc().strip().splitlines()[-1].encode())
        os._exit(code)
    os.close(w)
    os.close(user_fd)
    os.close(net_fd)
    with os.fdopen(r, "rb") as f:
        why = f.read().decode(errors="replace")
    _, status = os.waitpid(child, 0)
    if status != 0:
        raise RlError("setting --network-bandwidth on the container's interface: "
                      f"{why or 'failed'}")
