"""GP member: a Gaussian process per metric on [x, source-baseline prediction] (stacking transfer).

    python -m training.train_gp
    python -m training.train_gp --opamp two_stage_opamp --set GP_NU=1.5

Needs the source baseline (``python -m training.train``).  For every target_train row the input
is ``z = [x, s(x)]``: the design and what the process-A model predicts for it, both in model
space.  One scikit-learn ``GaussianProcessRegressor`` per metric, kernel
``ConstantKernel * Matern(nu=GP_NU, one length scale per input) + WhiteKernel``, ``normalize_y``,
hyperparameters by maximum marginal likelihood on target_train with ``GP_RESTARTS`` extra
random starts (seeded); above ``GP_HYPER_ROWS`` rows the starts search a seeded subset of that
size and one optimiser run on all rows polishes the best (all rows of 5t_opamp, seed 0: 592 s ->
111 s, the same test R^2; docs/RESULTS.md).  Where the two processes agree up to a smooth correction, the GP needs
few target rows to learn that correction, and it knows where it has not seen data: its
predictive variance is the member's variance in the ensemble.

Which rows it fits (``GP_ROWS``):

* ``"train+val"`` (default): target_train and target_val.  A GP needs no early stopping, so the
  val rows are free to learn from -- at 50 training rows they more than triple its data -- and
  its val predictions stay out-of-sample all the same, stored in the checkpoint
  (``extra["oof_val"]``) for the ensemble to calibrate and weight the GP on, not its in-sample fit:
    - up to ``CROSSFIT_MAX_ROWS`` rows, cross-fitted: the val rows in ``CROSSFIT_FOLDS`` seeded
      folds, each predicted by GPs refitted without that fold (hyperparameters re-optimised,
      started from the full fit's);
    - above, the exact leave-one-out predictive mean and variance (closed form, Rasmussen &
      Williams eq. 5.12: mu_-i = y_i - [K^-1 y]_i / [K^-1]_ii, var_-i = 1 / [K^-1]_ii with the
      noise in K), with the full fit's hyperparameters.
  Why both: leave-one-out keeps hyperparameters that saw the row.  With 18 length scales and
  ~180 rows (50 train + 128 val) that made the val errors look smaller than the test errors:
  the calibrated 95 % intervals covered 90-94 % of test rows (5t_opamp, 3 seeds).  With
  hundreds of rows the effect fades and refitting 5 folds costs more than it buys.
* ``"train"``: target_train only; val is then an ordinary held-out set.

With SIGNED_RATIO and target data that carry a ratio metric's sign (metric_signs.csv: cmrr), that metric's GP
fits u = asinh(k * sign / cmrr) instead (``training.signed_targets``), and the saved member
(``models.SignedRatio`` around the StackedGP) maps its Gaussian in u to cmrr's model space; its val predictions
are mapped the same way.  ``'auto'`` fits both GPs for the metric and keeps the one with the lower
out-of-sample val NLL (per metric: the other metrics' GPs are the same either way).

At most ``GP_MAX_ROWS`` rows are fitted (beyond that a seeded subset of the training rows; every
val row is kept; exact GPs cost O(n^3)).  The fitted GPs are saved as a ``models.gp.StackedGP``
(the baseline MLP inside), so the checkpoint predicts in torch like every other member.
Writes ``results/{OPAMP}_gp_stack.pth``.
"""
import functools
import warnings

import numpy as np
import torch

from core.cli import StageCLI, run_main
from core.errors import ToolkitError
from core.outputs import results_lock
from core.settings import setting_choice
from data_loader.split import fold_ids
from inference.calibration import gaussian_nll
from models import MLP
from models.gp import NUS, StackedGP
from models.signed_ratio import SignedRatio
from training.cli import add_training_flags
from training.signed_targets import fit_transforms, signed_metrics, with_signed_targets
from training.stage import finish_stage, load_parent, require_parent, start_stage, tensors
from training.loop import FitResult


def parse_args(argv=None):
    cli = StageCLI("training.train_gp", __doc__)
    # the flags every training stage takes (the pipeline passes them on); the GP itself reads the data flags
    # (--val-split --test-split --n-target), the network shape its source baseline parent must have, and GP_*
    add_training_flags(cli, unused=("--epochs", "--patience", "--lr", "--batch-size"))
    return cli.parse(argv)


