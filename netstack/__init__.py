"""User-mode networking for rl containers."""
