"""Where independent tasks run: a local process pool or a Dask cluster, through joblib.

    with parallel("local", workers=2) as run:                 # joblib's loky process pool
        for result in run(delayed(f)(a) for a in tasks): ...
    with parallel("dask", scheduler="tcp://head:8786") as run:  # an existing Dask cluster
        ...

Results come back as they finish (unordered); callers key them by their task.  ``spice.generate``
(simulations) and ``sweep`` (training runs) use this one mechanism.
"""
import contextlib
import sys

from core.errors import ToolkitError

BACKENDS = ("local", "dask")
CONNECT_TIMEOUT_S = 10      # how long to wait for a Dask scheduler before saying it is unreachable


def check_backend(backend: str, scheduler, *, workers: int = 1) -> None:
    """The flags, before any work: a known backend, a scheduler exactly with dask, workers >= 1."""
    if backend not in BACKENDS:
        raise ToolkitError(f"--backend must be one of {list(BACKENDS)}, got {backend!r}.")
    if backend == "dask" and not scheduler:
        raise ToolkitError("--backend dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786); "
                           "for this machine alone use --backend local")
    if backend == "local" and scheduler:
        raise ToolkitError(f"--scheduler {scheduler} is only used with --backend dask; add --backend dask or drop "
                           f"--scheduler.")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ToolkitError(f"--workers/--jobs must be an integer >= 1, got {workers!r}.")


def connect(scheduler: str, timeout_s: float | None = None):
    """A ``dask.distributed.Client`` for ``scheduler``; missing package or no answer: one clear error."""
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        from dask.distributed import Client
    except ImportError:
        raise ToolkitError("--backend dask needs dask[distributed]: pip install 'dask[distributed]'") from None
    try:
        return Client(scheduler, timeout=timeout_s)
    except (OSError, TimeoutError, ValueError) as exc:   # refused, unreachable, malformed address
        raise ToolkitError(f"Cannot reach the Dask scheduler at {scheduler!r} within {timeout_s:g} s "
                           f"({type(exc).__name__}). Fix: start it (dask scheduler) and pass its address, "
                           f"e.g. --scheduler tcp://127.0.0.1:8786, or use --backend local.") from None


LEAK_WARNING = "ignore:resource_tracker:UserWarning"   # a -W option (action:message:category)


def quiet_leak_warnings() -> None:
    """Ctrl-C stops worker processes that hold their queues' semaphores; multiprocessing's resource tracker then
    warns of them at exit, two lines after the one "interrupted" line (it frees them all the same).  Call before
    the workers start: the tracker is started with the interpreter's -W options as they are then."""
    if LEAK_WARNING not in sys.warnoptions:
        sys.warnoptions.append(LEAK_WARNING)


@contextlib.contextmanager
def parallel(backend: str = "local", workers: int = 1, scheduler: str | None = None):
    """Yield a joblib ``Parallel`` (results unordered, as they finish) on ``backend``; closes what it opened."""
    from joblib import Parallel, parallel_config
    check_backend(backend, scheduler, workers=workers)
    quiet_leak_warnings()
    client = connect(scheduler) if backend == "dask" else None
    try:
        with parallel_config(backend="dask" if client is not None else "loky"):
            yield Parallel(n_jobs=-1 if client is not None else workers, return_as="generator_unordered")
    finally:
        if client is not None:
            client.close()
