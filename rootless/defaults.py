"""Defaults shared by the CLI and the library, in a module light enough for rl's start path."""

NETWORK_MODES = ("host", "none")
DEFAULT_NETWORK = "host"
