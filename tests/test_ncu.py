"""Reading Nsight Compute's raw CSV export (kernels/ncu.py) from a committed fixture; no GPU, no ncu."""
from __future__ import annotations

import pytest

from iosim.kernels import ncu

# Cut from a real `ncu --import R --csv --page raw --print-units base` (H200, ncu 2025.3.1, 2026-11-25):
# the columns we read plus a few, three cases. Case 1 is a forward + backward whose backward kernels
# (IDs 2-5) ran on autograd's thread, outside the push/pop range, so their NVTX columns are empty.
NCU_RAW = '''"ID","Process ID","Process Name","Host Name","thread Domain:Push/Pop_Range:PL_Type:PL_Value:CLR_Type:Color:Msg_Type:Msg","Id:Domain:Start/Stop_Range:PL_Type:PL_Value:CLR_Type:Color:Msg_Type:Msg","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","dram__bytes_read.avg","dram__bytes_read.sum","dram__bytes_write.sum","gpu__time_duration.sum","launch__registers_per_thread","launch__shared_mem_per_block_dynamic","launch__shared_mem_per_block_static","lts__t_bytes.sum","lts__t_sector_hit_rate.pct"
"","","","","","","","","","","","","","byte","byte","byte","ns","register/thread","byte/block","byte/block","byte","%"
"0","833","python3.12","127.0.0.1","833  ""<default domain>:iosim-case-0:none:none:none:none:none:none"" ","","flash2_fwd","1","7","(128, 1, 1)","(4, 4, 1)","0","9.0","17,178.67","824,576","0","15,424","237","49,152","0","3,063,648","51.65"
"1","833","python3.12","127.0.0.1","833  ""<default domain>:iosim-case-1:none:none:none:none:none:none"" ","","flash2_fwd","1","7","(128, 1, 1)","(4, 4, 1)","0","9.0","17,184","824,832","0","14,816","237","49,152","0","3,098,176","51.34"
"2","833","python3.12","127.0.0.1","","","void at::vectorized_elementwise_kernel<4, at::FillFunctor<float>, std::array<char *, 1>>(int, T2, T3)","1","7","(128, 1, 1)","(128, 1, 1)","0","9.0","85.33","4,096","0","1,920","16","0","0","1,015,392","92.91"
"3","833","python3.12","127.0.0.1","","","flash2_bwd_pre","1","7","(128, 1, 1)","(8, 4, 1)","0","9.0","11,056","530,688","0","2,912","32","256","0","1,034,976","13.94"
"4","833","python3.12","127.0.0.1","","","flash2_bwd","1","7","(128, 1, 1)","(4, 4, 1)","0","9.0","34,080","1,635,840","0","132,064","255","82,432","0","33,987,680","92.69"
"5","833","python3.12","127.0.0.1","","","void at::vectorized_elementwise_kernel<8, at::float16_copy_kernel_cuda(at::TensorIteratorBase &)::[lambda(float) (instance 1)], std::array<char *, 2>>(int, T2, T3)","1","7","(128, 1, 1)","(128, 1, 1)","0","9.0","11,029.33","529,408","0","2,464","32","0","0","1,437,024","39.53"
"6","833","python3.12","127.0.0.1","833  ""<default domain>:iosim-case-2:none:none:none:none:none:none"" ","","void at::vectorized_elementwise_kernel<4, at::FillFunctor<float>, std::array<char *, 1>>(int, T2, T3)","1","7","(128, 1, 1)","(128, 1, 1)","0","9.0","80","3,840","0","1,824","16","0","0","1,036,928","92.02"
'''


def test_parse_ncu_raw_csv_reads_base_units():
    rows = ncu.parse_ncu_raw_csv("==PROF== Disconnected from process 833\n" + NCU_RAW)
    assert [r["id"] for r in rows] == list(range(7))
    first = ncu.kernel_counters(rows[0])
    assert first.name == "flash2_fwd"
    assert first.dram_read_bytes == 824_576 and first.l2_bytes == 3_063_648  # thousands separators gone
    assert first.duration_s == pytest.approx(15.424e-6)  # "ns"
    assert first.l2_hit_rate == 51.65
    assert (first.grid, first.block, first.registers, first.shared_bytes) == ((4, 4, 1), (128, 1, 1), 237, 49_152)


def test_every_base_metric_is_in_the_fixture_and_the_new_counters_read_as_none():
    header = NCU_RAW.splitlines()[0]
    assert all(f'"{metric}"' in header for metric in ncu.BASE_METRICS)
    first = ncu.kernel_counters(ncu.parse_ncu_raw_csv(NCU_RAW)[0])
    assert (first.xbar_read_bytes, first.inst_executed, first.inst_pipes, first.sm_clock_hz) == (None,) * 4
    assert ncu.counters_by_case(ncu.parse_ncu_raw_csv(NCU_RAW))[1].xbar_read_bytes is None


