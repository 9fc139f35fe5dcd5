"""The measuring harness's orchestration (kernels/harness.py) without a GPU: refusals and the joining of counters."""
from __future__ import annotations

import pytest

from iosim.kernels import harness
from iosim.kernels.cases import smoke_grid
from iosim.kernels.device import HarnessError
from iosim.measure.measurement import Case, Counters, KernelCounters, Timing


def _case() -> Case:
    spec = smoke_grid()[0]
    timing = Timing(median_s=5.7e-5, p20_s=5.6e-5, p80_s=5.9e-5, warmup_ms=25, rep_ms=100)
    return Case(name=spec.name, impl=spec.impl, pass_=spec.pass_, run_config=spec.run_config(), timing=timing)


def _counters() -> Counters:
    return Counters.from_kernels([KernelCounters(
        name="flash2_fwd", dram_read_bytes=824_576.0, dram_write_bytes=0.0, l2_bytes=3_063_648.0, l2_hit_rate=51.65,
        duration_s=15.424e-6, grid=(4, 4, 1), block=(128, 1, 1), registers=237, shared_bytes=49152)])


def test_measure_without_cuda_is_a_one_line_harness_error(tmp_path, monkeypatch):
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HarnessError) as info:
        harness.measure(smoke_grid(), tmp_path / "m.json", progress=lambda *_: None)
    assert str(info.value).startswith("no CUDA GPU: ") and "\n" not in str(info.value)
    assert not (tmp_path / "m.json").exists()


def test_duplicate_case_names_are_refused_before_the_gpu_is_touched(tmp_path):
    with pytest.raises(HarnessError, match="appears twice"):
        harness.measure(smoke_grid()[:1] * 2, tmp_path / "m.json", progress=lambda *_: None)


def test_each_case_gets_its_counters_or_a_one_line_reason():
    case = _case()
    counters = {case.name: _counters()}
    assert harness.with_counters(case, counters, {}, None).counters == counters[case.name]
    no_ncu = harness.with_counters(case, counters, {}, "ncu not found")
    assert (no_ncu.counters, no_ncu.counters_error) == (None, "ncu not found")
    failed = harness.with_counters(case, counters, {case.name: "out of memory"}, None)
    assert (failed.counters, failed.counters_error) == (None, "out of memory")  # partial counts are dropped
    assert harness.with_counters(case, {}, {}, None).counters_error == "ncu profiled no kernel of this case"


def test_pinned_autotune_keeps_the_config_the_timed_run_recorded():
    """Under ncu an autotuned kernel must run the config its timed run ran (its autotuner may pick another one in
    a fresh process): pinned_autotune keeps only that config, and leaves other kernels' choices alone."""
    triton = pytest.importorskip("triton")
    import triton.language as tl

    from iosim.kernels.profiler import pinned_autotune

    @triton.autotune(configs=[triton.Config({"BLOCK_M": m}, num_warps=w, num_stages=s)
                              for m in (64, 128) for w in (4, 8) for s in (2, 3)], key=["n"])
    @triton.jit
    def tuned_kernel(x, n, BLOCK_M: tl.constexpr):
        tl.store(x + tl.arange(0, BLOCK_M), tl.zeros([BLOCK_M], tl.float32))

    tuned_kernel.nargs = {}
    ran = [{"kernel": "tuned_kernel", "constexprs": {"BLOCK_M": 128, "n": 7}, "num_warps": 4, "num_stages": 3}]
    with pinned_autotune(ran):
        (kept,) = tuned_kernel.prune_configs({})
    assert (kept.kwargs["BLOCK_M"], kept.num_warps, kept.num_stages) == (128, 4, 3)
    with pinned_autotune([{**ran[0], "kernel": "another"}]):
        assert len(tuned_kernel.prune_configs({})) == 8
    assert len(tuned_kernel.prune_configs({})) == 8  # the patch is undone
