"""python -m active: acquisition rules, the loop on real ngspice (tiny), resume, failed simulations, bad input."""
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import active
from active_learning.acquisition import score, select, spec_probability
from active_learning.choose import choose, uniform_draws, val_designs
from active_learning.given import given_designs
from core.errors import ToolkitError
from inverse.optimise import design_keys
from models.model_utils import read_checkpoint_meta
from tests.spice_helpers import needs_ngspice

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--set", "EPOCHS=2", "--set", "GP_MAX_ROWS=60", "--members", "target_only,gp_stack", "--jobs", "1",
        "--no-plot"]


# ---------------------------------------------------------------- acquisition rules
def test_score_is_variance_relative_to_each_metrics_spread():
    mean = np.array([[0.0, 0.0], [2.0, 20.0], [4.0, 40.0]])
    std = np.array([[1.0, 10.0], [0.0, 0.0], [2.0, 1.0]])
    expected = std[:, 0] ** 2 / mean[:, 0].var() + std[:, 1] ** 2 / mean[:, 1].var()
    np.testing.assert_allclose(score(mean, std), expected)
    # a metric scaled by 10 (units) leaves the score unchanged: it is normalised per metric
    np.testing.assert_allclose(score(mean * [1, 10], std * [1, 10]), expected)


def _two_regions(n=400, n_a=40, seed=0):
    """Candidates in two separated regions: a small region A (the first ``n_a``) slightly more uncertain
    than the large region B."""
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(-3, 0.3, (n_a, 2)), rng.normal(3, 1.0, (n - n_a, 2))])
    mean = rng.normal(0, 1, (n, 3))
    std = np.vstack([np.full((n_a, 3), 1.0), np.full((n - n_a, 3), 0.9)]) + rng.uniform(0, 0.05, (n, 3))
    return x, mean, std


def test_uncertainty_takes_the_largest_scores_and_random_does_not():
    x, mean, std = _two_regions()
    top = select("uncertainty", x, mean, std, batch=10, rng=np.random.default_rng(0))
    s = score(mean, std)
    assert set(top) == set(np.argsort(-s)[:10])
    rand = select("random", x, mean, std, batch=10, rng=np.random.default_rng(0))
    assert len(set(rand)) == 10 and s[rand].mean() < s[top].mean()     # control: random is less uncertain


def test_diverse_spreads_a_batch_over_regions_that_uncertainty_crowds_into_one():
    x, mean, std = _two_regions()
    crowded = select("uncertainty", x, mean, std, batch=10, rng=np.random.default_rng(0))
    assert (crowded < 40).all()                                       # all from the small region A
    diverse = select("diverse", x, mean, std, batch=10, rng=np.random.default_rng(0))
    assert len(set(diverse)) == 10
    spread = lambda idx: np.mean([np.linalg.norm(x[i] - x[j]) for i in idx for j in idx if i < j])  # noqa: E731
    assert spread(diverse) > 3 * spread(crowded) and (diverse >= 40).any() and (diverse < 40).any()
    s = score(mean, std)
    assert s[diverse].mean() > np.median(s)                           # still among the uncertain ones


def test_feasibility_learns_where_simulations_fail_and_steers_the_batch_away():
    from active_learning.acquisition import feasibility
    rng = np.random.default_rng(0)
    seen = rng.uniform(-2, 2, (60, 3))
    ok = seen[:, 0] > -1.2                                              # designs with x0 below -1.2 fail
    pool = rng.uniform(-2, 2, (400, 3))
    p_ok = feasibility(seen, ok, pool)
    assert p_ok[pool[:, 0] < -1.5].mean() < 0.3 < 0.8 < p_ok[pool[:, 0] > 0].mean()
    assert (feasibility(seen, np.ones(60, bool), pool) == 1).all()      # nothing failed yet: no weighting
    mean = rng.normal(0, 1, (400, 2))
    std = np.where(pool[:, :1] < -1.5, 2.0, 1.0) * np.ones((400, 2))   # the failing edge looks most uncertain
    blind = select("uncertainty", pool, mean, std, batch=10, rng=np.random.default_rng(0))
    aware = select("uncertainty", pool, mean, std, batch=10, rng=np.random.default_rng(0), p_ok=p_ok)
    assert (pool[blind, 0] < -1.5).all() and (pool[aware, 0] < -1.5).mean() < 0.5


# ---------------------------------------------------------------- the loop (real ngspice, tiny data)
@pytest.fixture
def tiny_data(tmp_path):
    """The shipped 5t_opamp layout cut down: 400 source rows, 150 target rows (30 of them the test split)."""
    for domain, n in (("source", 400), ("target", 150)):
        dest = tmp_path / "data" / "5t_opamp" / domain
        dest.mkdir(parents=True)
        for name in ("features.csv", "targets.csv"):
            pd.read_csv(ROOT / "data" / "5t_opamp" / domain / name).head(n).to_csv(dest / name, index=False)
    return tmp_path / "data"


def test_test_set_is_the_split_columns_test_rows_whatever_test_split_is(tiny_data, tmp_path):
    """A targets file with a split column: the loop scores every round on its "test" rows, as every stage reads it,
    also with TEST_SPLIT = 0; without the column TEST_SPLIT = 0 means no test set."""
    settings = active.parse_args(["--data-dir", str(tiny_data), "--opamp", "5t_opamp", "--seed", "3"])[1]
    settings["TEST_SPLIT"] = 0.0
    assert active.test_set(settings, tiny_data, "5t_opamp") is None
    data = tmp_path / "split"
    shutil.copytree(tiny_data, data)
    targets = data / "5t_opamp" / "target" / "targets.csv"
    y = pd.read_csv(targets)
    y["split"] = ["test" if i % 5 == 0 else "val" if i % 5 == 1 else "train" for i in range(len(y))]
    y.to_csv(targets, index=False)
    x_test, y_test = active.test_set(settings, data, "5t_opamp")
    x = pd.read_csv(data / "5t_opamp" / "target" / "features.csv")
    assert len(x_test) == len(y_test) == 30
    assert np.allclose(x_test.to_numpy(float), x.iloc[::5].to_numpy(float))


def _run(data, out, *extra):
    return active.main(["--opamp", "5t_opamp", "--data-dir", str(data), "--seed", "3", "--out", str(out), *FAST,
                        *extra])


