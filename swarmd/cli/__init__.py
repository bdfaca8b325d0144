"""Command-line entry points: `swarm` (admin and inspection) and `swarmd` (the daemon).

Thin by design: parse arguments, call the packages below, render. Only this package exits
the process, and it turns every SwarmError into one line on stderr and its family's exit code.
"""
