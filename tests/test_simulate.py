"""The simulator end to end, held to independent oracles: closed forms in limiting cases, conservation
of bytes, the roofline, determinism, and counters measured on an H100. The engine's parts have tests of
their own (``test_links``, ``test_l2``, ``test_cohorts``)."""
from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest

from iosim.costs import closed_forms
from iosim.hardware.profile import load_profile
from iosim.results.result import RunResult
from iosim.schedule.build import build_schedule
from iosim.schedule.problem import ConfigError, Problem, RunConfig, Tiling
from iosim.simulate import simulate

REPO = Path(__file__).resolve().parents[1]
UNBOUNDED = 1 << 40


def cfg(algo="flash2", mode="ncu", tiling=None, dq="atomic", **problem):
    base = dict(batch=2, heads=4, seq_q=200, head_dim=32)
    return RunConfig(algo=algo, problem=Problem(**(base | problem)), tiling=tiling or Tiling(block_m=32, block_n=16),
                     mode=mode, dq=dq)


SMALL = [
    cfg(algo, causal=causal, backward=bwd, kv_heads=kvh, seq_q=n)
    for algo, causal, bwd, kvh, n in itertools.product(
        ["flash2", "flash1", "standard", "standard_eager"], [False, True], [False, True], [4, 1], [100, 257])
] + [  # the flash backwards with dQ in a kernel of its own, or in a second loop of the K/V kernel
    cfg(algo, causal=causal, backward=True, kv_heads=kvh, seq_q=n, dq=dq)
    for algo, causal, kvh, n, dq in itertools.product(["flash2", "flash1"], [False, True], [4, 1], [100, 257],
                                                       ["separate", "fused"])
]


@pytest.mark.parametrize("config", SMALL, ids=lambda c: f"{c.algo}-{c.problem.seq_q}-c{int(c.problem.causal)}"
                         f"-b{int(c.problem.backward)}-kv{c.problem.kv_heads}" + ("" if c.dq == "atomic" else f"-dq{c.dq}"))
def test_no_l2_equals_closed_form(config):
    """With no L2 every CTA fetches its own tiles: HBM bytes are the exact tiled counts."""
    hbm = simulate(config, "h100", l2_bytes=0).levels["hbm"]
    expected = closed_forms.no_cache_bytes(config)
    assert (hbm.read_bytes, hbm.write_bytes) == (expected["read"], expected["write"])


def test_dq_is_a_choice_of_the_flash_backwards():
    """RunConfig.dq: one of atomic, separate, fused; the last two only for iosim's (or a user's) flash1/flash2
    kernels; it round-trips through to_dict, which leaves the default out (old files stay as they were)."""
    with pytest.raises(ConfigError, match="^dq: must be one of atomic, separate, fused, got 'merged'"):
        RunConfig(dq="merged")
    with pytest.raises(ConfigError, match="^dq: separate .* algo must be flash1 or flash2"):
        RunConfig(algo="standard", dq="separate")
    with pytest.raises(ConfigError, match="^dq: separate .* impl sdpa_flash"):
        RunConfig(impl="sdpa_flash", dq="separate")
    c = cfg(dq="separate", backward=True)
    assert c.to_dict()["dq"] == "separate" and RunConfig.from_dict(c.to_dict()) == c
    assert "dq" not in cfg(backward=True).to_dict()


@pytest.mark.parametrize("backward", [False, True])
def test_one_tile_standard_is_the_papers_algorithm_0(backward):
    """Tiles as large as the problem make our standard kernels Algorithms 0 and 3 of the paper exactly."""
    c = cfg("standard", seq_q=64, backward=backward, tiling=Tiling(block_m=64, block_n=64))
    hbm = simulate(c, "h100", l2_bytes=0).levels["hbm"]
    paper = closed_forms.paper_standard(c)
    assert (hbm.read_bytes, hbm.write_bytes) == (paper["read"], paper["write"])


@pytest.mark.parametrize("algo, dq", [(a, "atomic") for a in ["flash2", "flash1", "standard", "standard_eager"]]
                         + [("flash2", "separate"), ("flash1", "separate")])
