"""Run dependent pieces of work on a few workers: at most ``jobs`` at once, each after its prerequisite.

Used by the pipeline (training stages: a child stage after its parent) and the benchmark harness
(parts of (seed, n) cells: later cells after the one that trains the seed's baseline).  The caller
starts and waits on the work (a process pool, or in-process calls); this module only decides the order:
among the items whose prerequisite has finished, the highest ``priority`` starts first.  With
priority = expected seconds until everything that depends on the item is done (its critical path),
the long chains start early and the work left at the end is small.
"""


def next_ready(waiting: list, finished: set, *, after, priority):
    """The item to start now: the highest ``priority(item)`` among those whose ``after(item)`` (a key,
    or None) has finished; None when nothing may start yet."""
    ready = [item for item in waiting if after(item) is None or after(item) in finished]
    return max(ready, key=priority) if ready else None


def dispatch(items: list, jobs: int, submit, wait_one, *, key, after, priority) -> None:
    """Run ``items`` with at most ``jobs`` in flight.

    ``submit(item) -> handle`` starts one; ``wait_one(handles) -> handle`` blocks until one of them has
    finished (and raises if it failed: nothing more is started); ``key(item)`` names an item,
    ``after(item)`` is the key of the item it waits for (None: none).  A prerequisite that is not among
    ``items`` counts as finished."""
    keys = {key(item) for item in items}
    waiting, running, finished = list(items), {}, set()

    def blocker(item):
        first = after(item)
        return first if first in keys else None

    while waiting or running:
        while len(running) < jobs:
            item = next_ready(waiting, finished, after=blocker, priority=priority)
            if item is None:
                break
            waiting.remove(item)
            running[submit(item)] = item
        if not running:   # cannot happen with prerequisites among the items finishing; keep going in order
            item = waiting.pop(0)
            running[submit(item)] = item
        finished.add(key(running.pop(wait_one(list(running)))))


def critical_path(items: list, *, key, after, cost) -> dict:
    """{key: cost of the item plus the longest chain of items waiting on it}: the ``priority`` that
    starts the longest dependent chain first."""
    children = {}
    for item in items:
        children.setdefault(after(item), []).append(item)
    memo = {}

    def length(item):
        k = key(item)
        if k not in memo:
            memo[k] = cost(item) + max((length(c) for c in children.get(k, [])), default=0.0)
        return memo[k]

    return {key(item): length(item) for item in items}
