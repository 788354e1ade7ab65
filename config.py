"""Defaults for every stage of the toolkit.

Only entry points (``python -m ...``) read this module; library code receives
explicit arguments.  Edit a value here and rerun, or override it for one run:

    python -m training.train --epochs 20 --seed 0
    python -m training.train --set LEARNING_RATE=3e-4 --set HIDDEN_DIM=256

``--set KEY=VALUE`` is type-checked against the default below; an unknown key is
an error (with a "did you mean"), never silently ignored.  Values that depend on
the data (column lists, input/output sizes) are *not* constants: they are read
from the CSV headers and travel inside every checkpoint.
"""

# ---- paths
DATA_DIR = "data"          # folder holding <circuit>/<source|target>/*features*.csv, *targets*.csv
RESULTS_DIR = "results"    # checkpoints, scalers, metrics JSON, plots, run log

# ---- run
OPAMP_TYPE = "5t_opamp"    # a circuit folder under DATA_DIR: '5t_opamp' | 'two_stage_opamp' | 'folded_cascode_opamp' | yours
DEVICE = "auto"            # 'auto' (CUDA when available, else CPU) | 'cpu' | 'cuda' | 'cuda:N'
NUM_THREADS = 1            # torch CPU threads, >= 1; 1 is fastest for these small nets (docs/DECISIONS.md)
PIPELINE_JOBS = 2          # training stages run at once by python -m pipeline (worker processes), >= 1;
                           # 2 = both cores of a laptop busy: make run 5.7 vs 11.3 min (docs/DECISIONS.md)
SEED = 42                  # seeds the split, the weights' init and the batch order

# ---- data
VAL_SPLIT = 0.2            # fraction of the non-test target rows used for validation / early stopping
TEST_SPLIT = 0.2           # fraction of target rows held out first, never used for fitting or selection
N_TARGET_TRAIN = 0         # 0 = all target training rows; N > 0 = a seeded subset of N (data-efficiency runs)
LOG_Y_COLS = "auto"        # metrics modelled as log1p(y): a list of names, or 'auto' = metrics > 0 in every usable row
                           # whose max/min >= LOG_Y_MIN_SPAN in the source + target-val labels (on the shipped
                           # data: slewrate_pos, dc_gain, ugf, cmrr). Seed: ugf, cmrr (docs/DECISIONS.md)
LOG_Y_MIN_SPAN = 3.0       # ratio max/min at which 'auto' logs a metric (half a decade); a list ignores it
LOG_X_COLS = "auto"        # features modelled as log(x): a list of names, or 'auto' = strictly positive
                           # features whose max/min >= LOG_X_MIN_SPAN in the pooled data, unless the data's
                           # design space (meta.json, from the circuit file) declares scale = lin|log
LOG_X_MIN_SPAN = 10.0      # ratio max/min at which 'auto' logs a feature (one decade)
X_SCALER_FIT = "both"      # 'both' (fit x scaler on source+target inputs; label-free) | 'source'
PREPROCESSING_FROM = ""    # path of a saved preprocessing record (JSON of Preprocessing.to_dict) every stage uses instead
                           # of fitting one; "" = fit from the data (the seed). python -m active pins its first round's,
                           # so the source baseline is trained once while the target rows grow
TARGET_ONLY_NETS = 1       # 1..16; the target-only member averages this many networks trained from seeds SEED,
                           # SEED+1, ... (a deep ensemble: mixture mean, variance = theirs + their disagreement);
                           # 1: three nets did not lift the ensemble (docs/RESULTS.md#refit-and-deep-ensembles)
SIGNED_RATIO = "auto"      # True | False | 'auto': where the target data carry the sign of a ratio metric (metric_signs.csv,
                           # written by spice.generate: cmrr = |Adm/Acm|), the target-only and GP members can learn
                           # the signed reciprocal asinh(k*sign/cmrr), smooth where cmrr spikes (models/signed_ratio.py);
                           # False, or data without signs: the seed's log1p target. 'auto' trains both and keeps the
                           # lower val NLL (the GP: per metric): the signed target-only member wins on 5t and
                           # two-stage, loses on folded cascode
                           # (docs/RESULTS.md#cmrr-through-its-sign-signed_ratio)
