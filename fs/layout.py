"""How an upper directory records deletions: whiteouts and opaque directories.

One representation for every driver, the one kernel overlayfs itself writes
inside a user namespace (mount option ``userxattr``), so that an upper
directory written by the pyfuse3 overlay can be mounted by the kernel and the
other way round:

* a whiteout is a character device 0/0 (Linux >= 5.8 lets an unprivileged
  user create exactly this device node). The kernel's newer xattr form (a
  zero-size file with ``user.overlay.whiteout`` in a directory marked
  ``opaque=x``, for nested overlays) is neither written nor read;
* an opaque directory carries ``user.overlay.opaque = "y"``.

The ``trusted.overlay.*`` forms of a privileged kernel overlay can't be set
or read without CAP_SYS_ADMIN in the initial namespace, so they are ignored.
OCI layer tars use ``.wh.NAME`` and ``.wh..wh..opq`` instead (see diff.py).
"""

from __future__ import annotations

import os
import stat

XATTR_PREFIX = b"user.overlay."
OPAQUE_XATTR = "user.overlay.opaque"


def is_whiteout_stat(st: os.stat_result) -> bool:
    """Whether an entry of a layer is a whiteout (a character device 0/0)."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def is_opaque(path: str) -> bool:
    return _xattr(path, OPAQUE_XATTR) == b"y"


def make_whiteout(dir_fd: int, name: bytes) -> None:
    os.mknod(name, stat.S_IFCHR | 0o000, 0, dir_fd=dir_fd)


def set_opaque(path: str) -> None:
    os.setxattr(path, OPAQUE_XATTR, b"y", follow_symlinks=False)


OCI_WHITEOUT_PREFIX = ".wh."
OCI_OPAQUE = ".wh..wh..opq"


def convert_oci_whiteouts(layer_dir: str) -> int:
    """Turn an extracted OCI layer's ``.wh.`` files into this layout, in place.

    For the images code: after extracting a layer tar (as root of the user
    namespace, so that xattrs and the 0/0 device can be made), call this so the
    directory can serve as a lower layer of every driver. Returns how many
    markers were converted.
    """
    n = 0
    for dirpath, dirnames, filenames in os.walk(layer_dir):
        for name in filenames:
            if not name.startswith(OCI_WHITEOUT_PREFIX):
                continue
            os.unlink(os.path.join(dirpath, name))
            if name == OCI_OPAQUE:
                set_opaque(dirpath)
            else:
                fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    make_whiteout(fd, os.fsencode(name[len(OCI_WHITEOUT_PREFIX):]))
                finally:
                    os.close(fd)
            n += 1
        # a whited-out directory was a .wh. file, not a dir: nothing to prune
        dirnames.sort()
    return n