@needs_ngspice
def test_loop_simulates_the_budget_once_each_away_from_the_test_set_and_resumes(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = []
    real = active._simulate_chunk
    monkeypatch.setattr(active, "_simulate_chunk", lambda *a: calls.append(len(a[2])) or real(*a))
    res = _run(tiny_data, out, "--init", "20", "--batch", "10", "--pool", "300", "--budget", "40", "--rule", "diverse")
    ledger = pd.read_csv(out / "acquired.csv")
    assert len(ledger) == 40 == sum(calls)
    assert ledger["round"].value_counts().to_dict() == {0: 20, 1: 10, 2: 10}
    assert list(ledger["rule"].unique()) == ["random", "diverse"] and (ledger["seed"] == 3).all()
    x_cols = active.read_domain(tiny_data, "5t_opamp", "source").features.columns
    keys = design_keys(ledger, x_cols)
    assert keys.is_unique
    test_x, _ = active.test_set(active.parse_args(["--data-dir", str(tiny_data), "--opamp", "5t_opamp", "--seed", "3"])[1],
                                tiny_data, "5t_opamp")
    assert not keys.isin(set(design_keys(test_x, x_cols))).any()      # never a test design
    rows = res["progress"]
    assert [r["simulations"] for r in rows] == [20, 30, 40]
    assert all(np.isfinite(r["test_r2_log"]) and np.isfinite(r["val_r2_log"]) for r in rows)
    assert (out / "active.md").is_file() and (out / "data" / "5t_opamp" / "target" / "features.csv").is_file()
    # the source baseline is trained once (round 0) and reused, with one preprocessing for every round
    r0, r2 = out / "rounds" / "r00", out / "rounds" / "r02"
    name = "5t_opamp_baseline_model.pth"
    assert (r2 / name).read_bytes() == (r0 / name).read_bytes() and (out / "preprocessing.json").is_file()
    assert "skip  (up to date: 5t_opamp_baseline_model.pth)" in (r2 / "pipeline.log").read_text()
    # the training data the last round saw = every OK design simulated
    feats = pd.read_csv(out / "data" / "5t_opamp" / "target" / "features.csv")
    assert len(feats) == 40
    # the simulator's sign of Re(Adm/Acm) is kept per design and given to the rounds beside the metrics
    ok = ledger["status"] == "ok"
    assert ledger.loc[ok, "cmrr_sign"].isin([-1.0, 1.0]).all()
    signs = pd.read_csv(out / "data" / "5t_opamp" / "target" / "metric_signs.csv")
    assert list(signs.columns) == ["cmrr"] and len(signs) == 40

    # a larger budget continues the same run: one more round, nothing simulated again
    calls.clear()
    _run(tiny_data, out, "--init", "20", "--batch", "10", "--pool", "300", "--budget", "50", "--rule", "diverse")
    again = pd.read_csv(out / "acquired.csv")
    assert len(again) == 50 and sum(calls) == 10
    pd.testing.assert_frame_equal(again.head(40), ledger)
    assert [json.loads(line)["simulations"] for line in (out / "progress.jsonl").read_text().splitlines()] == \
        [20, 30, 40, 50]

    # the same folder with another rule is refused with the fix
    with pytest.raises(active.ToolkitError, match="other settings .*rule"):
        _run(tiny_data, out, "--init", "20", "--batch", "10", "--pool", "300", "--budget", "50", "--rule", "random")

    # moved (the checkpoints recorded the old data path): the first round after it retrains the source baseline,
    # and the rounds after reuse that one, not round 0's
    moved = tmp_path / "moved"
    out.rename(moved)
    _run(tiny_data, moved, "--init", "20", "--batch", "10", "--pool", "300", "--budget", "70", "--rule", "diverse")
    logs = [(moved / "rounds" / r / "pipeline.log").read_text() for r in ("r04", "r05")]
    assert "baseline      run   (settings changed: DATA_DIR" in logs[0]
    assert "skip  (up to date: 5t_opamp_baseline_model.pth)" in logs[1]


@needs_ngspice
def test_interrupted_round_resumes_without_simulating_twice_and_failed_designs_are_kept(tiny_data, tmp_path,
                                                                                        monkeypatch):
    out = tmp_path / "run"
    real = active._simulate_chunk

    def flaky(circuit, process, rows, x_cols, *conditions_power):      # every design whose w1 > 40 um "fails"
        done = real(circuit, process, rows, x_cols, *conditions_power)
        bad = done["w1"] > 40
        done.loc[bad, "status"] = "nonconvergence"
        done.loc[bad, ["slewrate_pos", "dc_gain", "ugf", "phase_margin", "cmrr"]] = np.nan
        return done

    calls = []
    monkeypatch.setattr(active, "_simulate_chunk", lambda *a: calls.append(len(a[2])) or flaky(*a))
    real_train = active.train_round
    state = {"n": 0}

    def stop_in_round_1(*a, **k):
        state["n"] += 1
        if state["n"] == 2:
            raise KeyboardInterrupt
        return real_train(*a, **k)

    monkeypatch.setattr(active, "train_round", stop_in_round_1)
    args = ["--init", "20", "--batch", "10", "--pool", "300", "--budget", "40", "--rule", "uncertainty"]
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_data, out, *args)
    assert len(pd.read_csv(out / "acquired.csv")) == 30 and sum(calls) == 30     # round 1 simulated, then Ctrl-C
    monkeypatch.setattr(active, "train_round", real_train)
    calls.clear()
    _run(tiny_data, out, *args)
    ledger = pd.read_csv(out / "acquired.csv")
    assert len(ledger) == 40 and sum(calls) == 10 and ledger["design"].is_unique
    failed = ledger[ledger["status"] != "ok"]
    assert len(failed) > 0 and failed["slewrate_pos"].isna().all()             # kept, with the status
    rows = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2] and rows[-1]["failed"] == len(failed)

    # Ctrl-C after the last round's simulations, before its training: the resume trains and scores that round
    # (it used to stop at once, the budget being spent, and leave the last batch untrained)
    state["n"] = 0
    monkeypatch.setattr(active, "train_round", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    args[-3] = "50"
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_data, out, *args)
    assert len(pd.read_csv(out / "acquired.csv")) == 50
    monkeypatch.setattr(active, "train_round", real_train)
    calls.clear()
    _run(tiny_data, out, *args)
    rows = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2, 3] and rows[-1]["simulations"] == 50 and sum(calls) == 0


