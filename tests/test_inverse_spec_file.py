"""inverse_opt --spec: goals with units from a TOML file, converted to data units; bad files in one line."""
import json
import math

import numpy as np
import pytest

import inverse_opt
from core.errors import ToolkitError
from inverse.spec_file import load_spec, quantity
from tests.test_inverse import FAST_OPT, trained  # noqa: F401  (module fixture: tiny forward models + MDN)

Y = ["slewrate_pos", "dc_gain", "ugf", "phase_margin", "cmrr"]
TYPICAL = np.array([1e7, 100.0, 2e7, 70.0, 5000.0])


@pytest.mark.parametrize("text, metric, value", [
    ("40 dB", "dc_gain", 100.0), ("100", "dc_gain", 100.0), ("100 V/V", "cmrr", 100.0),
    ("1.5 MHz", "ugf", 1.5e6), ("250kHz", "ugf", 2.5e5), ("10 V/us", "slewrate_pos", 1e7),
    ("3 V/ns", "slewrate_pos", 3e9), ("60 deg", "phase_margin", 60.0), ("1 rad", "phase_margin", 180 / math.pi),
    ("2e6", "ugf", 2e6), ("20", "slewrate_pos", 20.0),                  # a bare number is in the data unit
])
def test_quantities_convert_to_the_data_unit(text, metric, value):
    assert quantity(text, metric, "x") == pytest.approx(value)


def test_a_spec_file_becomes_goals_bands_and_weights(tmp_path):
    f = tmp_path / "spec.toml"
    f.write_text('[goals]\ndc_gain = ">= 40 dB"\nugf = "1 MHz .. 3 MHz"\nslewrate_pos = ">= 10 V/us"\n'
                 'phase_margin = "== 60 deg"\n[weights]\ndc_gain = 2\ncmrr = 3\n')
    said = []
    spec = load_spec(f, Y, TYPICAL, warn=said.append)
    assert spec.goals == ["min", "min", "range", "target", "range"]
    assert spec.lo[0] == pytest.approx(1e7) and spec.lo[1] == pytest.approx(100) and np.isinf(spec.hi[1])
    assert (spec.lo[2], spec.hi[2]) == pytest.approx((1e6, 3e6))
    assert (spec.lo[3], spec.hi[3]) == pytest.approx((57.0, 63.0))          # == within TARGET_TOL (5 %)
    assert np.isneginf(spec.lo[4]) and np.isposinf(spec.hi[4]) and spec.target[4] == 5000.0   # cmrr free
    assert list(spec.weights) == [1, 2, 1, 1, 3]
    assert any("cmrr is not in" in s for s in said)
    assert any("weights.cmrr has no effect: cmrr has no goal" in s for s in said)    # a weight on a free metric
    assert spec.meets([[2e7, 150, 2e6, 61, 1.0]]).all()


@pytest.mark.parametrize("body, phrase", [
    ('[goals]\ngain = ">= 40 dB"\n', r"\[goals\] names \['gain'\], which the model does not predict"),
    ('[goals]\nugf = ">= 40 dB"\n', r"goals.ugf: unit 'dB' is a ratio \(V/V\), but ugf is in Hz, a frequency \(Hz\); e.g. '2 MHz'"),
    ('[goals]\nugf = ">= 2 MegaHz"\n', r"unknown unit 'MegaHz'"),
    ('[goals]\nugf = "3 MHz .. 1 MHz"\n', r"range '3 MHz .. 1 MHz' needs lo < hi"),
    ('[goals]\nugf = "about 2 MHz"\n', r"is not a goal"),
    ('[goals]\nugf = ">= 1 MHz"\nugf = "<= 3 MHz"\n', r"is not valid TOML"),           # two goals on one metric
    ('[goals]\nugf = ">= 1 MHz"\n[weights]\nugf = -1\n', r"weights.ugf must be a number >= 0"),
    ('[goal]\nugf = ">= 1 MHz"\n', r"expected a non-empty \[goals\] table"),
    ('[goals]\nugf = ">= 1 MHz"\n[units]\ngain = "dB"\n', r"\[units\] names \['gain'\], which the model does not"),
    ('[goals]\nugf = ">= 1 MHz"\n[units]\nugf = "Megahertz"\n', r"units.ugf = 'Megahertz' is not a unit; known:"),
    ('[goals]\nugf = ">= 1 MHz"\n[units]\nugf = "deg"\n', r"unit 'MHz' is a frequency \(Hz\), but ugf is in deg"),
    ('[goals]\ncmrr = ">= 0 V/V"\n[units]\ncmrr = "dB"\n', r"'0 V/V' is <= 0, which has no value in dB"),
])
def test_bad_spec_files_fail_in_one_line(tmp_path, body, phrase):
    f = tmp_path / "spec.toml"
    f.write_text(body)
    with pytest.raises(ToolkitError, match=phrase) as e:
        load_spec(f, Y, TYPICAL)
    assert "\n" not in str(e.value)


