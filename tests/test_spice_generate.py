"""The dataset generator: layout, determinism, resume, --keep-failed, Dask, loader round trip."""
import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from core.errors import ToolkitError
from spice import generate
from spice.circuits import FEATURES
from spice.measure import METRICS
from tests.spice_helpers import needs_ngspice

ARGS = ["--opamp", "5t_opamp", "--domain", "target", "--n", "12", "--seed", "3", "--chunk", "5",
        "--no-progress"]


def _read(out, opamp="5t_opamp", domain="target"):
    d = out / opamp / domain
    return pd.read_csv(d / "features.csv"), pd.read_csv(d / "targets.csv"), json.loads((d / "meta.json").read_text())


@needs_ngspice
def test_layout_columns_meta_and_worker_independence(tmp_path):
    generate.main(ARGS + ["--workers", "1", "--out", str(tmp_path / "a")])
    generate.main(ARGS + ["--workers", "2", "--chunk", "4", "--out", str(tmp_path / "b")])
    xa, ya, meta = _read(tmp_path / "a")
    xb, yb, _ = _read(tmp_path / "b")
    assert list(xa.columns) == FEATURES["5t_opamp"] and list(ya.columns) == METRICS
    assert len(xa) == len(ya) == 12
    pd.testing.assert_frame_equal(xa, xb)
    pd.testing.assert_frame_equal(ya, yb)
    assert meta["process"] == "B" and meta["ok"] == 12 and meta["requested"] == 12 + sum(meta["failed"].values())
    assert meta["command"].startswith("python -m spice.generate --opamp 5t_opamp")
    assert not (tmp_path / "a" / "5t_opamp" / "target" / ".partial").exists()


@needs_ngspice
def test_data_already_in_the_folder_is_replaced_only_by_the_same_recipe_or_overwrite(tmp_path):
    """Another --n into a folder of data (or a folder of the user's files) used to replace them without a word."""
    out = tmp_path / "d"
    first = generate.main(ARGS + ["--workers", "1", "--out", str(out)])
    assert first["recipe"]["n"] == 12 and len(first["recipe"]["circuit_sha256"]) == 64
    before = _read(out)[:2]
    again = generate.main(ARGS + ["--workers", "1", "--chunk", "4", "--out", str(out)])   # same rows: allowed
    assert again["recipe"] == first["recipe"]
    with pytest.raises(ToolkitError, match=r"already holds features.csv, targets.csv.*n: 12 -> 5.*--overwrite"):
        generate.main([*ARGS[:4], "--n", "5", *ARGS[6:], "--workers", "1", "--out", str(out)])
    for got, ref in zip(_read(out)[:2], before):                                         # untouched
        pd.testing.assert_frame_equal(got, ref)
    targets = out / "5t_opamp" / "target" / "targets.csv"
    edited = before[1].assign(split="train")                                               # the user's own column
    edited.to_csv(targets, index=False)
    with pytest.raises(ToolkitError, match="targets.csv changed since this command wrote them"):
        generate.main(ARGS + ["--workers", "1", "--out", str(out)])                         # the same recipe
    pd.testing.assert_frame_equal(pd.read_csv(targets), edited)
    (out / "5t_opamp" / "target" / "meta.json").unlink()                                   # as if made by hand
    with pytest.raises(ToolkitError, match="by hand"):
        generate.main(ARGS + ["--workers", "1", "--out", str(out)])
    meta = generate.main([*ARGS[:4], "--n", "5", *ARGS[6:], "--workers", "1", "--out", str(out), "--overwrite"])
    assert meta["ok"] == 5 and len(_read(out)[0]) == 5
    folder = out / "5t_opamp" / "target"                  # a person's files under other names are replaced too,
    for name in ("features.csv", "targets.csv"):          # or the folder would hold two *features*.csv
        (folder / name).rename(folder / f"my_{name}")
    generate.main([*ARGS[:4], "--n", "5", *ARGS[6:], "--workers", "1", "--out", str(out), "--overwrite"])
    assert sorted(p.name for p in folder.glob("*.csv")) == ["features.csv", "metric_signs.csv", "targets.csv"]


class _Interrupt(Exception):
    pass


