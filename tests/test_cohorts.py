"""Cohorts: the typed accesses of a cohort's steps, by hand, and aggregation held to per-CTA runs."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from iosim.engine import cohorts
from iosim.engine.cohorts import Access
from iosim.schedule.build import build_schedule
from iosim.schedule.ir import READ, WRITE, CausalMode, Program
from iosim.schedule.problem import Problem, RunConfig, Tiling
from iosim.simulate import simulate


def cfg(algo="flash2", mode="ncu", tiling=None, **problem):
    base = dict(batch=2, heads=4, seq_q=200, head_dim=32)
    return RunConfig(algo=algo, problem=Problem(**(base | problem)), tiling=tiling or Tiling(block_m=32, block_n=16),
                     mode=mode)


def kernel(algo: str, name: str, **problem):
    """One kernel of a tiny problem: 1 batch, 2 query heads sharing 1 key/value head, N = 64, d = 32, 32 × 32 tiles."""
    tiny = dict(batch=1, heads=2, kv_heads=1, seq_q=64) | problem
    c = cfg(algo, tiling=Tiling(block_m=32, block_n=32), **tiny)
    return next(k for k in build_schedule(c).kernels if k.name == name)


def summary(steps) -> list:
    return [(s.accesses, s.active, s.done, s.iters) for s in steps]


def test_flash2_forward_cohort_by_hand():
    """The whole grid (2 heads × 2 Q blocks) in one cohort, one step per K/V block: Q blocks of a head
    abut and merge into one access, both heads read the shared K/V head (multiplicity 4), and the
    outputs are written at the end of the last step."""
    k = kernel("flash2", "flash2_fwd")
    assert (k.ctas, k.n_loop, k.program) == (4, 2, Program.TILE_LOOP)
    q = [Access("Q", s, 0, 64, 0, 32, READ, 1) for s in (0, 1)]
    kv = [[Access(t, 0, r, r + 32, 0, 32, READ, 4) for t in ("K", "V")] for r in (0, 32)]
    out = [Access(t, s, 0, 64, 0, c, WRITE, 1) for t, c in (("O", 32), ("LSE", 1)) for s in (0, 1)]
    assert summary(cohorts.steps(k, 0, 4, line_iters=1)) == [(q + kv[0], 4, 0, 1.0), (kv[1] + out, 4, 4, 1.0)]


def test_a_cohort_steps_head_by_head():
    """Two heads with K/V heads of their own in one cohort: a step's accesses are the first head's CTAs'
    (their Q blocks merged, then the K/V block both read), then the second head's, as CTAs launched
    together issue them one after another; before, Q of both heads came first, then each K/V."""
    k = kernel("flash2", "flash2_fwd", kv_heads=2)
    assert k.ctas == 4

    def kv(s, r):
        return [Access(t, s, r, r + 32, 0, 32, READ, 2) for t in ("K", "V")]

    def out(s):
        return [Access(t, s, 0, 64, 0, c, WRITE, 1) for t, c in (("O", 32), ("LSE", 1))]

    first = [a for s in (0, 1) for a in [Access("Q", s, 0, 64, 0, 32, READ, 1)] + kv(s, 0)]
    last = [a for s in (0, 1) for a in kv(s, 32) + out(s)]
    assert summary(cohorts.steps(k, 0, 4, line_iters=1)) == [(first, 4, 0, 1.0), (last, 4, 4, 1.0)]


def test_causal_ctas_leave_the_cohort_at_the_diagonal():
    """Causal: the first Q block of each head has one K/V block to read and leaves after step 1;
    the second reads two. Rectangles of different heads do not merge."""
    k = kernel("flash2", "flash2_fwd", causal=True)
    assert k.causal is CausalMode.STOP
    q = [Access("Q", s, 0, 64, 0, 32, READ, 1) for s in (0, 1)]
    first = [Access(t, 0, 0, 32, 0, 32, READ, 4) for t in ("K", "V")]
    second = [Access(t, 0, 32, 64, 0, 32, READ, 2) for t in ("K", "V")]

    def out(r0):
        return [Access(t, s, r0, r0 + 32, 0, c, WRITE, 1) for t, c in (("O", 32), ("LSE", 1)) for s in (0, 1)]

    assert summary(cohorts.steps(k, 0, 4, line_iters=1)) == [
        (q + first + out(0), 4, 2, 1.0),
        (second + out(32), 2, 2, 1.0),
    ]


def test_flash1_double_loop_by_hand():
    """Algorithm 1 for one slice: per K/V block j, K_j and V_j once, then per Q block i: Q_i read and
    O_i (fp32), ℓ_i, m_i read and written back; the CTA finishes with the last pair."""
    k = kernel("flash1", "flash1_fwd", heads=1)
    assert (k.program, k.tr, k.tc, cohorts.line_iters(k, lambda name: _Lines(32))) == (Program.DOUBLE_LOOP, 2, 2, 1)
    expected = [(_flash1_kv(j) * (i == 0) + _flash1_inner(i), 1, int((j, i) == (1, 1)), 1)
                for j, i in itertools.product((0, 1), (0, 1))]
    assert summary(cohorts.steps(k, 0, 1, line_iters=1)) == expected


def test_flash1_ctas_issue_their_accesses_one_after_the_other():
    """Two query heads sharing a K/V head, one CTA each: a step's accesses are the first CTA's (its K/V
    block, then its Q and state rows), then the second's, as the two issue them one after the other; the
    second reads the shared K/V block again rather than both as one access."""
    k = kernel("flash1", "flash1_fwd")
    assert k.ctas == 2

    def both(j, i):
        return [(_flash1_kv(j, s) * (i == 0) + _flash1_inner(i, s)) for s in (0, 1)]

    expected = [(sum(both(j, i), []), 2, 2 * int((j, i) == (1, 1)), 1) for j, i in itertools.product((0, 1), (0, 1))]
    assert summary(cohorts.steps(k, 0, 2, line_iters=1)) == expected


def _flash1_inner(i, s=0):
    acc = [Access("Q", s, i * 32, i * 32 + 32, 0, 32, READ, 1)]
    for t, c in (("O32", 32), ("l", 1), ("m", 1)):
        acc += [Access(t, s, i * 32, i * 32 + 32, 0, c, kind, 1) for kind in (READ, WRITE)]
    return acc


def _flash1_kv(j, s=0):
    return [Access(t, 0, j * 32, j * 32 + 32, 0, 32, READ, 1) for t in ("K", "V")]


class _Lines:
    def __init__(self, rows):
        self.line_rows = self.line_cols = rows


def test_line_iters_is_the_tightest_streamed_tensor():
    """flash2's forward streams K and V by rows: lines of 64 rows hold two 32-row blocks, unless one is shorter."""
    k = kernel("flash2", "flash2_fwd")
    assert cohorts.line_iters(k, lambda name: _Lines(64)) == 2
    assert cohorts.line_iters(k, lambda name: _Lines(16 if name == "V" else 64)) == 1


