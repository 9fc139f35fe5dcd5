"""Math time from a kernel's own instructions: pipe limits in closed form, conservation, and the
committed SASS mixes against the instruction counts the H200 measured."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from iosim.costs.issue import (
    KernelCode,
    LoopCode,
    cta_time,
    estimated_code,
    shared_cycles,
    shared_seconds,
    simt_seconds,
    sm_time,
    warp_cycles,
)
from iosim.costs.pricing import instruction_totals, roofline, simt_time
from iosim.engine.l2 import L2Cache
from iosim.engine.simulator import masked_share
from iosim.hardware.profile import load_profile
from iosim.measure.measurement import load_measurement
from iosim.results.result import Traffic
from iosim.schedule.build import build_schedule
from iosim.schedule.ir import READ, WRITE, Flops
from iosim.schedule.problem import Problem, RunConfig
from iosim.simulate import simulate

REPO = Path(__file__).resolve().parents[1]
H200 = load_profile("h200")


@pytest.mark.parametrize("pipe, lanes", [("xu", 16), ("fma", 128), ("alu", 64), ("lsu", 32)])
def test_a_loop_on_one_pipe_takes_128_over_its_lanes_clocks_per_instruction(pipe, lanes):
    """One SM has 4 sub-partitions of 32-thread warps: a pipe with L lanes per SM takes 128/L clocks."""
    loop = LoopCode(100.0, {pipe: 100.0})
    assert warp_cycles(loop, H200) == pytest.approx(max(100.0, 100.0 * 128 / lanes))


def test_issue_bound_when_no_pipe_is_busier_than_one_instruction_per_clock():
    loop = LoopCode(500.0, {"fma": 300.0, "xu": 20.0, "uniform": 180.0})  # MUFU: 160 clocks < 500 issued
    assert warp_cycles(loop, H200) == 500.0
    # two warps of a CTA share each sub-partition: an 8-warp CTA takes twice a 4-warp one's time
    assert simt_seconds(loop, 8, H200) == pytest.approx(2 * simt_seconds(loop, 4, H200))
    assert simt_seconds(loop, 4, H200) == pytest.approx(500.0 / H200.issue_clock_hz)


def test_ldmatrix_loops_take_the_sms_one_shared_memory_path_in_turn():
    """128 bytes a clock per SM: an ldmatrix.x4 (512 bytes) takes 4 clocks, a shuffle or 32-bit LDS one, and
    the SM's warps take turns on the path whatever sub-partition they issue from. It bounds a step (it runs
    beside the tensor cores and the other pipes) rather than adding to it."""
    loop = LoopCode(122.0, {"lsu": 38.0}, shared={128: 22.0, 256: 1.0, 512: 10.0})
    assert shared_cycles(loop, H200) == 22 + 2 + 40
    assert shared_seconds(loop, 4, H200) == pytest.approx(4 * 64 / H200.issue_clock_hz)  # 256 clocks > 122 issued
    assert shared_seconds(loop, 8, H200) == pytest.approx(2 * shared_seconds(loop, 4, H200))
    assert shared_cycles(loop.scaled(0.5), H200) == pytest.approx(32)
    issue, path = simt_seconds(loop, 4, H200), shared_seconds(loop, 4, H200)
    assert issue == pytest.approx(warp_cycles(loop, H200) / H200.issue_clock_hz)  # issue slots alone, as before
    for tensor, share in ((1e-9, 9), (5e-7, 2)):  # path-bound where products are short, untouched where long
        alone = sm_time(tensor, issue, 0.0, share, 0.0)
        assert sm_time(tensor, issue, 0.0, share, 0.0, t_shared=path) == pytest.approx(max(alone, share * path))
    unknown = LoopCode(122.0, {"lsu": 38.0})  # mixes written before the shared accesses were recorded
    assert shared_cycles(unknown, H200) == 0.0


def test_the_estimate_spreads_every_operation_over_the_threads():
    code = estimated_code(Flops(tensor=1e6, simt=4096.0, sfu=1024.0), Flops(simt=128.0), warps=4)
    threads = 128
    assert code.loop.instructions * threads == pytest.approx(4096.0 + 1024.0)
    assert code.loop.pipes["xu"] * threads == pytest.approx(1024.0)
    assert code.outside.instructions * threads == pytest.approx(128.0)


def test_cta_time_adds_within_a_cta_and_hides_only_between_ctas():
    assert cta_time(3.0, 2.0, share=1, overlap=1.0) == 5.0
    assert cta_time(3.0, 2.0, share=2, overlap=0.0) == 5.0
    assert cta_time(3.0, 2.0, share=2, overlap=1.0) == 3.0  # the shorter hidden entirely


def test_instruction_totals_and_their_issue_time_are_conserved():
    code = KernelCode(loop=LoopCode(10.0, {"fma": 6.0}), masked=LoopCode(20.0, {"fma": 8.0}),
                      outside=LoopCode(5.0, {"alu": 5.0}))
    out = instruction_totals(code, masked_share=0.25, iterations=400.0, ctas=10, warps=4)
    assert out["total"] == pytest.approx(4 * (300 * 10 + 100 * 20 + 10 * 5))
    assert out["fma"] == pytest.approx(4 * (300 * 6 + 100 * 8))
    issue = out["total"] / (4 * H200.sm_count * H200.issue_clock_hz)
    assert simt_time(out, H200) == pytest.approx(issue)  # no pipe is busier than issue here
    assert "shared_wavefronts" not in out  # asked without a profile


def test_masked_passes_and_spilled_bytes_are_conserved():
    """A masked copy over half tiles runs two passes a masked block; every pass's spills are its threads' words
    × 4 bytes, loads and stores apart, and a kernel that spills nothing reports no local bytes."""
    code = KernelCode(loop=LoopCode(10.0, {"fma": 6.0}, local_loads=3.0, local_stores=2.0),
                      masked=LoopCode(8.0, {"fma": 4.0}, local_loads=1.0), masked_passes=2.0,
                      outside=LoopCode(5.0, {"alu": 5.0}, local_stores=4.0))
    out = instruction_totals(code, masked_share=0.25, iterations=400.0, ctas=10, warps=4)
    assert out["total"] == pytest.approx(4 * (300 * 10 + 100 * 2 * 8 + 10 * 5))
    thread_bytes = 4 * 32 * 4  # warps x threads x bytes a word
    assert out["local_load_bytes"] == pytest.approx(thread_bytes * (300 * 3 + 100 * 2 * 1))
    assert out["local_store_bytes"] == pytest.approx(thread_bytes * (300 * 2 + 10 * 4))
    plain = KernelCode(loop=LoopCode(10.0, {"fma": 6.0}), outside=LoopCode(5.0, {"alu": 5.0}))
    assert "local_load_bytes" not in instruction_totals(plain, 0.0, 400.0, 10, 4)


def test_reloads_of_rewritten_slots_miss_once_the_spill_space_exceeds_l1():
    """Words a pass stores and reloads cycle through the whole spill space (where the profile measured no cycle curve,
    LRU: all miss once it exceeds what L1 keeps, none while it fits); words spilled once are reloaded at the linear
    share; stores always cross."""
    from iosim.costs.issue import reload_miss, rewritten_miss, spill_traffic

    loop = LoopCode(100.0, {}, local_loads=10.0, local_stores=6.0)
    per = 32 * 4 * 4  # threads x bytes a word x warps
    reloads, stores = spill_traffic(loop, warps=4, miss=0.25, rewritten=1.0)
    assert stores == 6 * per and reloads == pytest.approx((6 * 1.0 + 4 * 0.25) * per)
    assert spill_traffic(loop, warps=4, miss=0.25) == (10 * 0.25 * per, 6 * per)  # no rewritten share given
    free = H200.l1_bytes - H200.smem_per_sm
    fits = KernelCode(loop=loop, local_bytes=free // (32 * 4) - 4)  # one 4-warp CTA's spill space, just under
    spills = KernelCode(loop=loop, local_bytes=4 * free // (32 * 4))  # four times what L1 keeps
    lru = replace(H200, l1_cycle_hits=None)
    assert rewritten_miss(fits, 4, 1, lru) == 0.0 and reload_miss(fits, 4, 1, H200) == 0.0
    assert rewritten_miss(spills, 4, 1, lru) == 1.0 and reload_miss(spills, 4, 1, H200) == pytest.approx(0.75)


def test_rewritten_reloads_follow_the_measured_cycle_curve_at_its_l1_size():
    """Where the profile measured how much of a cycle its L1 keeps at the kernel's L1 size (within 10 %), rewritten
    slots miss as that curve says, interpolated in cycle / L1 and flat beyond its ends; at any other size, as LRU."""
    from iosim.costs.issue import cycle_hits, rewritten_miss

    kib = 1024
    free = H200.l1_bytes - H200.smem_per_sm  # 28 KiB: a kernel of unknown shared memory gets the largest carve-out
    curve = replace(H200, l1_cycle_hits=((free, 1.0, 0.9), (free, 1.5, 0.5), (free, 2.0, 0.0), (224 * kib, 1.0, 1.0)))
    assert cycle_hits(curve, free, free) == 0.9 and cycle_hits(curve, 1.25 * free, free) == pytest.approx(0.7)
    assert cycle_hits(curve, 0.5 * free, free) == 0.9 and cycle_hits(curve, 3 * free, free) == 0.0  # flat beyond
    near = int(free * 1.05)  # an L1 5 % larger takes the curve measured at 28 KiB, in its own ratio
    assert cycle_hits(curve, 1.25 * near, near) == pytest.approx(0.7)
    assert cycle_hits(curve, 64 * kib, 64 * kib) is None  # 64 KiB: 56 % from 28, 71 % from 224: nothing near
    assert cycle_hits(H200, 300 * kib, 224 * kib) == pytest.approx(0.899 + (300 / 224 - 1.286) / 0.143 * (0.873 - 0.899),
                                                                   abs=1e-6)  # the committed curve, between its rows
    assert cycle_hits(H200, 8 * kib, 28 * kib) == 1.0  # the largest carve-out: a local cycle well inside it all hits
    assert cycle_hits(H200, 36 * kib, 28 * kib) == pytest.approx(0.528 + (36 / 28 - 1.143) / 0.286 * (0.243 - 0.528),
                                                                 abs=1e-6)
    assert cycle_hits(H200, 64 * kib, 124 * kib) == pytest.approx(1.0, abs=1e-4)  # 132 KiB carve-out: measured
    loop = LoopCode(100.0, {}, local_loads=10.0, local_stores=6.0)
    spills = KernelCode(loop=loop, local_bytes=int(1.25 * free) // (32 * 4))  # one 4-warp CTA's frames: 1.25 x L1
    assert rewritten_miss(spills, 4, 1, curve) == pytest.approx(0.3, abs=0.01)
    assert rewritten_miss(spills, 4, 1, replace(H200, l1_cycle_hits=None)) == 1.0  # LRU where nothing is measured
    assert rewritten_miss(spills, 4, 1, replace(curve, l1_bytes=None)) == 1.0  # no L1 size: every reload misses


def test_shared_wavefronts_are_conserved_and_bound_the_roofline():
    """Every pass's wavefronts counted once (512-byte ldmatrix: 4; 128-byte shuffle: 1); a wgmma kernel's are
    not predicted (its operand reads by descriptor go through the same path uncounted)."""
    loop = LoopCode(10.0, {"lsu": 3.0}, shared={512: 2.0, 128: 1.0})
    code = KernelCode(loop=loop, outside=LoopCode(5.0, {"alu": 5.0}, shared={}))
    out = instruction_totals(code, masked_share=0.0, iterations=400.0, ctas=10, warps=4, profile=H200)
    assert out["shared_wavefronts"] == pytest.approx(4 * 400 * 9)
    assert "shared_wavefronts" not in instruction_totals(replace(code, wgmma=True), 0.0, 400.0, 10, 4, profile=H200)
    levels = {lv: Traffic(0, 0) for lv in ("hbm", "l2", "host")}
    compute = roofline(levels, {"tensor": 0.0}, out, H200, "fp16")["compute"]
    assert compute == pytest.approx(4 * 400 * 9 / (H200.sm_count * H200.issue_clock_hz))  # path-bound, not issue-bound


def test_the_masked_share_of_a_causal_forward_is_its_diagonal_blocks():
    """128-row query blocks over 64-row key blocks: CTA i runs 2i + 2 blocks, the last 2 masked."""
    cfg = RunConfig(algo="flash2", problem=Problem(batch=1, heads=1, seq_q=1024, head_dim=64, causal=True))
    fwd = build_schedule(cfg).kernels[0]
    i = np.arange(1024 // 128)
    assert masked_share(fwd) == pytest.approx(2 * len(i) / (2 * i + 2).sum())
    plain = build_schedule(RunConfig(algo="flash2", problem=Problem(batch=1, heads=1, seq_q=1000))).kernels[0]
    trips = -(-1000 // 64)  # non-causal: only the ragged last block of each CTA is masked
    assert masked_share(plain) == pytest.approx(1 / trips)


class _Link:
    def reserve(self, now, nbytes):
        return now


def test_the_request_coalescer_merges_identical_loads_of_ctas_in_pairs():
    l2 = L2Cache(1 << 20, {"hbm": _Link(), "host": _Link()}, ["hbm"], coalesce=2)
    l2.access((0, 0, 0, 0), "hbm", READ, 4096, 4096, 5, 0.0)  # five CTAs load one tile at once
    l2.access((0, 0, 1, 0), "hbm", WRITE, 4096, 4096, 1, 0.0)
    assert l2.stats.read_bytes == 5 * 4096  # the crossbar carries every CTA's copy
    assert l2.stats.lookup_bytes == 3 * 4096 + 4096  # the slices see ceil(5 / 2) loads, and the store
    l2.access((0, 0, 2, 0), "hbm", READ, 4096, 4096, 5, 0.0, lockstep=False)  # five CTAs not in lockstep
    assert l2.stats.lookup_bytes == 3 * 4096 + 4096 + 5 * 4096  # nothing to merge: one lookup each


class _SlowLink:
    """A memory link whose fills arrive a microsecond after they are asked for."""

    def reserve(self, now, nbytes):
        return now + 1e-6


def test_a_load_that_finds_its_line_fill_on_its_way_merges_in_it():
    # The LRC probe: CTAs reading a line whose fill is on its way make a quarter of a lookup each (k >= 8 CTAs
    # reading one cold buffer at once: about k / 4 lookups). The crossbar carries every CTA's copy, DRAM one fill.
    line, cta = 4096, (lambda g: (0, g))  # who: kernel 0, the cohort starting at CTA g
    l2 = L2Cache(1 << 20, {"hbm": _SlowLink(), "host": _SlowLink()}, ["hbm"], coalesce=2, inflight=0.25)
    l2.access((0, 0, 0, 0), "hbm", READ, line, line, 1, 0.0, who=cta(0), lockstep=False)  # misses: one lookup
    assert l2.stats.lookup_bytes == line
    l2.access((0, 0, 0, 0), "hbm", READ, line, line, 1, 0.0, who=cta(1), lockstep=False)  # another CTA, at once
    l2.access((0, 0, 0, 0), "hbm", READ, line, line, 1, 0.5e-6, who=cta(2), lockstep=False)  # later, still on its way
    assert l2.stats.lookup_bytes == line + 2 * 0.25 * line
    l2.access((0, 0, 0, 0), "hbm", READ, line, line, 1, 2e-6, who=cta(3), lockstep=False)  # the fill is there: a hit
    assert l2.stats.lookup_bytes == 2 * line + 2 * 0.25 * line
    assert l2.stats.read_bytes == 4 * line and l2.stats.fill_bytes["hbm"] == line  # one fill, four copies

    # CTAs of one cohort reading a line another access of theirs fills at the same instant: launched with the
    # kernel's first wave they are in phase and merge; launched together later they are not (beyond their pairs)
    for together, lookups in ((True, line + 0.25 * line), (False, 2 * line)):
        l2 = L2Cache(1 << 20, {"hbm": _SlowLink(), "host": _SlowLink()}, ["hbm"], coalesce=2, inflight=0.25)
        for _ in range(2):  # the fill, then the same cohort's second access of the line at the same instant
            l2.access_pieces((0, 0), ((0, 0, line, line, None, None),), "hbm", READ, 1, 0.0, cta(0), False,
                             together=together)
        assert l2.stats.lookup_bytes == lookups
    # CTAs in lockstep reading a line on its way merge at least in pairs: five make ceil(5 / 2) lookups without
    # the probe's share (1), 5 × 0.25 with it
    for inflight, lookups in ((1.0, 3 * line), (0.25, 1.25 * line)):
        l2 = L2Cache(1 << 20, {"hbm": _SlowLink(), "host": _SlowLink()}, ["hbm"], coalesce=2, inflight=inflight)
        l2.access((0, 0, 0, 0), "hbm", READ, line, line, 1, 0.0, who=cta(0))
        l2.access((0, 0, 0, 0), "hbm", READ, line, line, 5, 0.5e-6, who=cta(8))
        assert l2.stats.lookup_bytes == line + lookups


def test_lockstep_loads_cost_the_pair_probes_shares():
    """CTAs in lockstep on a present line cost the pair probe's share a CTA: a pair's and a group's of the probe's
    size at those sizes, between them by log2 of the size, the group's beyond; their own pair and group shares for
    CTAs launched together after the first wave; one lookup per ``coalesce`` CTAs without the shares."""
    shares = (0.65, 0.41, 0.83, 0.6, 8)
    l2 = L2Cache(1 << 20, {"hbm": _SlowLink(), "host": _SlowLink()}, ["hbm"], coalesce=2, lockstep=shares)
    assert l2.lockstep_lookups(1, True) == 1.0 and l2.lockstep_lookups(1, False) == 1.0
    assert l2.lockstep_lookups(2, True) == pytest.approx(2 * 0.65)
    assert l2.lockstep_lookups(8, True) == pytest.approx(8 * 0.41)
    assert l2.lockstep_lookups(4, True) == pytest.approx(4 * (0.65 + 0.41) / 2)  # halfway in log2 from 2 to 8
    assert l2.lockstep_lookups(64, True) == pytest.approx(64 * 0.41)
    assert l2.lockstep_lookups(2, False) == pytest.approx(2 * 0.83)
    assert l2.lockstep_lookups(8, False) == pytest.approx(8 * 0.6)
    plain = L2Cache(1 << 20, {}, ["hbm"], coalesce=2)
    assert [plain.lockstep_lookups(m, t) for m in (2, 5) for t in (True, False)] == [1, 1, 3, 3]
    # a line read by a pair that was not in lockstep is looked up once a CTA
    l2.access_pieces((0, 0), ((0, 0, 128, 128, None, None),), "hbm", READ, 2, 0.0, None, False)
    assert l2.stats.lookup_bytes == 2 * 128


@pytest.mark.parametrize("causal", [False, True])
def test_causal_ctas_merge_loads_only_in_the_first_wave(causal):
    # Non-causal CTAs have equal trips: a wave ends together and the next starts in lockstep, so every K/V
    # load of a CTA pair merges. Causal CTAs end one by one (trips differ): only the first wave, launched at
    # once, merges; the rest look up every byte they read.
    profile = load_profile("h200-calibrated")
    config = RunConfig(algo="flash2", problem=Problem(batch=1, heads=16, seq_q=8192, causal=causal), mode="ncu")
    # pairs alone: no load merges in a fill on its way (lrc_inflight_lookups 1), see the test below for those
    # and pairs merged whole (no pair probe's shares): this checks which loads the engine runs in lockstep
    runs = {c: simulate(config, replace(profile, lrc_sms=c, lrc_inflight_lookups=1.0, lrc_pair_lookups=None)).kernels[0]
            for c in (1, 2)}
    unmerged, merged = (runs[c].levels["l2"] for c in (1, 2))
    assert unmerged.read_bytes == merged.read_bytes
    assert runs[1].l2_lookup_bytes == unmerged.read_bytes + unmerged.write_bytes  # no coalescer: one lookup a load
    saved = (runs[1].l2_lookup_bytes - runs[2].l2_lookup_bytes) / unmerged.read_bytes
    if causal:  # the first wave (2 CTAs a SM: 264 of 1024, heads 0-3 of 16) holds a quarter of the K/V loads
        assert 0.25 * 0.4 < saved < 0.25 * 0.5
    else:  # K/V loads merge in pairs: nearly half of all loads (Q is read once per CTA, alone)
        assert 0.4 < saved < 0.5


@pytest.fixture(scope="module")
def h200_cases():
    m = load_measurement(REPO / "experiments/measurements/h200/measurements.json")
    return {c.name: c for c in m.cases}


@pytest.mark.parametrize("name", ["flash2-fwd-fp16-b4h16-n4096-d64-bm128bn64w4", "flash2-fwd-fp16-b4h16-n4096-d128",
                                  "flash2-fwd-fp16-b4h16-n4096-d64-causal"])
def test_committed_sass_predicts_the_instructions_the_h200_executed(h200_cases, name):
    """Per-loop mixes compiled on a machine without a GPU (Triton 3.6, sm_90) times the schedule's
    iterations equal Nsight Compute's smsp__inst_executed for our forward kernel."""
    case = h200_cases[name]
    run = simulate(RunConfig.from_dict(case.run_config).with_(mode="ncu"), "h200", triton_version="3.6.0")
    fwd, measured = run.kernels[0], case.counters.kernels[0]
    assert fwd.code.startswith("sass")
    assert fwd.instructions["total"] == pytest.approx(measured.inst_executed, rel=0.01)
    assert fwd.instructions["xu"] == pytest.approx(measured.inst_pipes["xu"], rel=0.02)
    assert fwd.regs_per_thread == measured.registers


