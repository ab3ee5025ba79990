"""Mounting and serving a FUSE file system without fusermount.

The caller must be root in a user namespace that owns its mount namespace
(as a container's processes are). It opens /dev/fuse itself and passes the
fd to mount(2) (``fd=N``); libfuse accepts such a pre-mounted fd when given
the mount point ``/dev/fd/N``, so pyfuse3 never runs fusermount.

:func:`serve` is a trio task, so any trio program that is root in the user
namespace (a container supervisor, the standalone server below) can run it
next to its other tasks. It returns when the file system is unmounted.

If the serving process dies, the kernel aborts the connection as soon as the
last /dev/fuse fd is closed, and every access then fails with ENOTCONN
instead of hanging; that is why the fd is close-on-exec and why a process
that forks the server must close its own copy.
"""

from __future__ import annotations

import logging
import os
import select
import stat
from typing import Any

import pyfuse3
import trio

from rootless import syscalls as sc

MAX_READ = 1 << 20  # the kernel's largest FUSE request (256 pages)
FSTYPE = "fuse.rl-overlay"


def mount(target: str, source: str = "rl-overlay") -> int:
    """Mount a FUSE file system on *target*; return the /dev/fuse fd to serve."""
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        mode = stat.S_IFMT(os.stat(target).st_mode)
        opts = (f"fd={fd},rootmode={mode:o},user_id={os.geteuid()},group_id={os.getegid()},"
                f"default_permissions,allow_other,max_read={MAX_READ}")
        sc.mount(source, target, FSTYPE, 0, opts)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _DropAbandonedReplies(logging.Filter):
    """pyfuse3 logs an error when the kernel no longer waits for a reply (ENOENT:
    the request was interrupted, or the mount went away under a pending
    release). Nothing was lost, so it is not worth a line on stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "fuse_reply_* failed with No such file or directory" not in record.getMessage()


logging.getLogger("pyfuse3").addFilter(_DropAbandonedReplies())


class _Lowlevel:
    """What pyfuse3's request loop calls in trio.lowlevel, with a fast wait_readable."""

    YIELD_EVERY = 64  # requests served back to back before other trio tasks get a turn

    def __init__(self, fd: int) -> None:
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._served = 0
        self.current_task = trio.lowlevel.current_task
        self.current_trio_token = trio.lowlevel.current_trio_token
        self.notify_closing = trio.lowlevel.notify_closing

    async def wait_readable(self, fd: int) -> None:
        # A request already waiting is taken at once: a trip through trio's
        # scheduler (two epoll_ctl, one epoll_wait and a task switch) costs
        # more than most requests. Every YIELD_EVERY requests, and whenever
        # the queue is empty, trio waits as usual, so its other tasks (the
        # signal handler) still run and cancellation still works.
        self._served += 1
        if self._served % self.YIELD_EVERY and self._poll.poll(0):
            return
        await trio.lowlevel.wait_readable(fd)


class _UncontendedLock:
    """pyfuse3's read lock, for a loop with one worker: nobody else ever takes it.

    (trio.Lock would cost a checkpoint, a pass through the scheduler, per request.)
    """

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


class _FastTrio:
    """The ``trio`` that pyfuse3's request loop sees: trio itself, but for the
    per-request waiting. pyfuse3 looks the name up at run time, which is how its
    own asyncio mode swaps the event loop too."""

    def __init__(self, fd: int) -> None:
        self.lowlevel = _Lowlevel(fd)
        self.Lock = _UncontendedLock
        self.ClosedResourceError = trio.ClosedResourceError
        self.open_nursery = trio.open_nursery

    def __getattr__(self, name: str) -> Any:
        return getattr(trio, name)


async def serve(fd: int, ops: pyfuse3.Operations, *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve *ops* on the mounted fd until the mount goes away; closes *fd*.

    pyfuse3 keeps its session in globals: one served file system per process.
    Requests are served one at a time, by one worker: the overlay's handlers
    never wait (they are short local syscalls), so more workers would only
    add task switches.
    """
    pyfuse3.init(ops, f"/dev/fd/{fd}", set())
    pyfuse3.trio = _FastTrio(fd)  # type: ignore[attr-defined]
    try:
        task_status.started()
        await pyfuse3.main(min_tasks=1, max_tasks=1)
    finally:
        pyfuse3.trio = trio  # type: ignore[attr-defined]
        pyfuse3.close(unmount=False)  # closes fd; unmounting is the mounter's job


def unmount(target: str) -> None:
    """Detach *target*: gone from the mount table at once, even while busy."""
    sc.umount2(target, sc.MNT_DETACH)
