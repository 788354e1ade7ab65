"""Active learning: choose which target-process designs to simulate next (``python -m active``).

``acquisition``: the rules that pick a batch from a candidate pool; ``choose``: a round's batch from the
previous round's ensemble and those rules; ``given``: the user's own B designs (``--init-from``) read and checked;
``ledger``: every simulated design on disk with its provenance (round, rule, seed, status), the resume point of a
loop; ``plots``: the learning curve.
"""
