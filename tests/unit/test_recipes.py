"""The recipe defaults (radscale/recipes.py) and the trainer pieces that follow them: schedules,
parameter groups, the frozen last layer, drop path, the logit-scale clamp, UniCL classes and the
cross-worker centre."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from radscale import recipes
from radscale.spec import EncoderSpec

ROOT = Path(__file__).resolve().parents[2]


def dino(**kw) -> EncoderSpec:
    return EncoderSpec.model_validate({"name": "d", "paradigm": "dino", "model": "vit_base_patch14_dinov2",
                                       "imageSize": 224, **kw})


def clip_arm(**kw) -> EncoderSpec:
    return EncoderSpec.model_validate({"name": "c", "paradigm": "clip", "model": "vit_base_patch16_clip_224",
                                       "imageSize": 224, **kw})


# ---- the table and its resolution ------------------------------------------------------------------


def test_recipes_module_does_not_import_torch():
    code = "import sys, radscale.recipes, radscale.spec; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_dino_defaults_are_dinov2s():
    r = recipes.resolve(dino(), 1000)
    assert (r.warmup_steps, r.teacher_temperature_warmup_steps, r.freeze_last_layer_steps) == (100, 300, 10)
    assert (r.weight_decay, r.weight_decay_end) == (0.04, 0.4)
    assert (r.layer_decay, r.patch_embed_lr_mult) == (0.9, 0.2)
    assert (r.teacher_temperature_start, r.teacher_temperature) == (0.04, 0.07)
    assert (r.teacher_momentum, r.teacher_momentum_end) == (0.992, 1.0)
    assert (r.drop_path_rate, r.drop_path_uniform) == (0.3, True)
    assert r.betas == (0.9, 0.999)
    assert "ssl_default_config.yaml" in r.sources["optimizer.weightDecayEnd"]
    assert recipes.resolve(dino(model="vit_large_patch14_dinov2"), 1000).drop_path_rate == 0.4
    assert recipes.resolve(dino(model="vit_giant_patch14_dinov2"), 1000).drop_path_rate == 0.4


def test_clip_defaults_are_open_clips():
    r = recipes.resolve(clip_arm(), 1000)
    assert (r.weight_decay, r.weight_decay_end) == (0.2, 0.2)  # constant
    assert (r.layer_decay, r.patch_embed_lr_mult, r.freeze_last_layer_steps) == (1.0, 1.0, 0)
    assert r.teacher_temperature is None and r.drop_path_rate == 0.0
    assert (r.betas, r.eps) == ((0.9, 0.98), 1e-6)
    assert r.warmup_steps == 100  # 10% of a short budget ...
    assert recipes.resolve(clip_arm(), 500_000).warmup_steps == 10_000  # ... open_clip's 10,000 steps at most


def test_spec_fields_override_the_recipe():
    r = recipes.resolve(dino(optimizer={"warmupFraction": 0.2, "weightDecay": 0.05, "weightDecayEnd": 0.1,
                                        "layerDecay": 0.75, "patchEmbedLrMult": 0.5,
                                        "freezeLastLayerFraction": 0.05},
                             teacher={"temperatureStart": 0.03, "temperature": 0.06,
                                      "temperatureWarmupFraction": 0.5, "momentum": 0.99},
                             dropPathRate=0.1), 200)
    assert (r.warmup_steps, r.weight_decay, r.weight_decay_end, r.layer_decay) == (40, 0.05, 0.1, 0.75)
    assert (r.patch_embed_lr_mult, r.freeze_last_layer_steps, r.drop_path_rate) == (0.5, 10, 0.1)
    assert (r.teacher_temperature_start, r.teacher_temperature, r.teacher_temperature_warmup_steps) == (0.03, 0.06, 100)
    assert (r.teacher_momentum, r.teacher_momentum_end) == (0.99, 1.0)
    assert r.sources["optimizer.layerDecay"] == "spec" and r.sources["teacher.momentumEnd"] != "spec"
    assert recipes.resolve(dino(optimizer={"warmupSteps": 7, "warmupFraction": 0.5}), 200).warmup_steps == 7
    # a start raised above the recipe's end keeps the schedule non-decreasing
    assert recipes.resolve(dino(optimizer={"weightDecay": 0.5}), 200).weight_decay_end == 0.5
    assert recipes.resolve(clip_arm(optimizer={"weightDecay": 0.1}), 200).weight_decay_end == 0.1


def test_docs_list_every_default_beside_its_source():
    text = (ROOT / "docs" / "pretraining.md").read_text()
    assert recipes.markdown_table() in text, "docs/pretraining.md: paste recipes.markdown_table()"


# ---- schedules -----------------------------------------------------------------------------------------


def test_lr_and_weight_decay_follow_the_cosine_formulas():
    from radscale.trainer import optim

    r = recipes.resolve(dino(optimizer={"lr": 1e-3, "minLr": 1e-6}), 1000)
    w, n = r.warmup_steps, r.steps
    assert optim.lr_at(0, r) == pytest.approx(1e-3 / w)
    assert optim.lr_at(w - 1, r) == pytest.approx(1e-3)  # warm-up ends at the peak
    assert optim.lr_at(w, r) == pytest.approx(1e-3)  # the cosine starts there
    last = 1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + math.cos(math.pi * (n - 1 - w) / (n - w)))
    assert optim.lr_at(n - 1, r) == pytest.approx(last, rel=1e-9)
    mid = 1e-6 + (1e-3 - 1e-6) * 0.5
    assert optim.lr_at(w + (n - w) // 2, r) == pytest.approx(mid)
    assert optim.wd_at(0, r) == pytest.approx(0.04)
    assert optim.wd_at(n // 2, r) == pytest.approx(0.22)
    assert optim.wd_at(n - 1, r) == pytest.approx(0.4 + (0.04 - 0.4) * 0.5 * (1 + math.cos(math.pi * (n - 1) / n)))
    c = recipes.resolve(clip_arm(), 1000)
    assert optim.wd_at(0, c) == optim.wd_at(999, c) == 0.2


def test_teacher_schedules_follow_the_recipe():
    from radscale.trainer.objectives import teacher

    r = recipes.resolve(dino(), 1000)
    t = r.teacher_temperature_warmup_steps
    temp = [teacher.teacher_temperature(s, t, r.teacher_temperature_start, r.teacher_temperature)
            for s in (0, t // 2, t, 999)]
    assert temp == pytest.approx([0.04, 0.055, 0.07, 0.07])
    m = [teacher.teacher_momentum(s, r.steps, r.teacher_momentum, r.teacher_momentum_end) for s in (0, 500, 999)]
    assert m == pytest.approx([0.992, 0.996, 1.0 + (0.992 - 1.0) * 0.5 * (1 + math.cos(math.pi * 999 / 1000))])


# ---- parameter groups and the frozen last layer --------------------------------------------------------


class Toy(nn.Module):
    """A DINO student's shape: a 2-block ViT tower, a mask token, a head with a last layer."""

    def __init__(self):
        super().__init__()
        import timm

        self.encoder = nn.Module()
        self.encoder.model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0,
                                               img_size=28, depth=2, embed_dim=32, num_heads=2)
        self.mask_token = nn.Parameter(torch.zeros(32))
        self.head = nn.Module()
        self.head.mlp = nn.Linear(32, 16)
        self.head.last_layer = nn.Linear(16, 8, bias=False)

    def forward(self, x):
        return self.head.last_layer(self.head.mlp(self.encoder.model(x)))


