"""Process files checked where the fault is: bad sections, model names and unit slips fail at load in one
line naming the file and key; w_range / l_range limit device sizes; a signed design variable simulates;
and a generator run that fails before any design is OK leaves nothing behind (but never deletes a
resumed run's work or a user's folder)."""
import dataclasses
import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.cli import run_main
from core.errors import ToolkitError
from core.outputs import LOCK_NAME
from spice import generate
from spice.circuits import BUILTINS
from spice.processes import DOMAIN_PROCESS, LIBRARY, PROCESSES, load_process
from spice.simulate import check_sizes, simulate
from tests.spice_helpers import D5, needs_lib

DATA = Path(__file__).resolve().parents[1] / "data"
B_TEXT = (LIBRARY / "B.toml").read_text()
B_HEAD, B_MODELS = B_TEXT.split("models =")[0], tomllib.loads(B_TEXT)["models"]

# A 5T OTA with an input offset source: vos is signed (V), and m5/m6 have sizes fixed in the netlist.
VOS_OTA = '''
name = "vos_ota"
description = "5T OTA with an input offset source"
netlist = """
ib vdd nb dc {ibias}
m6 nb nb gnd gnd nmos w=10 l=1
m5 tail nb gnd gnd nmos w=10 l=1
vos inp_o inp dc {vos}
m1 x inp_o tail gnd nmos w={w1} l=1
m2 out inn tail gnd nmos w={w1} l=1
m3 x x vdd vdd pmos w=10 l=1
m4 out x vdd vdd pmos w=10 l=1
"""
slew_time = "dv * cl / ibias"
[variables]
w1 = {unit = "um", range = [2, 20], grid = {step = 1}}
vos = {unit = "V", range = [-0.01, 0.01]}
ibias = {unit = "A", range = [5e-6, 20e-6], sample = "loguniform"}
'''
# The same with the output shorted to ground: ngspice accepts it, every design fails (no_ugf).
SHORTED = VOS_OTA.replace("m4 out x vdd vdd pmos w=10 l=1", "m4 out x vdd vdd pmos w=10 l=1\nrsh out gnd 1m")


def _lib_process(tmp_path, lib_text, extra, name="p.toml"):
    (tmp_path / "cards.lib").write_text(lib_text)
    f = tmp_path / name
    f.write_text(B_HEAD + 'library = "cards.lib"\n' + extra)
    return f


def _one_line(exc, f):
    msg = str(exc.value)
    assert str(f) in msg and "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------- gap 4: checked at load, blamed on the file
@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("vdd = 1.2", "vdd = 1200"), r"vdd must be > 0 and <= 10 V: expected the supply in volts.*got 1200; fix vdd"),
    (lambda t: t.replace("cl = 1e-12", "cl = 1"), r"cl must be > 0 and <= 1e-06 F: .*got 1; fix cl"),
    (lambda t: t.replace("ldiff = 0.34", "ldiff = 340"), r"ldiff must be > 0 and <= 10 um: .*got 340; fix ldiff"),
    (lambda t: t.replace("vdd = 1.2", "vdd = nan"), r"vdd must be > 0 and <= 10 V"),
    (lambda t: t.replace("vdd = 1.2", ""), r"missing key\(s\) \['vdd'\]"),   # was: "vdd must be a number, got None"
    (lambda t: t.replace('nmos = "nch_b"', 'nmos = "nch_q"'),
     r"nmos = 'nch_q': expected a `.model nch_q nmos ...` card in models, got cards for \['nch_b', 'pch_b'\]"),
    (lambda t: t.replace('nmos = "nch_b"', 'nmos = "pch_b"').replace('pmos = "pch_b"', 'pmos = "nch_b"'),
     r"nmos = 'pch_b': expected a nmos card, got `.model pch_b pmos`; swap nmos and pmos"),
    (lambda t: t.replace("w_range = [0.15, 1000]", "w_range = [1]"), r"w_range must be \[lo, hi\] in um"),
    (lambda t: t.replace("l_range = [0.13, 100]", "l_range = [2, 1]"), r"l_range must be \[lo, hi\] in um"),
    (lambda t: t.replace("w_range = [0.15, 1000]", "w_range = [0, 10]"), r"w_range must be .*0 < lo <= hi"),
    (lambda t: t.replace("w_range = [0.15, 1000]", 'w_range = "1..10"'), r"w_range must be \[lo, hi\]"),
    (lambda t: 'section = "tt"\n' + t, r"section 'tt' needs library"),
    (lambda t: "w_limits = [1, 2]\n" + t, r"unknown key\(s\) \['w_limits'\].*optionally w_range, l_range"),
])
def test_bad_process_files_fail_at_load_in_one_line(tmp_path, edit, message):
    f = tmp_path / "p.toml"
    f.write_text(edit(B_TEXT))
    with pytest.raises(ToolkitError, match=message) as e:
        load_process(f)
    _one_line(e, f)


