"""rl: a rootless container runtime.

Modules, one per concept: _syscalls (ctypes syscalls), spec (OCI runtime spec
as data), idmap, mounts, capabilities, users, process, container (namespaces
and PID 1), supervisor (per-container trio supervisor), forkserver, store
(container records), api (the library API), cli (the command line).
"""

__version__ = "0.1.0"
