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
`compile_filter` turns it into BPF for the host's architecture and its 32-bit
compat ABI: rules in order, first match wins, every action and argument
operator of the OCI spec. `--security-opt seccomp=FILE` reads a profile in
Docker's JSON format (`load_profile`: includes/excludes by capability,
architecture and kernel). The syscalls of rl's own profile are numbered by
the tables below; any other name (a profile file's) by libseccomp's table
(`seccomp_syscall_resolve_name_arch`), loaded when this module is imported,
before any pivot_root, and only for that lookup: rl builds the filter itself.
"""

from __future__ import annotations

import ctypes
import errno
import json
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

def _open_libseccomp() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return None
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p  # malloc'd
    return lib


_LIBSECCOMP = _open_libseccomp()


def _number(arch: str, name: str) -> int | None:
    """The syscall's number on this ABI, or None if the ABI has no such syscall."""
    nr = _NUMBERS[arch].get(name)
    if nr is None and _LIBSECCOMP is not None:
        found = _LIBSECCOMP.seccomp_syscall_resolve_name_arch(_AUDIT_ARCH[arch],
                                                              name.encode())
        nr = found if found >= 0 else None  # < 0: none, or a multiplexed pseudo-call
    return nr


def syscall_name(arch: str, nr: int) -> str | None:
    """libseccomp's name for a syscall number (None without libseccomp or name)."""
    if _LIBSECCOMP is None:
        return None
    ptr = _LIBSECCOMP.seccomp_syscall_resolve_num_arch(_AUDIT_ARCH[arch], nr)
    if not ptr:
        return None
    try:
        return ctypes.string_at(ptr).decode()
    finally:
        ctypes.CDLL(None).free(ctypes.c_void_p(ptr))


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


# -- a Docker profile file ------------------------------------------------------------

_DOCKER_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _applies(rule: dict[str, object], caps: list[str]) -> bool:
    """A Docker profile rule's includes/excludes, for this container and host."""
    arch = _DOCKER_ARCH.get(platform.machine(), platform.machine())
    inc = rule.get("includes") or {}
    exc = rule.get("excludes") or {}
    assert isinstance(inc, dict) and isinstance(exc, dict)
    if any(c not in caps for c in inc.get("caps") or []):
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if inc.get("minKernel") and not _kernel_at_least(str(inc["minKernel"])):  # e.g. "4.8"
        return False
    if any(c in caps for c in exc.get("caps") or []):
        return False
    return not (exc.get("arches") and arch in exc["arches"])


def _kernel_at_least(version: str) -> bool:
    from fs.drivers import kernel_at_least  # only profiles with minKernel need it

    major, _, minor = version.partition(".")
    return kernel_at_least(int(major), int(minor.split(".")[0] or 0))


def load_profile(path: str, caps: list[str]) -> Seccomp:
    """A seccomp profile file in Docker's JSON format, for a container holding caps."""
    try:
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict) or "defaultAction" not in data:
            raise ValueError("no defaultAction")
        rules = []
        for raw in data.get("syscalls") or []:
            if not _applies(raw, caps):
                continue
            names = list(raw.get("names") or ([raw["name"]] if raw.get("name") else []))
            args = [SeccompArg(index=int(a["index"]), value=int(a.get("value", 0)),
                               value_two=int(a.get("valueTwo", 0)), op=str(a["op"]))
                    for a in raw.get("args") or []]
            if any(not 0 <= a.index <= 5 for a in args):
                raise ValueError("an argument index outside 0-5")
            rules.append(SeccompSyscall(names=names, action=str(raw["action"]),
                                        errno_ret=raw.get("errnoRet"), args=args))
        default_errno = data.get("defaultErrnoRet")
        profile = Seccomp(default_action=str(data["defaultAction"]),
                          default_errno_ret=int(default_errno) if default_errno is not None
                          else None,
                          architectures=_HOST_ARCHES.get(platform.machine(), []),
                          syscalls=rules)
    except OSError as e:
        raise RlError(f"opening seccomp profile {path}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        what = "not JSON" if isinstance(e, json.JSONDecodeError) else f"malformed ({e})"
        raise RlError(f"seccomp profile {path}: {what}") from None
    compile_filter(profile)  # an unknown action or operator is an error now, not at start
    return profile


# -- compiling ----------------------------------------------------------------------

_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGT_K = 0x25
_JGE_K = 0x35
_JA = 0x05
_AND_K = 0x54
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_X32_SYSCALL_BIT = 0x40000000
_RETURNS = {
    "SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": _RET_ALLOW,
}


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def _action(action: str, errno_ret: int | None) -> int:
    if action in _RETURNS:
        return _RETURNS[action]
    if action == "SCMP_ACT_ERRNO":
        return _RET_ERRNO | ((errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    if action == "SCMP_ACT_TRACE":
        return 0x7FF00000 | ((errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    raise RlError(f"seccomp: unknown action {action}")


# One argument condition as instructions whose jumps name a target: 0 (the
# next instruction), "ok" (the condition holds: past its last instruction)
# or "fail" (the next rule). 64-bit values are compared as two 32-bit halves,
# high first (seccomp_data is little-endian on every ABI rl supports).
_Insn = tuple[int, int | str, int | str, int]


def _condition(arg: SeccompArg) -> list[_Insn]:
    lo, hi = 16 + 8 * arg.index, 16 + 8 * arg.index + 4
    v_lo, v_hi = arg.value & 0xFFFFFFFF, (arg.value >> 32) & 0xFFFFFFFF
    op = arg.op
    if op == "SCMP_CMP_MASKED_EQ":
        w_lo, w_hi = arg.value_two & 0xFFFFFFFF, (arg.value_two >> 32) & 0xFFFFFFFF
        return [(_LD_W_ABS, 0, 0, hi), (_AND_K, 0, 0, v_hi), (_JEQ_K, 0, "fail", w_hi),
                (_LD_W_ABS, 0, 0, lo), (_AND_K, 0, 0, v_lo), (_JEQ_K, 0, "fail", w_lo)]
    if op == "SCMP_CMP_EQ":
        return [(_LD_W_ABS, 0, 0, hi), (_JEQ_K, 0, "fail", v_hi),
                (_LD_W_ABS, 0, 0, lo), (_JEQ_K, 0, "fail", v_lo)]
    if op == "SCMP_CMP_NE":
        return [(_LD_W_ABS, 0, 0, hi), (_JEQ_K, 0, "ok", v_hi),
                (_LD_W_ABS, 0, 0, lo), (_JEQ_K, "fail", 0, v_lo)]
    # Ordered comparisons (unsigned, as libseccomp's): the high halves decide
    # unless they are equal; then the low halves do.
    low_test: dict[str, tuple[int, int | str, int | str]] = {
        "SCMP_CMP_GT": (_JGT_K, 0, "fail"), "SCMP_CMP_GE": (_JGE_K, 0, "fail"),
        "SCMP_CMP_LT": (_JGE_K, "fail", 0), "SCMP_CMP_LE": (_JGT_K, "fail", 0)}
    if op not in low_test:
        raise RlError(f"seccomp: unknown argument operator {op}")
    greater = op in ("SCMP_CMP_GT", "SCMP_CMP_GE")
    code, jt, jf = low_test[op]
    return [(_LD_W_ABS, 0, 0, hi),
            (_JGT_K, "ok" if greater else "fail", 0, v_hi),
            (_JEQ_K, 0, "fail" if greater else "ok", v_hi),
            (_LD_W_ABS, 0, 0, lo), (code, jt, jf, v_lo)]


def _block(nr: int, rule: SeccompSyscall) -> list[bytes]:
    """if nr matches and every argument condition holds: return the rule's action.

    A failed check jumps past the return to the next block (which reloads nr).
    """
    body: list[_Insn] = []
    for arg in rule.args:
        cond = _condition(arg)
        base = len(body)
        end = base + len(cond)
        for i, (code, jt, jf, k) in enumerate(cond):
            here = base + i + 1
            body.append((code, end - here if jt == "ok" else jt,
                         end - here if jf == "ok" else jf, k))
    insns: list[_Insn] = [(_LD_W_ABS, 0, 0, 0), (_JEQ_K, 0, "fail", nr), *body,
                          (_RET_K, 0, 0, _action(rule.action, rule.errno_ret))]
    out = []
    for i, (code, jt, jf, k) in enumerate(insns):
        to_next = len(insns) - (i + 1)
        out.append(_insn(code, to_next if jt == "fail" else int(jt),
                         to_next if jf == "fail" else int(jf), k))
    return out


def _arch_section(profile: Seccomp, arch: str) -> list[bytes]:
    """The rules in order for one ABI, then its default; every path ends in a return."""
    out: list[bytes] = []
    if arch == "SCMP_ARCH_X86_64":
        # x32 ABI syscalls (nr | 0x40000000) are refused outright.
        out += [_insn(_LD_W_ABS, 0, 0, 0), _insn(_JGE_K, 0, 1, _X32_SYSCALL_BIT),
                _insn(_RET_K, 0, 0, _RET_ERRNO | errno.EPERM)]
    for rule in profile.syscalls:
        for name in rule.names:
            nr = _number(arch, name)
            if nr is not None:  # as runc: a name this ABI lacks is skipped
                out += _block(nr, rule)
    out.append(_insn(_RET_K, 0, 0, _action(profile.default_action,
                                           profile.default_errno_ret)))
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
