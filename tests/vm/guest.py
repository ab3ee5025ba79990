"""Boot Debian's kernel in qemu (TCG) and run an in-guest pytest subset there.

The host's cgroups are a v1/v2 hybrid with no v2 controllers, so quotas can
only be tested on a real cgroup v2 kernel: this module builds an initramfs
(busybox-static + the virtio/9p/overlay modules of the unpacked kernel
package), boots it with the host's root shared read-only over 9p under a
tmpfs overlay, delegates user.slice/user-UID.slice/user@UID.service to the
test user exactly as systemd's Delegate=yes does (the directory and its
cgroup.procs, cgroup.subtree_control, cgroup.threads chowned; controllers
enabled down the path), and runs pytest as that user with rl from this
checkout's virtualenv. Results come back as JUnit XML on a second, writable
9p share; the console log is kept for diagnostics.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

KERNEL_CACHE = Path(os.environ.get("RL_TEST_KERNEL_DIR", "/var/cache/rl-test-kernel"))
QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")
# Load order matters: a module's dependencies first.
MODULES = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
           "virtio_pci", "virtio_blk", "netfs", "fscache", "9pnet", "9pnet_virtio", "9p",
           "overlay", "fuse", "tun"]  # tun: slirp4netns, rl's default network
DISK_MIB = 16  # the small virtio disk the io.max tests read from (/dev/vda in the guest)
CONTROLLERS = "+cpuset +cpu +io +memory +pids"


@dataclass
class Kernel:
    vmlinuz: Path
    modules: dict[str, Path]


@dataclass
class GuestResult:
    """What the in-guest pytest reported: outcome per test name, plus the logs."""

    outcomes: dict[str, str] = field(default_factory=dict)  # passed | failed | skipped
    messages: dict[str, str] = field(default_factory=dict)
    console: str = ""
    pytest_log: str = ""
    exit_status: int | None = None
    elapsed: float = 0.0


def find_kernel(cache: Path = KERNEL_CACHE) -> tuple[Kernel | None, str]:
    """The unpacked kernel package, or None and why not."""
    images = sorted(glob.glob(str(cache / "boot" / "vmlinuz-*")))
    if not images:
        return None, (f"no kernel in {cache}/boot (scripts/setup-host unpacks "
                      "linux-image-*-amd64 there)")
    vmlinuz = Path(images[-1])
    release = vmlinuz.name.removeprefix("vmlinuz-")
    moddir = cache / "lib" / "modules" / release / "kernel"
    found: dict[str, Path] = {}
    for path in moddir.rglob("*.ko"):
        if path.stem in MODULES:
            found[path.stem] = path
    missing = [m for m in MODULES if m not in found]
    if missing:
        return None, f"kernel modules missing under {moddir}: {', '.join(missing)}"
    if not os.access(vmlinuz, os.R_OK):
        return None, f"{vmlinuz} is not readable"
    return Kernel(vmlinuz, found), ""


def missing_requirements() -> str:
    """'' when a guest can boot here, else the reason."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (apt-get install --no-install-recommends qemu-system-x86)"
    if shutil.which("cpio") is None:
        return "cpio is not installed"
    if not BUSYBOX.exists():
        return f"{BUSYBOX} is missing (busybox-static)"
    _, why = find_kernel()
    return why


INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in {modules}; do insmod /mods/$m.ko || echo "RL-GUEST: insmod $m failed"; done
mkdir -p /host /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 hostroot /host \\
    || echo "RL-GUEST: 9p mount failed"
mount -t tmpfs -o mode=755 tmpfs /rw; mkdir -p /rw/u /rw/w
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/u,workdir=/rw/w /newroot \\
    || echo "RL-GUEST: overlay mount failed"
mkdir -p /newroot/rl-results
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 results /newroot/rl-results \\
    || echo "RL-GUEST: results mount failed"