REFIT = "off"              # 'off' (the seed: keep the model early-stopped on target_val) | 'train+val' (then retrain
                           # target_only / align_hetero / dualhead from the same start on train + val rows for the
                           # epochs val chose; the ensemble calibrates on the early-stopped model's val predictions).
                           # off: the members gain, the ensemble ties within noise (docs/RESULTS.md#refit-and-deep-ensembles)
WARM_START_FROM = ""       # results folder whose checkpoint of the same stage target_only / align_hetero / dualhead
                           # start from (same columns and preprocessing); "" = the seed's initialisation. python -m
                           # active sets it to the previous round when ACTIVE_WARM_START is on
# A row is a failed simulation (dropped after splitting, reported by reason) when any value is
# NaN/inf, or it breaks one of these rules.  A rule naming a metric absent from the data does nothing and says so
# (one warning per rule).
FAIL_POSITIVE = ["slewrate_pos", "dc_gain", "ugf", "cmrr"]   # must be > 0
FAIL_MIN = {"dc_gain": 1.0}                                  # value < bound -> failed
FAIL_MAX = {"ugf": 1e10}                                     # value >= bound -> sentinel, failed

# ---- model
HIDDEN_DIM = 512           # width of every hidden layer (the pooled stage: POOLED_HIDDEN_DIM)
NUM_LAYERS = 6             # hidden layers in the shared backbone (the pooled stage: POOLED_NUM_LAYERS)
DROPOUT_RATE = 0.1         # dropout after each hidden activation, 0..1

# ---- training (shared loop)
EPOCHS = 300               # max epochs per stage / fine-tune phase, >= 1 (seed: 50, which undertrained; early stopping ends most runs sooner)
PATIENCE = 30              # early-stopping patience in epochs, >= 1 (seed: 10; val curves on ~160 rows are noisy)
LEARNING_RATE = 3e-4       # AdamW learning rate for baseline / align / target-only, > 0 (seed: 1e-4; pooled: POOLED_LEARNING_RATE)
BATCH_SIZE = 64            # rows per target batch, >= 1 (seed: 256 = 2-3 steps per epoch on ~640 rows)
BASELINE_BATCH_SIZE = 256  # rows per source batch for the baseline (10,000 source rows)
BASELINE_VAL = "target"    # baseline early stopping: "target" = target_val MSE (the seed) | "source" = a held-out
                           # SOURCE_VAL_SPLIT of the source rows (helps from ~200 target rows, costs at 50;
                           # docs/DECISIONS.md)
SOURCE_VAL_SPLIT = 0.1     # fraction of the source rows held out when BASELINE_VAL = "source"
WEIGHT_DECAY = 1e-4        # AdamW weight decay
MIN_BATCHES_PER_EPOCH = 10 # >= 1; target-data stages: an epoch is at least this many batches (rows cycled),
                           # so EPOCHS / PATIENCE mean the same training at any target size

# ---- align (AlignHeteroMLP + CORAL)
LAMBDA_CORAL = 0.05        # weight of the CORAL term, >= 0 (the seed's). With the seed's 1/(4d^2) normalisation the
                           # term is ~1e-6, so 0.01-0.05 train the same net as 0 (3.5x slower); it acts at 1e4-1e6,
                           # helping one shipped circuit and hurting the other: sweep it on val
                           # (docs/RESULTS.md#coral-weight-lambda_coral)
ALPHA_R2 = 1.0             # weight of (1 - batch R^2), >= 0
ALIGN_REINIT_LAYERS = "auto"  # last backbone layers re-initialised before align training: 0 = transfer every
                           # layer (the seed) .. NUM_LAYERS-1 = only the first; "auto" trains 0 and NUM_LAYERS-1
                           # and keeps the lower val NLL (the best depth differs per circuit; docs/DECISIONS.md)