SMALL = [
    cfg(algo, causal=causal, backward=bwd, kv_heads=kvh, seq_q=n)
    for algo, causal, bwd, kvh, n in itertools.product(
        ["flash2", "flash1", "standard", "standard_eager"], [False, True], [False, True], [4, 1], [100, 257])
]


@pytest.mark.parametrize("config", SMALL[::4], ids=lambda c: f"{c.algo}-{c.problem.seq_q}-c{int(c.problem.causal)}")
@pytest.mark.parametrize("aggregate", [True, False])
def test_steps_hold_all_the_work_of_the_schedule(config, aggregate):
    """Aggregated steps (CTAs leaving mid-step, merged iterations) neither lose nor invent FLOPs or CTAs."""
    for k in build_schedule(config).kernels:
        steps = [s for g in range(0, k.ctas, 7 if aggregate else 1)
                 for s in cohorts.steps(k, g, min(k.ctas, g + (7 if aggregate else 1)), 2, aggregate)]
        expected = k.total_flops()
        assert sum(s.flops.tensor * s.active for s in steps) == pytest.approx(expected.tensor), k.name
        assert sum(s.flops.sfu * s.active for s in steps) == pytest.approx(expected.sfu), k.name
        assert sum(s.done for s in steps) == k.ctas, k.name


