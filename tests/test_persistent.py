"""Persistent kernels: a launch of fewer CTAs than tiles, each CTA taking its tiles in turn (Tiling.persistent)."""
from __future__ import annotations

from dataclasses import replace

import pytest
from click.testing import CliRunner

from iosim.cli import main
from iosim.costs.code import kernel_code
from iosim.costs.issue import KernelCode, LoopCode
from iosim.costs.sass import KernelMix, LoopMix
from iosim.engine.simulator import Engine, _persistent_code
from iosim.hardware.profile import load_profile
from iosim.kernels.user_kernel import tiling_from_launch
from iosim.schedule.build import build_schedule
from iosim.schedule.problem import ConfigError, Problem, RunConfig, Tiling
from iosim.simulate import simulate

H200 = load_profile("h200-calibrated")


def _config(causal: bool = False, persistent: int | None = None, heads: int = 16, n: int = 4096) -> RunConfig:
    return RunConfig(algo="flash2", problem=Problem(batch=1, heads=heads, seq_q=n, head_dim=64, causal=causal),
                     tiling=Tiling(block_m=128, block_n=64, warps=4, stages=2, persistent=persistent))


def test_a_one_dimensional_grid_of_fewer_ctas_than_tiles_is_read_as_persistent():
    launch = {"grid": [132, 1, 1], "num_warps": 8, "num_stages": 3, "constexprs": {"BLOCK_M": 128, "BLOCK_N": 64}}
    t = tiling_from_launch(launch, 4096, 64)  # 32 query blocks x 64 slices = 2,048 tiles
    assert t["persistent"] == 132 and t["grid_order"] == "rows"
    # one CTA a tile, in either order, or a 2-D grid: not persistent
    assert "persistent" not in tiling_from_launch(dict(launch, grid=[2048, 1, 1]), 4096, 64)
    assert "persistent" not in tiling_from_launch(dict(launch, grid=[32, 64, 1]), 4096, 64)
    assert tiling_from_launch(dict(launch, grid=[64, 32, 1]), 4096, 64)["grid_order"] == "heads"
    # a launcher that launches the kernel once a head: a grid of one head's Q blocks each time, not persistent
    assert "persistent" not in tiling_from_launch(dict(launch, grid=[32, 1, 1]), 4096, 64, launches=64)


def test_persistent_is_refused_where_it_is_not_modelled_with_the_field_named():
    with pytest.raises(ConfigError, match="persistent"):
        RunConfig(algo="flash1", problem=Problem(), tiling=Tiling(persistent=132))
    with pytest.raises(ConfigError, match="persistent"):
        Tiling(persistent=0)
    assert "persistent" not in _config().to_dict()["tiling"]  # other runs keep their old form
    assert RunConfig.from_dict(_config(persistent=132).to_dict()).tiling.persistent == 132


def test_launching_as_many_ctas_as_fit_is_the_launch_of_one_cta_a_tile():
    """Uniform tiles (not causal): a persistent launch of exactly the resident slots runs the same tiles at the same
    instants, tile c + slots as tile c ends, as slots free, so every byte and the time agree with one CTA a tile."""
    plain = simulate(_config(), H200)
    slots = plain.kernels[0].ctas_per_sm * H200.sm_count
    assert plain.kernels[0].ctas > slots  # several waves
    same = simulate(_config(persistent=slots), H200)
    assert same.to_dict()["levels"] == plain.to_dict()["levels"]
    assert same.time_s == pytest.approx(plain.time_s, rel=1e-9)


def test_a_persistent_kernel_holds_no_more_ctas_an_sm_than_it_launches():
    plain = simulate(_config(), H200)
    one = simulate(_config(persistent=H200.sm_count), H200)
    assert plain.kernels[0].ctas_per_sm > 1 and one.kernels[0].ctas_per_sm == 1
    assert one.kernels[0].ctas == plain.kernels[0].ctas  # the same tiles, all run
    assert one.kernels[0].flops == plain.kernels[0].flops
    assert one.time_s > plain.time_s  # fewer CTAs an SM hide less of each other


class _Recording(Engine):
    """The engine with each cohort's CTAs and the instants it starts and ends recorded."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spans = []

    def _cohort(self, phases, k, g0, g1, state):
        start = self.env.now
        yield from super()._cohort(phases, k, g0, g1, state)
        self.spans.append((g0, g1, start, self.env.now))


def test_each_tile_starts_as_its_ctas_previous_tile_ends():
    """Causal tiles of unequal length: tile t runs on CTA t mod P right after tile t - P, whichever slot frees
    first, and never more than P tiles are in flight."""
    p = 5
    config = _config(causal=True, persistent=p, heads=2, n=1024)  # 16 tiles of 1-8 blocks
    engine = _Recording(build_schedule(config, H200.sm_count), H200, aggregate=False)
    engine.run()
    span = {g0: (start, end) for g0, g1, start, end in engine.spans if g1 == g0 + 1}
    assert sorted(span) == list(range(16))
    for t in range(p, 16):
        assert span[t][0] == span[t - p][1], t
    instants = sorted({s for s, _ in span.values()})
    assert max(sum(s <= at < e for s, e in span.values()) for at in instants) == p


def _mix(tile_loop_opcodes: dict) -> KernelMix:
    """A persistent kernel's compiled mix: a loop over tiles (``tile_loop_opcodes``) around its K/V loop."""
    tiles = LoopMix(opcodes=tile_loop_opcodes, pipes={"lsu": sum(tile_loop_opcodes.values())},
                    instructions=sum(tile_loop_opcodes.values()), depth=1, innermost=False)
    kv = LoopMix(opcodes={"HGMMA": 8, "FFMA": 100}, pipes={"tensor": 8, "fma": 100}, instructions=108, depth=2)
    return KernelMix(kernel="fwd", loops=(tiles, kv), outside=LoopMix(opcodes={"S2R": 2}, pipes={"lsu": 2},
                                                                       instructions=2))


