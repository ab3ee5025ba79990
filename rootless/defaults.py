"""Defaults shared by the CLI and the library, in a module light enough for rl's start path."""

NETWORK_MODES = ("slirp4netns", "pasta", "host", "none", "container")
DEFAULT_NETWORK = "slirp4netns"  # as podman rootless: the container's own NIC (netstack/)
