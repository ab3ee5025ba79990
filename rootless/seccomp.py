"""seccomp: Docker's default syscall restrictions, as OCI data compiled to classic BPF.

Why a denylist: Docker's default profile allows ~350 syscalls and refuses the
rest; what it refuses (and what this module refuses, with EPERM) are the
syscalls that reach kernel code no container should need — module and kexec
loading, the keyring, bpf, perf, userfaultfd, namespace creation, mounts,
clock setting — unless the container was given the capability that makes
them legitimate (`--cap-add SYS_ADMIN` allows mount, unshare and setns, as
under Docker). In a rootless container most of them would fail anyway for
lack of a capability in the initial namespace; the filter closes the kernel
code paths that are still reachable from a user namespace.

The profile is OCI runtime-spec data (spec.Seccomp), so `rl inspect` shows it;
`compile_filter` turns the subset rl writes (default ALLOW; ERRNO/ALLOW rules,
in order, first match wins; SCMP_CMP_MASKED_EQ argument conditions) into BPF
for the host's architecture and its 32-bit compat ABI. No libseccomp needed.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

from . import _syscalls as sc
from .errors import RlError
from .spec import Seccomp, SeccompArg, SeccompSyscall

# Syscall numbers of what may be refused, per ABI (from the kernel's unistd
# tables). Absent: the ABI has no such syscall.
_NUMBERS: dict[str, dict[str, int]] = {
    "SCMP_ARCH_X86_64": {
        "acct": 163, "add_key": 248, "bpf": 321, "clock_adjtime": 305, "clock_settime": 227,
        "create_module": 174, "delete_module": 176, "finit_module": 313,
        "get_kernel_syms": 177, "get_mempolicy": 239, "init_module": 175, "ioperm": 173,
        "iopl": 172, "kcmp": 312, "kexec_file_load": 320, "kexec_load": 246, "keyctl": 250,
        "lookup_dcookie": 212, "mbind": 237, "mount": 165, "move_pages": 279,
        "name_to_handle_at": 303, "nfsservctl": 180, "open_by_handle_at": 304,
        "perf_event_open": 298, "pivot_root": 155, "process_vm_readv": 310,
        "process_vm_writev": 311, "query_module": 178, "quotactl": 179, "reboot": 169,
        "request_key": 249, "set_mempolicy": 238, "setns": 308, "settimeofday": 164,
        "swapon": 167, "swapoff": 168, "sysfs": 139, "_sysctl": 156, "umount2": 166,
        "unshare": 272, "uselib": 134, "userfaultfd": 323, "ustat": 136, "clone": 56,
        "clone3": 435, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "move_mount": 429, "open_tree": 428, "mount_setattr": 442, "syslog": 103,
    },
    "SCMP_ARCH_X86": {
        "acct": 51, "add_key": 286, "bpf": 357, "clock_adjtime": 343, "clock_settime": 264,
        "create_module": 127, "delete_module": 129, "finit_module": 350,
        "get_kernel_syms": 130, "get_mempolicy": 275, "init_module": 128, "ioperm": 101,
        "iopl": 110, "kcmp": 349, "kexec_load": 283, "keyctl": 288, "lookup_dcookie": 253,
        "mbind": 274, "mount": 21, "move_pages": 317, "name_to_handle_at": 341,
        "nfsservctl": 169, "open_by_handle_at": 342, "perf_event_open": 336,
        "pivot_root": 217, "process_vm_readv": 347, "process_vm_writev": 348,
        "query_module": 167, "quotactl": 131, "reboot": 88, "request_key": 287,
        "set_mempolicy": 276, "setns": 346, "settimeofday": 79, "stime": 25, "swapon": 87,
        "swapoff": 115, "sysfs": 135, "_sysctl": 149, "umount": 22, "umount2": 52,
        "unshare": 310, "uselib": 86, "userfaultfd": 374, "ustat": 62, "vm86": 166,
        "vm86old": 113, "clone": 120, "clone3": 435, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "move_mount": 429, "open_tree": 428,
        "mount_setattr": 442, "syslog": 103,
    },
    "SCMP_ARCH_AARCH64": {
        "acct": 89, "add_key": 217, "bpf": 280, "clock_adjtime": 266, "clock_settime": 112,
        "delete_module": 106, "finit_module": 273, "get_mempolicy": 236, "init_module": 105,
        "kcmp": 272, "kexec_file_load": 294, "kexec_load": 104, "keyctl": 219,
        "lookup_dcookie": 18, "mbind": 235, "mount": 40, "move_pages": 239,
        "name_to_handle_at": 264, "nfsservctl": 42, "open_by_handle_at": 265,
        "perf_event_open": 241, "pivot_root": 41, "process_vm_readv": 270,
        "process_vm_writev": 271, "quotactl": 60, "reboot": 142, "request_key": 218,
        "set_mempolicy": 237, "setns": 268, "settimeofday": 170, "swapon": 224,
        "swapoff": 225, "umount2": 39, "unshare": 97, "userfaultfd": 282, "clone": 220,
        "clone3": 435, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "move_mount": 429, "open_tree": 428, "mount_setattr": 442, "syslog": 116,
    },
}
_AUDIT_ARCH = {
    "SCMP_ARCH_X86_64": 0xC000003E,
    "SCMP_ARCH_X86": 0x40000003,
    "SCMP_ARCH_AARCH64": 0xC00000B7,
}
_HOST_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
    "aarch64": ["SCMP_ARCH_AARCH64"],
}

# Refused unless the container holds the capability that goes with them
# (moby's profiles/seccomp/default.json, grouped the same way).
_ALWAYS = [
    "add_key", "keyctl", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "lookup_dcookie", "kexec_file_load", "create_module", "get_kernel_syms", "query_module",
    "nfsservctl", "sysfs", "_sysctl", "uselib", "ustat", "vm86", "vm86old",
]
_WITH_CAP = {
    "CAP_SYS_ADMIN": ["mount", "umount", "umount2", "unshare", "setns", "pivot_root",
                      "name_to_handle_at", "open_by_handle_at", "quotactl", "fsopen",
                      "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
                      "mount_setattr"],
    "CAP_SYS_MODULE": ["init_module", "finit_module", "delete_module"],
    "CAP_SYS_BOOT": ["reboot", "kexec_load"],
    "CAP_SYS_TIME": ["settimeofday", "stime", "clock_settime", "clock_adjtime"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYS_NICE": ["get_mempolicy", "set_mempolicy", "mbind", "move_pages"],
    "CAP_SYS_PTRACE": ["kcmp", "process_vm_readv", "process_vm_writev"],
    "CAP_SYSLOG": ["syslog"],
}
# clone() creating namespaces needs CAP_SYS_ADMIN too; clone3's flags live in
# memory BPF cannot read, so without it clone3 says ENOSYS and libc falls
# back to clone, as under Docker.
_CLONE_NS_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET


def default_profile(caps: list[str]) -> Seccomp:
    """Docker's default restrictions for a container holding `caps`."""
    refused = list(_ALWAYS)
    for cap, names in _WITH_CAP.items():
        if cap not in caps:
            refused += names
    rules = [SeccompSyscall(names=sorted(refused), action="SCMP_ACT_ERRNO",
                            errno_ret=errno.EPERM)]
    if "CAP_SYS_ADMIN" not in caps:
        rules += [
            SeccompSyscall(names=["clone"], action="SCMP_ACT_ALLOW", args=[
                SeccompArg(index=0, value=_CLONE_NS_FLAGS, value_two=0,
                           op="SCMP_CMP_MASKED_EQ")]),
            SeccompSyscall(names=["clone"], action="SCMP_ACT_ERRNO", errno_ret=errno.EPERM),
            SeccompSyscall(names=["clone3"], action="SCMP_ACT_ERRNO",
                           errno_ret=errno.ENOSYS),
        ]
    arches = _HOST_ARCHES.get(platform.machine(), [])
    return Seccomp(default_action="SCMP_ACT_ALLOW", architectures=arches, syscalls=rules)


