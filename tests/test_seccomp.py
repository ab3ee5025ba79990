"""seccomp: Docker's default restrictions, enforced by the kernel in every container process."""

from __future__ import annotations

import errno
import functools
import json
import struct
from pathlib import Path
from typing import Any

import pytest

import support
from rootless.runtime import seccomp
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

@functools.lru_cache(maxsize=64)
def _decode(code: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack("HBBI", code[i:i + 8]) for i in range(0, len(code), 8)]


def run_bpf(code: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """A classic-BPF interpreter for the instructions rl emits, over seccomp_data."""
    argv = list(args) + [0] * (6 - len(args))
    data = struct.pack("<iIQ6Q", nr if nr < 1 << 31 else nr - (1 << 32), arch, 0, *argv)
    insns = _decode(code)
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
    # Docker's allowlist: what is not named is refused, new syscalls included.
    (X86_64, 425, (), [], EPERM),                     # io_uring_setup
    (I386, 425, (), ["CAP_SYS_ADMIN"], EPERM),
    (X86_64, 1000, (), [], EPERM),                    # no such syscall yet
    (X86_64, 41, (40, 1), [], EPERM),                 # socket(AF_VSOCK)
    (X86_64, 41, (38, 5), [], EPERM),                 # socket(AF_ALG)
    (X86_64, 41, (1 << 32 | 40, 1), [], EPERM),       # the kernel reads AF_VSOCK there
    (X86_64, 41, (2, 1), [], ALLOW),                  # socket(AF_INET)
    (X86_64, 41, (39, 1), [], ALLOW),
    (I386, 359, (1 << 32 | 40, 1), [], EPERM),        # i386 socket: 32-bit arguments
    (X86_64, 135, (0xFFFFFFFF,), [], ALLOW),          # personality(query)
    (X86_64, 135, (0x20008,), [], ALLOW),             # UNAME26 | PER_LINUX32
    (X86_64, 135, (0x40000,), [], EPERM),             # ADDR_NO_RANDOMIZE
    (X86_64, 135, (0x400000,), [], EPERM),            # READ_IMPLIES_EXEC
    (I386, 136, (1 << 32 | 8,), [], ALLOW),           # only the low half counts on i386
    (X86_64, 438, (), [], EPERM),                     # pidfd_getfd
    (X86_64, 438, (), ["CAP_SYS_PTRACE"], ALLOW),
    (I386, 438, (), ["CAP_SYS_PTRACE"], ALLOW),
    (X86_64, 101, (), [], ALLOW),                     # ptrace: Docker's, from Linux 4.8 on
    (X86_64, 170, (), [], EPERM),                     # sethostname
    (X86_64, 161, (), ["CAP_CHOWN"], EPERM),          # chroot needs CAP_SYS_CHROOT
    (X86_64, 161, (), ["CAP_SYS_CHROOT"], ALLOW),
    (X86_64, 435, (), ["CAP_SYS_ADMIN"], ALLOW),      # clone3
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
        {"names": ["uname"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "3.0"}},
        {"names": ["uname"], "action": "SCMP_ACT_TRAP", "excludes": {"minKernel": "999.0"}},
        {"names": ["getpid"], "action": "SCMP_ACT_KILL_PROCESS"}]})
    plain = seccomp.compile_filter(seccomp.load_profile(path, []), "x86_64")
    admin = seccomp.compile_filter(seccomp.load_profile(path, ["CAP_SYS_ADMIN"]), "x86_64")
    assert run_bpf(plain, 0, X86_64) == ALLOW and run_bpf(plain, 3, I386) == ALLOW
    assert run_bpf(plain, 165, X86_64) == 0x00050000 | 38  # mount: the default errno
    assert run_bpf(admin, 165, X86_64) == ALLOW
    assert run_bpf(plain, 169, X86_64) == 0x00050000 | 38  # reboot: excluded on amd64
    assert run_bpf(plain, 39, X86_64) == 0x80000000  # getpid: kill the process
    assert run_bpf(plain, 63, X86_64) == 0x00030000  # uname: excluded from kernel 3.0 on
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


# -- the default is Docker's: its own default.json as the reference ---------------------

DOCKER_PROFILE = "docker-seccomp-default.json"
M32 = 0xFFFFFFFF


