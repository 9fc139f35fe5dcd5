"""The ATen probe (kernels/aten_probe.py) without a GPU: its reading of a synthetic ncu export and the code
table it commits, against hand-computed values."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from ncu_export import ncu_csv

from iosim.kernels import aten_probe
from iosim.kernels.ncu import parse_ncu_raw_csv

COLUMNS = ("dram__bytes_read.sum", "dram__bytes_write.sum", "gpu__time_duration.sum", "lts__t_bytes.sum",
           "lts__t_sector_hit_rate.pct", "smsp__inst_executed.sum", "smsp__inst_executed_pipe_fma.sum",
           "smsp__inst_executed_pipe_xu.sum")
UNITS = ("byte", "byte", "ns", "byte", "%", "inst", "inst", "inst")


def _csv(kernels) -> str:
    """The export of ATen's softmax launches: (name, tag, values), 43690 CTAs of 1024 threads each."""
    return ncu_csv(COLUMNS, UNITS, [(name, tag, 43690, values) for name, tag, values in kernels], block=1024)


ELEMS_3072 = (aten_probe.ROWS_ELEMS // 3072) * 3072  # whole rows only: 43690 rows of 3072
EXPORT = _csv([
    ("cunn_SoftMaxForwardReg<3>", "softmax-3072", (2**28, 2**28, 463_000, 2**29, 50, 2 * ELEMS_3072, ELEMS_3072,
                                                     ELEMS_3072 // 8)),
    ("elementwise", "", (1, 1, 1, 1, 0, 1, 1, 1)),  # untagged: not the probe's
    ("softmax_warp_forward<11>", "softmax-1536", (2**28, 2**28, 305_000, 2**29, 50, (aten_probe.ROWS_ELEMS // 1536) * 1536, 0, 0)),
])


def test_results_by_row_length_give_instructions_per_element():
    res = aten_probe.results(parse_ncu_raw_csv(EXPORT))
    assert sorted(res) == [1536, 3072]
    r = res[3072]
    assert r["name"] == "cunn_SoftMaxForwardReg<3>" and r["elements"] == ELEMS_3072
    assert r["inst_per_element"] == pytest.approx(2.0) and r["duration_s"] == pytest.approx(463e-6)
    assert res[1536]["inst_per_element"] == pytest.approx(1.0)


def test_the_code_table_is_per_element_and_per_pipe():
    data = {"provenance": {"gpu_name": "NVIDIA H200", "torch": "2.11.0", "ncu": "ncu", "date": "today"},
            "results": aten_probe.results(parse_ncu_raw_csv(EXPORT))}
    table = aten_probe.code_table([(data, "probe.json")])
    assert table["arch"] == "sm_90" and table["schema"] == "iosim-aten-code"
    row = table["softmax_forward"]["3072"]
    assert row["inst_per_element"] == pytest.approx(2.0)
    assert row["pipes_per_element"] == pytest.approx({"fma": 1.0, "xu": 0.125})
    with pytest.raises(ValueError, match="gpu_name"):
        aten_probe.code_table([({**data, "provenance": {"gpu_name": "Tesla T4"}}, "probe.json")])


ELEMENTWISE_EXPORT = ncu_csv(COLUMNS, UNITS, [
    ("elementwise_kernel<128, 4>", "elementwise-transpose_fp16_d128", 262144,
     (2**28, 2**28, 352_000, 2**29, 0, 2 * aten_probe.ROWS_ELEMS, aten_probe.ROWS_ELEMS // 2, 0)),
    ("reduce_kernel<128, 4>", "elementwise-sum_fp32_g8_d128", 4096,
     (2**29, 2**26, 158_000, 2**30, 0, 3 * aten_probe.ROWS_ELEMS // 8, 0, 0)),
    ("elementwise_kernel<128, 4>", "elementwise-repeat_fp16_g4_d128", 262144,
     (2**26, 2**28, 274_000, 2**29, 0, aten_probe.ROWS_ELEMS, 0, 0)),
], block=128)


def test_elementwise_results_and_their_table_are_per_element_written():
    """A transpose writes as many elements as it reads; a sum of groups of 8 writes one of eight (its
    instructions per element written, 3.0, are eight times those per element read); a repeat of 4 reads a
    quarter of what it writes, a kind of its own in the table (broadcast)."""
    res = aten_probe.elementwise_results(parse_ncu_raw_csv(ELEMENTWISE_EXPORT))
    assert sorted(res) == ["repeat_fp16_g4_d128", "sum_fp32_g8_d128", "transpose_fp16_d128"]
    t, s = res["transpose_fp16_d128"], res["sum_fp32_g8_d128"]
    assert (t["kind"], t["in_elements"], t["out_elements"]) == ("strided", aten_probe.ROWS_ELEMS, aten_probe.ROWS_ELEMS)
    assert t["inst_per_element"] == pytest.approx(2.0)
    assert (s["in_elements"], s["out_elements"]) == (aten_probe.ROWS_ELEMS, aten_probe.ROWS_ELEMS // 8)
    assert s["inst_per_element"] == pytest.approx(3 / 8)  # per element read
    data = {"provenance": {"gpu_name": "NVIDIA H200", "torch": "2.11.0", "ncu": "ncu", "date": "today"},
            "elementwise": res}
    table = aten_probe.code_table([(data, "probe.json")])
    assert "softmax_forward" not in table
    rows = table["elementwise"]
    assert rows["sum_fp32_g8_d128"]["group"] == 8 and rows["sum_fp32_g8_d128"]["inst_per_element"] == pytest.approx(3.0)
    assert rows["transpose_fp16_d128"]["pipes_per_element"] == pytest.approx({"fma": 0.5, "xu": 0.0})
    assert rows["repeat_fp16_g4_d128"]["kind"] == "broadcast"
    assert rows["transpose_fp16_d128"]["kind"] == "strided"


def test_without_ncu_a_probe_says_so_and_writes_nothing(tmp_path, monkeypatch):
    from iosim.kernels import lrc_probe, profiler
    from iosim.kernels.device import HarnessError

    monkeypatch.setattr(profiler, "find_ncu", lambda: None)
    with pytest.raises(HarnessError, match="the ATen probe needs ncu"):
        profiler.run_probe("iosim.kernels.aten_probe", "aten_probe", tmp_path / "out", [], "ATen probe")
    for probe, what in [(aten_probe, "ATen probe"), (lrc_probe, "LRC probe")]:  # the L2 probe asks for a GPU first
        with pytest.raises(HarnessError, match=f"^the {what} needs ncu"):
            probe.probe(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_probe_launch_is_warmed_up_outside_the_profiled_range():
    """Every probe child profiles the same way: one launch outside any range, then one inside the
    profiler range and the NVTX range that names it, each finished before its range closes."""
    from iosim.kernels import profiler

    calls = []
    cuda = SimpleNamespace(
        synchronize=lambda: calls.append("sync"),
        profiler=SimpleNamespace(start=lambda: calls.append("start"), stop=lambda: calls.append("stop")),
        nvtx=SimpleNamespace(range_push=lambda tag: calls.append(f"push {tag}"), range_pop=lambda: calls.append("pop")))
    profiler.profiled_launch(SimpleNamespace(cuda=cuda), "softmax-768", lambda: calls.append("launch"))
    assert calls == ["launch", "sync", "start", "push softmax-768", "launch", "sync", "pop", "stop"]


def test_lrc_probe_tma_variants_read_the_same_buffers():
    """The TMA variants of the LRC probe read the buffers of their .cg twins, in TMA boxes of one load's bytes."""
    from iosim.kernels import lrc_probe

    for k in lrc_probe.KS:
        for variant in ("same", "pairs", "mod2"):
            assert lrc_probe.buffers(f"{variant}_tma", k) == lrc_probe.buffers(variant, k)
    assert lrc_probe.BOX[0] * lrc_probe.BOX[1] == lrc_probe.BLOCK and lrc_probe.BOX[1] <= 256


def test_the_committed_code_table_is_what_the_committed_probes_give():
    """iosim/costs/mixes/aten-sm_90.json is the code table of the four committed probe runs, section by section
    from the first that has it (softmax forward; elementwise code; softmax backward and the crossbar stores from
    the run that counted them), and the random numbers' kernels from the run that probed them: data, not numbers
    typed in."""
    import json
    from pathlib import Path

    from iosim.kernels import aten_probe
    repo = Path(__file__).resolve().parents[1]
    runs = [f"experiments/measurements/h200/{d}/aten_probe.json" for d in ("aten", "aten_elementwise", "aten_bwd")]
    runs.append("experiments/measurements/h100/aten_random/aten_probe.json")
    table = aten_probe.code_table([(json.loads((repo / r).read_text()), r) for r in runs])
    committed = json.loads((repo / "iosim/costs/mixes/aten-sm_90.json").read_text())
    assert table == committed
    assert set(committed) >= {"softmax_forward", "softmax_backward", "elementwise", "elementwise_stores"}
    later = json.loads((repo / runs[-1]).read_text())["elementwise"]  # it probed the fills again: the first run's stay
    assert {e["kind"] for e in committed["elementwise"].values()} >= {"normal", "uniform", "fill"}
    assert committed["elementwise"]["fill_fp16"]["inst_per_element"] == pytest.approx(
        json.loads((repo / runs[1]).read_text())["elementwise"]["fill_fp16"]["inst_executed"] / 2**27)
    assert "fill_fp16" in later
