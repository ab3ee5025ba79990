"""rl's runtime: the runc-like layer, an OCI runtime spec in, a running container out.

It owns the kernel side of a container: namespaces and id maps, mounts and
the root, seccomp, capabilities, rlimits, cgroups and the container's
processes. It knows nothing of images, names, docker-shaped records or
click: what to make comes in as typed OCI data (spec.py), and what happened
goes out as a report line or a typed error. Kept import-free, as every
package of rl's, so that importing a module here costs only that module.
"""