# -- compiling ----------------------------------------------------------------------

_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JA = 0x05
_AND_K = 0x54
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_X32_SYSCALL_BIT = 0x40000000


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def _action(rule: SeccompSyscall) -> int:
    if rule.action == "SCMP_ACT_ALLOW":
        return _RET_ALLOW
    if rule.action == "SCMP_ACT_ERRNO":
        ret = errno.EPERM if rule.errno_ret is None else rule.errno_ret
        return _RET_ERRNO | (ret & 0xFFFF)
    raise RlError(f"seccomp: action {rule.action} is not supported")


def _block(nr: int, rule: SeccompSyscall) -> list[bytes]:
    """if nr matches and every argument condition holds: return the rule's action.

    Each condition is checked on both 32-bit halves of the 64-bit argument;
    a failed check jumps past the return to the next block (which reloads nr).
    """
    halves: list[tuple[int, int, int]] = []  # (offset, mask, wanted)
    for arg in rule.args:
        if arg.op != "SCMP_CMP_MASKED_EQ":
            raise RlError(f"seccomp: argument operator {arg.op} is not supported")
        for offset, shift in ((0, 0), (4, 32)):
            halves.append((16 + 8 * arg.index + offset, (arg.value >> shift) & 0xFFFFFFFF,
                           (arg.value_two >> shift) & 0xFFFFFFFF))
    after_nr = 3 * len(halves) + 1  # instructions between the nr compare and the next block
    out = [_insn(_LD_W_ABS, 0, 0, 0), _insn(_JEQ_K, 0, after_nr, nr)]
    for i, (offset, mask, wanted) in enumerate(halves):
        remaining = 3 * (len(halves) - i - 1) + 1
        out += [_insn(_LD_W_ABS, 0, 0, offset), _insn(_AND_K, 0, 0, mask),
                _insn(_JEQ_K, 0, remaining, wanted)]
    out.append(_insn(_RET_K, 0, 0, _action(rule)))
    return out


