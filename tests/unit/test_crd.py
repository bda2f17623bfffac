"""The CRD is generated from the models, structural, in sync with the repo, and accepts the examples."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from radscale.operator import crd
from tests.conftest import EXAMPLES, REPO, SHARED, edit, load_yaml
from tests.support import crdschema

CRD_FILE = REPO / "manifests" / "crd" / "scalingstudies.radscale.io.yaml"
CHART_CRD = REPO / "charts" / "radscale" / "crds" / "scalingstudies.radscale.io.yaml"


def test_committed_crd_matches_the_models():
    assert CRD_FILE.read_text() == crd.render_yaml(), "manifests/crd drifted from api.py: run `make crd`"
    assert CHART_CRD.read_text() == crd.render_yaml(), "the chart's crds/ drifted: run `make crd`"


def test_api_reference_matches_the_models():
    assert (REPO / "docs" / "api.md").read_text() == crd.api_reference_markdown(), "run `make crd`"


def _nodes(schema: dict[str, Any], path: str = ""):
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}.*")


def test_schema_is_structural():
    schema = crd.spec_schema_of(crd.crd())
    for path, node in _nodes(schema):
        assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("additionalProperties") is not False, path
        if path == ".metadata":
            continue  # the API server owns metadata's schema
        if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
            assert node.get("x-kubernetes-preserve-unknown-fields") is True, path
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), f"{path}: map keys must be required"
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_every_spec_field_is_documented_for_kubectl_explain():
    schema = crd.spec_schema_of(crd.crd())["properties"]["spec"]
    undocumented = [p for p, n in _nodes(schema) if p and not p.endswith("[]") and ".*" not in p
                    and not n.get("description")]
    assert undocumented == []


def test_crd_shape():
    obj = crd.crd()
    assert obj["metadata"]["name"] == "scalingstudies.radscale.io"
    names = obj["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("ScalingStudy", "scalingstudies", ["ss"])
    assert obj["spec"]["scope"] == "Namespaced"
    (version,) = obj["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns)[:3] == ["Succeeded", "Cells", "Best"] and columns["Age"]["type"] == "date"
    assert columns["Succeeded"]["jsonPath"] == '.status.conditions[?(@.type=="Succeeded")].status'


def test_rules_reach_the_crd_with_field_paths():
    schema = crd.spec_schema_of(crd.crd())["properties"]["spec"]
    rules = [r for _, n in _nodes(schema) for r in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 15
    for r in rules:
        assert r["message"] and r["rule"]


def test_cel_rules_compile():
    import celpy

    env = celpy.Environment()
    for _, node in _nodes(crd.spec_schema_of(crd.crd())):
        for r in node.get("x-kubernetes-validations", []):
            env.compile(r["rule"])


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_pass_the_crd_offline(example):
    for doc in yaml.safe_load_all(example.read_text()):
        assert crdschema.problems(crd.crd(), doc) == []


def test_a_status_written_by_the_operator_fits_the_crd():
    from radscale.operator import api

    status = api.ScalingStudyStatus(
        observed_generation=3,
        conditions=[api.Condition(type="Succeeded", status="True", reason="AllCellsSucceeded",
                                  last_transition_time="2026-11-27T12:00:00Z")],
        cells=api.CellCounts(total=2, succeeded=2),
        progress="2/2",
        cell_status=[api.CellStatus(name="c-a-30k", encoder="a", size=30000, stage="evaluate", state="Succeeded",
                                    attempts=1, ray_job="c-a-30k-ev", dashboard_url="http://ray/#/jobs")],
        results={"findings": {"auroc": {"a": [[30000, 0.81, 0.79, 0.83]]}}},
        fits=[api.FitStatus(encoder="a", task="findings", metric="auroc", a=1.0, b=0.3, c=0.1, r2=0.99,
                            ci95={"b": api.Interval(low=0.2, high=0.4)})],
    )
    doc = load_yaml(EXAMPLES / "study.yaml")
    doc["status"] = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert crdschema.problems(crd.crd(), doc) == []
    doc["status"]["cellStatus"][0]["state"] = "Exploded"
    assert any(p.startswith("status.cellStatus[0].state") for p in crdschema.problems(crd.crd(), doc))


def test_offline_checker_refuses_unknown_fields_like_strict_kubectl():
    doc = edit(load_yaml(EXAMPLES / "study.yaml"), {"spec.dataset.uir": "s3://x/"})
    assert any("uir" in p for p in crdschema.problems(crd.crd(), doc))


@pytest.mark.skipif(not (SHARED / "reference" / "kuberay" / "ray.io_rayjobs.yaml").exists(),
                    reason="../shared/reference is absent")
def test_offline_checker_reads_a_real_third_party_crd():
    """The checker handles KubeRay's RayJob CRD (int-or-string, preserve-unknown, nullable)."""
    kuberay = yaml.safe_load((SHARED / "reference" / "kuberay" / "ray.io_rayjobs.yaml").read_text())
    versions = {v["name"]: v for v in kuberay["spec"]["versions"]}
    schema = versions["v1"]["schema"]["openAPIV3Schema"]
    job = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "j"},
           "spec": {"entrypoint": "python -m x", "clusterSelector": {"ray.io/cluster": "shared"},
                    "submissionMode": "K8sJobMode", "backoffLimit": 0}}
    assert crdschema.problems_for_schema(schema, job) == []
    job["spec"]["backoffLimit"] = "zero"
    job["spec"]["entrypont"] = "typo"
    found = crdschema.problems_for_schema(schema, job)
    assert any(p.startswith("spec.backoffLimit") for p in found), found
    assert any("entrypont" in p for p in found), found
