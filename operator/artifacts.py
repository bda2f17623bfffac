"""What a finished study leaves in its output besides the cells: the full results and the figure.

Pure: builds the documents (``results.json``: every metric of every cell with the status; the
scaling-curve PNG) and the digest that says whether they are current. The engine writes them
through the store adapter once the study is terminal, in both modes, and records their URIs in
``status.artifacts``; a later pass with the same curves and fits writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from radscale.cells import CellResult, join_uri
from radscale.operator import api

RESULTS_FILE = "results.json"
PLOT_FILE = "scaling-curves.png"


def digest(status: api.ScalingStudyStatus) -> str:
    """Key of what the documents show: the curves, fits, best encoders and cell states."""
    shown = status.model_dump(by_alias=True, exclude_none=True, mode="json",
                              include={"phase", "results", "fits", "best", "best_per_task", "cells"})
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:16]


def documents(study: api.ScalingStudy, status: api.ScalingStudyStatus,
              results: Mapping[str, CellResult]) -> dict[str, bytes]:
    """URI -> content of the results JSON and the PNG under ``spec.output``."""
    from radscale.operator import plot  # matplotlib, only when there is something to draw

    out = study.spec.output
    doc = {"study": study.metadata.name, "status": status.model_dump(by_alias=True, exclude_none=True, mode="json"),
           "cells": {k: json.loads(v.to_json()) for k, v in sorted(results.items())}}
    return {
        join_uri(out, RESULTS_FILE): json.dumps(doc, indent=1).encode(),
        join_uri(out, PLOT_FILE): plot.render_png(status, f"{study.metadata.name}: data scaling"),
    }


def experiment(study: api.ScalingStudy) -> str:
    return study.spec.tracking.experiment or f"{study.metadata.namespace or 'default'}/{study.metadata.name}"