def _scales(model: nn.Module, groups: list[dict]) -> dict[str, float]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}


def test_layer_decay_and_patch_embed_multipliers():
    from radscale.trainer import optim

    model = Toy()
    scales = _scales(model, optim.param_groups(model, model.encoder.model, layer_decay=0.9, patch_embed_lr_mult=0.2))
    depth = 2
    for i in range(depth):  # DINOv2: block i is layer i + 1, scale decay ** (depth + 1 - (i + 1))
        assert scales[f"encoder.model.blocks.{i}.mlp.fc1.weight"] == pytest.approx(0.9 ** (depth - i))
        assert scales[f"encoder.model.blocks.{i}.norm1.bias"] == pytest.approx(0.9 ** (depth - i))
    assert scales["encoder.model.cls_token"] == pytest.approx(0.9 ** (depth + 1))
    assert scales["encoder.model.patch_embed.proj.weight"] == pytest.approx(0.2 * 0.9 ** (depth + 1))
    assert scales["encoder.model.patch_embed.proj.bias"] == pytest.approx(0.2 * 0.9 ** (depth + 1))
    assert scales["mask_token"] == pytest.approx(0.9 ** (depth + 1))  # with the embeddings, as in DINOv2
    assert scales["encoder.model.blocks.1.mlp.fc1.weight"] == pytest.approx(0.9)  # the last block decays too
    assert scales["encoder.model.norm.weight"] == 1.0
    assert scales["head.mlp.weight"] == scales["head.last_layer.weight"] == 1.0
    assert len(scales) == sum(1 for p in model.parameters() if p.requires_grad)