@pytest.mark.parametrize("backward", [False, True])
def test_unbounded_l2_leaves_only_compulsory_reads(algo, dq, backward):
    """An L2 that never evicts reads each input from HBM once and writes nothing back during the run;
    what it wrote (the outputs among it) reaches HBM once, at the end."""
    c = cfg(algo, mode="plain", seq_q=300, kv_heads=2, backward=backward, dq=dq)
    r = simulate(c, "h100", l2_bytes=UNBOUNDED)
    assert r.levels["hbm"].read_bytes == closed_forms.compulsory_bytes(c)["read"]
    assert sum(k.levels["hbm"].write_bytes for k in r.kernels) == 0
    assert r.levels["hbm"].write_bytes == r.final_writeback_bytes == r.kernels[-1].dirty_left_bytes
    assert r.final_writeback_bytes >= closed_forms.compulsory_bytes(c)["write"]


def test_unbounded_l2_dirty_bytes_are_the_written_tensors():
    c = cfg("flash2", mode="plain", seq_q=300)
    r = simulate(c, "h100", l2_bytes=UNBOUNDED)
    p = c.problem
    o_and_lse = p.bh * p.seq_q * (p.head_dim * p.elem_bytes + 4)
    assert r.kernels[-1].dirty_left_bytes == o_and_lse == r.levels["hbm"].write_bytes


@pytest.mark.parametrize("lines", [1, 16, 1024])
@pytest.mark.parametrize("algo", ["flash2", "flash1", "standard"])
def test_l2_resolution_keeps_the_limits(algo, lines):
    """The L2 model's resolution (lines per partition) moves what an evicting L2 keeps, never the limits:
    an unbounded L2 still reads each input once, no L2 still gives the exact tiled counts, and bytes are
    conserved at a small L2 however coarse its lines."""
    c = cfg(algo, mode="plain", seq_q=300, kv_heads=2, backward=True)
    assert simulate(c, "h100", l2_bytes=UNBOUNDED, l2_lines=lines).levels["hbm"].read_bytes == \
        closed_forms.compulsory_bytes(c)["read"]
    hbm = simulate(c.with_(mode="ncu"), "h100", l2_bytes=0, l2_lines=lines).levels["hbm"]
    expected = closed_forms.no_cache_bytes(c)
    assert (hbm.read_bytes, hbm.write_bytes) == (expected["read"], expected["write"])
    for k in simulate(c, "h100", l2_bytes=256 * 1024, l2_lines=lines).kernels:
        assert k.l2_miss_bytes == k.levels["hbm"].read_bytes + k.levels["host"].read_bytes


@pytest.mark.parametrize("lines", [0, -4, 2.5, True])
def test_l2_resolution_must_be_a_positive_integer(lines):
    with pytest.raises(ConfigError, match="^l2_lines: must be a positive integer"):
        simulate(cfg(), "h100", l2_lines=lines)


@pytest.mark.parametrize("config", SMALL[::5], ids=lambda c: f"{c.algo}-{c.problem.seq_q}")
@pytest.mark.parametrize("l2", [0, 64 * 1024, None])
def test_bytes_are_conserved(config, l2):
    """Bytes landed in SRAM = bytes the L2 served = hits + misses (loads; atomics look lines up too),
    and misses = HBM + host fills."""
    r = simulate(config, "h100", l2_bytes=l2)
    for k in r.kernels:
        assert k.levels["sram"].write_bytes == k.levels["l2"].read_bytes
        lookups = k.l2_hit_bytes + k.l2_miss_bytes
        if k.name == "flash2_bwd":  # the atomic adds into dQ are lookups that store
            assert lookups > k.levels["l2"].read_bytes
        else:
            assert lookups == k.levels["l2"].read_bytes
        assert k.l2_miss_bytes == k.levels["hbm"].read_bytes + k.levels["host"].read_bytes


