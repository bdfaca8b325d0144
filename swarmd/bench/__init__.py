"""`swarm bench`: measured ratios and throughputs of each subsystem (never a timed test).

One module per bench measures, judges its goals and renders its tables and plots: `chain`,
`transport`, `train`, `learning`, `round` (measuring) with `round_report` (goals, tables, plot),
`attack` (a member's flood and a stranger's frames against real daemons), and `fuzz` (hypothesis
at every boundary) with its registry `fuzz_targets` and strategies `fuzz_inputs`.
Each hands a `report.Report` to `report.write_report`, which writes <name>.json and <name>.md;
`swarmd.cli.bench_cmd` only parses options, runs a bench under a progress bar and says what it wrote.
"""