@pytest.mark.parametrize("config", SMALL[::4], ids=lambda c: f"{c.algo}-{c.problem.seq_q}-c{int(c.problem.causal)}")
def test_engine_does_all_the_work_the_schedule_holds(config):
    """Aggregated steps (CTAs leaving mid-step, merged iterations) neither lose nor invent FLOPs."""
    r = simulate(config, "h100-sxm")
    for kernel_, k in zip(build_schedule(config).kernels, r.kernels):
        expected = kernel_.total_flops()
        assert k.flops["tensor"] == pytest.approx(expected.tensor)
        assert k.flops["sfu"] == pytest.approx(expected.sfu)


AGGREGATED = [("flash2", "rows", False), ("flash2", "heads", False), ("flash2", "rows", True),
              ("standard", "rows", True), ("flash1", "rows", False), ("standard_eager", "rows", False)]


@pytest.mark.parametrize("algo,order,backward", AGGREGATED)
def test_aggregation_changes_no_count(algo, order, backward):
    """Cohorts and line-sized steps give exactly the bytes of one CTA per process, one iteration per step."""
    c = cfg(algo, seq_q=384, batch=2, heads=8, kv_heads=4, backward=backward,
            tiling=Tiling(block_m=32, block_n=32, grid_order=order))
    fast = simulate(c, "h100-sxm")
    slow = simulate(c, "h100-sxm", aggregate=False)
    for a, b in zip(fast.kernels, slow.kernels):
        assert (a.levels, a.l2_hit_bytes, a.flops) == (b.levels, b.l2_hit_bytes, b.flops), a.name
    assert fast.events < slow.events


@pytest.mark.parametrize("algo", ["flash2", "standard", "flash1"])
def test_aggregation_under_eviction_moves_few_bytes(algo):
    """With an L2 too small for the working set, the order of tiles within one instant decides some
    LRU victims: aggregated and per-CTA runs then agree on DRAM bytes within 3 %, reads within 5 %."""
    c = cfg(algo, seq_q=384, batch=2, heads=8, kv_heads=4, tiling=Tiling(block_m=32, block_n=32))
    fast = simulate(c, "h100-sxm", l2_bytes=96 * 1024).levels["hbm"]
    slow = simulate(c, "h100-sxm", l2_bytes=96 * 1024, aggregate=False).levels["hbm"]
    assert fast.total == pytest.approx(slow.total, rel=0.03)
    assert fast.read_bytes == pytest.approx(slow.read_bytes, rel=0.05)


def test_merged_tiles_share_their_lines_as_one_by_one():
    """FlashAttention-1's backward at N = 2048 on the H100's L2 evicts. Its preprocess and its kernels' per-row
    tiles of neighbouring CTAs meet in the model's lines (a line holds several tiles): run one by one, each
    such line is touched by a CTA other than its first user and held in both L2 partitions; merged into one
    access per cohort it stayed private, and the aggregated run read 5.5 % fewer DRAM bytes. Marked shared
    alike, the two runs agree within 1 %."""
    c = RunConfig(algo="flash1", problem=Problem(batch=2, heads=8, seq_q=2048, head_dim=64, backward=True))
    fast, slow = simulate(c, "h100-sxm"), simulate(c, "h100-sxm", aggregate=False)
    total = [sum(k.levels["hbm"].total for k in r.kernels) + r.final_writeback_bytes for r in (fast, slow)]
    assert slow.kernels[-1].levels["hbm"].read_bytes > 0
    assert total[0] == pytest.approx(total[1], rel=0.01)


