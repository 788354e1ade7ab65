"""Simulator in the loop: update a forward model with the designs simulated so far (``inverse_opt --rounds``).

After a round's top-k are simulated, the model is corrected where it was wrong and optimisation
runs again.  The correction is a Gaussian-process update of the model's own prediction, per metric j
in model space, with the model's calibrated std as the prior scale of its error:

    f_j(x) ~ GP( m_j(x),  c_j^2 s_j(x) s_j(x') rho_j(x, x') ),   rho_j = Matern-5/2( ||x - x'|| / l_j )
    y_j(X) = f_j(X) + e,  e ~ N(0, tau^2)

where m, s are the base model's mean and std, X the simulated designs (standardised model space),
r_j = y_j(X) - m_j(X) the residuals, K_j = c_j^2 S_j P_j S_j + tau^2 I (S_j = diag s_j(X), P_j = rho_j(X, X)):

    mean_j(x) = m_j(x) + k_j(x)^T K_j^-1 r_j,       k_j(x) = c_j^2 s_j(x) S_j rho_j(X, x)
    var_j(x)  = c_j^2 s_j(x)^2 - k_j(x)^T K_j^-1 k_j(x)   (>= tau^2 / 10)

so at a simulated design the prediction moves to the simulated value and its std shrinks; far from
every simulated design (l_j away) the model is unchanged.  l_j and c_j maximise the log marginal
likelihood of r_j: l_j over a grid from 0.1 to 2 standard deviations of the training inputs (longer
would turn a few nearby simulations into a shift of the whole design space), c_j in closed form,
at least 1 (a model whose errors exceed its std at the simulated designs is overconfident: its std is
widened everywhere; never narrowed).  A point model
(std 0) gets the residuals' RMS as its prior scale.  Failed simulations (status not ok, a metric that
cannot be mapped to model space) count as simulations but teach the model nothing; a round in which every
simulation failed ends the search (the next would search the same place).
Everything is torch and differentiable w.r.t. x, like every ``Forward``.
"""
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from inverse.forward import Forward
from inverse.optimise import design_keys
from models.gp import matern

TAU = 0.01                                    # observation noise std, model-space units (SPICE is deterministic;
                                              # this only keeps K well conditioned)
LENGTH_GRID = np.geomspace(0.1, 2.0, 14)      # candidate length scales, in std of the training inputs