def test_no_weight_decay_on_biases_norms_and_logit_scale():
    from radscale.trainer import optim

    model = Toy()
    model.logit_scale = nn.Parameter(torch.ones(1))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in optim.param_groups(model, model.encoder.model, 0.9) if g["wd_on"]
               for p in g["params"]}
    assert "encoder.model.blocks.0.attn.qkv.weight" in decayed and "head.last_layer.weight" in decayed
    never = {"logit_scale", "head.mlp.bias", "encoder.model.norm.weight", "encoder.model.blocks.0.norm1.weight"}
    assert not never & decayed


def test_last_layer_frozen_exactly_for_the_first_k_steps_then_trained():
    from radscale.trainer import optim

    torch.manual_seed(0)
    model = Toy()
    r = recipes.resolve(dino(optimizer={"lr": 1e-2, "warmupSteps": 0, "freezeLastLayerFraction": 0.3}), 10)
    assert r.freeze_last_layer_steps == 3
    opt = optim.build(model, model.encoder.model, r)
    x = torch.randn(2, 3, 28, 28)
    last, mlp = model.head.last_layer.weight, model.head.mlp.weight
    for step in range(5):
        before_last, before_mlp = last.detach().clone(), mlp.detach().clone()
        optim.schedule(opt, step, r)
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        assert last.grad is not None and last.grad.abs().sum() > 0
        opt.step()
        assert not torch.equal(mlp, before_mlp), f"the rest trains from step 0 (step {step})"
        if step < 3:
            assert torch.equal(last, before_last), f"last layer moved at step {step}, inside the freeze"
        else:
            assert not torch.equal(last, before_last), f"last layer still frozen at step {step}"


# ---- drop path -----------------------------------------------------------------------------------------


def test_drop_path_uniform_on_the_student_none_on_the_teacher():
    import copy

    from radscale.trainer.models.encoders import DropPath, build_encoder, set_drop_path

    enc = build_encoder("vit_small_patch14_dinov2", img_size=28, drop_path_rate=0.3)
    slots = [getattr(b, a) for b in enc.model.blocks for a in ("drop_path1", "drop_path2")]
    assert all(isinstance(s, DropPath) and s.drop_prob == 0.3 for s in slots)  # block 0 too: uniform
    teacher = copy.deepcopy(enc)
    set_drop_path(teacher, 0.0)
    assert all(isinstance(getattr(b, a), nn.Identity) for b in teacher.model.blocks
               for a in ("drop_path1", "drop_path2"))
    linear = build_encoder("vit_small_patch14_dinov2", img_size=28, drop_path_rate=0.3, drop_path_uniform=False)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in linear.model.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)  # timm's linear rise


def test_drop_path_in_a_packed_batch_drops_whole_sequences():
    from radscale.trainer.models.encoders import DropPath, packed

    torch.manual_seed(0)
    cu = torch.tensor([0, 5, 9, 16, 20, 31, 40], dtype=torch.int32)
    dp = DropPath(0.5).train()
    with packed(cu, 11):
        out = dp(torch.ones(1, 40, 4))
    values = [out[0, a:b].unique().tolist() for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)]
    assert all(v in ([0.0], [2.0]) for v in values), values  # each sequence kept (x 1/(1-p)) or dropped whole
    assert {v[0] for v in values} == {0.0, 2.0}  # and they differ: not the whole batch at once
    assert torch.equal(dp.eval()(torch.ones(1, 40, 4)), torch.ones(1, 40, 4))


