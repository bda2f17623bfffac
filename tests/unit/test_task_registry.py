"""One registry of task kinds (radscale.tasks) and every consumer agrees with it: the API's default
headline, the CEL rule on a task's metric, the fits' direction and the trainer's task classes."""

from __future__ import annotations

import pytest

from radscale import tasks
from radscale.operator import api, fits, validation
from tests.conftest import EXAMPLES, edit, load_yaml


def test_every_kind_has_a_default_headline_among_its_metrics():
    for kind, info in tasks.KINDS.items():
        assert api.DEFAULT_METRIC[kind] == info.headline and info.headline in info.names
    assert len(set(tasks.ALL_METRICS)) == len(tasks.ALL_METRICS), "metric names are unique across kinds"


def test_the_fits_direction_comes_from_the_registry():
    for kind, info in tasks.KINDS.items():
        for m in info.metrics:
            assert (fits.to_error(m.name, 0.8) == pytest.approx(0.2)) == m.higher_is_better, (kind, m.name)


@pytest.mark.parametrize("kind", list(tasks.TaskKind))
def test_the_cel_rule_takes_exactly_the_registrys_metrics(kind):
    base = load_yaml(EXAMPLES / "study.yaml")
    task = {"name": "t", "kind": kind.value}
    if kind is tasks.TaskKind.SEGMENTATION:
        task["maskColumn"] = "catheter_mask"
    if kind is tasks.TaskKind.CLASSIFICATION:
        task["labels"] = ["nodule"]
    for metric in tasks.ALL_METRICS:
        doc = edit(base, {"spec.evaluation.tasks": [{**task, "metric": metric}]})
        problems = [p for p in validation.problems_of(doc) if "metric" in str(p)]
        assert (not problems) == (metric in tasks.metrics_of(kind)), (kind, metric, problems)


def test_every_kind_has_a_trainer_task_reporting_the_registrys_metrics():
    pytest.importorskip("torch")
    from radscale.trainer.evaluate import tasks as trainer_tasks

    classes = trainer_tasks.classes()
    assert set(classes) == set(tasks.KINDS)
    for kind, cls in classes.items():
        assert cls.metrics == tasks.metrics_of(kind)
