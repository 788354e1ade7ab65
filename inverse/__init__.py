"""Inverse design: the MDN p(x | y), goals, bounds and snapping, the optimiser, SPICE checks.

    python -m inverse_mdn ...      # train / sample the MDN     (inverse/mdn.py)
    python -m inverse_opt ...      # optimise x for a spec      (inverse/goals.py, optimise.py, snap.py, verify.py)
"""