@pytest.mark.parametrize("config", SMALL[::3], ids=lambda c: f"{c.algo}-{c.problem.seq_q}")
def test_time_never_beats_the_roofline(config):
    r = simulate(config, "a100")
    for k in r.kernels:
        assert k.time_s >= max(k.roofline.values()) * (1 - 1e-9)
    assert r.time_s >= closed_forms.roofline_time(config, load_profile("a100")) * (1 - 1e-9)


def test_counts_are_plain_integers_that_json_writes():
    """Causal CTAs that run alone (their kept steps' loop ends clipped by numpy's minimum) still count
    bytes as Python integers: a result goes to JSON as it is (a sweep's results file; this one failed)."""
    r = simulate(RunConfig(algo="flash2", problem=Problem(batch=1, heads=2, seq_q=16384, head_dim=128, causal=True)), "h100")
    for k in r.kernels:
        for t in k.levels.values():
            assert type(t.read_bytes) is int and type(t.write_bytes) is int, k.name
    assert RunResult.from_dict(json.loads(json.dumps(r.to_dict()))).to_dict() == r.to_dict()


def test_deterministic_and_json_round_trip():
    c = cfg("flash2", seq_q=1000, causal=True, backward=True)
    a, b = simulate(c, "h100"), simulate(c, "h100")
    assert a.to_dict() == b.to_dict()
    again = RunResult.from_dict(json.loads(json.dumps(a.to_dict())))
    assert again.to_dict() == a.to_dict()


def test_host_tensors_are_read_over_the_host_link():
    c = cfg("flash2", mode="plain", seq_q=512).with_(host_tensors=("K", "V"))
    r = simulate(c, "h100", l2_bytes=UNBOUNDED)
    p = c.problem
    kv = 2 * p.bh_kv * p.seq_k * p.head_dim * p.elem_bytes
    assert r.levels["host"].read_bytes == kv
    assert r.levels["hbm"].read_bytes == p.bh * p.seq_q * p.head_dim * p.elem_bytes



@pytest.mark.parametrize("algo", ["flash2", "standard"])
def test_a_host_output_is_written_over_the_host_link_in_time_and_takes_no_hbm(algo):
    """O in host memory: every byte of it crosses the host link (none reaches HBM, also not at the final
    write-back), the run lasts at least that long, and the HBM footprint leaves it out."""
    c = cfg(algo, mode="plain", seq_q=1024)
    p = c.problem
    o = p.bh * p.seq_q * p.head_dim * p.elem_bytes
    h100 = load_profile("h100")
    local, host = simulate(c, h100), simulate(c.with_(host_tensors=("O",)), h100)
    assert host.levels["host"].write_bytes == o and host.levels["host"].read_bytes == 0
    assert host.levels["hbm"].write_bytes == local.levels["hbm"].write_bytes - o
    assert host.time_s >= o / h100.host_bandwidth
    assert host.peak_hbm_bytes == local.peak_hbm_bytes - o
    everything = simulate(c.with_(host_tensors=("Q", "K", "V", "O")), h100)
    assert everything.peak_hbm_bytes == local.peak_hbm_bytes - 4 * o  # what is left: the intermediates


def test_causal_flash_skips_about_half_the_work():
    full = simulate(cfg("flash2", seq_q=2048, tiling=Tiling(block_m=64, block_n=64)), "h100")
    half = simulate(cfg("flash2", seq_q=2048, causal=True, tiling=Tiling(block_m=64, block_n=64)), "h100")
    ratio = half.flops["tensor"] / full.flops["tensor"]
    assert ratio == pytest.approx((32 * 33 / 2) / 32**2)  # blocks on and below the diagonal of a 32×32 grid


def test_tiles_over_sram_are_refused_with_the_numbers():
    c = RunConfig(algo="flash2", problem=Problem(head_dim=128), tiling=Tiling(block_m=256, block_n=256, stages=4))
    with pytest.raises(ValueError, match=r"needs \d+ bytes of shared memory per CTA; .* allows \d+"):
        simulate(c, "4090")


def _reference():
    data = json.loads((REPO / "experiments/measurements/h100/reference-2026-11-23.json").read_text())
    return data["cases"]


