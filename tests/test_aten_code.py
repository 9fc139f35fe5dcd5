"""PyTorch's softmax priced from what its kernel executed (iosim.kernels.aten_probe), not from an estimate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from iosim.costs.code import _aten_softmax_variant, aten_softmax_code, compiled_codes
from iosim.schedule.build import build_schedule
from iosim.schedule.problem import Problem, RunConfig

REPO = Path(__file__).resolve().parents[1]
PROBE = json.loads((REPO / "experiments/measurements/h200/aten/aten_probe.json").read_text())["results"]


@pytest.mark.parametrize("n, variant", [(512, "softmax_warp_forward"), (2048, "softmax_warp_forward"),
                                        (2049, "cunn_SoftMaxForwardReg"), (9216, "cunn_SoftMaxForwardReg"),
                                        (9217, "cunn_SoftMaxForwardSmem")])
def test_the_kernel_follows_atens_dispatch(n, variant):
    assert _aten_softmax_variant(n) == variant


@pytest.mark.parametrize("n", [int(k) for k in PROBE])
def test_at_a_probed_length_the_code_is_what_the_kernel_executed(n):
    # the probe ran that kernel (its name says so) and executed exactly this many warp instructions
    measured = PROBE[str(n)]
    assert _aten_softmax_variant(n) in measured["name"]
    code = aten_softmax_code(n, 4, "sm_90")
    assert code.outside.instructions * 4 == pytest.approx(measured["inst_executed"] / measured["elements"] * n)
    assert code.outside.pipes["xu"] * 4 == pytest.approx(measured["inst_pipes"]["xu"] / measured["elements"] * n)


def test_between_probed_lengths_of_one_kernel_it_interpolates_and_never_across_kernels():
    lo, hi = (PROBE[k]["inst_executed"] / PROBE[k]["elements"] for k in ("3072", "6144"))
    per_elem = aten_softmax_code(4096, 1, "sm_90").outside.instructions / 4096
    assert min(lo, hi) < per_elem < max(lo, hi)
    # 2048 is the warp kernel's: the register kernel's 3072 is not mixed in
    warp = PROBE["1536"]["inst_executed"] / PROBE["1536"]["elements"]
    assert aten_softmax_code(2048, 1, "sm_90").outside.instructions / 2048 == pytest.approx(warp)
    assert aten_softmax_code(4096, 1, "sm_80") is None  # an architecture the probe never ran on


def test_eager_attention_runs_atens_softmax_and_ours_runs_its_own():
    problem = Problem(batch=1, heads=2, seq_q=4096)
    eager = build_schedule(RunConfig(algo="standard_eager", problem=problem))
    codes = dict(zip([k.name for k in eager.kernels], compiled_codes(eager, "sm_90")))
    assert codes["softmax"].source.startswith("ncu: ATen cunn_SoftMaxForwardReg")
    ours = build_schedule(RunConfig(algo="standard", problem=problem))
    assert not any(c is not None and "ATen" in c.source for c in compiled_codes(ours, "sm_90"))


ELEMENTWISE = json.loads((REPO / "experiments/measurements/h200/aten_elementwise/aten_probe.json").read_text())["elementwise"]
SIZES = {"float32": 4, "float16": 2}


@pytest.mark.parametrize("label", list(ELEMENTWISE))
def test_a_probed_pass_executes_what_its_kernel_executed(label):
    """At each probed operation (kind and element sizes; a sum at its group) the code is what ATen's kernel
    executed on the GPU, per element written; the repeat (4× fewer elements read) is the broadcast kind."""
    from iosim.costs.code import aten_code
    m = ELEMENTWISE[label]
    kind = "broadcast" if 0 < m["in_elements"] < m["out_elements"] and m["kind"] == "strided" else m["kind"]
    group = m["in_elements"] / m["out_elements"] if kind == "sum" else 1
    src, dst = (SIZES[t] for t in m["dtypes"])
    code = aten_code(kind, src, dst, group, 4096, 4, "sm_90")
    assert code.outside.instructions * 4 == pytest.approx(m["inst_executed"] / m["out_elements"] * 4096)
    assert code.outside.pipes["alu"] * 4 == pytest.approx(m["inst_pipes"]["alu"] / m["out_elements"] * 4096)


def test_a_sum_is_piecewise_linear_in_its_group_and_a_plain_copy_is_a_memcpy():
    from iosim.costs.code import aten_code
    y = {g: ELEMENTWISE[f"sum_fp32_g{g}_d128"]["inst_executed"] / ELEMENTWISE[f"sum_fp32_g{g}_d128"]["out_elements"]
         for g in (1, 2, 4, 8, 16)}
    assert aten_code("sum", 4, 4, 6, 1.0, 1, "sm_90").outside.instructions == pytest.approx((y[4] + y[8]) / 2)
    assert aten_code("sum", 4, 4, 32, 1.0, 1, "sm_90").outside.instructions == pytest.approx(y[16] + 2 * (y[16] - y[8]))
    # a sum read in fp32 and written in fp16 (probed in neither) takes the series of what it reads
    assert aten_code("sum", 4, 2, 4, 1.0, 1, "sm_90").outside.instructions == pytest.approx(y[4])
    # a contiguous copy of equal element sizes is cudaMemcpy (the probe's clone launched no kernel): no instructions
    assert "copy_fp16" not in ELEMENTWISE
    assert aten_code("copy", 2, 2, 1, 4096, 4, "sm_90").outside.instructions == 0
    assert aten_code("strided", 2, 2, 1, 4096, 4, "sm_80") is None and aten_code("", 2, 2, 1, 1, 4, "sm_90") is None


def test_the_schedules_own_pytorch_passes_run_atens_kernels():
    """flash2's dQ fill and cast and its group sums take ATen's probed code; the bytes they move are unchanged
    (with no L2, exactly what they read and write)."""
    from iosim.simulate import simulate
    config = RunConfig(problem=Problem(batch=1, heads=8, kv_heads=2, seq_q=1024, head_dim=64, backward=True),
                       mode="ncu")
    run = simulate(config, "h200", l2_bytes=0)
    by = {k.name: k for k in run.kernels}
    for name, kind in (("zeros_dq", "vectorized_elementwise_kernel"), ("cast_dq", "vectorized_elementwise_kernel"),
                       ("sum_dk", "reduce_kernel"), ("sum_dv", "reduce_kernel")):
        assert by[name].code.startswith("ncu: ATen") and kind in by[name].code
    fill = ELEMENTWISE["fill_fp32"]
    assert by["zeros_dq"].instructions["total"] == pytest.approx(fill["inst_executed"] / fill["out_elements"]
                                                                 * 8 * 1024 * 64)
    assert by["zeros_dq"].levels["hbm"].write_bytes == 8 * 1024 * 64 * 4


def test_a_launchers_group_sum_takes_its_group_from_what_it_reads():
    """A launcher's sum of dK over groups of 4 query heads (autograd behind repeat_kv) reads four elements for each
    it writes: it runs the probed sum at that group, as the schedule's own group sums do."""
    from iosim.engine.simulator import Engine
    from iosim.hardware.profile import load_profile
    from iosim.schedule.build import build_schedule
    from iosim.schedule.problem import LauncherOp, Operand
    B, H, KV, D = 1, 8, 2, 64
    # the kernels ran without GQA (K and V copied for every head): the sum is the launcher's own, not the schedule's
    total = LauncherOp("aten.sum.dim_IntList", "bwd", None, (Operand(None, (B, KV, 4, "Nk", D), 2),),
                       (Operand(None, (B, KV, "Nk", D), 2),))
    config = RunConfig(problem=Problem(batch=B, heads=H, seq_q=1024, head_dim=D, backward=True),
                       dq="separate", launcher_ops=(total,))
    h200 = load_profile("h200")
    engine = Engine(build_schedule(config, h200.sm_count), h200)
    n = [k.name for k in engine.kernels].index("torch_sum")
    kernel, code = engine.kernels[n], engine.codes[n]
    probe = ELEMENTWISE["sum_fp16_g4_d128"]
    written = B * KV * 1024 * D
    assert code.outside.instructions * kernel.warps * kernel.ctas == pytest.approx(
        probe["inst_executed"] / probe["out_elements"] * written)


