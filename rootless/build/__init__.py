"""The build face: a Dockerfile becomes an image through the engine (`rl build`)."""