@pytest.mark.parametrize("case", _reference(), ids=lambda c: f"{c['impl']}-{c['problem']['seq_q']}")
def test_h100_reference_counters(case):
    """Measured with ncu on an H100: DRAM reads within 2 %, DRAM read + write within 10 %."""
    c = RunConfig(algo=case["impl"], problem=Problem(**case["problem"]), tiling=Tiling(**case.get("tiling", {})),
                  mode="ncu")
    hbm = simulate(c, "h100").levels["hbm"]
    read, write = case["dram_read_MB"] * 1e6, case["dram_write_MB"] * 1e6
    assert hbm.read_bytes == pytest.approx(read, rel=0.02)
    assert hbm.total == pytest.approx(read + write, rel=0.10)


def test_flash_moves_far_less_hbm_than_standard_but_similar_l2():
    """The fact that shapes iosim: FlashAttention's saving is at DRAM; its L2 traffic is the paper's count."""
    s = simulate(RunConfig(algo="standard_eager", problem=Problem(seq_q=4096), mode="ncu"), "h100")
    f = simulate(RunConfig(algo="flash2", problem=Problem(seq_q=4096), tiling=Tiling(128, 64, 4), mode="ncu"), "h100")
    assert s.levels["hbm"].total > 50 * f.levels["hbm"].total
    paper = closed_forms.paper_flash2(RunConfig.from_dict(f.config), 128)
    assert f.levels["l2"].read_bytes == pytest.approx(paper["read"], rel=0.05)


def test_schedule_kernels_match_the_triton_modules_order():
    names = [k.name for k in build_schedule(cfg("flash2", backward=True, kv_heads=2)).kernels]
    assert names == ["flash2_fwd", "zeros_dq", "flash2_bwd_pre", "flash2_bwd", "sum_dk", "sum_dv", "cast_dq"]


@pytest.mark.parametrize("gpu", ["a100", "h100"])
def test_bound_names_the_limiting_resource(gpu):
    """Standard attention streams N² bytes through HBM; FlashAttention-2 at d = 128 is math-bound."""
    std = simulate(RunConfig(algo="standard", problem=Problem(seq_q=4096)), gpu)
    fa2 = simulate(RunConfig(algo="flash2", problem=Problem(seq_q=8192, head_dim=128)), gpu)
    assert (std.bound, fa2.bound) == ("hbm", "compute")
    # and the busy time of that resource explains most of the run
    assert sum(k.roofline["hbm"] for k in std.kernels) > 0.6 * std.time_s


def test_a_run_reprices_on_other_hardware_without_resimulating():
    """Counts are kept apart from time: re-pricing on the same profile gives the run's own roofline,
    and a memory-bound run re-priced on a GPU with twice the HBM bandwidth takes half as long."""
    from dataclasses import replace as dc_replace

    from iosim.costs.pricing import reprice

    h100 = load_profile("h100-sxm-calibrated")  # has a backward tensor efficiency of its own
    for algo in ("standard_eager", "flash2"):
        run = simulate(RunConfig(algo=algo, problem=Problem(seq_q=1024, backward=True)), h100)
        assert reprice(run, h100) == pytest.approx(run.roofline_time_s)
    # d = 32: every kernel stays memory-bound at twice the bandwidth (at d = 64 the QKᵀ kernel's loop over d,
    # two passes of its compiled code, makes it issue-bound there)
    r = simulate(RunConfig(algo="standard", problem=Problem(seq_q=4096, head_dim=32)), h100)
    fast = dc_replace(h100, hbm_bandwidth=2 * h100.hbm_bandwidth, l2_bandwidth=2 * h100.l2_bandwidth)
    assert reprice(r, fast) == pytest.approx(reprice(r, h100) / 2, rel=0.02)


