"""seccomp: Docker's default restrictions, enforced by the kernel in every container process."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest

import support
from rootless import seccomp
from support import RlRunner


def sh(rl: RlRunner, rootfs: Path, script: str, *flags: str) -> str:
    r = rl("run", "--rm", *flags, "--rootfs", rootfs, "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_the_kernel_enforces_the_default_profile(rl: RlRunner, rootfs: Path) -> None:
    support.require_userns()
    out = sh(rl, rootfs, "grep ^Seccomp: /proc/self/status; unshare -U true 2>&1; echo rc=$?")
    assert "Seccomp:\t2" in out
    assert "Operation not permitted" in out and "rc=1" in out
    # ordinary process creation (clone without namespace flags) is untouched
    assert sh(rl, rootfs, "sleep 0 & wait; echo forked").strip() == "forked"


def test_cap_sys_admin_and_unconfined_lift_it(rl: RlRunner, rootfs: Path) -> None:
    support.require_userns()
    out = sh(rl, rootfs, "unshare -U true && mount -t tmpfs none /tmp && echo both-ok",
             "--cap-add", "SYS_ADMIN")
    assert out.strip() == "both-ok"
    out = sh(rl, rootfs, "grep ^Seccomp: /proc/self/status; unshare -U true && echo ok",
             "--security-opt", "seccomp=unconfined")
    assert out.split() == ["Seccomp:", "0", "ok"]
    r = rl("run", "--rm", "--security-opt", "seccomp=/tmp/profile.json", "--rootfs", rootfs,
           "true")
    assert r.returncode == 125 and "only seccomp=unconfined" in r.stderr


def test_exec_gets_the_filter_too(rl: RlRunner, rootfs: Path) -> None:
    support.require_userns()
    rl("run", "-d", "--name", "filtered", "--rootfs", rootfs, "sleep", "60", check=True)
    try:
        out = rl("exec", "filtered", "grep", "^Seccomp:", "/proc/self/status",
                 check=True).stdout
        assert out.split() == ["Seccomp:", "2"]
    finally:
        rl("rm", "-f", "filtered")


# -- the compiled program, for the ABIs this machine cannot run -------------------------

def run_bpf(code: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """A classic-BPF interpreter for the instructions rl emits, over seccomp_data."""
    argv = list(args) + [0] * (6 - len(args))
    data = struct.pack("<iIQ6Q", nr, arch, 0, *argv)
    insns = [struct.unpack("HBBI", code[i:i + 8]) for i in range(0, len(code), 8)]
    acc, pc = 0, 0
    while True:
        op, jt, jf, k = insns[pc]
        pc += 1
        if op == 0x20:  # ld w abs
            acc = struct.unpack_from("<I", data, k)[0]
        elif op == 0x54:  # and k
            acc &= k
        elif op == 0x15:  # jeq
            pc += jt if acc == k else jf
        elif op == 0x35:  # jge
            pc += jt if acc >= k else jf
        elif op == 0x05:  # ja
            pc += k
        elif op == 0x06:  # ret
            return k
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")


ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
X86_64, I386, AARCH64 = 0xC000003E, 0x40000003, 0xC00000B7


@pytest.mark.parametrize(("arch", "nr", "args", "caps", "expected"), [
    (X86_64, 0, (), [], ALLOW),                       # read
    (X86_64, 165, (), [], EPERM),                     # mount
    (X86_64, 165, (), ["CAP_SYS_ADMIN"], ALLOW),
    (X86_64, 250, (), ["CAP_SYS_ADMIN"], EPERM),      # keyctl: always
    (X86_64, 56, (0x11,), [], ALLOW),                 # clone(SIGCHLD)
    (X86_64, 56, (0x10000011,), [], EPERM),           # clone(CLONE_NEWUSER|SIGCHLD)
    (X86_64, 56, (0x10000011 | 1 << 40,), [], EPERM),
    (X86_64, 435, (), [], ENOSYS),                    # clone3
    (X86_64, 0x40000000 | 0, (), [], EPERM),          # x32 read
    (I386, 21, (), [], EPERM),                        # i386 mount
    (I386, 3, (), [], ALLOW),                         # i386 read
    (I386, 120, (0x20000011,), [], EPERM),            # i386 clone(CLONE_NEWPID)
    (I386, 25, (), ["CAP_SYS_TIME"], ALLOW),          # i386 stime with the cap
    (0x40000028, 0, (), [], ENOSYS),                  # arm32: not this host's ABI
])
def test_compiled_filter_x86_64(arch: int, nr: int, args: tuple[int, ...], caps: list[str],
                                expected: int) -> None:
    code = seccomp.compile_filter(seccomp.default_profile(caps), "x86_64")
    assert run_bpf(code, nr, arch, args) == expected


def test_compiled_filter_aarch64() -> None:
    code = seccomp.compile_filter(seccomp.default_profile([]), "aarch64")
    assert run_bpf(code, 40, AARCH64) == EPERM      # mount
    assert run_bpf(code, 63, AARCH64) == ALLOW      # read
    assert run_bpf(code, 220, AARCH64, (0x11,)) == ALLOW
    assert run_bpf(code, 220, AARCH64, (0x40000011,)) == EPERM  # CLONE_NEWNET
    assert run_bpf(code, 0, X86_64) == ENOSYS
