"""The user's session keyring never reaches a container: rl is started from a session
whose keyring holds a secret, and a --privileged container (no seccomp filter to stop
keyctl) and an exec'd process look for it in the session keyring they were given."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import support

KEYCTL = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine, 250)
ADD_KEY = {"x86_64": 248, "aarch64": 217}.get(os.uname().machine, 248)

# Run inside the container with the host's python (its /usr bound read-only): the serials
# in the session keyring (KEYCTL_READ of @s, -3), and a search for the secret by name.
PROBE = r"""
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
buf = ctypes.create_string_buffer(4096)
n = libc.syscall(KEYCTL, 11, -3, buf, 4096)
print("keys", n // 4 if n >= 0 else "E%d" % ctypes.get_errno())
found = libc.syscall(KEYCTL, 10, -3, b"user", b"rl-test-secret", 0)
print("search", "found" if found >= 0 else "E%d" % ctypes.get_errno())
""".replace("KEYCTL", str(KEYCTL))

# Run on the host: a new session keyring holding the secret, then rl from inside it.
HOST = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
if libc.syscall(KEYCTL, 1, None) < 0:
    sys.exit("join: %d" % ctypes.get_errno())
secret = b"TOPSECRET-token"
if libc.syscall(ADD_KEY, b"user", b"rl-test-secret", secret, len(secret), -3) < 0:
    sys.exit("add_key: %d" % ctypes.get_errno())
os.execvp(sys.argv[1], sys.argv[1:])
""".replace("ADD_KEY", str(ADD_KEY)).replace("KEYCTL", str(KEYCTL))


def test_no_container_process_inherits_the_users_session_keyring(rl_path: Path,
                                                                  rootfs: Path) -> None:
    support.require_userns()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    support.require(libc.syscall(KEYCTL, 0, -3, 0) >= 0 or ctypes.get_errno() != 38,
                    "the kernel has no keys (keyctl: ENOSYS)")
    base = Path(tempfile.mkdtemp(prefix="rl-key-", dir="/tmp"))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(base / "run"),
           "XDG_DATA_HOME": str(base / "data"), "XDG_CONFIG_HOME": str(base / "config")}
    (base / "run").mkdir(mode=0o700)
    vols = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro"]
    root = base / "root"
    shutil.copytree(rootfs, root, symlinks=True)
    for d in ("usr", "lib", "lib64"):
        p = root / d
        if p.is_symlink() or p.is_file():
            p.unlink()
        p.mkdir(exist_ok=True)
    py = "/usr/bin/python3"

    def keyed(*argv: str) -> subprocess.CompletedProcess[str]:
        # The fork server is started by the first command, inside the keyed session.
        return subprocess.run([sys.executable, "-c", HOST, str(rl_path), *argv], env=env,
                              capture_output=True, text=True, timeout=120)

    try:
        r = keyed("run", "--rm", "--privileged", *vols, "--rootfs", str(root), py, "-c", PROBE)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n")[:2] == ["keys 0", "search E126"], r.stdout  # ENOKEY
        # an exec'd process (of a container without a filter) gets a keyring of its own too
        r = keyed("run", "-d", "--privileged", "--name", "keyed", *vols, "--rootfs",
                  str(root), "sleep", "60")
        assert r.returncode == 0, r.stderr
        r = keyed("exec", "keyed", py, "-c", PROBE)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n")[:2] == ["keys 0", "search E126"], r.stdout
        # and without --privileged docker's seccomp profile refuses keyctl altogether
        r = keyed("run", "--rm", *vols, "--rootfs", str(root), py, "-c", PROBE)
        assert r.returncode == 0 and r.stdout.split("\n")[:2] == ["keys E1", "search E1"], r
    finally:
        subprocess.run([str(rl_path), "rm", "-f", "keyed"], env=env, capture_output=True)
        support.kill_recorded_pids(base / "run")
        support.remove_tree(base)
