"""GP member: a Gaussian process per metric on [x, source-baseline prediction] (stacking transfer).

    python -m training.train_gp
    python -m training.train_gp --opamp two_stage_opamp --set GP_NU=1.5

Needs the source baseline (``python -m training.train``).  For every target_train row the input
is ``z = [x, s(x)]``: the design and what the process-A model predicts for it, both in model
space.  One scikit-learn ``GaussianProcessRegressor`` per metric, kernel
``ConstantKernel * Matern(nu=GP_NU, one length scale per input) + WhiteKernel``, ``normalize_y``,
hyperparameters by maximum marginal likelihood on target_train with ``GP_RESTARTS`` extra
random starts (seeded).  Where the two processes agree up to a smooth correction, the GP needs
few target rows to learn that correction, and it knows where it has not seen data: its
predictive variance is the member's variance in the ensemble.

It never looks at target_val to fit anything (no early stopping, no selection), so its val
error is an honest estimate for the fusion.  At most ``GP_MAX_ROWS`` target rows are used (a
seeded subset; exact GPs cost O(n^3)).  The fitted GPs are saved as a ``models.gp.StackedGP``
(the baseline MLP inside), so the checkpoint predicts in torch like every other member.
Writes ``results/{OPAMP}_gp_stack.pth``.
"""
import warnings

import numpy as np
import torch

from core.cli import StageCLI, run_main
from core.errors import ToolkitError
from core.outputs import results_lock
from models import MLP
from models.gp import NUS, StackedGP
from training.stage import finish_stage, load_parent, start_stage, tensors
from training.loop import FitResult


def parse_args(argv=None):
    cli = StageCLI("training.train_gp", __doc__)
    for flag, key in (("--val-split", "VAL_SPLIT"), ("--test-split", "TEST_SPLIT"), ("--n-target", "N_TARGET_TRAIN")):
        cli.flag(flag, key)
    cli.add_argument("--dry-run", action="store_true", help="(accepted like every stage; the GP fit is the same)")
    cli.add_argument("--quiet", action="store_true", help="no per-metric lines")
    return cli.parse(argv)


def check_gp_settings(settings: dict) -> None:
    if settings["GP_NU"] not in NUS:
        raise ToolkitError(f"GP_NU must be one of {list(NUS)}, got {settings['GP_NU']!r}. Fix: --set GP_NU=2.5")
    for key, lo in (("GP_MAX_ROWS", 2), ("GP_RESTARTS", 0)):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ToolkitError(f"{key} must be an integer >= {lo}, got {value!r}. Fix: --set {key}={max(lo, 1)}")


def fit_gps(z: np.ndarray, y: np.ndarray, *, nu: float, restarts: int, seed: int, log=None) -> list:
    """One fitted ``GaussianProcessRegressor`` per column of ``y`` (N, M) on inputs ``z`` (N, P)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
    gps = []
    for j in range(y.shape[1]):
        kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * Matern(np.ones(z.shape[1]), (1e-2, 1e3), nu=nu)
                  + WhiteKernel(1e-2, (1e-6, 1e0)))
        gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=restarts, random_state=seed + j)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)   # a length scale at its bound: legal, noisy
            gp.fit(z, y[:, j])
        gps.append(gp)
        if log is not None:
            log(j, gp)
    return gps


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
    check_gp_settings(settings)
    with results_lock(settings["RESULTS_DIR"]):   # one run per results folder (issue 23)
        return run(args, settings)


def run(args, settings):
    device, data, t0 = start_stage(settings, "gp_stack", dry_run=args.dry_run)
    baseline, _, parent = load_parent(settings, data, "baseline", expect_class=MLP, device="cpu")
    baseline.eval()
    x_tr, y_tr = tensors(data, "target_train", "cpu")
    if len(x_tr) > settings["GP_MAX_ROWS"]:
        keep = np.sort(np.random.default_rng(settings["SEED"]).choice(len(x_tr), settings["GP_MAX_ROWS"],
                                                                      replace=False))
        print(f"[gp_stack] {len(x_tr)} target rows > GP_MAX_ROWS={settings['GP_MAX_ROWS']}: fitting a seeded "
              f"subset of {len(keep)}")
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    with torch.no_grad():
        z = torch.cat([x_tr, baseline(x_tr)], dim=1).double().numpy()          # (n, D+M)
    cols = data["y_cols"]

    def log(j, gp):
        if not args.quiet:
            print(f"[gp_stack] {cols[j]:<14} log marginal likelihood {gp.log_marginal_likelihood_value_:.1f}; "
                  f"kernel {gp.kernel_}")
    gps = fit_gps(z, y_tr.double().numpy(), nu=settings["GP_NU"], restarts=settings["GP_RESTARTS"],
                  seed=settings["SEED"], log=log)
    model = to_module(gps, baseline, z, settings["GP_NU"]).to(device)
    x_val, y_val = tensors(data, "target_val", device)
    with torch.no_grad():
        val_mse = float(((model(x_val) - y_val) ** 2).mean())
    # no epochs: one "epoch" row records the fit (the val number is a report, never used to choose anything)
    fit = FitResult(history=[{"epoch": 1, "val_mse": val_mse,
                              **{f"lml_{c}": float(gp.log_marginal_likelihood_value_) for c, gp in zip(cols, gps)}}],
                    best_epoch=1, best_value=val_mse)
    return finish_stage(settings, data, model, stage="gp_stack", kind="gp_stack", device=device,
                        fit_results={"gp_stack": fit}, monitor="mse", val_value=val_mse, t0=t0, parent=parent,
                        dry_run=args.dry_run,
                        extra={"n_rows": int(len(z)), "nu": settings["GP_NU"],
                               "kernels": {c: str(gp.kernel_) for c, gp in zip(cols, gps)}})


if __name__ == "__main__":
    run_main(main)