# The fixture's first kernel with the counters added for the H200 runs, as ncu would print them in base
# units (synthetic: no GPU here). Rates come as cycle/nsecond; an unknown column is ignored.
NEW = {"l1tex__m_xbar2l1tex_read_bytes.sum": ("byte", "2,000,000"),
       "l1tex__m_l1tex2xbar_write_bytes.sum": ("byte", "65,536"),
       "lts__t_sectors_srcunit_tex_op_read.sum": ("sector", "62,500"),
       "lts__t_sectors_srcunit_tex_op_write.sum": ("sector", "2,048"),
       "lts__t_sectors_srcunit_tex_op_atom.sum": ("sector", "n/a"),
       "lrc__xbar2lrc_sectors_op_read.sum": ("sector", "62,500"),
       "lrc__lrc2lts_sectors_op_read.sum": ("sector", "31,250"),
       "smsp__inst_executed.sum": ("inst", "1,234,567"),
       "smsp__inst_executed_pipe_tensor_op_gmma.sum": ("inst", "0"),
       "smsp__inst_executed_pipe_tensor.sum": ("inst", "65,536"),
       "smsp__inst_executed_pipe_fma.sum": ("inst", "100,000"),
       "l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum": ("byte", "0"),
       "l1tex__t_bytes_pipe_lsu_mem_local_op_st.sum": ("byte", "512"),
       "sm__warps_active.avg.pct_of_peak_sustained_active": ("%", "12.5"),
       "launch__occupancy_limit_registers": ("block", "1"),
       "sm__cycles_elapsed.avg.per_second": ("cycle/nsecond", "1.755"),
       "sm__cycles_elapsed.max": ("cycle", "27,100"),
       "l1tex__data_pipe_lsu_wavefronts_mem_shared.sum": ("", "40,960"),
       "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum": ("", "32,768"),
       "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum": ("", "64"),
       "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum": ("sector", "9,000"),
       "l1tex__t_sectors_pipe_lsu_mem_global_op_ld_lookup_hit.sum": ("sector", "6,000"),
       "launch__shared_mem_config_size": ("byte", "135,168"),
       "zz__some_future_metric.sum": ("byte", "7")}


def _with_new_columns() -> str:
    header, units, row = NCU_RAW.splitlines()[:3]
    names = ",".join(f'"{m}"' for m in NEW)
    return "\n".join([f"{header},{names}", units + "," + ",".join(f'"{u}"' for u, _ in NEW.values()),
                      row + "," + ",".join(f'"{v}"' for _, v in NEW.values())])


def test_the_new_counters_are_read_and_missing_ones_are_none():
    k = ncu.kernel_counters(ncu.parse_ncu_raw_csv(_with_new_columns())[0])
    assert (k.xbar_read_bytes, k.xbar_write_bytes) == (2_000_000, 65_536)
    assert (k.l2_lookup_read_sectors, k.l2_lookup_read_bytes) == (62_500, 62_500 * 32)
    assert (k.l2_lookup_write_sectors, k.l2_lookup_write_bytes) == (2_048, 2_048 * 32)
    assert k.l2_lookup_atom_sectors is None and k.l2_lookup_red_sectors is None  # n/a, and no column
    assert (k.lrc_in_sectors, k.lrc_out_sectors) == (62_500, 31_250)
    assert k.inst_executed == 1_234_567
    assert k.inst_pipes == {"tensor": 65_536, "tensor_op_gmma": 0, "fma": 100_000}
    assert (k.local_load_bytes, k.local_store_bytes) == (0, 512)
    assert k.achieved_occupancy_pct == 12.5 and k.occupancy_limit_registers == 1
    assert k.occupancy_limit_shared_mem is None
    assert k.sm_clock_hz == pytest.approx(1.755e9) and k.cycles == 27_100
    assert k.shared_wavefronts == 40_960 and k.shared_ops == {"ld": 32_768, "st_conflicts": 64}
    assert (k.l1_global_load_sectors, k.l1_global_load_hit_sectors) == (9_000, 6_000)
    assert k.shared_mem_config_bytes == 132 * 1024
    case = ncu.counters_by_case(ncu.parse_ncu_raw_csv(_with_new_columns()))[0]
    assert (case.xbar_read_bytes, case.inst_executed, case.l2_lookup_atom_sectors) == (2_000_000, 1_234_567, None)
    assert case.shared_wavefronts == 40_960


