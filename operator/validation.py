"""Validate ScalingStudy documents and report every problem as ``path.to.field: message``.

Pure except :func:`read_documents`, which reads YAML files. Three layers, each run only when
the one before passed (later layers need a well-typed object):

1. structure: the pydantic models (types, enums, bounds, patterns, unknown fields);
2. cross-field rules: the CEL rules from the rendered CRD, evaluated like the API server;
3. checks CEL cannot express (they need parsing or facts outside one object).
"""

from __future__ import annotations

import difflib
import functools
import re
import typing
from pathlib import Path
from typing import Any

import pydantic
import yaml

from radscale.operator import api, celcheck, crd
from radscale.operator.celcheck import Problem


class SpecError(ValueError):
    """A ScalingStudy that cannot be run; ``problems`` name each field and what to do."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


PATTERN_HELP = {
    api.DNS1035: "must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter",
    api.DNS1123_SUBDOMAIN: "must be a DNS-1123 name: lowercase letters, digits, '-' and '.'",
    api.STORAGE_URI: "must be an fsspec URL such as s3://bucket/path or file:///path, or an absolute path",
    api.WEIGHTS_URI: "must be none, an absolute path, an fsspec URL (s3://...) or hf-hub:ORG/NAME",
    api.QUANTITY: "must be a Kubernetes quantity such as 16Gi or 500Mi",
    api.TIMM_NAME: "must be a timm architecture name such as vit_base_patch14_dinov2",
}


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not part.startswith(("function-", "constrained-")):
            out += f".{part}" if out else part
    return out


def _model_in(annotation: Any) -> type[pydantic.BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Wire names of the fields of the object at ``loc`` (for "did you mean")."""
    model: type[pydantic.BaseModel] | None = api.ScalingStudy
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field is None:  # a map key: stay on the map's value type
            continue
        model = _model_in(field.annotation)
    return [f.alias or n for n, f in model.model_fields.items()] if model else []


def _message(err: dict[str, Any]) -> tuple[str, str | None]:
    """(what is wrong, the offending value quoted or None)."""
    kind, msg, given = err["type"], err["msg"], err.get("input")
    if kind == "missing":
        return "required field is missing", None
    if kind == "extra_forbidden":
        field = str(err["loc"][-1])
        close = difflib.get_close_matches(field, _fields_at(tuple(err["loc"][:-1])), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; see docs/api.md for the fields"
        return f"unknown field {field!r}{hint}", None
    if kind == "string_pattern_mismatch":
        pattern = err.get("ctx", {}).get("pattern", "")
        return PATTERN_HELP.get(pattern, msg), repr(given)
    if kind == "value_error":
        return msg.removeprefix("Value error, "), None
    if isinstance(given, (str, int, float, bool)) and not isinstance(given, dict):
        return msg, repr(given)
    return msg, None


def from_pydantic(exc: pydantic.ValidationError) -> list[Problem]:
    return [Problem(_loc_to_path(e["loc"]) or ".", *_message(e)) for e in exc.errors()]


@functools.cache
def _spec_schema() -> dict[str, Any]:
    return crd.openapi_schema(api.ScalingStudySpec)


def cel_problems(spec: api.ScalingStudySpec) -> list[Problem]:
    schema = _spec_schema()
    obj = celcheck.apply_defaults(schema, spec.model_dump(by_alias=True, exclude_none=True, mode="json"))
    return celcheck.evaluate(schema, obj, "spec")


def python_problems(study: api.ScalingStudy) -> list[Problem]:
    out: list[Problem] = []
    if not re.match(r"^[a-z]", study.metadata.name):
        out.append(Problem("metadata.name", "must start with a letter: child RayJob names are DNS-1035 labels"))
    for i, enc in enumerate(study.spec.encoders):
        patch = re.search(r"patch(\d+)", enc.model)
        if patch and enc.image_size % int(patch.group(1)):
            p = int(patch.group(1))
            out.append(Problem(
                f"spec.encoders[{i}].imageSize",
                f"{enc.image_size} is not a multiple of the patch size {p} of {enc.model}; "
                f"use e.g. {round(enc.image_size / p) * p}",
            ))
    sweep = study.spec.evaluation.sweep
    epochs = sweep.search_space.get("epochs")
    if epochs is not None and sweep.scheduler.type == "asha":
        most = max(epochs.values or []) if epochs.type == "choice" else (epochs.high or 0)
        if sweep.scheduler.grace_period > most:
            out.append(Problem(
                "spec.evaluation.sweep.scheduler.gracePeriod",
                f"grace period {sweep.scheduler.grace_period} exceeds the most epochs searched ({most:g}); "
                "ASHA could never stop a trial",
            ))
    return out


def problems_of(doc: Any) -> list[Problem]:
    """Every problem with one ScalingStudy document (a dict parsed from YAML/JSON)."""
    if not isinstance(doc, dict):
        return [Problem(".", f"expected a {api.KIND} object, got {type(doc).__name__}")]
    try:
        study = api.ScalingStudy.model_validate(doc)
    except pydantic.ValidationError as exc:
        return from_pydantic(exc)
    found = cel_problems(study.spec)
    return found or python_problems(study)


def load_study(doc: Any) -> api.ScalingStudy:
    """Parse and fully validate; raise :class:`SpecError` naming every bad field."""
    problems = problems_of(doc)
    if problems:
        raise SpecError(problems)
    return api.ScalingStudy.model_validate(doc)


def read_documents(path: str | Path) -> list[Any]:
    """The YAML documents of a file; a YAML syntax error is reported with its line."""
    text = Path(path).read_text()
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise SpecError([Problem(".", f"not valid YAML at {where}: {getattr(exc, 'problem', exc)}")]) from exc
