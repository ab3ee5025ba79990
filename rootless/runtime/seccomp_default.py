"""rl's default seccomp policy and the syscall numbers it is compiled with (data only).

The policy states the facts of Docker's default profile (moby/profiles,
seccomp/default.json) in rl's own terms: everything not allowed here is
refused with EPERM; what is allowed is a set of names, some only with a
capability, and three syscalls only with certain arguments. seccomp.py turns
it into OCI data for the container's capabilities. Docker's rules for ABIs
rl does not filter (arm32, ppc, s390, mips, riscv) are left out: rl refuses
those ABIs outright. Docker allows process_vm_readv, process_vm_writev and
ptrace to everyone from Linux 4.8 on (seccomp can no longer be bypassed by
ptrace); rl needs 5.11, so they are simply allowed.

The numbers are the kernel's (arch/x86/entry/syscalls/syscall_64.tbl and
syscall_32.tbl, scripts/syscall.tbl for arm64) up to Linux 6.18, so a name
newer than the host's libseccomp still gets its number. Each line is a
first number followed by the names of it and the numbers after it; "-" is an
unassigned number.
"""

from __future__ import annotations


def _names(text: str) -> list[str]:
    return text.split()


# Allowed to every container (on the ABIs that have them).
ALLOWED = _names("""
    _llseek _newselect accept accept4 access adjtimex alarm arch_prctl bind brk cachestat
    capget capset chdir chmod chown chown32 clock_adjtime clock_adjtime64 clock_getres
    clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64
    close close_range connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1
    epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd
    eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64
    fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl
    fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
    fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64
    futex_wait futex_waitv futex_wake futimesat get_robust_list get_thread_area getcpu
    getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups
    getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom
    getresgid getresgid32 getresuid getresuid32 getrlimit getrusage getsid getsockname
    getsockopt gettid gettimeofday getuid getuid32 getxattr getxattrat inotify_add_watch
    inotify_init inotify_init1 inotify_rm_watch io_cancel io_destroy io_getevents
    io_pgetevents io_pgetevents_time64 io_setup io_submit ioctl ioprio_get ioprio_set ipc
    kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32
    lgetxattr link linkat listen listmount listxattr listxattrat llistxattr lremovexattr
    lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier memfd_create
    memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2
    modify_ldt mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
    mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl
    msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep
    newfstatat open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc
    pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64
    process_mrelease process_vm_readv process_vm_writev pselect6 pselect6_time64 ptrace
    pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recvfrom recvmmsg
    recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename renameat
    renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask
    rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
    rt_tgsigqueueinfo sched_get_priority_max sched_get_priority_min sched_getaffinity
    sched_getattr sched_getparam sched_getscheduler sched_rr_get_interval
    sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
    sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
    semtimedop_time64 sendfile sendfile64 sendmmsg sendmsg sendto set_robust_list
    set_thread_area set_tid_address setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32
    setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid
    setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit setsid setsockopt setuid
    setuid32 setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd
    signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64
    statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
    timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
    timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
    timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
    uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid
    write writev
""")

# Allowed only to a container that holds the capability.
WITH_CAPABILITY: dict[str, list[str]] = {
    "CAP_SYS_ADMIN": _names("""
    bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie
    lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount mount_setattr move_mount
    open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog
    umount umount2 unshare
    """),
    "CAP_BPF": ["bpf"],
    "CAP_DAC_READ_SEARCH": ["open_by_handle_at"],
    "CAP_PERFMON": ["perf_event_open"],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_CHROOT": ["chroot"],
    "CAP_SYS_MODULE": ["delete_module", "finit_module", "init_module"],
    "CAP_SYS_NICE": ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_PTRACE": ["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv",
                       "process_vm_writev", "ptrace"],
    "CAP_SYS_RAWIO": ["ioperm", "iopl"],
    "CAP_SYS_TIME": ["clock_settime", "clock_settime64", "settimeofday", "stime"],
    "CAP_SYS_TTY_CONFIG": ["vhangup"],
    "CAP_SYSLOG": ["syslog"],
}

# socket(domain, ...): every address family but AF_ALG (the kernel's crypto
# API) and AF_VSOCK (the host or hypervisor).
REFUSED_SOCKET_FAMILIES = [38, 40]

# personality(persona): only these, as Docker: PER_LINUX, PER_LINUX32,
# UNAME26, both, and 0xffffffff, which only asks for the current persona.
# Refused are the flags that weaken the process, such as ADDR_NO_RANDOMIZE
# and READ_IMPLIES_EXEC.
PERSONAS = [0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF]

