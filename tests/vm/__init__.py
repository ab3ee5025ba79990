"""A qemu guest with a real cgroup v2 kernel, for the quota tests (see guest.py)."""
