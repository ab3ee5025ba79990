/* Makes the syscalls test_seccomp.py asks for, from inside a container, and
 * prints "name=ok" or "name=ERRNO" for each, so the kernel's verdict under
 * rl's filter is what the test sees. Built at test time: gcc -static. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define AF_ALG_ 38
#define AF_VSOCK_ 40
#define HIGH (1UL << 32) /* set in a 64-bit register, ignored by the kernel */

/* A static (non-PIE) binary's data lies below 4 GiB, so the i386 ABI can
 * take its address. io_uring_params is 120 bytes. */
static unsigned char uring_params[120];

static long result(long r) { return r < 0 ? -errno : r; }

#ifdef __x86_64__
/* The i386 ABI from a 64-bit process: int 0x80, number in eax, arguments in
 * ebx, ecx, edx (the whole 64-bit registers are set; the kernel reads 32 bits). */
static long i386(long nr, long a, long b, long c) {
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c)
                     : "memory", "r8", "r9", "r10", "r11");
    return r;
}
#endif

static void *nothing(void *arg) { return arg; }

static long probe(const char *name) {
    if (!strcmp(name, "io_uring_setup"))
        return result(syscall(SYS_io_uring_setup, 1, uring_params));
    if (!strcmp(name, "socket_inet"))
        return result(socket(AF_INET, SOCK_STREAM, 0));
    if (!strcmp(name, "socket_alg"))
        return result(socket(AF_ALG_, SOCK_SEQPACKET, 0));
    if (!strcmp(name, "socket_vsock"))
        return result(socket(AF_VSOCK_, SOCK_STREAM, 0));
    if (!strcmp(name, "socket_vsock_high"))
        return result(syscall(SYS_socket, HIGH | AF_VSOCK_, SOCK_STREAM, 0));
    if (!strcmp(name, "personality_query"))
        return result(syscall(SYS_personality, 0xffffffffUL));
    if (!strcmp(name, "personality_linux32"))
        return result(syscall(SYS_personality, 0x0008UL));
    if (!strcmp(name, "personality_no_randomize"))
        return result(syscall(SYS_personality, 0x0040000UL));
    if (!strcmp(name, "personality_read_implies_exec"))
        return result(syscall(SYS_personality, 0x0400000UL));
    if (!strcmp(name, "pidfd_getfd")) {
        long pidfd = syscall(SYS_pidfd_open, getpid(), 0);
        if (pidfd < 0)
            return -errno;
        return result(syscall(SYS_pidfd_getfd, pidfd, 1, 0));
    }
    if (!strcmp(name, "clone3")) {
        struct clone_args args = {.exit_signal = SIGCHLD};
        long pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0)
            _exit(0);
        if (pid > 0)
            waitpid((pid_t)pid, NULL, 0);
        return result(pid);
    }
    if (!strcmp(name, "thread")) { /* glibc tries clone3, then clone */
        pthread_t t;
        int e = pthread_create(&t, NULL, nothing, NULL);
        return e ? -e : pthread_join(t, NULL);
    }
#ifdef __x86_64__
    if (!strcmp(name, "i386_getpid"))
        return i386(20, 0, 0, 0);
    if (!strcmp(name, "i386_io_uring_setup"))
        return i386(425, 1, (long)(uintptr_t)uring_params, 0);
    if (!strcmp(name, "i386_socket_inet"))
        return i386(359, AF_INET, SOCK_STREAM, 0);
    if (!strcmp(name, "i386_socket_vsock"))
        return i386(359, AF_VSOCK_, SOCK_STREAM, 0);
    if (!strcmp(name, "i386_socket_vsock_high"))
        return i386(359, HIGH | AF_VSOCK_, SOCK_STREAM, 0);
    if (!strcmp(name, "i386_personality_no_randomize"))
        return i386(136, 0x0040000, 0, 0);
    if (!strcmp(name, "i386_pidfd_getfd")) {
        long pidfd = syscall(SYS_pidfd_open, getpid(), 0);
        if (pidfd < 0)
            return -errno;
        return i386(438, pidfd, 1, 0);
    }
#endif
    return -ENOTSUP;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        long r = probe(argv[i]);
        printf("%s=%s\n", argv[i], r >= 0 ? "ok" : strerrorname_np((int)-r));
    }
    return 0;
}
