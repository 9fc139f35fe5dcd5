"""experiments/fidelity_diff.py: what it counts as moved and nearer, and the one-line refusals of a bad argument."""
from __future__ import annotations

import pytest
from conftest import load_experiment

diff = load_experiment("fidelity_diff")


def _run(errors: dict) -> dict:
    """A run as the script keeps it: entry index -> cases -> metric -> relative error."""
    return {k: {"median": {}, "broken": [], "cases": {n: {"time_s": e} for n, e in cases.items()}}
            for k, cases in errors.items()}


def test_compare_counts_moved_and_nearer_cases_by_entry_index_not_by_file():
    """Two entries (one data file may carry two, with other impls) holding a case of the same name each: they are
    kept apart. A change of 0.3 points or less is not a move; medians and means are of |error|."""
    base = _run({"0": {"a": 0.10, "b": -0.02}, "1": {"a": -0.05, "c": 0.001}})
    new = _run({"0": {"a": 0.04, "b": -0.0229}, "1": {"a": -0.08, "c": 0.0045}})
    got = diff.compare(base, new, "time_s")
    assert got["cases"] == 4
    assert got["moved"] == 3  # 0/a (0.10 -> 0.04), 1/a (-0.05 -> -0.08), 1/c (0.001 -> 0.0045); 0/b moved 0.29 points
    assert got["nearer"] == 1  # only 0/a came nearer the counters
    assert got["median"][0] == pytest.approx((0.02 + 0.05) / 2)
    assert got["median"][1] == pytest.approx((0.0229 + 0.04) / 2)
    assert got["mean"][1] == pytest.approx((0.04 + 0.0229 + 0.08 + 0.0045) / 4)
    assert got["moved_median"] == (pytest.approx(0.05), pytest.approx(0.04))


def test_compare_skips_cases_one_run_lacks_and_reports_no_moves_as_such():
    base = _run({"0": {"a": 0.1}})
    new = _run({"0": {"a": 0.1, "new": 0.5}, "7": {"x": 0.2}})
    got = diff.compare(base, new, "time_s")
    assert got["cases"] == 1 and got["moved"] == 0 and got["moved_median"] is None


@pytest.mark.parametrize("argv, field", [(["--sets", "no/such/set"], "--sets"),
                                         (["--base", "no-such-revision", "--sets", "h200/decode/bn64"], "--base")])
def test_a_bad_argument_is_one_line_naming_it_and_exit_2(argv, field, capsys):
    assert diff.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(field)
