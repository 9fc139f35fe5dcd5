"""Caveats: the regimes where validation found the model least certain are named on the kernels that ran in them,
by conditions checked here from the problem's own sizes, and reach every output (table notes, JSON, CSV)."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from iosim.cli import main
from iosim.costs.issue import WARP, KernelCode, LoopCode
from iosim.hardware.profile import load_profile
from iosim.results.caveats import CAUSAL_EVICTING, MESSAGES, SPILL_FRAMES, caveats
from iosim.results.result import RunResult
from iosim.schedule.problem import Problem, RunConfig, Tiling
from iosim.simulate import simulate

H200 = load_profile("h200-calibrated")
L2 = 256 * 1024  # an L2 small enough that one head's K/V outgrows it at a few thousand rows


def _causal(n: int, causal: bool = True, backward: bool = False) -> RunConfig:
    return RunConfig(algo="flash2", problem=Problem(batch=1, heads=2, seq_q=n, head_dim=64, causal=causal,
                                                    backward=backward),
                     tiling=Tiling(block_m=64, block_n=64, warps=4, stages=2))


def _streams_past_the_l2(n: int, l2: int, copies: int) -> bool:
    """The condition from the sizes alone: one head's K and V (n rows of d = 64 in fp16 each), held once per L2
    partition as lines SMs of both partitions read, against the L2."""
    return 2 * n * 64 * 2 * copies > l2


@pytest.mark.parametrize("n", [512, 1024, 2048])
def test_a_causal_loop_that_streams_more_of_a_head_than_the_l2_holds_is_flagged(n):
    """An L2 given by size is one partition (each line held once); the H200's own holds shared lines twice."""
    r = simulate(_causal(n), H200, l2_bytes=L2)
    fwd = next(k for k in r.kernels if k.name == "flash2_fwd")
    assert (CAUSAL_EVICTING in fwd.regimes) == _streams_past_the_l2(n, L2, 1)
    assert not simulate(_causal(n, causal=False), H200, l2_bytes=L2).kernels[0].regimes
    assert not _streams_past_the_l2(n, H200.l2_bytes, H200.l2_partitions)
    assert not simulate(_causal(n), H200).kernels[0].regimes


def test_the_backward_kernels_are_flagged_by_what_their_own_loops_stream():
    r = simulate(_causal(2048, backward=True), H200, l2_bytes=L2)
    flagged = {k.name for k in r.kernels if CAUSAL_EVICTING in k.regimes}
    assert "flash2_fwd" in flagged and "flash2_bwd" in flagged
    assert not any(k.regimes for k in r.kernels if k.name not in flagged)  # the fill, preprocess, cast: no loop


def _spilling(local_bytes: int) -> KernelCode:
    return KernelCode(loop=LoopCode(500.0, {"fma": 300.0}, local_loads=300.0, local_stores=200.0),
                      regs_per_thread=128, shared_bytes=48 * 1024, local_bytes=local_bytes)


def test_spill_frames_that_crowd_the_l2_are_flagged_and_small_ones_are_not():
    """Frames of local bytes per thread x threads, one per CTA slot (each held once in an L2 given by size):
    flagged from a quarter of the L2."""
    config = RunConfig(algo="flash2", problem=Problem(batch=1, heads=8, seq_q=1024, head_dim=64),
                       tiling=Tiling(block_m=128, block_n=64, warps=4, stages=2), mode="ncu")
    l2 = 8 << 20
    slots = simulate(config, H200, codes=[_spilling(64)], l2_bytes=l2).kernels[0].ctas_per_sm * H200.sm_count
    for local, crowded in ((8, False), (4096, True)):
        frames = local * WARP * 4 * slots * 1  # an L2 given as l2_bytes holds each line once
        assert (4 * frames >= l2) == crowded
        k = simulate(config, H200, codes=[_spilling(local)], l2_bytes=l2).kernels[0]
        assert (SPILL_FRAMES in k.regimes) == crowded
    assert not simulate(config, H200, codes=[replace(_spilling(0), loop=LoopCode(500.0, {"fma": 300.0}))],
                        l2_bytes=l2).kernels[0].regimes


def test_caveats_name_each_regime_once_with_its_kernels_and_survive_json():
    r = simulate(_causal(2048, backward=True), H200, l2_bytes=L2)
    lines = caveats(r)
    assert len(lines) == 1 and lines[0].endswith(MESSAGES[CAUSAL_EVICTING])
    assert lines[0].startswith("flash2_fwd, flash2_bwd: ")
    d = json.loads(json.dumps(r.to_dict()))
    assert d["caveats"] == lines
    back = RunResult.from_dict(d)
    assert [k.regimes for k in back.kernels] == [k.regimes for k in r.kernels]
    assert caveats(simulate(_causal(2048, causal=False), H200, l2_bytes=L2)) == []


ARGS = ["simulate", "--gpu", "h100", "--algo", "flash2", "--head-dim", "128", "--batch", "1", "--heads", "1"]


