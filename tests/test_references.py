"""PyTorch SDPA's cuDNN and FlashAttention-2 kernels as modelled references (iosim.schedule.references).

Checked against what is independent of the model: the executed counts Nsight Compute's source page
recorded (conservation), the per-pipe counters of a different ncu run of the same kernels, the
kernel names the measurement harness recorded (tiles), a closed form for the ping-pong overlap,
and the per-CTA simulation for the reversed loops' aggregation."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from iosim.cli import main
from iosim.costs.code import REFERENCE_MIXES, reference_codes
from iosim.costs.executed import read_source_page
from iosim.costs.issue import cta_time, sm_time
from iosim.engine import cohorts
from iosim.hardware.profile import load_profile
from iosim.schedule.build import build_schedule
from iosim.schedule.problem import ConfigError, Problem, RunConfig
from iosim.schedule.references import reference_config
from iosim.schedule.tiling import REFERENCE_TILES
from iosim.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent
H200 = ROOT / "experiments" / "measurements" / "h200"
MIXES = json.loads((ROOT / "iosim" / "costs" / "mixes" / REFERENCE_MIXES).read_text())["kernels"]


def test_committed_mixes_are_what_the_captures_give():
    """The committed per-iteration mixes are exactly what experiments/reference_mixes.py derives from
    the committed source pages (no hand edits)."""
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "reference_mixes.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("entry", MIXES, ids=lambda e: f"{e['impl']}-{e['kernel']}-d{e['head_dim']}")
def test_mix_times_launch_is_what_the_kernel_executed(entry):
    """Conservation: per-warp, per-iteration counts × warps × iterations of the profiled launch give back
    every warp instruction the source page shows that kernel executing, and the pipes add up to them."""
    kernel = next(k for k in read_source_page(ROOT / entry["capture"]) if k.name == entry["name"])
    launch = entry["launch"]
    scale = launch["iterations"] * launch["warps"]
    outside = entry.get("outside_instructions", 0.0) * launch.get("ctas", 0) * launch["warps"]  # split-KV: per CTA
    if "masked" in launch:  # an instantiation's masked blocks: what its masking steps add, times the blocks run masked
        outside += entry["masked_extra_instructions"] * launch["masked"] * launch["warps"]
    assert entry["instructions"] * scale + outside == pytest.approx(kernel.instructions, rel=1e-9)
    assert sum(entry["pipes"].values()) == pytest.approx(entry["instructions"], rel=1e-9)
    assert sum(entry.get("outside_pipes", {}).values()) == pytest.approx(entry.get("outside_instructions", 0.0), rel=1e-9)
    if "ctas" in launch:  # FlashAttention-2's split-KV forward and its combine: the launch iosim schedules there
        p = Problem(batch=launch["batch"], heads=launch["heads"], seq_q=launch["seq"], head_dim=entry["head_dim"],
                    causal=launch.get("causal", False), backward=launch.get("backward", False))
        ours = next(k for k in build_schedule(reference_config("sdpa_flash", p, "sm_90"), 132).kernels
                    if k.name == entry["kernel"])
        sl, i, j = ours.coords(0, ours.ctas)
        trips = ours.loop_bounds(i, j, sl)[1].sum() if ours.loop_extent else 0
        assert (ours.ctas, ours.warps, trips) == (launch["ctas"], launch["warps"], launch["iterations"])
        return
    # the launch is the one iosim schedules for that problem: Q blocks x K/V blocks x heads
    p = Problem(batch=launch["batch"], heads=launch["heads"], seq_q=launch["seq"], head_dim=entry["head_dim"],
                backward=True)
    config = reference_config(entry["impl"], p, "sm_90").resolved()
    tiles = config.tiling if entry["kernel"] == "flash2_fwd" else config.backward_tiling
    blocks = (launch["seq"] // tiles.block_m) * (launch["seq"] // tiles.block_n) * launch["batch"] * launch["heads"]
    assert launch["iterations"] == blocks and launch["warps"] == tiles.warps


def test_pipe_table_matches_the_counters_of_another_run():
    """The opcode → pipe table applied to the source page agrees with the per-pipe counters ncu measured
    for the same cuDNN and FlashAttention-2 kernels in the hopper grid's own run (another process)."""
    measured = {}
    for case in json.loads((H200 / "hopper" / "ncu_bwd" / "measurements.json").read_text())["cases"]:
        if case["name"] in ("sdpa_cudnn-fwd_bwd-fp16-b4h16-n4096-d128", "sdpa_flash-fwd_bwd-fp16-b4h16-n4096-d128"):
            for k in case["counters"]["kernels"]:
                measured.setdefault(re.sub(r"\s", "", k["name"])[:60], (k["inst_pipes"], k["inst_executed"]))
    checked = set()
    for kernel in read_source_page(H200 / "sdpa_sass" / "sdpa_sass.csv.gz"):
        name = re.sub(r"\((?:int|bool)\)|\s", "", kernel.name)[:60]
        if name not in measured or not any(s in name for s in ("fprop", "bprop", "flash_fwd_kernel", "dq_dk_dv")):
            continue
        pipes, total = measured[name]
        assert kernel.instructions == pytest.approx(total, rel=0.03), name  # barrier retry loops vary run to run
        for pipe in ("tensor", "xu"):  # what prices the products and the exponentials: exact
            assert kernel.pipes()[pipe] == pytest.approx(pipes[pipe], rel=0.01), (name, pipe)
        # FMA-pipe work within 15 % (cuDNN's backward: ncu counts 49 M of its 88 M R2UR moves on the FMA
        # pipe, which the table leaves on the uniform datapath; within 3 % everywhere else)
        assert kernel.pipes()["fma"] == pytest.approx(pipes["fma"], rel=0.15), name
        checked.add(name)
    assert len(checked) == 4


