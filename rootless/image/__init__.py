"""Images without containers: references, registries, credentials, the
content-addressed store, layers and their diffs, archives and transfer.

The image layer returns data (Image, descriptors, sizes) and raises typed
errors; whether an image is in use by a container is the engine's question,
asked of the engine's records and passed in here.
"""
