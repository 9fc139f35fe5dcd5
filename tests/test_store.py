"""The results file (iosim/results/store.py): round trip, and each kind of bad file refused in one line naming file and field."""
from __future__ import annotations

import json

import pytest

from iosim import sweep
from iosim.results import store
from iosim.results.store import ResultsError, load_results, save_results
from iosim.schedule.problem import Problem, RunConfig


@pytest.fixture(scope="module")
def results():
    return sweep.run([(RunConfig(algo=a, problem=Problem(seq_q=512)), "h100") for a in ("standard", "flash2")])


@pytest.fixture
def saved(results, tmp_path):
    return save_results(results, tmp_path / "runs.json")


def test_round_trip_keeps_every_value_and_type(results, saved):
    back = load_results(saved)
    assert back == results
    assert json.dumps([r.to_dict() for r in back]) == json.dumps([r.to_dict() for r in results])  # 25 stays 25


def test_sweep_keeps_its_names():
    assert sweep.save_results is save_results and sweep.load_results is load_results
    assert sweep.SweepError is ResultsError and (sweep.SCHEMA, sweep.SCHEMA_VERSION) == ("iosim-results", 1)


def test_derived_values_are_optional(results, saved):
    doc = json.loads(saved.read_text())
    for key in ("levels", "bound", "out_of_memory", "l2_hit_rate", "flops", "achieved", "roofline_time_s"):
        del doc["results"][0][key]
    saved.write_text(json.dumps(doc))
    assert load_results(saved) == results


def _edit(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))  # json writes NaN and Infinity, as a careless tool would


@pytest.mark.parametrize("change,expected", [
    (lambda d: d["results"][0].update(time_s=float("nan")), "results[0].time_s: must be a finite number, got nan"),
    (lambda d: d["results"][1]["kernels"][0]["levels"]["hbm"].update(read_bytes=float("inf")),
     "results[1].kernels[0].levels.hbm.read_bytes: must be a finite number, got inf"),
    (lambda d: d["results"][0]["kernels"][0]["levels"]["l2"].update(write_bytes=-1),
     "results[0].kernels[0].levels.l2.write_bytes: must be >= 0, got -1"),
    (lambda d: d["results"][0]["kernels"][0]["flops"].update(tensor="many"),
     "results[0].kernels[0].flops.tensor: must be a number, got 'many'"),
    (lambda d: d["results"][0]["kernels"][0]["roofline"].update(hbm=-1e-6),
     "results[0].kernels[0].roofline.hbm: must be >= 0, got -1e-06"),
    (lambda d: d["results"][0].update(mode="fast"), "results[0].mode: must be one of plain, ncu, got 'fast'"),
    (lambda d: d["results"][0].update(gpu_name="h100"),
     "results[0].gpu_name: unknown field; allowed: config, gpu, mode, levels, time_s, bound"),
    (lambda d: d["results"][0]["config"]["problem"].update(dtype="fp4"),
     "results[0].config.dtype: must be one of fp16, bf16, fp32, fp8, got 'fp4'"),
    (lambda d: d["results"][0]["config"].update(algo="flash3"), "results[0].config.algo: must be one of standard"),
    (lambda d: d["results"][0]["timeline"].update(hbm=[1, -2]), "results[0].timeline.hbm[1]: must be >= 0, got -2"),
    (lambda d: d["results"][0]["kernels"][0].pop("ctas"), "results[0].kernels[0].ctas: missing field"),
    (lambda d: d.update(schema_version=2), "schema_version: unsupported version 2; this iosim reads schema_version 1"),
    (lambda d: d.update(schema="iosim-measurement"), "schema: expected 'iosim-results', got 'iosim-measurement'"),
])
def test_bad_file_is_one_line_naming_file_and_field(saved, change, expected):
    _edit(saved, change)
    with pytest.raises(ResultsError) as e:
        load_results(saved)
    assert str(e.value).startswith(f"{saved}: {expected}"), str(e.value)
    assert "\n" not in str(e.value)


def test_top_level_and_encoding(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[]")  # what `iosim simulate --json` prints for no run: no results
    assert load_results(path) == []
    path.write_text('"runs"')
    with pytest.raises(ResultsError, match=r"list.json: top level: must be a mapping, got 'runs'$"):
        load_results(path)
    path.write_bytes(b'{"schema": "iosim-r\xe9sults"}')
    with pytest.raises(ResultsError) as e:
        load_results(path)
    assert str(e.value) == f"{path}: cannot read: not UTF-8 text (byte 0xe9 at offset 19)"


def test_save_refuses_what_it_could_not_read_back(results, tmp_path):
    bad = [results[0].__class__(**{**results[0].__dict__, "time_s": -1.0})]
    with pytest.raises(ResultsError, match=r"runs.json: results\[0\]\.time_s: must be >= 0"):
        save_results(bad, tmp_path / "runs.json")
    with pytest.raises(ResultsError, match="does not exist"):
        save_results(results, tmp_path / "missing" / "runs.json")
    assert list(tmp_path.iterdir()) == []
    assert store.SCHEMA == "iosim-results"


def test_to_dataframe_has_the_csv_rows(results, tmp_path):
    """Notebooks get the same rows as the CSV: the frame written as CSV reads back as csv_text's table."""
    pd = pytest.importorskip("pandas")
    import io

    from iosim.results import records, to_dataframe
    from iosim.results.report import csv_text

    frame = to_dataframe(results)
    assert len(frame) == len(results) and list(frame.columns) == list(records(results)[0])
    assert frame["time_s"].tolist() == [r.time_s for r in results]
    assert pd.read_csv(io.StringIO(csv_text(results))).equals(pd.read_csv(io.StringIO(frame.to_csv(index=False))))


def test_a_table_of_identical_runs_shows_its_rows(results):
    from iosim.results.report import table

    lines = table([results[0], results[0]]).splitlines()
    assert len(lines) == 3 and lines[1].split() == lines[2].split() and results[0].gpu in lines[1]