def _arch_section(profile: Seccomp, arch: str) -> list[bytes]:
    """The rules in order for one ABI, then its default; every path ends in a return."""
    numbers = _NUMBERS[arch]
    out: list[bytes] = []
    if arch == "SCMP_ARCH_X86_64":
        # x32 ABI syscalls (nr | 0x40000000) are refused outright.
        out += [_insn(_LD_W_ABS, 0, 0, 0), _insn(_JGE_K, 0, 1, _X32_SYSCALL_BIT),
                _insn(_RET_K, 0, 0, _RET_ERRNO | errno.EPERM)]
    for rule in profile.syscalls:
        for name in rule.names:
            if name in numbers:
                out += _block(numbers[name], rule)
    default = SeccompSyscall(names=[], action=profile.default_action)
    out.append(_insn(_RET_K, 0, 0, _action(default)))
    return out


def compile_filter(profile: Seccomp, host_arch: str | None = None) -> bytes:
    """Classic BPF for the host's ABIs; any other ABI gets ENOSYS."""
    arches = _HOST_ARCHES.get(host_arch or platform.machine())
    if not arches:
        raise RlError(f"seccomp: architecture {host_arch or platform.machine()} is not "
                      "supported; run with --security-opt seccomp=unconfined")
    program: list[bytes] = [_insn(_LD_W_ABS, 0, 0, 4)]  # A = the caller's ABI
    for arch in arches:
        section = _arch_section(profile, arch)
        # A == this ABI: fall into its section; else jump over it with BPF_JA
        # (32-bit offset; conditional jumps only reach 255). A still holds the
        # ABI there, since only the sections load anything else.
        program += [_insn(_JEQ_K, 1, 0, _AUDIT_ARCH[arch]), _insn(_JA, 0, 0, len(section))]
        program += section
    program.append(_insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS))
    if len(program) > 4096:
        raise RlError("seccomp: the filter is too long")
    return b"".join(program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2


def install(profile: Seccomp) -> None:
    """Load the filter into this thread (needs CAP_SYS_ADMIN in its user namespace
    or no_new_privs: call it before the process drops its capabilities)."""
    code = compile_filter(profile)
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.addressof(buf))
    sc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog))
