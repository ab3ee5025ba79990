"""rl-oci: rl's runtime layer as a runc-compatible command line (podman, conmon, Slurm).

A face over rootless.runtime only: it keeps runc-like state under --root and
no docker records (docs/decisions.md, "rl-oci (issue 13)").
"""