def test_warp_specialisation_is_read_from_the_code():
    """cuDNN's kernels reallocate registers between warpgroups (producer and consumers); FlashAttention-2's
    CUDA kernels do not."""
    flags = {(e["impl"], e["kernel"], e["head_dim"]): e["specialised"] for e in MIXES}
    assert all(v for (impl, _, _), v in flags.items() if impl == "sdpa_cudnn")
    assert not any(v for (impl, _, _), v in flags.items() if impl == "sdpa_flash")
    assert len(flags) == 12  # forward and backward of each at d = 64 and 128, FlashAttention-2's split-KV pair


def _tiles_from_name(name: str):
    """(forward or backward, head dim, tile) a recorded kernel name states, or None."""
    m = re.search(r"flash_fprop_wgmma_\w+?_knob_\d+_(\d+)x(\d+)x(\d+)_", name)
    if m:  # two consumer warpgroups of 64 Q rows each against 128 K/V rows
        rows, bn, d = map(int, m.groups())
        return "fwd", d, (2 * rows, bn)
    m = re.search(r"Flash_fwd_kernel_traits<(\d+), (\d+), (\d+), (\d+)", name)
    if m and "flash_fwd_kernel<" in name:
        d, bm, bn, w = map(int, m.groups())
        return "fwd", d, (bm, bn, w)
    m = re.search(r"flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits<(\d+), (\d+), (\d+), (\d+)", name)
    if m:
        d, bm, bn, w = map(int, m.groups())
        return "bwd", d, (bm, bn, w)
    return None


def test_tiles_are_the_ones_the_recorded_kernels_name():
    """Every cuDNN and FlashAttention-2 kernel the harness recorded on the H200 names the tiles the
    reference table models for its head dimension."""
    seen = 0
    for path in sorted(H200.rglob("measurements.json")):
        for case in json.loads(path.read_text())["cases"]:
            if case["impl"] not in REFERENCE_TILES or not case.get("counters"):
                continue
            p = case["run_config"]["problem"]
            if p["seq_q"] != p["seq_k"]:  # decode steps run the split-KV kernels, not modelled
                continue
            fwd, bwd = REFERENCE_TILES[case["impl"]][p["head_dim"]]
            for k in case["counters"]["kernels"]:
                found = _tiles_from_name(k["name"])
                if found is None:
                    continue
                pass_, d, tile = found
                t = fwd if pass_ == "fwd" else bwd
                assert d == p["head_dim"]
                assert tile == (t.block_m, t.block_n, t.warps)[:len(tile)], (case["name"], k["name"][:90])
                seen += 1
    assert seen >= 40