@needs_ngspice
def test_interrupted_run_resumes_without_resimulating(tmp_path, monkeypatch):
    generate.main(ARGS + ["--workers", "1", "--out", str(tmp_path / "ref")])
    real, calls = generate.simulate_chunk, []

    def flaky(*a):
        calls.append(a[4])
        if len(calls) == 3:
            raise _Interrupt  # the third chunk "crashes" (Ctrl-C, node lost, ...)
        return real(*a)

    monkeypatch.setattr(generate, "simulate_chunk", flaky)  # n_jobs=1 runs in this process
    with pytest.raises(_Interrupt):
        generate.main(ARGS + ["--workers", "1", "--out", str(tmp_path / "r")])
    partial = tmp_path / "r" / "5t_opamp" / "target" / ".partial"
    assert len(list(partial.glob("chunk_*.csv"))) == 2
    with pytest.raises(ToolkitError, match=r"other settings.*'seed': \(3, 4\)"):
        generate.main(ARGS + ["--workers", "1", "--seed", "4", "--out", str(tmp_path / "r")])
    calls.clear()
    monkeypatch.setattr(generate, "simulate_chunk", lambda *a: (calls.append(a[4]), real(*a))[1])
    meta = generate.main(ARGS + ["--workers", "1", "--out", str(tmp_path / "r")])
    assert 0 not in calls and 5 not in calls  # the two saved chunks were not simulated again
    assert meta["resumed_chunks"] == 2
    for got, ref in zip(_read(tmp_path / "r")[:2], _read(tmp_path / "ref")[:2]):
        pd.testing.assert_frame_equal(got, ref)


@needs_ngspice
def test_keep_failed_writes_status_column(tmp_path):
    # Process B, seed 1: failures among the first designs are known to occur (~1 %); use enough
    # designs that the status column is exercised either way.
    meta = generate.main(ARGS + ["--workers", "1", "--keep-failed", "--out", str(tmp_path)])
    x, y, _ = _read(tmp_path)
    assert list(y.columns) == METRICS + ["status"]
    assert len(y) == meta["requested"] and (y["status"] == "ok").sum() == 12
    assert y.loc[y["status"] != "ok", METRICS].isna().all().all()


@needs_ngspice
def test_dask_local_cluster_gives_the_same_rows(tmp_path):
    distributed = pytest.importorskip("distributed")
    generate.main(ARGS + ["--workers", "1", "--out", str(tmp_path / "local")])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        generate.main(ARGS + ["--backend", "dask", "--scheduler", cluster.scheduler_address,
                              "--out", str(tmp_path / "dask")])
    for got, ref in zip(_read(tmp_path / "dask")[:2], _read(tmp_path / "local")[:2]):
        pd.testing.assert_frame_equal(got, ref)


@pytest.mark.parametrize("extra, msg", [
    (["--n", "0"], "must be >= 1"),
    (["--backend", "dask"], "needs --scheduler"),
])
def test_bad_flags_are_clear_errors(tmp_path, extra, msg):
    with pytest.raises(ToolkitError, match=msg):
        generate.main(ARGS + ["--out", str(tmp_path)] + extra)