def test_the_table_notes_a_caveat_on_stderr_for_the_rows_it_concerns():
    runner = CliRunner()
    got = runner.invoke(main, ARGS + ["--seq-len", "1k,64k", "--causal"])
    assert got.exit_code == 0, got.output
    notes = [line for line in got.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: row 2: flash2_fwd: {MESSAGES[CAUSAL_EVICTING]}"]
    assert "note:" not in got.stdout
    plain = runner.invoke(main, ARGS + ["--seq-len", "64k"])
    assert plain.exit_code == 0 and "note:" not in plain.output


def test_json_and_csv_carry_the_caveats():
    runner = CliRunner()
    got = runner.invoke(main, ARGS + ["--seq-len", "1k,64k", "--causal", "--json"])
    runs = json.loads(got.stdout)
    assert [len(r["caveats"]) for r in runs] == [0, 1]
    assert runs[1]["kernels"][0]["regimes"] == [CAUSAL_EVICTING]
    rows = list(csv.DictReader(io.StringIO(runner.invoke(main, ARGS + ["--seq-len", "1k,64k", "--causal",
                                                                       "--csv"]).stdout)))
    assert [r["caveats"] for r in rows] == ["", CAUSAL_EVICTING]


def test_validation_marks_the_committed_cases_in_a_caveats_regime_and_splits_their_errors():
    """Against committed measurements: sglang's prefill kernel at d = 64 spills frames that crowd the H200's L2 (656
    bytes a thread at causal, two CTAs an SM) and is marked; at d = 128 it does not spill and is not. The split puts
    the marked cases' DRAM errors apart from the rest, as the caveat says."""
    from pathlib import Path

    from iosim.measure.measurement import load_measurement
    from iosim.measure.validate import CaseResult, caveat_split, validate
    path = Path(__file__).resolve().parents[1] / "experiments/measurements/h200/thirdparty/sglang/measurements.json"
    results = validate(load_measurement(path))[0]
    marked = {r.name for r in results if SPILL_FRAMES in r.regimes}
    assert marked and all("-d64" in n for n in marked) and not any(r.regimes for r in results if "-d128" in r.name)
    assert all(r.to_dict().get("regimes") == list(r.regimes) for r in results if r.regimes)
    split = caveat_split(results)
    assert split[SPILL_FRAMES]["cases"] == len(marked) and split["none"]["cases"] == len(results) - len(marked)
    assert split[SPILL_FRAMES]["median_abs_error"] > split["none"]["median_abs_error"]
    plain = CaseResult("x", {}, "h200", {"dram_bytes": 1.0}, {"dram_bytes": 1.0})
    assert caveat_split([plain]) == {}  # nothing marked: no split


@pytest.mark.parametrize("backward", [False, True])
def test_a_pass_of_the_schedule_reads_its_loop_tiles(backward):
    """What the loads and stores of a compiled loop are held against: a pass of flash2's forward reads a K and a V
    tile and writes nothing, of its backward reads a Q and a dO tile and the LSE and D of their rows (its dQ atomic
    adds apart); at d = 96 a compiled tile is 128 columns wide."""
    from iosim.engine.simulator import pass_bytes
    from iosim.schedule.build import build_schedule

    s = build_schedule(RunConfig(algo="flash2", problem=Problem(batch=1, heads=4, kv_heads=2, seq_q=1000, head_dim=96,
                                                                backward=backward)))
    tensors = {t.name: t for t in s.tensors}
    (kernel,) = [k for k in s.kernels if k.loop_extent and k.name == ("flash2_bwd" if backward else "flash2_fwd")]
    tile = kernel.block_u * 128 * 2  # fp16 rows of a block, 128 columns
    assert pass_bytes(kernel, tensors) == (2 * tile + (2 * kernel.block_u * 4 if backward else 0), 0)


@pytest.mark.parametrize("loads, stores, regime", [
    (1.0, 0.0, None), (1.15, 0.1, None), (1.3, 0.0, "unmodelled_traffic"), (1.0, 0.3, "unmodelled_traffic"),
    (1.5, 0.0, "tile_beyond_schedule"), (1.0, 0.5, "tile_beyond_schedule"),
])
def test_a_loop_that_moves_more_than_its_schedule_is_named(loads, stores, regime):
    """A forward whose code loads ``loads`` times the K and V tiles a pass reads and stores ``stores`` times that (per
    thread, over its warps) is named from 1.2 times the loads or a fifth of them stored. Where what it moves beyond is
    one fp16 tile of each (query block, key block), as a bias read or scores stored, that tile is read or written
    every pass (L2 bytes grow by it, each tile moved once, so DRAM by the whole tensor); otherwise what it moves
    beyond is counted over every pass of every CTA and in no byte count."""
    config = RunConfig(algo="flash2", problem=Problem(batch=1, heads=2, seq_q=1024, head_dim=64),
                       tiling=Tiling(block_m=64, block_n=64, warps=4, stages=2))
    read = 2 * 64 * 64 * 2  # a K and a V tile, fp16
    code = KernelCode(loop=LoopCode(500.0, {"fma": 300.0}, global_loads=loads * read / (WARP * 4),
                                    global_stores=stores * read / (WARP * 4)))
    plain = simulate(config, H200, codes=[KernelCode(loop=LoopCode(500.0, {"fma": 300.0}))]).kernels[0]
    run = simulate(config, H200, codes=[code])
    k = run.kernels[0]
    passes = 2 * (1024 // 64) * (1024 // 64)  # every CTA's every pass
    assert k.regimes == ((regime,) if regime else ())
    beyond = (loads - 1 + stores) * read * passes if regime == "unmodelled_traffic" else 0
    assert k.unmodelled_bytes == round(beyond)
    said = caveats(run)
    assert len(said) == (1 if regime else 0)
    assert all(line.endswith(f" ({beyond / 1e9:.3g} GB over the run)") == bool(beyond) for line in said)
    tiled = 2 * 1024 * 1024 * 2 if regime == "tile_beyond_schedule" else 0  # B·H·N·N fp16
    assert k.levels["l2"].read_bytes == plain.levels["l2"].read_bytes + (tiled if loads > 1 else 0)
    assert k.levels["l2"].write_bytes == plain.levels["l2"].write_bytes + (tiled if stores else 0)
    assert k.levels["hbm"].read_bytes == plain.levels["hbm"].read_bytes + (tiled if loads > 1 else 0)