@pytest.mark.parametrize("name", ["flash2_fwd", "flash2_bwd"])
def test_kept_steps_keep_each_distinct_step_once(name):
    """A causal kernel's tiles stream the same lines up to their diagonals: kept in one cache, every CTA's
    steps are what a cache of its own gives (accesses, CTAs, work), and steps alike are one object, so the
    cache holds fewer distinct steps than the tiles take in all; those of loop blocks alone are looked up by the
    blocks that make them, not built again."""
    k = kernel("flash2", name, seq_q=1024, causal=True, backward=True)
    shared: dict = {}
    for g in range(k.ctas):
        kept = cohorts.steps(k, g, g + 1, 2, True, shared, None)
        assert summary(kept) == summary(cohorts.steps(k, g, g + 1, 2, True, {}, None))
        assert [s.flops for s in kept] == [s.flops for s in cohorts.steps(k, g, g + 1, 2, True, {}, None)]
        _, i, j = k.coord(g)  # each step built afresh, nothing kept or looked up, is the kept one's content
        built = cohorts._one_cta_template(k, i, j, -1, 2, True, None)
        assert [cohorts._content(s) for s in built] == [cohorts._content(s) for s in kept.template]
    templates = [v for key, v in shared.items() if key not in (cohorts._ALIKE, cohorts._MIDDLE)]
    taken = sum(len(t) for t in templates)
    distinct = {id(step) for t in templates for step in t}
    assert len(distinct) == len(shared[cohorts._ALIKE]) < taken / 2
    # a step of loop blocks alone, looked up by what makes it, is the step kept for its content
    alike = shared[cohorts._ALIKE]
    assert shared[cohorts._MIDDLE] and all(alike[cohorts._content(s)] is s for s in shared[cohorts._MIDDLE].values())


def test_kept_loop_steps_follow_the_tile_where_the_loop_does():
    """Standard attention's O = PV streams P's rows of its own tile: steps of loop blocks alone, looked up by what
    makes them, differ from tile to tile as P's rows do (each is the step built afresh), where V's alone would
    make them one."""
    k = kernel("standard", "pv", seq_q=256)
    shared: dict = {}
    for g in range(k.ctas):
        kept = cohorts.steps(k, g, g + 1, 2, True, shared, None)
        _, i, j = k.coord(g)
        built = list(cohorts._one_cta_template(k, i, j, -1, 2, True, None))
        assert len(built) > 2 and [cohorts._content(s) for s in built] == [cohorts._content(s) for s in kept.template]
    middle = shared[cohorts._MIDDLE]
    assert len({key[1:] for key in middle}) < len(middle)  # the same blocks, other rows of P


@pytest.mark.parametrize("n,heads,l2,order,gpu", [(16384, 4, 2_000_000, "rows", "h200-sxm"),
                                                   (32768, 2, 8_000_000, "rows", "h200-sxm"),
                                                   (16384, 4, 2_000_000, "heads", "h100"),
                                                   (32768, 4, 16_000_000, "heads", "h100")])
