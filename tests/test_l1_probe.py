"""The L1 probe (kernels/l1_probe.py) without a GPU: its kernel under the interpreter against the sums it must
leave, its sizes and the two replacement policies' hit rates in closed form, and a launch's derivation by hand."""
from __future__ import annotations

import math

import pytest

from iosim.kernels import l1_probe


def test_each_cta_sums_its_own_chunk_passes_times():
    torch = pytest.importorskip("torch")
    chunk, ctas, passes = 2 * l1_probe.BLOCK, 3, 2
    buf = torch.rand(chunk * ctas + 100, dtype=torch.float32)
    out = torch.zeros(ctas)
    l1_probe.run(buf, out, chunk, ctas, passes)
    want = buf[:chunk * ctas].double().reshape(ctas, chunk).sum(1) * passes
    assert torch.allclose(out.double(), want, rtol=1e-5)


def test_the_product_after_the_loop_adds_its_sum_and_nothing_else():
    """With a product (the shared memory that sets the carve-out) each CTA's sum gains the sum of A @ B, A and B the
    tile read as M × K and K × N, in float64."""
    torch = pytest.importorskip("torch")
    chunk, ctas, passes, (m, k, n) = l1_probe.BLOCK, 2, 3, (16, 32, 16)
    buf = torch.rand(chunk * ctas, dtype=torch.float32)
    tile = (torch.rand(m * k) - 0.5).to(torch.float16)
    out = torch.zeros(ctas)
    l1_probe.run(buf, out, chunk, ctas, passes, tile, (m, k, n))
    t = tile.double()
    want = buf.double().reshape(ctas, chunk).sum(1) * passes + (t.reshape(m, k) @ t[:k * n].reshape(k, n)).sum()
    assert torch.allclose(out.double(), want, rtol=1e-4)
    with pytest.raises(ValueError, match=r"product\(=\(16, 24, 16\)\)"):
        l1_probe.run(buf, out, chunk, ctas, passes, tile, (16, 24, 16))
    with pytest.raises(ValueError, match=r"tile must hold"):
        l1_probe.run(buf, out, chunk, ctas, passes, tile[:100], (m, k, n))


def test_run_rejects_bad_chunks_and_small_buffers_by_name():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"chunk\(=100\)"):
        l1_probe.run(torch.empty(4096), torch.empty(4), 100, 2, 1)
    with pytest.raises(ValueError, match=r"buf.numel\(\)"):
        l1_probe.run(torch.empty(10), torch.empty(4), l1_probe.BLOCK, 2, 1)


def test_chunks_split_an_sms_bytes_in_whole_blocks():
    block = l1_probe.BLOCK * 4  # bytes
    assert l1_probe.chunk_elems(64 * 1024, 1) == 64 * 1024 // 4
    assert l1_probe.chunk_elems(64 * 1024, 2) == 32 * 1024 // 4
    assert l1_probe.chunk_elems(block + 1, 1) == 2 * l1_probe.BLOCK  # rounded up to a whole block
    with pytest.raises(ValueError, match=r"ctas_per_sm\(=0\)"):
        l1_probe.chunk_elems(1024, 0)


def test_the_two_policies_in_closed_form():
    """A cycle that fits hits under both; beyond the L1, LRU never hits and random replacement keeps exp(-m r)."""
    assert l1_probe.policies(100, 124) == {"lru": 1.0, "random": 1.0}
    got = l1_probe.policies(2.0, 1.0)
    m = 1 - got["random"]
    assert got["lru"] == 0.0 and m == pytest.approx(1 - math.exp(-2 * m)) and 0.75 < m < 0.85
    assert l1_probe.policies(1.4, 1.0)["random"] == pytest.approx(0.5, abs=0.05)  # sglang's frames: half hit


def test_a_launchs_reuse_hit_rate_by_hand():
    """16 passes: the first load of each line cannot hit, so 15/16 of the sectors can."""
    row = {"l1_global_load_sectors": 1600.0, "l1_global_load_hit_sectors": 750.0}
    got = l1_probe.derive(2, 65536, 16, row)
    assert got == {"ctas_per_sm": 2, "sm_bytes": 65536, "passes": 16, "carveout_pct": None, "product": "",
                   "reuse_hit": 750 / 1500}
    assert l1_probe.derive(1, 1, 16, {"l1_global_load_sectors": None})["reuse_hit"] is None