def test_shipped_and_binned_cards_load(tmp_path):
    # controls for the table above: the unedited file, and binned cards (nch_b.1, PCH_B.2) count as nch_b, pch_b
    assert load_process(LIBRARY / "B.toml").w_range == (0.15, 1000.0)
    binned = B_MODELS.replace(".model nch_b nmos", ".model nch_b.1 nmos").replace(".model pch_b pmos", ".MODEL PCH_B.2 PMOS")
    assert binned.count(".1 nmos") == 1 and binned.count(".2 PMOS") == 1
    f = tmp_path / "binned.toml"
    f.write_text(B_HEAD + f'models = """{binned}"""\n')
    assert load_process(f).nmos == "nch_b"


@pytest.mark.parametrize("lib, extra, message", [
    (".lib tt\n{m}.endl tt\n.lib ss\n{m}.endl ss\n", 'section = "zz"\n',
     r"section 'zz': .*cards.lib has no `.lib zz` section; expected one of \['ss', 'tt'\], got 'zz'; fix section"),
    (".lib tt\n{m}.endl tt\n", "",
     r"cards.lib is made of .lib sections \['tt'\]: expected section = one of them \(e.g. 'tt'\), got none"),
    ("{m}", 'section = "tt"\n', r"has no `.lib tt` section; expected none \(it has no .lib sections"),
])
def test_a_library_section_is_checked_against_the_library(tmp_path, lib, extra, message):
    f = _lib_process(tmp_path, lib.format(m=B_MODELS), extra)
    with pytest.raises(ToolkitError, match=message) as e:
        load_process(f)
    _one_line(e, f)
    # control: the section the library has (or none for a plain file) loads
    ok = _lib_process(tmp_path, lib.format(m=B_MODELS), 'section = "tt"\n' if ".lib tt" in lib else "", "ok.toml")
    assert load_process(ok).model_text.endswith((" tt", 'cards.lib"'))


