"""Where independent tasks run: a local process pool or a Dask cluster, through joblib.

    with parallel("local", workers=2) as run:                 # joblib's loky process pool
        for result in run(delayed(f)(a) for a in tasks): ...
    with parallel("dask", scheduler="tcp://head:8786") as run:  # an existing Dask cluster
        ...

Results come back as they finish (unordered); callers key them by their task.  ``spice.generate``
(simulations) and ``sweep`` (training runs) use this one mechanism.
"""
import contextlib
import os
import sys
import threading
import time

from core.errors import ToolkitError

BACKENDS = ("local", "dask")
CONNECT_TIMEOUT_S = 10      # how long to wait for a Dask scheduler before saying it is unreachable
HANDSHAKE_GRACE_S = 5       # beyond it, for the handshake after a connection (a wrong service hangs there)


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
    """A ``dask.distributed.Client`` for ``scheduler``; missing package, no answer, or something other than a Dask
    scheduler answering (a dashboard's HTTP port, a worker's port): one clear error within about ``timeout_s``.
    ``Client(timeout=...)`` bounds the connection but not the handshake after it (an HTTP server hangs it), so the
    whole attempt runs in a thread with a deadline."""
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        from dask.distributed import Client
    except ImportError:
        raise ToolkitError("--backend dask needs dask[distributed]: pip install 'dask[distributed]'") from None
    outcome, lock, deadline = {}, threading.Lock(), timeout_s + HANDSHAKE_GRACE_S

    def attempt():
        try:
            client = Client(scheduler, timeout=timeout_s)
        except Exception as exc:   # refused, unreachable, malformed, or not a scheduler's protocol (an HTTP port)
            outcome["error"] = exc
            return
        with lock:
            late = outcome.get("gave_up", False)
            outcome["client"] = client
        if late:                   # answered after the caller gave up: never left behind as the default client
            client.close()
    thread = threading.Thread(target=attempt, name="dask-connect", daemon=True)
    thread.start()
    thread.join(deadline)
    with lock:
        outcome["gave_up"] = "client" not in outcome
    if "client" in outcome:
        return outcome["client"]
    why = type(outcome["error"]).__name__ if "error" in outcome else "no scheduler handshake"
    raise ToolkitError(f"Cannot reach the Dask scheduler at {scheduler!r} within {deadline:g} s ({why}). Fix: start "
                       f"it (dask scheduler) and pass its address (its port, 8786 by default, not the dashboard's "
                       f"8787), e.g. --scheduler tcp://127.0.0.1:8786, or use --backend local.")


PARENT_POLL_S = 1.0         # how often a worker checks that the process that started it is alive
_WATCHING = False


def exit_with_parent(poll_s: float = PARENT_POLL_S) -> None:
    """In a worker process: exit at once when the process that started it dies (``kill -9`` of the pipeline or the
    harness).  Their workers write under the parent's results lock; an orphan would go on writing checkpoints while
    a new run takes the lock.  A multiprocessing worker waits on its parent's sentinel (ready when the parent is
    gone, on every platform); another child polls its parent's pid, taken now.  Files are written atomically, so
    an exit between two writes leaves no half file.  Once per process (a pool worker runs many tasks)."""
    global _WATCHING
    if _WATCHING:
        return
    _WATCHING = True
    import multiprocessing
    from multiprocessing.connection import wait
    parent_process = multiprocessing.parent_process()
    parent = os.getppid()

    def watch():
        if parent_process is not None:
            wait([parent_process.sentinel])
        else:
            while os.getppid() == parent:
                time.sleep(poll_s)
        os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


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