@needs_ngspice
def test_dask_workers_simulate_the_same_rows_and_the_training_data_has_a_fixed_order(tmp_path):
    distributed = pytest.importorskip("distributed")
    from active_learning.ledger import read_ledger, write_training_data
    from spice.circuits import circuit
    x_cols = circuit("5t_opamp").features
    y_cols = ["slewrate_pos", "dc_gain", "ugf", "phase_margin", "cmrr"]
    batch = active.draw("5t_opamp", 5, 0, 12, set())
    batch.insert(1, "round", 0), batch.insert(2, "rule", "random"), batch.insert(3, "seed", 5)
    kw = dict(circuit="5t_opamp", process="B", x_cols=x_cols, y_cols=y_cols, desc="t")
    local = active.simulate_batch(batch, read_ledger(tmp_path / "a.csv", x_cols, y_cols), tmp_path / "a.csv",
                                  workers=2, backend="local", scheduler=None, **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        remote = active.simulate_batch(batch, read_ledger(tmp_path / "b.csv", x_cols, y_cols), tmp_path / "b.csv",
                                       workers=2, backend="dask", scheduler=c.scheduler_address, **kw)
    for k, (ledger, folder) in enumerate(((local, tmp_path / "da"), (remote, tmp_path / "db"))):
        write_training_data(ledger.sample(frac=1, random_state=k), folder, x_cols, y_cols,   # any finishing order
                            val_split=0.2, seed=5)
    for name in ("features.csv", "targets.csv"):
        assert (tmp_path / "da" / name).read_text() == (tmp_path / "db" / name).read_text()
    assert len(pd.read_csv(tmp_path / "da" / "features.csv")) == 12


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written
@pytest.mark.parametrize("extra, message", [
    (["--budget", "20", "--init", "25"], "smaller than the initial set"),
    (["--pool", "0"], "ACTIVE_POOL must be"),
    (["--batch", "0"], "ACTIVE_BATCH must be"),
    (["--pool", "10", "--batch", "25"], "smaller than --batch"),
    (["--init", "5"], "ACTIVE_INIT must be"),
    (["--rule", "greedy"], "ACTIVE_RULE must be one of"),
    (["--rule", "integrate"], "Did you mean --rule integrated"),
    (["--members", "nope"], "Unknown ensemble member"),
    (["--rule", "integrated", "--members", "target_only"], "--rule integrated (ACTIVE_RULE) needs the GP member"),
    (["--rule", "mixed_integrated", "--members", "target_only"], "--rule mixed_integrated (ACTIVE_RULE) needs the GP"),
    (["--members", "target_only"], "--rule integrated (ACTIVE_RULE) needs the GP member"),   # the default rule
])
def test_bad_sizes_are_one_line_and_write_nothing(tiny_data, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        active.run_main(active.main, ["--opamp", "5t_opamp", "--data-dir", str(tiny_data), "--out", str(out), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_data_without_a_design_space_is_refused(tmp_path, tiny_data, capsys):
    shutil.copytree(tiny_data / "5t_opamp", tmp_path / "mine" / "my_amp")   # not a shipped name, no meta.json
    with pytest.raises(SystemExit) as exc:
        active.run_main(active.main, ["--opamp", "my_amp", "--data-dir", str(tmp_path / "mine"),
                                      "--out", str(tmp_path / "run")])
    assert exc.value.code == 2 and "no design space" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_missing_ngspice_is_refused_before_anything_is_written(tiny_data, tmp_path, capsys, monkeypatch):
    import inverse.verify
    monkeypatch.setattr(inverse.verify, "ngspice_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        active.run_main(active.main, ["--opamp", "5t_opamp", "--data-dir", str(tiny_data), "--out", str(tmp_path / "r")])
    assert exc.value.code == 2 and "needs ngspice" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_an_ngspice_library_that_does_not_load_is_refused_before_anything_is_written(tiny_data, tmp_path, capsys,
                                                                                     monkeypatch):
    """NGSPICE_LIBRARY at a missing file (or a stale linker cache) passed the check; the loop then wrote its state,
    data and first batch, failed, and refused the corrected rerun as "other settings"."""
    monkeypatch.setenv("NGSPICE_LIBRARY", str(tmp_path / "nowhere" / "libngspice.so"))
    with pytest.raises(SystemExit) as exc:
        active.run_main(active.main, ["--opamp", "5t_opamp", "--data-dir", str(tiny_data),
                                      "--out", str(tmp_path / "r")])
    assert exc.value.code == 2 and "could not load the ngspice shared library" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_second_loop_on_a_folder_in_use_is_refused(tiny_data, tmp_path):
    import subprocess
    import sys
    import time
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from core.outputs import results_lock\n"
                               f"with results_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        with pytest.raises(active.ToolkitError, match="Another run is writing to"):
            _run(tiny_data, out, "--init", "20", "--batch", "10", "--pool", "300", "--budget", "40")
        assert time.perf_counter() - t0 < 30 and not (out / "acquired.csv").exists()
    finally:
        holder.kill()


def test_mixed_takes_half_at_random_and_half_by_the_diverse_rule():
    x, mean, std = _two_regions()
    pick = select("mixed", x, mean, std, batch=10, rng=np.random.default_rng(0))
    assert len(set(pick)) == 10
    s = score(mean, std)
    top = set(np.argsort(-s)[:100])                                   # the diverse half comes from the top scores
    assert sum(i in top for i in pick[:5]) == 5 and sum(i in top for i in pick[5:]) < 5


def _gp_posterior(x_train, x, noise, ls=0.3):
    """Posterior covariance of a 1-metric GP (squared-exponential kernel, unit amplitude) over ``x``."""
    k = lambda a, b: np.exp(-0.5 * ((a[:, None] - b[None]) / ls) ** 2)    # noqa: E731
    kt = k(x_train, x_train) + noise * np.eye(len(x_train))
    return k(x, x) - k(x, x_train) @ np.linalg.solve(kt, k(x_train, x))


def test_integrated_picks_what_lowers_the_variance_everywhere_and_conditions_on_each_pick():
    from active_learning.acquisition import integrated
    x = np.linspace(0, 1, 201)                      # the pool: a uniform line
    x_train, noise = np.array([0.3, 0.35, 0.4]), 1e-4
    cov = _gp_posterior(x_train, x, noise)[None]
    first = integrated(cov, np.array([noise]), np.array([1.0]), 1)[0]
    # brute force: the design whose simulation leaves the least total variance over the pool
    left = [np.trace(_gp_posterior(np.append(x_train, x[c]), x, noise)) for c in range(len(x))]
    assert first == int(np.argmin(left))
    # uncertainty would take an end of the line (largest variance); the integral prefers a design inside
    assert np.argmax(np.diag(cov[0])) in (0, len(x) - 1) and 0 < first < len(x) - 1
    # the second pick is the brute-force best given the first: the rank-one update is the GP's posterior
    pair = integrated(cov, np.array([noise]), np.array([1.0]), 2)
    left2 = [np.trace(_gp_posterior(np.append(x_train, [x[first], x[c]]), x, noise)) for c in range(len(x))]
    assert pair[0] == first and pair[1] == int(np.argmin(left2))
    # a batch spreads out over both sides of the simulated designs (the 6 most uncertain are neighbours
    # 0.005 apart at one end of the line)
    six = np.sort(x[integrated(cov, np.array([noise]), np.array([1.0]), 6)])
    assert np.diff(six).min() > 0.05 and (six < 0.3).any() and (six > 0.4).any()
    # a likely failure (weight ~0) is not picked
    w = np.ones(len(x))
    w[first] = 1e-3
    assert integrated(cov, np.array([noise]), np.array([1.0]), 1, w)[0] != first


def test_integrated_weighs_the_variance_by_its_worth_in_the_reported_space():
    from active_learning.acquisition import integrated
    x = np.linspace(0, 1, 201)
    x_train, noise = np.array([0.3, 0.35, 0.4]), 1e-4
    cov = _gp_posterior(x_train, x, noise)[None]
    args = (np.array([noise]), np.array([1.0]), 3)
    assert (integrated(cov, *args) == integrated(cov, *args, None, np.ones((1, len(x))))).all()
    # a unit of variance near x = 0.6 is worth 50 elsewhere's (a ratio metric's spike): the first pick goes there,
    # and it is the brute-force best for the weighed integral
    g = np.where(np.abs(x - 0.6) < 0.05, 50.0, 1.0)[None]
    first = integrated(cov, *args[:2], 1, None, g)[0]
    left = [g[0] @ np.diag(_gp_posterior(np.append(x_train, x[c]), x, noise)) for c in range(len(x))]
    assert first == int(np.argmin(left)) and abs(x[first] - 0.6) < 0.1
    assert abs(x[integrated(cov, *args[:2], 1)[0]] - 0.6) > 0.1      # unweighed, it goes elsewhere
    with pytest.raises(ValueError, match="sensitivity"):
        integrated(cov, *args, None, -g)


def test_mixed_integrated_draws_half_at_random_and_conditions_the_integrated_half_on_it():
    from active_learning.acquisition import integrated
    x = np.linspace(0, 1, 201)
    x_train, noise = np.array([0.3, 0.35, 0.4]), 1e-4
    cov = _gp_posterior(x_train, x, noise)[None]
    # given designs: the pick is the brute-force best after them, never one of them, and they are not returned
    given = np.array([40, 170])
    left = [np.trace(_gp_posterior(np.concatenate([x_train, x[given], [x[c]]]), x, noise)) for c in range(len(x))]
    for c in given:
        left[c] = np.inf
    pick = integrated(cov, np.array([noise]), np.array([1.0]), 1, given=given)
    assert pick.tolist() == [int(np.argmin(left))]
    assert pick[0] != integrated(cov, np.array([noise]), np.array([1.0]), 1)[0]   # the given ones moved it
    with pytest.raises(ValueError, match="given"):
        integrated(cov, np.array([noise]), np.array([1.0]), 1, given=[3, 3])
    # the rule: the first half is the same uniform draw as the random rule's, the second half integrated given it
    mean, std = x[:, None] * 2, np.full((len(x), 1), 0.1)
    got = select("mixed_integrated", x[:, None], mean, std, batch=6, rng=np.random.default_rng(5),
                 gp_cov=(cov, np.array([noise])))
    explore = np.random.default_rng(5).choice(len(x), 3, replace=False)
    rest = integrated(cov, np.array([noise]), np.array([1.0]) * mean.var(), 3, given=explore)
    assert got.tolist() == explore.tolist() + rest.tolist() and len(set(got.tolist())) == 6
    with pytest.raises(ToolkitError, match="gp_stack"):
        select("mixed_integrated", x[:, None], mean, std, batch=6, rng=np.random.default_rng(0))


def test_integrated_rule_needs_the_gp_covariance():
    x, mean, std = _two_regions()
    with pytest.raises(ToolkitError, match="gp_stack"):
        select("integrated", x, mean, std, batch=5, rng=np.random.default_rng(0))


def _loop_rows(root, rule: str, seed: int, **per_round):
    """A finished two-round loop's progress.jsonl under ``root`` (the benchmark's layout); ``per_round``: field ->
    function of the round k."""
    folder = root / "5t_opamp" / f"{rule}_seed{seed}"
    folder.mkdir(parents=True)
    rows = [{"round": k, "rule": rule, "seed": seed, "simulations": 25 * (k + 1), "failed": k, "val_r2_log": 0.9,
             "select_s": 1.0, "simulate_s": 0.5, "train_s": 30.0, **{f: fn(k) for f, fn in per_round.items()}}
            for k in range(2)]
    (folder / "progress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_benchmark_report_averages_seeds_and_compares_with_random(tmp_path):
    from benchmarks import active_benchmark as bench
    root = tmp_path / "bench"
    for rule, shift in (("random", 0.0), ("mixed", 0.01)):
        for seed in (0, 1):
            _loop_rows(root, rule, seed, test_r2_log=lambda k: 0.8 + 0.05 * k + shift + 0.002 * seed)
    doc = tmp_path / "RESULTS.md"
    out = bench.main(["--opamp", "5t_opamp", "--rules", "random", "mixed", "--seeds", "0", "1", "--budget", "50",
                      "--results-root", str(root), "--reference", "0.85", "--docs-path", str(doc), "--report-only"])
    text = doc.read_text()
    assert "| 50 | 0.8510 ± 0.0014 (2) | 0.8610 ± 0.0014 (2) |" in text
    assert "2 of 2 budgets" in text and "--report-only" not in text
    assert (tmp_path / "learning_curve_active_5t_opamp.png").is_file()
    assert out["curves"]["mixed"][0][:2] == (25, pytest.approx(0.811))
    assert "log-space R² per metric" not in text              # the loops recorded no per-metric R²
    assert "calibrated 95 % interval" not in text             # nor a coverage


def test_benchmark_tabulates_the_test_coverage_of_the_95_percent_intervals_per_seed_range(tmp_path):
    from benchmarks import active_benchmark as bench
    root = tmp_path / "bench"
    for rule, cov in (("random", 0.90), ("integrated", 0.95)):
        for seed in (0, 1):
            _loop_rows(root, rule, seed, test_r2_log=lambda k: 0.9, test_cov95=lambda k: cov + 0.02 * seed)
    text = bench.main(["--opamp", "5t_opamp", "--rules", "random", "integrated", "--seeds", "0", "1", "--budget",
                       "50", "--results-root", str(root), "--report-only"])["text"]
    assert "| 50 | 0.910 (0.900–0.920) | 0.960 (0.950–0.970) |" in text
    assert "| 25 | 0.910" not in text                          # a row every 50 simulations


def test_benchmark_tabulates_each_metric_every_50_simulations(tmp_path):
    from benchmarks import active_benchmark as bench
    root = tmp_path / "bench"
    for rule, cmrr in (("random", 0.5), ("integrated", 0.4)):
        for seed in (0, 1):
            _loop_rows(root, rule, seed, test_r2_log=lambda k: 0.9,
                       test_r2_log_per_metric=lambda k: {"ugf": 0.99 + 0.002 * seed, "cmrr": cmrr + 0.1 * k})
    out = bench.main(["--opamp", "5t_opamp", "--rules", "random", "integrated", "--seeds", "0", "1", "--budget", "50",
                      "--results-root", str(root), "--report-only"])
    assert "| 50 | random | 0.991 | 0.600 |" in out["text"] and "| 50 | integrated | 0.991 | 0.500 |" in out["text"]
    rows = [line for line in out["text"].splitlines() if line.endswith((" |", "|")) and
            ("| random | 0." in line or "| integrated | 0." in line)]
    assert len(rows) == 2 and all(line.startswith("| 50 |") for line in rows)   # only every 50 simulations


def test_benchmark_with_a_spec_counts_the_designs_meeting_it_in_its_own_block(tmp_path):
    from benchmarks import active_benchmark as bench
    root = tmp_path / "bench"
    for rule, found in (("random", 1), ("spec", 6)):
        for seed in (0, 1):
            _loop_rows(root, rule, seed, test_r2_log=lambda k: 0.8, spec_met=lambda k: found * k,
                       spec_met_total=lambda k: found * k + seed)
    doc = tmp_path / "RESULTS.md"
    doc.write_text("<!-- benchmarks.run:active:5t_opamp start -->\nkept\n<!-- benchmarks.run:active:5t_opamp end -->\n")
    bench.main(["--opamp", "5t_opamp", "--rules", "random", "spec", "--seeds", "0", "1", "--budget", "50",
                "--results-root", str(root), "--docs-path", str(doc), "--report-only", "--", "--spec", "s.toml"])
    text = doc.read_text()
    assert "| 50 | 1.5 (2) | 6.5 (2) |" in text and "meeting the spec so far" in text
    assert "kept" in text                                     # the plain active block is not overwritten
    assert (tmp_path / "learning_curve_active-spec_5t_opamp.png").is_file()


def test_benchmark_block_option_names_its_own_block_and_refuses_a_bad_name(tmp_path):
    from benchmarks import active_benchmark as bench
    root = tmp_path / "bench"
    for rule in ("random", "integrated"):
        _loop_rows(root, rule, 0, test_r2_log=lambda k: 0.8)
    doc = tmp_path / "RESULTS.md"
    doc.write_text("<!-- benchmarks.run:active:5t_opamp start -->\nkept\n<!-- benchmarks.run:active:5t_opamp end -->\n"
                   "<!-- benchmarks.run:active-alc:5t_opamp start -->\nold\n<!-- benchmarks.run:active-alc:5t_opamp end -->\n")
    args = ["--opamp", "5t_opamp", "--rules", "random", "integrated", "--seeds", "0", "--budget", "50",
            "--results-root", str(root), "--docs-path", str(doc), "--report-only"]
    bench.main(args + ["--block", "active-alc"])
    text = doc.read_text()
    assert "kept" in text and "old" not in text and "### 5t_opamp: random vs integrated" in text
    assert (tmp_path / "learning_curve_active-alc_5t_opamp.png").is_file()
    with pytest.raises(ToolkitError, match="--block must be"):
        bench.main(args + ["--block", "Active alc"])


@needs_ngspice
def test_init_from_the_users_designs_records_them_and_spends_the_budget_on_new_ones(tiny_data, tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    tgt = tiny_data / "5t_opamp" / "target"
    feats, targs = pd.read_csv(tgt / "features.csv").head(60), pd.read_csv(tgt / "targets.csv").head(60)
    targs.loc[3, "cmrr"] = np.nan                     # one failed design among the user's
    feats.to_csv(mine / "my_features.csv", index=False)
    targs.to_csv(mine / "my_targets.csv", index=False)
    calls = []
    real = active._simulate_chunk
    monkeypatch.setattr(active, "_simulate_chunk", lambda *a: calls.append(len(a[2])) or real(*a))
    out = tmp_path / "run"
    res = _run(tiny_data, out, "--init-from", str(mine), "--batch", "10", "--pool", "300", "--budget", "10")
    ledger = pd.read_csv(out / "acquired.csv")
    given = ledger[ledger["rule"] == "given"]
    x_cols = list(feats.columns)
    test_x, _ = active.test_set(active.parse_args(["--data-dir", str(tiny_data), "--opamp", "5t_opamp", "--seed", "3"])[1],
                                tiny_data, "5t_opamp")
    in_test = design_keys(feats, x_cols).isin(set(design_keys(test_x, x_cols)))
    assert 0 < in_test.sum() < 60                                          # the fixture's split puts some there
    assert len(given) == 60 - in_test.sum() and (given["design"] < 0).all() and sum(calls) == 10
    assert not design_keys(ledger, x_cols).isin(set(design_keys(test_x, x_cols))).any()
    assert (given["status"] != "ok").sum() == (0 if in_test[3] else 1)
    assert [(r["simulations"], r["given"]) for r in res["progress"]] == [(0, len(given)), (10, len(given))]
    assert given["cmrr_sign"].isna().all()             # not simulated here: no sign, so no signs file either
    assert not (out / "data" / "5t_opamp" / "target" / "metric_signs.csv").exists()
    # rerun: nothing simulated or recorded again
    calls.clear()
    _run(tiny_data, out, "--init-from", str(mine), "--batch", "10", "--pool", "300", "--budget", "10")
    assert sum(calls) == 0 and len(pd.read_csv(out / "acquired.csv")) == len(ledger)


@pytest.mark.parametrize("damage, message", [("drop", "lacks the metric columns ['cmrr']"), ("few", "needs >= 10"),
                                             ("extra", "has design variable columns ['w4'] that are not"),
                                             ("metres", "'w1' spans"),      # widths in m against the circuit's um
                                             ("process", "simulated in process A, but the loop simulates in B"),
                                             ("circuit", "come from circuit two_stage_opamp, but the loop simulates")])
def test_init_from_bad_folders_are_one_line_and_write_nothing(tiny_data, tmp_path, capsys, damage, message):
    mine = tmp_path / "mine"
    mine.mkdir()
    tgt = tiny_data / "5t_opamp" / "target"
    n = 5 if damage == "few" else 40
    feats = pd.read_csv(tgt / "features.csv").iloc[-n:]
    feats = feats.assign(w4=1.0) if damage == "extra" else feats                        # another circuit's columns
    feats = feats.assign(w1=feats["w1"] * 1e-6) if damage == "metres" else feats
    feats.to_csv(mine / "features.csv", index=False)
    if damage in ("process", "circuit"):          # what spice.generate records: a source folder, another circuit
        meta = {"process": "A"} if damage == "process" else {"process": "B", "circuit_file": "two_stage_opamp"}
        (mine / "meta.json").write_text(json.dumps(meta))
    targs = pd.read_csv(tgt / "targets.csv").iloc[-n:]
    (targs.drop(columns="cmrr") if damage == "drop" else targs).to_csv(mine / "targets.csv", index=False)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        active.run_main(active.main, ["--opamp", "5t_opamp", "--data-dir", str(tiny_data), "--out", str(out),
                                      "--init-from", str(mine)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_spec_probability_is_the_product_of_per_metric_normal_masses():
    from scipy.stats import norm
    mean = np.array([[0.0, 1.0], [2.0, -1.0]])
    std = np.array([[1.0, 0.5], [1.0, 2.0]])
    lo, hi = np.array([-1.0, -1e5]), np.array([1e5, 2.0])      # metric 0 >= -1, metric 1 <= 2
    want = np.array([norm.cdf(1.0) * norm.cdf(2.0), norm.cdf(3.0) * norm.cdf(1.5)])
    np.testing.assert_allclose(spec_probability(mean, std, lo, hi), want, rtol=1e-9)


def test_spec_rule_simulates_where_the_spec_is_likely_met_spread_out():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (400, 2))
    mean = np.stack([x[:, 0], x[:, 1]], axis=1)                        # the prediction follows the design
    std = np.full_like(mean, 0.3)
    bounds = (np.array([1.0, -1e5]), np.array([1e5, 1e5]))             # goal: metric 0 >= 1 (x0 >= 1)
    pick = select("spec", x, mean, std, batch=10, rng=np.random.default_rng(1), spec_bounds=bounds)
    assert len(set(pick)) == 10 and (x[pick, 0] > 0.6).all()           # where the goal is likely met
    assert np.ptp(x[pick, 1]) > 2.0                                     # spread over the other variable
    control = select("random", x, mean, std, batch=10, rng=np.random.default_rng(1))
    assert (x[control, 0] > 0.6).mean() < 0.7
    with pytest.raises(ToolkitError, match="needs a spec"):
        select("spec", x, mean, std, batch=10, rng=np.random.default_rng(1))


@needs_ngspice
def test_spec_rule_loop_reports_the_designs_meeting_the_spec(tiny_data, tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('[goals]\ndc_gain = ">= 40 dB"\nphase_margin = ">= 60 deg"\n')
    out = tmp_path / "run"
    res = _run(tiny_data, out, "--init", "20", "--batch", "10", "--pool", "300", "--budget", "30", "--rule", "spec",
               "--spec", str(spec))
    rows = res["progress"]
    ledger = pd.read_csv(out / "acquired.csv")
    met = ((ledger["dc_gain"] >= 100) & (ledger["phase_margin"] >= 60) & (ledger["status"] == "ok"))
    assert [r["spec_met_total"] for r in rows] == [int(met[ledger["round"] <= r["round"]].sum()) for r in rows]
    assert rows[-1]["spec_met"] == int(met[ledger["round"] == 1].sum())
    batch = pd.read_csv(out / "rounds" / "r01" / "batch.csv")
    assert "p_spec" in batch.columns and batch["p_spec"].between(0, 1).all()
    # ACTIVE_VAL_DESIGNS = auto (the default): the spec rule picks every design of a batch and validates on them
    assert (ledger.loc[ledger["round"] == 1, "rule"] == "spec").all()
    assert json.loads((out / "state.json").read_text())["key"]["val_designs"] == "picks"
    assert "met the spec" in (out / "active.md").read_text()


@needs_ngspice
def test_integrated_rule_loop_picks_distinct_pool_designs_from_the_gp_members_covariance(tiny_data, tmp_path,
                                                                                       monkeypatch):
    from active_learning import acquisition
    seen = []
    real = acquisition.integrated
    monkeypatch.setattr(acquisition, "integrated",
                        lambda cov, *a, **k: seen.append((cov.shape, a[4])) or real(cov, *a, **k))
    monkeypatch.setattr(acquisition, "INTEGRATED_POOL", 120)
    out = tmp_path / "run"
    _run(tiny_data, out, "--init", "20", "--batch", "10", "--pool", "300", "--budget", "30", "--rule", "integrated",
         "--set", "SIGNED_RATIO=true")   # the GP member learns cmrr through its sign: a SignedRatio around it
    gp = [read_checkpoint_meta(p) for p in sorted(out.rglob("*_gp_stack.pth"))]
    assert gp and {m["model_class"] for m in gp} == {"SignedRatio"}
    ledger = pd.read_csv(out / "acquired.csv")
    # round 1: the uniform validation draws first (ACTIVE_VAL_DESIGNS = uniform: ceil(0.2 x 10)), then the picks
    assert ledger["rule"].tolist() == ["random"] * 22 + ["integrated"] * 8
    assert design_keys(ledger, active.read_domain(tiny_data, "5t_opamp", "source").features.columns).is_unique
    assert [shape for shape, _ in seen] == [(5, 120, 120)]   # one round chosen, 5 metrics over a 120-design subset
    # the signed cmrr's u variance is weighed by what it is worth in cmrr's model space (var_model / var_u of the
    # GP at each design); the other metrics' GP space is the model space (1)
    sens, cmrr = seen[0][1], 4
    assert sens.shape == (5, 120) and (np.delete(sens, cmrr, axis=0) == 1).all()
    assert (sens[cmrr] > 0).all() and sens[cmrr].max() / sens[cmrr].min() > 2


def test_spec_rule_without_a_spec_is_one_line_and_writes_nothing(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        active.run_main(active.main, ["--opamp", "5t_opamp", "--data-dir", str(tiny_data), "--out", str(out),
                                      "--rule", "spec"])
    assert exc.value.code == 2 and "--rule spec needs --spec" in capsys.readouterr().err and not out.exists()
    free = tmp_path / "free.toml"
    free.write_text('[goals]\nugf = "any"\n[weights]\ndc_gain = 2\n')   # "met" by every design
    with pytest.raises(SystemExit) as exc:
        active.run_main(active.main, ["--opamp", "5t_opamp", "--data-dir", str(tiny_data), "--out", str(out),
                                      "--rule", "spec", "--spec", str(free)])
    said = capsys.readouterr()
    assert exc.value.code == 2 and "nothing to aim at" in said.err and not out.exists()
    assert "weights.dc_gain has no effect" in said.out                  # the spec's warnings, as inverse_opt's


def test_benchmark_runs_a_warm_variant_of_a_rule_beside_it_in_its_own_block(tmp_path, monkeypatch):
    from benchmarks import active_benchmark as bench
    root, calls = tmp_path / "bench", []

    def fake_active(cmd, **_):   # a finished loop where python -m active would have run
        calls.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        shutil.rmtree(out)
        _loop_rows(root, out.name.rsplit("_seed", 1)[0], int(out.name.rsplit("_seed", 1)[1]),
                   test_r2_log=lambda k: 0.8 + 0.01 * k)
        return 0
    monkeypatch.setattr(bench.subprocess, "call", fake_active)
    monkeypatch.setattr(bench.active, "prepare", lambda argv: None)     # the loops' input checks: tested apart
    doc = tmp_path / "RESULTS.md"
    bench.main(["--opamp", "5t_opamp", "--rules", "random", "random+warm", "--seeds", "0", "--budget", "50",
                "--results-root", str(root), "--docs-path", str(doc)])
    assert [(c[c.index("--warm-start") + 1], c[c.index("--rule") + 1]) for c in calls] == \
        [("false", "random"), ("true", "random")]
    text = doc.read_text()
    assert "benchmarks.run:active-warm:5t_opamp start" in text and "| random | random+warm |" in text
    assert (tmp_path / "learning_curve_active-warm_5t_opamp.png").is_file()
    with pytest.raises(ToolkitError, match=r"Unknown rule.*random\+warm"):
        bench.parse_args(["--rules", "randm+warm"])
    calls.clear()   # +uval: the loop validates on uniform draws; every other rule on its picks, as first measured
    bench.main(["--opamp", "5t_opamp", "--rules", "random+warm", "integrated+warm+uval", "--seeds", "0", "--budget",
                "50", "--results-root", str(root), "--docs-path", str(doc)])
    assert [(c[c.index("--rule") + 1], c[c.index("--warm-start") + 1], c[c.index("--val-designs") + 1])
            for c in calls] == [("integrated", "true", "uniform")]          # random+warm ran above, with picks
    assert bench.random_control("integrated+warm+uval", ["random", "random+warm"]) == "random+warm"
    with pytest.raises(ToolkitError, match="Unknown rule"):
        bench.parse_args(["--rules", "random+uval+warm"])


def test_benchmark_runs_a_rule_with_its_own_batch_and_shows_it_at_the_others_counts(tmp_path, monkeypatch):
    from benchmarks import active_benchmark as bench
    root, calls = tmp_path / "bench", []
    _loop_rows(root, "random+warm", 0, test_r2_log=lambda k: 0.8 + 0.05 * k)          # 25 and 50 simulations
    folder = root / "5t_opamp" / "integrated+warm+uval+b10_seed0"                      # 25, 35, 45, 55
    folder.mkdir(parents=True)
    folder.joinpath("progress.jsonl").write_text("".join(
        json.dumps({"round": k, "simulations": 25 + 10 * k, "failed": 0, "select_s": 1.0, "simulate_s": 0.5,
                    "train_s": 20.0, "test_r2_log": 0.8 + 0.01 * k}) + "\n" for k in range(4)))
    monkeypatch.setattr(bench.subprocess, "call", lambda cmd, **_: calls.append(cmd) or 0)
    monkeypatch.setattr(bench.active, "prepare", lambda argv: None)
    out = bench.main(["--opamp", "5t_opamp", "--rules", "random+warm", "integrated+warm+uval+b10", "--seeds", "0",
                      "--budget", "50", "--results-root", str(root)])
    assert calls == []                                       # both loops reached --budget: nothing rerun
    # at 50 simulations the b10 loop is shown by its round at 45 (0.82), not by the one at 55 it reached later
    assert out["curves"]["integrated+warm+uval+b10"] == [(25, 0.8, 0.0), (50, pytest.approx(0.82), 0.0)]
    assert "| 50 | 0.8500 (1) | 0.8200 (1) |" in out["text"] and "1 of 2 budgets" in out["text"]
    assert "last round at or below it" in out["text"]
    # every rule with its own batch: shown on the --init + k x --batch grid (25, 50), not at 35, 45, 55
    alone = bench.main(["--opamp", "5t_opamp", "--rules", "integrated+warm+uval+b10", "--seeds", "0", "--budget",
                        "50", "--results-root", str(root), "--report-only"])
    assert [n for n, _, _ in alone["curves"]["integrated+warm+uval+b10"]] == [25, 50]
    shutil.rmtree(folder)     # not reached --budget: run with --batch 10, the rule and its other suffixes parsed
    with pytest.raises(ToolkitError, match="No finished rounds"):     # the fake loop leaves no rounds to tabulate
        bench.main(["--opamp", "5t_opamp", "--rules", "integrated+warm+uval+b10", "--seeds", "0", "--budget", "50",
                    "--results-root", str(root)])
    cmd = calls[0]
    assert [cmd[cmd.index(f) + 1] for f in ("--rule", "--warm-start", "--val-designs", "--batch")] == \
        ["integrated", "true", "uniform", "10"]
    for bad in ("integrated+b0", "integrated+b10+warm"):
        with pytest.raises(ToolkitError, match="Unknown rule"):
            bench.parse_args(["--rules", bad])


@needs_ngspice
def test_warm_start_trains_each_round_from_the_previous_rounds_members_and_is_part_of_the_run(tiny_data, tmp_path):
    out = tmp_path / "run"
    # one target (SIGNED_RATIO=false): under 'auto' a fresh network of the other target may win a round and
    # then rightly has no parent (tests/test_signed_ratio.py)
    args = ("--init", "20", "--batch", "10", "--pool", "300", "--budget", "40", "--members", "target_only",
            "--rule", "random", "--set", "SIGNED_RATIO=false")
    _run(tiny_data, out, *args, "--warm-start", "true")
    name = "5t_opamp_target_only_hetero.pth"
    parents = [read_checkpoint_meta(out / "rounds" / f"r{r:02d}" / name)["parent"] for r in range(3)]
    assert parents == [None, str((out / "rounds" / "r00" / name).resolve()), str((out / "rounds" / "r01" / name).resolve())]
    # the same folder without warm start is another run, refused with the fix
    with pytest.raises(active.ToolkitError, match="other settings .*warm_start"):
        _run(tiny_data, out, *args, "--budget", "50", "--warm-start", "false")


def test_benchmark_compares_each_rule_with_the_random_run_trained_the_same_way():
    from benchmarks.active_benchmark import random_control
    assert random_control("mixed", ["random", "mixed"]) == "random"
    assert random_control("random", ["random", "mixed"]) == "random"                  # the control itself
    assert random_control("integrated+warm", ["random+warm", "integrated+warm"]) == "random+warm"
    assert random_control("random+warm", ["random+warm", "integrated+warm"]) == "random+warm"
    assert random_control("random+warm", ["random", "random+warm"]) == "random"       # the warm-start table
    assert random_control("integrated+warm", ["random", "integrated+warm"]) == "random"
    assert random_control("integrated", ["random+warm", "integrated"]) == "random+warm"
    assert random_control("integrated", ["uncertainty", "integrated"]) is None


def test_benchmark_of_warm_rules_counts_budgets_against_random_warm(tmp_path):
    from benchmarks import active_benchmark as bench
    root = tmp_path / "bench"
    for rule, shift in (("random+warm", 0.0), ("integrated+warm", 0.01)):
        _loop_rows(root, rule, 0, test_r2_log=lambda k: 0.8 + shift)
    out = bench.main(["--opamp", "5t_opamp", "--rules", "random+warm", "integrated+warm", "--seeds", "0",
                      "--budget", "50", "--results-root", str(root), "--report-only"])
    timing = [line for line in out["text"].splitlines() if line.startswith("| integrated+warm | 1 |")]
    assert len(timing) == 1 and timing[0].endswith("| 2 of 2 budgets |")


def test_benchmark_times_a_run_taken_past_the_budget_up_to_the_budget(tmp_path):
    from benchmarks import active_benchmark as bench
    root = tmp_path / "bench"
    _loop_rows(root, "random", 0, test_r2_log=lambda k: 0.8)                # 25 and 50 simulations, 31.5 s a round
    out = bench.main(["--opamp", "5t_opamp", "--rules", "random", "--seeds", "0", "--budget", "25",
                      "--results-root", str(root), "--report-only"])
    assert "| random | 1 | 1 / 0 / 30 | 32 | 0 |" in out["text"]             # the round at 50 is not counted


def test_benchmark_block_gives_the_commands_of_loops_taken_past_the_budget(tmp_path):
    """Seed 1 was taken on to 75 simulations: one command cannot make that table, so the block lists a command per
    (simulations reached, seeds) and then the report; loops all at --budget keep the one command."""
    from benchmarks import active_benchmark as bench
    root = tmp_path / "bench"
    for rule in ("random", "integrated"):
        _loop_rows(root, rule, 0, test_r2_log=lambda k: 0.8)
    args = ["--opamp", "5t_opamp", "--rules", "random", "integrated", "--seeds", "0", "1", "--budget", "50",
            "--results-root", str(root), "--report-only"]
    bench.main(args)
    block = (root / "active_5t_opamp.md").read_text()
    assert f"Command: `python -m benchmarks.active_benchmark {' '.join(args[:-1])}`" in block
    for rule in ("random", "integrated"):
        _loop_rows(root, rule, 1, test_r2_log=lambda k: 0.8)
        with open(root / "5t_opamp" / f"{rule}_seed1" / "progress.jsonl", "a") as f:
            f.write(json.dumps({"round": 2, "simulations": 75, "failed": 0, "test_r2_log": 0.9, "select_s": 1.0,
                                "simulate_s": 0.5, "train_s": 30.0}) + "\n")
    bench.main(args + ["--", "--set", "EPOCHS=5"])
    block = (root / "active_5t_opamp.md").read_text()
    head = "python -m benchmarks.active_benchmark --opamp 5t_opamp --rules random integrated --seeds"
    tail = f"--results-root {root} -- --set EPOCHS=5`"
    assert "Commands (the loops, then the table from them)" in block
    assert f"- `{head} 0 --budget 50 {tail}" in block and f"- `{head} 1 --budget 75 {tail}" in block
    assert block.index("--budget 50 --results") < block.index("--budget 75") < block.index("--report-only")
    assert "| 75 | – | 0.9000 (1) |" not in block and "| 75 | 0.9000 (1) | 0.9000 (1) |" in block


def test_each_design_keeps_its_split_as_rounds_are_added_and_the_loader_uses_it(tmp_path):
    """Validation designs are drawn per round among its OK ones (ceil(VAL_SPLIT x OK)), seeded by (seed, round):
    a later round never moves an earlier design between train and val (warm-started weights fitted the training
    rows), and the data loader splits the training data as written."""
    from active_learning.ledger import assign_split, write_training_data
    rng = np.random.default_rng(0)

    def round_rows(r, start, n, failed=()):
        return pd.DataFrame({"design": range(start, start + n), "round": r, "rule": "random", "seed": 3,
                             "w": rng.uniform(1, 2, n), "cmrr": rng.uniform(1e3, 2e3, n),
                             "status": ["no_ugf" if i in failed else "ok" for i in range(start, start + n)]})
    ledger = pd.concat([round_rows(0, 0, 25, failed={3, 7}), round_rows(1, 100, 25)], ignore_index=True)
    first = assign_split(ledger, 0.2, 3)
    grown = pd.concat([ledger, round_rows(2, 200, 25, failed={210})], ignore_index=True)
    later = assign_split(grown.sample(frac=1, random_state=1), 0.2, 3).sort_index()   # any row order
    assert (later.loc[first.index] == first).all()
    val = later == "val"
    assert val[grown["round"] == 0].sum() == 5 and val[grown["round"] == 1].sum() == 5
    assert val[grown["round"] == 2].sum() == 5 and not val[grown["status"] != "ok"].any()   # ceil(0.2 x 24) = 5
    assert (assign_split(grown, 0.2, 4) != later).any()                                    # the seed matters
    write_training_data(grown, tmp_path / "d" / "amp" / "target", ["w"], ["cmrr"], val_split=0.2, seed=3)
    shutil.copytree(tmp_path / "d" / "amp" / "target", tmp_path / "d" / "amp" / "source")
    from data_loader import get_data_and_scalers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = get_data_and_scalers("amp", tmp_path / "d", val_split=0.5, test_split=0.2, seed=0)
    in_file = grown.sort_values(["round", "design"]).reset_index(drop=True)
    assert sorted(in_file.loc[data["split"]["target_val_idx"], "design"]) == sorted(grown.loc[val, "design"])
    assert "target_test" not in data


def test_a_ledger_from_before_signs_resumes_and_writes_signs_only_when_every_ok_design_has_one(tmp_path):
    from active_learning.ledger import append_rows, read_ledger, write_training_data
    old = pd.DataFrame({"design": [0, 1], "round": 0, "rule": "random", "seed": 0, "w": [1.0, 2.0],
                        "cmrr": [1e3, np.nan], "status": ["ok", "no_ugf"]})
    old.to_csv(tmp_path / "acquired.csv", index=False)
    ledger = read_ledger(tmp_path / "acquired.csv", ["w"], ["cmrr"], signed=["cmrr"])
    assert ledger["cmrr_sign"].isna().all()
    new = pd.DataFrame({"design": [2], "round": 1, "rule": "random", "seed": 0, "w": [3.0], "cmrr": [2e3],
                        "cmrr_sign": [-1.0], "status": ["ok"]})
    ledger = append_rows(tmp_path / "acquired.csv", ledger, new)
    write_training_data(ledger, tmp_path / "data", ["w"], ["cmrr"], val_split=0.2, seed=0)
    assert not (tmp_path / "data" / "metric_signs.csv").exists()          # design 0 has no sign
    ledger.loc[0, "cmrr_sign"] = 1.0
    write_training_data(ledger, tmp_path / "data", ["w"], ["cmrr"], val_split=0.2, seed=0)
    signs = pd.read_csv(tmp_path / "data" / "metric_signs.csv")
    assert signs["cmrr"].tolist()[0] == 1.0 and np.isnan(signs["cmrr"][1]) and signs["cmrr"].tolist()[2] == -1.0
    with pytest.raises(ValueError, match="lack the ledger columns"):
        append_rows(tmp_path / "acquired.csv", ledger, new.drop(columns=["w"]).assign(design=5))


def test_benchmark_tabulates_where_each_rule_spends_its_simulations_in_the_target_distribution(tmp_path):
    """The tails table: % of a rule's successful picks after the random first set below q10 / above q90 of the
    circuit's target data, per metric and range of simulations; failed simulations and the first set not counted."""
    from benchmarks import active_benchmark as bench
    data = tmp_path / "data" / "5t_opamp" / "target"
    data.mkdir(parents=True)
    pd.DataFrame({"w1": np.arange(100.0)}).to_csv(data / "features.csv", index=False)
    pd.DataFrame({"ugf": np.arange(100.0), "cmrr": np.arange(100.0)}).to_csv(data / "targets.csv", index=False)
    root = tmp_path / "bench"
    for rule, picks in (("random", [50.0] * 10), ("integrated", [1.0] * 5 + [99.0] * 3 + [50.0] * 2)):
        _loop_rows(root, rule, 0, test_r2_log=lambda k: 0.9)
        ledger = pd.DataFrame({"design": range(36), "round": [0] * 25 + [1] * 11, "rule": rule, "seed": 0,
                               "w1": 1.0, "ugf": [1.0] * 25 + picks + [np.nan],
                               "cmrr": [50.0] * 35 + [np.nan], "status": ["ok"] * 35 + ["no_convergence"]})
        ledger.to_csv(root / "5t_opamp" / f"{rule}_seed0" / "acquired.csv", index=False)
    out = bench.main(["--opamp", "5t_opamp", "--data-dir", str(tmp_path / "data"), "--rules", "random", "integrated",
                      "--seeds", "0", "--budget", "30", "--results-root", str(root), "--report-only"])
    # a loop taken past --budget (36 simulated here) is tabulated to its end, as in the R² table
    assert "| 26–36 | random | 10 | 0 / 0 | 0 / 0 |" in out["text"]
    assert "| 26–36 | integrated | 10 | 50 / 30 | 0 / 0 |" in out["text"]
    # without target data the table is left out (a loop started from --init-from has none to compare with)
    out = bench.main(["--opamp", "5t_opamp", "--data-dir", str(tmp_path / "none"), "--rules", "random", "--seeds", "0",
                      "--budget", "50", "--results-root", str(root), "--report-only"])
    assert "below the 10th" not in out["text"]


def test_draw_leaves_out_designs_read_back_from_a_generated_file_continuous_variables_included(tmp_path):
    """The shipped target data are designs 0.. of the seed-1 stream, stored at spice.generate's precision: a loop
    with --seed 1 draws them again at full precision (two_stage_opamp's cc and cr are continuous) and must still
    recognise the test designs among them."""
    from spice.generate import FLOAT_FORMAT
    from spice.sampling import sample_designs
    drawn = sample_designs("two_stage_opamp", 1, 0, 40)
    drawn.to_csv(tmp_path / "features.csv", index=False, float_format=FLOAT_FORMAT)
    stored = pd.read_csv(tmp_path / "features.csv")
    assert not np.array_equal(stored.to_numpy(float), drawn.to_numpy(float))   # the file lost digits
    test_keys = set(design_keys(stored.iloc[::2], stored.columns))            # every other design is a test design
    assert active.draw("two_stage_opamp", 1, 0, 40, test_keys)["design"].tolist() == list(range(1, 40, 2))


def test_draw_keeps_one_of_a_design_drawn_twice(monkeypatch):
    import spice.sampling
    twice = pd.DataFrame({"w": [1.0, 2.0, 1.0, 3.0], "l": [0.5, 0.5, 0.5, 0.5]})
    monkeypatch.setattr(spice.sampling, "sample_designs", lambda circuit, seed, start, stop: twice.iloc[start:stop])
    assert active.draw("any", 0, 0, 4, set())["design"].tolist() == [0, 1, 3]


# ---------------------------------------------------------------- data the loop cannot extend, run conditions
@pytest.mark.parametrize("damage, message", [
    ("metric", "metric columns ['gain_db'] are not ones the simulator measures"),
    ("process", "w_range [1, 100] um"),
])
def test_data_the_simulator_cannot_extend_is_refused_before_anything_is_written(tiny_data, tmp_path, capsys,
                                                                                monkeypatch, damage, message):
    """A metric the simulator does not measure, or a process that forbids part of the design space, used to stop
    the loop after its first simulations (and again on every resume)."""
    import inverse.verify
    from spice.processes import LIBRARY
    monkeypatch.setattr(inverse.verify, "ngspice_available", lambda: True)   # refused before any simulation
    extra = []
    if damage == "metric":
        for domain in ("source", "target"):
            path = tiny_data / "5t_opamp" / domain / "targets.csv"
            pd.read_csv(path).rename(columns={"dc_gain": "gain_db"}).to_csv(path, index=False)
    else:
        narrow = tmp_path / "narrow.toml"
        narrow.write_text((LIBRARY / "B.toml").read_text().replace("w_range = [0.15, 1000]", "w_range = [1, 100]"))
        extra = ["--process", str(narrow)]
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        active.run_main(active.main, ["--opamp", "5t_opamp", "--data-dir", str(tiny_data), "--out", str(out), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_the_loop_simulates_at_the_target_datas_recorded_conditions_and_gives_power(tmp_path, monkeypatch):
    """spice.generate --temp/--vdd/--corner records the conditions in meta.json and --power adds a power column:
    the loop's new rows must be simulated the same way, or they would not be the same data."""
    import importlib
    from inverse.verify import recorded_conditions
    folder = tmp_path / "d" / "amp" / "target"
    folder.mkdir(parents=True)
    assert recorded_conditions(tmp_path / "d", "amp") == {}                       # no meta.json: nominal
    (folder / "meta.json").write_text(json.dumps({"process": "B", "conditions": {"temp": 85, "corner": "ss"}}))
    conditions = recorded_conditions(tmp_path / "d", "amp")
    assert conditions == {"temp": 85.0, "corner": "ss"}
    calls = []

    def fake(circuit, designs, process, **kw):
        calls.append(kw)
        return pd.DataFrame({"dc_gain": 1.0, "power": 2e-4, "status": "ok"}, index=designs.index)
    monkeypatch.setattr(importlib.import_module("spice.simulate"), "simulate", fake)   # spice.simulate: the function
    rows = pd.DataFrame({"design": [0, 1], "w1": [1.0, 2.0]})
    done = active._simulate_chunk("5t_opamp", "B", rows, ["w1"], conditions, True)
    assert calls == [{"op": True, "temp": 85.0, "corner": "ss"}] and (done["power"] == 2e-4).all()
    (folder / "meta.json").write_text(json.dumps({"conditions": {"temp": 900}}))
    with pytest.raises(ToolkitError, match="temperature 900 C is outside"):
        recorded_conditions(tmp_path / "d", "amp")


def test_round_zero_simulates_more_designs_when_failures_leave_too_few_to_split():
    settings = {"VAL_SPLIT": 0.2, "SEED": 0}
    ledger = pd.DataFrame({"design": range(12), "round": 0, "rule": "random", "seed": 0, "w1": np.arange(12.0),
                           "status": ["ok"] * 5 + ["no_ugf"] * 7})
    assert active.split_is_short(ledger, settings)
    assert not active.split_is_short(ledger.assign(status="ok"), settings)
    chosen = ledger.drop(columns="status").assign(score=np.nan, p_ok=np.nan)
    more = active.top_up(ledger, chosen, ["w1"], "5t_opamp", 0, 12, budget=100, exclude=set())
    assert len(more) == 7 and list(more.columns) == list(chosen.columns) and (more["round"] == 0).all()
    assert not set(design_keys(more, ["w1"])) & set(design_keys(chosen, ["w1"]))
    assert len(active.top_up(ledger, chosen, ["w1"], "5t_opamp", 0, 12, budget=14, exclude=set())) == 2
    with pytest.raises(ToolkitError, match="7 of the first 12 designs failed .* the budget is spent"):
        active.top_up(ledger, chosen, ["w1"], "5t_opamp", 0, 12, budget=12, exclude=set())


def test_spec_rule_with_no_likely_design_explores_instead_of_failing():
    x, mean, std = _two_regions()
    impossible = (np.full(3, 1e6), np.full(3, 2e6))          # every metric far above anything predicted
    with pytest.warns(UserWarning, match="chosen by uncertainty"):
        picks = select("spec", x, mean, std, batch=10, rng=np.random.default_rng(0), spec_bounds=impossible)
    assert len(set(picks)) == 10


def test_a_resume_on_another_data_folder_is_refused_and_an_older_run_without_one_resumes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    key = {"opamp": "5t_opamp", "data_dir": str(tmp_path / "a"), "conditions": {}, "warm_start": True,
           "val_designs": "picks"}
    (out / "state.json").write_text(json.dumps({"key": {k: v for k, v in key.items()
                                                        if k not in ("data_dir", "conditions", "val_designs")}}))
    active.check_same_run(out, key)                                # made before the key held them
    with pytest.raises(ToolkitError, match="val_designs"):       # ... it validated on the rule's picks
        active.check_same_run(out, {**key, "val_designs": "uniform"})
    (out / "state.json").write_text(json.dumps({"key": key}))
    with pytest.raises(ToolkitError, match="data_dir"):
        active.check_same_run(out, {**key, "data_dir": str(tmp_path / "b")})


def test_a_run_recorded_with_set_text_or_a_spec_without_units_resumes(tmp_path):
    """Runs made before the key held resolved --set values (their text) and spec units resume as the same run."""
    out = tmp_path / "run"
    out.mkdir()
    spec = {"dc_gain": {"goal": "min", "target": 100.0, "lo": 100.0, "hi": None, "weight": 1.0}}
    key = {"opamp": "5t_opamp", "data_dir": str(tmp_path / "a"), "conditions": {}, "warm_start": True,
           "val_designs": "picks", "set": ["EPOCHS=5", "LEARNING_RATE=0.001"], "spec": spec}
    (out / "state.json").write_text(json.dumps({"key": {**key, "set": ["epochs=05", "LEARNING_RATE=1e-3",
                                                                       "ACTIVE_RULE=integrated"]}}))
    active.check_same_run(out, key)
    with pytest.raises(ToolkitError, match="set"):
        active.check_same_run(out, {**key, "set": ["EPOCHS=6", "LEARNING_RATE=0.001"]})


def test_init_from_reads_status_as_the_data_loader_does(tiny_data, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    tgt = tiny_data / "5t_opamp" / "target"
    feats = pd.read_csv(tgt / "features.csv").iloc[-12:]
    feats.to_csv(mine / "features.csv", index=False)
    pd.read_csv(tgt / "targets.csv").iloc[-12:].assign(status=[" OK"] * 11 + ["No_UGF"]).to_csv(
        mine / "targets.csv", index=False)
    rows = given_designs(mine, list(feats.columns), list(pd.read_csv(tgt / "targets.csv").columns), 0, set())
    assert rows["status"].tolist() == ["ok"] * 11 + ["no_ugf"]


def test_benchmark_refuses_a_bad_loop_or_an_empty_report_before_anything_runs_or_is_written(tmp_path, monkeypatch):
    """A loop's bad input used to start it and fail in its log ("see ...log"); an empty --report-only root wrote an
    empty table over the docs block."""
    from benchmarks import active_benchmark as bench
    calls, root, doc = [], tmp_path / "bench", tmp_path / "RESULTS.md"
    monkeypatch.setattr(bench.subprocess, "call", lambda cmd, **_: calls.append(cmd) or 0)
    with pytest.raises(ToolkitError, match="smaller than the initial set"):
        bench.main(["--rules", "random", "--seeds", "0", "--budget", "10", "--init", "25", "--results-root", str(root)])
    with pytest.raises(ToolkitError, match="twice"):
        bench.parse_args(["--rules", "random", "random"])
    with pytest.raises(ToolkitError, match="--reference must be a number"):
        bench.parse_args(["--reference", "nan"])
    block = "benchmarks.run:active:5t_opamp"
    doc.write_text(f"<!-- {block} start -->\npublished\n<!-- {block} end -->\n")
    with pytest.raises(ToolkitError, match="No finished rounds"):
        bench.main(["--rules", "random", "mixed", "--seeds", "0", "--results-root", str(root), "--report-only",
                    "--docs-path", str(doc)])
    assert calls == [] and not root.exists() and "published" in doc.read_text()


def test_benchmark_refuses_the_spec_rule_without_a_spec():
    from benchmarks import active_benchmark as bench
    with pytest.raises(ToolkitError, match="give it after --"):
        bench.parse_args(["--rules", "random", "spec"])
    assert "spec" not in bench.parse_args([]).rules


def test_loop_simulates_more_first_designs_when_the_first_ones_fail(tiny_data, tmp_path, monkeypatch):
    """Every one of the first 12 designs of the stream fails: round 0 draws more until its split has rows to train
    and validate on, counts them against the budget, and the next round spends the rest."""
    import inverse.verify
    monkeypatch.setattr(inverse.verify, "ngspice_available", lambda: True)
    typical = pd.read_csv(tiny_data / "5t_opamp" / "target" / "targets.csv").median()

    def fake(circuit, process, rows, x_cols, *conditions_power):   # metrics varying with the design, no ngspice
        out = rows.reset_index(drop=True).copy()
        for c, v in typical.items():
            out[c] = v * (1 + 0.1 * np.tanh(out[x_cols].to_numpy(float) @ np.linspace(0.1, 1, len(x_cols)) / 50))
        out["cmrr_sign"] = 1.0
        fail = (out["design"] < 12).to_numpy()
        out.loc[fail, list(typical.index)] = np.nan
        out["status"] = np.where(fail, "no_ugf", "ok")
        return out
    monkeypatch.setattr(active, "_simulate_chunk", fake)
    out = tmp_path / "run"
    res = _run(tiny_data, out, "--init", "10", "--batch", "10", "--pool", "200", "--budget", "40", "--rule", "random")
    ledger = pd.read_csv(out / "acquired.csv")
    first = ledger[ledger["round"] == 0]
    assert len(ledger) == 40 and ledger["design"].is_unique
    assert (first["status"] == "ok").sum() >= 10 and (first["status"] != "ok").sum() >= 10
    assert pd.read_csv(out / "rounds" / "r00" / "batch.csv")["design"].tolist() == first["design"].tolist()
    assert [r["simulations"] for r in res["progress"]][-1] == 40


def test_uniform_validation_designs_are_drawn_per_batch_and_are_the_rounds_only_val_rows(tmp_path):
    """ACTIVE_VAL_DESIGNS = uniform: ceil(VAL_SPLIT x batch) designs of a round are a uniform draw (ledger rule
    random), the rule picks the rest among the others; the round validates on those uniform draws only."""
    from active_learning.ledger import assign_split
    settings = {"ACTIVE_VAL_DESIGNS": "uniform", "VAL_SPLIT": 0.2}
    assert [uniform_draws(r, b, settings) for r, b in (("integrated", 25), ("diverse", 7), ("integrated", 1),
                                                               ("random", 25))] == [5, 2, 0, 0]
    assert uniform_draws("integrated", 25, {**settings, "ACTIVE_VAL_DESIGNS": "picks"}) == 0
    # auto: the spec rule validates on its own picks (it is run for designs meeting the spec), others on uniform draws
    assert [val_designs("auto", r) for r in ("spec", "integrated", "random")] == ["picks", "uniform", "uniform"]
    assert [val_designs(v, "spec") for v in ("uniform", "picks")] == ["uniform", "picks"]

    class Prep:
        def transform_x(self, frame):
            return np.array(frame, float)

    class Ens:   # the two things choose asks of an ensemble: its columns and a prediction in model space
        x_cols, preprocessing = ["a", "b"], Prep()

        def predict_scaled(self, x):
            return x[:, :1] * 0, (x[:, :1] + 1) ** 2   # std grows with a: uncertainty takes the largest a

    rng = np.random.default_rng(0)
    pool = pd.DataFrame({"design": range(100), "a": rng.uniform(0, 1, 100), "b": rng.uniform(0, 1, 100)})
    ledger = pd.DataFrame({"design": [-1], "a": [0.5], "b": [0.5], "status": ["ok"]})
    got = choose(Ens(), "uncertainty", pool, ledger, 10, 3, 1, n_uniform=2)
    assert got["rule"].tolist() == ["random"] * 2 + ["uncertainty"] * 8 and got["design"].is_unique
    uniform = np.random.default_rng([3, 1, 17]).choice(100, 2, replace=False)
    assert got["design"].tolist()[:2] == uniform.tolist()
    rest = pool.drop(index=uniform)
    assert sorted(got["design"].tolist()[2:]) == sorted(rest.nlargest(8, "a")["design"].tolist())
    assert choose(Ens(), "uncertainty", pool, ledger, 10, 3, 1)["rule"].eq("uncertainty").all()
    # the split: a round that mixes uniform draws and picks validates on its OK uniform draws only (at most all)
    rows = pd.DataFrame({"design": range(25), "round": 1, "rule": ["random"] * 5 + ["integrated"] * 20,
                         "status": ["ok"] * 4 + ["no_ugf"] + ["ok"] * 20})
    val = assign_split(rows, 0.2, 3) == "val"
    assert val.tolist() == [True] * 4 + [False] * 21          # ceil(0.2 x 24) = 5 > the 4 OK uniform draws
    rows["rule"] = ["random"] * 10 + ["integrated"] * 15
    val = assign_split(rows, 0.2, 3) == "val"
    assert val.sum() == 5 and val[:10].sum() == 5             # 5 of the 9 OK uniform draws
    rows["rule"] = "integrated"                               # picks only (ACTIVE_VAL_DESIGNS = picks): any OK row
    assert (assign_split(rows, 0.2, 3) == "val").sum() == 5


def test_select_conditions_the_gp_rules_on_designs_given_to_the_batch():
    from active_learning.acquisition import integrated
    x = np.linspace(0, 1, 101)
    noise = 1e-4
    cov = _gp_posterior(np.array([0.5]), x, noise)[None]
    mean, std = x[:, None], np.full((len(x), 1), 0.1)
    given = np.array([10, 90])
    got = select("integrated", x[:, None], mean, std, batch=3, rng=np.random.default_rng(0),
                 gp_cov=(cov, np.array([noise])), given=given)
    assert got.tolist() == integrated(cov, np.array([noise]), mean.var(axis=0), 3, given=given).tolist()
    assert not set(got.tolist()) & set(given.tolist())
    assert got.tolist() != select("integrated", x[:, None], mean, std, batch=3, rng=np.random.default_rng(0),
                                  gp_cov=(cov, np.array([noise]))).tolist()


@needs_ngspice
def test_integrated_loop_with_uniform_validation_designs_records_and_validates_on_them(tiny_data, tmp_path,
                                                                                     monkeypatch):
    from active_learning import acquisition
    monkeypatch.setattr(acquisition, "INTEGRATED_POOL", 120)
    out = tmp_path / "run"
    _run(tiny_data, out, "--init", "20", "--batch", "10", "--pool", "300", "--budget", "30", "--rule", "integrated",
         "--val-designs", "uniform")
    ledger = pd.read_csv(out / "acquired.csv")
    assert ledger["rule"].tolist() == ["random"] * 22 + ["integrated"] * 8 and ledger["design"].is_unique
    split = pd.read_csv(out / "data" / "5t_opamp" / "target" / "targets.csv")["split"]
    ordered = ledger.sort_values(["round", "design"]).reset_index(drop=True)
    second = ordered["round"] == 1
    ok_uniform = second & (ordered["rule"] == "random") & (ordered["status"] == "ok")
    assert (split[second] == "val").sum() == min(2, ok_uniform.sum()) and (split[second & ~ok_uniform] == "train").all()
    with pytest.raises(ToolkitError, match="val_designs"):   # the same folder with the other setting: another run
        _run(tiny_data, out, "--init", "20", "--batch", "10", "--pool", "300", "--budget", "40", "--rule",
             "integrated", "--val-designs", "picks")


@needs_ngspice
def test_an_unreachable_dask_scheduler_is_refused_before_anything_is_written(tiny_data, tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    from core import executor
    monkeypatch.setattr(executor, "CONNECT_TIMEOUT_S", 1)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        active.run_main(active.main, ["--opamp", "5t_opamp", "--data-dir", str(tiny_data), "--out", str(out),
                                      "--backend", "dask", "--scheduler", "tcp://127.0.0.1:9"])
    assert exc.value.code == 2 and "Cannot reach the Dask scheduler" in capsys.readouterr().err
    assert not out.exists()                                # was: state.json, the source copy, round 0's batch