@needs_lib
def test_generate_names_the_circuit_and_a_user_process_when_ngspice_rejects_them(tmp_path, capsys):
    # the library holds B's cards, but the file names an nmos model it lacks: only ngspice can tell
    f = _lib_process(tmp_path, f".lib tt\n{B_MODELS}.endl tt\n", 'section = "tt"\n')
    f.write_text(f.read_text().replace('nmos = "nch_b"', 'nmos = "nch_q"'))
    out = tmp_path / "data"
    with pytest.raises(SystemExit) as e:
        run_main(generate.main, ["--opamp", "5t_opamp", "--domain", "target", "--process", str(f), "--n", "5",
                                 "--workers", "1", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"5t_opamp.toml with process {f}: ngspice rejects the netlist (" in err
    assert "nch_q" in err and "the models in the process file" in err
    assert not out.exists()


# ---------------------------------------------------------------- gap 5: w_range / l_range
def test_shipped_limits_keep_every_shipped_design():
    for opamp in BUILTINS:
        for domain, proc_name in DOMAIN_PROCESS.items():
            proc = PROCESSES[proc_name]
            assert proc.w_range and proc.l_range
            x = pd.read_csv(DATA / opamp / domain / "features.csv")
            check_sizes(opamp, x, proc)          # must not raise
            generate.check_design_space(opamp, proc)
    # control: a limit the data cross is caught by the same check
    tight = dataclasses.replace(PROCESSES["B"], w_range=(1.0, 1000.0))
    with pytest.raises(ToolkitError, match=r"w_range \[1, 1000\] um refuses .* device m\d w = 0.5 um"):
        check_sizes("5t_opamp", pd.read_csv(DATA / "5t_opamp" / "target" / "features.csv"), tight)


@needs_lib
def test_size_limits_refuse_designs_naming_file_key_device_and_size(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text(B_TEXT.replace("w_range = [0.15, 1000]", "w_range = [1, 100]"))
    with pytest.raises(ToolkitError, match=r"w_range \[1, 100\] um refuses 1 design\(s\) of 5t_opamp: device m1 "
                                           r"w = 0.5 um \(\{w1\}; first: design 2\)") as e:
        simulate("5t_opamp", [D5, dict(D5, w1=0.5)], str(f))
    _one_line(e, f)
    assert simulate("5t_opamp", [D5], str(f)).loc[0, "status"] == "ok"        # control: inside the limits
    c = tmp_path / "vos.toml"
    c.write_text(VOS_OTA)
    g = tmp_path / "q.toml"
    g.write_text(B_TEXT.replace("w_range = [0.15, 1000]", "w_range = [1, 5]"))
    with pytest.raises(ToolkitError, match=r"w_range \[1, 5\] um refuses 1 design\(s\) of vos_ota: device m6 w = 10 um "
                                           r"\(fixed in the netlist"):
        simulate(str(c), [dict(w1=4, vos=0.0, ibias=1e-5)], str(g))


def test_generate_refuses_a_design_space_outside_the_limits_before_writing(tmp_path, capsys):
    f = tmp_path / "p.toml"
    f.write_text(B_TEXT.replace("l_range = [0.13, 100]", "l_range = [1, 100]"))
    out = tmp_path / "data"
    with pytest.raises(SystemExit) as e:
        run_main(generate.main, ["--opamp", "5t_opamp", "--domain", "target", "--process", str(f), "--n", "5",
                                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"{f}: l_range [1, 100] um: expected every l of" in err and "5t_opamp.toml inside it" in err
    assert "= {l3} in [0.5, 2] um" in err and not out.exists()


# ---------------------------------------------------------------- gap 3: a signed design variable
@needs_lib
def test_a_signed_variable_simulates_and_only_non_finite_values_are_refused(tmp_path):
    c = tmp_path / "vos.toml"
    c.write_text(VOS_OTA)
    designs = [dict(w1=10, vos=v, ibias=1e-5) for v in (-0.01, 0.0, 0.01)]    # both range ends exactly
    y = simulate(str(c), designs, "B", op=True)
    assert (y["status"] == "ok").all()
    assert np.all(np.diff(y["m1_vgs"].to_numpy()) > 0)     # the offset reaches m1's gate with its sign
    with pytest.raises(ToolkitError, match=r"vos in 1 \(declared \[-0.01, 0.01\] V; first: design 1, vos = -0.02"):
        simulate(str(c), [dict(w1=10, vos=-0.02, ibias=1e-5)], "B")
    for bad, shown in ((float("nan"), "nan"), (float("inf"), "inf"), ("abc", "'abc'")):
        with pytest.raises(ToolkitError, match=rf"missing, non-numeric or infinite values \(first: design 2, vos = {shown}\)"):
            simulate(str(c), [designs[0], dict(designs[0], vos=bad)], "B")
    meta = generate.main(["--opamp", str(c), "--domain", "target", "--n", "4", "--chunk", "5", "--workers", "1",
                          "--out", str(tmp_path / "d"), "--no-progress"])
    x = pd.read_csv(tmp_path / "d" / "vos_ota" / "target" / "features.csv")
    assert meta["ok"] == 4 and (x["vos"] < 0).any() and (x["vos"] > 0).any()


# ---------------------------------------------------------------- gap 7: a failed run leaves nothing behind
def _gen(c, out, *extra):
    return ["--opamp", str(c), "--domain", "target", "--n", "5", "--chunk", "5", "--workers", "1",
            "--out", str(out), "--no-progress", *extra]


@needs_lib
def test_a_run_where_every_design_fails_names_both_files_and_leaves_nothing(tmp_path, capsys):
    c = tmp_path / "short.toml"
    c.write_text(SHORTED)
    p = tmp_path / "mine.toml"
    p.write_text(B_TEXT)
    out = tmp_path / "data"
    with pytest.raises(SystemExit) as e:
        run_main(generate.main, _gen(c, out, "--process", str(p)))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"{c} with process {p}: none of the first " in err and "designs simulated OK ({'no_ugf': " in err
    assert "or vdd, cl and the models in the process file" in err
    assert not out.exists()                                   # no folder, no lock, no .partial
    # a folder of the user's is kept, with what is in it; only this run's .partial and lock go
    mine = out / "vos_ota" / "target"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ToolkitError, match=r"with process B: none of the first \d+ designs"):
        generate.main(_gen(c, out))
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


class _Interrupt(Exception):
    pass


@needs_lib
def test_a_resumed_runs_chunks_are_never_deleted(tmp_path, monkeypatch):
    c = tmp_path / "short.toml"
    c.write_text(SHORTED)
    out = tmp_path / "data"
    real = generate.simulate_chunk
    calls = []

    def interrupted(*a, **kw):
        calls.append(a[4])
        if len(calls) == 2:
            raise _Interrupt          # Ctrl-C after the first chunk: the run is resumable
        return real(*a, **kw)

    monkeypatch.setattr(generate, "simulate_chunk", interrupted)
    with pytest.raises(_Interrupt):
        generate.main(_gen(c, out))
    partial = out / "vos_ota" / "target" / ".partial"
    first = (partial / "chunk_000000000.csv").read_text()
    monkeypatch.setattr(generate, "simulate_chunk", real)
    with pytest.raises(ToolkitError, match=r"none of the first \d+ designs.*the earlier run's .*\.partial \(holding 1 chunk\(s\)\) "
                                           r"is kept: delete it to start over"):
        generate.main(_gen(c, out))
    assert (partial / "chunk_000000000.csv").read_text() == first and (partial / "run.json").exists()
    assert (partial.parent / LOCK_NAME).exists()              # it was there before this run too


@needs_lib
@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_late_error_cleans_up_only_when_no_design_was_ok(tmp_path, monkeypatch, fail_at):
    # a design refused part-way (e.g. out of range): on the first chunk nothing is left; after an OK
    # chunk, the .partial stays so the rerun resumes it
    real, calls = generate.simulate_chunk, []

    def late(*a, **kw):
        calls.append(a[4])
        if len(calls) == fail_at:
            raise ToolkitError("a design of this chunk is outside its declared range")
        return real(*a, **kw)

    monkeypatch.setattr(generate, "simulate_chunk", late)
    out = tmp_path / "data"
    args = ["--opamp", "5t_opamp", "--domain", "target", "--n", "8", "--seed", "3", "--chunk", "5", "--workers", "1",
            "--out", str(out), "--no-progress"]
    with pytest.raises(ToolkitError, match="outside its declared range"):
        generate.main(args)
    partial = out / "5t_opamp" / "target" / ".partial"
    if fail_at == 1:
        assert not out.exists()
        return
    assert sorted(p.name for p in partial.iterdir()) == ["chunk_000000000.csv", "run.json"]
    monkeypatch.setattr(generate, "simulate_chunk", real)
    meta = generate.main(args)                                # control: the rerun resumes the kept chunk
    assert meta["resumed_chunks"] == 1 and meta["rows_written"] == 8 and not partial.exists()
    assert json.loads((out / "5t_opamp" / "target" / "meta.json").read_text())["ok"] == 8
