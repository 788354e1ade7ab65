"""Stage 3: DualHeadMLP staged fine-tuning on the target domain (process B).

    python -m fine_tune.fine_tune
    python -m fine_tune.fine_tune --l2sp-lambda 1e-3 --epochs 100
    python -m fine_tune.fine_tune --dry-run --data-dir /tmp/tiny --results-dir /tmp/res

Starts from the baseline MLP: backbone and head A copied from it, head B a copy of head A.
Three phases on target_train, each early-stopping on val and keeping its best state:
  1. bias     only ``head_B.bias``, MSE                               lr LR_BIAS
  2. head     ``head_B`` weights (+ bias), MSE, L2-SP on head_B.weight lr LR_HEAD
  3. unfreeze last UNFREEZE_LAYERS backbone layer(s) + head_B,
              L2-SP on all pretrained weights that move               lr LR_UNFREEZE
              (patience UNFREEZE_PATIENCE; the others PATIENCE)
              (default "all"; the seed's 1 leaves the source features frozen, and metrics whose
              sizing dependence differs between processes, cmrr here, cannot be re-learned)
Phase 3's loss is FINETUNE_OBJECTIVE:
  "hetero"  (default) the model gets a ``logvar_B`` head (zero weights, bias = log of each
            metric's val MSE after phase 2, so training starts from the homoscedastic fit) and
            phase 3 minimises the target-only objective, NLL + ALPHA_R2 * (1 - batch R^2).  It
            early-stops on val MSE of the mean: stopped on val NLL it kept shrinking the variance
            while the mean overfitted (5t_opamp, 50 rows, seeds 0-2: 0.857 vs 0.886 mean R^2_log).
            The NLL lets noisy regions count less, and the result carries a per-design variance,
            so it joins the calibrated ensemble.
  "mse"     (the seed) MSE of head B; early stopping on val MSE; no variance head.
  "auto"    phase 3 both ways from the phase-2 state; keep the higher val mean R^2 (per metric
            1 - SSE/SST on target_val in model space, i.e. log space for log columns, then the mean
            over metrics: what the benchmarks score; val MSE in the source-fitted scaling weights
            the metrics arbitrarily for B).  If MSE wins, a last phase fits ``logvar_B`` alone (mean
            frozen), so the model always has a variance.  Measured over 25 (circuit, seed, n) runs
            the hetero run was the better one on test in 23, and where val chose the MSE run it cost
            up to 0.016 (docs/RESULTS.md), so "hetero" is the default at half the cost.
Each phase-3 run has its own RNG stream (dropout, batch order) fixed by its name, so a run is the
same trained alone or inside "auto".
With REFIT = "train+val" the phases then run again from the same start on train + val rows, each for the epochs
its early stopping chose, phase 3 with the objective val chose (``training.refit``).
With WARM_START_FROM (a results folder) the phases start from that folder's dual-head weights instead
(python -m active: the previous round's model); L2-SP still pulls toward the baseline's.
L2-SP pulls toward the pretrained (baseline) weights with weight L2SP_LAMBDA.  Frozen layers
stay in eval mode (no dropout noise).  Writes ``results/{OPAMP}_dualhead_finetuned.pth``.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from core.cli import StageCLI, run_main
from core.errors import ToolkitError
from core.outputs import results_lock
from core.settings import check_weights, layer_count, setting_choice
from losses import varying_r2
from models import MLP, DualHeadMLP
from models.model_utils import load_backbone_from_trained_mlp
from training.cli import add_training_flags, epoch_printer
from training.loop import TensorBatches, fit, run_epoch  # noqa: F401  (run_epoch: seed API, re-exported)
from training.objectives import make_hetero_loss, mse_objective, val_hetero
from training.refit import refit_extra, refitting, train_and_val
from training.stage import (epochs_and_batches, finish_stage, load_parent, load_warm_start, require_parent, start_stage,
                            tensors, warm_start_path)

OBJECTIVES = ("mse", "hetero", "auto")
PHASE3_STREAMS = {"mse": 0, "hetero": 1}   # RNG stream offset of each phase-3 run


def parse_args(argv=None):
    cli = StageCLI("fine_tune.fine_tune", __doc__)
    add_training_flags(cli)
    cli.flag("--l2sp-lambda", "L2SP_LAMBDA", "L2-SP weight toward the pretrained weights (>= 0)")
    cli.flag("--lr-bias", "LR_BIAS", "phase 1 learning rate")
    cli.flag("--lr-head", "LR_HEAD", "phase 2 learning rate")
    cli.flag("--lr-unfreeze", "LR_UNFREEZE", "phase 3 learning rate")
    cli.flag("--unfreeze-layers", "UNFREEZE_LAYERS", "phase 3: how many last backbone layers to unfreeze (1..NUM_LAYERS or all)")
    cli.flag("--unfreeze-patience", "UNFREEZE_PATIENCE", "phase 3 early-stopping patience in epochs")
    cli.flag("--objective", "FINETUNE_OBJECTIVE", "phase 3 loss: hetero (NLL + logvar_B head, default), mse (the seed) or auto (both, keep the higher val mean R^2)")
    cli.flag("--alpha-r2", "ALPHA_R2", "phase 3 (hetero): weight of (1 - batch R^2)")
    return cli.parse(argv)


def head_b(model, x):
    return model(x, domain="B")                                         # (N, n_metrics)


def head_b_hetero(model, x):
    """(mu, logvar, None): the (mu, logvar, features) shape the hetero objectives expect."""
    mu, logvar = model.predict_B(x)                                     # (N, M), (N, M)
    return mu, logvar, None


def check_objective(settings: dict) -> str:
    return setting_choice(settings, "FINETUNE_OBJECTIVE", OBJECTIVES, default="hetero",
                          fix="--objective hetero, mse (the seed), or auto.")


def init_logvar_b(model: DualHeadMLP, x_val, y_val) -> None:
    """Start ``logvar_B`` at the homoscedastic fit: zero weights, bias = log val MSE per metric."""
    model.eval()
    with torch.no_grad():
        mse = ((head_b(model, x_val) - y_val) ** 2).mean(0).clamp_min(1e-6)   # (M,)
        nn.init.zeros_(model.logvar_B.weight)
        model.logvar_B.bias.copy_(mse.log())


def unfreeze_count(n_layers, blocks: int) -> int:
    """``UNFREEZE_LAYERS`` (1..blocks, or "all") as a number of backbone blocks."""
    count = layer_count(n_layers, key="UNFREEZE_LAYERS", keyword="all", lo=1, hi=blocks,
                        why="the backbone's layers", example="--unfreeze-layers 1 (the seed)")
    return blocks if count is None else count


def unfrozen_backbone_params(model: DualHeadMLP, n_layers) -> list:
    """Parameter names of the last ``n_layers`` backbone blocks (phase 3); ``"all"`` = every block."""
    blocks = len(model.backbone)
    count = unfreeze_count(n_layers, blocks)
    return [f"backbone.blocks.{i}.linear.{p}" for i in range(blocks - count, blocks) for p in ("weight", "bias")]


def phase_plan(model: DualHeadMLP, settings: dict) -> list:
    """(name, trainable parameter names, L2-SP parameter names, learning rate) per phase.

    ``logvar_B`` (when the model has it) trains in phase 3 only and is not under L2-SP: it has
    no pretrained value to stay near.
    """
    last = unfrozen_backbone_params(model, settings.get("UNFREEZE_LAYERS", "all"))
    logvar = ["logvar_B.weight", "logvar_B.bias"] if model.has_variance else []
    return [
        ("bias", ["head_B.bias"], [], settings["LR_BIAS"]),
        ("head", ["head_B.weight", "head_B.bias"], ["head_B.weight"], settings["LR_HEAD"]),
        ("unfreeze", last + ["head_B.weight", "head_B.bias"] + logvar, last + ["head_B.weight", "head_B.bias"],
         settings["LR_UNFREEZE"]),
    ]


def choose_phase3(scores: dict) -> str:
    """The phase-3 run to keep: the higher val mean R^2 (``scores[run]["r2"]``); val MSE only breaks ties."""
    return max(scores, key=lambda c: (scores[c]["r2"], -scores[c]["mse"]))


def set_trainable(model, names) -> list:
    """Freeze everything but ``names``; return the modules left fully frozen (kept in eval mode)."""
    names = set(names)
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
    return [m for m in model.backbone if not any(p.requires_grad for p in m.parameters())]


def main(argv=None):
    args, settings = parse_args(argv)
    preflight(settings)
    require_parent(settings, "baseline")
    warm_start_path(settings, "dualhead")   # a missing warm-start checkpoint is refused before any work
    with results_lock(settings["RESULTS_DIR"]):   # one run per results folder (issue 23)
        return run(args, settings, check_objective(settings))


def preflight(settings: dict) -> None:
    """The stage's own settings checks, run before any data is read (the pipeline runs every stage's first).
    UNFREEZE_PATIENCE and the other ranges are checked with every setting (core.settings.SETTING_RULES)."""
    check_weights(settings, "L2SP_LAMBDA", "LR_BIAS", "LR_HEAD", "LR_UNFREEZE", "ALPHA_R2")
    check_objective(settings)
    unfreeze_count(settings.get("UNFREEZE_LAYERS", "all"), settings["NUM_LAYERS"])   # the baseline has NUM_LAYERS


def run(args, settings, objective):
    device, data, t0 = start_stage(settings, "dualhead", dry_run=args.dry_run)
    epochs, max_batches = epochs_and_batches(settings, args.dry_run)
    baseline, _, parent = load_parent(settings, data, "baseline", expect_class=MLP, device=device)
    model = DualHeadMLP(**baseline.constructor_kwargs(), logvar_head=objective != "mse").to(device)
    load_backbone_from_trained_mlp(baseline, model)
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    warm = load_warm_start(settings, data, "dualhead", expect_class=DualHeadMLP, device=device)
    if warm:   # start from the earlier run's weights; L2-SP keeps pulling toward the baseline's (above)
        if warm[0].has_variance != model.has_variance:
            raise ToolkitError(f"{warm[2]} has {'a' if warm[0].has_variance else 'no'} variance head; this run's "
                               f"FINETUNE_OBJECTIVE={objective!r} needs {'one' if model.has_variance else 'none'}. "
                               f"Fix: the FINETUNE_OBJECTIVE of that run, or WARM_START_FROM=''.")
        model.load_state_dict(warm[0].state_dict())
        parent = warm[2]
    initial = copy.deepcopy(model.state_dict())   # a refit starts where this run started
    x_tr, y_tr = tensors(data, "target_train", device)
    x_val, y_val = tensors(data, "target_val", device)
    loader = TensorBatches(x_tr, y_tr, batch_size=settings["BATCH_SIZE"], seed=settings["SEED"],
                           max_batches=max_batches, min_batches=settings["MIN_BATCHES_PER_EPOCH"])
    val_mse = lambda m: {"mse": F.mse_loss(head_b(m, x_val), y_val).item()}  # noqa: E731
    val_r2 = lambda m: varying_r2(y_val, head_b(m, x_val)).item()            # noqa: E731  (mean over metrics)
    val_het = val_hetero(x_val, y_val, alpha_r2=settings["ALPHA_R2"], forward=head_b_hetero)  # nll, mse, r2

    def run_phase(name, trainable, l2sp_names, lr, objective, patience=settings["PATIENCE"], stop_on="nll",
                  loader=loader, fixed=None):
        """One phase; ``fixed``: train exactly that many epochs without validation (the refit)."""
        if objective == "hetero":
            loss_fn = make_hetero_loss(settings["ALPHA_R2"], forward=head_b_hetero)
            evaluate = val_het
            monitor, labels = stop_on, ("Train loss", f"Val {stop_on.upper()}")
        else:
            loss_fn, evaluate, monitor, labels = mse_objective(head_b), val_mse, "mse", ("Train MSE", "Val MSE")
        frozen = set_trainable(model, trainable)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=lr)  # no weight decay: L2-SP is the regulariser here
        return fit(model, loader=loader, optimizer=optimizer, loss_fn=loss_fn,
                   evaluate=evaluate if fixed is None else None, monitor=monitor,
                   epochs=epochs if fixed is None else fixed, patience=patience, desc=f"finetune:{name}",
                   pretrained_state=pretrained, l2sp_lambda=settings["L2SP_LAMBDA"] if l2sp_names else 0.0,
                   l2sp_params=l2sp_names or None, frozen_modules=frozen, progress=not args.quiet,
                   on_epoch=None if args.quiet or fixed is not None else
                   epoch_printer(f"[{name}] {labels[0]}", labels[1], val_key=f"val_{monitor}"))

    plan = phase_plan(model, settings)
    results = {name: run_phase(name, trainable, l2sp, lr, "mse") for name, trainable, l2sp, lr in plan[:2]}
    last = plan[2][0]                                                   # "unfreeze"
    candidates = ("mse", "hetero") if objective == "auto" else (objective,)

    def phase3(candidate, loader, x_init, y_init, fixed=None):
        """Phase 3 with objective ``candidate`` on its own RNG stream (the same run alone, inside "auto" or
        refitted); a hetero run's ``logvar_B`` starts at the homoscedastic fit of ``(x_init, y_init)``."""
        name, trainable, l2sp, lr = plan[2]
        stream = settings["SEED"] + PHASE3_STREAMS[candidate]
        torch.manual_seed(stream)
        loader.generator.manual_seed(stream)
        if candidate == "hetero":
            init_logvar_b(model, x_init, y_init)
        moving = [n for n in trainable if candidate == "hetero" or not n.startswith("logvar_B.")]
        # the hetero run keeps its best val-MSE state too (stopping on val NLL let the mean overfit)
        return run_phase(name, moving, l2sp, lr, candidate, patience=settings["UNFREEZE_PATIENCE"], stop_on="mse",
                         loader=loader, fixed=fixed)

    def variance_phase(loader, x_init, y_init, fixed=None):
        """After an MSE phase 3: fit ``logvar_B`` alone (mean frozen), from the homoscedastic fit."""
        init_logvar_b(model, x_init, y_init)
        return run_phase("variance", ["logvar_B.weight", "logvar_B.bias"], [], settings["LR_HEAD"], "hetero",
                         loader=loader, fixed=fixed)

    start, tried = copy.deepcopy(model.state_dict()), {}
    for candidate in candidates:
        model.load_state_dict(start)
        result = phase3(candidate, loader, x_val, y_val)
        with torch.no_grad():
            scores = {"mse": val_mse(model.eval())["mse"], "r2": val_r2(model)}
        tried[candidate] = (scores, result, copy.deepcopy(model.state_dict()))
    chosen = choose_phase3({c: v[0] for c, v in tried.items()})      # val only, never test
    if len(tried) > 1:
        print(f"[dualhead] phase 3, objective {objective}: kept {chosen} ("
              + ", ".join(f"{c}: val MSE {v[0]['mse']:.5g}, val R2 {v[0]['r2']:.4f}" for c, v in tried.items()) + ")")
    model.load_state_dict(tried[chosen][2])
    results[last] = tried[chosen][1]
    if model.has_variance and chosen == "mse":
        # the mean came from the MSE fit; give it a variance head anyway (head only, mean frozen)
        results["variance"] = variance_phase(loader, x_val, y_val)
    for p in model.parameters():
        p.requires_grad_(True)
    # the checkpoint's val number is the final model's (a phase may have stopped on another one); with a
    # refit, the early-stopped model's (the refitted one has learned from the val rows)
    monitor = "nll" if model.has_variance else "mse"
    final_val = (val_het if model.has_variance else val_mse)(model.eval())[monitor]
    refit = {}
    if refitting(settings):
        epochs_of = {name: r.best_epoch for name, r in results.items()}   # bias, head, unfreeze (+ variance)
        refit = refit_extra("dualhead", model, data, device, epochs_of)
        model.load_state_dict(initial)
        rows = train_and_val(data)
        x_all, y_all = tensors(rows, "target_train", device)
        all_rows = TensorBatches(x_all, y_all, batch_size=settings["BATCH_SIZE"], seed=settings["SEED"],
                                 max_batches=max_batches, min_batches=settings["MIN_BATCHES_PER_EPOCH"])
        for name, trainable, l2sp, lr in plan[:2]:
            results[f"refit_{name}"] = run_phase(name, trainable, l2sp, lr, "mse", loader=all_rows,
                                                 fixed=epochs_of[name])
        results[f"refit_{last}"] = phase3(chosen, all_rows, x_all, y_all, fixed=epochs_of[last])
        if "variance" in epochs_of:
            results["refit_variance"] = variance_phase(all_rows, x_all, y_all, fixed=epochs_of["variance"])
        for p in model.parameters():
            p.requires_grad_(True)
    return finish_stage(settings, data, model, stage="dualhead", kind="dualhead", device=device,
                        fit_results=results, monitor=monitor, val_value=final_val, t0=t0,
                        parent=parent, dry_run=args.dry_run,
                        extra={"phases": list(results), "l2sp_lambda": settings["L2SP_LAMBDA"],
                               "warm_start": str(warm[2]) if warm else None,
                               "objective": objective, "phase3_objective": chosen,
                               "phase3_val_mse": {c: v[0]["mse"] for c, v in tried.items()},
                               "phase3_val_r2": {c: v[0]["r2"] for c, v in tried.items()}, **refit})

if __name__ == "__main__":
    run_main(main)
