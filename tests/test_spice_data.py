"""The shipped dataset: layout, columns, counts as recorded, and reproducible by its command."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spice import FEATURES, METRICS, simulate
from spice.sampling import sample_designs
from spice.simulate import ngspice_version
from tests.spice_helpers import needs_ngspice

DATA = Path(__file__).resolve().parents[1] / "data"
SETS = [(op, dom, n) for op in FEATURES for dom, n in (("source", 10000), ("target", 1000))]


def _load(opamp, domain):
    d = DATA / opamp / domain
    if not d.is_dir():
        pytest.skip(f"{d} not present")
    return (pd.read_csv(d / "features.csv"), pd.read_csv(d / "targets.csv"),
            json.loads((d / "meta.json").read_text()))


@pytest.mark.parametrize("opamp, domain, n", SETS)
def test_shipped_files_match_their_meta(opamp, domain, n):
    x, y, meta = _load(opamp, domain)
    assert list(x.columns) == FEATURES[opamp] and list(y.columns) == METRICS
    assert len(x) == len(y) == n == meta["ok"] == meta["rows_written"]
    assert meta["requested"] == n + sum(meta["failed"].values())
    assert meta["process"] == {"source": "A", "target": "B"}[domain]
    assert np.isfinite(y.to_numpy()).all() and (y.drop(columns="phase_margin") > 0).all().all()
    assert meta["command"].startswith(f"python -m spice.generate --opamp {opamp} --domain {domain} --n {n}")
    assert not (DATA / opamp / domain / ".partial").exists()


@needs_ngspice
@pytest.mark.parametrize("opamp", list(FEATURES))
def test_first_source_rows_are_reproduced_by_the_simulator(opamp):
    x, y, meta = _load(opamp, "source")
    if ngspice_version() != meta["ngspice_version"]:
        pytest.skip(f"ngspice {ngspice_version()} here, data made with {meta['ngspice_version']}")
    designs = sample_designs(opamp, meta["seed"], 0, 8)
    got = simulate(opamp, designs, meta["process"])
    ok = got["status"] == "ok"
    k = int(ok.sum())
    np.testing.assert_allclose(designs[ok].to_numpy(), x.iloc[:k].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(got.loc[ok, METRICS].to_numpy(float), y.iloc[:k].to_numpy(), rtol=1e-5)
