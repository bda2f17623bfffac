"""What every stage entrypoint (``python -m radscale.trainer.<stage> --cell CELL``) shares.

Parsing ``--cell``, making local URIs absolute for Ray workers, the cell's MLflow run (one per
cell, under the study's experiment, found again by tag when a later stage or a retry runs), the
cell's ``result.json`` (each stage fills its part), and the exit-code contract a RayJob or the
local runner reads: 0 done, 2 bad input (the message names the field or file), 1 the job failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from radscale.cells import PROGRESS_MARKER, CellResult, CellSpec

log = logging.getLogger("radscale.job")


class CellError(ValueError):
    """Bad input to a job: the message names the field or file and what to do."""


def localise(cell: CellSpec) -> CellSpec:
    """Relative local URIs made absolute: Ray workers run in another working directory."""
    from radscale.trainer.storage import absolute

    weights = cell.weights if cell.weights == "none" or cell.weights.startswith("hf-hub:") else absolute(cell.weights)
    return cell.model_copy(update={
        "output": absolute(cell.output), "shards": absolute(cell.shards), "weights": weights,
        "dataset": cell.dataset.model_copy(update={"uri": absolute(cell.dataset.uri)})})


def read_index(cell: CellSpec) -> dict[str, Any]:
    """The prepared shards' index, or a CellError saying to run the prepare stage."""
    from radscale.cells import join_uri
    from radscale.trainer import storage

    index_uri = join_uri(cell.shards, "index.json")
    try:
        return json.loads(storage.read_text(index_uri, cell.dataset.endpoint))
    except FileNotFoundError as exc:
        raise CellError(f"shards: {index_uri} does not exist; run the prepare stage for this dataset first") from exc


def check_weights(cell: CellSpec, what_to_do: str) -> None:
    """A CellError naming ``weights`` when the cell's weights URI cannot be read (``hf-hub:`` is
    resolved by the loader itself)."""
    from radscale.trainer import storage

    if cell.weights != "none" and not cell.weights.startswith("hf-hub:") \
            and not storage.exists(cell.weights, cell.dataset.endpoint):
        raise CellError(f"weights: {cell.weights} cannot be read; {what_to_do}")


def ray_init() -> None:
    import os

    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True)


def progress(done: int, total: int, **extra: Any) -> None:
    """One machine-readable progress line on stdout (the local runner's display reads the latest)."""
    print(f"{PROGRESS_MARKER} " + json.dumps({"done": done, "total": total, **extra}), flush=True)


# ---- the cell's result.json ----------------------------------------------------------------------


def read_result(cell: CellSpec) -> CellResult:
    from radscale.trainer import storage

    fs, path = storage.filesystem(cell.result_uri, cell.dataset.endpoint)
    if fs.exists(path):
        return CellResult.model_validate_json(fs.cat_file(path))
    return CellResult(study=cell.study, cell=cell.cell, encoder=cell.encoder.name if cell.encoder else None,
                      size=cell.size)


def write_result(cell: CellSpec, result: CellResult) -> None:
    from radscale.trainer import storage

    storage.write_bytes(cell.result_uri, result.to_json().encode(), cell.dataset.endpoint)


# ---- MLflow ------------------------------------------------------------------------------------------


def mlflow_run(cell: CellSpec, params: dict[str, Any]) -> tuple[str | None, str | None]:
    """(tracking URI, run id) of the cell's run under the study's experiment; created on first use."""
    if cell.tracking is None or not cell.tracking.uri:
        return None, None
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    uri = cell.tracking.uri
    client = MlflowClient(tracking_uri=uri)
    name = cell.tracking.experiment or f"{cell.namespace}/{cell.study}"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    runs = client.search_runs([exp_id], filter_string=f"tags.`radscale.cell` = '{cell.cell}' "
                                                      "and tags.`radscale.kind` = 'cell'", max_results=1)
    if runs:
        run_id = runs[0].info.run_id
    else:
        tags = {"radscale.study": cell.study, "radscale.cell": cell.cell, "radscale.kind": "cell",
                "radscale.size": str(cell.size)}
        if cell.encoder:
            tags["radscale.encoder"] = cell.encoder.name
        run_id = client.create_run(exp_id, run_name=cell.cell, tags=tags).info.run_id
    existing = client.get_run(run_id).data.params
    fresh = {f"{cell.stage}.{k}": str(v) for k, v in params.items() if f"{cell.stage}.{k}" not in existing}
    if fresh:
        client.log_batch(run_id, params=[Param(k, v) for k, v in fresh.items()])
    return uri, run_id


def mlflow_client(uri: str | None) -> Any:
    if not uri:
        return None
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def mlflow_metrics(metrics: dict[str, Any], step: int) -> list[Any]:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, int | float)]


# ---- main ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None, *, prog: str, doc: str, run: Callable[[CellSpec], dict[str, Any]],
         bad_input: tuple[type[Exception], ...] = (CellError,)) -> int:
    """Parse ``--cell``, run, print the summary JSON; map failures to the exit-code contract
    (``bad_input`` exceptions exit 2: retrying will not help)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument("--cell", required=True, help="cell spec: inline JSON, or a path/URL of one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cell = CellSpec.from_arg(args.cell)
        summary = run(cell)
    except bad_input as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the RayJob shows this line; the traceback is in the Ray logs
        log.exception("%s failed", prog)
        print(f"error: {prog.rsplit('.', 1)[-1]} failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"cell": cell.cell, **summary}), flush=True)
    return 0