def test_cli_prints_one_line_and_exits_2_without_pdk(tmp_path):
    r = subprocess.run([sys.executable, "-m", "spice.generate", "--opamp", "5t_opamp", "--domain", "target",
                        "--process", "sky130", "--pdk-path", str(tmp_path), "--n", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("error: SKY130 PDK not found") and "Traceback" not in r.stderr


@needs_ngspice
def test_generated_data_loads_through_the_data_api(tmp_path):
    from data_loader.layout import read_domain
    for domain, n in (("source", 15), ("target", 12)):
        generate.main(["--opamp", "5t_opamp", "--domain", domain, "--n", str(n), "--seed", "0",
                       "--chunk", "5", "--workers", "1", "--no-progress", "--out", str(tmp_path)])
    src = read_domain(tmp_path, "5t_opamp", "source")
    tgt = read_domain(tmp_path, "5t_opamp", "target")
    assert len(src.features) == 15 and len(tgt.features) == 12
    assert list(tgt.targets.columns) == METRICS


@needs_ngspice
def test_power_is_one_more_metric_the_surrogate_and_spec_files_can_use(tmp_path):
    from inverse.spec_file import quantity
    from spice.simulate import simulate
    generate.main(ARGS + ["--workers", "1", "--out", str(tmp_path / "p"), "--power"])
    x, y, meta = _read(tmp_path / "p")
    assert list(y.columns) == METRICS + ["power"] and meta["target_columns"] == METRICS + ["power"]
    assert meta["units"]["power"] == "W"
    direct = simulate("5t_opamp", x, "B", op=True)
    pd.testing.assert_series_equal(y["power"], direct["power"], check_names=False, rtol=1e-5)
    assert (y["power"] > 0).all() and (y["power"] < 1.8 * 1e-3).all()     # µA-level bias from 1.8 V
    generate.main(ARGS + ["--workers", "1", "--out", str(tmp_path / "plain")])
    pd.testing.assert_frame_equal(_read(tmp_path / "plain")[1], y[METRICS])   # the same designs, same metrics
    assert quantity("2 mW", "power", "spec.toml: goals.power") == pytest.approx(2e-3)   # spec files: power in W
    with pytest.raises(ToolkitError, match=r"unit 'MHz' is a frequency \(Hz\), but power is in W, a power \(W\)"):
        quantity("2 MHz", "power", "spec.toml: goals.power")


@needs_ngspice
def test_keep_failed_still_writes_the_signs_file_with_failed_rows_empty(tmp_path, monkeypatch):
    """A failed design has no sign, as it has no metrics: the signs file is written all the same (it was left out
    whenever one design of the run failed), its failed rows empty, and the folder loads."""
    real = generate.simulate_chunk

    def one_fails(*a):
        df = real(*a)
        if a[4] == 0:   # the first chunk's first design "fails"
            df.loc[df.index[0], METRICS + ["cmrr_sign"]] = np.nan
            df.loc[df.index[0], "status"] = "nonconvergence"
        return df
    monkeypatch.setattr(generate, "simulate_chunk", one_fails)
    generate.main(ARGS + ["--workers", "1", "--keep-failed", "--out", str(tmp_path)])
    folder = tmp_path / "5t_opamp" / "target"
    signs, y = pd.read_csv(folder / "metric_signs.csv"), pd.read_csv(folder / "targets.csv")
    assert len(signs) == len(y) and signs["cmrr"].isna().tolist() == (y["status"] != "ok").tolist()
    from data_loader.layout import read_folder
    assert read_folder(folder).signs is not None


def _designs_file(path, features: pd.DataFrame) -> Path:
    """The designs as a user writes them: an id column first, the variables in another order."""
    frame = features[list(reversed(features.columns))]
    frame.insert(0, "id", [f"d{i}" for i in range(len(frame))])
    frame.to_csv(path, index=False)
    return path


DESIGNS_ARGS = ["--opamp", "5t_opamp", "--domain", "target", "--chunk", "5", "--no-progress", "--workers", "1"]


@needs_ngspice
def test_a_designs_file_is_simulated_row_for_row(tmp_path):
    """--designs: the designs of a CSV instead of random ones; the shipped generator's own rows come back exactly."""
    generate.main(ARGS + ["--workers", "1", "--out", str(tmp_path / "ref")])
    x_ref, y_ref, _ = _read(tmp_path / "ref")
    designs = _designs_file(tmp_path / "mine.csv", x_ref)          # 12 designs: chunks of 5, 5 and 2
    meta = generate.main(DESIGNS_ARGS + ["--designs", str(designs), "--out", str(tmp_path / "d")])
    x, y, saved = _read(tmp_path / "d")
    pd.testing.assert_frame_equal(x, x_ref)                        # the circuit's columns, the file's order of rows
    assert list(y.columns) == METRICS + ["status"] and (y["status"] == "ok").all()
    pd.testing.assert_frame_equal(y[METRICS], y_ref)
    assert saved == meta and meta["seed"] is None and meta["requested"] == meta["rows_written"] == 12
    assert len(meta["designs_sha256"]) == 64 and meta["designs_file"].endswith("mine.csv")
    again = generate.main(DESIGNS_ARGS + ["--designs", str(designs), "--out", str(tmp_path / "d")])   # same rows
    assert again["recipe"] == meta["recipe"]
    x_ref.iloc[:3].to_csv(designs, index=False)                    # the file edited: other rows, refused
    with pytest.raises(ToolkitError, match=r"already holds.*designs_sha256.*n: 12 -> 3.*--overwrite"):
        generate.main(DESIGNS_ARGS + ["--designs", str(designs), "--out", str(tmp_path / "d")])


@needs_ngspice
def test_an_interrupted_designs_run_resumes_its_file_only(tmp_path, monkeypatch):
    x_ref = generate.sample_designs("5t_opamp", 3, 0, 12).reset_index(drop=True)
    designs = _designs_file(tmp_path / "mine.csv", x_ref)
    real, calls = generate.simulate_chunk, []

    def flaky(*a):
        calls.append((a[4], a[5]))
        if len(calls) == 3:
            raise _Interrupt
        return real(*a)

    monkeypatch.setattr(generate, "simulate_chunk", flaky)
    out = tmp_path / "r"
    with pytest.raises(_Interrupt):
        generate.main(DESIGNS_ARGS + ["--designs", str(designs), "--out", str(out)])
    assert calls == [(0, 5), (5, 10), (10, 12)]                    # the last chunk holds the file's last 2 rows
    other = _designs_file(tmp_path / "other.csv", x_ref.iloc[:11])
    with pytest.raises(ToolkitError, match="other settings.*designs_sha256"):
        generate.main(DESIGNS_ARGS + ["--designs", str(other), "--out", str(out)])
    calls.clear()
    monkeypatch.setattr(generate, "simulate_chunk", lambda *a: (calls.append((a[4], a[5])), real(*a))[1])
    meta = generate.main(DESIGNS_ARGS + ["--designs", str(designs), "--out", str(out)])
    assert calls == [(10, 12)] and meta["resumed_chunks"] == 2
    pd.testing.assert_frame_equal(_read(out)[0], x_ref)


@pytest.mark.parametrize("edit, extra, msg", [
    (None, ["--n", "5"], "--n N .* or --designs FILE .*, not both"),
    (None, ["--seed", "3"], "--seed draws random designs; --designs simulates the file's"),
    (None, ["--chunk", "0"], "--chunk must be >= 1, got --chunk 0$"),
    (lambda f: f.assign(w1=f["w1"].where(f.index != 4, 5000.0)), [], r"1 of 6 design\(s\) lie outside the declared ranges: w1 in 1 .*first: design 5, w1 = 5000"),
    (lambda f: f.drop(columns="l3"), [], r"lacks design variable\(s\) \['l3'\]"),
    (lambda f: f.astype(str).assign(l2=lambda d: d["l2"].where(d.index != 2, "")), [], r"'l2' is '' on line 4 \(data row 3\)"),
])
def test_a_bad_designs_file_is_one_line_and_writes_nothing(tmp_path, edit, extra, msg):
    features = generate.sample_designs("5t_opamp", 3, 0, 6).reset_index(drop=True)
    designs = tmp_path / "mine.csv"
    (edit(features) if edit else features).to_csv(designs, index=False)
    out = tmp_path / "out"
    with pytest.raises(ToolkitError, match=msg):
        generate.main(DESIGNS_ARGS + ["--designs", str(designs), "--out", str(out)] + extra)
    assert not out.exists()


@needs_ngspice
def test_a_designs_run_stopped_before_its_first_chunk_leaves_no_claim(tmp_path, monkeypatch, capsys):
    """Ctrl-C before any chunk finished left a run stamp that refused every other designs file in that folder."""
    features = generate.sample_designs("5t_opamp", 3, 0, 6).reset_index(drop=True)
    first = _designs_file(tmp_path / "first.csv", features)
    monkeypatch.setattr(generate, "simulate_chunk", lambda *a: (_ for _ in ()).throw(_Interrupt()))
    out = tmp_path / "out"
    with pytest.raises(_Interrupt):
        generate.main(DESIGNS_ARGS + ["--designs", str(first), "--out", str(out)])
    shown = capsys.readouterr().out
    assert "note: 1 column(s) of" in shown and "(id) are not variables of 5t_opamp" in shown
    monkeypatch.undo()
    other = _designs_file(tmp_path / "other.csv", features.iloc[:4])
    meta = generate.main(DESIGNS_ARGS + ["--designs", str(other), "--out", str(out)])
    assert meta["rows_written"] == 4
