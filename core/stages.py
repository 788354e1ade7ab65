"""The stage registry: every stage declared once, by one name; everything that lists stages reads it.

    from core.stages import STAGES, canonical, checkpoint_path, command
    checkpoint_path(settings, "align_hetero")    # results/5t_opamp_align_hetero_lambda0.050.pth
    canonical("align_coral")                     # "align_hetero" (an old name, accepted)

A ``Stage`` says: its entry point (``module``, run as ``python -m module``), its checkpoint
file under RESULTS_DIR (the seed's names), the stage it starts from (``parent``), whether the
ensemble can use it (``member``) and whether the pipeline trains it only then (``optional``),
its model class (a ``models.MODEL_CLASSES`` name), the settings it reads (a setting it does not
read leaves its checkpoint up to date), a table label, and the old names it answers to.
A stage module may define ``preflight(settings)``: its own settings checks (a choice, a layer count), raising
``ToolkitError``; its ``main`` and the pipeline (for every stage it may train) call it before any data is read.
The pipeline, ``inference.predict`` (members), ``inverse.forward`` (``--model-type``), the
benchmark harness and the staleness check all look stages up here.  Adding a stage is one
module plus one ``register(Stage(...))`` (tests/test_registry.py does it with a toy stage).

Imports nothing heavy (no torch): ``--help`` and the staleness check stay fast.
"""
import difflib
import importlib
import shlex
from dataclasses import dataclass
from pathlib import Path

from core.errors import ToolkitError

# Settings groups (keys of config.py).  Every config key is read by some stage or listed in
# NOT_STAGE_SETTINGS; tests/test_registry.py fails on a key in neither, so a new setting is classified.
RUN = frozenset({"OPAMP_TYPE", "DATA_DIR", "SEED", "CIRCUIT_OVERRIDES"})
DATA = frozenset({"VAL_SPLIT", "TEST_SPLIT", "N_TARGET_TRAIN", "LOG_Y_COLS", "LOG_Y_MIN_SPAN", "LOG_X_COLS", "LOG_X_MIN_SPAN",
                  "X_SCALER_FIT", "FAIL_POSITIVE", "FAIL_MIN", "FAIL_MAX", "PREPROCESSING_FROM"})
NET = frozenset({"HIDDEN_DIM", "NUM_LAYERS", "DROPOUT_RATE", "EPOCHS", "PATIENCE", "LEARNING_RATE", "WEIGHT_DECAY"})
TARGET_BATCHES = frozenset({"BATCH_SIZE", "MIN_BATCHES_PER_EPOCH"})
COMMON = RUN | DATA | NET
# Read by no training stage: how a run executes (not what it learns), the MDN, inverse design.
# RESULTS_DIR is where a checkpoint lives, not what it learned: a checkpoint copied into another folder
# (python -m active reuses its first round's baseline) is still up to date there.
NOT_STAGE_SETTINGS = frozenset({"RESULTS_DIR", "DEVICE", "NUM_THREADS", "PIPELINE_JOBS", "MDN_COMPONENTS", "MDN_HIDDEN", "MDN_LAYERS",
                                "MDN_BATCH_SIZE", "MDN_EPOCHS", "MDN_LR", "OUT_OF_DOMAIN",
                                "ENSEMBLE_MEMBERS", "FUSION_SELECTION", "ACTIVE_RULE", "ACTIVE_BUDGET",
                                "ACTIVE_INIT", "ACTIVE_BATCH", "ACTIVE_POOL", "ACTIVE_MEMBERS",
                                "ACTIVE_WARM_START", "ACTIVE_VAL_DESIGNS"})