# Without CAP_SYS_ADMIN: clone() only without namespace flags (NEWNS,
# NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET), and clone3(), whose
# flags BPF cannot read, answers ENOSYS so that libc falls back to clone().
CLONE_NAMESPACE_FLAGS = 0x7E020000


def _table(text: str) -> dict[str, int]:
    numbers = {}
    for line in text.split("\n"):
        if not line.strip():
            continue
        first, *names = line.split()
        for nr, name in enumerate(names, int(first)):
            if name != "-":
                numbers[name] = nr
    return numbers


# Since Linux 5.1 every architecture numbers its new syscalls alike, from 424.
_UNIFIED = """
424 pidfd_send_signal io_uring_setup io_uring_enter io_uring_register open_tree move_mount
430 fsopen fsconfig fsmount fspick pidfd_open clone3 close_range openat2 pidfd_getfd
439 faccessat2 process_madvise epoll_pwait2 mount_setattr quotactl_fd
444 landlock_create_ruleset landlock_add_rule landlock_restrict_self memfd_secret
448 process_mrelease futex_waitv set_mempolicy_home_node cachestat fchmodat2
453 map_shadow_stack futex_wake futex_wait futex_requeue statmount listmount
459 lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal setxattrat getxattrat
465 listxattrat removexattrat open_tree_attr file_getattr file_setattr listns
"""