Y_OWN = ["gain_db", "pm_deg", "f_unity"]


def test_units_table_gives_a_metric_of_yours_its_data_unit(tmp_path):
    """Metrics the simulator does not name take units once the spec declares what their columns hold; a shipped
    name whose column holds another unit (dc_gain in dB) is converted to that unit, not to V/V."""
    f = tmp_path / "spec.toml"
    f.write_text('[goals]\ngain_db = ">= 100 V/V"\npm_deg = "1 rad .. 80 deg"\nf_unity = ">= 2 MHz"\n'
                 '[units]\ngain_db = "dB"\npm_deg = "deg"\nf_unity = "kHz"\n')
    spec = load_spec(f, Y_OWN, np.array([50.0, 70.0, 1e3]))
    assert spec.lo == pytest.approx([40.0, 180 / math.pi, 2000.0])
    assert spec.hi[1] == pytest.approx(80.0)
    f.write_text('[goals]\ndc_gain = ">= 40 dB"\n[units]\ndc_gain = "dB"\n')
    assert load_spec(f, Y, TYPICAL).lo[1] == pytest.approx(40.0)
    f.write_text('[goals]\npm_deg = ">= 60 deg"\n')                      # no [units]: said what to write
    with pytest.raises(ToolkitError, match=r"the unit of 'pm_deg' is not known.*\[units\] table \(pm_deg = \"deg\""):
        load_spec(f, Y_OWN, np.array([50.0, 70.0, 1e3]))
    f.write_text('[goals]\npm_deg = ">= 60"\n')                          # a bare number needs no unit
    assert load_spec(f, Y_OWN, np.array([50.0, 70.0, 1e3])).lo[1] == 60.0


def test_a_target_on_a_db_column_passes_what_it_passes_on_a_ratio_column(tmp_path):
    """== X is within 5 % of X as a ratio: on a column in dB that is X + 20 log10(0.95 .. 1.05), not X +- 5 % of the
    dB number; == 0 dB (a gain of 1) has a width."""
    f = tmp_path / "spec.toml"
    f.write_text('[goals]\ndc_gain = "== 40 dB"\n[units]\ndc_gain = "dB"\n')
    spec = load_spec(f, Y, TYPICAL)
    assert (spec.lo[1], spec.hi[1]) == pytest.approx((40 + 20 * math.log10(0.95), 40 + 20 * math.log10(1.05)))
    f.write_text('[goals]\ndc_gain = "== 1 V/V"\n[units]\ndc_gain = "dB"\n')
    spec = load_spec(f, Y, TYPICAL)
    assert spec.lo[1] < 0 < spec.hi[1] and spec.meets([[1e7, 0.2, 2e7, 70, 1.0]])[0, 1]


