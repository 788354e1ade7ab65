"""benchmarks.schedule: cells split into parts, each seed's baseline made once, longest parts first."""
import heapq

from benchmarks import run, schedule, sizes

ALL = run.all_methods()
SIZES = ["50", "100", "200", "400", "all"]


def simulate(parts, jobs, duration):
    """Run ``schedule.dispatch`` on a fake clock; returns {part key: (start, end)}."""
    clock, events, spans = [0.0], [], {}

    def submit(part):
        spans[part.key()] = (clock[0], clock[0] + duration(part))
        heapq.heappush(events, (spans[part.key()][1], part.key()))
        return part.key()

    def wait_one(handles):
        end, key = heapq.heappop(events)
        assert key in handles
        clock[0] = end
        return key

    schedule.dispatch(parts, jobs, submit, wait_one)
    return spans


def test_every_method_lands_in_exactly_one_part():
    parts = schedule.split_methods(ALL)
    assert set(parts) == {"transfer", "pooled", "target"}
    assert sorted(m for ms in parts.values() for m in ms) == sorted(ALL)
    # an ensemble with the pooled member needs the pooled checkpoint in its own part
    joined = schedule.split_methods(ALL, ensemble_members=("align_hetero", "pooled"))
    assert "pooled" not in joined and "pooled" in joined["transfer"]
    assert schedule.split_methods(["target_gbm"]) == {"target": ["target_gbm"]}
    # a member built on the baseline (the GP on [x, source prediction]) runs where the baseline is made
    assert "gp_stack" in parts["transfer"] and parts["pooled"] == ["pooled"]


def test_plan_one_baseline_maker_per_seed_and_skips_done_parts():
    cells = [("5t_opamp", s, n) for n in SIZES for s in (0, 1)]
    done = {("5t_opamp", 1, "400", m) for m in schedule.PART_METHODS["pooled"]}
    parts = schedule.plan(cells, ALL, done=done, history={}, order_n=sizes.n_order)
    assert len(parts) == 3 * len(cells) - 1
    makers = [p for p in parts if p.makes_baseline]
    assert [(p.seed, p.n) for p in makers] == [(0, "50"), (1, "50")]
    for p in parts:
        if p.name == "transfer" and not p.makes_baseline:
            assert p.after == ("5t_opamp", p.seed, "50", "transfer")
        if p.name != "transfer":
            assert p.after is None


def test_costs_come_from_history_when_complete():
    hist = {("5t_opamp", "50", "pooled"): [100.0, 300.0]}
    assert schedule.estimate_cost("pooled", "5t_opamp", "50", ["pooled"], hist) == 200.0
    static = schedule.estimate_cost("transfer", "5t_opamp", "all", ["align_hetero"], hist)
    assert static == schedule.STATIC_COST_S["transfer"][0] + schedule.STATIC_COST_S["transfer"][1] * 640


def test_dispatch_respects_the_baseline_and_keeps_workers_busy():
    """Durations shaped like the 5t_opamp harness (seconds): the split plan ends within a few
    percent of a perfect two-way split, where whole cells in size order idled a worker ~5 min."""
    transfer = {"50": 155, "100": 110, "200": 190, "400": 300, "all": 420}
    cost = {"pooled": lambda n: 200, "transfer": lambda n: transfer[n], "target": lambda n: 5 + 0.1 * int(
        n if n != "all" else 640)}
    cells = [("5t_opamp", s, n) for n in SIZES for s in (0, 1, 2)]
    parts = schedule.plan(cells, ALL, done=set(), history={}, order_n=sizes.n_order)
    spans = simulate(parts, 2, lambda p: cost[p.name](p.n))
    total = sum(e - s for s, e in spans.values())
    makespan = max(e for _, e in spans.values())
    assert makespan <= 1.03 * total / 2
    for p in parts:
        if p.after is not None:
            assert spans[p.key()][0] >= spans[p.after][1]  # never before the seed's baseline exists
    # at most `jobs` parts at any time
    times = sorted({s for s, _ in spans.values()})
    assert all(sum(s <= t < e for s, e in spans.values()) <= 2 for t in times)
