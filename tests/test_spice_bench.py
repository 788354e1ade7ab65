"""The AC bench (bench version 2) against an independently formulated one, on designs the old
bench (1e12 H / 1e12 F DC loop, + input driven alone) got wrong, and the operating-point output.

The independent bench uses no VCVS and no replica: (1) the op-amp as a unity-gain buffer, solved
with ``op``, gives the inverting input's DC level; (2) an open-loop copy with plain DC sources at
those levels gives the DC gains from each input with ``tf``: Adm = (A+ - A-)/2, Acm = A+ + A-.
"""
import numpy as np
import pytest

from spice import simulate
from spice.circuits import _header
from spice.operating_point import SATURATION, op_columns
from spice.processes import PROCESSES
from spice.shared_lib import engine
from tests.spice_helpers import D2, D5, needs_exe, needs_lib

# Shipped rows the old bench mis-measured (values in the shipped files before bench version 2).
TWO_STAGE_T412 = dict(w1=11.0, w2=37.0, w3=4.0, w4=18.0, w5=31.0, l1=2.0, l2=1.5, l3=2.0, l4=0.5, l5=0.5,
                      cc=1.052754e-12, cr=42806.77, ibias=5e-06)      # cmrr was 0.35, true ~6e3
TWO_STAGE_S5674 = dict(w1=41.5, w2=37.0, w3=2.5, w4=48.5, w5=36.0, l1=1.0, l2=1.5, l3=0.5, l4=0.5, l5=2.0,
                       cc=4.904905e-13, cr=1959.128, ibias=5e-06)     # cmrr was 2.76, true ~5e3
TWO_STAGE_T93 = dict(w1=5.5, w2=0.5, w3=22.5, w4=7.0, w5=1.5, l1=2.0, l2=1.0, l3=0.5, l4=1.5, l5=1.0,
                     cc=4.773267e-13, cr=10269.84, ibias=1.5e-05)     # cmrr < 1: dc_gain was Adm + Acm/2
FIVE_T_T941 = dict(w1=44.5, w2=4.0, w3=12.0, l1=2.0, l2=2.0, l3=2.0, ibias=5e-06)  # cmrr was capped at 4.2e5
CASES = [("two_stage_opamp", "B", TWO_STAGE_T412), ("two_stage_opamp", "A", TWO_STAGE_S5674),
         ("two_stage_opamp", "B", TWO_STAGE_T93), ("5t_opamp", "B", FIVE_T_T941),
         ("5t_opamp", "A", D5), ("two_stage_opamp", "A", D2)]


def _independent_gains(opamp, design, proc):
    """(|Adm|, |Acm|) at DC from the two-step plain-source bench described above."""
    eng = engine()
    eng.load(_header(opamp, design, proc, None, "buffer, DC level") + [
        f"vp inp 0 dc {proc.vcm}", "xb inp out out vdd 0 opamp", ".end"])
    assert not eng.errors and eng.run("op")
    vo = float(eng.vector("out").real[0])
    gains = {}
    for src in ("vp", "vn"):
        eng.load(_header(opamp, design, proc, None, "open loop, DC gains") + [
            f"vp inp 0 dc {proc.vcm}", f"vn inn 0 dc {vo!r}", "xo inp inn out vdd 0 opamp", ".end"])
        assert not eng.errors and eng.run(f"tf v(out) {src}")
        gains[src] = float(eng.vector("transfer_function").real[0])
    return abs(gains["vp"] - gains["vn"]) / 2, abs(gains["vp"] + gains["vn"])


@needs_lib
@pytest.mark.parametrize("opamp,process,design", CASES)
def test_gain_and_cmrr_agree_with_an_independent_bench(opamp, process, design):
    y = simulate(opamp, design, process).iloc[0]
    assert y["status"] == "ok"
    adm, acm = _independent_gains(opamp, design, PROCESSES[process])
    assert y["dc_gain"] == pytest.approx(adm, rel=2e-3)
    assert y["cmrr"] == pytest.approx(adm / acm, rel=2e-2)


@needs_lib
def test_the_old_benchs_failures_are_gone():
    y = simulate("two_stage_opamp", [TWO_STAGE_T412, TWO_STAGE_T93], "B")
    assert y.loc[0, "cmrr"] > 1000            # was 0.35 (an artifact of the 1e12 elements)
    assert y.loc[1, "dc_gain"] < 300          # was 424 = Adm + Acm/2 with the + input driven alone
    assert simulate("two_stage_opamp", TWO_STAGE_S5674, "A").loc[0, "cmrr"] > 1000   # was 2.76


@needs_lib
def test_a_huge_cmrr_is_not_capped():
    # The old bench saturated near 1e6; the well-conditioned one resolves ~7e8.
    assert simulate("5t_opamp", FIVE_T_T941, "B").loc[0, "cmrr"] > 1e8


@needs_lib
def test_operating_point_is_physical():
    y = simulate("5t_opamp", [D5, dict(D5, ibias=20e-6)], "A", op=True)
    assert list(y.columns[7:]) == op_columns("5t_opamp")
    for i, ibias in enumerate((10e-6, 20e-6)):
        r = y.iloc[i]
        # bias branch + tail (mirrored 1:1) ~ 2 ibias; each input device carries half the tail.
        assert r["supply_current"] == pytest.approx(2 * ibias, rel=0.1)
        assert r["power"] == pytest.approx(1.8 * r["supply_current"])
        assert r["m1_id"] == pytest.approx(r["m5_id"] / 2, rel=0.05)
        assert r["m3_id"] == pytest.approx(r["m1_id"], rel=1e-4)  # one branch (junction leakage aside)
        assert 5 < r["m1_gm"] / r["m1_id"] < 30                                # gm/id, 1/V
        assert r["m1_gm"] / r["m1_gds"] > 20
        assert all(r[f"m{k}_region"] == SATURATION for k in range(1, 7))
    assert y.loc[1, "m1_gm"] > y.loc[0, "m1_gm"]


@needs_lib
@needs_exe
def test_operating_point_is_the_same_from_ngspice_batch():
    a = simulate("two_stage_opamp", D2, "B", op=True, backend="shared")
    b = simulate("two_stage_opamp", D2, "B", op=True, backend="batch")
    num = [c for c in op_columns("two_stage_opamp") if not c.endswith("_region")]
    np.testing.assert_allclose(a[num].to_numpy(float), b[num].to_numpy(float), rtol=1e-6)
    assert (a.filter(like="_region") == b.filter(like="_region")).all(axis=None)


@needs_lib
def test_a_design_without_an_operating_point_is_a_failed_row_never_a_number(monkeypatch):
    from spice.shared_lib import SharedNgspice
    real_run = SharedNgspice.run
    # What ngspice reports when the DC solution fails: the analysis aborts without a new plot.
    monkeypatch.setattr(SharedNgspice, "run", lambda self, a: False if a.startswith(("op", "ac")) else real_run(self, a))
    for op in (False, True):
        y = simulate("5t_opamp", D5, "B", op=op)
        assert y.loc[0, "status"] == "nonconvergence"
        assert y.iloc[0, :5].isna().all()
        if op:
            assert y[[c for c in op_columns("5t_opamp") if not c.endswith("_region")]].isna().all(axis=None)
