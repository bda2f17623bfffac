"""The ``radscale`` command line.

    radscale validate FILE...        exit 0, or 1 with one 'path.to.field: message' line per problem
    radscale crd [--docs]            the CRD YAML (or the API reference markdown) on stdout
    radscale plan FILE [--json]      the planned cells and their RayJobs
    radscale plan FILE --cell NAME [--stage S]   one cell spec, as its RayJob receives it
    radscale phantom --out DIR --images N [--seed S] [--size PX] [--version 2] [--style foreign]   a phantom corpus
    radscale run FILE [--status-out F] [--num-cpus N] [--no-dashboard]   the whole study on local Ray
    radscale --version
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from radscale import __version__
from radscale.operator import api, crd, design, logs, plan, validation


def _studies(path: str) -> list[api.ScalingStudy]:
    docs = validation.read_documents(path)
    if not docs:
        raise validation.SpecError([validation.Problem(".", f"{path}: no ScalingStudy found")])
    return [validation.load_study(d) for d in docs]


def cmd_validate(args: argparse.Namespace) -> int:
    bad = 0
    for path in args.files:
        try:
            docs = validation.read_documents(path)
        except (OSError, validation.SpecError) as exc:
            print(f"{path}: {exc}", file=sys.stderr) if isinstance(exc, OSError) else print(exc)
            bad += 1
            continue
        if not docs:  # empty, only comments, or only '---': nothing was validated, so nothing is valid
            print(f"{path}: no ScalingStudy found", file=sys.stderr)
            bad += 1
            continue
        for i, doc in enumerate(docs):
            problems = validation.problems_of(doc)
            where = path if len(docs) == 1 else f"{path} (document {i + 1})"
            if problems:
                bad += 1
                for p in problems:
                    print(p)
                print(f"{where}: {len(problems)} problem(s)", file=sys.stderr)
            elif not args.quiet:
                print(f"{where}: valid", file=sys.stderr)
    return 1 if bad else 0


def cmd_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(crd.api_reference_markdown() if args.docs else crd.render_yaml())
    return 0


def _plan_rows(study: api.ScalingStudy) -> tuple[plan.Plan, list[dict[str, object]]]:
    p = plan.plan(study)
    rows = []
    for c in p.cells:
        rows.append({
            "cell": c.name,
            "encoder": c.encoder,
            "size": c.size,
            "replicate": c.replicate,
            "stages": [s.value for s in c.stages],
            "rayJobs": [plan.job_name(c.name, s) for s in c.stages],
        })
    return p, rows


def _cell_json(study: api.ScalingStudy, name: str, stage: str | None) -> str:
    """The cell spec a RayJob of this study would receive (for debugging, or running a stage by hand)."""
    p = plan.plan(study)
    if name == p.prepare_name:
        return plan.cell_spec(study, p, None, api.Stage.PREPARE).to_json()
    cell = p.cell(name)
    chosen = api.Stage(stage) if stage else cell.stages[0]
    return plan.cell_spec(study, p, cell, chosen).to_json()


def cmd_plan(args: argparse.Namespace) -> int:
    try:
        studies = _studies(args.file)
    except (OSError, validation.SpecError) as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.cell:
        try:
            print(_cell_json(studies[0], args.cell, args.stage))
        except (KeyError, ValueError) as exc:
            names = [plan.plan(studies[0]).prepare_name, *(c.name for c in plan.plan(studies[0]).cells)]
            print(f"no such cell/stage {args.cell!r} {args.stage or ''} ({exc}); cells: {', '.join(names)}",
                  file=sys.stderr)
            return 1
        return 0
    out = []
    for study in studies:
        p, rows = _plan_rows(study)
        spec = study.spec
        budget = spec.compute_budget
        images = budget.steps * budget.global_batch_size
        designs = {}
        for enc in spec.encoders:
            ad = spec.design_of(enc)
            if ad is not None:
                designs[enc.name] = {"initial": list(design.initial_sizes(ad)),
                                     "candidates": list(design.candidates(ad)),
                                     "maxCells": ad.max_cells, "target": ad.target.value}
        summary = {
            "study": p.study,
            "prepare": p.prepare_name,
            "fingerprint": p.fingerprint,
            "shards": plan.shards_uri(study, p.fingerprint),
            "budget": {"steps": budget.steps, "globalBatchSize": budget.global_batch_size, "images": images},
            "cells": rows,
            "designs": designs,
        }
        out.append(summary)
        if args.json:
            continue
        from rich.console import Console
        from rich.table import Table

        console = Console(width=None if sys.stdout.isatty() else 200)
        table = Table(title=f"{p.study}: {len(rows)} cells, prepare {p.prepare_name} (shards {p.fingerprint})")
        for col in ("cell", "encoder", "size", "replicate", "epochs", "RayJobs (in order)"):
            table.add_column(col, justify="right" if col in ("size", "replicate", "epochs") else "left", no_wrap=True)
        for r in rows:
            size = int(r["size"])  # type: ignore[call-overload]
            epochs = f"{images / size:.1f}" if size else "-"
            table.add_row(str(r["cell"]), str(r["encoder"]), f"{size:,}" if size else "0 (baseline)",
                          str(r["replicate"]), epochs,
                          " -> ".join(r["rayJobs"]))  # type: ignore[arg-type]
        console.print(table)
        console.print(f"constant compute: {budget.steps:,} steps x {budget.global_batch_size:,} = "
                      f"{images:,} images per pretraining cell")
        for name, d in designs.items():
            console.print(f"{name}: sizes by sequential design ({d['target']}): round 0 above, then up to "
                          f"{d['maxCells']} cells in all from {d['candidates']} (docs/method.md)")
    if args.json:
        print(json.dumps(out if len(out) > 1 else out[0], indent=2))
    return 0


def cmd_phantom(args: argparse.Namespace) -> int:
    # The generator is data-plane code: run it as a child process, as RayJobs run the trainer,
    # so the control plane imports nothing of the data plane.
    import subprocess

    argv = ["--out", args.out, "--images", str(args.images), "--seed", str(args.seed), "--size", str(args.size)]
    if args.phantom_version != 1 or args.style != "default":  # the default call stays as it always was
        argv += ["--version", str(args.phantom_version), "--style", args.style]
    return subprocess.call([sys.executable, "-m", "radscale.trainer.data.phantom", *argv])


def cmd_run(args: argparse.Namespace) -> int:
    from radscale.operator import display, local

    view = display.make()
    try:
        return local.run(args.file, local.Options(status_out=args.status_out, num_cpus=args.num_cpus,
                                                  dashboard=not args.no_dashboard), view)
    except (OSError, validation.SpecError, local.RunError) as exc:
        view.stop()
        if isinstance(exc, validation.SpecError):  # name the file, then each field
            print(f"radscale run: {args.file}: {len(exc.problems)} problem(s)", file=sys.stderr)
            for p in exc.problems:
                print(f"  {p}", file=sys.stderr)
        else:
            print(f"radscale run: {logs.safe_str(exc)}", file=sys.stderr)  # never what a file held
        return 2
    finally:
        view.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radscale", description="Data-scaling studies of radiology foundation models."
    )
    parser.add_argument("--version", action="version", version=f"radscale {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check ScalingStudy files offline")
    p.add_argument("files", nargs="+")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing for valid files")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("crd", help="print the CRD YAML")
    p.add_argument("--docs", action="store_true", help="print the API reference (markdown) instead")
    p.set_defaults(func=cmd_crd)

    p = sub.add_parser("plan", help="print the planned cells of a study")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--cell", help="print this cell's spec (JSON) as its RayJob receives it")
    p.add_argument("--stage", choices=[s.value for s in api.Stage], help="with --cell: which stage")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("phantom", help="write a phantom chest X-ray corpus (DICOM + manifest)")
    p.add_argument("--out", required=True)
    p.add_argument("--images", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--version", dest="phantom_version", type=int, choices=(1, 2), default=1,
                   help="phantom version: 1 the original corpus, 2 the long tail of subtypes")
    p.add_argument("--style", choices=("default", "foreign"), default="default",
                   help="foreign: another site's scanner look and patient mix")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("run", help="run (or resume) a whole study on local Ray, no cluster")
    p.add_argument("file")
    p.add_argument("--status-out", help="also write the status (the CR's .status schema) to this file")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("--no-dashboard", action="store_true", help="start the local Ray without its dashboard")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
