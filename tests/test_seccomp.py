"""seccomp: Docker's default restrictions, enforced by the kernel in every container process."""

from __future__ import annotations

import errno
import json
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
    r = rl("run", "--rm", "--security-opt", "seccomp=/nonexistent/profile.json", "--rootfs",
           rootfs, "true")
    assert r.returncode == 125 and "opening seccomp profile" in r.stderr


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
        elif op == 0x25:  # jgt
            pc += jt if acc > k else jf
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


# -- profile files (--security-opt seccomp=FILE, Docker's JSON format) ------------------

def _profile(tmp_path: Path, data: object) -> str:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize(("op", "value", "arg", "holds"), [
    ("SCMP_CMP_EQ", 5, 5, True), ("SCMP_CMP_EQ", 5, 5 | 1 << 32, False),
    ("SCMP_CMP_NE", 5, 5, False), ("SCMP_CMP_NE", 5, 6, True),
    ("SCMP_CMP_NE", 5, 5 | 1 << 33, True),
    ("SCMP_CMP_GT", 5, 6, True), ("SCMP_CMP_GT", 5, 5, False), ("SCMP_CMP_GT", 5, 1 << 32, True),
    ("SCMP_CMP_GE", 5, 5, True), ("SCMP_CMP_GE", 5, 4, False),
    ("SCMP_CMP_GE", 1 << 32, 0xFFFFFFFF, False),
    ("SCMP_CMP_LT", 5, 4, True), ("SCMP_CMP_LT", 5, 5, False), ("SCMP_CMP_LT", 1 << 32, 7, True),
    ("SCMP_CMP_LE", 5, 5, True), ("SCMP_CMP_LE", 5, 6, False),
    ("SCMP_CMP_LE", 5, 1 << 40, False),
])
def test_profile_argument_operators(tmp_path: Path, op: str, value: int, arg: int,
                                    holds: bool) -> None:
    path = _profile(tmp_path, {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
         "args": [{"index": 1, "value": value, "op": op}]}]})
    code = seccomp.compile_filter(seccomp.load_profile(path, []), "x86_64")
    assert run_bpf(code, 62, X86_64, (0, arg)) == (0x00050000 | 13 if holds else ALLOW)


def test_profile_includes_excludes_and_default_errno(tmp_path: Path) -> None:
    path = _profile(tmp_path, {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
                               "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["reboot"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
        {"names": ["not_a_syscall_anywhere"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["getpid"], "action": "SCMP_ACT_KILL_PROCESS"}]})
    plain = seccomp.compile_filter(seccomp.load_profile(path, []), "x86_64")
    admin = seccomp.compile_filter(seccomp.load_profile(path, ["CAP_SYS_ADMIN"]), "x86_64")
    assert run_bpf(plain, 0, X86_64) == ALLOW and run_bpf(plain, 3, I386) == ALLOW
    assert run_bpf(plain, 165, X86_64) == 0x00050000 | 38  # mount: the default errno
    assert run_bpf(admin, 165, X86_64) == ALLOW
    assert run_bpf(plain, 169, X86_64) == 0x00050000 | 38  # reboot: excluded on amd64
    assert run_bpf(plain, 39, X86_64) == 0x80000000  # getpid: kill the process
    # Names outside rl's own table come from libseccomp's (getpid is 20 on i386).
    assert run_bpf(plain, 20, I386) == 0x80000000


@pytest.mark.parametrize(("content", "message"), [
    (None, "opening seccomp profile"),
    ("{not json", "not JSON"),
    ('{"syscalls": []}', "malformed"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], '
     '"action": "SCMP_ACT_NOPE"}]}', "unknown action SCMP_ACT_NOPE"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], '
     '"action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}',
     "argument index outside 0-5"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], '
     '"action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ODD"}]}]}',
     "unknown argument operator SCMP_CMP_ODD"),
])
def test_bad_profiles_are_125_at_create(rl: RlRunner, rootfs: Path, tmp_path: Path,
                                         content: str | None, message: str) -> None:
    path = tmp_path / "p.json"
    if content is not None:
        path.write_text(content)
    r = rl("create", "--security-opt", f"seccomp={path}", "--rootfs", rootfs, "true")
    assert r.returncode == 125 and message in r.stderr, r.stderr


def test_a_profile_file_is_enforced(rl: RlRunner, rootfs: Path, tmp_path: Path) -> None:
    # An allowlist: every syscall libseccomp knows but getcwd; so `pwd -P` fails with
    # the profile's errno while everything else the shell does works.
    names = []
    for nr in range(0, 500):
        name = seccomp.syscall_name("SCMP_ARCH_X86_64", nr)
        if name and name != "getcwd":
            names.append(name)
    support.require(len(names) > 300, "libseccomp's syscall table is not available")
    path = _profile(tmp_path, {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13,
                               "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]})
    r = rl("run", "--rm", "--security-opt", f"seccomp={path}", "--rootfs", rootfs, "sh", "-c",
           "echo start; cd /tmp; /bin/pwd 2>&1; echo rc=$?")
    assert r.stdout.splitlines()[0] == "start", r
    assert "Permission denied" in r.stdout and "rc=1" in r.stdout, r.stdout
    info = rl("run", "--rm", "--rootfs", rootfs, "sh", "-c", "cd /tmp; /bin/pwd", check=True)
    assert info.stdout == "/tmp\n"