def test_progress_counts_every_cta_of_every_kernel_once():
    """A run's progress callback sees CTAs done rise to the schedule's CTA count, kernel by kernel in
    launch order, and does not change the result."""
    c = cfg(causal=True, backward=True, seq_q=300)
    calls = []
    r = simulate(c, "h100", progress=lambda done, total, kernel: calls.append((done, total, kernel)))
    kernels = build_schedule(c).kernels
    total = sum(k.ctas for k in kernels)
    assert {t for _, t, _ in calls} == {total}
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls) and calls[-1][0] == total
    assert list(dict.fromkeys(k for _, _, k in calls)) == [k.name for k in kernels]
    assert r == simulate(c, "h100")


def test_a_row_kernel_beyond_one_sms_registers_runs_one_cta_per_sm():
    """Standard attention at N = 64K: the softmax row kernel (16 warps, a 64K-element row in registers)
    asks more registers than an SM holds; the compiler caps them at what one CTA of 512 threads may have
    (65536 / 512 = 128) and spills, so the launch runs one CTA per SM instead of being refused."""
    from iosim.engine.occupancy import ctas_per_sm

    h100 = load_profile("h100")
    kernels = build_schedule(RunConfig(algo="standard", problem=Problem(batch=1, heads=1, seq_q=65536, head_dim=64))).kernels
    softmax = next(k for k in kernels if k.name == "softmax")
    assert softmax.warps == 16 and softmax.regs_per_thread * 32 * 16 > h100.regs_per_sm
    assert ctas_per_sm(softmax, h100) == 1
    assert ctas_per_sm(replace(softmax, regs_per_thread=32), h100) == 4  # 2048 threads: four CTAs of 512
    with pytest.raises(ConfigError, match="warps"):  # more threads than an SM has is still refused
        ctas_per_sm(replace(softmax, warps=h100.max_warps_per_sm * 2), h100)


def test_fixed_cost_per_kernel_launch_start_and_ncu():
    """Every kernel pays the launch; only a kernel with a tile loop pays the tile loop's measured start
    (``kernel_start_overhead``); under ncu the launch is what ncu reports for an empty kernel."""
    base = load_profile("h200-calibrated")
    start, launch, ncu = base.kernel_start_overhead, base.launch_overhead, base.ncu_launch_overhead
    assert start and ncu and ncu != launch
    config = RunConfig(algo="flash1", problem=Problem(batch=1, heads=2, seq_q=256, head_dim=64))
    for mode, fixed in (("plain", launch), ("ncu", ncu)):
        r = simulate(config.with_(mode=mode), base)
        costs = {k.name: k.launch_s for k in r.kernels}
        # flash1's fills and cast have no loop; its forward loops over K/V and Q blocks
        assert costs == pytest.approx({"zeros_o": fixed, "zeros_l": fixed, "fill_m": fixed,
                                       "flash1_fwd": fixed + start, "cast_o": fixed})
        assert all(k.time_s >= k.launch_s for k in r.kernels)
    plain = simulate(config.with_(mode="ncu"), replace(base, ncu_launch_overhead=None))
    assert plain.kernels[0].launch_s == pytest.approx(launch)  # no ncu measurement: the launch as measured


def test_a_ragged_kernel_reads_its_length_before_its_tiles(monkeypatch):
    """Kernels of a variable-length batch or a window read a request's length (or offsets) before they can
    address a tile: one more round trip in the first wave, the DRAM latency where the L2 starts empty."""
    h200 = load_profile("h200-calibrated")
    problem = Problem(batch=4, heads=8, kv_heads=2, seq_q=1, seq_lens=(4096, 1000, 300, 2048), head_dim=128)
    config = RunConfig(algo="flash_decode", problem=problem, tiling=Tiling(splits=4), mode="ncu")
    schedule = build_schedule(config)
    assert [(k.name, k.lookups) for k in schedule.kernels] == [("decode_split_ragged", 1), ("decode_reduce_ragged", 1)]
    uniform = build_schedule(replace(config, problem=replace(problem, seq_lens=None, seq_k=4096)))
    assert [k.lookups for k in uniform.kernels] == [0, 0]
    varlen = build_schedule(RunConfig(algo="flash2", problem=Problem(batch=2, heads=2, seq_q=512, seq_lens=(512, 100),
                                                                     head_dim=64)))
    assert varlen.kernels[0].lookups == 1

    import iosim.simulate as sim

    with_lookup = simulate(config, h200)
    original = sim.build_schedule

    def no_lookups(*args, **kwargs):
        s = original(*args, **kwargs)
        return replace(s, kernels=tuple(replace(k, lookups=0) for k in s.kernels))

    monkeypatch.setattr(sim, "build_schedule", no_lookups)
    without = simulate(config, h200)
    for a, b in zip(with_lookup.kernels, without.kernels):
        assert a.time_s - b.time_s == pytest.approx(h200.dram_latency, rel=1e-6)