def _rho(a: torch.Tensor, b: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Matern-5/2 correlation (M, Na, Nb) between rows of a (Na, D) and b (Nb, D), one length per metric (M,)."""
    r = torch.cdist(a.double(), b.double())                                  # (Na, Nb)
    return matern(r[None] / length[:, None, None], 2.5)


class CorrectedForward(Forward):
    """``base`` updated with simulated designs ``x_obs`` (n, D, model space) and metrics ``y_obs`` (n, M, model space)."""

    def __init__(self, base: Forward, x_obs, y_obs):
        super().__init__(base.preprocessing)
        self.base, self.name = base, f"{base.name}+{len(x_obs)} simulated"
        x = torch.as_tensor(np.asarray(x_obs, float), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(y_obs, float), dtype=torch.float64)
        with torch.no_grad():
            m, s = (t.double() for t in base.predict(x))                     # (n, M)
        resid = y - m                                                         # (n, M)
        floor = resid.pow(2).mean(0).sqrt().clamp_min(1e-3)                  # (M,) prior scale of a point model
        self.floor = torch.where(s.abs().max(0).values > 0, torch.zeros_like(floor), floor)
        s = self._scale(s)
        self.x_obs, self.resid = x, resid
        fits = [self._fit(x, s[:, j], resid[:, j]) for j in range(resid.shape[1])]
        self.length = torch.tensor([f[0] for f in fits], dtype=torch.float64)  # (M,)
        self.gain = torch.tensor([f[1] for f in fits], dtype=torch.float64)    # (M,) c_j
        s = s * self.gain[None, :]                                             # c_j s_j(X)
        k = s.T[:, :, None] * _rho(x, x, self.length) * s.T[:, None, :]      # (M, n, n)
        k = k + TAU ** 2 * torch.eye(len(x), dtype=torch.float64)
        self.chol = torch.linalg.cholesky(k)                                  # (M, n, n)
        self.s_obs = s.T                                                      # (M, n)
        self.alpha = torch.cholesky_solve(resid.T[:, :, None], self.chol)[..., 0]   # (M, n)

    def _scale(self, s: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(s.pow(2) + self.floor.pow(2))

    @staticmethod
    def _fit(x, s, r) -> tuple:
        """(l, c): the grid length scale and the gain c >= 1 with the highest log marginal likelihood of the
        residuals ``r`` (n,); for each l, c^2 = r^T (S P S)^-1 r / n (the noise-free optimum), then the
        likelihood is evaluated with the noise."""
        best, best_ll = (float(LENGTH_GRID[0]), 1.0), -math.inf
        eye = TAU ** 2 * torch.eye(len(x), dtype=torch.float64)
        for length in LENGTH_GRID:
            sps = s[:, None] * _rho(x, x, torch.tensor([length], dtype=torch.float64))[0] * s[None, :]
            jitter = 1e-9 * torch.eye(len(x), dtype=torch.float64) * float(sps.diagonal().mean())
            gain2 = float(r @ torch.linalg.solve(sps + jitter, r)) / len(r)
            gain2 = min(max(gain2, 1.0), 1e6)
            chol = torch.linalg.cholesky(gain2 * sps + eye)
            a = torch.cholesky_solve(r[:, None], chol)[:, 0]
            ll = float(-0.5 * r @ a - torch.log(torch.diagonal(chol)).sum())
            if ll > best_ll:
                best, best_ll = (float(length), math.sqrt(gain2)), ll
        return best

    def predict(self, x_scaled):
        m, s = self.base.predict(x_scaled)                                    # (N, M) each
        s64 = self._scale(s.double()) * self.gain                             # c_j s_j(x)
        kx = self.s_obs[:, None, :] * _rho(torch.as_tensor(x_scaled), self.x_obs, self.length)   # (M, N, n) / s(x)
        mean = m.double() + s64 * torch.einsum("mkn,mn->km", kx, self.alpha)
        v = torch.cholesky_solve(kx.transpose(1, 2), self.chol)                # (M, n, N)
        reduction = torch.einsum("mkn,mnk->km", kx, v)                        # (N, M): k^T K^-1 k / s(x)^2
        var = (s64.pow(2) * (1.0 - reduction)).clamp_min(TAU ** 2 / 10)
        return mean.to(m.dtype), var.sqrt().to(m.dtype)


def observed(preprocessing, x_phys: np.ndarray, y_phys: np.ndarray, ok: np.ndarray):
    """Simulated designs usable as observations, in model space: (x (n, D), y (n, M)); rows that failed or whose
    metrics have no model-space value (a log of a non-positive number) are left out."""
    y_phys = np.asarray(y_phys, float)
    logged = np.isin(list(preprocessing.y_cols), list(preprocessing.log_y_cols or []))
    with np.errstate(invalid="ignore"):
        keep = np.asarray(ok, bool) & np.isfinite(y_phys).all(axis=1) & (y_phys[:, logged] > -1).all(axis=1)
    if not keep.any():
        return np.zeros((0, x_phys.shape[1])), np.zeros((0, y_phys.shape[1]))
    y = preprocessing.transform_y(y_phys[keep])
    good = np.isfinite(y).all(axis=1)
    return preprocessing.transform_x(x_phys[keep][good]), y[good]


@dataclass
class Search:
    proposal: object          # the last round's inverse.optimise.Proposal (its table: the last candidates)
    verified: list            # per simulated round: verify_designs rows + round + the designs' x columns
    rounds: list              # per round: model, n_predicted_ok, n_simulated (so far), simulated_this_round,
    #                           n_failed_sims, n_pass (None: not simulated), optimise_s
    success_at: int | None    # simulations spent when a design first met the spec in SPICE (None: none did)


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``search``: ``verified`` holds every design simulated before it (``Search.verified``'s form)."""

    def __init__(self, verified: list):
        super().__init__()
        self.verified = verified


def with_designs(ver: pd.DataFrame, rnd: int, table: pd.DataFrame, x_cols) -> pd.DataFrame:
    """``simulate``'s rows for the first ``len(ver)`` candidates of ``table``, tagged with the round and joined
    with their designs' x columns."""
    ver = ver.copy()
    ver.insert(0, "round", rnd)
    return pd.concat([ver.reset_index(drop=True), table[x_cols].iloc[:len(ver)].reset_index(drop=True)], axis=1)


def search(forward: Forward, spec, *, starts, propose_round, simulate=None, rounds: int = 1, log=print) -> Search:
    """Optimise -> simulate the top-k -> correct the model with every simulated design -> repeat.

    ``starts(model, round) -> x0``; ``propose_round(model, x0, exclude) -> Proposal`` (its top-k, none of the
    design keys in ``exclude``); ``simulate(table) -> rows`` with ``status``, ``pass_all`` and ``sim_<metric>``
    (None: no simulation, one round).  Stops at the first round where a design passes, after ``rounds``, or
    before simulating a round (after the first) in which the corrected model predicts no candidate meets the
    spec: more simulations would only confirm an infeasible prediction.  Also stops after a round in which every
    simulation failed: failures teach the correction nothing, so the next round would search the same place."""
    model, done, verified, records, obs_x, obs_y = forward, set(), [], [], [], []
    prop = None
    try:
        for rnd in range(1, rounds + 1):
            prop = propose_round(model, starts(model, rnd), done)
            table = prop.table
            record = {"round": rnd, "model": model.name, "n_predicted_ok": int(table["meets_all"].sum()),
                      "optimise_s": round(prop.wall_s, 2)}
            if simulate is None or (rnd > 1 and not table["meets_all"].any()):
                if simulate is not None:
                    log(f"[inverse] round {rnd}: corrected with {len(done)} simulated designs, the model predicts no "
                        f"candidate meets the spec; stopping before simulating more")
                records.append(record | {"n_simulated": len(done), "simulated_this_round": 0, "n_pass": None,
                                         "n_failed_sims": sum(int((v["status"] != "ok").sum()) for v in verified)})
                break
            try:
                ver = with_designs(simulate(table), rnd, table, forward.x_cols)
            except KeyboardInterrupt as exc:   # keep what this round simulated before Ctrl-C, with the rounds before
                rows = getattr(exc, "rows", None)
                if rows is not None and len(rows):
                    verified.append(with_designs(rows, rnd, table, forward.x_cols))
                raise SearchInterrupted(verified) from None
            verified.append(ver)
            done |= set(design_keys(table, forward.x_cols))
            records.append(record | {"n_simulated": sum(len(v) for v in verified),   # so far, every round
                                     "simulated_this_round": int(len(ver)),
                                     "n_pass": int(ver["pass_all"].sum()),
                                     "n_failed_sims": sum(int((v["status"] != "ok").sum()) for v in verified)})
            if rounds > 1:
                log(f"[inverse] round {rnd}/{rounds} ({model.name}): {record['n_predicted_ok']}/{len(table)} predicted "
                    f"to meet the spec, {records[-1]['n_pass']} meet it in SPICE; {records[-1]['n_simulated']} "
                    f"simulations so far")
            if ver["pass_all"].any() or rnd == rounds:
                break
            if (ver["status"] != "ok").all():
                # nothing to correct the model with: the next round would search the same place and simulate the
                # failed designs' neighbours (an 8-of-8 incomplete_step round was followed by another)
                failed = ver["status"].value_counts().to_dict()
                log(f"[inverse] round {rnd}: every simulated design failed ({failed}); a correction needs designs "
                    f"that simulate, so the search stops here instead of spending the next round beside them. "
                    f"Check the spec or the circuit's ranges (docs/USAGE.md, inverse design)")
                break
            x_new, y_new = observed(forward.preprocessing, table[forward.x_cols].to_numpy(float),
                                    ver[[f"sim_{c}" for c in spec.y_cols]].to_numpy(float),
                                    (ver["status"] == "ok").to_numpy())
            obs_x.append(x_new)
            obs_y.append(y_new)
            if sum(len(x) for x in obs_x):
                model = CorrectedForward(forward, np.concatenate(obs_x), np.concatenate(obs_y))
    except SearchInterrupted:
        raise
    except KeyboardInterrupt:   # during an optimisation: the rounds simulated before it are kept
        raise SearchInterrupted(verified) from None
    success = next((r["n_simulated"] for r in records if r["n_pass"]), None)
    return Search(prop, verified, records, success)
