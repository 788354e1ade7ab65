"""Active learning: choose which target-process designs to simulate next (``python -m active``).

``acquisition``: the rules that pick a batch from a candidate pool; ``ledger``: every simulated design on
disk with its provenance (round, rule, seed, status), the resume point of a loop.
"""
