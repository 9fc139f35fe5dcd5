"""The L2 probe (kernels/l2_probe.py) without a GPU: its pure derivations against hand-computed values, its
reading of a synthetic ncu export, and its two Triton kernels under the interpreter on ragged sizes."""
from __future__ import annotations

import json
import signal

import pytest
from ncu_export import ncu_csv

from iosim.kernels import l2_probe
from iosim.kernels.ncu import parse_ncu_raw_csv

MiB = 2**20


# --------------------------------------------------------------------------- geometry


def test_chunks_are_line_aligned_and_cover_n_once():
    # ceil(1000 / 7) = 143, rounded up to 32 elements: 160; the last CTA gets 1000 - 6·160 = 40
    assert l2_probe.chunk_size(1000, 7) == 160
    assert l2_probe.covered(1000, 7, shared=False) == [(0, 160), (160, 320), (320, 480), (480, 640), (640, 800),
                                                      (800, 960), (960, 1000)]
    # ceil(100 / 7) = 15 -> 32: CTAs 0-3 cover 0..100, CTAs 4-6 nothing
    assert l2_probe.covered(100, 7, shared=False) == [(0, 32), (32, 64), (64, 96), (96, 100)] + [(100, 100)] * 3
    assert l2_probe.covered(100, 3, shared=True) == [(0, 100)] * 3


def test_variant_rejects_bad_values_by_name():
    with pytest.raises(ValueError, match=r"sizes_mib\(=\(\)\)"):
        l2_probe.Variant("x", (), ctas_per_sm=1, passes=0)
    with pytest.raises(ValueError, match=r"ctas_per_sm\(=0\)"):
        l2_probe.Variant("x", (4,), ctas_per_sm=0, passes=0)
    with pytest.raises(ValueError, match=r"passes\(=0\)"):
        l2_probe.Variant("x", (4,), ctas_per_sm=1, passes=0, shared=True)


# --------------------------------------------------------------------------- derivations (pure)


def test_dirty_retained_is_size_minus_dram_writes():
    d = l2_probe.derive(l2_probe.VARIANTS["dirty"], 64 * MiB,
                        {"dram_write_bytes": 14 * MiB, "l2_lookup_write_sectors": 64 * MiB / 32}, ctas=528)
    assert d == {"retained_bytes": 50 * MiB, "write_lookups_over_size": 1.0}


def test_sweep_second_pass_miss_and_ratios():
    # S = 32 MiB read twice (64 MiB requested); 40 MiB from DRAM: the second pass missed 8 of 32 MiB
    d = l2_probe.derive(l2_probe.VARIANTS["sweep"], 32 * MiB,
                        {"dram_read_bytes": 40 * MiB, "xbar_read_bytes": 64 * MiB,
                         "l2_lookup_read_sectors": 64 * MiB / 32}, ctas=264)
    assert d == {"requested_bytes": 64 * MiB, "dram_read_over_size": 1.25, "xbar_over_requested": 1.0,
                 "read_lookups_over_requested": 1.0, "second_pass_miss": 0.25}


def test_shared_read_requests_one_buffer_per_cta_and_missing_counters_stay_none():
    d = l2_probe.derive(l2_probe.VARIANTS["shared"], 16 * MiB,
                        {"dram_read_bytes": 32 * MiB, "xbar_read_bytes": None, "l2_lookup_read_sectors": None},
                        ctas=132)
    assert d == {"requested_bytes": 132 * 16 * MiB, "dram_read_over_size": 2.0, "xbar_over_requested": None,
                 "read_lookups_over_requested": None}


def test_dirty_limit_is_the_median_of_the_plateau_around_the_tail():
    # retained = size up to 24 MiB, then about 30 MiB. Tail (96, 128, 192 MiB) retained 31, 30, 29: ref 30,
    # band 27..33 MiB. 24 MiB (retained 24) is outside; 32..192 MiB are on the plateau, retained sorted
    # 28, 29, 30, 31, 31, 31.5, 32, 32, 32.5: median 31 MiB.
    retained = {4: 4, 8: 8, 16: 16, 24: 24, 32: 28, 40: 32, 48: 32.5, 56: 32, 64: 31.5, 80: 31, 96: 31, 128: 30,
                192: 29}
    limit, plateau = l2_probe.dirty_limit([(s * MiB, r * MiB) for s, r in retained.items()])
    assert limit == 31 * MiB
    assert plateau == tuple(s * MiB for s in (32, 40, 48, 56, 64, 80, 96, 128, 192))


def test_dirty_limit_edge_cases():
    assert l2_probe.dirty_limit([]) == (None, ())
    # two points: the tail is both, median 55, band 49.5..60.5 holds neither: the reference is kept
    assert l2_probe.dirty_limit([(1, 10), (2, 100)]) == (55.0, ())
    # exactly on the band's edge counts: |27 - 30| = 0.1 · 30
    assert l2_probe.dirty_limit([(1, 27), (2, 30), (3, 30), (4, 30)]) == (30.0, (1, 2, 3, 4))


