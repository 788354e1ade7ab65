"""The --process sky130 path against a small synthetic PDK tree in the open_pdks layout.

No real SKY130 install is available here; the synthetic tree has the same file structure (a
``.lib tt`` section, a corner file with ``.option scale=1.0u``, per-device ``.pm3.spice`` model
files holding a subckt with size-binned ``.model`` cards) so that bin selection, finger splitting,
dropping other devices and the scaled instance syntax are all exercised, with our own BSIM4 cards.
"""
import pytest

from core.errors import ToolkitError
from spice import simulate
from spice import sky130
from spice.processes import _card
from tests.spice_helpers import D5, needs_lib

# (lmin, lmax, wmin, wmax) in metres, like the PDK's bins.
BINS = [(0.15e-6, 1.0e-6, 0.42e-6, 1.0e-6), (0.15e-6, 1.0e-6, 1.0e-6, 7.0e-6),
        (1.0e-6, 2.01e-6, 0.42e-6, 1.0e-6), (1.0e-6, 2.01e-6, 1.0e-6, 7.0e-6)]


def _device_file(device, kind, base_card):
    lines = [f".subckt {device} d g s b mult=1", ".param l=1 w=1 ad=0 as=0 pd=0 ps=0",
             f"m{device} d g s b {device}__model l={{l}} w={{w}} ad={{ad}} as={{as}} pd={{pd}} ps={{ps}}"]
    for i, (lmin, lmax, wmin, wmax) in enumerate(BINS):
        card = base_card.replace(f".model base {kind} ", f".model {device}__model.{i} {kind} ")
        lines += card.splitlines()
        lines.append(f"+ lmin={lmin:g} lmax={lmax:g} wmin={wmin:g} wmax={wmax:g}")
    lines.append(".ends")
    return "\n".join(lines) + "\n"


@pytest.fixture
def fake_pdk(tmp_path):
    root = tmp_path / "sky130A" / "libs.tech" / "ngspice"
    (root / "corners").mkdir(parents=True)
    models = tmp_path / "sky130A" / "libs.ref" / "sky130_fd_pr" / "spice"
    models.mkdir(parents=True)
    (root / "sky130.lib.spice").write_text(
        '.lib ff\n.include "corners/ff.spice"\n.endl ff\n.lib tt\n.param mc_mm_switch=0\n'
        '.include "corners/tt.spice"\n.endl tt\n')
    rel = "../../../libs.ref/sky130_fd_pr/spice"
    (root / "corners" / "tt.spice").write_text(
        f'.option scale=1.0u\n.include "{rel}/sky130_fd_pr__nfet_01v8__tt.pm3.spice"\n'
        f'.include "{rel}/sky130_fd_pr__pfet_01v8__tt.pm3.spice"\n'
        f'.include "{rel}/sky130_fd_pr__res_generic_po__tt.pm3.spice"\n')
    common = dict(toxe=4.1e-9, ua=0, ub=1e-18, vsat=8e4, pdiblc2=2e-3, k1=0.5, cgo=3e-10,
                  cjs=1e-3, cjsws=2e-10, ndep=1.7e17)
    n = _card("base", "nmos", vth0=0.45, u0=0.04, pclm=1.3, **common)
    p = _card("base", "pmos", vth0=-0.45, u0=0.0095, pclm=1.1, **common)
    (models / "sky130_fd_pr__nfet_01v8__tt.pm3.spice").write_text(_device_file("sky130_fd_pr__nfet_01v8", "nmos", n))
    (models / "sky130_fd_pr__pfet_01v8__tt.pm3.spice").write_text(_device_file("sky130_fd_pr__pfet_01v8", "pmos", p))
    (models / "sky130_fd_pr__res_generic_po__tt.pm3.spice").write_text("this file must never be read\n")
    return tmp_path


def test_missing_pdk_says_where_it_looked_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PDK_ROOT", str(tmp_path))
    with pytest.raises(ToolkitError, match=r"SKY130 PDK not found.*sky130A/libs.tech/ngspice.*--pdk-path"):
        sky130.find_pdk()
    monkeypatch.delenv("PDK_ROOT")
    with pytest.raises(ToolkitError, match=r"PDK_ROOT \(not set\)"):
        simulate("5t_opamp", D5, "sky130")


def test_netlist_loads_only_the_bins_the_design_needs(fake_pdk, monkeypatch):
    monkeypatch.setenv("PDK_ROOT", str(fake_pdk))
    proc = sky130.process()
    design = dict(D5, w1=0.5, l1=0.5, w2=10.0, l2=1.5, w3=3.0, l3=1.0)
    text = "\n".join(proc.model_lines(design, "5t_opamp"))
    assert ".option scale=1.0u" in text
    assert "res_generic" not in text and "never be read" not in text  # other devices dropped
    # nfet: (0.5, 0.5) -> bin 0; (3, 1.0) -> bin 3.  pfet: 10 um at l=1.5 -> 2 fingers of 5 -> bin 3.
    assert "sky130_fd_pr__nfet_01v8__model.0 " in text and "sky130_fd_pr__nfet_01v8__model.3 " in text
    assert "sky130_fd_pr__nfet_01v8__model.1 " not in text and "nfet_01v8__model.2 " not in text
    assert "sky130_fd_pr__pfet_01v8__model.3 " in text and "pfet_01v8__model.0 " not in text
    line = proc.mos_line("m3", "x", "x", "vdd", "vdd", "pmos", 10.0, 1.5)
    assert line.startswith("xm3 x x vdd vdd sky130_fd_pr__pfet_01v8 w=5 l=1.5 mult=2 ")


@needs_lib
def test_sky130_path_simulates_with_the_synthetic_pdk(fake_pdk):
    y = simulate("5t_opamp", [D5, dict(D5, w1=0.5, l1=0.5)], "sky130",
                 pdk_path=fake_pdk / "sky130A" / "libs.tech" / "ngspice")
    assert (y["status"] == "ok").all(), y
    assert 20 < y.loc[0, "dc_gain"] < 1000