def test_ping_pong_takes_the_longer_of_products_and_softmax():
    """A warp-specialised CTA's consumer warpgroups alternate on the tensor cores: its time is the
    longer of its tensor and SIMT time, for one CTA or several; a plain CTA adds them."""
    assert cta_time(3.0, 2.0, 1, 0.0, specialised=True) == 3.0
    assert cta_time(3.0, 2.0, 1, 0.0) == 5.0
    assert sm_time(1.0, 4.0, 0.0, 2, 0.0, specialised=True) == pytest.approx(max(2 * 1.0, 2 * 4.0))
    assert sm_time(1.0, 4.0, 0.0, 2, 0.0) == pytest.approx(2 * (1.0 + 4.0))


@pytest.mark.parametrize("entry", [e for e in MIXES if e.get("variant")],
                         ids=lambda e: f"{e['kernel']}-d{e['head_dim']}-{'causal' if e['variant']['causal'] else 'plain'}-"
                                       f"{'even' if e['variant']['even'] else 'ragged'}")
def test_an_instantiations_masked_blocks_give_back_what_its_capture_executed(entry):
    """Conservation through the model: simulating the captured launch of a causal or ragged instantiation of
    FlashAttention-2's kernels (the forward's masking steps from ``flash_masking``, the backward's blocks on the
    diagonal, the engine's share of blocks run masked, the priced warp instructions) gives back every warp instruction
    its source page shows, per pipe; the plain instantiation's code alone misses them (by what the masked blocks add)."""
    launch = entry["launch"]
    problem = Problem(batch=launch["batch"], heads=launch["heads"], seq_q=launch["seq"], head_dim=entry["head_dim"],
                      causal=launch["causal"], backward=launch["backward"])
    captured = next(k for k in read_source_page(ROOT / entry["capture"]) if k.name == entry["name"])
    result = simulate(reference_config("sdpa_flash", problem, "sm_90"), "h100-sxm")
    got = next(k for k in result.kernels if k.name == entry["kernel"]).instructions
    assert got["total"] == pytest.approx(captured.instructions, rel=1e-6)
    for pipe, n in captured.pipes().items():
        assert got.get(pipe, 0.0) == pytest.approx(n, rel=1e-6, abs=1.0), pipe
    plain = next(e for e in MIXES if e["kernel"] == entry["kernel"] and e["impl"] == "sdpa_flash"
                 and e["head_dim"] == entry["head_dim"] and not e.get("variant"))
    without = (plain["instructions"] * launch["iterations"] + plain.get("outside_instructions", 0.0) * launch["ctas"]) \
        * launch["warps"]
    assert abs(without - captured.instructions) == pytest.approx(
        abs(entry["masked_extra_instructions"]) * launch["masked"] * launch["warps"], rel=1e-6)


def test_reference_codes_price_the_loop_kernels_only():
    config = reference_config("sdpa_cudnn", Problem(seq_q=2048, head_dim=128, backward=True), "sm_90")
    schedule = build_schedule(config, 132)
    codes = dict(zip((k.name for k in schedule.kernels), reference_codes(schedule, "sdpa_cudnn")))
    assert codes["flash2_fwd"].specialised and codes["flash2_bwd"].specialised
    assert codes["flash2_fwd"].regs_per_thread == 168 and codes["flash2_fwd"].shared_bytes > 200_000
    assert codes["zeros_dq"] is None and codes["cast_dq"] is None  # elementwise: estimated like ours
    assert codes["flash2_fwd"].source.endswith(", sm_90")  # the architecture the code was read on, named once


def _loop_rows(kernel, g: int, tensor: str) -> list:
    """Row ranges of ``tensor`` CTA ``g`` of ``kernel`` reads, in the order it reads them."""
    out = []
    for step in cohorts.steps(kernel, g, g + 1, 1, aggregate=False):
        out += [(a[2], a[3]) for a in step.accesses if a[0] == tensor]  # Access: tensor, slice, r0, r1, ...
    return out


