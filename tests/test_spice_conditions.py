"""Run conditions (spice/conditions.py): temperature, supply and corner reach the netlists and change the
physics the right way; nominal conditions leave every netlist as it was; bad values are one line."""
import json

import numpy as np
import pandas as pd
import pytest

import inverse_opt
from core.errors import ToolkitError
from spice.circuits import ac_testbench, tran_testbench
from spice.conditions import Conditions, apply
from spice.processes import PROCESS_B, load_process
from tests.spice_helpers import needs_ngspice
from tests.test_inverse import _opt, trained  # noqa: F401  (module fixture)

DESIGN = {"w1": 20.0, "w2": 35.5, "w3": 8.0, "l1": 1.0, "l2": 1.5, "l3": 0.5, "ibias": 10e-6}


def _sky130_present():
    try:
        from spice.sky130 import find_pdk
        find_pdk()
        return True
    except ToolkitError:
        return False


@pytest.mark.parametrize("kw, phrase", [
    ({"temp": 500}, "outside -60..200 C"), ({"temp": "hot"}, "temp must be a number"),
    ({"vdd": 0}, "must be > 0"), ({"vdd": 18000}, "<= 10 V"), ({"corner": "s s"}, "not a .lib section name"),
])
def test_bad_conditions_are_one_line(kw, phrase):
    with pytest.raises(ToolkitError, match=phrase) as e:
        Conditions(**kw)
    assert "\n" not in str(e.value)


def test_nominal_conditions_leave_the_netlists_unchanged():
    assert apply(PROCESS_B, Conditions()) is PROCESS_B
    for bench in (ac_testbench, tran_testbench):
        lines = bench("5t_opamp", DESIGN, PROCESS_B)
        assert not any(x.startswith(".temp") for x in lines)
    hot = apply(PROCESS_B, Conditions(temp=85, vdd=1.08))
    assert PROCESS_B.vdd == 1.2 and PROCESS_B.temp is None                     # the shipped process is untouched
    lines = ac_testbench("5t_opamp", DESIGN, hot)
    assert ".temp 85" in lines and "vdd vdd 0 dc 1.08" in lines and f"vrep in_rep 0 dc {1.08 / 2}" in lines
    assert hot.step == pytest.approx((0.54 - 0.135, 0.54 + 0.135))


def _library_process(tmp_path):
    """Process B as a file with a model library of two sections: tt (B's cards) and ss (higher thresholds)."""
    lib = tmp_path / "b.lib"
    slow = PROCESS_B.model_text.replace("vth0=0.34", "vth0=0.44").replace("vth0=-0.33", "vth0=-0.43")
    lib.write_text(f".lib tt\n{PROCESS_B.model_text}\n.endl tt\n.lib ss\n{slow}\n.endl ss\n")
    body = "\n".join(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in
                     {"name": "Blib", "description": "B as a library", "vdd": 1.2, "cl": 1e-12, "ldiff": 0.34,
                      "nmos": "nch_b", "pmos": "pch_b", "library": "b.lib", "section": "tt"}.items())
    (tmp_path / "b.toml").write_text(body.replace("'", '"') + "\n")
    return tmp_path / "b.toml"


def test_corners_need_a_library_with_sections(tmp_path):
    with pytest.raises(ToolkitError, match="has no corners"):
        apply(PROCESS_B, Conditions(corner="ss"))
    proc = load_process(_library_process(tmp_path))
    ss = apply(proc, Conditions(corner="ss"))
    assert ss.model_text.endswith(" ss") and proc.model_text.endswith(" tt")
    with pytest.raises(ToolkitError, match=r"no `.lib ff` section; it has \['ss', 'tt'\]"):
        apply(proc, Conditions(corner="ff"))