def test_the_lone_excess_is_the_calibrated_pass_beyond_its_own_loops_price():
    """What a tile shape's calibrated loop waits beyond its compiled code: linear in the measured pass,
    never negative, nothing where the shape's loop was not compiled; for the committed H200 calibration
    under 5 % of the pass on FlashAttention-2's 128- and 64-row tiles (their price is their code: 0-2 % while the
    calibration's own-instruction share was fitted on three softmax loops, 0-4 % on eleven) and an eighth or more
    of the pass on flash-decoding's 16- and 32-row tiles."""
    from iosim.costs.issue import lone_excess
    from iosim.kernels.microbench import MISS_TILES

    h200 = load_profile("h200-calibrated")
    raw = h200.calibration["raw"]

    def with_pass(shape, seconds):
        tag = "miss_pass_softmax_{}x{}x{}w{}_resident_s".format(*shape)
        return replace(h200, calibration={**h200.calibration, "raw": {**raw, tag: seconds}})

    shape = (32, 128, 128, 4)
    own = 1e-3 - lone_excess(with_pass(shape, 1e-3), *shape)  # what its loop's code is priced at
    assert 0 < own < raw["miss_pass_softmax_32x128x128w4_resident_s"]
    assert lone_excess(with_pass(shape, own + 2e-7), *shape) == pytest.approx(2e-7, rel=1e-6)
    assert lone_excess(with_pass(shape, own / 2), *shape) == 0.0
    assert lone_excess(with_pass((48, 128, 128, 4), 1e-3), 48, 128, 128, 4) == 0.0  # no compiled loop
    for bm, bn, d, w in MISS_TILES:
        resident = raw[f"miss_pass_softmax_{bm}x{bn}x{d}w{w}_resident_s"]
        share = lone_excess(h200, bm, bn, d, w) / resident
        assert (share < 0.05) if bm >= 64 else (share > 0.1), (bm, bn, d, w, share)


def test_the_time_split_names_the_shared_memory_path_when_it_binds():
    from types import SimpleNamespace

    from iosim.cli.simulate_cmd import time_split

    per_clock = H200.sm_count * H200.issue_clock_hz
    kernel = SimpleNamespace(flops={"tensor": 0.0}, mma="fwd", roofline={"hbm": 0.0, "l2": 0.0, "host": 0.0},
                             instructions={"total": 4.0 * per_clock, "shared_wavefronts": 3.0 * per_clock})
    split = time_split(kernel, H200, "fp16", 64)
    assert split["simt_bound"] == "shared memory" and split["simt"] == pytest.approx(1.0)  # 3 s of path, 1 s of issue
    kernel.instructions["shared_wavefronts"] = 0.5 * per_clock
    assert time_split(kernel, H200, "fp16", 64)["simt_bound"] == "issue"