@dataclass(frozen=True)
class Stage:
    name: str                 # the one name: CLI, JSON keys, --members, --model-type, harness methods
    module: str               # entry point: python -m <module>
    file: str                 # checkpoint name under RESULTS_DIR; {opamp} and any {SETTING[:fmt]} filled in
    model_class: str | tuple  # models.MODEL_CLASSES name of the saved model (a tuple: any of them)
    reads: frozenset          # settings that change what it learns (others leave its checkpoint up to date)
    parent: str | None = None  # stage whose checkpoint it starts from (retrained after it)
    member: bool = False      # usable as an ensemble member
    optional: bool = False    # the pipeline trains it only when the ensemble uses it (--members)
    label: str = ""           # tables
    aliases: tuple = ()       # old names, accepted everywhere a name is
    source_only_if: tuple | None = None   # (SETTING, value): with that setting the stage learns from no target
                              # row, so growing target data leaves it up to date (training.staleness)
    cost_s: float = 60.0      # rough seconds (shipped 5t_opamp, one core): orders the pipeline's parallel
                              # stages when the stage has no earlier wall time on record

    def path(self, settings: dict) -> Path:
        return Path(settings["RESULTS_DIR"]) / self.file.format(opamp=settings["OPAMP_TYPE"], **settings)

    @property
    def command(self) -> str:
        return f"python -m {self.module}"


STAGES: dict = {}   # name -> Stage, in pipeline order
_ALIASES: dict = {}  # old name -> name


def register(stage: Stage) -> Stage:
    """Add ``stage`` (after the others in pipeline order); a taken name or alias is a programming error."""
    for name in (stage.name, *stage.aliases):
        if name in STAGES or name in _ALIASES:
            raise ValueError(f"stage name {name!r} is taken")
    if stage.parent is not None and stage.parent not in STAGES:
        raise ValueError(f"stage {stage.name!r}: parent {stage.parent!r} is not registered (register it first)")
    STAGES[stage.name] = stage
    _ALIASES.update({alias: stage.name for alias in stage.aliases})
    return stage


def unregister(name: str) -> None:
    """Remove a stage (tests register toy stages and take them out again)."""
    stage = STAGES.pop(name)
    for alias in stage.aliases:
        _ALIASES.pop(alias, None)


