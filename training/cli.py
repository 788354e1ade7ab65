"""Command-line pieces every training stage shares: its flags and the per-epoch log line."""
from tqdm.auto import tqdm


def add_training_flags(cli, keys: dict | None = None, unused=()) -> None:
    """Flags every training stage shares (beyond --opamp/--data-dir/--results-dir/--device/--seed); ``keys`` maps
    a flag to the stage's own config key instead (the pooled stage: ``--lr`` sets POOLED_LEARNING_RATE);
    ``unused``: flags the stage takes (the pipeline passes them to every stage) but does not read (the GP has no
    epochs), so its --help says so."""
    flags = (("--epochs", "EPOCHS"), ("--patience", "PATIENCE"), ("--lr", "LEARNING_RATE"),
             ("--batch-size", "BATCH_SIZE"), ("--hidden-dim", "HIDDEN_DIM"), ("--num-layers", "NUM_LAYERS"),
             ("--val-split", "VAL_SPLIT"), ("--test-split", "TEST_SPLIT"), ("--n-target", "N_TARGET_TRAIN"))
    keys = keys or {}
    unknown = set(keys) - {flag for flag, _ in flags}
    if unknown:                                            # a misspelt flag would silently keep its usual key
        raise KeyError(f"not a training flag: {sorted(unknown)}")
    for flag, key in flags:
        cli.flag(flag, keys.get(flag, key), "not used by this stage (the pipeline passes it to every stage)"
                 if flag in unused else "")
    cli.add_argument("--dry-run", action="store_true", help="2 epochs of 2 batches per phase (smoke test)")
    cli.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bars")


def epoch_printer(train_label: str, val_label: str, *, train_key="train_loss", val_key=None):
    """A fit(on_epoch=...) callback printing the seed's per-epoch log line."""
    def show(row):
        vk = val_key or next(k for k in row if k.startswith("val_"))
        tqdm.write(f"  epoch {row['epoch']:>3}  {train_label}={row[train_key]:.5f}  {val_label}={row[vk]:.5f}")
    return show