def test_a_lone_decode_cta_waits_its_shapes_calibrated_excess_on_every_later_pass():
    """CTAs alone on their SMs (28 MQA splits on 132 SMs) pass through their loop at their own code's price
    plus what the calibrated loop of the same tile shape waits beyond its code: the kernel lasts its
    longest CTA's passes after the first longer by exactly that per pass, and by nothing without the series."""
    h200 = load_profile("h200-calibrated")
    config = RunConfig(algo="flash_decode", problem=Problem(batch=1, heads=32, kv_heads=1, seq_q=1, seq_k=131072,
                                                            head_dim=128), tiling=Tiling(splits=28), mode="ncu")
    split = build_schedule(config).kernels[0]
    assert (split.name, split.ctas) == ("decode_split", 28) and split.ctas < h200.sm_count
    raw = dict(h200.calibration["raw"])
    tag = "miss_pass_softmax_32x128x128w4_resident_s"
    assert tag in raw
    extra = 1e-6
    runs = {}
    for label, value in (("none", None), ("base", raw[tag]), ("more", raw[tag] + extra)):
        series = {k: v for k, v in raw.items() if k != tag} | ({} if value is None else {tag: value})
        profile = replace(h200, calibration={**h200.calibration, "raw": series})
        runs[label] = simulate(config, profile).kernels[0].time_s
    assert runs["more"] - runs["base"] == pytest.approx((split.split_blocks - 1) * extra, rel=1e-6)
    assert runs["base"] > runs["none"]  # the committed calibration: a 32-row loop waits beyond its code


def test_a_fused_backwards_second_loop_runs_in_its_kernels_launch():
    """dq fused: the dQ loop is the K/V kernel's second loop, tiles swapped (its CTA's Q block is its K/V block's
    rows), with no launch of its own, nor (under Nsight Compute) an L2 flushed before it."""
    from iosim.schedule.build import build_schedule

    fused = cfg(backward=True, dq="fused", seq_q=512)
    kv, q = build_schedule(fused).kernels[-2:]
    assert (kv.name, q.name, kv.launch, q.launch) == ("flash2_bwd_kv", "flash2_bwd_q", True, False)
    assert (q.block_i, q.block_u) == (kv.block_i, kv.block_u) == (16, 32)
    # square tiles: swapped they are the same, so fused and separate differ in the launch and the flush alone
    square = Tiling(block_m=32, block_n=32)
    runs = {dq: simulate(cfg(backward=True, dq=dq, seq_q=512, mode="ncu", tiling=square), "h100")
            for dq in ("fused", "separate")}
    fused_q, separate_q = runs["fused"].kernels[-1], runs["separate"].kernels[-1]
    assert fused_q.launch_s == 0 and separate_q.launch_s > 0
    assert fused_q.levels["l2"] == separate_q.levels["l2"]  # the same loads and stores reach the L2
    # K and V the dQ loop streams are still in the L2 from the K/V loop: fewer DRAM reads than after a flush
    assert fused_q.levels["hbm"].read_bytes < separate_q.levels["hbm"].read_bytes


