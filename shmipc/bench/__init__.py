"""``python -m shmipc bench``: shmipc against its peers, beside the machine's limits.

Scenarios: SPSC throughput over message sizes, 64-byte ping-pong round
trips, N×M producers and consumers, and numpy frame handoff by copy and
zero-copy.  Every message is sequence-checked by its receiver; every child
process is joined with a deadline.  See ``python -m shmipc.bench --help``.
"""
from .cli import main

__all__ = ["main"]