def test_the_committed_export_reads_back_into_the_committed_results():
    """The H100 run's raw ncu export (experiments/measurements/h100/l1_probe/run2) parses into the results the probe
    wrote beside it, carve-out included (32 KiB), and its hits fall from all to none past the L1 that leaves."""
    import json
    from pathlib import Path

    from iosim.kernels.ncu import parse_ncu_raw_csv
    data = Path(__file__).resolve().parents[1] / "experiments/measurements/h100/l1_probe/run2"
    want = json.loads((data / "l1_probe.json").read_text())["results"]
    got = l1_probe.results(parse_ncu_raw_csv((data / "l1_probe-raw.csv").read_text()))
    assert {r.pop("carveout_pct") for r in got} == {None}  # run before the carve-out series: the driver's default
    assert {r.pop("product") for r in got} == {""} and {r.pop("loads") for r in got} == {"global"}
    assert got == want
    one = {r["sm_bytes"] // 1024: r for r in want if r["ctas_per_sm"] == 1}
    assert {r["shared_mem_config_bytes"] for r in want} == {32 * 1024}
    assert one[192]["reuse_hit"] == pytest.approx(1.0, abs=1e-3) and one[384]["reuse_hit"] < 0.01


def test_tags_name_the_product_and_run_3s_carveout_and_runs_sort_by_them():
    """A launch's NVTX tag names the product after its loop (its shared memory); run 3's named the carve-out it asked
    for instead, runs 1-2 neither."""
    from pathlib import Path

    from iosim.kernels.ncu import parse_ncu_raw_csv
    data = Path(__file__).resolve().parents[1] / "experiments/measurements/h100/l1_probe/run2"
    rows = parse_ncu_raw_csv((data / "l1_probe-raw.csv").read_text())[:3]
    for r, tag in zip(rows, (l1_probe.TAG.format(1, 65536, 16, 64, 64, 64), "l1-2-65536-16-k57",
                             l1_probe.TAG.format(1, 32768, 16, 0, 0, 0))):
        r["nvtx"] = f"Default:{tag}"
    got = [(r["product"], r["carveout_pct"], r["ctas_per_sm"], r["sm_bytes"]) for r in l1_probe.results(rows)]
    assert got == [("", None, 1, 32768), ("", 57, 2, 65536), ("64x64x64", None, 1, 65536)]


def test_run_3s_committed_export_reads_back_and_its_carveout_was_not_taken():
    """Run 3 asked for 64 and 132 KiB carve-outs; the driver kept 32 KiB for all 90 launches."""
    import json
    from pathlib import Path

    from iosim.kernels.ncu import parse_ncu_raw_csv
    data = Path(__file__).resolve().parents[1] / "experiments/measurements/h100/l1_probe/run3"
    want = json.loads((data / "l1_probe.json").read_text())["results"]
    got = l1_probe.results(parse_ncu_raw_csv((data / "l1_probe-raw.csv").read_text()))
    assert {r.pop("product") for r in got} == {""} and {r.pop("loads") for r in got} == {"global"}
    assert sorted(got, key=str) == sorted(want, key=str) and len(got) == 90
    assert {r["shared_mem_config_bytes"] for r in got} == {32 * 1024}


def test_run_4s_products_set_the_carveouts_they_were_meant_to():
    """Run 4: the loop alone got 32 KiB, after the 8 KiB-a-CTA product 132 KiB, after the 80 KiB one 228 KiB; its
    export reads back into its results, and at 124 KiB a cycle of 1.03 x the L1 keeps most (two CTAs an SM)."""
    import json
    from pathlib import Path

    from iosim.kernels.ncu import parse_ncu_raw_csv
    data = Path(__file__).resolve().parents[1] / "experiments/measurements/h100/l1_probe/run4"
    want = json.loads((data / "l1_probe.json").read_text())["results"]
    got = l1_probe.results(parse_ncu_raw_csv((data / "l1_probe-raw.csv").read_text()))
    assert {r.pop("loads") for r in got} == {"global"} and got == want
    by = {}
    for r in got:
        by.setdefault(r["product"], set()).add(r["shared_mem_config_bytes"] // 1024)
    assert by == {"": {32}, "64x64x64": {132}, "16x512x64": {228}}
    one = {(r["ctas_per_sm"], r["sm_bytes"] // 1024): r["reuse_hit"] for r in got if r["product"] == "64x64x64"}
    assert 0.8 < one[(2, 128)] < 0.9 and one[(2, 512)] < 0.01


def test_the_local_cycle_is_ptx_of_its_words_and_passes_and_refuses_none():
    asm = l1_probe.local_asm(24, 16)
    assert ".local .align 16 .b32 fr[64];" in asm and ".b32 fr[100];" in l1_probe.local_asm(100, 2) and "ld.local.u32" in asm and "st.local.u32" in asm
    assert "add.u32 %cn, $2, 24;" in asm and asm.count("setp.lt.u32 %cq, %ci, %cn;") == 2 and "%cp, 16;" in asm
    # rewritten: each pass stores every word it loads back, after its load; plain: the first loop alone stores
    rw = l1_probe.local_asm(24, 16, rewrite=True)
    assert asm.count("st.local.u32") == 1 and rw.count("st.local.u32") == 2
    assert rw.index("ld.local.u32 %cx, [%cd];") < rw.index("st.local.u32 [%cd], %ca;")
    with pytest.raises(ValueError, match=r"words\(=0\)"):
        l1_probe.local_asm(0, 16)
    torch = pytest.importorskip("torch")
    out, zero = torch.empty(2 * 128, dtype=torch.int32), torch.zeros(128, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"product\(=\(16, 24, 16\)\)"):  # refused before any launch, as run's
        l1_probe.run_local(out, zero, 8192, 2, 1, 16, torch.empty(1024, dtype=torch.float16), (16, 24, 16))
    with pytest.raises(ValueError, match=r"out.numel\(\)\(=256\) must be >= 512"):
        l1_probe.run_local(out, zero, 8192, 2, 2, 16)


def test_local_launches_read_their_own_counters():
    """A local-memory launch's tag gives its row the local loads' sectors and hits, and its hit rate is theirs."""
    from pathlib import Path

    from iosim.kernels.ncu import parse_ncu_raw_csv
    data = Path(__file__).resolve().parents[1] / "experiments/measurements/h100/l1_probe/run4"
    row = parse_ncu_raw_csv((data / "l1_probe-raw.csv").read_text())[0]
    row["nvtx"] = "Default:" + l1_probe.LOCAL_TAG.format(2, 24 * 1024, 16, 16, 512, 64, "", "")
    row[l1_probe.LOCAL_METRICS[0]], row[l1_probe.LOCAL_METRICS[1]] = 1600.0, 750.0
    rewritten = dict(row, nvtx="Default:" + l1_probe.LOCAL_TAG.format(2, 24 * 1024, 16, 16, 512, 64, "-rw", ""))
    wide = dict(row, nvtx="Default:" + l1_probe.LOCAL_TAG.format(1, 24 * 1024, 16, 16, 512, 64, "-rw", "-w8"))
    got, rw, rw8 = l1_probe.results([wide, rewritten, row])  # sorted: the plain cycle first, the wide CTAs last
    assert got["loads"] == "local" and got["product"] == "16x512x64" and got["sm_bytes"] == 24 * 1024
    assert got["reuse_hit"] == 750 / 1500 and got["l1_local_load_sectors"] == 1600.0
    assert not got["rewrite"] and rw["rewrite"] and rw["reuse_hit"] == got["reuse_hit"]
    assert got["warps"] == rw["warps"] == 4 and rw8["warps"] == 8 and rw8["ctas_per_sm"] == 1 and rw8["rewrite"]


def test_a_probe_asks_for_its_own_metrics_that_ncu_knows_beyond_the_harnesss(monkeypatch, tmp_path):
    """The local loads' counters are not among the harness's metrics: a counter probe still asks ncu for them where
    ncu knows them, and lists them missing where it does not (ncu fails a whole run on a name it does not know)."""
    from dataclasses import dataclass

    from iosim.kernels import harness, profiler

    @dataclass
    class Prov:
        metrics_missing: tuple

    asked = {}
    monkeypatch.setattr(profiler, "require_ncu", lambda what: "ncu")
    monkeypatch.setattr(harness, "provenance", lambda v, counters, metrics_missing: Prov(tuple(metrics_missing)))
    monkeypatch.setattr(profiler, "ncu_version", lambda ncu: "2025.3")
    monkeypatch.setattr(profiler, "run_probe", lambda *a, **k: asked.setdefault("metrics", a[3]) and "")
    monkeypatch.setattr(profiler, "parse_ncu_raw_csv", lambda text: [])
    known = {profiler.base_name(m) for m in profiler.BASE_METRICS} | {"l1tex__t_sectors_pipe_lsu_mem_local_op_ld"}
    monkeypatch.setattr(profiler, "query_metrics", lambda ncu: known)
    keep, missing, prov, rows = profiler.run_counter_probe("m", "s", tmp_path, l1_probe.LOCAL_METRICS, "test")
    assert l1_probe.LOCAL_METRICS[0] in keep and l1_probe.LOCAL_METRICS[0] in asked["metrics"]
    assert missing == [l1_probe.LOCAL_METRICS[1]] and prov == {"metrics_missing": (l1_probe.LOCAL_METRICS[1],)}


def test_the_profiles_spill_curve_is_the_rewritten_local_cycles_of_the_committed_runs():
    """The calibrated profiles' ``l1_cycle_hits`` are what :func:`cycle_curve` derives from the committed local-memory
    runs whose passes store each word back (no row typed by hand), and the L1 keeps such cycles as the runs say: all of
    one well inside it, part of one beyond, less the more it exceeds it, none of one four times its size."""
    import json
    from pathlib import Path

    from iosim.hardware.profile import load_profile
    base = Path(__file__).resolve().parents[1] / "experiments/measurements/h100/l1_probe"
    runs = [json.loads((base / f"run{n}/l1_probe.json").read_text()) for n in (8, 9)]
    l1 = load_profile("h100").l1_bytes
    rows = l1_probe.cycle_curve(runs, l1, rewrite=True)
    for gpu in ("h100", "h200"):
        got = load_profile(gpu).l1_cycle_hits
        assert [(c // 1024, r, h) for c, r, h in got] == [tuple(row) for row in rows]
    by = {}
    for c, r, h in rows:
        by.setdefault(c, []).append((r, h))
    assert set(by) == {28, 124, 224}
    for curve in by.values():
        assert all(h1 <= h0 for (_, h0), (_, h1) in zip(curve, curve[1:]))  # falls as the cycle grows
        assert curve[0][1] == 1.0 and curve[-1][1] <= 0.001
    # the two runs agree: each alone gives the mean's rows within 0.01; up to 1.81 x the L1, stores that refresh the
    # lines keep as much as the plain cycle (runs 8-9's other series) or more (beyond, both keep little or nothing)
    for run in runs:
        assert all(abs(a[2] - b[2]) <= 0.01 for a, b in zip(l1_probe.cycle_curve([run], l1, rewrite=True), rows))
    plain = {(c, r): h for c, r, h in l1_probe.cycle_curve(runs, l1)}
    assert all(h >= plain[(c, r)] - 0.02 for c, r, h in rows if r <= 1.81)
    assert sum(h - plain[(c, r)] for c, r, h in rows) > 1.0


def test_one_cta_of_eight_warps_keeps_what_two_of_four_keep():
    """Runs 10-11 ran the stored-back local cycle as one CTA an SM of eight warps too: at the carve-outs both shapes
    got (28 and 224 KiB of L1) the L1 keeps the same share of the cycle within 0.02, so the profile's two-CTA curve
    stands for a kernel of one 8-warp CTA an SM (the same threads an SM). The 8-warp CTA with 8 KiB of shared memory
    got a 100 KiB carve-out (156 KiB of L1), below the 132 KiB the committed kernels of 8-48 KiB all got."""
    import json
    from pathlib import Path

    base = Path(__file__).resolve().parents[1] / "experiments/measurements/h100/l1_probe"
    runs = [json.loads((base / f"run{n}/l1_probe.json").read_text()) for n in (10, 11)]
    l1 = 256 * 1024
    wide = {(c, r): h for c, r, h in l1_probe.cycle_curve(runs, l1, rewrite=True, ctas_per_sm=1, warps=8)}
    narrow = {(c, r): h for c, r, h in l1_probe.cycle_curve(runs, l1, rewrite=True)}
    both = set(wide) & set(narrow)
    assert {c for c, _ in both} == {28, 224} and len(both) == 20
    assert all(abs(wide[k] - narrow[k]) <= 0.02 for k in both)
    assert {c for c, _ in wide} == {28, 156, 224} and {c for c, _ in narrow} == {28, 124, 224}
