"""Where output may go: asked before long work (``unwritable``), written all or nothing (``atomic_open``), and JSON
stored plain or gzip-compressed (``read_json``/``write_json``: the committed instruction mixes)."""
from __future__ import annotations

import pytest

from iosim.files import atomic_write_text, read_json, unwritable, write_json


def test_unwritable_says_why_in_a_few_words(tmp_path):
    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    assert unwritable(tmp_path / "new.png") is None
    assert unwritable(a_file) is None  # an existing file is overwritten
    assert unwritable(tmp_path / "missing" / "x.png") == f"folder {tmp_path / 'missing'} does not exist"
    assert unwritable(a_file / "x.png") == f"{a_file} is not a folder"
    assert unwritable(tmp_path) == "is a folder"
    assert unwritable(tmp_path / "runs" / "deeper", folder=True) is None  # folders are made
    assert unwritable(a_file, folder=True) == "is a file, not a folder"
    assert unwritable(a_file / "sub", folder=True) == f"{a_file} is not a folder"


@pytest.mark.parametrize("cmd", [
    ["plot", "io", "-o", "{f}/x.png"], ["plot", "io", "-o", "{d}/x.png", "--save", "{f}/s.json"],
    ["measure", "--out", "{f}/runs"], ["calibrate", "--out", "{f}/p.yaml"], ["sweep", "{spec}", "-o", "{f}/r.json"],
    ["validate", "--plots", "{f}/figs"],
])
def test_commands_refuse_an_output_they_cannot_write_before_any_work(tmp_path, cmd):
    from click.testing import CliRunner

    from iosim.cli import main

    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    spec = tmp_path / "spec.yaml"
    spec.write_text("schema: iosim-sweep\nschema_version: 1\n")
    args = [c.format(f=a_file, d=tmp_path, spec=spec) for c in cmd]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "is not a folder" in r.output and "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "spec.yaml"]


def test_atomic_write_leaves_nothing_half_written(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "whole")
    assert path.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_json_reads_back_compressed_or_plain_and_the_same_document_gives_the_same_bytes(tmp_path):
    import gzip
    import json

    doc = {"schema": 1, "mixes": [{"kernel": "flash2_fwd", "pipes": {"fma": 1.5}}] * 50}
    packed, plain = tmp_path / "m.json.gz", tmp_path / "m.json"
    write_json(packed, doc)
    write_json(plain, doc)
    assert read_json(packed) == doc and read_json(plain) == doc
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes() == (json.dumps(doc, indent=1) + "\n").encode()
    first = packed.read_bytes()
    write_json(packed, json.loads(json.dumps(doc)))  # rewritten later: no timestamp in the header, no change
    assert packed.read_bytes() == first and len(first) < plain.stat().st_size / 5


def test_a_kernel_folders_mixes_are_found_compressed_or_plain(tmp_path, monkeypatch):
    """``<kernel folder>/mixes/``: a version's compressed file where both forms are there, a plain one (written
    before the files were compressed) where it alone is, and its version parsed from either name."""
    from iosim.costs.sass import mixes_version
    from iosim.measure import kernel_codes

    folder = tmp_path / "mixes"
    folder.mkdir()
    for name in ("sm_90-triton-3.6.0.json", "sm_90-triton-3.6.0.json.gz", "sm_90-triton-3.9.0.json", "sm_90-notes.txt"):
        (folder / name).write_text("{}")
    ref = f"{tmp_path / 'k.py'}:fwd"
    assert kernel_codes.mixes_file(ref, "sm_90", "3.6.0").name == "sm_90-triton-3.6.0.json.gz"
    assert kernel_codes.mixes_file(ref, "sm_90", "3.9.0").name == "sm_90-triton-3.9.0.json"
    assert kernel_codes.mixes_file(ref, "sm_90", None).name == "sm_90-triton-3.9.0.json"
    assert kernel_codes.mixes_file(ref, "sm_80", "3.6.0") is None
    assert mixes_version("sm_90-triton-3.6.0.json.gz", "sm_90-triton-") == "3.6.0"
    assert mixes_version("calibration-sm_90-triton-3.6.0.json", "sm_90-triton-") is None
