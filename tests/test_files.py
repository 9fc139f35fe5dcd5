"""Where output may go: asked before long work (``unwritable``), written all or nothing (``atomic_open``)."""
from __future__ import annotations

import pytest

from iosim.files import atomic_write_text, unwritable


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