def test_atens_softmax_reads_its_input_once_as_the_crossbar_counted():
    """ATen's softmax forward holds each row in registers (its warp kernel to 1,024 columns, its register kernel
    beyond): it reads S once, so the simulated kernel moves N² elements in and N² out over the crossbar; and on
    every committed H200 eager case (N = 512-8192, the crossbar counted) that is what the GPU moved, within 1 %."""
    from iosim.measure.measurement import load_measurement
    from iosim.measure.validate import validate
    from iosim.simulate import simulate
    problem = Problem(batch=1, heads=2, seq_q=2048)
    run = simulate(RunConfig(algo="standard_eager", problem=problem), "h200")
    softmax = next(k for k in run.kernels if k.name == "softmax")
    s_bytes = problem.batch * problem.heads * problem.seq_q * problem.seq_k * problem.elem_bytes
    assert softmax.levels["l2"].read_bytes == s_bytes and softmax.levels["l2"].write_bytes == s_bytes
    seen = 0
    for rel in ("h200/measurements.json", "h200/small/measurements.json"):
        results, _ = validate(load_measurement(REPO / "experiments" / "measurements" / rel), impls=("standard_eager",))
        for r in results:
            for k in r.kernels:
                if k["name"] == "softmax" and "xbar_bytes" in k["measured"]:
                    assert k["error"]["xbar_bytes"] == pytest.approx(0.0, abs=0.01), (r.name, k)
                    seen += 1
    assert seen >= 9