def test_long_causal_aggregation_under_eviction_is_the_per_cta_run(n, heads, l2, order, gpu):
    """Causal CTAs after the first wave run one by one, and where the L2 cannot hold a head's K/V which
    re-reads hit depends on their timeline: such kernels step a line at a time, so the aggregated run
    is the per-CTA run within issue 9's tolerances (0.5 % bytes, 2 % time). With up to 32 steps a
    loop the aggregated run read 0.58x and 0.26x the per-CTA bytes in rows order. In heads order the CTAs
    launched together are of different heads: run one by one, each waits for its own head's fills and keeps its
    own pace (the calibrated H100's cta_pace_spread); one cohort of them read 0.97x and 1.93x the per-CTA bytes
    here, one cohort a head reads them."""
    c = RunConfig(algo="flash2", problem=Problem(batch=1, heads=heads, seq_q=n, head_dim=128, causal=True),
                  tiling=Tiling(block_m=128, block_n=64, warps=8, stages=2, grid_order=order))
    fast, slow = simulate(c, gpu, l2_bytes=l2), simulate(c, gpu, l2_bytes=l2, aggregate=False)
    assert slow.kernels[0].levels["hbm"].read_bytes > 10 * n * heads * 128 * 2 * 2  # re-reads K/V: it evicts
    assert fast.kernels[0].levels["hbm"].total == pytest.approx(slow.kernels[0].levels["hbm"].total, rel=0.005)
    assert fast.time_s == pytest.approx(slow.time_s, rel=0.02)


def test_ctas_launched_together_share_their_sms_from_their_first_step():
    """Standard attention's S = QK^T at N = 1024 launches 1,024 CTAs, two an SM. Run one by one, the first
    CTAs launched were priced alone on their SMs until the rest of their wave had started (half the pass),
    and the kernel took 2.8 % less time than aggregated; counted resident from their launch, every CTA of a
    wave shares its SM from its first step, as a cohort's CTAs do, and the two runs agree."""
    c = RunConfig(algo="standard", problem=Problem(batch=2, heads=8, kv_heads=2, seq_q=1024, head_dim=64))
    fast, slow = (next(k for k in simulate(c, "h100-sxm", aggregate=a).kernels if k.name == "qk") for a in (True, False))
    assert fast.ctas == 1024 and fast.ctas_per_sm == 2
    assert fast.levels == slow.levels
    assert fast.time_s == pytest.approx(slow.time_s, rel=0.005)


def test_a_cta_waits_only_for_bytes_another_asked_for_first():
    """FlashAttention-2's causal backward at N = 2048: a second-wave cohort reads query rows that the cohort before
    it reaches late in a step of several passes. Run one by one, the later CTA asks for them first (it
    misses, the other then hits) and never waits; aggregated, it waited for the other cohort's whole step
    (+7.9 % on the kernel). A CTA now waits for bytes another is bringing in only where that one asks for
    them (a round trip and its pipeline's depth ahead of its pass) before this CTA's own pass reaches them,
    and the two runs take the same time."""
    c = RunConfig(algo="flash2", problem=Problem(batch=2, heads=8, seq_q=2048, head_dim=64, causal=True,
                                                 backward=True))
    fast, slow = simulate(c, "h100-sxm"), simulate(c, "h100-sxm", aggregate=False)
    a, b = (next(k for k in r.kernels if k.name == "flash2_bwd") for r in (fast, slow))
    assert a.time_s == pytest.approx(b.time_s, rel=0.01)
    assert fast.time_s == pytest.approx(slow.time_s, rel=0.02)


def test_a_cta_leaves_when_its_own_loop_ends():
    """Causal CTAs of one cohort run different trips: the cohort's steps end where each CTA's loop does,
    so every CTA leaves (its slot free for the next) after its own trips, as run one by one; a step
    lasts as long as its longest CTA, and the steps' work still sums to the schedule's FLOPs."""
    k = kernel("flash2", "flash2_fwd", seq_q=128, causal=True)  # 4 Q blocks per head: 1, 2, 3, 4 trips
    steps = list(cohorts.steps(k, 0, k.ctas, 4, aggregate=True))
    heads = k.ctas // 4
    assert [s.done for s in steps] == [heads] * 4
    assert [s.active for s in steps] == [4 * heads, 3 * heads, 2 * heads, heads]
    assert [s.length for s in steps] == [1.0] * 4
    assert steps[0].span_flops.tensor == pytest.approx(k.iter_flops.tensor + k.end_flops.tensor)
    assert sum(s.flops.tensor * s.active for s in steps) == pytest.approx(k.total_flops().tensor)


