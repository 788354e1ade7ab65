"""A user's own circuit, process and data, as a new user ran them (review of 2026-12-07): each defect found, pinned.

Run conditions recorded with the data reach --verify and --init-from; a model library edit is part of what a
generated dataset depends on; metrics the simulator cannot measure; near-twin candidates; free metrics in the
infeasibility summary; the refit command; spec notes around an error; a dead circuit; impossible sizes and times.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest

import inverse_opt
from active_learning.given import check_given_provenance
from core.errors import ToolkitError
from inverse import feasibility
from inverse.goals import Spec
from inverse.optimise import first_of_each, near_keys, rank_designs
from inverse.snap import Rule
from inverse.spec_file import load_spec
from inverse.verify import check_process_unchanged, check_verifiable, verify_designs
from spice import generate
from spice.circuits import circuit
from spice.conditions import Conditions
from spice.processes import LIBRARY
from spice.simulate import check_design_space, resolve_process
from tests.spice_helpers import needs_lib
from tests.synthetic import X_COLS, Y_COLS

B_TEXT = (LIBRARY / "B.toml").read_text()
B_HEAD = B_TEXT.split("models =")[0]


def _meta(data_dir, opamp, meta: dict):
    folder = data_dir / opamp / "target"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


# ---------------------------------------------------------------- run conditions
def test_verify_simulates_at_the_conditions_the_target_data_were_made_at(tmp_path, capsys):
    _meta(tmp_path, "ota", {"process": "B", "conditions": {"temp": 85, "corner": "ss"}})
    got = inverse_opt.verify_conditions(tmp_path, "ota", Conditions(), None, "B")
    assert got == Conditions(temp=85.0, corner="ss") and "85 C, corner ss" in capsys.readouterr().out
    # a flag replaces its own condition only
    assert inverse_opt.verify_conditions(tmp_path, "ota", Conditions(temp=27), None, "B") == \
        Conditions(temp=27.0, corner="ss")
    # --process naming the data's process keeps them; another process starts from nominal (the flags)
    assert inverse_opt.verify_conditions(tmp_path, "ota", Conditions(), "B", "B") == Conditions(temp=85.0, corner="ss")
    assert inverse_opt.verify_conditions(tmp_path, "ota", Conditions(), "A", "A") == Conditions()
    # control: nominal data verify at nominal
    _meta(tmp_path, "nom", {"process": "B"})
    assert inverse_opt.verify_conditions(tmp_path, "nom", Conditions(), None, "B") == Conditions()


def _given_5t(n=12) -> pd.DataFrame:
    from data_loader.layout import read_folder
    return read_folder(LIBRARY.parents[2] / "data" / "5t_opamp" / "target").features.head(n)


def test_init_from_refuses_designs_simulated_at_other_conditions(tmp_path):
    given = _given_5t()
    folder = _meta(tmp_path, "5t_opamp", {"process": "B", "conditions": {"temp": 85, "corner": "ss"}})
    with pytest.raises(ToolkitError, match=r"simulated at 85 C, corner ss, but the loop simulates at nominal"):
        check_given_provenance(folder, given, list(given.columns), "5t_opamp", "B", {})
    # control: the same conditions pass, and so does a folder without a meta.json (nothing recorded)
    check_given_provenance(folder, given, list(given.columns), "5t_opamp", "B", {"temp": 85.0, "corner": "ss"})
    (folder / "meta.json").unlink()
    check_given_provenance(folder, given, list(given.columns), "5t_opamp", "B", {"temp": 85.0})


# ---------------------------------------------------------------- the model library is part of the process
def _process_with_library(tmp_path, cards="* cards\n"):
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / "node.lib").write_text(cards)
    p = tmp_path / "node.toml"
    p.write_text(B_HEAD + 'library = "models/node.lib"\n')
    return p


def test_a_model_library_edit_changes_the_generators_run_key(tmp_path):
    p = _process_with_library(tmp_path)
    key = generate.run_key(circuit("5t_opamp"), str(p), 0, 25, None)
    assert set(generate.process_digests(str(p))) == {"process_sha256", "library_sha256"}
    (tmp_path / "models" / "node.lib").write_text("* cards, vth0 edited\n")
    assert generate.run_key(circuit("5t_opamp"), str(p), 0, 25, None) != key     # a resume would mix the two
    assert generate.process_digests("B") == {}                                   # shipped: named, not hashed


def test_an_edited_library_is_refused_for_the_loop_and_warned_for_a_verification(tmp_path, capsys):
    p = _process_with_library(tmp_path)
    meta = {"recipe": generate.process_digests(str(p))}
    check_process_unchanged(str(p), meta, tmp_path / "meta.json", refuse=True)            # unchanged: silent
    (tmp_path / "models" / "node.lib").write_text("* edited\n")
    with pytest.raises(ToolkitError, match=r"its model library of .* changed since the data"):
        check_process_unchanged(str(p), meta, tmp_path / "meta.json", refuse=True)
    check_process_unchanged(str(p), meta, tmp_path / "meta.json", refuse=False)
    assert "warning: its model library" in capsys.readouterr().out


# ---------------------------------------------------------------- metrics the simulator does not measure
def _free(cols, goals, targets, bands):
    return Spec.build(cols, goals, targets, bands=bands)


def test_verify_refuses_a_goal_on_an_unmeasured_metric_and_leaves_a_free_one_unchecked():
    bounded = _free(["dc_gain", "noise"], ["min", "range"], [100.0, 1.0], {"noise": (0.0, 2.0)})
    with pytest.raises(ToolkitError, match=r"cannot check the goals on \['noise'\]"):
        check_verifiable(bounded)
    free = _free(["dc_gain", "noise"], ["min", "range"], [100.0, 1.0], {"noise": (-math.inf, math.inf)})
    assert check_verifiable(free) == ["noise"]
    x_cols = circuit("5t_opamp").features
    table = pd.DataFrame([[1.0] * len(x_cols)] * 2, columns=x_cols).assign(
        rank=[1, 2], pred_dc_gain=[150.0, 90.0], pred_noise=[1.0, 1.0])

    def simulate(opamp, x, process, **kw):    # the simulator's columns: no noise
        return pd.DataFrame({"dc_gain": np.full(len(x), 150.0), "status": "ok"})
    ver = verify_designs("5t_opamp", table.iloc[:1], free, simulate=simulate)
    assert ver["pass_noise"].all() and ver["sim_noise"].isna().all() and ver["pass_all"].tolist() == [True]
    from inverse.verify import format_verification
    assert "noise[free] pred 1 not simulated" in format_verification(ver, free)


# ---------------------------------------------------------------- near-twin candidates
def test_near_twins_of_a_continuous_variable_are_one_candidate():
    grid = [Rule("w", "step", 0.5, 50.0, step=0.5), Rule("itail", "range", 1e-6, 1e-4)]
    frame = pd.DataFrame({"w": [2.0, 2.0, 2.5, 2.0], "itail": [2.2e-5, 2.2004e-5, 2.2e-5, 2.3e-5]})
    near = near_keys(frame, ["w", "itail"], grid).to_numpy()
    assert near[0] == near[1] and len(set(near)) == 3           # 4th digit of a continuous variable: a twin
    assert first_of_each([1, 0, 2, 3], near, set()) == [1, 2, 3]
    assert first_of_each([0, 2, 3], near, {near[3]}) == [0, 2]   # twins of designs simulated already go too
    # a gridded variable keeps every digit it has
    assert len(set(near_keys(pd.DataFrame({"w": [2.0, 2.5]}), ["w"], grid))) == 2


def test_the_ranked_top_k_holds_no_near_twins():
    from tests.test_inverse import _analytic
    fwd = _analytic()
    base = np.array([20.0, 35.5, 8.0, 1.0, 1.5, 0.5, 10e-6])
    twins = np.array([base * np.where(np.arange(7) == 6, 1 + 1e-4 * k, 1.0) for k in range(5)])
    other = base * np.where(np.arange(7) == 0, 1.5, 1.0)
    spec = Spec.build(Y_COLS, ["range"] * 5, [1.0] * 5, bands={c: (-math.inf, math.inf) for c in Y_COLS})
    table, _, n_unique = rank_designs(fwd, spec, np.vstack([twins, other]), top_k=6, grid=None)
    assert n_unique == 6 and len(table) == 2 and list(table.columns[:8]) == ["rank", *X_COLS]


# ---------------------------------------------------------------- the infeasibility summary
def test_the_infeasibility_summary_counts_only_bounded_goals():
    from tests.test_inverse import _analytic
    from inverse.optimise import model_bounds, propose, random_starts
    from inverse.snap import GRID
    fwd = _analytic()
    pre = fwd.preprocessing
    y_hi = pre.inverse_y(np.full((1, 5), 3.0), clip=False)[0]      # out of the model's reach
    y_any = pre.inverse_y(np.zeros((1, 5)))[0]
    spec = Spec.build(Y_COLS, ["min", "range", "max", "range", "range"], [y_hi[0], 1.0, y_any[2] * 1e3, 1.0, 1.0],
                      bands={c: (-math.inf, math.inf) for c in ("dc_gain", "phase_margin", "cmrr")})
    lo, hi = model_bounds(pre, GRID)
    prop = propose(fwd, spec, random_starts(8, lo, hi, seed=0), steps=20, lr=0.05, lbfgs_steps=0, top_k=4, grid=GRID)
    s = prop.feasibility
    assert set(s["goals"]) == {"slewrate_pos", "ugf"} and s["best_tradeoff"]["misses"] == ["slewrate_pos"]
    assert "meets 1 of 2 goals" in "\n".join(feasibility.describe(s))


# ---------------------------------------------------------------- the refit command runs as printed
def test_the_refit_command_carries_the_members_and_the_run_flags(tmp_path, monkeypatch):
    import models.model_utils
    from inference.predict import refit_command
    config = {"OPAMP_TYPE": "ota", "DATA_DIR": "mywork/data", "RESULTS_DIR": "elsewhere", "SEED": 3,
              "N_TARGET_TRAIN": 0}
    monkeypatch.setattr(models.model_utils, "read_checkpoint_meta", lambda p: {"config": config})
    got = refit_command(tmp_path, "ota", ["target_only", "gp_stack"], tmp_path / "x.pth")
    assert got == (f"Rerun python -m inference.infer_ensemble --opamp ota --data-dir mywork/data --results-dir "
                   f"{tmp_path} --seed 3 --members target_only,gp_stack")
    config["N_TARGET_TRAIN"] = 50     # infer_ensemble has no --n-target: the setting instead, so it runs as printed
    got = refit_command(tmp_path, "ota", ["target_only"], tmp_path / "x.pth")
    assert got.endswith("--seed 3 --set N_TARGET_TRAIN=50 --members target_only")
    from inference import infer_ensemble
    args, settings = infer_ensemble.parse_args(got.split("infer_ensemble ")[1].split())
    assert settings["N_TARGET_TRAIN"] == 50 and settings["DATA_DIR"] == "mywork/data"


# ---------------------------------------------------------------- spec files
def test_a_refused_spec_prints_its_one_error_line_only_and_degrees_take_the_sign(tmp_path):
    said = []
    bad = tmp_path / "bad.toml"
    bad.write_text('[goals]\ndc_gain = ">= 40 dB"\nugf = ">= 1 Mhz"\n')
    with pytest.raises(ToolkitError, match="Mhz"):
        load_spec(bad, Y_COLS, np.ones(5), warn=said.append)
    assert said == []                                     # no "left free" notes before the error
    ok = tmp_path / "ok.toml"
    ok.write_text('[goals]\nphase_margin = ">= 60°"\n')
    spec = load_spec(ok, Y_COLS, np.ones(5), warn=said.append)
    assert spec.lo[Y_COLS.index("phase_margin")] == 60.0 and len(said) == 4     # the notes, after a good read


# ---------------------------------------------------------------- circuits the simulator cannot run
def _circuit(tmp_path, netlist_line="m4 out x vdd vdd pmos w=10 l=1", slew='"dv * cl / ibias"', name="c"):
    from tests.test_spice_process_file import VOS_OTA
    text = VOS_OTA.replace("m4 out x vdd vdd pmos w=10 l=1", netlist_line).replace('"dv * cl / ibias"', slew)
    f = tmp_path / f"{name}.toml"     # one file per variant: circuits are cached by path
    f.write_text(text)
    return f


def test_a_negative_width_or_slew_time_is_refused_before_any_simulation(tmp_path):
    proc = resolve_process("B")
    check_design_space(str(_circuit(tmp_path)), proc)                                        # control
    with pytest.raises(ToolkitError, match=r"device m4 w = -3 um: a transistor's w must be > 0"):
        check_design_space(str(_circuit(tmp_path, "m4 out x vdd vdd pmos w=-3 l=1", name="neg_w")), proc)
    with pytest.raises(ToolkitError, match=r"slew_time = 'dv \* cl / ibias - 1' is -1 s for the design"):
        check_design_space(str(_circuit(tmp_path, slew='"dv * cl / ibias - 1"', name="neg_slew")), proc)


@needs_lib
def test_a_dead_circuit_stops_after_its_first_chunks_whatever_n(tmp_path):
    from tests.test_spice_process_file import SHORTED
    c = tmp_path / "short.toml"
    c.write_text(SHORTED)
    argv = ["--opamp", str(c), "--domain", "target", "--n", "2000", "--chunk", "5", "--workers", "1",
            "--out", str(tmp_path / "data"), "--no-progress"]
    with pytest.raises(ToolkitError, match=r"none of the first (\d+) designs") as e:
        generate.main(argv)
    n = int(str(e.value).split("none of the first ")[1].split()[0])
    assert n <= generate.MAX_FAILED_START * 5, n          # not ~2,000 / 0.05 designs first
