"""Process-level setup shared by the entry points: device choice, threads, seeding."""
import random

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