# ---- pooled (one MLP on source + target rows with a 0/1 domain flag)
POOLED_SAMPLING = "shuffled"  # "shuffled": all rows shuffled in BASELINE_BATCH_SIZE batches (target weight =
                           # its share of rows) | "balanced": each step a BATCH_SIZE target batch + an equal
                           # source batch (both processes weigh the same; 4x faster, lower R^2 here: see
                           # training/train_pooled.py)
POOLED_HIDDEN_DIM = 256    # >= 1; width of the pooled MLP's hidden layers (its own: it fits ~10,000 source rows per
                           # epoch, so its size sets most of a harness cell's time)
POOLED_NUM_LAYERS = 4      # >= 1; its hidden layers. 4 x 256 at POOLED_LEARNING_RATE 1e-3 took ~1/6 the time of
                           # 6 x 512 at 3e-4 for the same ensemble R^2 within 0.005 on three circuits (docs/DECISIONS.md)
POOLED_LEARNING_RATE = 1e-3  # AdamW learning rate of the pooled stage, > 0 (train_pooled's --lr sets it; LEARNING_RATE
                           # is the other stages')

# ---- gp_stack (a GP per metric on [x, source-baseline prediction]; training/train_gp.py)
GP_NU = 2.5                # Matern smoothness: 0.5 | 1.5 | 2.5 (2.5: twice-differentiable, the usual choice)
GP_ROWS = "train+val"      # rows the GP fits: "train+val" (val rows too; the ensemble uses out-of-sample predictions
                           # of them: 5-fold refits up to 400 rows, leave-one-out above) | "train" (docs/DECISIONS.md)
GP_MAX_ROWS = 1000         # >= 2; target rows per GP (a seeded subset beyond; exact GPs cost O(n^3) time)
GP_RESTARTS = 1            # >= 0; extra random starts of the marginal-likelihood optimiser per metric
GP_HYPER_ROWS = 300        # 0 or >= 10; above this many GP rows the marginal-likelihood restarts run on a seeded subset of
                           # this size, then one optimiser run on all rows polishes the best (0 = every restart on all
                           # rows). All rows of 5t / two-stage: same test R^2 at up to 5x less time (docs/DECISIONS.md)

# ---- finetune (DualHeadMLP, three phases)
L2SP_LAMBDA = 1e-4         # L2-SP weight toward the pretrained weights, >= 0
LR_BIAS = 3e-3             # phase 1 learning rate, head_B.bias only, > 0 (seed: 3e-4, too slow to converge)
LR_HEAD = 1e-3             # phase 2 learning rate, head_B weights (+ L2-SP), > 0 (seed: 1e-4)
LR_UNFREEZE = 3e-4         # phase 3 learning rate, backbone layer(s) + head_B (+ L2-SP), > 0 (seed: 5e-5)
UNFREEZE_LAYERS = "all"    # phase 3 unfreezes this many last backbone layers: 1..NUM_LAYERS or "all" (seed: 1;
                           # all is better at every size tried; docs/DECISIONS.md)
UNFREEZE_PATIENCE = 60     # phase 3 early-stopping patience in epochs, >= 1 (seed: PATIENCE; val can stall
                           # ~30 epochs before cmrr improves)
FINETUNE_OBJECTIVE = "hetero"  # phase 3 loss: "hetero" (a logvar_B head; NLL + ALPHA_R2 (1 - R^2), early-stopped
                           # on val MSE of the mean) | "mse" (the seed) | "auto" (both, keep the higher val
                           # mean R^2); hetero won on test in most measured runs (docs/DECISIONS.md)

# ---- ensemble (inference.infer_ensemble; --members overrides ENSEMBLE_MEMBERS)
ENSEMBLE_MEMBERS = ["align_hetero", "target_only", "dualhead", "pooled", "gp_stack"]  # member stages
                           # (core/stages.py names); the pipeline trains each one named here. pooled and the GP
                           # lift the ensemble most below ~200 target rows (docs/DECISIONS.md)
