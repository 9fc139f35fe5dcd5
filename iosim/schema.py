"""How iosim declares and checks its files: strict pydantic models, and one-line errors naming file and field.

Hardware profiles, measurement files and results files each declare their shape once, as
:class:`FileModel` subclasses: unknown keys are refused, nothing is coerced (``"5"`` is not a
number, ``true`` is not 1), numbers are finite. :func:`error_line` turns the first problem pydantic
finds into ``<file>: <dotted.path[3].field>: <message>``, listing the allowed values of a choice
or of a mapping's keys.
"""
from __future__ import annotations

import json
import math
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError


class FileModel(BaseModel):
    """Base of every file schema: extra keys forbidden, strict types, finite numbers, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True, defer_build=True)


class FieldProblem(ValueError):
    """Raised by a model validator to blame one of the model's fields (``field`` may be a dotted path)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# --------------------------------------------------------------------------- shared field types


def _number(value: Any) -> int | float:
    """A finite int or float, kept as it came (a JSON ``25`` stays ``25``); bools refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return value


def _one_line(value: str) -> str:
    if "\n" in value:
        raise ValueError("must be one line")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return _one_line(value)


Number = Annotated[int | float, BeforeValidator(_number)]
NonNegative = Annotated[Number, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Line = Annotated[str, AfterValidator(_one_line)]
Text = Annotated[str, AfterValidator(_not_blank)]


def schema_version(supported: int) -> Any:
    """The type of a ``schema_version`` field: the one version this iosim reads."""

    def check(value: int) -> int:
        if value != supported:
            raise ValueError(f"unsupported version {value!r}; this iosim reads schema_version {supported}")
        return value

    return Annotated[int, AfterValidator(check)]


# --------------------------------------------------------------------------- errors


def unreadable(error: OSError | UnicodeDecodeError) -> str:
    """Why a file could not be read as text, in one line: ``cannot read: ...``."""
    if isinstance(error, UnicodeDecodeError):
        return f"cannot read: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start})"
    return f"cannot read: {error.strerror or error}"


_KINDS = {  # pydantic error type -> what the value must be
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "list_type": "a list", "tuple_type": "a list", "string_type": "a string", "int_type": "an integer",
    "float_type": "a number", "bool_type": "true or false", "finite_number": "a finite number",
    "none_required": "null",
}
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<="),
           "less_than": ("lt", "<")}


def error_line(file: str, error: ValidationError, model: type[BaseModel]) -> str:
    """``<file>: <dotted.path[3].field>: <message>`` for the first problem of ``error`` (raised by ``model``)."""
    where, message = explain(error, model)
    return f"{file}: {where}: {message}"


def explain(error: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    """The first problem of ``error`` as ``(dotted path, message)``, in iosim's wording."""
    e = error.errors(include_url=False)[0]
    loc, kind, ctx, got = list(e["loc"]), e["type"], e.get("ctx") or {}, e.get("input")
    cause = ctx.get("error")
    if isinstance(cause, FieldProblem):
        where = dotted(loc)
        return (f"{where}.{cause.field}" if loc else cause.field), str(cause)
    if isinstance(cause, Exception):
        message = str(cause)
    elif kind == "missing":
        message = "missing field"
    elif kind == "extra_forbidden":
        parent = _unwrap(_annotation_at(model, loc[:-1]))
        allowed = _keys(parent) if _is_model(parent) else []
        message = "unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    elif kind == "literal_error":
        choices = _choices(_annotation_at(model, loc), ctx.get("expected", ""))
        message = (f"expected {choices[0]!r}, got {got!r}" if len(choices) == 1
                   else f"must be one of {', '.join(map(str, choices))}, got {got!r}")
    elif kind in _KINDS:
        shown = type(got).__name__ if isinstance(got, (dict, list)) else repr(got)
        message = f"must be {_KINDS[kind]}, got {shown}"
    elif kind in ("too_short", "too_long"):
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        message = f"must have {'at least' if kind == 'too_short' else 'at most'} {bound} items, got {ctx.get('actual_length')}"
    elif kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        message = f"must be {op} {ctx[key]}, got {got!r}"
    else:
        message = e["msg"][:1].lower() + e["msg"][1:]
    return dotted(loc), " ".join(message.split())


def dotted(loc) -> str:
    """``("cases", 3, "timing")`` -> ``cases[3].timing``; the empty path is ``top level``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "top level"


def _annotation_at(model: Any, loc) -> Any:
    """The declared type that ``loc`` reaches from ``model``; None where it cannot tell."""
    tp = model
    for key in loc:
        tp = _unwrap(tp)
        if _is_model(tp):
            fields = {f.alias or name: f.annotation for name, f in tp.model_fields.items()}
            tp = fields.get(key)
        elif get_origin(tp) in (list, tuple):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    return tp


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``| None`` down to the type beneath."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _choices(tp: Any, expected: str) -> list:
    tp = _unwrap(tp)
    if get_origin(tp) is Literal:
        return list(get_args(tp))
    return [expected]


def read_json(path, error: type[ValueError]):
    """The decoded JSON document at ``path``; an unreadable or malformed file raises ``error`` in one line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: {unreadable(e)}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: document: not valid JSON (truncated?) at line {e.lineno} column {e.colno}: {e.msg}"
                    ) from None