BACKWARD = json.loads((REPO / "experiments/measurements/h200/aten_bwd/aten_probe.json").read_text())
B_BYTES = {"float32": 4, "float16": 2}


@pytest.mark.parametrize("n", [int(k) for k in BACKWARD["backward"]])
def test_the_softmax_backward_at_a_probed_length_is_what_its_kernel_executed(n):
    """Autograd's softmax backward (torch._softmax_backward_data) runs ATen's warp kernel up to 1,024 columns and
    its shared-memory block kernel beyond (the probe's kernel names); at each probed length its code is what
    that kernel executed, per element."""
    measured = BACKWARD["backward"][str(n)]
    assert _aten_softmax_variant(n, backward=True) in measured["name"]
    code = aten_softmax_code(n, 4, "sm_90", backward=True)
    assert code.outside.instructions * 4 == pytest.approx(measured["inst_executed"] / measured["elements"] * n)
    assert _aten_softmax_variant(1024, backward=True) == "softmax_warp_backward"
    assert _aten_softmax_variant(1025, backward=True) == "cunn_SoftMaxBackwardSmem"


def test_eager_attentions_softmax_backward_runs_atens_code():
    eager = build_schedule(RunConfig(algo="standard_eager", problem=Problem(batch=1, heads=2, seq_q=2048,
                                                                         backward=True)))
    codes = dict(zip([k.name for k in eager.kernels], compiled_codes(eager, "sm_90")))
    assert codes["softmax_bwd"].source.startswith("ncu: ATen cunn_SoftMaxBackwardSmem")