def test_a_fused_launch_runs_each_ctas_second_loop_as_its_first_ends():
    """dq fused runs both loops in one launch: each CTA goes on to its dQ loop when its K/V loop ends, so the
    dQ loop reads its head's Q, dO, K, V while the K/V loop of the CTAs beside it still holds them in the L2.
    Against the same two loops launched one after the other (every head's first loop, then every head's
    second): the same loads and stores reach the L2 (the order moves no request), fewer reach DRAM where the
    L2 holds a few heads but not all, and the launch ends sooner (one causal tail, not two)."""
    from iosim.engine.simulator import Engine

    config = cfg(backward=True, dq="fused", causal=True, seq_q=2048, head_dim=64, heads=16, batch=4, mode="plain",
                 tiling=Tiling(block_m=64, block_n=64))
    profile = load_profile("h100")
    l2 = 16 << 20  # the heads in flight together (a head's Q, dO, K, V: 1 MiB) fit, the 64 heads' do not
    schedule = build_schedule(config, profile.sm_count)
    fused = Engine(schedule, profile, l2_bytes=l2).run()
    apart = replace(schedule, kernels=[replace(k, launch=True) for k in schedule.kernels])
    sequential = Engine(apart, profile, l2_bytes=l2).run()
    (f_kv, f_q), (s_kv, s_q) = fused.kernels[-2:], sequential.kernels[-2:]
    assert (f_kv.name, f_q.name) == ("flash2_bwd_kv", "flash2_bwd_q")
    assert f_kv.levels["l2"] == s_kv.levels["l2"] and f_q.levels["l2"] == s_q.levels["l2"]
    assert f_q.levels["hbm"].read_bytes < 0.5 * s_q.levels["hbm"].read_bytes
    fused_time = f_kv.time_s + f_q.time_s
    assert fused_time < s_kv.time_s + s_q.time_s - s_q.launch_s
    assert f_q.start_s == pytest.approx(f_kv.start_s + f_kv.time_s)  # reported apart, end to end
    assert f_q.launch_s == 0 and f_kv.launch_s > 0


@pytest.mark.parametrize("l2_mib, lines", [(2, 16), (1, 4)])
def test_flash1_state_no_pass_can_find_in_the_l2_takes_coarse_lines_and_moves_the_same_bytes(monkeypatch, l2_mib, lines):
    """Where the resident CTAs' passes over FlashAttention-1's query and per-row state stream more than twice
    what the L2 holds, LRU keeps none of it from one pass to the next at any resolution: its coarser lines
    (``STREAM_LINES`` a slice, and ``STREAM_COARSE``'s where they stream eight times the L2) move the same
    bytes, in the same time, as lines of 1/256 of the L2."""
    from iosim.engine import simulator
    from iosim.engine.simulator import Engine

    c = RunConfig(algo="flash1", problem=Problem(batch=2, heads=8, seq_q=2048, head_dim=64), mode="plain")
    profile, l2 = load_profile("h100"), l2_mib << 20  # 16 slices × 0.8 MB of state a pass: 6.3 and 12.6 L2s
    coarse = Engine(build_schedule(c), profile, l2_bytes=l2)
    o32 = coarse.geometry("O32")
    assert o32.line_rows * o32.line_cols * 4 == o32.tensor.slice_bytes // lines
    assert coarse.geometry("K") == Engine(build_schedule(c), profile, l2_bytes=l2, l2_lines=256).geometry("K")
    runs = [simulate(c, profile, l2_bytes=l2)]
    monkeypatch.setattr(simulator, "STREAM_LINES", None)  # lines of 1/256 of the L2, as every other tensor's
    runs.append(simulate(c, profile, l2_bytes=l2))
    (a, b) = ([k for k in r.kernels if k.name == "flash1_fwd"][0] for r in runs)
    assert a.levels["l2"] == b.levels["l2"]  # what the SMs move: the schedule's, whatever the lines
    for level in ("read_bytes", "write_bytes"):
        assert getattr(a.levels["hbm"], level) == pytest.approx(getattr(b.levels["hbm"], level), rel=0.005)
    assert a.time_s == pytest.approx(b.time_s, rel=0.02)
    assert a.levels["hbm"].read_bytes > 0.9 * a.levels["l2"].read_bytes  # a stream: nearly every load misses
