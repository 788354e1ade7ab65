"""Target-only heteroscedastic model: the ensemble's second member and the honest baseline.

    python -m training.train_target_only
    python -m training.train_target_only --dry-run --data-dir /tmp/tiny --results-dir /tmp/res

The same AlignHeteroMLP as stage 2, randomly initialised and trained on target_train only:
    loss = NLL(mu, logvar, y) + ALPHA_R2 * (1 - R2_batch(y, mu))
Early stopping on val NLL.  Writes ``results/{OPAMP}_target_only_hetero.pth``.  Every
transfer stage must beat it to be worth its source data.
With TARGET_ONLY_NETS = K > 1 it trains K such networks from seeds SEED .. SEED+K-1 and saves their
mixture (``models.DeepEnsemble``: mean of the means; variance = theirs + their disagreement).
With REFIT = "train+val" it then retrains from the same start on train + val rows for the best epoch count
(``training.refit``).
With WARM_START_FROM (a results folder) it starts from that folder's target-only weights instead
(python -m active: the previous round's model, refined on the grown data).
With SIGNED_RATIO on and target data that carry the sign of a ratio metric (metric_signs.csv: cmrr), the
networks learn that metric as asinh(k * sign / cmrr) and the saved model (``models.SignedRatio``) maps it back
to the model space of cmrr like any member's (``training.signed_targets``).  SIGNED_RATIO = 'auto' trains
both targets and keeps the lower val NLL; with a warm start the checkpoint's own target refines it and the
other starts fresh (a fresh winner has no parent).
"""
import copy

import torch

from core.cli import StageCLI, run_main
from core.outputs import results_lock
from core.settings import check_weights
from core.errors import ToolkitError
from models import AlignHeteroMLP
from models.deep_ensemble import DeepEnsemble
from models.signed_ratio import SignedRatio
from training.cli import add_training_flags, epoch_printer
from training.loop import TensorBatches, fit
from training.objectives import make_hetero_loss, val_hetero
from training.refit import refit_extra, refitting, train_and_val
from training.signed_targets import check_warm_transforms, fit_transforms, signed_metrics, with_signed_targets
from training.stage import (epochs_and_batches, finish_stage, load_warm_start, model_kwargs, start_stage, tensors,
                            warm_start_path)


def parse_args(argv=None):
    cli = StageCLI("training.train_target_only", __doc__)
    add_training_flags(cli)
    cli.flag("--alpha-r2", "ALPHA_R2", "weight of (1 - batch R^2) (>= 0)")
    return cli.parse(argv)


def preflight(settings: dict) -> None:
    """The stage's own settings checks, run before any data is read (the pipeline runs every stage's first)."""
    check_weights(settings, "ALPHA_R2")


def main(argv=None):
    args, settings = parse_args(argv)
    preflight(settings)
    warm_start_path(settings, "target_only")   # a missing warm-start checkpoint is refused before any work
    with results_lock(settings["RESULTS_DIR"]):   # one run per results folder (issue 23)
        return run(args, settings)


def net_name(base: str, i: int) -> str:
    """History key of network ``i``: the plain name for the first, so one network reads as before."""
    return base if i == 0 else f"{base}_{i}"