FUSION_SELECTION = "val"   # how the fusion's per-metric weighting is chosen on target_val: "val" (in-sample;
                           # 10 candidate weightings, so little to overfit) | "cv" (scored out of fold, 5 folds;
                           # noisier where a few val rows that every member misses land in one fold; the two
                           # tie or val wins in 16 of 18 replayed cells, the dev set too: docs/DECISIONS.md)

# ---- active learning (python -m active): which target-process designs to simulate
ACTIVE_RULE = "integrated"  # acquisition rule: "integrated" (the batch that most lowers the GP member's variance
                           # over the whole design space; needs gp_stack in ACTIVE_MEMBERS) | "random" (the control) |
                           # "uncertainty" | "diverse" | "mixed" | "mixed_integrated" (needs gp_stack) | "spec" (needs
                           # --spec); docs/USAGE.md says what each picks. integrated: above random on 5t_opamp and
                           # folded_cascode_opamp, behind it within noise on two_stage_opamp (docs/DECISIONS.md)
ACTIVE_BUDGET = 250        # simulations in process B in all (initial set included; failed ones count)
ACTIVE_INIT = 25           # random designs simulated first (>= 10 so the first split has train and val rows)
ACTIVE_BATCH = 25          # >= 1; designs simulated per round. 10: level with 25 within the seeds' spread at 1.8x the
                           # time per loop (5t and two-stage, 3 seeds each: docs/RESULTS.md#batch-size)
ACTIVE_POOL = 5000         # candidates drawn from the design space (its grid) and scored each round
ACTIVE_MEMBERS = ["align_hetero", "target_only", "dualhead", "gp_stack"]  # ensemble retrained every round:
                           # ENSEMBLE_MEMBERS without pooled. With pooled a 5t_opamp loop took twice as long (1,370
                           # vs ~700 s), integrated was 0.003-0.015 lower at 100-200 simulations and level at 250
                           # (3 seeds); it gains only at 25-75 (docs/RESULTS.md#pooled-in-the-loop)
ACTIVE_WARM_START = True   # True: each round's neural members start from the previous round's (WARM_START_FROM);
                           # False: retrained from their usual start (the source baseline / random) every round.
                           # True halves the training time per round at the same test R^2 after 125+ simulations
                           # (5t, 2 seeds: docs/RESULTS.md#warm-started-rounds)
ACTIVE_VAL_DESIGNS = "auto"  # which designs of a round validate (early stopping, fusion, interval calibration):
                           # "uniform" = ceil(VAL_SPLIT x batch) of each batch drawn uniformly from the pool, the rule
                           # picks the rest | "picks" = VAL_SPLIT of the round's designs, whoever chose them (the
                           # same for random) | "auto" = picks for rule spec, uniform for the others. uniform: calibrated
                           # on designs spread like the test designs, integrated's 95 % intervals cover ~0.95 instead
                           # of 0.97-0.98; spec: picks simulates 23 % more designs that meet the spec
                           # (docs/RESULTS.md#uniform-validation-designs, #spec-validation-designs)

# ---- inverse (MDN and optimisation)
MDN_COMPONENTS = 10        # mixture components
MDN_HIDDEN = 256           # hidden width
MDN_LAYERS = 4             # hidden layers
MDN_BATCH_SIZE = 128       # rows per batch
MDN_EPOCHS = 60            # epochs
MDN_LR = 1e-3              # Adam learning rate
OUT_OF_DOMAIN = "warn"     # inverse_opt, for candidates outside the training inputs' ranges (marked in the
                           # out_of_domain column either way): 'warn' | 'refuse' (exit 2) | 'off' (silent)

# ---- per-circuit overrides: applied on top of the values above when OPAMP_TYPE matches
CIRCUIT_OVERRIDES = {
    "5t_opamp": {},
    "two_stage_opamp": {},
}
