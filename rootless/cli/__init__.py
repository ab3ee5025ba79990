"""The click face: flags become the engine's typed options; results become
tables, JSON or --format templates; errors become docker's one `Error:` line
and exit code. The only package that imports click or rich.
"""
