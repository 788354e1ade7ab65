"""Metric extraction on synthetic responses (no ngspice needed)."""
import numpy as np
import pytest

from spice import measure
from spice.sampling import sample_designs


def _two_pole(freq, a0, p1, p2):
    s = 1j * freq
    return a0 / ((1 + s / p1) * (1 + s / p2))


def test_ac_metrics_on_known_two_pole_response():
    f = np.logspace(-3, 10, 131)
    a0, p1, p2 = 1000.0, 1e4, 3e7
    adm = _two_pole(f, a0, p1, p2)
    acm = np.full_like(adm, 0.5)
    m, status = measure.ac_metrics(f, adm, acm)
    assert status == measure.OK
    # Reference: solve |A(f)| = 1 on a fine grid and take the exact phase there.
    fine = np.logspace(6, 8, 200001)
    k = np.argmin(np.abs(np.abs(_two_pole(fine, a0, p1, p2)) - 1))
    ugf_ref = fine[k]
    pm_ref = 180 + np.degrees(np.angle(_two_pole(fine[k], a0, p1, p2)))
    assert m["ugf"] == pytest.approx(ugf_ref, rel=0.02)
    assert m["phase_margin"] == pytest.approx(pm_ref, abs=1.0)
    assert m["dc_gain"] == pytest.approx(a0, rel=1e-6)
    assert m["cmrr"] == pytest.approx(2000, rel=1e-6)


def test_negative_phase_margin_is_kept_not_wrapped():
    f = np.logspace(-3, 10, 131)
    s = 1j * f
    adm = 1e4 / ((1 + s / 1e3) * (1 + s / 1e5) * (1 + s / 2e5))  # unstable in unity feedback
    m, status = measure.ac_metrics(f, adm, np.ones_like(adm))
    assert status == measure.OK and m["phase_margin"] < 0


def test_gain_below_one_has_no_ugf():
    f = np.logspace(0, 6, 61)
    _, status = measure.ac_metrics(f, 0.5 / (1 + 1j * f / 1e3), np.ones(61))
    assert status == measure.NO_UGF


def test_slew_rate_of_a_ramp_and_of_a_ringing_step():
    t = np.linspace(0, 1e-6, 2001)
    ramp = np.clip(t * 1e6, 0, 0.5)  # 1 V/us up to 0.5 V: 1e6 V/s
    assert measure.slew_rate(t, ramp, 0.5) == pytest.approx(1e6, rel=1e-3)
    # A ringing buffer overshoots and crosses 80 % many times: the first crossing counts.
    ring = 0.5 * (1 - np.exp(-t / 5e-8) * np.cos(2 * np.pi * t / 1e-7))
    sr = measure.slew_rate(t, ring, 0.5)
    t20 = t[np.argmax(ring >= 0.1)]
    t80 = t[np.argmax(ring >= 0.4)]
    assert sr == pytest.approx(0.3 / (t80 - t20), rel=0.02)
    assert measure.slew_rate(t, 0.3 * ramp, 0.5) is None  # never reaches 80 % of the step


def test_sampling_is_deterministic_per_index_and_on_grid():
    a = sample_designs("two_stage_opamp", 7, 0, 40)
    b = sample_designs("two_stage_opamp", 7, 30, 40)
    assert a.loc[30:].equals(b)  # design i depends only on (seed, i)
    assert not a.equals(sample_designs("two_stage_opamp", 8, 0, 40))
    assert set(np.round(a[["l1", "l5"]].to_numpy().ravel(), 3)) <= {0.5, 1.0, 1.5, 2.0}
    assert ((a["w3"] * 2) % 1 == 0).all() and a["w3"].between(0.5, 50).all()
    assert a["cc"].between(0.1e-12, 2e-12).all() and a["cr"].between(1e3, 1e5).all()
    assert set(a["ibias"]) <= {5e-6, 10e-6, 15e-6, 20e-6}
