"""The site daemon: the one place that wires ledger, transport, train and merge into rounds."""