@pytest.mark.parametrize("algo,causal,backward", [("flash2", True, False), ("flash2", False, False),
                                                  ("flash2", True, True), ("standard", True, False),
                                                  ("flash1", False, False), ("flash1", True, True)])
def test_aggregated_time_is_the_per_cta_time(algo, causal, backward):
    """Where the L2 holds everything, an aggregated run moves the per-CTA run's bytes (one process per
    CTA, one iteration per step) and takes its time within 2 % (issue 9's tolerance), causal cohorts
    whose CTAs run different trips included (their steps last as long as the longest), and
    FlashAttention-1's unpipelined loop (each CTA waits for its own share of a step's bytes: 4.6 % slower
    aggregated while the cohort waited for all of them before computing)."""
    c = RunConfig(algo=algo, problem=Problem(batch=2, heads=8, seq_q=512 if algo != "flash1" else 1024,
                                             head_dim=64, causal=causal,
                                             backward=backward), mode="ncu")  # the algorithm's own tiles
    fast, slow = simulate(c, "h100-sxm"), simulate(c, "h100-sxm", aggregate=False)
    assert fast.events < slow.events
    for a, b in zip(fast.kernels, slow.kernels):
        assert a.levels == b.levels, a.name
        assert a.time_s == pytest.approx(b.time_s, rel=0.02), a.name


def test_ctas_launched_together_run_one_by_one_take_one_cohorts_time_where_the_l2_evicts():
    """Standard attention at N = 512 on the calibrated H100 with a 2 MB L2 (every kernel evicts dirty lines):
    its kernels of one wave and of a few, run one CTA a cohort, take the aggregated run's time, as CTAs
    launched at one instant queue their loads ahead of every write-back of that instant whoever evicted it
    (L2Cache.post, Engine._defer_writes). Queued step by step, each CTA's loads waited for the write-backs of
    those before it: qk (256 CTAs, one wave) took 8.8 % longer per CTA, softmax 4.2 %, pv 2.0 %."""
    c = RunConfig(algo="standard", problem=Problem(batch=2, heads=8, seq_q=512, head_dim=64))
    fast = simulate(c, "h100", l2_bytes=2_000_000)
    slow = simulate(c, "h100", l2_bytes=2_000_000, aggregate=False)
    for a, b in zip(fast.kernels, slow.kernels):
        assert a.levels["hbm"].total == pytest.approx(b.levels["hbm"].total, rel=0.005), a.name
        assert a.time_s == pytest.approx(b.time_s, rel=0.001), a.name


