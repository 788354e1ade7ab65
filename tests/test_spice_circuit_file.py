"""Circuits as files: the shipped op-amps reproduce their data from their files, a user's own
circuit file simulates and generates end to end, and malformed files fail in one line."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import ToolkitError
from spice import generate, simulate
from spice.circuit_file import load_circuit
from spice.circuits import LIBRARY, circuit
from spice.measure import METRICS
from spice.sampling import sample_designs
from spice.simulate import ngspice_version
from tests.spice_helpers import needs_lib

DATA = Path(__file__).resolve().parents[1] / "data"

MY_OTA = '''
name = "my_ota"
description = "5T OTA with its own variable names: separate tail width, one shared length"
netlist = """
* bias diode, tail, input pair, mirror load
ib vdd nb dc {ib}
mb nb nb gnd gnd nmos w={wt} l={len}
mt tail nb gnd gnd nmos w={wt} l={len}
ma x inp tail gnd nmos w={win} l={len}
mb2 out inn tail gnd nmos w={win} l={len}
mc x x vdd vdd pmos w={wload} l={len}
md out x vdd vdd pmos w=20 l={len}
"""
slew_time = "dv * cl / ib"
[variables]
win = {unit = "um", range = [2, 40], grid = {step = 1}}
wload = {unit = "um", range = [2, 40], grid = {step = 1}}
wt = {unit = "um", range = [2, 40], grid = {step = 1}}
len = {unit = "um", grid = {values = [1.0, 2.0]}}
ib = {unit = "A", range = [5e-6, 20e-6], sample = "loguniform"}
[figures]
gate_area = "sum_wl"
input_ratio = "win / wload"
'''


@needs_lib
@pytest.mark.parametrize("opamp", ["5t_opamp", "two_stage_opamp", "folded_cascode_opamp"])
def test_shipped_circuit_files_regenerate_the_shipped_target_rows(opamp):
    d = DATA / opamp / "target"
    meta = json.loads((d / "meta.json").read_text())
    if ngspice_version() != meta["ngspice_version"]:
        pytest.skip(f"ngspice {ngspice_version()} here, data made with {meta['ngspice_version']}")
    x, y = pd.read_csv(d / "features.csv"), pd.read_csv(d / "targets.csv")
    designs = sample_designs(opamp, meta["seed"], 0, 220)
    got = simulate(opamp, designs, meta["process"])
    ok = got["status"] == "ok"
    k = int(ok.sum())
    assert k >= 200
    np.testing.assert_allclose(designs[ok].to_numpy(), x.iloc[:k].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(got.loc[ok, METRICS].to_numpy(float), y.iloc[:k].to_numpy(), rtol=1e-5)


def test_shipped_files_declare_what_the_data_carries():
    for opamp in ("5t_opamp", "two_stage_opamp", "folded_cascode_opamp"):
        c = circuit(opamp)
        meta = json.loads((DATA / opamp / "source" / "meta.json").read_text())
        assert c.features == meta["feature_columns"]
        assert c.design_space() == meta["design_space"]
    assert list(circuit("two_stage_opamp").devices) == ["m6", "m5", "m1", "m2", "m3", "m4", "m7", "m8"]
    d = dict(w1=10.0, w2=10.0, w3=10.0, l1=1.0, l2=1.0, l3=1.0, ibias=1e-5)
    assert circuit("5t_opamp").figures_of(d)["gate_area"] == pytest.approx(60.0)  # 6 devices x 10 um^2
    fc = circuit("folded_cascode_opamp")                     # the third op-amp, added only as a file
    assert len(fc.features) >= 10 and len(fc.devices) == 14 and fc.figures_of(
        {**{f"w{i}": 1.0 for i in range(1, 7)}, **{f"l{i}": 1.0 for i in range(1, 7)}, "ibias": 5e-6, "vcn": 0.5,
         "vcp": 0.5})["bias_current"] == pytest.approx(2e-5)


@needs_lib
def test_a_users_circuit_file_simulates_and_generates(tmp_path):
    f = tmp_path / "my_ota.toml"
    f.write_text(MY_OTA)
    c = load_circuit(f)
    assert c.features == ["win", "wload", "wt", "len", "ib"]
    designs = sample_designs(f, 3, 0, 6)
    assert designs["len"].isin([1.0, 2.0]).all() and designs["ib"].between(5e-6, 20e-6).all()
    y = simulate(str(f), designs, "B", op=True)
    assert (y["status"] == "ok").sum() >= 5, y
    assert (y["dc_gain"].dropna() > 10).all()
    assert {"ma_gm", "md_region", "supply_current"} <= set(y.columns)
    assert c.figures_of(designs.iloc[0].to_dict())["input_ratio"] == pytest.approx(designs.iloc[0]["win"] / designs.iloc[0]["wload"])
    meta = generate.main(["--opamp", str(f), "--domain", "target", "--n", "20", "--seed", "3", "--workers", "1",
                          "--out", str(tmp_path / "data"), "--no-progress"])
    out = tmp_path / "data" / "my_ota" / "target"
    x = pd.read_csv(out / "features.csv")
    assert list(x.columns) == c.features and len(x) == 20
    assert meta["design_space"]["ib"] == {"unit": "A", "range": [5e-6, 20e-6], "grid": {}, "sample": "loguniform"}
    assert meta["circuit_file"] == str(f.resolve()) and meta["units"]["win"] == "um"


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("ib vdd nb dc {ib}", "ib vdd nb dc {ibias}"), r"\{ibias\} is not a design variable"),
    (lambda t: t.replace('win = {unit = "um",', 'win = {units = "um",'), r"\[variables.win\]: unknown key"),
    (lambda t: t.replace("range = [2, 40], grid = {step = 1}}\nwload", "range = [40, 2], grid = {step = 1}}\nwload"),
     r"\[variables.win\]: range \[40, 2\] needs finite lo <= hi"),
    (lambda t: t.replace('ib = {unit = "A"', 'ib = {unit = "mA"'), r"unit 'mA' is not one of"),
    (lambda t: t.replace('slew_time = "dv * cl / ib"', 'slew_time = "dv * cl / ibias"'), r"slew_time.*names 'ibias'"),
    (lambda t: t.replace('slew_time = "dv * cl / ib"', 'slew_time = "__import__(1)"'), r"slew_time.*calls"),
    (lambda t: t.replace("md out x vdd vdd pmos w=20 l={len}", "md out x vdd vdd pmos w=20"), r"a MOSFET is"),
    (lambda t: "extra = 1\n" + t, r"unknown key\(s\) \[.extra.\]"),
    (lambda t: t.replace("[variables]\n", ""), r"a \[variables\] header missing above them"),
    (lambda t: t.replace("[variables]", "[variables]\nunused = {unit = \"um\", range = [1, 2]}"), r"\['unused'\] appear nowhere"),
    (lambda t: t.replace('name = "my_ota"', 'name = "my ota/x"'), r"name must be a folder-safe string"),
    (lambda t: t.replace("[figures]", "[figures"), r"is not valid TOML"),
    # a grid the generator would draw outside the range, where simulate() refuses it mid-run
    (lambda t: t.replace('len = {unit = "um", grid', 'len = {unit = "um", range = [1, 1.5], grid'),
     r"\[variables.len\]: grid values \[2.0\] lie outside range \[1, 1.5\] um"),
    (lambda t: t.replace("range = [2, 40], grid = {step = 1}}\nwload", "range = [2, 40], grid = {step = 3}}\nwload"),
     r"\[variables.win\]: grid step 3 on \[2, 40\] ends at 41 > 40; .* or hi = 38"),
    (lambda t: t.replace('gate_area = "sum_wl"', 'gate_area = {expr = "sum_wl", unit = "furlong"}'),
     r"figures.gate_area: unit 'furlong' is not one of"),
    (lambda t: t.replace('sample = "loguniform"}', 'sample = "loguniform", scale = "ln"}'),
     r"\[variables.ib\]: scale 'ln' is not one of \['lin', 'log'\]"),
    (lambda t: t.replace('wt = {unit = "um", range = [2, 40]', 'wt = {unit = "um", range = [0, 40], scale = "log"'),
     r"\[variables.wt\]: scale = 'log' needs lo > 0"),
])
def test_malformed_circuit_files_fail_in_one_line_naming_file_and_key(tmp_path, edit, message):
    f = tmp_path / "bad.toml"
    f.write_text(edit(MY_OTA))
    with pytest.raises(ToolkitError, match=message) as e:
        load_circuit(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_declared_scale_and_figure_units_are_recorded(tmp_path):
    """``scale`` is optional: recorded in the design space only where declared (the shipped files declare none, so
    their meta.json records stay as they were); a known figure unit loads."""
    f = tmp_path / "scaled.toml"
    f.write_text(MY_OTA.replace('sample = "loguniform"}', 'sample = "loguniform", scale = "log"}')
                 .replace('wt = {unit = "um", range = [2, 40], grid = {step = 1}}',
                          'wt = {unit = "um", range = [2, 40], grid = {step = 1}, scale = "lin"}')
                 .replace('gate_area = "sum_wl"', 'gate_area = {expr = "sum_wl", unit = "um^2"}'))
    c = load_circuit(f)
    space = c.design_space()
    assert space["ib"]["scale"] == "log" and space["wt"]["scale"] == "lin" and "scale" not in space["win"]
    assert c.figure_units["gate_area"] == "um^2"
    assert all("scale" not in v for name in ("5t_opamp", "two_stage_opamp", "folded_cascode_opamp")
               for v in circuit(name).design_space().values())


@needs_lib
def test_generate_refuses_a_netlist_ngspice_rejects_and_writes_nothing(tmp_path, capsys):
    f = tmp_path / "broken.toml"
    f.write_text(MY_OTA.replace("mc x x vdd vdd pmos w={wload} l={len}",
                                "mc x x vdd vdd pmos w={wload} l={len}\nq1 x x no_such_model"))
    from core.cli import run_main
    with pytest.raises(SystemExit) as e:
        run_main(generate.main, ["--opamp", str(f), "--domain", "target", "--n", "5", "--workers", "1",
                                 "--out", str(tmp_path / "data"), "--no-progress"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.toml: netlist: ngspice rejects it" in err[0]
    assert not (tmp_path / "data").exists()


def test_unknown_circuit_and_out_of_space_designs_are_refused(tmp_path):
    with pytest.raises(ToolkitError, match=r"unknown opamp 'folded'.*circuit file"):
        circuit("folded")
    with pytest.raises(ToolkitError, match=r"nope.toml not found"):
        circuit(tmp_path / "nope.toml")
    # metres instead of um: refused with the range and the file, never clamped
    d = dict(w1=10e-6, w2=10.0, w3=10.0, l1=1.0, l2=1.0, l3=1.0, ibias=1e-5)
    with pytest.raises(ToolkitError, match=r"w1 in 1 \(declared \[0.5, 50\] um; .*5t_opamp.toml"):
        simulate("5t_opamp", d, "A")


def test_library_holds_the_shipped_circuits():
    assert sorted(p.stem for p in LIBRARY.glob("*.toml")) == ["5t_opamp", "folded_cascode_opamp", "two_stage_opamp"]


# ---------------------------------------------------------------- processes as files
def test_shipped_process_files_hold_the_cards_the_data_was_made_with():
    from spice.processes import PROCESSES
    from tests.spice_helpers import _card
    a = PROCESSES["A"]
    assert (a.vdd, a.cl, a.ldiff, a.nmos, a.pmos) == (1.8, 1e-12, 0.48, "nch_a", "pch_a")
    assert a.model_text.startswith(_card("nch_a", "nmos", toxe=4.1e-9, vth0=0.45, u0=0.040, ua=-1.0e-9, ub=2.0e-18,
                                         vsat=8.0e4, pclm=1.3, pdiblc2=2.0e-3, k1=0.58, cgo=3.5e-10, cjs=1.0e-3,
                                         cjsws=2.5e-10, ndep=1.7e17))
    assert PROCESSES["B"].vdd == 1.2 and sorted(PROCESSES) == ["A", "B"]


@needs_lib
def test_a_users_process_file_simulates(tmp_path):
    from spice.processes import LIBRARY
    text = (LIBRARY / "B.toml").read_text().replace('name = "B"', 'name = "B_lowv"').replace("vdd = 1.2", "vdd = 1.0")
    f = tmp_path / "b_lowv.toml"
    f.write_text(text)
    d = dict(w1=10.0, w2=10.0, w3=10.0, l1=1.0, l2=1.0, l3=1.0, ibias=1e-5)
    y = simulate("5t_opamp", [d], str(f), op=True)
    yb = simulate("5t_opamp", [d], "B", op=True)
    assert y.loc[0, "status"] == "ok"
    assert y.loc[0, "power"] / 1.0 == pytest.approx(yb.loc[0, "power"] / 1.2, rel=0.1)   # ~ same current, lower supply
    assert y.loc[0, "power"] < 0.9 * yb.loc[0, "power"]
    # the library route: the same cards in a model file next to it
    (tmp_path / "cards.lib").write_text(".lib tt\n" + __import__("tomllib").loads(text)["models"] + ".endl tt\n")
    g = tmp_path / "b_lib.toml"
    g.write_text(text.split("models =")[0] + 'library = "cards.lib"\nsection = "tt"\n')
    assert simulate("5t_opamp", [d], str(g)).loc[0, "dc_gain"] == pytest.approx(y.loc[0, "dc_gain"], rel=1e-9)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("vdd = 1.2", "vdd = -1"), r"vdd must be > 0"),
    (lambda t: t.replace('nmos = "nch_b"', 'nmos = 3'), r"nmos must be a non-empty string"),
    (lambda t: "corner = 'tt'\n" + t, r"unknown key\(s\) \['corner'\]"),
    (lambda t: t.split("models =")[0] + 'library = "missing.lib"\n', r"library .*missing.lib does not exist"),
    (lambda t: t.split("models =")[0], r"give exactly one of models"),
])
def test_malformed_process_files_fail_in_one_line(tmp_path, edit, message):
    from spice.processes import LIBRARY, load_process
    f = tmp_path / "p.toml"
    f.write_text(edit((LIBRARY / "B.toml").read_text()))
    with pytest.raises(ToolkitError, match=message) as e:
        load_process(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_verify_takes_a_circuit_file(tmp_path):
    from inverse.verify import check_circuit_columns
    f = tmp_path / "my_ota.toml"
    f.write_text(MY_OTA)
    check_circuit_columns(str(f), ["len", "ib", "win", "wload", "wt"])          # any column order
    with pytest.raises(ToolkitError, match=r"give its circuit file with --circuit"):
        check_circuit_columns("my_ota", ["win"])
    with pytest.raises(ToolkitError, match=r"The model's features \['win'\] are not the simulator's"):
        check_circuit_columns(str(f), ["win"])
