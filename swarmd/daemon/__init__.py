"""The site daemon: the one place that wires ledger, transport, train and merge into rounds.
Operator tooling the running daemon never calls lives above it, in swarmd/ops.

app.py        Daemon: builds and wires everything (startup / main_loop / shutdown)
lifecycle.py  serve(): signals, bounded shutdown, JSON logs
rounds.py     RoundDriver: the order of a round, the committer side, dissemination, evaluation
leader.py     leading a term (collect, merge, finalize) and the transport.Handler answers
plumbing.py   chain thread and benign reverts, sleeps and nudges, phases, member list
gossip.py     spreading finalized models (announce, fetch, serve, pull)
exchange.py   one term's inbound updates folded into the merge rule
ports.py      Transport and Trainer: what the daemon needs of the node and the trainer
store.py      journal.json and the content-addressed model store
site.py       this site's identity, ledger client and the task-binding check at startup
state.py, metrics.py, control.py, notify.py, rss.py: status, Prometheus, control socket,
              systemd, the leader's peak RSS
"""