def canonical(name: str, *, what: str = "stage", among=None) -> str:
    """The registry name of ``name`` or one of its old names; a ToolkitError with the choices otherwise."""
    name = str(name).strip()
    out = name if name in STAGES else _ALIASES.get(name)
    choices = list(among) if among is not None else list(STAGES)
    if out is None or out not in choices:
        close = difflib.get_close_matches(name, choices + [a for a, n in _ALIASES.items() if n in choices], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ToolkitError(f"Unknown {what} {name!r}{hint}; choose from {choices}.")
    return out


def stage(name: str) -> Stage:
    return STAGES[canonical(name)]


def members() -> list:
    """Names of the stages the ensemble can use."""
    return [s.name for s in STAGES.values() if s.member]


def checkpoint_path(settings: dict, name: str) -> Path:
    """The stage's checkpoint under RESULTS_DIR (the seed's file names)."""
    return stage(name).path(settings)


def command(name: str) -> str:
    """``python -m <module>`` of the stage: named in every "make it with" message."""
    return stage(name).command


def run_flags(settings: dict) -> str:
    """``--opamp .. --data-dir .. --results-dir .. --seed ..`` (and ``--n-target``) of this run: the flags every
    training stage and the pipeline take, so a command printed in a message runs as printed."""
    n = settings.get("N_TARGET_TRAIN") or 0
    words = ["--opamp", settings["OPAMP_TYPE"], "--data-dir", str(settings["DATA_DIR"]),
             "--results-dir", str(settings["RESULTS_DIR"]), "--seed", str(settings["SEED"])]
    return shlex.join(words + (["--n-target", str(n)] if n else []))


def rerun_command(name: str, settings: dict) -> str:
    """The stage's command with this run's ``run_flags``: what a "make it with" message prints."""
    return f"{command(name)} {run_flags(settings)}"


def metrics_path(ckpt) -> Path:
    """``x.pth`` -> ``x_metrics.json`` (a stage's test report, wall time, best epochs)."""
    return Path(ckpt).with_name(Path(ckpt).stem + "_metrics.json")


# Settings that name a file or folder: compared as the place they point to, so ``data``, ``./data`` and
# ``/home/me/proj/data`` are one setting (a relative path recorded in a checkpoint is read from today's
# working directory, as the run that recorded it read it from its own).
PATH_SETTINGS = frozenset({"DATA_DIR", "PREPROCESSING_FROM", "WARM_START_FROM"})


def _same_setting(key: str, saved, current) -> bool:
    if saved == current:
        return True
    if key in PATH_SETTINGS and isinstance(saved, str) and isinstance(current, str) and saved and current:
        return Path(saved).expanduser().resolve() == Path(current).expanduser().resolve()
    return False


def differences(saved: dict, settings: dict, name: str, *, ignore=()) -> list:
    """Settings the stage reads whose value in ``saved`` (a checkpoint's snapshot) differs from ``settings``.

    Path settings (``PATH_SETTINGS``) differ only when they resolve to different places."""
    keys = stage(name).reads - set(ignore)
    return sorted(k for k in keys if not _same_setting(k, saved.get(k), settings.get(k)))


for _s in (
    Stage("baseline", "training.train", "{opamp}_baseline_model.pth", "MLP",
          COMMON - {"N_TARGET_TRAIN"} | {"BASELINE_BATCH_SIZE", "BASELINE_VAL", "SOURCE_VAL_SPLIT"},
          label="source-only (baseline MLP on B)", aliases=("baseline_model",), cost_s=45.0,
          source_only_if=("BASELINE_VAL", "source")),
    Stage("align_hetero", "training.train_align_coral", "{opamp}_align_hetero_lambda{LAMBDA_CORAL:.3f}.pth",
          "AlignHeteroMLP", COMMON | TARGET_BATCHES | {"LAMBDA_CORAL", "ALPHA_R2", "ALIGN_REINIT_LAYERS", "WARM_START_FROM",
                                                 "REFIT"},
          parent="baseline", member=True, label="align_hetero + CORAL", aliases=("align_coral", "train_align_coral"), cost_s=110.0),
    Stage("target_only", "training.train_target_only", "{opamp}_target_only_hetero.pth",
          ("AlignHeteroMLP", "DeepEnsemble", "SignedRatio"),
          COMMON | TARGET_BATCHES | {"ALPHA_R2", "WARM_START_FROM", "REFIT", "TARGET_ONLY_NETS", "SIGNED_RATIO"}, member=True, label="target-only hetero (ensemble member)",
          aliases=("target_hetero", "target_only_hetero", "train_target_only"), cost_s=30.0),
    Stage("dualhead", "fine_tune.fine_tune", "{opamp}_dualhead_finetuned.pth", "DualHeadMLP",
          COMMON | TARGET_BATCHES | {"ALPHA_R2", "L2SP_LAMBDA", "LR_BIAS", "LR_HEAD", "LR_UNFREEZE", "UNFREEZE_LAYERS",
                                     "UNFREEZE_PATIENCE", "FINETUNE_OBJECTIVE", "WARM_START_FROM", "REFIT"},
          parent="baseline", member=True, label="dual-head fine-tune",
          aliases=("dualhead_b", "dualhead_finetuned", "fine_tune"), cost_s=56.0),
    Stage("pooled", "training.train_pooled", "{opamp}_pooled_flag.pth", "MLP",
          COMMON - {"HIDDEN_DIM", "NUM_LAYERS", "LEARNING_RATE"} | TARGET_BATCHES
          | {"BASELINE_BATCH_SIZE", "POOLED_SAMPLING", "POOLED_HIDDEN_DIM", "POOLED_NUM_LAYERS", "POOLED_LEARNING_RATE"},
          member=True, optional=True, label="pooled MLP + domain flag",
          aliases=("pooled_mlp", "pooled_flag", "train_pooled"), cost_s=75.0),
    Stage("gp_stack", "training.train_gp", "{opamp}_gp_stack.pth", ("StackedGP", "SignedRatio"),
          COMMON | {"GP_NU", "GP_MAX_ROWS", "GP_RESTARTS", "GP_HYPER_ROWS", "GP_ROWS", "SIGNED_RATIO"}, parent="baseline", member=True,
          optional=True,
          label="GP on x + source prediction (ARD Matérn)", aliases=("gp", "train_gp"), cost_s=160.0),
):
    register(_s)


def preflight(settings: dict, names) -> None:
    """The named stages' own settings checks (``preflight`` in each stage's module), before any work: a bad value
    is one line before the results folder is touched and before hours of training."""
    for name in names:
        check = getattr(importlib.import_module(STAGES[name].module), "preflight", None)
        if check is not None:
            check(settings)