@needs_ngspice
def test_temperature_supply_and_corner_change_the_simulation(tmp_path):
    from spice.simulate import simulate
    x = pd.DataFrame([DESIGN])
    base = simulate("5t_opamp", x, "B", op=True)
    assert (base["status"] == "ok").all()
    same = simulate("5t_opamp", x, "B", op=True, temp=27)                     # 27 C is ngspice's nominal
    np.testing.assert_allclose(same["ugf"], base["ugf"], rtol=1e-9)
    hot, cold = (simulate("5t_opamp", x, "B", op=True, temp=t) for t in (85, -40))
    assert cold["ugf"].iloc[0] > base["ugf"].iloc[0] > hot["ugf"].iloc[0]    # mobility falls with temperature
    low = simulate("5t_opamp", x, "B", op=True, vdd=1.08)
    np.testing.assert_allclose(low["power"], 1.08 * low["supply_current"], rtol=1e-9)
    assert low["slewrate_pos"].iloc[0] < base["slewrate_pos"].iloc[0]         # a quarter of a lower supply: a smaller step
    lib_process = str(_library_process(tmp_path))
    tt = simulate("5t_opamp", x, lib_process)
    np.testing.assert_allclose(tt["ugf"], base["ugf"], rtol=1e-6)             # the library's tt is B's cards
    ss = simulate("5t_opamp", x, lib_process, corner="ss")
    assert ss["ugf"].iloc[0] != pytest.approx(tt["ugf"].iloc[0], rel=1e-3)


@needs_ngspice
@pytest.mark.skipif(not _sky130_present(), reason="SKY130 model files not installed (make setup)")
def test_sky130_corners():
    from spice.simulate import simulate
    x = pd.DataFrame([DESIGN])
    tt, tt2, ss, ff = (simulate("5t_opamp", x, "sky130", **kw) for kw in ({}, {"corner": "tt"}, {"corner": "ss"},
                                                                          {"corner": "ff"}))
    np.testing.assert_allclose(tt2["dc_gain"], tt["dc_gain"], rtol=1e-9)
    assert (ss["status"] == "ok").all() and (ff["status"] == "ok").all()
    assert len({round(float(d["dc_gain"].iloc[0]), 6) for d in (tt, ss, ff)}) == 3
    with pytest.raises(ToolkitError, match=r"no `.lib xx` section; it has \[.*'ss'.*'tt'"):
        simulate("5t_opamp", x, "sky130", corner="xx")


@needs_ngspice
def test_generate_records_the_conditions_and_will_not_mix_them(tmp_path):
    from spice import generate
    meta = generate.main(["--opamp", "5t_opamp", "--domain", "target", "--n", "5", "--temp", "85", "--chunk", "5",
                          "--workers", "1", "--out", str(tmp_path), "--no-progress"])
    assert meta["conditions"] == {"temp": 85.0}
    assert json.loads((tmp_path / "5t_opamp" / "target" / "meta.json").read_text())["conditions"] == {"temp": 85.0}
    assert generate.run_key(generate.circuit("5t_opamp"), "B", 0, 5, None, {"temp": 85.0}) != \
        generate.run_key(generate.circuit("5t_opamp"), "B", 0, 5, None, {})
    nominal = generate.main(["--opamp", "5t_opamp", "--domain", "target", "--n", "5", "--chunk", "5", "--workers", "1",
                             "--out", str(tmp_path / "nom"), "--no-progress"])
    assert "conditions" not in nominal
    with pytest.raises(ToolkitError, match="has no corners"):
        generate.main(["--opamp", "5t_opamp", "--domain", "target", "--n", "5", "--corner", "ss",
                       "--out", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()


def test_inverse_opt_conditions_need_verify_and_a_corner_the_process_has(trained, tmp_path):  # noqa: F811
    common, _, _ = trained
    with pytest.raises(ToolkitError, match="add --verify"):
        inverse_opt.main(_opt(common, "--temp", "85", "--save-dir", str(tmp_path / "o")))
    with pytest.raises(ToolkitError, match="outside -60..200 C"):
        inverse_opt.main(_opt(common, "--verify", "--temp", "900", "--save-dir", str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()