def run(args, settings):
    device, data, t0 = start_stage(settings, "target_only", dry_run=args.dry_run)
    epochs, max_batches = epochs_and_batches(settings, args.dry_run)
    size = settings.get("TARGET_ONLY_NETS", 1)
    signable = signed_metrics(settings, data)
    plain = DeepEnsemble if size > 1 else AlignHeteroMLP
    auto = settings.get("SIGNED_RATIO") == "auto" and bool(signable)
    expect = (SignedRatio, plain) if auto else (SignedRatio if signable else plain)
    warm = load_warm_start(settings, data, "target_only", expect_class=expect, device=device)
    transforms = None
    if warm and isinstance(warm[0], SignedRatio):
        transforms = check_warm_transforms(warm[0], [data["y_cols"].index(m) for m in signable], warm[2])
        warm = (warm[0].inner, *warm[1:])
    # candidates (metrics learned through their sign, refine the warm start?); auto: both targets, keep the
    # lower val NLL.  A refined network keeps the meaning of its outputs, so with a warm start the other
    # target starts fresh: a choice made on a few rows (an active loop's first round) is not kept for good.
    if not warm:
        options = [(signable, False), ([], False)] if auto else [(signable, False)]
    else:
        kind = signable if transforms is not None else []
        other = [] if kind else signable
        options = [(kind, True), (other, False)] if auto else [(kind, True)]
    if warm and not isinstance(warm[0], plain):
        raise ToolkitError(f"{warm[2]} holds a {type(warm[0]).__name__}; this run asks for TARGET_ONLY_NETS={size}. "
                           f"Fix: the same TARGET_ONLY_NETS, or WARM_START_FROM='' to start fresh.")
    if warm and size > 1 and warm[0].size != size:
        raise ToolkitError(f"{warm[2]} averages {warm[0].size} networks; this run asks for TARGET_ONLY_NETS={size}. "
                           f"Fix: --set TARGET_ONLY_NETS={warm[0].size}, or WARM_START_FROM='' to start fresh.")
    model_val = val_hetero(*tensors(data, "target_val", device), alpha_r2=settings["ALPHA_R2"])

    def fit_net(net, i: int, learn, epochs: int, evaluate):
        """Train network ``i`` (its own seed for the batch order) on ``learn``'s target_train rows."""
        x_tr, y_tr = tensors(learn, "target_train", device)
        loader = TensorBatches(x_tr, y_tr, batch_size=settings["BATCH_SIZE"], seed=settings["SEED"] + i,
                               max_batches=max_batches, min_batches=settings["MIN_BATCHES_PER_EPOCH"])
        optimizer = torch.optim.AdamW(net.parameters(), lr=settings["LEARNING_RATE"],
                                      weight_decay=settings["WEIGHT_DECAY"])
        return fit(net, loader=loader, optimizer=optimizer, loss_fn=make_hetero_loss(settings["ALPHA_R2"]),
                   evaluate=evaluate, monitor="nll", epochs=epochs, patience=settings["PATIENCE"],
                   desc="target-only", progress=not args.quiet,
                   on_epoch=None if args.quiet or evaluate is None else
                   epoch_printer("Train loss", "Val NLL", val_key="val_nll"))

    def attempt(signed: list, refine: bool) -> dict:
        """One candidate: networks learning ``signed`` metrics through their sign (none: the log1p target),
        refining the warm start or (``refine`` False) from the usual seeded start."""
        columns = [data["y_cols"].index(m) for m in signed]
        learn, transform = data, None
        if signed:   # a refined signed network's transforms (set above), else fitted on this run's training rows
            transform = transforms if refine else fit_transforms(data, signed)
            learn = with_signed_targets(data, columns, transform)
            print(f"[target_only] learning {', '.join(signed)} through its sign (asinh(k*sign/y), metric_signs.csv)")
        evaluate = val_hetero(*tensors(learn, "target_val", device), alpha_r2=settings["ALPHA_R2"])
        nets, starts, fits = [], [], {}
        for i in range(size):   # network i: its own seed for the initial weights and dropout
            torch.manual_seed(settings["SEED"] + i)   # every candidate starts from the same seeded state
            net = (warm[0].nets[i] if size > 1 else warm[0]) if refine else \
                AlignHeteroMLP(**model_kwargs(settings, data)).to(device)
            starts.append(copy.deepcopy(net.state_dict()))   # a refit starts where this run started
            fits[net_name("target_only", i)] = fit_net(net, i, learn, epochs, evaluate)
            nets.append(net)
        wrap = (lambda m: SignedRatio.of(m, columns, transform)) if signed else (lambda m: m)
        model = wrap(DeepEnsemble.of(nets) if size > 1 else nets[0])
        # the val NLL of every metric in model space, so a signed and a log1p candidate compare
        val = model_val(model.eval())["nll"] if signed or size > 1 else fits["target_only"].best_value
        return {"signed": signed, "learn": learn, "nets": nets, "starts": starts, "fits": fits, "wrap": wrap,
                "model": model, "val": val, "refine": refine}

    tried = [attempt(signed, refine) for signed, refine in options]
    best = min(tried, key=lambda t: t["val"])
    label = lambda t: ("signed" if t["signed"] else "log1p")   # noqa: E731
    choice = {}
    if len(tried) > 1:
        choice = {"signed_ratio_val_nll": {label(t): t["val"] for t in tried}}
        if warm:
            choice["signed_ratio_refined"] = label(tried[0])   # the candidate that refined the warm start
        print("[target_only] SIGNED_RATIO=auto: val NLL " + ", ".join(
            f"{label(t)} {t['val']:.5g}{' (warm start)' if t['refine'] else ''}" for t in tried)
            + f"; kept {label(best)} (lower val NLL)")
    if warm and not best["refine"]:
        print(f"[target_only] the fresh {label(best)} network beat the warm start's {label(tried[0])} one: "
              f"this checkpoint does not descend from {warm[2]}")
    model, fits, val_value = best["model"], best["fits"], best["val"]
    parent = warm[2] if best["refine"] else None   # only a refined winner descends from the warm start
    extra = {}
    if refitting(settings):
        plan = {name: result.best_epoch for name, result in fits.items()}
        extra = refit_extra("target_only", model, data, device, plan)
        fits = dict(fits)
        for i, (net, start) in enumerate(zip(best["nets"], best["starts"])):
            net.load_state_dict(start)
            fits[net_name("refit", i)] = fit_net(net, i, train_and_val(best["learn"]), plan[net_name("target_only", i)],
                                                 None)
        model = best["wrap"](DeepEnsemble.of(best["nets"]) if size > 1 else best["nets"][0])
    if size > 1:
        print(f"[target_only] {size} networks averaged (a deep ensemble); val NLL of their mixture {val_value:.5g}")
    return finish_stage(settings, data, model, stage="target_only", kind="target_only", device=device,
                        fit_results=fits, monitor="nll", val_value=val_value,
                        t0=t0, parent=parent, dry_run=args.dry_run,
                        extra={"alpha_r2": settings["ALPHA_R2"], "warm_start": None if parent is None else str(parent),
                               "networks": size, "signed_metrics": best["signed"], **choice, **extra})


if __name__ == "__main__":
    run_main(main)