# ---- logit scale ---------------------------------------------------------------------------------------


def test_logit_scale_clamped_after_the_step_and_can_come_back_down():
    from radscale.trainer import paradigms
    from radscale.trainer.objectives import clip

    holder = nn.Module()
    holder.logit_scale = clip.LogitScale()
    param = holder.logit_scale.log_scale
    opt = torch.optim.SGD([param], lr=1.0)
    (-holder.logit_scale()).backward()  # pushes the scale up, past 100
    opt.step()
    assert param.item() > math.log(100)
    paradigms.ContrastiveObjective.after_step(None, holder, 0)
    assert param.item() == pytest.approx(math.log(100)) and holder.logit_scale().item() == pytest.approx(100.0)
    # at the bound the forward still has a gradient, so a loss that wants a lower scale lowers it
    opt.zero_grad()
    holder.logit_scale().backward()
    assert param.grad.item() > 0
    opt.step()
    paradigms.ContrastiveObjective.after_step(None, holder, 0)
    assert param.item() < math.log(100)


# ---- UniCL classes -------------------------------------------------------------------------------------


def test_unicl_classes_from_label_vectors():
    from radscale.trainer.objectives import unicl

    labels = torch.tensor([[1, 0, 1], [1, 0, 1], [0, 0, 0], [0, 0, 0], [-1, 0, 0], [1, 0, 0], [1, -1, 1]],
                          dtype=torch.float32)
    c = unicl.label_classes(labels).tolist()
    assert c[0] == c[1] == c[6]  # the same positives share a class (uncertain is not a positive)
    assert len({c[0], c[2], c[3], c[4], c[5]}) == 5  # no positive: each its own class; other positives differ
    t = unicl.multilabel_targets(unicl.label_classes(labels), labels)
    assert t[0, :7].tolist() == [1, 1, 0, 0, 0, 0, 1] and t[2, :7].tolist() == [0, 0, 1, 0, 0, 0, 0]
    assert unicl.label_classes(torch.zeros(3, 0)).tolist() == [0, 1, 2]
    # the loss: two pairs with the same labels pull each other's reports; different texts, same class
    img, rep = torch.randn(2, 8), torch.randn(2, 8)
    same = unicl.multilabel_unicl_loss(img, rep, torch.randn(1, 8), torch.tensor([[1.0], [1.0]]), torch.tensor(10.0))
    apart = unicl.multilabel_unicl_loss(img, rep, torch.randn(1, 8), torch.tensor([[0.0], [0.0]]), torch.tensor(10.0))
    assert not torch.isclose(same, apart)


# ---- the centre across workers -------------------------------------------------------------------------


def _centre_worker(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from radscale.trainer.objectives import dino

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        rows = torch.full((1 if rank == 0 else 3, 2), float(rank))  # rank 0: 1 row of 0, rank 1: 3 rows of 1
        mean = dino.worker_mean(rows)
        empty = dino.worker_mean(torch.zeros(0 if rank == 0 else 2, 2) + 4.0)
        if rank == 0:
            torch.save({"mean": mean, "empty": empty}, out)
    finally:
        dist.destroy_process_group()


def test_centre_is_the_mean_of_per_worker_means(tmp_path):
    import torch.multiprocessing as mp

    from radscale.trainer.objectives import dino

    out = tmp_path / "out.pt"
    mp.spawn(_centre_worker, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    got = torch.load(out)
    assert got["mean"].tolist() == [[0.5, 0.5]]  # (0 + 1) / 2, not count-weighted (0 + 3) / 4
    assert got["empty"].tolist() == [[4.0, 4.0]]  # a worker without rows is left out, not NaN
    assert dino.worker_mean(torch.tensor([[1.0, 3.0], [3.0, 5.0]])).tolist() == [[2.0, 4.0]]  # one worker