def test_reversed_loop_starts_at_the_last_block():
    """FlashAttention-2's CUDA kernels walk K/V (forward) and Q (backward) blocks from the last down:
    the same blocks, first the last one."""
    config = reference_config("sdpa_flash", Problem(batch=4, heads=16, seq_q=1024, head_dim=64, causal=True,
                                                    backward=True), "sm_90")  # enough CTAs: no split
    kernels = {k.name: k for k in build_schedule(config, 132).kernels}
    plain = build_schedule(config.with_(impl=None), 132).kernels
    for name, tensor in (("flash2_fwd", "K"), ("flash2_bwd", "Q")):
        k, ours = kernels[name], next(x for x in plain if x.name == name)
        assert k.reverse and not ours.reverse
        g = k.ctas - 1 if name == "flash2_fwd" else 0  # the CTA with the longest causal loop

        mine, theirs = _loop_rows(k, g, tensor), _loop_rows(ours, g, tensor)
        covered = lambda spans: sorted(r for a, b in spans for r in range(a, b))  # noqa: E731
        assert covered(mine) == covered(theirs) and len(mine) > 2  # the same rows, each once
        assert mine == sorted(mine, reverse=True) and theirs == sorted(theirs)  # from the last down


def test_aggregated_equals_per_cta_on_the_reversed_backward():
    """The fast path is the per-CTA model on FlashAttention-2's reversed causal backward, whose CTAs of a
    head all start at the last Q block: a usable time belongs to the span of a line a fill brought in,
    not to the whole line (with one time per line the aggregated run took 1.24× the per-CTA one)."""
    profile = load_profile("h200-calibrated")
    config = reference_config("sdpa_flash", Problem(batch=1, heads=8, seq_q=8192, head_dim=128, causal=True,
                                                    backward=True), "sm_90", mode="ncu")
    a, b = (next(k for k in simulate(config, profile, aggregate=agg).kernels if k.name == "flash2_bwd")
            for agg in (True, False))
    for level in ("l2", "hbm"):
        assert a.levels[level].total == pytest.approx(b.levels[level].total, rel=0.005)
    assert a.time_s == pytest.approx(b.time_s, rel=0.02)


def test_reference_refusals_name_the_field():
    with pytest.raises(ConfigError, match="impl: sdpa_cudnn is modelled on sm_90"):
        reference_config("sdpa_cudnn", Problem(), "sm_80")
    with pytest.raises(ConfigError, match="^impl: "):
        RunConfig(algo="flash1", impl="sdpa_flash")
    with pytest.raises(ConfigError, match="^impl: must be one of ours, sdpa_cudnn, sdpa_flash"):
        RunConfig(impl="cudnn")
    with pytest.raises(ConfigError, match="head_dim: sdpa_cudnn is modelled at head dims 64, 128"):
        simulate(RunConfig(impl="sdpa_cudnn", problem=Problem(head_dim=32)), "h200")


def test_cli_impl_runs_flash2_on_the_backend_and_refuses_other_gpus():
    runner = CliRunner()
    ok = runner.invoke(main, ["simulate", "--gpu", "h200", "--impl", "sdpa_cudnn", "--seq-len", "2k", "-d", "128",
                              "--json"])
    assert ok.exit_code == 0, ok.output
    run = json.loads(ok.output)[0]
    assert run["config"]["impl"] == "sdpa_cudnn" and run["config"]["algo"] == "flash2"
    assert run["config"]["tiling"]["block_n"] == 128
    bad = runner.invoke(main, ["simulate", "--gpu", "a100", "--impl", "sdpa_cudnn"])
    assert bad.exit_code == 2 and "sm_90" in bad.output and "Traceback" not in bad.output