def docker_profile_path() -> Path:
    """Docker's default profile in shared/data beside the checkout.

    CI lays shared/ beside its clone and .ci/run copies shared/data beside the
    test user's copy of it; from a git worktree, shared/ lies beside the main
    checkout (the worktree's .git file names its git dir, whose commondir is
    the main one's).
    """
    repo = Path(__file__).resolve().parent.parent
    roots = [repo]
    try:
        gitdir = Path((repo / ".git").read_text().partition("gitdir:")[2].strip())
        roots.append((gitdir / (gitdir / "commondir").read_text().strip()).resolve().parent)
    except OSError:  # not a worktree (.git is a directory) or not a checkout at all
        pass
    for root in roots:
        path = root.parent / "shared" / "data" / DOCKER_PROFILE
        if path.is_file():
            return path
    support.require(False, f"{DOCKER_PROFILE} is not in shared/data beside {repo}")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def docker() -> dict[str, Any]:
    path = docker_profile_path()
    data = json.loads(path.read_text())
    assert data["defaultAction"] == "SCMP_ACT_ERRNO" and len(data["syscalls"]) > 20
    return {"path": path, "data": data}


def docker_applies(rule: dict[str, Any], caps: list[str], native: str) -> bool:
    """moby's includes/excludes on a `native` (amd64, arm64) host with a kernel newer than
    any minKernel."""
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    return (all(c in caps for c in inc.get("caps") or [])
            and (native in inc["arches"] if inc.get("arches") else True)
            and not any(c in caps for c in exc.get("caps") or [])
            and native not in (exc.get("arches") or []))


def docker_holds(cond: dict[str, Any], args: tuple[int, ...], wide: bool) -> bool:
    """One argument condition, as libseccomp compiles it (32-bit ABIs: the low halves)."""
    a, v, v2 = args[cond["index"]], cond["value"], cond.get("valueTwo", 0)
    if not wide:
        a, v, v2 = a & M32, v & M32, v2 & M32
    return {"SCMP_CMP_EQ": a == v, "SCMP_CMP_NE": a != v, "SCMP_CMP_LT": a < v,
            "SCMP_CMP_LE": a <= v, "SCMP_CMP_GT": a > v, "SCMP_CMP_GE": a >= v,
            "SCMP_CMP_MASKED_EQ": a & v == v2}[cond["op"]]


def docker_verdict(data: dict[str, Any], rules: list[dict[str, Any]], wide: bool,
                   args: tuple[int, ...]) -> int:
    """What Docker's filter returns, given the applicable rules that name the syscall."""
    verdicts = set()
    for rule in rules:
        if all(docker_holds(c, args, wide) for c in rule.get("args") or []):
            verdicts.add(ALLOW if rule["action"] == "SCMP_ACT_ALLOW"
                          else 0x00050000 | rule.get("errnoRet", errno.EPERM))
    assert len(verdicts) <= 1, f"rules disagree: {rules}"
    return verdicts.pop() if verdicts else 0x00050000 | data["defaultErrnoRet"]


def probe_args(rules: list[dict[str, Any]]) -> list[tuple[int, ...]]:
    """Arguments around every value the rules compare with: equal, one off, each mask
    bit alone, and each of those with bit 32 set, which a 64-bit register can hold."""
    out = {(0,) * 6}
    for rule in rules:
        for c in rule.get("args") or []:
            v, v2 = c["value"], c.get("valueTwo", 0)
            values = {v, v - 1, v + 1, v2, M32, 0}
            values |= {v2 | 1 << bit for bit in range(64) if v >> bit & 1}
            for x in list(values):
                values.add(x | 1 << 32)
            for x in values:
                if 0 <= x < 1 << 64:
                    args = [0] * 6
                    args[c["index"]] = x
                    out.add(tuple(args))
    return sorted(out)


CAP_VARIANTS = [
    ([], []), (["SYS_ADMIN"], []), (["SYS_PTRACE"], []), (["SYS_BOOT"], []),
    (["SYS_MODULE"], []), (["SYS_TIME"], []), (["SYS_NICE"], []), (["SYS_RAWIO"], []),
    (["SYS_PACCT"], []), (["SYS_TTY_CONFIG"], []), (["SYSLOG"], []), (["BPF", "PERFMON"], []),
    (["DAC_READ_SEARCH"], []), ([], ["SYS_CHROOT"]), (["ALL"], []), ([], ["ALL"]),
]


ABIS = {"x86_64": ("amd64", [("SCMP_ARCH_X86_64", X86_64), ("SCMP_ARCH_X86", I386)]),
        "aarch64": ("arm64", [("SCMP_ARCH_AARCH64", AARCH64)])}