def test_the_loop_around_the_tile_loop_is_read_from_the_code_and_an_atomic_in_it_is_a_tile_counter():
    bound = kernel_code(_mix({"LDG": 4, "STG": 4}), "test")
    drawn = kernel_code(_mix({"LDG": 4, "STG": 4, "ATOMG": 1}), "test")
    assert bound.loop.instructions == drawn.loop.instructions == 108
    assert (bound.enclosing.instructions, drawn.enclosing.instructions) == (8, 9)
    assert not bound.tile_counter and drawn.tile_counter
    assert not kernel_code(_mix({"LDG": 4, "REDUX": 1}), "test").tile_counter  # a warp's reduction, not memory's


def test_tiles_drawn_from_a_counter_start_as_any_tile_ends():
    """With a counter the k-th tile after the first P starts as the k-th tile ends, whichever CTA's it was."""
    p = 5
    config = _config(causal=True, persistent=p, heads=2, n=1024)
    code = KernelCode(loop=LoopCode(300.0, {"fma": 100.0}), enclosing=LoopCode(50.0), tile_counter=True)
    engine = _Recording(build_schedule(config, H200.sm_count), H200, aggregate=False, codes=[code])
    engine.run()
    span = {g0: (start, end) for g0, g1, start, end in engine.spans if g1 == g0 + 1}
    starts = sorted(span[t][0] for t in range(p, 16))
    assert starts == sorted(e for _, e in span.values())[:16 - p]
    assert any(span[t][0] != span[t - p][1] for t in range(p, 16))  # not bound to a CTA's previous tile


def test_a_persistent_kernels_tile_code_is_its_loop_around_the_tile_loop():
    """Per tile (the schedule's CTA): the enclosing loop's body once, the code outside every loop once a launched CTA."""
    kernel = build_schedule(_config(persistent=132), H200.sm_count).kernels[0]
    code = KernelCode(loop=LoopCode(300.0), outside=LoopCode(80.0), enclosing=LoopCode(400.0))
    per_tile = _persistent_code(kernel, code)
    assert per_tile.outside.instructions == pytest.approx(400.0 + 80.0 * 132 / kernel.ctas)
    assert per_tile.loop == code.loop
    assert _persistent_code(replace(kernel, persistent=0), code) is code
    own = replace(code, enclosing=LoopCode(0.0))  # code compiled one CTA a tile: its prologue is a tile's
    assert _persistent_code(kernel, own) is own


def test_simulate_takes_persistent_and_says_so_in_its_csv():
    r = CliRunner().invoke(main, ["simulate", "--gpu", "h200", "--algo", "flash2", "--seq-len", "2k", "--persistent",
                                  "132", "--csv"])
    assert r.exit_code == 0, r.output
    header, row = r.output.strip().splitlines()[:2]
    assert dict(zip(header.split(","), row.split(",")))["persistent"] == "132"
    bad = CliRunner().invoke(main, ["simulate", "--gpu", "h200", "--algo", "flash1", "--persistent", "132"])
    assert bad.exit_code != 0 and "persistent" in bad.output and "Traceback" not in bad.output


def test_a_causal_persistent_kernel_with_tiles_bound_to_its_ctas_is_named_where_its_dram_is_least_certain():
    """Bound tiles of unequal length drift apart: causal and bound is flagged; not causal, or drawn from a
    counter, or one CTA a tile, is not."""
    from iosim.results.caveats import PERSISTENT_DRIFT
    bound = KernelCode(loop=LoopCode(300.0, {"fma": 100.0}), enclosing=LoopCode(50.0))
    drawn = replace(bound, tile_counter=True)

    def regimes(config, code):
        return simulate(config, H200, codes=[code]).kernels[0].regimes

    assert PERSISTENT_DRIFT in regimes(_config(causal=True, persistent=66), bound)
    assert PERSISTENT_DRIFT not in regimes(_config(causal=True, persistent=66), drawn)
    assert PERSISTENT_DRIFT not in regimes(_config(persistent=66), bound)
    assert PERSISTENT_DRIFT not in regimes(_config(causal=True), bound)


def test_a_pass_of_an_unrolled_loop_is_priced_as_the_blocks_it_covers():
    """A pass doing twice a block's products is two blocks' code: the same time and instructions as code of one
    block a pass at half the instructions (no waits, so nothing but the counts differs)."""
    config = _config()
    kernel = build_schedule(config, H200.sm_count).kernels[0]
    block = kernel.iter_flops.tensor / kernel.warps  # one warp's products of one block
    pipes = {"fma": 200.0, "alu": 100.0}
    per_pass = KernelCode(loop=LoopCode(600.0, pipes, stall_cycles=900.0), pass_flops=2 * block)
    per_block = KernelCode(loop=LoopCode(300.0, {p: n / 2 for p, n in pipes.items()}, stall_cycles=450.0),
                           pass_flops=block)
    unrolled, plain = (simulate(config, H200, codes=[c]) for c in (per_pass, per_block))
    assert unrolled.time_s == pytest.approx(plain.time_s, rel=1e-9)
    assert unrolled.kernels[0].instructions == pytest.approx(plain.kernels[0].instructions, rel=1e-9)
    odd = replace(per_pass, pass_flops=1.5 * block)  # not a whole number of blocks: taken as one block a pass
    assert simulate(config, H200, codes=[odd]).kernels[0].instructions["total"] == pytest.approx(
        2 * plain.kernels[0].instructions["total"], rel=0.02)