NUMBERS: dict[str, dict[str, int]] = {
    "SCMP_ARCH_X86_64": _table("""
0 read write open close stat fstat lstat poll lseek mmap mprotect munmap brk rt_sigaction
14 rt_sigprocmask rt_sigreturn ioctl pread64 pwrite64 readv writev access pipe select
24 sched_yield mremap msync mincore madvise shmget shmat shmctl dup dup2 pause nanosleep
36 getitimer alarm setitimer getpid sendfile socket connect accept sendto recvfrom sendmsg
47 recvmsg shutdown bind listen getsockname getpeername socketpair setsockopt getsockopt
56 clone fork vfork execve exit wait4 kill uname semget semop semctl shmdt msgget msgsnd
70 msgrcv msgctl fcntl flock fsync fdatasync truncate ftruncate getdents getcwd chdir fchdir
82 rename mkdir rmdir creat link unlink symlink readlink chmod fchmod chown fchown lchown
95 umask gettimeofday getrlimit getrusage sysinfo times ptrace getuid syslog getgid setuid
106 setgid geteuid getegid setpgid getppid getpgrp setsid setreuid setregid getgroups
116 setgroups setresuid getresuid setresgid getresgid getpgid setfsuid setfsgid getsid
125 capget capset rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend sigaltstack
132 utime mknod uselib personality ustat statfs fstatfs sysfs getpriority setpriority
142 sched_setparam sched_getparam sched_setscheduler sched_getscheduler
146 sched_get_priority_max sched_get_priority_min sched_rr_get_interval mlock munlock
151 mlockall munlockall vhangup modify_ldt pivot_root _sysctl prctl arch_prctl adjtimex
160 setrlimit chroot sync acct settimeofday mount umount2 swapon swapoff reboot sethostname
171 setdomainname iopl ioperm create_module init_module delete_module get_kernel_syms
178 query_module quotactl nfsservctl getpmsg putpmsg afs_syscall tuxcall security gettid
187 readahead setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr listxattr llistxattr
196 flistxattr removexattr lremovexattr fremovexattr tkill time futex sched_setaffinity
204 sched_getaffinity set_thread_area io_setup io_destroy io_getevents io_submit io_cancel
211 get_thread_area lookup_dcookie epoll_create epoll_ctl_old epoll_wait_old
216 remap_file_pages getdents64 set_tid_address restart_syscall semtimedop fadvise64
222 timer_create timer_settime timer_gettime timer_getoverrun timer_delete clock_settime
228 clock_gettime clock_getres clock_nanosleep exit_group epoll_wait epoll_ctl tgkill utimes
236 vserver mbind set_mempolicy get_mempolicy mq_open mq_unlink mq_timedsend mq_timedreceive
244 mq_notify mq_getsetattr kexec_load waitid add_key request_key keyctl ioprio_set
252 ioprio_get inotify_init inotify_add_watch inotify_rm_watch migrate_pages openat mkdirat
259 mknodat fchownat futimesat newfstatat unlinkat renameat linkat symlinkat readlinkat
268 fchmodat faccessat pselect6 ppoll unshare set_robust_list get_robust_list splice tee
277 sync_file_range vmsplice move_pages utimensat epoll_pwait signalfd timerfd_create
284 eventfd fallocate timerfd_settime timerfd_gettime accept4 signalfd4 eventfd2
291 epoll_create1 dup3 pipe2 inotify_init1 preadv pwritev rt_tgsigqueueinfo perf_event_open
299 recvmmsg fanotify_init fanotify_mark prlimit64 name_to_handle_at open_by_handle_at
305 clock_adjtime syncfs sendmmsg setns getcpu process_vm_readv process_vm_writev kcmp
313 finit_module sched_setattr sched_getattr renameat2 seccomp getrandom memfd_create
320 kexec_file_load bpf execveat userfaultfd membarrier mlock2 copy_file_range preadv2
328 pwritev2 pkey_mprotect pkey_alloc pkey_free statx io_pgetevents rseq uretprobe uprobe
""" + _UNIFIED),
    "SCMP_ARCH_X86": _table("""
0 restart_syscall exit fork read write open close waitpid creat link unlink execve chdir
13 time mknod chmod lchown break oldstat lseek getpid mount umount setuid getuid stime
26 ptrace alarm oldfstat pause utime stty gtty access nice ftime sync kill rename mkdir
40 rmdir dup pipe times prof brk setgid getgid signal geteuid getegid acct umount2 lock
54 ioctl fcntl mpx setpgid ulimit oldolduname umask chroot ustat dup2 getppid getpgrp setsid
67 sigaction sgetmask ssetmask setreuid setregid sigsuspend sigpending sethostname setrlimit
76 getrlimit getrusage gettimeofday settimeofday getgroups setgroups select symlink oldlstat
85 readlink uselib swapon reboot readdir mmap munmap truncate ftruncate fchmod fchown
96 getpriority setpriority profil statfs fstatfs ioperm socketcall syslog setitimer
105 getitimer stat lstat fstat olduname iopl vhangup idle vm86old wait4 swapoff sysinfo ipc
118 fsync sigreturn clone setdomainname uname modify_ldt adjtimex mprotect sigprocmask
127 create_module init_module delete_module get_kernel_syms quotactl getpgid fchdir bdflush
135 sysfs personality afs_syscall setfsuid setfsgid _llseek getdents _newselect flock msync
145 readv writev getsid fdatasync _sysctl mlock munlock mlockall munlockall sched_setparam
155 sched_getparam sched_setscheduler sched_getscheduler sched_yield sched_get_priority_max
160 sched_get_priority_min sched_rr_get_interval nanosleep mremap setresuid getresuid vm86
167 query_module poll nfsservctl setresgid getresgid prctl rt_sigreturn rt_sigaction
175 rt_sigprocmask rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend pread64
181 pwrite64 chown getcwd capget capset sigaltstack sendfile getpmsg putpmsg vfork
191 ugetrlimit mmap2 truncate64 ftruncate64 stat64 lstat64 fstat64 lchown32 getuid32
200 getgid32 geteuid32 getegid32 setreuid32 setregid32 getgroups32 setgroups32 fchown32
208 setresuid32 getresuid32 setresgid32 getresgid32 chown32 setuid32 setgid32 setfsuid32
216 setfsgid32 pivot_root mincore madvise getdents64 fcntl64 - - gettid readahead setxattr
227 lsetxattr fsetxattr getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr
235 removexattr lremovexattr fremovexattr tkill sendfile64 futex sched_setaffinity
242 sched_getaffinity set_thread_area get_thread_area io_setup io_destroy io_getevents
248 io_submit io_cancel fadvise64 - exit_group lookup_dcookie epoll_create epoll_ctl
256 epoll_wait remap_file_pages set_tid_address timer_create timer_settime timer_gettime
262 timer_getoverrun timer_delete clock_settime clock_gettime clock_getres clock_nanosleep
268 statfs64 fstatfs64 tgkill utimes fadvise64_64 vserver mbind get_mempolicy set_mempolicy
277 mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr kexec_load waitid
286 add_key request_key keyctl ioprio_set ioprio_get inotify_init inotify_add_watch
293 inotify_rm_watch migrate_pages openat mkdirat mknodat fchownat futimesat fstatat64
301 unlinkat renameat linkat symlinkat readlinkat fchmodat faccessat pselect6 ppoll unshare
311 set_robust_list get_robust_list splice sync_file_range tee vmsplice move_pages getcpu
319 epoll_pwait utimensat signalfd timerfd_create eventfd fallocate timerfd_settime
326 timerfd_gettime signalfd4 eventfd2 epoll_create1 dup3 pipe2 inotify_init1 preadv pwritev
335 rt_tgsigqueueinfo perf_event_open recvmmsg fanotify_init fanotify_mark prlimit64
341 name_to_handle_at open_by_handle_at clock_adjtime syncfs sendmmsg setns process_vm_readv
348 process_vm_writev kcmp finit_module sched_setattr sched_getattr renameat2 seccomp
355 getrandom memfd_create bpf execveat socket socketpair bind connect listen accept4
365 getsockopt setsockopt getsockname getpeername sendto sendmsg recvfrom recvmsg shutdown
374 userfaultfd membarrier mlock2 copy_file_range preadv2 pwritev2 pkey_mprotect pkey_alloc
382 pkey_free statx arch_prctl io_pgetevents rseq
393 semget semctl shmget shmctl shmat shmdt msgget msgsnd msgrcv msgctl clock_gettime64
404 clock_settime64 clock_adjtime64 clock_getres_time64 clock_nanosleep_time64
408 timer_gettime64 timer_settime64 timerfd_gettime64 timerfd_settime64 utimensat_time64
413 pselect6_time64 ppoll_time64 - io_pgetevents_time64 recvmmsg_time64 mq_timedsend_time64
419 mq_timedreceive_time64 semtimedop_time64 rt_sigtimedwait_time64 futex_time64
423 sched_rr_get_interval_time64
""" + _UNIFIED),
    "SCMP_ARCH_AARCH64": _table("""
0 io_setup io_destroy io_submit io_cancel io_getevents setxattr lsetxattr fsetxattr getxattr
9 lgetxattr fgetxattr listxattr llistxattr flistxattr removexattr lremovexattr fremovexattr
17 getcwd lookup_dcookie eventfd2 epoll_create1 epoll_ctl epoll_pwait dup dup3 fcntl
26 inotify_init1 inotify_add_watch inotify_rm_watch ioctl ioprio_set ioprio_get flock
33 mknodat mkdirat unlinkat symlinkat linkat renameat umount2 mount pivot_root nfsservctl
43 statfs fstatfs truncate ftruncate fallocate faccessat chdir fchdir chroot fchmod fchmodat
54 fchownat fchown openat close vhangup pipe2 quotactl getdents64 lseek read write readv
66 writev pread64 pwrite64 preadv pwritev sendfile pselect6 ppoll signalfd4 vmsplice splice
77 tee readlinkat newfstatat fstat sync fsync fdatasync sync_file_range timerfd_create
86 timerfd_settime timerfd_gettime utimensat acct capget capset personality exit exit_group
95 waitid set_tid_address unshare futex set_robust_list get_robust_list nanosleep getitimer
103 setitimer kexec_load init_module delete_module timer_create timer_gettime
109 timer_getoverrun timer_settime timer_delete clock_settime clock_gettime clock_getres
115 clock_nanosleep syslog ptrace sched_setparam sched_setscheduler sched_getscheduler
121 sched_getparam sched_setaffinity sched_getaffinity sched_yield sched_get_priority_max
126 sched_get_priority_min sched_rr_get_interval restart_syscall kill tkill tgkill
132 sigaltstack rt_sigsuspend rt_sigaction rt_sigprocmask rt_sigpending rt_sigtimedwait
138 rt_sigqueueinfo rt_sigreturn setpriority getpriority reboot setregid setgid setreuid
146 setuid setresuid getresuid setresgid getresgid setfsuid setfsgid times setpgid getpgid
156 getsid setsid getgroups setgroups uname sethostname setdomainname getrlimit setrlimit
165 getrusage umask prctl getcpu gettimeofday settimeofday adjtimex getpid getppid getuid
175 geteuid getgid getegid gettid sysinfo mq_open mq_unlink mq_timedsend mq_timedreceive
184 mq_notify mq_getsetattr msgget msgctl msgrcv msgsnd semget semctl semtimedop semop
194 shmget shmctl shmat shmdt socket socketpair bind listen accept connect getsockname
205 getpeername sendto recvfrom setsockopt getsockopt shutdown sendmsg recvmsg readahead brk
215 munmap mremap add_key request_key keyctl clone execve mmap fadvise64 swapon swapoff
226 mprotect msync mlock munlock mlockall munlockall mincore madvise remap_file_pages mbind
236 get_mempolicy set_mempolicy migrate_pages move_pages rt_tgsigqueueinfo perf_event_open
242 accept4 recvmmsg
260 wait4 prlimit64 fanotify_init fanotify_mark name_to_handle_at open_by_handle_at
266 clock_adjtime syncfs setns sendmmsg process_vm_readv process_vm_writev kcmp finit_module
274 sched_setattr sched_getattr renameat2 seccomp getrandom memfd_create bpf execveat
282 userfaultfd membarrier mlock2 copy_file_range preadv2 pwritev2 pkey_mprotect pkey_alloc
290 pkey_free statx io_pgetevents rseq kexec_file_load
""" + _UNIFIED),
}
