"""`swarm bench`: measured ratios and throughputs of each subsystem (never a timed test)."""
