"""Process-level setup shared by the entry points: device choice, threads, seeding."""
import random
import time

import numpy as np
import torch

from core.errors import ToolkitError


def resolve_device(name: str, *, verbose: bool = True) -> torch.device:
    """'auto' -> CUDA when available else CPU (and say which); 'cuda' without CUDA is an error."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if verbose:
            print(f"[device] auto -> {device}")
        return device
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ToolkitError(f"DEVICE={name!r} but this torch build sees no CUDA GPU "
                               f"(torch {torch.__version__}). Use --device cpu or --device auto.")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ToolkitError(f"Unknown device {name!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'.")


def set_threads(n: int) -> None:
    """Pin torch's intra-op CPU threads (small MLPs run fastest on one thread; see config.NUM_THREADS)."""
    if n is not None and n > 0:
        torch.set_num_threads(int(n))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start_run(settings: dict, stage: str, *, dry_run: bool = False):
    """Threads, seed, device and the run's first line; returns ``(device, t0)``.  Seeds before anything
    draws a random number, so a stage's numbers depend on SEED alone."""
    t0 = time.perf_counter()
    set_threads(settings["NUM_THREADS"])
    seed_everything(settings["SEED"])
    device = resolve_device(settings["DEVICE"])
    print(f"[{stage}] opamp={settings['OPAMP_TYPE']} data={settings['DATA_DIR']} results={settings['RESULTS_DIR']} "
          f"seed={settings['SEED']} device={device}{' DRY-RUN' if dry_run else ''}")
    return device, t0
