"""The engine: docker's semantics over the runtime and the image store, THE library.

Typed options become an OCI spec; container records, their locks and their
lifecycle (create, start, stop, kill, rm, wait, exec) live here, as do the
supervisor, images in use, quotas and info. Every face (the CLI, later the
REST service and the builder) calls these functions: they return data,
raise typed errors (rootless.errors), never print and never read the
calling process's environment or working directory.
"""