def test_plot_takes_impl_as_flash2_and_labels_it(tmp_path):
    """``iosim plot`` with --impl: the default algorithms give way to flash2, the rows say whose kernels ran."""
    out = tmp_path / "io.png"
    done = CliRunner().invoke(main, ["plot", "io", "--gpu", "h200", "--impl", "sdpa_flash", "--seq-len", "1k,2k",
                                     "-d", "64", "-o", str(out)])
    assert done.exit_code == 0, done.output
    rows = (tmp_path / "io.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",flash2/sdpa_flash," in row for row in rows[1:])


def _sdpa_flash_forwards():
    """(problem, GPU SMs, kernel names and grids) of every committed sdpa_flash case whose forward ran at the
    problem's own lengths, from the kernels the harness's Nsight Compute run recorded."""
    sms = {"h100": 132, "h200": 132}
    out = []
    for gpu in sms:
        for path in sorted((ROOT / "experiments" / "measurements" / gpu).rglob("measurements.json")):
            for case in json.loads(path.read_text())["cases"]:
                counters = case.get("counters") or {}
                if case.get("impl") != "sdpa_flash" or not counters.get("kernels"):
                    continue
                problem = Problem(**case["run_config"]["problem"])
                if problem.seq_q != problem.seq_k:
                    continue
                out.append((problem, sms[gpu], [(k["name"], k["grid"]) for k in counters["kernels"]]))
    return out


def test_flash_splits_are_the_kernels_the_gpu_ran():
    """Where libtorch's FlashAttention-2 forward splits the K/V length (its num_splits heuristic), the schedule
    runs the split kernel and its combine with the grids Nsight Compute recorded (query blocks × splits × B·H,
    B·H·N / rows); elsewhere the plain forward, unsplit: on every committed sdpa_flash case."""
    cases = _sdpa_flash_forwards()
    assert sum("splitkv" in names[0][0] for _, _, names in cases) >= 2 and len(cases) >= 10
    for problem, sms, ran in cases:
        schedule = build_schedule(reference_config("sdpa_flash", problem, "sm_90"), sms)
        kernels = {k.name: k for k in schedule.kernels}
        fwd = ran[0]
        if "splitkv" in fwd[0]:
            split, combine = kernels["flash2_fwd_split"], kernels["flash2_fwd_combine"]
            assert [split.ti, split.tj, split.slices] == fwd[1]
            d, bm, bn, w = map(int, re.search(r"Flash_fwd_kernel_traits<(\d+), (\d+), (\d+), (\d+)", fwd[0]).groups())
            assert (d, bm, bn, w) == (problem.head_dim, split.block_i, split.block_u, split.warps)
            rows = int(re.search(r"\w+>>, (\d+),", ran[1][0]).group(1))  # the combine's kBlockM (with or without namespaces)
            assert rows == combine.block_i
            assert schedule.config.tiling.splits == fwd[1][1]
            assert combine.ctas == ran[1][1][0] and "combine" in ran[1][0]
        else:
            assert "flash2_fwd_split" not in kernels and kernels["flash2_fwd"].ctas == fwd[1][0] * fwd[1][1] * fwd[1][2]
            assert schedule.config.tiling.splits is None


def test_split_masking_is_the_instantiation_the_gpu_ran():
    """The split-KV forward's instantiation iosim picks for a problem (``split_masking``: causal, lengths whole
    blocks) is the one in the kernel name Nsight Compute recorded (``flash_fwd_splitkv_kernel<traits, Is_causal,
    Is_local, Has_alibi, Is_even_MN, ...>``), on every committed case that split; and its masking steps are
    FlashAttention-2's ``n_masking_steps`` (kBlockM = 64 rows never wider than a K/V block: one step where causal or
    ragged, one more where both; the plain instantiation peels an unmasked block)."""
    from iosim.schedule.references import split_masking

    seen = set()
    for problem, _, ran in _sdpa_flash_forwards():
        if "splitkv_kernel" not in ran[0][0]:
            continue
        flags = re.search(r"splitkv_kernel<.*?>>, (\d), (\d), (\d), (\d),", ran[0][0])
        causal, even, steps = split_masking(problem)
        assert (causal, even) == (flags.group(1) == "1", flags.group(4) == "1"), ran[0][0]
        assert steps == (0 if not causal and even else 1 if causal == even or not causal else 2)
        seen.add((causal, even))
    assert len(seen) == 4  # every instantiation is among the committed cases


@pytest.mark.parametrize("causal", [False, True])
def test_split_forward_covers_each_query_blocks_keys_once(causal):
    """The splits of a query block stream between them exactly the K/V rows the unsplit loop does at the same
    block sizes (up to its diagonal where causal), each in one split: their trips add up block by block."""
    p = Problem(batch=1, heads=2, seq_q=1000, head_dim=64, causal=causal)
    split = next(k for k in build_schedule(reference_config("sdpa_flash", p, "sm_90"), 132).kernels
                 if k.name == "flash2_fwd_split")
    assert split.tj > 1
    sl, i, j = split.coords(0, split.ctas)
    start, trips = split.loop_bounds(i, j, sl)
    plain = replace(split, tj=1, split_blocks=0)
    sl1, i1, j1 = plain.coords(0, plain.ctas)
    want = dict(zip(zip(sl1.tolist(), i1.tolist()), plain.loop_bounds(i1, j1, sl1)[1].tolist()))
    got = {}
    for s_, i_, a, n in zip(sl.tolist(), i.tolist(), start.tolist(), trips.tolist()):
        got.setdefault((s_, i_), []).append((a, n))
    for key, spans in got.items():
        blocks = [b for a, n in spans for b in range(a, a + n)]
        assert sorted(blocks) == list(range(want[key])) and len(blocks) == len(set(blocks))


def test_split_forward_moves_its_partials_through_dram():
    """With Nsight Compute's cache control (every kernel from a flushed L2, its writes left dirty in it), the
    split kernel reads Q, K and V once and the combine reads every split's fp32 partial output and logsumexp of
    every row: closed forms of the tensors' sizes."""
    p = Problem(batch=1, heads=4, seq_q=512, head_dim=64)
    r = simulate(reference_config("sdpa_flash", p, "sm_90", mode="ncu"), "h200-calibrated")
    hbm = {k.name: k.levels["hbm"].read_bytes for k in r.kernels}
    splits = r.config["tiling"]["splits"]
    assert splits == 2  # the measured grid (8, 2, 4): test_flash_splits_are_the_kernels_the_gpu_ran
    assert hbm["flash2_fwd_split"] == 3 * p.bh * p.seq_q * p.head_dim * 2
    assert hbm["flash2_fwd_combine"] == p.bh * p.seq_q * splits * (p.head_dim + 1) * 4


def test_flash_backward_copies_do_and_o_first():
    """libtorch's FlashAttention-2 backward copies dO and O to contiguous tensors (two ATen strided copies, as
    every committed fwd_bwd case's kernel list shows), its preprocess and main kernel read the copies, and no
    fill kernel clears dQ's accumulator (the preprocess does): its tensors' bytes are conserved."""
    p = Problem(batch=2, heads=8, seq_q=2048, head_dim=128, backward=True)
    schedule = build_schedule(reference_config("sdpa_flash", p, "sm_90"), 132)
    names = [k.name for k in schedule.kernels]
    assert names[:4] == ["flash2_fwd", "copy_dO", "copy_O", "flash2_bwd_pre"] and "zeros_dq" not in names
    reads = {k.name: {pt.tensor for pt in k.patterns if pt.kind.name == "READ"} for k in schedule.kernels}
    assert reads["flash2_bwd_pre"] == {"Oc", "dOc"} and {"dOc"} <= reads["flash2_bwd"]
    assert "dO" not in reads["flash2_bwd"] and "O" not in reads["flash2_bwd_pre"]
    for name in ("copy_dO", "copy_O"):
        assert names.count(name) == 1
    for run in _sdpa_flash_forwards():
        problem, _, ran = run
        if problem.backward:
            copies = [n for n, _ in ran if "direct_copy_kernel" in n]
            assert len(copies) == 2
    r = simulate(reference_config("sdpa_flash", p, "sm_90", mode="ncu"), "h200-calibrated")
    hbm = {k.name: k.levels["hbm"].read_bytes for k in r.kernels}
    size = p.bh * p.seq_q * p.head_dim * 2
    assert hbm["copy_dO"] == size and hbm["copy_O"] == size


def test_splits_are_a_choice_of_the_kernels_that_split():
    """``splits`` (--splits) is refused, naming the field, where no kernel splits the K/V length; SDPA's flash
    forward takes it over FlashAttention-2's own choice, as its ``num_splits`` argument does."""
    from iosim.schedule.problem import Tiling

    p = Problem(batch=1, heads=4, seq_q=512, head_dim=64)
    for algo, impl in (("flash2", None), ("flash2", "sdpa_cudnn"), ("standard", None)):
        with pytest.raises(ConfigError) as e:
            RunConfig(algo=algo, problem=p, impl=impl, tiling=Tiling(splits=2))
        assert e.value.field == "splits"
    forced = reference_config("sdpa_flash", p, "sm_90").with_(tiling=Tiling(splits=3))
    split = next(k for k in build_schedule(forced, 132).kernels if k.name == "flash2_fwd_split")
    assert split.tj == 3 and build_schedule(forced, 132).config.tiling.splits == 3
