"""Render the ScalingStudy CRD (``apiextensions.k8s.io/v1``) and its API reference from :mod:`.api`.

Pure: returns data and text; ``radscale crd`` and ``make crd`` write it. The pydantic JSON
schema is turned into a *structural* OpenAPI v3 schema: references inlined, ``Optional``
unwrapped, numeric exclusive bounds in OpenAPI 3.0 form, free-form maps marked
``x-kubernetes-preserve-unknown-fields``, and the CEL rules of each model kept in place.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from radscale.operator import api

_DROP = {"title", "examples"}


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model, as a CRD embeds it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs)


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        target.update(node)  # a field's description/default override its type's
        return _convert(target, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        return _convert({**inner, **node}, defs)
    if "anyOf" in node:
        # Optional[X] -> X; the field is simply absent when unset (writers drop None).
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot render a union in a structural schema: {options}")
        if node.get("default", ...) is None:
            node.pop("default")
        return _convert({**options[0], **node}, defs)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "const":
            out["enum"] = [value]
            out.setdefault("type", "string")
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            out["properties"] = {k: _convert(v, defs) for k, v in value.items()}
        elif key == "items":
            out["items"] = _convert(value, defs)
        elif key == "additionalProperties":
            if value is False:
                continue  # extra="forbid": CRDs prune unknown fields; kubectl's strict validation refuses them
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out["additionalProperties"] = _convert(value, defs)
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


PRINTER_COLUMNS = [
    {
        "name": "Succeeded",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Succeeded")].status',
        "description": "Whether every cell finished and the curves are fitted.",
    },
    {"name": "Cells", "type": "string", "jsonPath": ".status.progress", "description": "Cells done / total."},
    {
        "name": "Best",
        "type": "string",
        "jsonPath": ".status.best",
        "description": "Best encoder on the headline metric at the largest size.",
    },
    {
        "name": "Phase",
        "type": "string",
        "jsonPath": ".status.phase",
        "description": "Pending, Preparing, Running, Succeeded, Failed (also for an invalid spec) or Suspended.",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "priority": 1,
        "description": "Why the study is (not) Ready: SpecAccepted, InvalidSpec, SpecChangeRefused, "
        "SecretNotFound.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    spec_schema = openapi_schema(api.ScalingStudySpec)
    status_schema = openapi_schema(api.ScalingStudyStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "radscale", "app.kubernetes.io/part-of": "radscale"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["radscale"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A data-scaling study of radiology foundation models: encoders x "
                            "nested data sizes at constant compute, evaluated with one protocol, "
                            "with fitted scaling laws in status.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated by `radscale crd` from radscale/operator/api.py. Do not edit; run `make crd`.\n"


def render_yaml() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100)


def spec_schema_of(crd_obj: dict[str, Any]) -> dict[str, Any]:
    """The openAPIV3Schema of the served version of a CRD object."""
    return crd_obj["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


# ---- API reference ----------------------------------------------------------------------


def _type_of(s: dict[str, Any]) -> str:
    t = s.get("type", "any")
    if t == "array":
        return f"[]{_type_of(s.get('items', {}))}"
    if t == "object" and "additionalProperties" in s:
        return f"map[string]{_type_of(s['additionalProperties'])}"
    if "enum" in s:
        return " \\| ".join(f"`{v}`" for v in s["enum"])
    return t


def _constraints(s: dict[str, Any]) -> str:
    parts = []
    for key, label in (("minimum", ">="), ("maximum", "<="), ("minItems", "min items"),
                       ("maxItems", "max items"), ("maxLength", "max length")):
        if key in s:
            sym = label
            if key == "minimum" and s.get("exclusiveMinimum"):
                sym = ">"
            if key == "maximum" and s.get("exclusiveMaximum"):
                sym = "<"
            parts.append(f"{sym} {s[key]}")
    if "default" in s:
        parts.append(f"default `{s['default']}`")
    return "; ".join(parts)


def _walk(s: dict[str, Any], path: str, rows: list[str], rules: list[str]) -> None:
    for rule in s.get("x-kubernetes-validations", []):
        rules.append(f"| `{path or '.'}` | {rule['message']} | `{rule['rule']}` |")
    if s.get("type") == "array":
        _walk(s.get("items", {}), path + "[]", rows, rules)
        return
    if isinstance(s.get("additionalProperties"), dict):
        _walk(s["additionalProperties"], path + ".*", rows, rules)
    required = set(s.get("required", []))
    for name, sub in s.get("properties", {}).items():
        p = f"{path}.{name}" if path else name
        req = "yes" if name in required else ""
        desc = " ".join(sub.get("description", "").split())
        rows.append(f"| `{p}` | {_type_of(sub)} | {req} | {_constraints(sub)} | {desc} |")
        _walk(sub, p, rows, rules)


def api_reference_markdown() -> str:
    """docs/api.md, generated from the same schema as the CRD."""
    out = [
        "<!-- Generated by `make crd` from radscale/operator/api.py. Do not edit. -->",
        f"# API reference: `{api.KIND}` (`{api.API_VERSION}`)",
        "",
        f"Namespaced; plural `{api.PLURAL}`, short name `{api.SHORT_NAMES[0]}`. "
        "`kubectl explain scalingstudy.spec` shows the same text.",
    ]
    for title, model, root in (("Spec", api.ScalingStudySpec, "spec"),
                               ("Status", api.ScalingStudyStatus, "status")):
        rows: list[str] = []
        rules: list[str] = []
        _walk(openapi_schema(model), root, rows, rules)
        out += ["", f"## {title}", "", "| field | type | required | constraints | description |",
                "|---|---|---|---|---|", *rows]
        if rules:
            out += ["", f"### {title}: cross-field rules (CEL, enforced by the API server)", "",
                    "| at | message | rule |", "|---|---|---|", *[r.replace("||", "\\|\\|") for r in rules]]
    return "\n".join(out) + "\n"