@pytest.mark.parametrize("machine", sorted(ABIS))
@pytest.mark.parametrize(("cap_add", "cap_drop"), CAP_VARIANTS)
def test_the_default_gives_dockers_verdicts(docker: dict[str, Any], machine: str,
                                            cap_add: list[str], cap_drop: list[str]) -> None:
    """For every syscall number of the machine's ABIs and every argument Docker's profile
    conditions on, rl's default answers what Docker's default.json does, for the
    container's capabilities after --cap-add/--cap-drop."""
    import platform

    from rootless.runtime import capabilities, seccomp_default

    data = docker["data"]
    native, abis = ABIS[machine]
    caps = capabilities.resolve(cap_add, cap_drop)
    ours = seccomp.compile_filter(seccomp.default_profile(caps), machine)
    # Docker's file through rl's profile compiler (--security-opt seccomp=FILE) too,
    # which decides includes/excludes for the machine it runs on.
    theirs = (seccomp.compile_filter(seccomp.load_profile(str(docker["path"]), caps), machine)
              if platform.machine() == machine else None)
    applicable = [r for r in data["syscalls"] if docker_applies(r, caps, native)]
    mismatches, compared, stricter = [], 0, 0
    for abi, audit in abis:
        table = seccomp_default.NUMBERS[abi]
        for nr in [*range(max(table.values()) + 32), 1000, 0x3FFFFFFF]:
            named = [r for r in applicable if any(table.get(n) == nr for n in r["names"])]
            every = [r for r in data["syscalls"] if any(table.get(n) == nr for n in r["names"])]
            for args in probe_args(every):
                want = docker_verdict(data, named, abi != "SCMP_ARCH_X86", args)
                via_file = want if theirs is None else run_bpf(theirs, nr, audit, args)
                got = run_bpf(ours, nr, audit, args)
                # Deliberately stricter than Docker: its 64-bit "> 40" lets socket's int
                # family through with bit 32 set, and the kernel then reads AF_VSOCK.
                ours_want = want
                if (abi != "SCMP_ARCH_X86" and nr == table["socket"] and args[0] >> 32
                        and args[0] & M32 in (38, 40)):
                    stricter += 1
                    ours_want = EPERM
                compared += 1
                if got != ours_want or via_file != want:
                    mismatches.append((abi, nr, [hex(a) for a in args if a], hex(want),
                                       hex(got), hex(via_file)))
    assert not mismatches, mismatches[:20]
    assert compared > 500 * len(abis) and stricter > 0
    if machine == "x86_64":  # the x32 ABI (x86_64 numbers | 0x40000000) is refused outright
        assert {run_bpf(ours, 0x40000000 | nr, X86_64) for nr in range(600)} == {EPERM}
        # A name rl cannot number is invisible to the comparison: only these may be,
        # which no x86 ABI has (a syscall newer than rl's tables must be added to them).
        unnumbered = {n for r in applicable for n in r["names"]
                      if all(n not in seccomp_default.NUMBERS[abi] for abi, _ in abis)}
        assert unnumbered <= {"recv", "send", "riscv_hwprobe"}, unnumbered


def test_syscall_numbers_are_the_kernels() -> None:
    """rl's tables agree with libseccomp's wherever libseccomp knows the number."""
    from rootless.runtime import seccomp_default

    support.require(seccomp.syscall_name("SCMP_ARCH_X86_64", 0) == "read",
                    "libseccomp (Debian: libseccomp2) is not available")
    checked = 0
    for abi, table in seccomp_default.NUMBERS.items():
        for nr in range(1024):
            name = seccomp.syscall_name(abi, nr)
            if name is not None:
                assert table.get(name) == nr, (abi, name, nr)
                checked += 1
        for name, nr in table.items():
            assert seccomp.syscall_name(abi, nr) in (None, name), (abi, name, nr)
    assert checked > 900


def test_the_default_filter_is_compiled_once() -> None:
    # What the fork server does once; a container's profile comes back from config.json.
    from rootless.runtime import capabilities, spec

    seccomp.warm_up()
    warm = seccomp.compile_filter(seccomp.default_profile(capabilities.DEFAULT_CAPS))
    stored = spec.to_json(seccomp.default_profile(capabilities.DEFAULT_CAPS))
    again = seccomp.compile_filter(spec.from_json(spec.Seccomp, json.loads(json.dumps(stored))))
    assert again is warm


# -- from inside a container: the kernel enforcing it ----------------------------------

PROBES = ["io_uring_setup", "socket_inet", "socket_alg", "socket_vsock", "socket_vsock_high",
          "personality_query", "personality_linux32", "personality_no_randomize",
          "personality_read_implies_exec", "pidfd_getfd", "clone3", "thread"]