@pytest.mark.parametrize("label", [k for k in BACKWARD["elementwise"] if k.startswith("sum_")])
def test_a_group_sum_stores_over_the_crossbar_what_the_probe_counted(label):
    """ATen's reduce kernel writes its outputs in 32-byte sectors partly filled: at each probed group and element
    size the store factor is the probe's crossbar writes per byte of output (2.5-3.9), and simulated, a GQA
    backward's group sum moves that many crossbar bytes per byte it writes while its DRAM writes stay its output
    (the L2 merges the sectors): conservation of the extra bytes."""
    from iosim.costs.code import aten_code
    from iosim.simulate import simulate
    m = BACKWARD["elementwise"][label]
    size = B_BYTES[m["dtypes"][1]]
    group = m["in_elements"] / m["out_elements"]
    factor = m["xbar_write_bytes"] / (m["out_elements"] * size)
    assert aten_code("sum", size, size, group, 4096, 4, "sm_90").store_bytes == pytest.approx(factor)
    if label != "sum_fp16_g4_d128":
        return
    problem = Problem(batch=1, heads=8, kv_heads=2, seq_q=512, head_dim=128, backward=True)
    run = simulate(RunConfig(algo="flash2", problem=problem), "h200", l2_bytes=0)
    out = problem.bh_kv * problem.seq_k * problem.head_dim * problem.elem_bytes  # dK (or dV) of the kv heads
    for name in ("sum_dk", "sum_dv"):
        k = next(k for k in run.kernels if k.name == name)
        assert k.levels["l2"].write_bytes == pytest.approx(out * factor, rel=1e-6)
        assert k.levels["hbm"].write_bytes == out
    assert aten_code("copy", 4, 2, 1, 4096, 4, "sm_90").store_bytes == 1.0  # a cast fills its sectors


RANDOM = json.loads((REPO / "experiments/measurements/h100/aten_random/aten_probe.json").read_text())["elementwise"]


@pytest.mark.parametrize("op, label", [("aten.randn.default", "normal_fp16"), ("aten.rand.default", "uniform_fp16"),
                                       ("aten.zeros.default", "fill_fp16")])
def test_a_launchers_random_numbers_run_atens_distribution_kernel(op, label):
    """A launcher that draws a bias with ``torch.randn`` (or ``rand``) runs ATen's distribution kernel, Philox and
    Box-Muller per element: as many warp instructions per element written as it executed on the GPU (the probe, 22
    times a fill's for normal numbers), where it was priced as a fill; a ``zeros`` stays a fill."""
    from iosim.engine.simulator import Engine
    from iosim.hardware.profile import load_profile
    from iosim.schedule.problem import LauncherOp, Operand
    drawn = LauncherOp(op, "fwd", "flash2_fwd", (), (Operand(None, (2, 4, "Nq", "Nk"), 2),))
    config = RunConfig(problem=Problem(batch=2, heads=4, seq_q=1024, head_dim=64), launcher_ops=(drawn,))
    h200 = load_profile("h200")
    engine = Engine(build_schedule(config, h200.sm_count), h200)
    n = [k.name for k in engine.kernels].index(f"torch_{op.split('.')[1]}")
    kernel, code = engine.kernels[n], engine.codes[n]
    probe = ELEMENTWISE[label] if label.startswith("fill") else RANDOM[label]
    assert kernel.aten == label.split("_")[0]
    assert code.outside.instructions * kernel.warps * kernel.ctas == pytest.approx(
        probe["inst_executed"] / probe["out_elements"] * 2 * 4 * 1024 * 1024)


def test_random_numbers_where_no_distribution_kernel_was_probed_are_priced_as_a_fill(monkeypatch):
    """A code table from before the distribution kernels were probed has no ``normal`` kind: randn takes a fill's
    code, as it did then, rather than none."""
    from iosim.costs import code as costs
    table = json.loads((REPO / "iosim/costs/mixes/aten-sm_90.json").read_text())
    table["elementwise"] = {k: v for k, v in table["elementwise"].items() if v["kind"] not in ("normal", "uniform")}
    fill = costs.aten_code("fill", 2, 2, 1, 4096, 4, "sm_90")
    monkeypatch.setattr(costs, "_aten_table", lambda arch: table)
    assert costs.aten_code("normal", 2, 2, 1, 4096, 4, "sm_90").outside.instructions == fill.outside.instructions
    assert costs.aten_code("other", 2, 2, 1, 4096, 4, "sm_90").outside.instructions != fill.outside.instructions