GP_ROWS = ("train+val", "train")
DRY_RUN_TRAIN_ROWS = 40   # --dry-run: training rows fitted beside the val rows (no restarts, no subset search)


def preflight(settings: dict) -> None:
    """The stage's own settings checks, run before any data is read (the pipeline runs every stage's first):
    the two choice settings (GP_MAX_ROWS, GP_RESTARTS and GP_HYPER_ROWS are range-checked with every setting, in
    resolve)."""
    setting_choice(settings, "GP_ROWS", GP_ROWS, default="train+val", fix="--set GP_ROWS=train+val")
    setting_choice(settings, "GP_NU", NUS, default=2.5, fix="--set GP_NU=2.5")


def fit_gps(z: np.ndarray, y: np.ndarray, *, nu: float, restarts: int, seed: int, log=None, index=None,
            hyper_rows: int = 0) -> list:
    """One fitted ``GaussianProcessRegressor`` per column of ``y`` (N, M) on inputs ``z`` (N, P); column j is
    metric ``index[j]`` (default j): its restarts are seeded ``seed + index[j]``, whichever columns are fitted.

    ``hyper_rows`` > 0 and N > ``hyper_rows``: the restarts search the marginal likelihood of a seeded subset of
    ``hyper_rows`` rows, and one optimiser run on all N rows then polishes the best of them (started there, no
    further restarts) -- a fit at N rows started from the subset's best, without paying every restart's O(N^2 P)
    gradient at full N (it may end in another local optimum than restarts at N would).  A polish that ends
    explaining nothing (``explains_nothing``) is fitted again on all rows from the default start, and the fit
    with the higher marginal likelihood kept."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
    gps = []
    index = list(range(y.shape[1])) if index is None else list(index)
    subset = (np.sort(np.random.default_rng(seed).choice(len(z), hyper_rows, replace=False))
              if 0 < hyper_rows < len(z) else None)
    for j in range(y.shape[1]):
        kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * Matern(np.ones(z.shape[1]), (1e-2, 1e3), nu=nu)
                  + WhiteKernel(1e-2, (1e-6, 1e0)))
        gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=restarts,
                                      random_state=seed + index[j])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)   # a length scale at its bound: legal, noisy
            if subset is not None:
                gp.fit(z[subset], y[subset, j])
                gp = GaussianProcessRegressor(gp.kernel_, normalize_y=True, n_restarts_optimizer=0)
            gp.fit(z, y[:, j])
            if subset is not None and explains_nothing(gp):
                # the subset's best start led the polish into the no-correlation optimum (folded cascode, all
                # rows, seed 1: slew rate test R^2_log -0.004); the default start on every row is what a
                # search without the subset would have tried first
                fresh = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=0).fit(z, y[:, j])
                gp = max((gp, fresh), key=lambda g: g.log_marginal_likelihood_value_)
        gps.append(gp)
        if log is not None:
            log(index[j], gp)
    return gps


NOTHING_MARGIN = 1.0   # nats: a fit within this of the i.i.d. Gaussian's log marginal likelihood explains nothing


def explains_nothing(gp) -> bool:
    """Whether a fitted GP's log marginal likelihood is no better (within NOTHING_MARGIN) than that of i.i.d.
    Gaussian noise on its (normalised, unit-variance) targets, -N/2 (1 + log 2 pi): every length scale at its
    lower bound, no correlation between rows, the prediction the mean.  A metric the inputs determine fits better."""
    n = len(gp.X_train_)
    return gp.log_marginal_likelihood_value_ <= -0.5 * n * (1.0 + np.log(2.0 * np.pi)) + NOTHING_MARGIN


CROSSFIT_MAX_ROWS = 400    # up to this many fitted rows, val predictions come from refits without their fold
CROSSFIT_FOLDS = 5


def crossfit_predictions(gps: list, z: np.ndarray, y: np.ndarray, rows, *, folds: int = CROSSFIT_FOLDS,
                         seed: int = 0) -> tuple:
    """Out-of-fold predictive (mean, var), (len(rows), M), for training rows ``rows``: ``rows`` split into
    ``folds`` seeded folds, each predicted by GPs refitted on every other row (hyperparameters re-optimised
    from the full fit's ``gps[j].kernel_``)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    rows = np.asarray(rows, int)
    fold_of = fold_ids(len(rows), folds, seed)
    mean, var = np.empty((len(rows), len(gps))), np.empty((len(rows), len(gps)))
    for f in np.unique(fold_of):     # fewer rows than folds (a tiny val split) leaves some folds empty
        out = rows[fold_of == f]
        keep = np.setdiff1d(np.arange(len(z)), out)
        for j, gp in enumerate(gps):
            refit = GaussianProcessRegressor(gp.kernel_, normalize_y=True, n_restarts_optimizer=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                refit.fit(z[keep], y[keep, j])
            mu, sd = refit.predict(z[out], return_std=True)
            mean[fold_of == f, j], var[fold_of == f, j] = mu, sd ** 2
    return mean, var


def loo_predictions(gps: list, rows) -> tuple:
    """Leave-one-out predictive (mean, var), (len(rows), M), for training rows ``rows`` of the fitted GPs
    (model space: sklearn's normalisation undone).  var includes the noise, like ``StackedGP``'s."""
    from scipy.linalg import cho_solve
    rows = np.asarray(rows, int)
    mean, var = np.empty((len(rows), len(gps))), np.empty((len(rows), len(gps)))
    for j, gp in enumerate(gps):
        k_inv = cho_solve((gp.L_, True), np.eye(len(gp.L_)))             # (K + alpha I)^-1, normalised units
        diag = np.diag(k_inv)[rows]
        y_norm = np.ravel(gp.y_train_)                                     # sklearn keeps y normalised
        mu = y_norm[rows] - np.ravel(gp.alpha_)[rows] / diag
        scale, shift = float(np.ravel(gp._y_train_std)[0]), float(np.ravel(gp._y_train_mean)[0])
        mean[:, j], var[:, j] = mu * scale + shift, scale ** 2 / diag
    return mean, var


def to_module(gps: list, baseline: MLP, z: np.ndarray, nu: float) -> StackedGP:
    """The fitted sklearn GPs (same training rows ``z``) as one ``StackedGP`` holding ``baseline``."""
    kw = baseline.constructor_kwargs()
    model = StackedGP(kw["input_dim"], kw["output_dim"], n_train=len(z), hidden_dim=kw["hidden_dim"],
                      num_layers=kw["num_layers"], dropout=kw["dropout"], activation=kw["activation"], nu=nu)
    model.source.load_state_dict(baseline.state_dict())
    f64 = lambda a: torch.as_tensor(np.array(a, dtype=np.float64))   # noqa: E731  (a copy: sklearn arrays may be read-only)
    with torch.no_grad():
        model.train_z.copy_(f64(z))
        for j, gp in enumerate(gps):
            k = gp.kernel_
            model.amplitude[j] = float(k.k1.k1.constant_value)
            model.length_scale[j] = f64(np.broadcast_to(k.k1.k2.length_scale, (z.shape[1],)))
            model.noise[j] = float(k.k2.noise_level)   # gp.alpha (jitter) is inside L_ only, as in sklearn
            model.alpha[j] = f64(gp.alpha_)
            model.chol[j] = f64(gp.L_)
            model.y_mean[j] = float(np.ravel(gp._y_train_mean)[0])
            model.y_std[j] = float(np.ravel(gp._y_train_std)[0])
    return model.eval()


def main(argv=None):
    args, settings = parse_args(argv)
    preflight(settings)
    require_parent(settings, "baseline")
    with results_lock(settings["RESULTS_DIR"]):   # one run per results folder (issue 23)
        return run(args, settings)


def out_of_sample_val(gps: list, z: np.ndarray, y: np.ndarray, val_rows, seed: int) -> tuple:
    """(method, mean, var) of the val rows (the last ``len(val_rows)`` of ``z``) predicted by GPs that did not
    see them: fold refits up to CROSSFIT_MAX_ROWS rows, the closed-form leave-one-out above."""
    if len(z) <= CROSSFIT_MAX_ROWS:
        return (f"{CROSSFIT_FOLDS}-fold refits", *crossfit_predictions(gps, z, y, val_rows, seed=seed))
    return ("leave-one-out (closed form)", *loo_predictions(gps, val_rows))


def run(args, settings):
    device, data, t0 = start_stage(settings, "gp_stack", dry_run=args.dry_run)
    # the GP reads the baseline's predictions only: any network shape will do
    baseline, _, parent = load_parent(settings, data, "baseline", expect_class=MLP, device="cpu", same_shape=False)
    baseline.eval()
    cols = data["y_cols"]
    signable = signed_metrics(settings, data)   # SIGNED_RATIO: metrics the GP may learn through their sign
    transforms = fit_transforms(data, signable) if signable else []
    u_data = with_signed_targets(data, [cols.index(m) for m in signable], transforms) if signable else data
    x_tr, y_tr = tensors(data, "target_train", "cpu")
    x_val, y_val = tensors(data, "target_val", "cpu")
    u_tr, u_val = tensors(u_data, "target_train", "cpu")[1], tensors(u_data, "target_val", "cpu")[1]
    with_val = settings["GP_ROWS"] == "train+val"
    max_rows, restarts, hyper_rows = settings["GP_MAX_ROWS"], settings["GP_RESTARTS"], settings["GP_HYPER_ROWS"]
    if args.dry_run:   # a smoke test in seconds: few training rows, one optimiser start (the checkpoint's settings
        # snapshot stays the run's, so a second dry run finds it up to date)
        max_rows = min(max_rows, (len(x_val) if with_val else 0) + DRY_RUN_TRAIN_ROWS)
        restarts, hyper_rows = 0, 0
    room = max_rows - (len(x_val) if with_val else 0)
    if room < 1:
        raise ToolkitError(f"GP_MAX_ROWS={settings['GP_MAX_ROWS']} leaves no room for training rows beside the "
                           f"{len(x_val)} val rows (GP_ROWS=train+val). Fix: --set GP_MAX_ROWS="
                           f"{len(x_val) + len(x_tr)} or --set GP_ROWS=train")
    if len(x_tr) > room:
        keep = np.sort(np.random.default_rng(settings["SEED"]).choice(len(x_tr), room, replace=False))
        cap = f"a dry run's {max_rows}" if args.dry_run else f"GP_MAX_ROWS={max_rows}"
        print(f"[gp_stack] fitting a seeded {room} of the {len(x_tr)} training rows: {cap} rows in all"
              + (f", {len(x_val)} of them the val rows (GP_ROWS=train+val)" if with_val else ""))
        x_tr, y_tr, u_tr = x_tr[keep], y_tr[keep], u_tr[keep]
    if with_val:                       # val rows last: their out-of-sample predictions are the val report
        x_tr, y_tr, u_tr = torch.cat([x_tr, x_val]), torch.cat([y_tr, y_val]), torch.cat([u_tr, u_val])
    with torch.no_grad():
        z = torch.cat([x_tr, baseline(x_tr)], dim=1).double().numpy()          # (n, D+M)
    targets = {False: y_tr.double().numpy(), True: u_tr.double().numpy()}   # by "learned through the sign"
    y_val_np = y_val.double().numpy()
    fit_kw = dict(nu=settings["GP_NU"], restarts=restarts, seed=settings["SEED"], hyper_rows=hyper_rows)
    kinds = {c: ([True] if settings["SIGNED_RATIO"] is True else [False, True]) if c in signable else [False]
             for c in cols}           # auto: both targets for a signable metric, chosen below per metric
    gps = {}
    for kind in (False, True):
        idx = [j for j, c in enumerate(cols) if kind in kinds[c]]
        if idx:
            gps.update({(cols[j], kind): gp for j, gp in zip(idx, fit_gps(z, targets[kind][:, idx], index=idx,
                                                                          **fit_kw))})

    @functools.lru_cache(maxsize=None)   # each candidate's module once: to_module copies every GP's (n, n) factor
    def member(signed: tuple):
        """The checkpoint's model: one StackedGP (u space in the ``signed`` metrics), wrapped when any is."""
        inner = to_module([gps[(c, c in signed)] for c in cols], baseline, z, settings["GP_NU"]).to(device)
        if not signed:
            return inner
        return SignedRatio.of(inner, [cols.index(m) for m in signed], [transforms[signable.index(m)] for m in signed])

    oof = {}

    def val_predictions(signed: tuple) -> tuple:
        """(method, model-space val mean, var) of ``member(signed)``, predicted without the val rows."""
        model = member(signed)
        if not with_val:
            with torch.no_grad():
                mean, logvar = model.mean_logvar(x_val.to(device))
            return "held-out val rows", mean.double().cpu().numpy(), logvar.double().exp().cpu().numpy()
        val_rows = np.arange(len(z) - len(x_val), len(z))
        need = [(c, c in signed) for c in cols if (c, c in signed) not in oof]
        if need:   # a metric's out-of-fold predictions do not depend on the others (same seeded folds)
            method, mean, var = out_of_sample_val([gps[k] for k in need], z,
                                                  np.stack([targets[k[1]][:, cols.index(k[0])] for k in need], 1),
                                                  val_rows, settings["SEED"])
            oof.update({k: (method, mean[:, i], var[:, i]) for i, k in enumerate(need)})
        method = oof[(cols[0], cols[0] in signed)][0]
        mean = np.stack([oof[(c, c in signed)][1] for c in cols], 1)
        var = np.stack([oof[(c, c in signed)][2] for c in cols], 1)
        if signed:   # u space -> each metric's model space, as the checkpoint predicts
            mean_t, logvar_t = model.to_model_space(torch.as_tensor(mean), torch.as_tensor(var).log())
            mean, var = mean_t.double().numpy(), logvar_t.double().exp().numpy()
        return method, mean, var

    chosen, choice = tuple(c for c in signable if kinds[c] == [True]), {}
    if any(len(k) > 1 for k in kinds.values()):   # SIGNED_RATIO=auto: per metric, the lower val NLL
        nll_log = gaussian_nll(y_val_np, *val_predictions(())[1:])
        nll_sig = gaussian_nll(y_val_np, *val_predictions(tuple(signable))[1:])
        chosen = tuple(m for m in signable if nll_sig[cols.index(m)] < nll_log[cols.index(m)])
        choice = {"signed_ratio_val_nll": {m: {"signed": float(nll_sig[cols.index(m)]),
                                               "log1p": float(nll_log[cols.index(m)])} for m in signable}}
        for m in signable:
            print(f"[gp_stack] SIGNED_RATIO=auto, {m}: val NLL signed {nll_sig[cols.index(m)]:.4g}, log1p "
                  f"{nll_log[cols.index(m)]:.4g}; kept {'signed' if m in chosen else 'log1p'}")
    fitted = {c: gps[(c, c in chosen)] for c in cols}
    if not args.quiet:
        for c, gp in fitted.items():
            print(f"[gp_stack] {c:<14} log marginal likelihood {gp.log_marginal_likelihood_value_:.1f}; "
                  f"kernel {gp.kernel_}{' (u = asinh(k*sign/y))' if c in chosen else ''}")
    model = member(chosen)
    method, val_mean, val_var = val_predictions(chosen)
    extra = {}
    if with_val:                       # out-of-sample val predictions for the val report and the ensemble
        print(f"[gp_stack] val predictions for the ensemble: {method} (the GP also learned from the val rows)")
        extra["oof_val"] = {"target_val_idx": list(data["split"]["target_val_idx"]), "method": method,
                            "mean": val_mean.tolist(), "var": val_var.tolist()}
    val_mse = float(np.mean((val_mean - y_val_np) ** 2))
    # no epochs: one "epoch" row records the fit (the val number is a report, never used to choose anything)
    fit = FitResult(history=[{"epoch": 1, "val_mse": val_mse,
                              **{f"lml_{c}": float(gp.log_marginal_likelihood_value_) for c, gp in fitted.items()}}],
                    best_epoch=1, best_value=val_mse)
    return finish_stage(settings, data, model, stage="gp_stack", kind="gp_stack", device=device,
                        fit_results={"gp_stack": fit}, monitor="mse", val_value=val_mse, t0=t0, parent=parent,
                        dry_run=args.dry_run,
                        extra={"n_rows": int(len(z)), "rows": settings["GP_ROWS"], "nu": settings["GP_NU"],
                               "kernels": {c: str(gp.kernel_) for c, gp in fitted.items()},
                               "signed_metrics": list(chosen), **choice, **extra})


if __name__ == "__main__":
    run_main(main)
