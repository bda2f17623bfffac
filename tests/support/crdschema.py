"""Check objects against a CRD's openAPIV3Schema offline, as an API server would.

kubernetes-validate does not check custom resources, so: structural defaulting, then JSON
Schema validation of the converted schema (strict about unknown fields, like kubectl's default
server-side field validation), list-type set/map uniqueness, then the CEL rules.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

from radscale.operator import celcheck

_K8S_ONLY = ("description", "default", "example", "externalDocs")


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """openAPIV3Schema (OpenAPI 3.0 + Kubernetes extensions) -> Draft 4 JSON Schema."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in _K8S_ONLY:
            continue
        if key == "properties":
            out[key] = {k: to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(v) for v in value]
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "."


def _list_map_problems(schema: dict[str, Any], obj: Any, path: str, out: list[str]) -> None:
    if isinstance(obj, list):
        keys = schema.get("x-kubernetes-list-map-keys")
        if schema.get("x-kubernetes-list-type") == "map" and keys:
            seen = set()
            for i, item in enumerate(obj):
                key = tuple(item.get(k) for k in keys) if isinstance(item, dict) else (item,)
                if key in seen:
                    out.append(f"{path}[{i}]: Duplicate value: {dict(zip(keys, key, strict=True))}")
                seen.add(key)
        for i, item in enumerate(obj):
            _list_map_problems(schema.get("items", {}), item, f"{path}[{i}]", out)
    elif isinstance(obj, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in obj:
                _list_map_problems(sub, obj[name], f"{path}.{name}" if path else name, out)


def problems(crd_obj: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Everything the API server would refuse in ``obj``, as 'path: message' lines."""
    schema = crd_obj["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return problems_for_schema(schema, obj)


_VALIDATORS: dict[int, tuple[dict[str, Any], jsonschema.Draft4Validator]] = {}


def _validator(schema: dict[str, Any]) -> jsonschema.Draft4Validator:
    # Converting KubeRay's 1.3 MiB schema once per schema object, not once per check.
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, jsonschema.Draft4Validator(to_json_schema(schema)))
        _VALIDATORS[id(schema)] = cached
    return cached[1]


def problems_for_schema(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    defaulted = celcheck.apply_defaults(schema, obj)
    validator = _validator(schema)
    found = [f"{_path(e.absolute_path)}: {e.message}" for e in validator.iter_errors(defaulted)]
    _list_map_problems(schema, defaulted, "", found)
    if found:
        return found
    return [str(v) for v in celcheck.evaluate(schema, defaulted)]
