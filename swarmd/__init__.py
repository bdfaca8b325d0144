"""swarmd: peer-to-peer swarm learning for medical imaging."""

__version__ = "0.1.0"