def test_half_miss_size_interpolates_between_the_sizes_around_one_half():
    # miss 0.2 at 32, 0.8 at 48: 0.5 is half way, 40
    assert l2_probe.half_miss_size([(64, 1.0), (16, 0.0), (32, 0.2), (48, 0.8)]) == 40.0
    assert l2_probe.half_miss_size([(16, 0.0), (32, 0.1)]) is None
    assert l2_probe.half_miss_size([(16, 0.6), (32, 1.0)]) == 16.0


# --------------------------------------------------------------------------- a synthetic ncu export


COLUMNS = ("dram__bytes_read.sum", "dram__bytes_write.sum", "gpu__time_duration.sum", "lts__t_bytes.sum",
           "lts__t_sector_hit_rate.pct", "l1tex__m_xbar2l1tex_read_bytes.sum",
           "lts__t_sectors_srcunit_tex_op_read.sum", "lts__t_sectors_srcunit_tex_op_write.sum")
UNITS = ("byte", "byte", "ns", "byte", "%", "byte", "sector", "sector")




# per kernel: DRAM read, DRAM write, ns, lts bytes, hit %, xbar read, lookup read sectors, lookup write sectors
EXPORT = ncu_csv(COLUMNS, UNITS, [
    ("chunk_read", "l2-sweep-16777216", 264, (20 * MiB, 0, 30_000, 32 * MiB, 37.5, 32 * MiB, MiB, 0)),
    ("chunk_write", "l2-dirty-8388608", 528, (0, 2 * MiB, 4_000, 8 * MiB, 100, 0, 0, 262_144)),
    ("elementwise", "", 128, (4_096, 0, 2_000, 4_096, 0, 4_096, 128, 0)),  # untagged: not the probe's
    ("chunk_read", "iosim-case-0", 264, (1, 0, 1, 1, 0, 1, 1, 0)),  # another tool's tag
    ("chunk_read", "l2-shared-16777216", 132, (32 * MiB, 0, 900_000, 132 * 16 * MiB, 98, 132 * 16 * MiB,
                                               66 * 16 * MiB // 32, 0)),  # lookups: half the requests
    ("chunk_write", "l2-dirty-4194304", 528, (0, 0, 2_500, 4 * MiB, 100, 0, 0, 131_072)),
], block=256)


def test_results_from_an_export_by_nvtx_tag():
    res = l2_probe.results(parse_ncu_raw_csv(EXPORT))
    assert sorted(res) == ["dirty", "shared", "sweep"]
    assert [(r["size_bytes"], r["ctas"], r["retained_bytes"]) for r in res["dirty"]] == [
        (4 * MiB, 528, 4 * MiB), (8 * MiB, 528, 6 * MiB)]
    assert res["dirty"][1]["write_lookups_over_size"] == 1.0 and res["dirty"][1]["duration_s"] == pytest.approx(4e-6)
    (sweep,) = res["sweep"]
    assert (sweep["ctas"], sweep["second_pass_miss"], sweep["xbar_over_requested"]) == (264, 0.25, 1.0)
    assert sweep["l2_lookup_read_sectors"] == MiB and sweep["read_lookups_over_requested"] == 1.0
    (shared,) = res["shared"]
    assert (shared["ctas"], shared["requested_bytes"], shared["dram_read_over_size"]) == (132, 132 * 16 * MiB, 2.0)
    assert shared["read_lookups_over_requested"] == 0.5 and "second_pass_miss" not in shared


def test_summary_from_an_export_is_plain_json():
    s = l2_probe.summary(l2_probe.results(parse_ncu_raw_csv(EXPORT)))
    # two dirty sizes, retained 4 and 6 MiB: the tail is both, median 5 MiB, band 4.5..5.5 holds neither
    assert s == {"dirty_limit_bytes": 5 * MiB, "dirty_plateau_sizes": [],
                 "sweep_curve": [{"size_bytes": 16 * MiB, "second_pass_miss": 0.25}], "sweep_half_miss_bytes": None,
                 "shared_curve": [{"size_bytes": 16 * MiB, "dram_read_over_size": 2.0}]}
    assert json.loads(json.dumps(s)) == s


def test_a_shared_sweep_misses_its_second_pass_by_dram_reads_past_one_buffer():
    """Every CTA reads the whole buffer twice: the buffer comes from DRAM once a pass at most, so DRAM
    reads of 1.5 buffers mean half the second pass missed, whatever the number of CTAs."""
    rows = parse_ncu_raw_csv(ncu_csv(COLUMNS, UNITS, [
        ("chunk_read", f"l2-sharedsweep-{16 * MiB}", 132, (16 * MiB, 0, 9e5, 1, 99, 2 * 132 * 16 * MiB, 1, 0)),
        ("chunk_read", f"l2-sharedsweep-{32 * MiB}", 132, (48 * MiB, 0, 9e5, 1, 50, 2 * 132 * 32 * MiB, 1, 0)),
        ("chunk_read", f"l2-sharedsweep-{48 * MiB}", 132, (96 * MiB, 0, 9e5, 1, 0, 2 * 132 * 48 * MiB, 1, 0)),
    ], block=256))
    res = l2_probe.results(rows)
    assert [r["second_pass_miss"] for r in res["sharedsweep"]] == [0.0, 0.5, 1.0]
    assert res["sharedsweep"][0]["requested_bytes"] == 2 * 132 * 16 * MiB
    assert [r["xbar_over_requested"] for r in res["sharedsweep"]] == [1.0] * 3
    s = l2_probe.summary(res)
    assert s["shared_sweep_half_miss_bytes"] == 32 * MiB
    assert [p["second_pass_miss"] for p in s["shared_sweep_curve"]] == [0.0, 0.5, 1.0]
    assert l2_probe.report({"results": res, "summary": s})[-1].endswith("shared sweep half-miss size 32.0 MiB")


# --------------------------------------------------------------------------- kernels (interpreter on CPU)


@pytest.mark.parametrize(("n", "grid"), [(1000, 7), (100, 7)])  # ragged; with (100, 7) CTAs 4-6 cover nothing
def test_write_kernel_writes_exactly_the_first_n_elements(n, grid):
    torch = pytest.importorskip("torch")
    dst = torch.full((n + 100,), -1.0, dtype=torch.float32)
    l2_probe.write_chunks(dst, n, grid, block=64, num_warps=1)
    assert torch.equal(dst[:n], torch.arange(n, dtype=torch.float32))  # integers < 2**24 are exact in fp32
    assert torch.equal(dst[n:], torch.full((100,), -1.0))


@pytest.mark.parametrize(("n", "grid", "shared", "passes"), [(1000, 7, False, 2), (100, 7, False, 2),
                                                             (1000, 3, True, 1)])
def test_read_kernel_stores_passes_times_each_ctas_sum(n, grid, shared, passes):
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(n + 50, generator=gen, dtype=torch.float32)
    out = torch.full((grid + 1,), 7.0, dtype=torch.float32)
    l2_probe.read_chunks(src, out, n, grid, passes, shared, block=64, num_warps=1)
    want = torch.tensor([passes * src[a:b].double().sum().item() for a, b in l2_probe.covered(n, grid, shared)],
                        dtype=torch.float64)
    # fp32: each of the 64 lanes adds at most 16 values (|x| < 5), then a 64-way tree sum; partial sums stay
    # below ~100, so some 25 roundings of at most 100 · 2**-24 ≈ 6e-6 each: < 3e-4 in all
    assert torch.allclose(out[:grid].double(), want, rtol=0, atol=3e-4)
    assert out[grid].item() == 7.0  # nothing stored past the grid


def test_wrappers_reject_sizes_past_the_buffers():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"n\(=11\)"):
        l2_probe.write_chunks(torch.empty(10), 11, 2)
    with pytest.raises(ValueError, match=r"grid\(=3\)"):
        l2_probe.read_chunks(torch.empty(10), torch.empty(2), 10, 3, 1, False)


# --------------------------------------------------------------------------- CLI


def test_cli_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the probe would run")
    old = signal.getsignal(signal.SIGTERM)
    try:
        rc = l2_probe.main(["--out", str(tmp_path / "l2")])
    finally:
        signal.signal(signal.SIGTERM, old)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: HarnessError: no CUDA GPU") and err.count("\n") == 1
    assert not (tmp_path / "l2").exists()


def test_cli_needs_out():
    with pytest.raises(SystemExit) as e:
        l2_probe.main([])
    assert e.value.code == 2


def test_cli_prints_each_launch_and_the_summary(tmp_path, capsys, monkeypatch):
    res = l2_probe.results(parse_ncu_raw_csv(EXPORT))
    monkeypatch.setattr(l2_probe, "probe", lambda out: {"results": res, "summary": l2_probe.summary(res)})
    old = signal.getsignal(signal.SIGTERM)
    try:
        assert l2_probe.main(["--out", str(tmp_path)]) == 0
    finally:
        signal.signal(signal.SIGTERM, old)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "dirty      4 MiB: DRAM write    0.00 MiB, retained   4.00 MiB,     2.5 us"
    assert lines[2] == "sweep     16 MiB: DRAM read 1.250 x size, second-pass miss 0.250,    30.0 us"
    assert lines[3] == "shared    16 MiB: DRAM read 2.000 x size,   900.0 us"
    assert lines[4:] == ["dirty limit 5.00 MiB, sweep half-miss size -", f"wrote {tmp_path / 'l2_probe.json'}"]
