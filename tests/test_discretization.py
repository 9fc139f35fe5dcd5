"""experiments/discretization.py: the L2 model's resolution sweep reports the validator's own errors."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from iosim.measure.measurement import load_measurement
from iosim.measure.validate import validate

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "discretization.py"
SMALL_SET = REPO / "experiments" / "measurements" / "h200" / "decode" / "lone" / "measurements.json"


def test_sweep_reports_validate_errors_at_each_resolution(tmp_path):
    out = tmp_path / "sweep.csv"
    run = subprocess.run([sys.executable, str(SCRIPT), "--sets", str(SMALL_SET), "--lines", "32,256", "--jobs", "1",
                          "--csv", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(out.open()))
    results, _ = validate(load_measurement(SMALL_SET), impls=("ours",))  # the engine's default resolution, 256
    expected = {(r.name, m): r.error(m) for r in results for m in ("dram_bytes", "time_s")}
    at_default = {(row["case"], row["metric"]): float(row["error"]) for row in rows if row["l2_lines"] == "256"}
    assert at_default.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(at_default[key] - value) < 1e-12
    assert {row["l2_lines"] for row in rows} == {"32", "256"}
    assert f"{len(results)} cases" in run.stdout


def test_bad_resolution_is_one_line_and_exit_2():
    run = subprocess.run([sys.executable, str(SCRIPT), "--lines", "0,x"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["error: --lines: a comma-separated list of positive integers, got '0,x'"]
