"""rl build on a real Debian userland: apt-get inside RUN, python3 in the result.

The base is Debian bookworm's `debootstrap --variant=minbase`, made once by
scripts/setup-host and cached as a tar, imported here with `rl import`. One
build runs `apt-get update && apt-get install -y --no-install-recommends
python3`, which needs what a toy builder lacks: the network inside RUN (only
the Debian mirror the host's apt names is reachable from the build machines,
so the image is pointed at that one), setuid/setgid identity changes (apt
drops to its `_apt` user for every download) and many ids kept through the
subordinate-id map (files owned by `_apt`, setuid binaries owned by root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import support
from support import RlRunner

DEBIAN_TAR = Path("/var/cache/rl-test-debian/bookworm-minbase.tar.gz")


def host_mirror() -> str:
    """The bookworm mirror the host's apt sources name (deb.debian.org if none)."""
    out = ""
    if shutil.which("apt-get"):
        out = subprocess.run(
            ["apt-get", "indextargets", "--format", "$(RELEASE) $(REPO_URI)",
             "Created-By: Packages"], capture_output=True, text=True, check=False,
            timeout=60).stdout
    for line in out.splitlines():
        release, _, uri = line.partition(" ")
        if release == "bookworm" and uri:
            return uri
    return "http://deb.debian.org/debian/"


def test_apt_get_install_python3_then_run_it(rl: RlRunner, tmp_path: Path) -> None:
    support.require_userns()
    support.require_newidmap()
    support.require_slirp4netns()
    support.require(DEBIAN_TAR.is_file(),
                    f"{DEBIAN_TAR} missing (scripts/setup-host makes it with debootstrap)")
    base = f"localhost/rl-debian-minbase-{os.getpid()}:bookworm"
    image = f"localhost/rl-debian-python-{os.getpid()}:1"
    rl("import", "-c", 'CMD ["bash"]', DEBIAN_TAR, base, check=True, timeout=600)

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "sources.list").write_text(f"deb {host_mirror()} bookworm main\n")
    (ctx / "Dockerfile").write_text(f"""\
FROM {base}
COPY sources.list /etc/apt/sources.list
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3
CMD ["python3"]
""")
    r = rl("build", "-t", image, ctx, timeout=1800)
    assert r.returncode == 0, r.stderr[-5000:]
    log = r.stderr
    assert "Setting up python3 " in log, log[-5000:]
    # apt dropped to _apt for its downloads (setgroups, setegid, seteuid in RUN): it
    # fails naming the call when one is refused, and warns "unsandboxed as root" when
    # _apt could not reach its files.
    for word in ("unsandboxed", "setgroups", "setegid", "seteuid"):
        assert word not in log, log[-5000:]

    script = (
        "import os, pwd, stat, sys\n"
        "print(sys.version_info[:2] >= (3, 11))\n"
        "apt = pwd.getpwnam('_apt')\n"
        "st = os.stat('/var/lib/apt/lists/partial')\n"
        "print(st.st_uid == apt.pw_uid != 0, oct(stat.S_IMODE(st.st_mode)))\n"
        "su = os.stat('/usr/bin/su')\n"
        "print(su.st_uid, oct(stat.S_IMODE(su.st_mode)))\n"
        "print(os.getuid(), open('/etc/debian_version').read().split('.')[0])\n"
    )
    r = rl("run", "--rm", "--network=none", image, "python3", "-c", script, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:4] == ["True", "True 0o700", "0 0o4755", "0 12"], r.stdout

    # The image's own CMD is python3, reading a program on stdin.
    r = rl("run", "--rm", "-i", "--network=none", image, input="print(6 * 7)\n", timeout=120)
    assert (r.returncode, r.stdout) == (0, "42\n"), r.stderr
    rl("rmi", image, base, check=True)