cp /stage2.sh /newroot/rl-stage2.sh
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /bin/sh /rl-stage2.sh
"""

STAGE2 = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /dev/pts /dev/shm /dev/net
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
[ -e /dev/net/tun ] || mknod /dev/net/tun c 10 200
chmod 666 /dev/fuse /dev/net/tun 2>/dev/null
chmod 666 /dev/vda 2>/dev/null
hostname rl-guest
ip link set lo up 2>/dev/null

# Delegation as systemd does it for user@UID.service with Delegate=yes.
C=/sys/fs/cgroup
D=$C/user.slice/user-{uid}.slice/user@{uid}.service
mkdir -p $D
echo "{controllers}" > $C/cgroup.subtree_control
echo "{controllers}" > $C/user.slice/cgroup.subtree_control
echo "{controllers}" > $C/user.slice/user-{uid}.slice/cgroup.subtree_control
chown {uid}:{gid} $D $D/cgroup.procs $D/cgroup.subtree_control $D/cgroup.threads
echo "RL-GUEST: delegated $(cat $D/cgroup.controllers)"
install -d -m 0700 -o {uid} -g {gid} /run/user/{uid}

# The user's session starts in the delegated cgroup; this init stays in the root.
cd {checkout}
sh -c 'echo $$ > "$0"/cgroup.procs && exec "$@"' $D \\
    setpriv --reuid={uid} --regid={gid} --init-groups -- env -i \\
    HOME={home} USER={user} LOGNAME={user} LANG=C.UTF-8 \\
    PATH={venv}/bin:/usr/local/bin:/usr/bin:/bin \\
    XDG_RUNTIME_DIR=/run/user/{uid} RL_GUEST=1 RL_GUEST_DISK=/dev/vda CI={ci} \\
    {command} > /rl-results/pytest.log 2>&1
echo "RL-GUEST-EXIT: $?"
sync
/bin/busybox poweroff -f
"""


def _build_initramfs(kernel: Kernel, stage2: str, dest: Path) -> None:
    root = dest.parent / "initramfs"
    for d in ("bin", "dev", "proc", "sys", "mods", "newroot"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    for name, path in kernel.modules.items():
        shutil.copyfile(path, root / "mods" / f"{name}.ko")
    init = root / "init"
    init.write_text(INIT.format(modules=" ".join(MODULES)))
    init.chmod(0o755)
    (root / "stage2.sh").write_text(stage2)
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, text=True,
                           check=True).stdout
    with open(dest, "wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files.encode(),
                       stdout=out, check=True)


def run_pytest(checkout: Path, pytest_args: list[str], timeout: float = 280) -> GuestResult:
    """Boot the guest once, run pytest with pytest_args in it, parse what it reported."""
    venv = checkout / ".venv"
    command = (f"{venv}/bin/python -m pytest -p no:cacheprovider -q -rA "
               f"{' '.join(pytest_args)} --junitxml=/rl-results/junit.xml")
    return run(checkout, command, timeout)


def run(checkout: Path, command: str, timeout: float = 280) -> GuestResult:
    """Boot the guest, run a shell command as the test user in checkout, power off."""
    kernel, why = find_kernel()
    if kernel is None:
        raise RuntimeError(why)
    user = pwd.getpwuid(os.getuid())
    work = Path(tempfile.mkdtemp(prefix="rl-guest-", dir="/tmp"))
    results = work / "results"
    results.mkdir()
    try:
        venv = checkout / ".venv"
        stage2 = STAGE2.format(
            uid=user.pw_uid, gid=user.pw_gid, user=user.pw_name, home=user.pw_dir,
            checkout=checkout, venv=venv, controllers=CONTROLLERS,
            ci=os.environ.get("CI", ""), command=command)
        initrd = work / "initrd.cpio"
        _build_initramfs(kernel, stage2, initrd)
        disk = work / "disk.img"
        with open(disk, "wb") as f:
            # Real bytes, not a hole: reads must reach the (throttled) device.
            f.write(os.urandom(DISK_MIB << 20))
        cmd = [
            QEMU, "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2",
            "-display", "none", "-no-reboot", "-nodefaults", "-monitor", "none",
            "-serial", "stdio",
            "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
            "-append", "console=ttyS0 quiet loglevel=3 panic=-1 rw",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                       "multidevs=remap",
            "-virtfs", f"local,path={results},mount_tag=results,security_model=none",
            "-drive", f"file={disk},if=virtio,format=raw",
        ]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        finally:
            # Interrupted (pytest-timeout, Ctrl-C): the guest must not outlive the test.
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        res = GuestResult(console=out.decode(errors="replace"),
                          elapsed=time.monotonic() - start)
        for line in res.console.splitlines():
            if line.startswith("RL-GUEST-EXIT: "):
                res.exit_status = int(line.split()[1])
        log = results / "pytest.log"
        res.pytest_log = log.read_text(errors="replace") if log.exists() else ""
        junit = results / "junit.xml"
        if junit.exists():
            _parse_junit(junit, res)
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _parse_junit(path: Path, res: GuestResult) -> None:
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
                message = (child.get("message") or "") + "\n" + (child.text or "")
            elif child.tag == "skipped":
                outcome = "skipped"
                message = child.get("message") or ""
        if res.outcomes.get(name) != "failed":  # an error in teardown after a pass
            res.outcomes[name] = outcome
            res.messages[name] = message
