"""Validation is part of the product: every rule a user can break names the field and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from radscale.operator import api, crd, validation
from tests.conftest import EXAMPLES, edit, load_yaml
from tests.support import crdschema

CORPUS = yaml.safe_load((Path(__file__).parent / "bad_specs.yaml").read_text())
BASE = load_yaml(EXAMPLES / "study.yaml")


def test_corpus_is_large_and_names_are_unique():
    names = [c["name"] for c in CORPUS]
    assert len(names) >= 30
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(example):
    for doc in validation.read_documents(example):
        assert validation.problems_of(doc) == []
        study = validation.load_study(doc)
        assert study.kind == "ScalingStudy"


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c["name"])
def test_bad_spec_names_its_field(case):
    doc = edit(BASE, case.get("set"), case.get("delete"))
    problems = validation.problems_of(doc)
    paths = [p.path for p in problems]
    assert case["field"] in paths, f"expected {case['field']!r} among {[str(p) for p in problems]}"
    for p in problems:
        assert p.message and not p.message.startswith("Value error"), str(p)
    with pytest.raises(validation.SpecError) as exc:
        validation.load_study(doc)
    assert case["field"] in str(exc.value)


@pytest.mark.parametrize("case", [c for c in CORPUS if c["crd"] != "skip"], ids=lambda c: c["name"])
def test_crd_agrees_with_the_corpus(case):
    """The API server (emulated offline: schema, defaults, CEL) rejects exactly the cases marked reject."""
    doc = edit(BASE, case.get("set"), case.get("delete"))
    found = crdschema.problems(crd.crd(), doc)
    if case["crd"] == "reject":
        assert found, "the CRD lets this through"
    else:
        assert found == [], f"the CRD refuses a case meant for the operator: {found}"


def test_crd_rejection_names_the_field_for_cel_rules():
    doc = edit(BASE, {"spec.computeBudget.steps": 5000})
    found = crdschema.problems(crd.crd(), doc)
    assert any(line.startswith("spec.computeBudget.steps: budget too small") for line in found), found


def test_unknown_field_suggests_the_right_name():
    doc = edit(BASE, {"spec.encoder": []})
    (problem,) = [p for p in validation.problems_of(doc) if p.path == "spec.encoder"]
    assert "did you mean 'encoders'" in problem.message


def test_pattern_errors_are_explained_not_regexes():
    doc = edit(BASE, {"spec.encoders[0].name": "RadDino"})
    (problem,) = validation.problems_of(doc)
    assert "DNS-1035" in problem.message and "^[a-z]" not in problem.message
    # the value is shown to the user (radscale validate) but kept out of what the operator writes
    assert "'RadDino'" in str(problem) and "RadDino" not in problem.brief


def test_every_problem_is_reported_not_just_the_first():
    doc = edit(BASE, {"spec.retries": 99, "spec.attention": "flash", "spec.maxConcurrentCells": 0})
    paths = {p.path for p in validation.problems_of(doc)}
    assert {"spec.retries", "spec.attention", "spec.maxConcurrentCells"} <= paths


def test_defaults_fill_a_minimal_study():
    doc = {
        "apiVersion": "radscale.io/v1alpha1",
        "kind": "ScalingStudy",
        "metadata": {"name": "mini"},
        "spec": {
            "dataset": {"uri": "file:///data"},
            "sizes": [10, 20, 40],
            "computeBudget": {"steps": 10, "globalBatchSize": 4, "checkpointEvery": 5},
            "encoders": [{"name": "d", "paradigm": "dino", "model": "vit_small_patch14_dinov2", "imageSize": 98}],
            "evaluation": {"tasks": [{"name": "cls", "kind": "classification", "labels": ["x"]}]},
            "output": "file:///out",
        },
    }
    assert validation.problems_of(doc) == [
        validation.Problem("spec.evaluation.tasks", "a task names a label that is not in dataset.columns.labels; "
                           "add it there or fix the task")
    ]
    doc["spec"]["dataset"]["columns"] = {"labels": ["x"]}
    study = validation.load_study(doc)
    assert study.spec.max_concurrent_cells == 4 and study.spec.retries == 2
    assert study.spec.attention == "auto"
    assert study.spec.evaluation.tasks[0].headline_metric == "auroc"
    assert set(study.spec.evaluation.sweep.search_space) == {"lr", "weightDecay", "epochs"}
    assert study.spec.prep_size == 98
    # The API server's defaulting (from the CRD) gives the same object as pydantic's.
    schema = crd.openapi_schema(api.ScalingStudySpec)
    from radscale.operator import celcheck

    server = celcheck.apply_defaults(schema, doc["spec"])
    ours = study.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert server == ours


def test_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec:\n  sizes: [1, 2\n  other: x\n")
    with pytest.raises(validation.SpecError) as exc:
        validation.read_documents(bad)
    assert "line" in str(exc.value)


def test_not_an_object():
    assert validation.problems_of(["a"])[0].message.startswith("expected a ScalingStudy")


def test_cel_rules_read_only_the_fields_they_name():
    from radscale.operator import celcheck

    assert celcheck._reads("self.a <= self.b.c") == frozenset({"a", "b"})
    assert celcheck._reads("self.all(k, k in ['lr'])") is None  # a macro over self as a whole
    assert celcheck._reads("self.size() > 0") is None
    assert celcheck._reads("has(self) && self == 'x'") is None


def test_studies_differing_outside_a_rules_fields_share_its_verdict():
    """A burst of studies that differ only in names and outputs validates the spec rules once."""
    from radscale.operator import celcheck

    base = load_yaml(EXAMPLES / "study.yaml")
    first = edit(base, {"metadata.name": "burst-a", "spec.output": "s3://bucket/burst-a/",
                        "spec.sizes": [97, 98]})
    validation.load_study(first)
    before = celcheck._verdict.cache_info()
    second = edit(base, {"metadata.name": "burst-b", "spec.output": "s3://bucket/burst-b/",
                         "spec.sizes": [97, 98]})
    validation.load_study(second)
    after = celcheck._verdict.cache_info()
    assert after.misses == before.misses, "a rule was evaluated again for an identical question"
    # ... while a change to a field a rule reads is evaluated, and still refused when bad
    bad = edit(second, {"spec.computeBudget.globalBatchSize": 7})
    with pytest.raises(validation.SpecError, match="globalBatchSize"):
        validation.load_study(bad)
    assert celcheck._verdict.cache_info().misses > after.misses


def test_report_generation_headline_is_clinical_f1_unless_named():
    """The report headline counts findings; n-gram overlap is kept only when asked for."""
    from radscale.spec import TaskSpec

    assert TaskSpec(name="r", kind="report-generation").headline_metric == "clinicalF1"
    assert TaskSpec(name="r", kind="report-generation", metric="bleu4").headline_metric == "bleu4"