def test_units_the_data_record_are_the_data_units_and_cannot_be_renamed(tmp_path):
    """The simulator's units (meta.json) are what --verify compares with: a [units] line that contradicts them is
    refused; a metric of the user's circuit the meta records takes units without a [units] table."""
    from inverse.spec_file import recorded_units
    meta = tmp_path / "data" / "ota" / "target" / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"units": {"dc_gain": "V/V", "power": "W", "w1": "um"}}))
    units, where = recorded_units(tmp_path / "data", "ota")
    assert units == {"dc_gain": "V/V", "power": "W"} and where == meta          # um is not a spec unit
    assert recorded_units(tmp_path / "data", "other") == ({}, None)
    f = tmp_path / "spec.toml"
    f.write_text('[goals]\ndc_gain = ">= 40 dB"\n[units]\ndc_gain = "dB"\n')
    with pytest.raises(ToolkitError, match=r"units.dc_gain = 'dB', but \S+meta.json records dc_gain in 'V/V'"):
        load_spec(f, Y, TYPICAL, recorded=units, recorded_where=where)
    f.write_text('[goals]\nmy_power = "<= 2 mW"\n')
    spec = load_spec(f, ["my_power"], np.array([1e-3]), recorded={"my_power": "W"}, recorded_where=where)
    assert spec.hi[0] == pytest.approx(2e-3)


def test_a_bare_number_far_from_the_data_is_said_to_be_in_the_data_unit(tmp_path):
    f = tmp_path / "spec.toml"
    f.write_text('[goals]\nslewrate_pos = ">= 10"\nugf = "1e6 .. 3e6"\n')
    said = []
    spec = load_spec(f, Y, TYPICAL, warn=said.append)
    assert spec.lo[0] == 10.0
    assert [s for s in said if "bare number" in s] == [
        f"warning: {f}: goals.slewrate_pos: 10 is read in V/s (a bare number is in the data unit), but the data's "
        "typical slewrate_pos is 1e+07 V/s; add the unit if you meant another, e.g. '10 V/us'"]


def test_a_bare_gain_that_looks_like_decibels_says_how_it_is_read(tmp_path):
    """'>= 40' on dc_gain (V/V) is 40 V/V, 32 dB: within the data's range, so no far-off warning fired."""
    f = tmp_path / "spec.toml"
    f.write_text('[goals]\ndc_gain = ">= 40"\n')
    said = []
    spec = load_spec(f, Y, TYPICAL, warn=said.append)
    assert spec.lo[Y.index("dc_gain")] == 40.0
    assert f"note: {f}: goals.dc_gain: 40 is read as 40 V/V (32.0 dB), the data unit; if you meant 40 dB, write " \
           "'40 dB'" in said
    f.write_text('[goals]\ndc_gain = ">= 400"\n')                         # no dB figure is that large
    said = []
    load_spec(f, Y, TYPICAL, warn=said.append)
    assert not [s for s in said if "dB" in s]


def test_inverse_opt_takes_a_spec_file(trained, tmp_path):  # noqa: F811
    common, _, _ = trained
    f = tmp_path / "spec.toml"
    f.write_text('[goals]\ndc_gain = ">= 40 dB"\nugf = "10 MHz .. 100 MHz"\nphase_margin = ">= 60 deg"\n')
    inverse_opt.main([*common, "--spec", str(f), *FAST_OPT, "--top-k", "2", "--save-dir", str(tmp_path / "run"),
                      "--quiet"])
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["spec"]["ugf"] == {"goal": "range", "target": 5.5e7, "lo": 1e7, "hi": 1e8, "weight": 1.0,
                                     "unit": "Hz"}
    assert record["spec"]["cmrr"]["lo"] is None and record["spec"]["cmrr"]["hi"] is None
    with pytest.raises(ToolkitError, match="--spec holds the goals"):
        inverse_opt.main([*common, "--spec", str(f), "--goal", "min,min,min,min,min", *FAST_OPT])
    with pytest.raises(ToolkitError, match="give the spec"):
        inverse_opt.main([*common, *FAST_OPT])
