"""The launch probe (kernels/launch_probe.py) without a GPU: its kernels under the interpreter against
torch, its reading of a synthetic ncu export by NVTX tag, and the summary the profile takes."""
from __future__ import annotations

import json
import signal

import pytest
from ncu_export import ncu_csv

from iosim.kernels import launch_probe
from iosim.kernels.ncu import parse_ncu_raw_csv

COLUMNS = ("dram__bytes_read.sum", "dram__bytes_write.sum", "gpu__time_duration.sum", "lts__t_bytes.sum",
           "lts__t_sector_hit_rate.pct")
UNITS = ("byte", "byte", "ns", "byte", "%")




# per kernel: DRAM read, DRAM write, ns, lts bytes, hit %
EXPORT = ncu_csv(COLUMNS, UNITS, [
    ("empty", "launch-empty-0-1", 1, (0, 0, 1_500, 0, 0)),
    ("empty", "launch-empty-0-132", 132, (0, 0, 1_700, 0, 0)),
    ("empty", "launch-empty-0-4224", 4224, (0, 0, 3_000, 0, 0)),  # more than a wave: not the launch alone
    ("empty", "launch-empty-0-33", 33, (0, 0, 1_600, 0, 0)),
    ("gather", "launch-gather-8-32", 32, (131_072, 0, 2_600, 147_456, 0)),
    ("reduce", "launch-reduce1-4-132", 132, (0, 0, 2_700, 0, 0)),  # a family named with a digit
    ("fill", "", 4, (0, 4_096, 1_800, 4_096, 0)),  # untagged: not the probe's
    ("gather", "iosim-case-3", 32, (1, 0, 1, 1, 0)),  # another tool's tag
])


def test_results_and_summary_from_an_export_by_nvtx_tag():
    res = launch_probe.results(parse_ncu_raw_csv(EXPORT))
    assert [(r["family"], r["rows"], r["grid"]) for r in res] == [
        ("empty", 0, 1), ("empty", 0, 33), ("empty", 0, 132), ("empty", 0, 4224), ("gather", 8, 32),
        ("reduce1", 4, 132)]
    gather = res[-2]
    assert gather["load_bytes_per_cta"] == 8 * 512 and gather["dram_read_bytes"] == 131_072
    assert gather["duration_s"] == pytest.approx(2.6e-6)
    s = launch_probe.summary(res, sm_count=132)
    # the empty kernel at 1, 33 and 132 CTAs (one wave at most): 1.5, 1.6, 1.7 us, median 1.6
    assert s["ncu_launch_overhead_s"] == pytest.approx(1.6e-6)
    assert s["empty_by_grid"][4224] == pytest.approx(3e-6)
    assert json.loads(json.dumps(s))["ncu_launch_overhead_s"] == s["ncu_launch_overhead_s"]
    assert launch_probe.summary([], sm_count=132)["ncu_launch_overhead_s"] is None


@pytest.mark.parametrize(("family", "rows", "grid"), [("empty", 0, 3), ("store", 0, 5), ("gather", 1, 3),
                                                      ("gather", 8, 4), ("copy", 4, 3), ("reduce", 4, 5),
                                                      ("barrier", 1, 3), ("reduce1", 4, 3), ("rowsum", 4, 3),
                                                      ("rowsum", 16, 2), ("idle", 4, 3), ("reduce2", 16, 3),
                                                      ("reduce8", 16, 2)])
def test_kernels_write_what_they_say(family, rows, grid):
    torch = pytest.importorskip("torch")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    row = launch_probe.ROW
    src = torch.randn(grid * max(rows, 1) * row, dtype=torch.float32, device=device)
    written = grid * (rows if family == "copy" else 1)  # rows of out the launch writes: a copy writes all it loads
    out = torch.full(((written + 1) * row,), -7.0, device=device)
    launch_probe.launch(family, rows, grid, src, out)
    got = out.view(written + 1, row).cpu()
    if family == "empty":
        expect = torch.full((grid, row), -7.0)
    elif family in ("store", "barrier", "idle"):
        expect = torch.arange(row, dtype=torch.float32).expand(grid, row)
    elif family == "copy":
        expect = src.view(written, row).cpu()
    elif family == "rowsum":  # each CTA the sums of the same first rows, at the start of its row
        expect = torch.full((grid, row), -7.0)
        expect[:, :rows] = src[:rows * row].view(rows, row).sum(1).cpu()
    elif family in ("reduce", "reduce1", "reduce2", "reduce8"):  # every CTA sums the same first rows
        expect = src[:rows * row].view(rows, row).sum(0).cpu().expand(grid, row)
    else:
        expect = src.view(grid, rows, row).sum(1).cpu()
    torch.testing.assert_close(got[:written], expect, rtol=1e-5, atol=1e-5)
    assert (got[written] == -7.0).all()  # nothing past the last CTA's row


def test_cli_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the probe would run")
    old = signal.getsignal(signal.SIGTERM)
    try:
        rc = launch_probe.main(["--out", str(tmp_path / "launch")])
    finally:
        signal.signal(signal.SIGTERM, old)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: HarnessError: no CUDA GPU") and err.count("\n") == 1
    assert not (tmp_path / "launch").exists()


def test_h200_profile_takes_the_committed_probe_summary():
    """The calibrated H200 profile's ncu_launch_overhead is the committed probe's summary, recomputed from its
    launches (measurements are data: the profile copies, nothing edits)."""
    from pathlib import Path

    from iosim.hardware.profile import load_profile

    data = json.loads((Path(__file__).parents[1] / "experiments/measurements/h200/launch/launch_probe.json").read_text())
    again = launch_probe.summary(data["results"], data["sm_count"])
    assert again["ncu_launch_overhead_s"] == pytest.approx(data["summary"]["ncu_launch_overhead_s"])
    profile = load_profile("h200-calibrated")
    assert profile.ncu_launch_overhead == pytest.approx(data["summary"]["ncu_launch_overhead_s"], rel=1e-3)
    assert profile.ncu_launch_overhead > profile.launch_overhead  # a kernel alone costs more than back to back