@pytest.mark.parametrize("config", SMALL[::3], ids=lambda c: f"{c.algo}-{c.problem.seq_q}-c{int(c.problem.causal)}")
@pytest.mark.parametrize("aggregate", [True, False])
def test_a_lone_cta_takes_the_same_steps_in_plain_integers(config, aggregate):
    """The one-CTA path (plain integers) yields exactly the steps the array path yields for that CTA."""
    for k in build_schedule(config).kernels:
        if k.program is not Program.TILE_LOOP:
            continue
        for g in range(0, k.ctas, max(1, k.ctas // 7)):
            fast = list(cohorts.steps(k, g, g + 1, 2, aggregate))
            general = list(cohorts._cohort_steps(k, g, g + 1, 2, aggregate))
            assert fast == general, (k.name, g)


def test_few_ctas_merge_rectangles_as_the_array_path_does():
    """Rectangles of a few CTAs, merged in plain lists, are the array path's: runs of equal ones with a
    multiplicity, abutting singles joined along rows and then columns (random grids, many ties)."""
    rng = np.random.default_rng(0)
    for n in range(2, cohorts.SMALL_COHORT + 1):
        for _ in range(20):
            sl = np.sort(rng.integers(0, 3, n))
            r0 = rng.integers(0, 4, n) * 16
            c0 = rng.integers(0, 3, n) * 8
            r1, c1 = r0 + 16 * rng.integers(1, 3, n), c0 + 8
            assert cohorts._rects(sl, r0, r1, c0, c1) == cohorts._rects_array(sl, r0, r1, c0, c1)


UNIFORM = [c for c in SMALL if not c.problem.causal and c.problem.seq_q > 200] + [
    RunConfig(algo="flash2", problem=Problem(batch=2, heads=4, kv_heads=2, seq_q=300, head_dim=64, backward=True), dq=dq)
    for dq in ("atomic", "separate", "fused")] + [
    RunConfig(impl=impl, problem=Problem(batch=2, heads=4, kv_heads=kvh, seq_q=300, head_dim=64, backward=True))
    for impl in ("sdpa_flash", "sdpa_cudnn") for kvh in (4, 2)]


@pytest.mark.parametrize("config", UNIFORM, ids=lambda c: f"{c.impl or c.algo}-{c.dq}-{c.problem.seq_q}-kv{c.problem.kv_heads}")
def test_a_uniform_cohort_takes_the_same_steps_in_plain_integers(config):
    """A cohort of a kernel whose CTAs all run the same loop blocks (no causal mask, split or ragged batch)
    builds its steps once in numpy and then in plain integers: exactly the steps the array path yields, for
    cohorts that start anywhere in the grid and span several slices, at every step size."""
    found = 0
    for k in build_schedule(config).kernels:
        if k.program is not Program.TILE_LOOP or not cohorts._uniform(k):
            continue
        for size in (cohorts.SMALL_COHORT + 1, 77, 264):
            for g in range(0, max(1, k.ctas - size + 1), max(1, k.ctas // 6)):
                g1 = min(k.ctas, g + size)
                if g1 - g <= cohorts.SMALL_COHORT:
                    continue
                for max_steps, line_iters in ((None, 1), (3, 2), (cohorts.MAX_STEPS, 1), (cohorts.MAX_STEPS, 6)):
                    fast = list(cohorts.steps(k, g, g1, line_iters, True, None, max_steps))
                    general = list(cohorts._cohort_steps(k, g, g1, line_iters, True, max_steps))
                    assert fast == general, (k.name, g, g1, max_steps, line_iters)
                    found += 1
    assert found  # the grid has such cohorts: the path is taken

MERGED = SMALL[1::3] + [cfg(causal=True, seq_lens=(200, 37)), cfg(seq_lens=(64, 200)),
                        cfg(causal=True, window=40, kv_heads=1)]


LISTED = [c for c in SMALL if c.algo in ("flash2", "standard")][::2] + [
    cfg(causal=True, window=40, kv_heads=1), cfg(causal=True, backward=True, kv_heads=2, seq_q=300)]


@pytest.mark.parametrize("config", LISTED, ids=lambda c: f"{c.algo}-{c.problem.seq_q}-c{int(c.problem.causal)}-b{int(c.problem.backward)}")
def test_a_few_ctas_take_the_same_steps_in_plain_lists(config):
    """Cohorts of 2 to SMALL_COHORT CTAs whose loops end between the cohort's step edges (causal CTAs freed a few at
    a time) build their steps in plain lists: exactly the steps the array path yields, at every step size."""
    found = 0
    for k in build_schedule(config).kernels:
        if k.program is not Program.TILE_LOOP:
            continue
        for g, g1 in _spread_cohorts(k, (2, 3, 7, cohorts.SMALL_COHORT)):
            for max_steps, line_iters in ((None, 1), (None, 3), (3, 2), (cohorts.MAX_STEPS, 1)):
                listed = list(cohorts._listed_steps(k, g, g1, line_iters, True, max_steps))
                general = list(cohorts._cohort_steps(k, g, g1, line_iters, True, max_steps))
                assert listed == general, (k.name, g, g1, max_steps, line_iters)
                found += len(listed)
    assert found


def _spread_cohorts(kernel, sizes):
    """``(g0, g1)`` of cohorts of two or more CTAs of each of ``sizes``, spread over the kernel's grid."""
    for n in sizes:
        for g in range(0, max(1, kernel.ctas - n + 1), max(1, kernel.ctas // 5)):
            g1 = min(kernel.ctas, g + n)
            if g1 - g >= 2:
                yield g, g1


@pytest.mark.parametrize("config", MERGED, ids=lambda c: f"{c.algo}-{c.problem.seq_q}-c{int(c.problem.causal)}")
@pytest.mark.parametrize("aggregate", [True, False])
@pytest.mark.parametrize("max_steps", [None, 3, cohorts.MAX_STEPS])
def test_a_few_ctas_merge_their_own_steps(config, aggregate, max_steps):
    """Cohorts of 2 to MERGED_COHORT CTAs are their CTAs' own steps, cut at the cohort's step size,
    merged: exactly the steps the array path yields for the cohort."""
    for k in build_schedule(config).kernels:
        if k.program is not Program.TILE_LOOP:
            continue
        for g, g1 in _spread_cohorts(k, (2, 3, 7, cohorts.MERGED_COHORT)):
            merged = list(cohorts.steps(k, g, g1, 2, aggregate, {}, max_steps=max_steps))
            general = list(cohorts._cohort_steps(k, g, g1, 2, aggregate, max_steps=max_steps))
            assert merged == general, (k.name, g, g1)


@pytest.mark.parametrize("backward", [False, True])
def test_merged_steps_kept_across_cohorts_are_the_cohorts_own(backward):
    """Cohorts of neighbouring causal tiles stream the same lines: their merged steps, kept in the kernel's cache
    by the kept steps and slices that made them, are each cohort's steps as the array path builds them afresh, and
    steps come back (fewer distinct steps than the cohorts take)."""
    c = cfg(causal=True, backward=backward, seq_q=1024, kv_heads=2, tiling=Tiling(block_m=32, block_n=64))
    taken, distinct = 0, set()
    for k in build_schedule(c).kernels:
        if k.program is not Program.TILE_LOOP:
            continue
        shared: dict = {}
        for size in (2, 3):
            for g in range(0, k.ctas - size + 1, size):
                if not cohorts._ends_align(k, g, g + size, 2, True, None):
                    continue
                merged = list(cohorts._merged_steps(k, g, g + size, 2, True, shared, None))
                assert merged == list(cohorts._cohort_steps(k, g, g + size, 2, True, None)), (k.name, g, size)
                taken += len(merged)
                distinct |= {id(step) for step in merged}
    assert taken and len(distinct) < 0.6 * taken


def test_a_merged_step_that_comes_back_moves_what_it_moved_when_made(monkeypatch):
    """A merged step kept across cohorts keeps the engine's plan of its accesses: the simulation is the one whose
    cohorts keep nothing from each other (a causal forward at two CTAs an SM, its K/V evicted)."""
    c = RunConfig(algo="flash2", problem=Problem(batch=1, heads=4, seq_q=8192, head_dim=128, causal=True),
                  tiling=Tiling(block_m=64, block_n=128, warps=4, stages=2))
    kept = simulate(c, "h100", l2_bytes=1_000_000)
    monkeypatch.setattr(cohorts, "MERGED_KEPT", -1)  # every cohort starts from an empty cache
    alone = simulate(c, "h100", l2_bytes=1_000_000)
    assert kept.kernels[0].levels["hbm"].read_bytes > 2 * 3 * 4 * 8192 * 128 * 2  # it evicts: twice Q, K, V
    assert [(k.levels, k.time_s) for k in kept.kernels] == [(k.levels, k.time_s) for k in alone.kernels]
    assert kept.time_s == alone.time_s
