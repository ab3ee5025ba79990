"""seccomp: Docker's default syscall restrictions, as OCI data compiled to classic BPF.

The default is Docker's allowlist (seccomp_default.py states it): every
syscall not allowed there is refused with EPERM; the allowed ones are a set
of names for every container, more names for a container holding a
capability (`--cap-add SYS_ADMIN` allows mount, unshare and setns,
`SYS_PTRACE` pidfd_getfd and kcmp, as under Docker), and socket,
personality and clone only with certain arguments. `default_profile` builds
it for the container's effective capabilities, as Docker does from its
includes/excludes, so what a program may do is what it may do under Docker.

The profile is OCI runtime-spec data (spec.Seccomp), so `rl inspect` shows it;
`compile_filter` turns it into BPF for the host's architecture and its 32-bit
compat ABI: rules in order, first match wins, every action and argument
operator of the OCI spec, as a binary search on the syscall number.
`--security-opt seccomp=FILE` reads a profile in Docker's JSON format
(`load_profile`: includes/excludes by capability, architecture and kernel).
Syscalls are numbered by seccomp_default's tables (the kernel's); a name
they lack (a profile file's, for another ABI) by libseccomp's table
(`seccomp_syscall_resolve_name_arch`), loaded when this module is imported,
before any pivot_root, and only for that lookup: rl builds the filter itself.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import struct

from .. import syscalls as sc
from ..errors import InvalidArgument, RlError
from . import capabilities
from . import seccomp_default as policy
from .spec import Seccomp, SeccompArg, SeccompSyscall

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
    nr = policy.NUMBERS[arch].get(name)
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

_LOW_32_BITS = 0xFFFFFFFF


def default_profile(caps: list[str]) -> Seccomp:
    """Docker's default profile for a container holding `caps` (seccomp_default's policy)."""
    allowed = set(policy.ALLOWED)
    for cap, names in policy.WITH_CAPABILITY.items():
        if cap in caps:
            allowed.update(names)
    allow, refuse = "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"
    rules = [SeccompSyscall(names=sorted(allowed), action=allow)]
    # socket's family is an int, and the kernel reads only its low 32 bits:
    # compared as a 64-bit value (Docker's "< 38, == 39, > 40"), 1 << 32 |
    # AF_VSOCK would pass as "> 40" and still make a vsock.
    rules += [SeccompSyscall(names=["socket"], action=refuse, errno_ret=errno.EPERM, args=[
        SeccompArg(index=0, value=_LOW_32_BITS, value_two=family, op="SCMP_CMP_MASKED_EQ")])
        for family in policy.REFUSED_SOCKET_FAMILIES]
    rules.append(SeccompSyscall(names=["socket"], action=allow))
    rules += [SeccompSyscall(names=["personality"], action=allow, args=[
        SeccompArg(index=0, value=persona, op="SCMP_CMP_EQ")]) for persona in policy.PERSONAS]
    if "CAP_SYS_ADMIN" not in caps:  # else both are in the allowed set
        rules += [
            SeccompSyscall(names=["clone"], action=allow, args=[
                SeccompArg(index=0, value=policy.CLONE_NAMESPACE_FLAGS, value_two=0,
                           op="SCMP_CMP_MASKED_EQ")]),
            SeccompSyscall(names=["clone3"], action=refuse, errno_ret=errno.ENOSYS),
        ]
    return Seccomp(default_action=refuse, default_errno_ret=errno.EPERM,
                   architectures=_HOST_ARCHES.get(os.uname().machine, []), syscalls=rules)


# -- a Docker profile file ------------------------------------------------------------

_DOCKER_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _applies(rule: dict[str, object], caps: list[str]) -> bool:
    """A Docker profile rule's includes/excludes, for this container and host."""
    arch = _DOCKER_ARCH.get(os.uname().machine, os.uname().machine)
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
    if exc.get("minKernel") and _kernel_at_least(str(exc["minKernel"])):  # as moby: from then on
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
                          architectures=_HOST_ARCHES.get(os.uname().machine, []),
                          syscalls=rules)
    except OSError as e:
        raise InvalidArgument(f"opening seccomp profile {path}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        what = "not JSON" if isinstance(e, json.JSONDecodeError) else f"malformed ({e})"
        raise InvalidArgument(f"seccomp profile {path}: {what}") from None
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
    raise InvalidArgument(f"seccomp: unknown action {action}")


# One argument condition as instructions whose jumps name a target: 0 (the
# next instruction), "ok" (the condition holds: past its last instruction)
# or "fail" (the next rule). 64-bit values are compared as two 32-bit halves,
# high first (seccomp_data is little-endian on every ABI rl supports). On a
# 32-bit ABI only the low halves are (as libseccomp does): the kernel reads
# 32-bit arguments there, whatever the upper half of a 64-bit register held
# when a 64-bit process entered through int 0x80.
_Insn = tuple[int, int | str, int | str, int]


def _condition(arg: SeccompArg, wide: bool) -> list[_Insn]:
    lo, hi = 16 + 8 * arg.index, 16 + 8 * arg.index + 4
    v_lo, v_hi = arg.value & 0xFFFFFFFF, (arg.value >> 32) & 0xFFFFFFFF
    op = arg.op
    if op == "SCMP_CMP_MASKED_EQ":
        w_lo, w_hi = arg.value_two & 0xFFFFFFFF, (arg.value_two >> 32) & 0xFFFFFFFF
        low: list[_Insn] = [(_LD_W_ABS, 0, 0, lo), (_AND_K, 0, 0, v_lo),
                            (_JEQ_K, 0, "fail", w_lo)]
        return [(_LD_W_ABS, 0, 0, hi), (_AND_K, 0, 0, v_hi), (_JEQ_K, 0, "fail", w_hi),
                *low] if wide else low
    if op == "SCMP_CMP_EQ":
        low = [(_LD_W_ABS, 0, 0, lo), (_JEQ_K, 0, "fail", v_lo)]
        return [(_LD_W_ABS, 0, 0, hi), (_JEQ_K, 0, "fail", v_hi), *low] if wide else low
    if op == "SCMP_CMP_NE":
        low = [(_LD_W_ABS, 0, 0, lo), (_JEQ_K, "fail", 0, v_lo)]
        return [(_LD_W_ABS, 0, 0, hi), (_JEQ_K, 0, "ok", v_hi), *low] if wide else low
    # Ordered comparisons (unsigned, as libseccomp's): the high halves decide
    # unless they are equal; then the low halves do.
    low_test: dict[str, tuple[int, int | str, int | str]] = {
        "SCMP_CMP_GT": (_JGT_K, 0, "fail"), "SCMP_CMP_GE": (_JGE_K, 0, "fail"),
        "SCMP_CMP_LT": (_JGE_K, "fail", 0), "SCMP_CMP_LE": (_JGT_K, "fail", 0)}
    if op not in low_test:
        raise InvalidArgument(f"seccomp: unknown argument operator {op}")
    code, jt, jf = low_test[op]
    low = [(_LD_W_ABS, 0, 0, lo), (code, jt, jf, v_lo)]
    if not wide:
        return low
    greater = op in ("SCMP_CMP_GT", "SCMP_CMP_GE")
    return [(_LD_W_ABS, 0, 0, hi),
            (_JGT_K, "ok" if greater else "fail", 0, v_hi),
            (_JEQ_K, 0, "fail" if greater else "ok", v_hi), *low]


def _rule(args: tuple[SeccompArg, ...], ret: int, wide: bool) -> list[bytes]:
    """If every condition holds, return ret; a failed one jumps past that return."""
    conds = [_condition(arg, wide) for arg in args]
    total = sum(map(len, conds))
    out: list[bytes] = []
    pos = 0  # of the instruction in the rule's body
    for cond in conds:
        end = pos + len(cond)
        for code, jt, jf, k in cond:
            pos += 1
            jumps = [end - pos if j == "ok" else total + 1 - pos if j == "fail" else int(j)
                     for j in (jt, jf)]
            out.append(_insn(code, jumps[0], jumps[1], k))
    return [*out, _insn(_RET_K, 0, 0, ret)]


# A syscall's rules on one ABI in the profile's order, each as its argument
# conditions and its return value; the last one has none (the profile's
# default if none of the syscall's own rules is unconditional).
_Chain = tuple[tuple[tuple[SeccompArg, ...], int], ...]


def _chains(profile: Seccomp, arch: str) -> dict[int, _Chain]:
    default = _action(profile.default_action, profile.default_errno_ret)
    rules: dict[int, list[tuple[tuple[SeccompArg, ...], int]]] = {}
    for rule in profile.syscalls:
        ret = _action(rule.action, rule.errno_ret)
        for name in rule.names:
            nr = _number(arch, name)
            if nr is None:  # as runc: a name this ABI lacks is skipped
                continue
            chain = rules.setdefault(nr, [])
            if not chain or chain[-1][0]:  # after an unconditional rule nothing is reached
                chain.append((tuple(rule.args), ret))
    return {nr: tuple(chain) if not chain[-1][0] else (*chain, ((), default))
            for nr, chain in rules.items()}


def _tree(segments: list[tuple[int, _Chain]], wide: bool) -> list[bytes]:
    """A binary search on A (the syscall number) for its segment, which decides.

    segments[i] holds the numbers from its first up to the next one's first.
    """
    if len(segments) == 1:
        out: list[bytes] = []
        for args, ret in segments[0][1]:
            out += _rule(args, ret, wide)
        return out
    mid = len(segments) // 2
    below, above = _tree(segments[:mid], wide), _tree(segments[mid:], wide)
    if len(below) <= 255:
        return [_insn(_JGE_K, len(below), 0, segments[mid][0]), *below, *above]
    # A conditional jump reaches 255 instructions; BPF_JA (32-bit) reaches past.
    return [_insn(_JGE_K, 0, 1, segments[mid][0]), _insn(_JA, 0, 0, len(below)),
            *below, *above]


def _arch_section(profile: Seccomp, arch: str) -> list[bytes]:
    """The profile for one ABI: a search by syscall number, every path ends in a return.

    A linear list of ~380 allowed syscalls would cost a syscall near its end
    ~760 instructions; the search takes ~10.
    """
    default: _Chain = (((), _action(profile.default_action, profile.default_errno_ret)),)
    chains = _chains(profile, arch)
    segments: list[tuple[int, _Chain]] = []

    def add(first: int, chain: _Chain) -> None:
        if not segments or segments[-1][1] != chain:  # neighbours alike: one segment
            segments.append((first, chain))

    after = 0
    for nr in sorted(chains):
        if nr > after:
            add(after, default)
        add(nr, chains[nr])
        after = nr + 1
    add(after, default)
    if arch == "SCMP_ARCH_X86_64":
        # x32 ABI syscalls (nr | 0x40000000) are refused outright.
        assert after <= _X32_SYSCALL_BIT
        add(_X32_SYSCALL_BIT, (((), _RET_ERRNO | errno.EPERM),))
    return [_insn(_LD_W_ABS, 0, 0, 0), *_tree(segments, arch != "SCMP_ARCH_X86")]


# Compiled programs by profile. Compiling the default takes ~1 ms; the fork
# server compiles it once for Docker's capability set (warm_up), and every
# container it forks that keeps that set finds it here.
_COMPILED: dict[object, bytes] = {}


def warm_up() -> None:
    """Compile the default filter for Docker's default capabilities, if this host has one."""
    if os.uname().machine in _HOST_ARCHES:
        compile_filter(default_profile(capabilities.DEFAULT_CAPS))


def _key(profile: Seccomp, machine: str) -> object:
    return (machine, profile.default_action, profile.default_errno_ret,
            tuple((tuple(r.names), r.action, r.errno_ret,
                   tuple((a.index, a.value, a.value_two, a.op) for a in r.args))
                  for r in profile.syscalls))


def compile_filter(profile: Seccomp, host_arch: str | None = None) -> bytes:
    """Classic BPF for the host's ABIs; any other ABI gets ENOSYS."""
    machine = host_arch or os.uname().machine
    key = _key(profile, machine)
    code = _COMPILED.get(key)
    if code is None:
        code = _COMPILED[key] = _compile(profile, machine)
    return code


def _compile(profile: Seccomp, machine: str) -> bytes:
    arches = _HOST_ARCHES.get(machine)
    if not arches:
        raise RlError(f"seccomp: architecture {machine} is not "
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
