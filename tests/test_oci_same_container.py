"""One config.json, two faces, one container: rl's engine path (the supervisor's
call, container.launch on a Bundle) and `rl-oci run` make the same container, as
a probe inside sees it: namespaces, mounts, id maps, capabilities, seccomp and
no_new_privs, rlimits, environment, cwd, hostname, masked and read-only paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import test_oci
from test_oci import RlOci

rl_oci_path, root, oci, bundle = (test_oci.rl_oci_path, test_oci.root, test_oci.oci,
                                  test_oci.bundle)

NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")

# What the container looks like from inside, one "== section" at a time.
PROBE = r"""
echo "== ns"; for n in @NS@; do echo "$n $(readlink /proc/self/ns/$n)"; done
echo "== mounts"
# mount point, file system type, per-mount and super-block options (no ids, no
# device numbers: those differ between any two containers).
awk '{ for (i = 7; $i != "-"; i++); print $5, $(i+1), $6, $(i+3) }' /proc/self/mountinfo
echo "== maps"; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups
echo "== status"; grep -E '^(Cap|Seccomp|NoNewPrivs|Uid|Gid|Groups)' /proc/self/status
echo "== limits"; cat /proc/self/limits
echo "== env"; env | grep -v '^_=' | sort
echo "== seccomp"; mkfifo /tmp/fifo 2>&1; echo "mkfifo $?"
echo "== where"; pwd; hostname; umask; id
echo "== masked"
for p in /proc/kcore /proc/keys /sys/firmware /proc/timer_list; do
  echo "$p $(stat -c '%F %s' $p 2>&1) $(ls $p 2>&1 | head -c 40)"
done
echo "== readonly"
for p in /proc/sys/kernel/hostname /proc/sysrq-trigger /.probe; do
  if (true >> $p) 2>/dev/null; then echo "$p writable"; else echo "$p read-only"; fi
done
""".replace("@NS@", " ".join(NAMESPACES))

# The engine's call (supervisor.start: container.launch on the Bundle in memory,
# stdin /dev/null, the output through pipes), printing what PID 1 wrote.
ENGINE = r"""
import os, sys
from rootless import syscalls as sc
from rootless.runtime import bundle, container, idmap
sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)  # PID 1 is C1's child: adopted, as by S
b = bundle.load(sys.argv[1])
linux = b.spec.linux
plan = idmap.plan_for("single", linux.uid_mappings, linux.gid_mappings)
launched = container.launch(b, plan, sys.argv[2], devnull_stdin=True)
out = b""
while chunk := os.read(launched.stdout, 65536):
    out += chunk
err = b""
while chunk := os.read(launched.stderr, 65536):
    err += chunk
_, status = os.waitpid(launched.pid, 0)
sys.stderr.write(err.decode())
sys.stdout.write(out.decode())
sys.exit(container.exit_code(status))
"""


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("== "):
            current = line[3:]
            out[current] = []
        else:
            out[current].append(line)
    return out


def _own_namespaces(lines: list[str]) -> list[str]:
    """The namespace types the container does not share with this test process."""
    own = []
    for line in lines:
        kind, link = line.split(" ", 1)
        if link != os.readlink(f"/proc/self/ns/{kind}"):
            own.append(kind)
    return own


def test_the_engine_path_and_rl_oci_make_the_same_container(
        oci: RlOci, bundle: Callable[..., Path], tmp_path: Path) -> None:
    b = bundle("sh", "-c", PROBE, cwd="/tmp", env=["PATH=/bin:/usr/bin", "PROBE=1"])
    cfg = json.loads((b / "config.json").read_text())
    # The default devices as the engine writes them (rl-oci would add them
    # itself, runc's way; the engine's path takes the mounts as given).
    cfg["mounts"] += [{"destination": f"/dev/{d}", "type": "bind", "source": f"/dev/{d}",
                       "options": ["bind", "nosuid", "noexec"]}
                      for d in ("null", "zero", "full", "random", "urandom", "tty")]
    cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                          "options": ["nosuid", "nodev", "size=1m"]})
    cfg["hostname"] = "same-box"
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256},
                                 {"type": "RLIMIT_NPROC", "hard": 300, "soft": 200}]
    cfg["process"]["user"]["umask"] = 0o027
    cfg["linux"]["namespaces"].append({"type": "network"})
    cfg["linux"]["namespaces"].append({"type": "cgroup"})
    cfg["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mknod", "mknodat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 38}]}
    (b / "config.json").write_text(json.dumps(cfg))

    state = tmp_path / "engine-state"
    state.mkdir()
    engine = subprocess.run([sys.executable, "-c", ENGINE, str(b), str(state)],
                            capture_output=True, text=True, timeout=60)
    assert engine.returncode == 0, engine.stderr
    face = oci("run", "-b", b, "same1")
    assert face.returncode == 0, face.stderr
    assert engine.stderr == face.stderr == ""

    mine, theirs = _sections(engine.stdout), _sections(face.stdout)
    assert set(mine) == {"ns", "mounts", "maps", "status", "limits", "env", "seccomp", "where",
                         "masked", "readonly"}
    assert _own_namespaces(mine.pop("ns")) == _own_namespaces(theirs.pop("ns")) == [
        "cgroup", "ipc", "mnt", "net", "pid", "user", "uts"]
    assert mine == theirs
    # And it is the container the config asks for (so "the same" is not "both wrong").
    status = dict(line.split(":", 1) for line in mine["status"])
    assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
    assert int(status["CapBnd"], 16) == int(status["CapEff"], 16) != 0
    assert any(line.startswith("Max open files") and line.split()[3:5] == ["256", "512"]
               for line in mine["limits"])
    assert mine["seccomp"][-1] == "mkfifo 1" and "not implemented" in mine["seccomp"][0]
    assert mine["where"][:3] == ["/tmp", "same-box", "0027"]
    assert "PROBE=1" in mine["env"]
    assert mine["maps"][0].split() == ["0", str(os.getuid()), "1"]
    points = [line.split()[0] for line in mine["mounts"]]
    assert {"/", "/proc", "/dev", "/dev/null", "/tmp", "/sys", "/proc/keys", "/sys/firmware",
            "/proc/sys"} <= set(points)
    masked = {ln.split()[0]: ln.split()[1:] for ln in mine["masked"]}
    assert masked["/proc/keys"][:2] == ["character", "special"]  # /dev/null over it
    assert masked["/sys/firmware"][:2] == ["directory", "40"]  # an empty tmpfs
    assert mine["readonly"] == ["/proc/sys/kernel/hostname read-only",
                                "/proc/sysrq-trigger read-only", "/.probe read-only"]
