"""iosim.schema: the strict base model and the one-line error every file kind reports."""
from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field, ValidationError, model_validator

from iosim.schema import (
    FieldProblem,
    FileModel,
    Line,
    NonNegative,
    PositiveInt,
    Text,
    dotted,
    error_line,
    schema_version,
)


class Leaf(FileModel):
    size: NonNegative
    count: PositiveInt | None = None
    kind: Literal["a", "b"] = "a"
    label: Line = ""


class Doc(FileModel):
    schema_: Literal["demo"] = Field(alias="schema")
    schema_version: schema_version(1)
    name: Text
    leaves: list[Leaf]
    table: dict[str, Leaf] = {}

    @model_validator(mode="after")
    def _first_leaf_is_smallest(self):
        if self.leaves and any(leaf.size < self.leaves[0].size for leaf in self.leaves):
            raise FieldProblem("leaves[0].size", "must be the smallest size")
        return self


def line(data) -> str:
    with pytest.raises(ValidationError) as e:
        Doc.model_validate(data)
    text = error_line("demo.json", e.value, Doc)
    assert "\n" not in text
    return text


def good(**changes):
    return {"schema": "demo", "schema_version": 1, "name": "x", "leaves": [{"size": 1}, {"size": 2}]} | changes


def test_a_good_document_keeps_its_numbers_as_written():
    doc = Doc.model_validate(good(leaves=[{"size": 2}, {"size": 2.5}]))
    assert [type(leaf.size) for leaf in doc.leaves] == [int, float]


@pytest.mark.parametrize("changes,expected", [
    ({"schema": "other"}, "schema: expected 'demo', got 'other'"),
    ({"schema_version": 2}, "schema_version: unsupported version 2; this iosim reads schema_version 1"),
    ({"schema_version": "1"}, "schema_version: must be an integer, got '1'"),
    ({"name": " "}, "name: must be a non-empty string, got ' '"),
    ({"leaves": [{"size": -1}]}, "leaves[0].size: must be >= 0, got -1"),
    ({"leaves": [{"size": 1}, {"size": float("nan")}]}, "leaves[1].size: must be a finite number, got nan"),
    ({"leaves": [{"size": float("-inf")}]}, "leaves[0].size: must be a finite number, got -inf"),
    ({"leaves": [{"size": True}]}, "leaves[0].size: must be a number, got True"),
    ({"leaves": [{"size": "3"}]}, "leaves[0].size: must be a number, got '3'"),
    ({"leaves": [{"size": 1, "count": 0}]}, "leaves[0].count: must be > 0, got 0"),
    ({"leaves": [{"size": 1, "count": 2.0}]}, "leaves[0].count: must be an integer, got 2.0"),
    ({"leaves": [{"size": 1, "kind": "c"}]}, "leaves[0].kind: must be one of a, b, got 'c'"),
    ({"leaves": [{"size": 1, "label": "two\nlines"}]}, "leaves[0].label: must be one line"),
    ({"leaves": [{"size": 1, "colour": "red"}]}, "leaves[0].colour: unknown field; allowed: size, count, kind, label"),
    ({"table": {"t": {}}}, "table.t.size: missing field"),
    ({"table": {"t": {"size": 1, "x": 1}}}, "table.t.x: unknown field; allowed: size, count, kind, label"),
    ({"leaves": {}}, "leaves: must be a list, got dict"),
    ({"extra": 1}, "extra: unknown field; allowed: schema, schema_version, name, leaves, table"),
    ({"leaves": [{"size": 2}, {"size": 1}]}, "leaves[0].size: must be the smallest size"),
])
def test_error_line_names_file_and_dotted_field(changes, expected):
    assert line(good(**changes)) == f"demo.json: {expected}"


def test_missing_and_top_level():
    data = good()
    del data["name"]
    assert line(data) == "demo.json: name: missing field"
    assert line([1]) == "demo.json: top level: must be a mapping, got list"


def test_models_are_frozen_and_strict():
    doc = Doc.model_validate(good())
    with pytest.raises(ValidationError):
        doc.name = "y"
    assert dotted(("cases", 3, "counters", "kernels", 0)) == "cases[3].counters.kernels[0]"
    assert dotted(()) == "top level"
