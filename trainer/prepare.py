"""The prepare stage: ``python -m radscale.trainer.prepare --cell <json-or-uri>``.

Reads the manifest, splits by patient, decodes every image once with Ray Data into shards under
``cell.shards`` and writes the prepare report into ``<cell.output>/result.json``. A fingerprint
that is already prepared is reused without decoding. Exit codes: 0 done, 2 bad input (a message
names the field, file or row; retrying will not help).
"""

from __future__ import annotations

import logging
import sys

from radscale.cells import CellResult, CellSpec, PrepareResult
from radscale.trainer import storage
from radscale.trainer.data import manifest as manifest_mod
from radscale.trainer.data import shards

log = logging.getLogger("radscale.prepare")


def run(cell: CellSpec) -> shards.PrepareReport:
    import ray

    cell = cell.model_copy(update={
        "dataset": cell.dataset.model_copy(update={"uri": storage.absolute(cell.dataset.uri)}),
        "shards": storage.absolute(cell.shards), "output": storage.absolute(cell.output)})
    ds_spec = cell.dataset
    endpoint = ds_spec.endpoint
    cols = ds_spec.columns
    options = storage.storage_options(ds_spec.uri, endpoint)
    man = manifest_mod.read_manifest(ds_spec.uri, ds_spec.manifest, cols, options)
    params = shards.PrepParams(prep_size=cell.prep_size, eval_fraction=ds_spec.split.eval_fraction,
                               seed=ds_spec.split.seed)
    started = not ray.is_initialized()
    if started:
        ray.init(address="auto" if _cluster() else None, log_to_driver=False, include_dashboard=False)
    try:
        report = shards.prepare(man, ds_spec.uri, cell.shards, params, endpoint=endpoint)
    finally:
        if started:
            ray.shutdown()
    result = CellResult(study=cell.study, cell=cell.cell, prepare=PrepareResult(
        fingerprint=report.fingerprint, images=report.images, pool=report.pool, eval_images=report.eval_images,
        skipped=report.skipped, bytes_written=report.bytes_written))
    storage.write_bytes(cell.result_uri, result.to_json().encode(), endpoint)
    return report


def _cluster() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS"))


def main(argv: list[str] | None = None) -> int:
    from radscale.trainer import entrypoints

    def go(cell: CellSpec) -> dict:
        report = run(cell)
        return {"fingerprint": report.fingerprint, "reused": report.reused, "images": report.images,
                "decoded": report.decoded, "skipped": report.skipped, "pool": report.pool,
                "eval": report.eval_images, "bytesWritten": report.bytes_written,
                "seconds": round(report.seconds, 2)}

    return entrypoints.main(argv, prog="python -m radscale.trainer.prepare", doc=__doc__, run=go,
                     bad_input=(entrypoints.CellError, manifest_mod.ManifestError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
