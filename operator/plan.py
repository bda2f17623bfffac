"""Plan a study: the grid of cells (encoder x size, plus baselines), their stages and child names.

Pure and deterministic: the same spec always gives the same cells, names and cell specs, so a
restarted operator finds the children it already created. Names are DNS-1035 labels; KubeRay
caps RayJob names at 47 characters (its RayCluster name is the RayJob's plus 6), so long
names are cut and suffixed with a hash of the full name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

from radscale import __version__
from radscale.cells import ENCODER_FILE, CellSpec, join_uri
from radscale.operator import design
from radscale.operator.api import ScalingStudy, Stage

RAYJOB_NAME_MAX = 47  # KubeRay: MaxRayClusterNameLength (53) - len("-xxxxx")
CELL_NAME_MAX = 63  # a label value
BASELINE = "base"
STAGE_ABBR = {Stage.PREPARE: "prep", Stage.PRETRAIN: "pt", Stage.EVALUATE: "ev"}


def dns_name(*parts: str, limit: int) -> str:
    """Join parts into a DNS-1035 label of at most ``limit`` chars; hash-suffixed when cut."""
    full = "-".join(p for p in parts if p)
    full = re.sub(r"[^a-z0-9-]+", "-", full.lower()).strip("-")
    if not full or not full[0].isalpha():
        full = "rs-" + full
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: limit - 9].rstrip('-')}-{digest}"


def size_label(n: int) -> str:
    """30000 -> '30k', 1000000 -> '1m', 0 -> 'base'; exact, never rounded."""
    if n == 0:
        return BASELINE
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def cell_name(study: str, encoder: str, size: int, replicate: int = 0) -> str:
    """``<study>-<encoder>-<size>``, with ``-r<k>`` for replicate k > 0: replicate 0 keeps the name a
    single-seed study always had, so raising ``replicates`` adds cells and re-runs none."""
    return dns_name(study, encoder, size_label(size), f"r{replicate}" if replicate else "", limit=CELL_NAME_MAX)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of the grid. Size 0 is the baseline: the encoder's init, evaluated only."""

    name: str
    encoder: str
    size: int
    stages: tuple[Stage, ...]
    replicate: int = 0

    @property
    def baseline(self) -> bool:
        return self.size == 0


@dataclasses.dataclass(frozen=True)
class Plan:
    study: str
    namespace: str
    prepare_name: str
    fingerprint: str
    cells: tuple[Cell, ...]

    def cell(self, name: str) -> Cell:
        for c in self.cells:
            if c.name == name:
                return c
        raise KeyError(name)


def dataset_fingerprint(study: ScalingStudy) -> str:
    """Key of the prepared shards: the dataset spec, prep parameters and code version.

    The prepare job adds the manifest's content hash to what it writes; a changed manifest
    under the same URI is detected there and prepared anew.
    """
    spec = study.spec
    key = {
        "dataset": spec.dataset.model_dump(mode="json", by_alias=True, exclude={"credentials_secret", "endpoint"}),
        "prepSize": spec.prep_size,
        "code": __version__,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def designed_sizes(study: ScalingStudy, encoder: str) -> tuple[int, ...]:
    """The sizes an adaptive encoder's design has chosen so far, one entry per cell (0: a baseline
    evaluation beyond spec.replicates): every decision in the status, or the initial round when the
    status has none yet (it is the same on every pass, so the first pass already plans it)."""
    spec = study.spec
    enc = next(e for e in spec.encoders if e.name == encoder)
    ad = spec.design_of(enc)
    entry = next((d for d in (study.status.design if study.status else []) if d.encoder == encoder), None)
    if entry is None or not entry.decisions:
        return design.initial_cells(ad, spec.replicates)
    return tuple(n for d in entry.decisions for n in d.sizes)


def plan(study: ScalingStudy) -> Plan:
    """The cells of a study. Fixed sizes: every size x replicate. An adaptive encoder: the cells its
    design has chosen (recorded in the status), each chosen size's k-th cell as replicate k."""
    spec = study.spec
    name = study.metadata.name
    cells: list[Cell] = []
    both = (Stage.PRETRAIN, Stage.EVALUATE)
    for enc in spec.encoders:
        if spec.design_of(enc) is None:
            for r in range(spec.replicates):
                if spec.evaluation.baselines:
                    cells.append(Cell(cell_name(name, enc.name, 0, r), enc.name, 0, (Stage.EVALUATE,), r))
                for n in spec.sizes:
                    cells.append(Cell(cell_name(name, enc.name, n, r), enc.name, n, both, r))
            continue
        chosen = designed_sizes(study, enc.name)
        extra = sum(n == design.BASELINE for n in chosen)
        if spec.evaluation.baselines:
            for r in range(spec.replicates + extra):
                cells.append(Cell(cell_name(name, enc.name, 0, r), enc.name, 0, (Stage.EVALUATE,), r))
        for n, r in sorted(design.with_replicates([n for n in chosen if n != design.BASELINE])):
            cells.append(Cell(cell_name(name, enc.name, n, r), enc.name, n, both, r))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):  # only if hashing collided, which sha256 makes moot
        raise ValueError(f"cell names collide: {names}")
    return Plan(
        study=name,
        namespace=study.metadata.namespace or "default",
        prepare_name=dns_name(name, STAGE_ABBR[Stage.PREPARE], limit=RAYJOB_NAME_MAX),
        fingerprint=dataset_fingerprint(study),
        cells=tuple(cells),
    )


def job_name(cell_name: str, stage: Stage, attempt: int = 0) -> str:
    """RayJob name of one attempt of one stage; the first attempt has no suffix."""
    suffix = f"a{attempt}" if attempt else ""
    return dns_name(cell_name, STAGE_ABBR[stage], suffix, limit=RAYJOB_NAME_MAX)


def shards_uri(study: ScalingStudy, fingerprint: str) -> str:
    return join_uri(study.spec.output, "prep", fingerprint)


def cell_spec(study: ScalingStudy, p: Plan, cell: Cell | None, stage: Stage, attempt: int = 0) -> CellSpec:
    """The cell spec one RayJob receives. ``cell`` is None for the study's prepare stage."""
    spec = study.spec
    shards = shards_uri(study, p.fingerprint)
    common = dict(
        study=p.study, namespace=p.namespace, stage=stage, attempt=attempt, seed=spec.dataset.split.seed,
        dataset=spec.dataset, prep_size=spec.prep_size, shards=shards, budget=spec.compute_budget,
        attention=spec.attention, tracking=spec.tracking,
    )
    if cell is None:
        if stage is not Stage.PREPARE:
            raise ValueError("only the prepare stage has no cell")
        return CellSpec(cell=p.prepare_name, output=shards, resources=spec.resources.prepare, **common)
    if stage not in cell.stages:
        raise ValueError(f"cell {cell.name} has no {stage} stage")
    enc = next(e for e in spec.encoders if e.name == cell.encoder)
    output = join_uri(spec.output, cell.name)
    if stage is Stage.PRETRAIN:
        return CellSpec(cell=cell.name, encoder=enc, size=cell.size, replicate=cell.replicate, output=output,
                        weights=enc.init, resources=spec.resources.pretrain, **common)
    weights = enc.init if cell.baseline else join_uri(output, ENCODER_FILE)
    return CellSpec(cell=cell.name, encoder=enc, size=cell.size, replicate=cell.replicate, output=output,
                    weights=weights,
                    tasks=spec.evaluation.tasks, sweep=spec.evaluation.sweep,
                    resources=spec.resources.evaluate, **common)
