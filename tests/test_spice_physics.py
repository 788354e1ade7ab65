"""Physics checks on a few 5t / two-stage designs: the simulator against hand analysis."""
import numpy as np
import pandas as pd
import pytest

from core.errors import ToolkitError
from spice import METRICS, simulate
from spice import circuits
from spice.processes import PROCESS_A
from spice.shared_lib import engine
from tests.spice_helpers import D2, D5, needs_exe, needs_lib, needs_ngspice

DESIGNS_5T = [D5, dict(D5, w1=30.0, l2=2.0, ibias=5e-6), dict(D5, w2=4.0, w3=20.0, l1=0.5, ibias=20e-6)]


@needs_lib
@pytest.mark.parametrize("design", DESIGNS_5T)
def test_5t_dc_gain_matches_gm_over_gds_from_operating_point(design):
    y = simulate("5t_opamp", design, "A").iloc[0]
    assert y["status"] == "ok"
    # Operating point of the DM copy (same bias as the AC analysis), from ngspice itself.
    eng = engine()
    eng.load(circuits.ac_testbench("5t_opamp", design, PROCESS_A))
    assert eng.run("op")
    gm2 = eng.vector("@m.xdm.m2[gm]")[0]
    gds2, gds4 = eng.vector("@m.xdm.m2[gds]")[0], eng.vector("@m.xdm.m4[gds]")[0]
    assert y["dc_gain"] == pytest.approx(gm2 / (gds2 + gds4), rel=0.05)
    # Slew: the tail current (1:1 mirror of ibias) charging the load, less parasitics.
    itail = eng.vector("@m.xdm.m5[id]")[0]
    ratio = y["slewrate_pos"] / (itail / PROCESS_A.cl)
    assert 0.5 <= ratio <= 1.0


@needs_ngspice
def test_metrics_move_the_expected_way():
    y = simulate("5t_opamp", [D5, dict(D5, l2=2.0), dict(D5, ibias=20e-6)], "A")
    assert (y["status"] == "ok").all()
    assert y.loc[1, "dc_gain"] > 1.05 * y.loc[0, "dc_gain"]          # longer load -> less gds
    assert y.loc[2, "slewrate_pos"] > 1.5 * y.loc[0, "slewrate_pos"]  # 2x tail current
    y2 = simulate("two_stage_opamp", [D2, dict(D2, cc=0.3e-12)], "A")
    assert (y2["status"] == "ok").all()
    assert y2.loc[1, "ugf"] > 2 * y2.loc[0, "ugf"]                    # ugf ~ gm1 / cc
    assert y2.loc[1, "phase_margin"] < y2.loc[0, "phase_margin"]       # less compensation
    assert y2.loc[0, "dc_gain"] > 10 * y.loc[0, "dc_gain"]             # two stages


@needs_ngspice
def test_process_b_differs_from_a_on_the_same_designs():
    a = simulate("5t_opamp", DESIGNS_5T, "A")
    b = simulate("5t_opamp", DESIGNS_5T, "B")
    assert (a["status"] == "ok").all() and (b["status"] == "ok").all()
    # 130nm-class: stronger DIBL (pdiblc2) and a lower supply -> lower intrinsic gain.
    assert (b["dc_gain"] < 0.8 * a["dc_gain"]).all()
    assert not np.allclose(a[METRICS].to_numpy(), b[METRICS].to_numpy(), rtol=0.02)


@needs_lib
@needs_exe
def test_batch_fallback_agrees_with_shared_library():
    for opamp, designs in (("5t_opamp", [D5, dict(D5, ibias=20e-6)]), ("two_stage_opamp", [D2])):
        s = simulate(opamp, designs, "B", backend="shared")
        b = simulate(opamp, designs, "B", backend="batch")
        assert (s["status"] == b["status"]).all()
        # Same netlists and transient length; only the ugf interpolation for the length differs.
        np.testing.assert_allclose(s[METRICS].to_numpy(), b[METRICS].to_numpy(), rtol=2e-3)
        assert (s["cmrr_sign"] == b["cmrr_sign"]).all()


@needs_ngspice
def test_failed_design_gets_a_status_and_nan_metrics():
    # A 0.5 um wide, 2 um long load on a 50 um input pair at 20 uA: the buffer cannot follow
    # the full step in process B's 1.2 V supply, or has no unity-gain crossing.
    x = pd.DataFrame([dict(D5, w1=50.0, w2=0.5, l2=2.0, w3=0.5, l3=2.0, ibias=20e-6), D5])
    y = simulate("5t_opamp", x, "B")
    assert y.loc[1, "status"] == "ok"
    assert list(y.columns) == METRICS + ["cmrr_sign", "status"]
    if y.loc[0, "status"] != "ok":
        assert y.loc[0, METRICS].isna().all()


@pytest.mark.parametrize("opamp, design, process, msg", [
    ("6t_opamp", D5, "A", "unknown opamp"),
    ("5t_opamp", {k: v for k, v in D5.items() if k != "ibias"}, "A", "lack columns ['ibias']"),
    ("5t_opamp", dict(D5, w1=-1.0), "A", "lie outside the declared ranges: w1 in 1"),
    ("5t_opamp", dict(D5, w1="abc"), "A", "non-numeric"),
    ("5t_opamp", D5, "C", "unknown process"),
])
def test_bad_input_is_a_clear_toolkit_error(opamp, design, process, msg):
    with pytest.raises(ToolkitError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        simulate(opamp, design, process)


def test_sky130_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PDK_ROOT", str(tmp_path))
    with pytest.raises(ToolkitError, match="SKY130"):
        simulate("5t_opamp", D5, "sky130")


def test_missing_ngspice_is_a_clear_error(monkeypatch):
    import importlib
    sim = importlib.import_module("spice.simulate")
    monkeypatch.setattr(sim, "engine", lambda: None)
    monkeypatch.setattr(sim.batch, "find_ngspice", lambda: None)
    with pytest.raises(ToolkitError, match="ngspice is not installed.*apt-get install ngspice libngspice0"):
        simulate("5t_opamp", D5, "A")
    with pytest.raises(ToolkitError, match="libngspice .* was not found.*backend='batch'"):
        simulate("5t_opamp", D5, "A", backend="shared")
