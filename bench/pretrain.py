"""Ray Train overhead and loader stalls: one Ray Train worker against a plain torch loop, same model,
same data, same steps.

    .venv/bin/python bench/pretrain.py --shards file://.demo/out/prep/<fp> [--paradigm dino] [--steps 30]

`make demo` prepares the shards it reads (the path is printed by `radscale plan
manifests/examples/study-local.yaml --cell cxr-local-prep`). Reported: steps/s of each, their
ratio (target >= 0.9), and the fraction of step time spent waiting for the next batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def cell_for(args: argparse.Namespace) -> Any:
    import subprocess

    from radscale.cells import CellSpec

    study = REPO / "manifests" / "examples" / "study-local.yaml"
    name = f"cxr-local-{args.paradigm}-{args.size}"
    text = subprocess.run([str(Path(sys.executable).parent / "radscale"), "plan", str(study), "--cell", name,
                           "--stage", "pretrain"], capture_output=True, text=True, check=True).stdout
    from radscale.trainer.pretrain import localise

    cell = localise(CellSpec.model_validate_json(text))  # absolute paths: Ray workers run elsewhere
    out = tempfile.mkdtemp(prefix="rs-bench-pt-")
    shards = localise(cell.model_copy(update={"shards": args.shards})).shards if args.shards else cell.shards
    return cell.model_copy(update={
        "shards": shards, "output": f"file://{out}", "attention": "sdpa",
        "budget": cell.budget.model_copy(update={"steps": args.steps, "checkpoint_every": args.steps}),
        "resources": cell.resources.model_copy(update={"workers": 1, "cpus": 1})})


def timed_loop(cell: Any, device: Any, steps: int, rank: int = 0, world: int = 1) -> dict[str, float]:
    """The training step of trainer/pretrain.py without Ray: (seconds, seconds waiting for data)."""
    import torch

    from radscale import recipes
    from radscale.trainer import optim, paradigms
    from radscale.trainer.data.loader import PreparedDataset

    torch.manual_seed(0)
    labels = tuple(cell.dataset.columns.labels)
    recipe = recipes.resolve(cell.encoder, steps)
    model, objective = paradigms.build(cell, labels, recipe=recipe)
    optimizer = optim.build(model, model.encoder.model, recipe)
    model.to(device)
    objective.to(device)
    data = PreparedDataset(cell.shards, labels=labels)
    per = cell.budget.global_batch_size // world
    step, wait, epoch = 0, 0.0, 0
    start = time.perf_counter()
    while step < steps:
        it = data.iter_batches(cell.size, batch_size=per, rank=rank, world_size=world, epoch=epoch, seed=cell.seed)
        while step < steps:
            t = time.perf_counter()
            batch = next(it, None)
            wait += time.perf_counter() - t
            if batch is None or len(batch.row_ids) < per:
                break
            optim.schedule(optimizer, step, recipe)
            loss, _ = objective.loss(model, batch, step, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            objective.after_step(model, step)
            step += 1
        epoch += 1
    return {"seconds": time.perf_counter() - start, "wait": wait}


def ray_loop(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from radscale.cells import CellSpec

    torch.set_num_threads(1)
    cell = CellSpec.model_validate_json(config["cell"])
    ctx = ray.train.get_context()
    out = timed_loop(cell, ray.train.torch.get_device(), config["steps"], ctx.get_world_rank(), ctx.get_world_size())
    with tempfile.TemporaryDirectory() as d:  # Ray Train V2 keeps the metrics of checkpointed reports
        Path(d, "timing.json").write_text(json.dumps(out))
        ray.train.report(out, checkpoint=ray.train.Checkpoint.from_directory(d))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", help="prepared shards URI (default: the local example's)")
    ap.add_argument("--paradigm", default="dino", choices=["dino", "unicl"])
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    os.environ.pop("TRITON_INTERPRET", None)
    import ray
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cell = cell_for(args)
    torch.set_num_threads(1)  # one worker = one core in both runs
    timed_loop(cell, torch.device("cpu"), 2)  # warm-up: imports, allocator
    plain = timed_loop(cell, torch.device("cpu"), args.steps)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    trainer = TorchTrainer(ray_loop, train_loop_config={"cell": cell.to_json(), "steps": args.steps},
                           scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                           run_config=RunConfig(name="bench", storage_path=tempfile.mkdtemp(prefix="rs-bench-")))
    t = time.perf_counter()
    result = trainer.fit()
    total = time.perf_counter() - t
    ray.shutdown()
    rt = result.metrics
    out = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "paradigm": args.paradigm, "size": args.size, "steps": args.steps,
        "global_batch": cell.budget.global_batch_size, "image_size": cell.encoder.image_size,
        "plain_steps_per_s": args.steps / plain["seconds"], "ray_steps_per_s": args.steps / rt["seconds"],
        "plain_stall": plain["wait"] / plain["seconds"], "ray_stall": rt["wait"] / rt["seconds"],
        "ray_fit_wall_s": total,
    }
    out["ratio"] = out["ray_steps_per_s"] / out["plain_steps_per_s"]
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