I386_PROBES = ["i386_getpid", "i386_io_uring_setup", "i386_socket_inet", "i386_socket_vsock",
               "i386_socket_vsock_high", "i386_personality_no_randomize", "i386_pidfd_getfd"]


@pytest.fixture(scope="module")
def probe_rootfs(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox root filesystem with /probe (tests/seccomp_probe.c, static glibc)."""
    import shutil
    import subprocess

    support.require(shutil.which("gcc") is not None, "gcc is not installed")
    dest = support.copy_tree(rootfs, tmp_path_factory.mktemp("probe") / "rootfs")
    built = subprocess.run(["gcc", "-static", "-O2", "-pthread", "-o", str(dest / "probe"),
                            str(Path(__file__).with_name("seccomp_probe.c"))],
                           capture_output=True, text=True)
    support.require(built.returncode == 0,
                    f"gcc -static failed (Debian: libc6-dev): {built.stderr[-500:]}")
    return dest


def probe(rl: RlRunner, rootfs: Path, *flags: str) -> dict[str, str]:
    import platform

    names = PROBES + (I386_PROBES if platform.machine() == "x86_64" else [])
    r = rl("run", "--rm", *flags, "--rootfs", rootfs, "/probe", *names)
    assert r.returncode == 0, r.stderr
    found = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert sorted(found) == sorted(names), r.stdout
    return found


def test_dockers_refusals_hold_inside(rl: RlRunner, probe_rootfs: Path) -> None:
    support.require_userns()
    got = probe(rl, probe_rootfs)
    want = {
        "io_uring_setup": "EPERM",             # Docker ≥ 25 blocks io_uring
        "socket_inet": "ok",
        "socket_alg": "EPERM",                 # the kernel's crypto API
        "socket_vsock": "EPERM",               # on a VM, a path to the hypervisor
        "socket_vsock_high": "EPERM",          # bit 32 set: the kernel still reads AF_VSOCK
        "personality_query": "ok",
        "personality_linux32": "ok",
        "personality_no_randomize": "EPERM",
        "personality_read_implies_exec": "EPERM",
        "pidfd_getfd": "EPERM",                # needs CAP_SYS_PTRACE
        "clone3": "ENOSYS",                    # so that glibc falls back to clone
        "thread": "ok",                        # which it does
        # The i386 ABI through int 0x80 gets the same filter, on 32-bit arguments.
        "i386_getpid": "ok",
        "i386_io_uring_setup": "EPERM",
        "i386_socket_inet": "ok",
        "i386_socket_vsock": "EPERM",
        "i386_socket_vsock_high": "EPERM",
        "i386_personality_no_randomize": "EPERM",
        "i386_pidfd_getfd": "EPERM",
    }
    assert got == {k: v for k, v in want.items() if k in got}


def test_capabilities_and_unconfined_lift_them_inside(rl: RlRunner, probe_rootfs: Path) -> None:
    support.require_userns()
    ptrace = probe(rl, probe_rootfs, "--cap-add", "SYS_PTRACE")
    assert ptrace["pidfd_getfd"] == "ok" and ptrace.get("i386_pidfd_getfd", "ok") == "ok"
    assert ptrace["io_uring_setup"] == ptrace["socket_vsock"] == "EPERM"
    admin = probe(rl, probe_rootfs, "--cap-add", "SYS_ADMIN")
    assert admin["clone3"] == "ok" and admin["thread"] == "ok"
    assert admin["io_uring_setup"] == admin["pidfd_getfd"] == "EPERM"
    # Without the filter the kernel allows what it refused: the refusals were the filter's.
    free = probe(rl, probe_rootfs, "--security-opt", "seccomp=unconfined")
    assert {free[k] for k in ("personality_no_randomize", "personality_read_implies_exec",
                              "pidfd_getfd", "clone3")} == {"ok"}


def test_dockers_own_file_is_enforced_alike(rl: RlRunner, probe_rootfs: Path,
                                            docker: dict[str, Any]) -> None:
    support.require_userns()
    ours = probe(rl, probe_rootfs)
    theirs = probe(rl, probe_rootfs, "--security-opt", f"seccomp={docker['path']}")
    # The kernel's verdicts under Docker's file are rl's default's, but where rl is
    # stricter on purpose: Docker's filter lets bit 32 | AF_VSOCK through to the kernel.
    assert ours.pop("socket_vsock_high") == "EPERM"
    assert theirs.pop("socket_vsock_high") != "EPERM"
    assert theirs == ours
