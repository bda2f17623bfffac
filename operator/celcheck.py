"""Evaluate a CRD schema's ``x-kubernetes-validations`` against an object, as the API server does.

Pure: no I/O. The object is defaulted from the schema first, values are typed by the schema
(``number`` fields are doubles even when written as ``1``), and each rule sees ``self`` bound to
the node it is attached to. Used by ``radscale validate``, by the operator for objects that got
past an older CRD, and by the tests that check examples and bad specs against the rendered CRD.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
from typing import Any

import celpy
from celpy import celtypes


@dataclasses.dataclass(frozen=True)
class Problem:
    """A field and what is wrong with it: a broken CEL rule here, any spec problem in validation."""

    path: str
    message: str
    given: str | None = None  # the offending value, quoted: for the user's terminal only

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (f" (got {self.given})" if self.given else "")

    @property
    def brief(self) -> str:
        """Field and problem without the value: what the operator writes to conditions and Events,
        which log stores copy (a spec's values may name a patient)."""
        return f"{self.path}: {self.message}"


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """A copy of ``obj`` with the schema's defaults filled in (structural defaulting)."""
    obj = copy.deepcopy(obj)
    _default(schema, obj)
    return obj


def _default(schema: dict[str, Any], obj: Any) -> None:
    if isinstance(obj, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                _default(sub, obj[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for value in obj.values():
                _default(extra, value)
    elif isinstance(obj, list) and "items" in schema:
        for item in obj:
            _default(schema["items"], item)


def to_cel(schema: dict[str, Any], value: Any) -> Any:
    """Convert JSON to CEL values typed by the schema."""
    t = schema.get("type")
    if value is None:
        return None
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else {}
        return celtypes.MapType(
            {celtypes.StringType(k): to_cel(props.get(k, extra), v) for k, v in value.items()}
        )
    if isinstance(value, list):
        return celtypes.ListType([to_cel(schema.get("items", {}), v) for v in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if t == "number" or isinstance(value, float):
        return celtypes.DoubleType(float(value))
    if isinstance(value, int):
        return celtypes.IntType(value)
    return celtypes.StringType(str(value))


@functools.lru_cache(maxsize=512)
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


_SCHEMAS: dict[int, dict[str, Any]] = {}  # by id, kept alive so that an id is never reused


def _schema_key(schema: dict[str, Any]) -> int:
    _SCHEMAS.setdefault(id(schema), schema)
    return id(schema)


@functools.lru_cache(maxsize=512)
def _reads(rule: str) -> frozenset[str] | None:
    """The top-level fields of ``self`` a rule reads, or None if it uses ``self`` as a whole
    (bare, or with a method or macro such as ``self.all(...)``)."""
    if re.search(r"\bself\b(?!\.\w)", rule) or re.search(r"\bself\.\w+\s*\(", rule):
        return None
    return frozenset(re.findall(r"\bself\.(\w+)", rule))


@functools.lru_cache(maxsize=8192)
def _verdict(rule: str, node: str, schema: int) -> str | None:
    """None if ``rule`` holds for the node, else the suffix of its message.

    Memoised on the part of the node the rule reads: cel-python interprets the rule tree (1-2 ms
    a rule), and studies share most of what each rule looks at (the budget, the encoders, the
    tasks) while differing in names and output paths, so a burst of new studies pays per
    distinct question, not per study."""
    try:
        ok = _program(rule).evaluate({"self": to_cel(_SCHEMAS[schema], json.loads(node))})
    except Exception as exc:  # an erroring rule rejects the object, as on the API server
        return f" (rule could not be evaluated: {exc})"
    return "" if isinstance(ok, celpy.CELEvalError) or not bool(ok) else None


def _node_for(rule: str, obj: Any) -> str:
    reads = _reads(rule)
    if reads is not None and isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k in reads}
    return json.dumps(obj, sort_keys=True)


def evaluate(schema: dict[str, Any], obj: Any, path: str = "") -> list[Problem]:
    """Violations of every CEL rule in ``schema`` by the (already defaulted) ``obj``."""
    out: list[Problem] = []
    _walk(schema, obj, path, out)
    return out


def _walk(schema: dict[str, Any], obj: Any, path: str, out: list[Problem]) -> None:
    if obj is None:
        return
    rules = schema.get("x-kubernetes-validations", [])
    if rules:
        for rule in rules:
            where = path + rule.get("fieldPath", "")
            error = _verdict(rule["rule"], _node_for(rule["rule"], obj), _schema_key(schema))
            if error is not None:
                out.append(Problem(where or ".", f"{rule['message']}{error}"))
    if isinstance(obj, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in obj:
                _walk(sub, obj[name], f"{path}.{name}" if path else name, out)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in obj.items():
                _walk(extra, value, f"{path}.{key}", out)
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            _walk(schema["items"], item, f"{path}[{i}]", out)