QUERY = """Device NVIDIA H200 (GH100)
------------------------------------------------------------------------------------------------------------
Metric Name                                       Metric Description
dram__bytes_read                                  # of bytes read from DRAM
l1tex__m_xbar2l1tex_read_bytes                    # of bytes read from L2 into L1TEX M-Stage
lts__t_sectors_srcunit_tex_op_read                # of LTS sectors from unit TEX for reads
lrc__sectors_op_read                              # of sectors read through the LRC
sm__cycles_elapsed                                # of cycles elapsed on SM
smsp__inst_executed                               # of warp instructions executed
smsp__inst_executed_pipe_tensor                   # of warp instructions executed by tensor pipe
sm__warps_active                                  cumulative # of warps in flight
"""


def test_only_metrics_the_gpu_lists_are_asked_and_the_rest_reported_missing():
    available = ncu.parse_query_metrics(QUERY)
    assert "l1tex__m_xbar2l1tex_read_bytes" in available and "Device" not in available and "Metric" not in available
    metrics, missing = ncu.select_metrics(available)
    assert metrics[:len(ncu.BASE_METRICS)] == ncu.BASE_METRICS
    for m in ("l1tex__m_xbar2l1tex_read_bytes.sum", "sm__cycles_elapsed.avg.per_second", "sm__cycles_elapsed.max",
              "sm__warps_active.avg.pct_of_peak_sustained_active", "smsp__inst_executed_pipe_tensor.sum",
              "launch__occupancy_limit_registers", "lrc__sectors_op_read.sum"):
        assert m in metrics, m
    assert "smsp__inst_executed_pipe_tensor_op_gmma.sum" in missing and "l1tex__m_l1tex2xbar_write_bytes.sum" in missing
    assert not set(metrics) & set(missing)
    # No list (the query failed): the base metrics only, every extra reported missing.
    assert ncu.select_metrics(set()) == (ncu.BASE_METRICS, ncu.EXTRA_METRICS)


def test_kernels_are_summed_per_case_and_untagged_backward_kernels_join_their_forward():
    by_case = ncu.counters_by_case(ncu.parse_ncu_raw_csv(NCU_RAW))
    assert sorted(by_case) == [0, 1, 2]
    assert [k.name for k in by_case[0].kernels] == ["flash2_fwd"]
    fwd_bwd = by_case[1]
    names = [k.name.split("<")[0] for k in fwd_bwd.kernels]
    assert names == ["flash2_fwd", "void at::vectorized_elementwise_kernel", "flash2_bwd_pre", "flash2_bwd",
                     "void at::vectorized_elementwise_kernel"]
    assert fwd_bwd.dram_read_bytes == 824_832 + 4_096 + 530_688 + 1_635_840 + 529_408
    assert fwd_bwd.duration_s == pytest.approx((14_816 + 1_920 + 2_912 + 132_064 + 2_464) * 1e-9)
    weighted = (51.34 * 3_098_176 + 92.91 * 1_015_392 + 13.94 * 1_034_976 + 92.69 * 33_987_680 + 39.53 * 1_437_024)
    assert fwd_bwd.l2_hit_rate == pytest.approx(weighted / fwd_bwd.l2_bytes)


def test_start_end_range_tags_too_and_an_untagged_first_kernel_is_refused():
    lines = NCU_RAW.splitlines()
    moved = lines[2].replace('"833  ""<default domain>:iosim-case-0:none:none:none:none:none:none"" ",""',
                             '"","7 ""<default domain>:iosim-case-0:none:none:none:none:none:none"""')
    assert moved != lines[2]
    rows = ncu.parse_ncu_raw_csv("\n".join(lines[:2] + [moved]))
    assert list(ncu.counters_by_case(rows)) == [0]
    with pytest.raises(ValueError, match="precedes every iosim-case NVTX range"):
        ncu.counters_by_case(ncu.parse_ncu_raw_csv("\n".join(lines[:2] + lines[4:])))
    with pytest.raises(ValueError, match="no CSV header"):
        ncu.parse_ncu_raw_csv("==ERROR== something went wrong")


def test_ncu_failures_are_one_line_and_say_whether_to_give_up():
    perm = "==PROF== Connected\n==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance Counters\n"
    assert ncu.ncu_failure(perm, 1) == ("ncu: no permission to read GPU performance counters (ERR_NVGPUCTRPERM)", True)
    reason, fatal = ncu.ncu_failure("==ERROR== Failed to prepare kernel for profiling\n", 1)
    assert reason == "ncu: ==ERROR== Failed to prepare kernel for profiling" and not fatal
    assert ncu.ncu_failure("", 3) == ("ncu exited with code 3", False)
