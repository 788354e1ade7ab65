"""ngspice testbenches, processes and the dataset generator.  Knows nothing about ML.

    from spice import simulate
    simulate("5t_opamp", {"w1": 10, "w2": 10, "w3": 10, "l1": 1, "l2": 1, "l3": 1, "ibias": 1e-5}, "A")
    simulate("two_stage_opamp", candidates_df, DOMAIN_PROCESS["target"])   # verify in process B
"""
from spice.circuits import FEATURES, OPAMPS
from spice.measure import METRICS, STATUSES
from spice.processes import DOMAIN_PROCESS
from spice.simulate import simulate

__all__ = ["simulate", "FEATURES", "OPAMPS", "METRICS", "STATUSES", "DOMAIN_PROCESS"]
