"""Filesystem helpers (FUSE, overlay) for rl containers."""
