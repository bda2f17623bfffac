"""MI2's image tower: a timm DaViT with radscale's attention on its window attention, pooled features
for the probes and the last stage for segmentation; forward and backward, init from a file, and a
baseline evaluation cell on prepared phantom shards."""

from __future__ import annotations

import copy
import logging

import pytest
import timm
import torch

from radscale.operator import api, plan
from radscale.trainer.evaluate import features, tasks
from radscale.trainer.models import checkpoints, encoders
from radscale.trainer.models.encoders import RadscaleWindowAttention, build_encoder


def test_window_attention_equals_timms():
    torch.manual_seed(0)
    ref = timm.models.davit.WindowAttention(96, (7, 7), num_heads=3).eval()
    ours = timm.models.davit.WindowAttention(96, (7, 7), num_heads=3).eval()
    ours.load_state_dict(ref.state_dict())
    assert encoders.swap_attention(ours, "triton") == 1 and type(ours) is RadscaleWindowAttention
    x = torch.randn(6, 49, 96)  # 6 windows of 7 x 7, head_dim 32
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_window_attention_backward_equals_sdpas():
    torch.manual_seed(4)
    mods = [timm.models.davit.WindowAttention(64, (7, 7), num_heads=2) for _ in range(2)]
    mods[1].load_state_dict(mods[0].state_dict())
    encoders.swap_attention(mods[0], "triton")
    encoders.swap_attention(mods[1], "sdpa")
    x = torch.randn(4, 49, 64)
    xs = [x.clone().requires_grad_(True) for _ in mods]
    for m, xi in zip(mods, xs, strict=True):
        (m(xi) * torch.linspace(-1, 1, 64)).sum().backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-4, atol=1e-5)
    for (n, p), q in zip(mods[0].named_parameters(), mods[1].parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=n)


def test_window_attention_without_a_kernel_shape_uses_sdpa_and_says_why(caplog, monkeypatch):
    monkeypatch.setattr("radscale.trainer.kernels.attention.flash_attention",
                        lambda *a, **k: pytest.fail("triton used for head_dim 24"))
    module = timm.models.davit.WindowAttention(48, (7, 7), num_heads=2)  # head_dim 24: no kernel
    encoders._note_kept.cache_clear()
    with caplog.at_level(logging.INFO, logger="radscale.trainer.models.encoders"):
        encoders.swap_attention(module, "triton")
        encoders.swap_attention(timm.models.davit.WindowAttention(48, (7, 7), num_heads=2), "triton")
    notes = [r.getMessage() for r in caplog.records if "head_dim 24" in r.getMessage()]
    assert len(notes) == 1 and "SDPA" in notes[0]
    assert module.attn_backend == "sdpa"
    module(torch.randn(2, 49, 48)).sum().backward()


def test_davit_forward_and_backward_match_sdpa_and_reach_every_parameter():
    """Against a float64 copy: DaViT's fp32 gradients of single tensors are ~1% off float64 with SDPA
    too (deep LayerNorm chains at random init), so the whole gradient is compared by direction; the
    kernel's own gradients are checked tightly module by module above."""
    torch.manual_seed(1)
    ours = build_encoder("davit_tiny", img_size=64, attention_backend="triton").train()
    ref = build_encoder("davit_tiny", img_size=64, attention_backend="sdpa").train()
    ref.load_state_dict(ours.state_dict())
    exact = copy.deepcopy(ref).double()
    assert sum(type(m) is RadscaleWindowAttention for m in ours.modules()) == 6  # one per spatial block
    x = torch.randn(2, 3, 64, 64)
    grads, outs = [], []
    for enc, inp in ((ours, x), (ref, x), (exact, x.double())):
        f = enc(inp)
        assert f.cls.shape == (2, 768) and f.patches.shape == (2, 4, 768)  # 64 px / 32: a 2 x 2 last stage
        (f.cls.square().sum() + f.patches.mean()).backward()
        outs.append(f.cls.detach().double())
        grads.append({n: p.grad.double() for n, p in enc.named_parameters()})
    torch.testing.assert_close(outs[0], outs[2], rtol=1e-4, atol=1e-4)
    assert all(g is not None for g in grads[0].values())

    def cosine(i: int) -> float:  # the whole gradient, against float64
        flat = [torch.cat([g.flatten() for g in grads[j].values()]) for j in (i, 2)]
        return float(torch.nn.functional.cosine_similarity(flat[0], flat[1], dim=0))

    assert cosine(0) > 0.99999 and cosine(1) > 0.99999, (cosine(0), cosine(1))
    with torch.no_grad():  # pooled features are what timm's own classifier reads
        torch.testing.assert_close(ref.eval()(x).cls, ref.model.forward_head(ref.model.forward_features(x),
                                                                            pre_logits=True))


def test_davit_multicrop_and_bad_sizes_are_named():
    enc = build_encoder("davit_tiny", img_size=64, attention_backend="sdpa")
    with pytest.raises(ValueError, match=r"multi-crop .* needs a ViT"):
        enc.forward_multicrop([torch.randn(1, 3, 64, 64)])
    with pytest.raises(ValueError, match="imageSize 48 must be a multiple of it"):
        build_encoder("davit_tiny", img_size=48)


def test_davit_init_from_a_file(tmp_path):
    src = build_encoder("davit_tiny", img_size=64, attention_backend="sdpa").eval()
    pre = checkpoints.Preprocess.of([0.45], [0.22], 64, "test")
    encoders.save_weights(src.model, str(tmp_path / "davit.safetensors"), preprocess=pre)
    dst = build_encoder("davit_tiny", img_size=64, attention_backend="sdpa",
                        weights=str(tmp_path / "davit.safetensors")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(src(x).cls, dst(x).cls)
        torch.testing.assert_close(src(x).patches, dst(x).patches)
    assert dst.preprocess.mean == (0.45,) * 3
    other = build_encoder("davit_small", img_size=64, attention_backend="sdpa")
    encoders.save_weights(other.model, str(tmp_path / "small.safetensors"))
    with pytest.raises(encoders.WeightsError, match=r"unexpected keys: stages\.2\.blocks\.3"):
        build_encoder("davit_tiny", img_size=64, weights=str(tmp_path / "small.safetensors"))


@pytest.fixture(scope="module")
def local_ray():
    from tests.support import local_ray as ray_scope

    with ray_scope(object_store_mb=128):  # shard preparation runs on Ray Data
        yield


def test_davit_baseline_evaluation_cell(local_ray, tmp_path):
    """A unicl DaViT arm's baseline cell: its init (with its normalisation) over prepared phantom shards,
    features cached, then a probe on the pooled features and a segmentation head on the last stage."""
    from radscale.trainer.data import phantom, shards
    from radscale.trainer.data.manifest import Columns, read_manifest

    corpus = tmp_path / "corpus"
    phantom.write_corpus(corpus, 80, seed=5, size=64)
    torch.manual_seed(2)
    init = build_encoder("davit_tiny", img_size=64, attention_backend="sdpa")
    encoders.save_weights(init.model, str(tmp_path / "mi2.safetensors"),
                          preprocess=checkpoints.Preprocess.of([0.5], [0.3], 64, "test"))
    doc = api.ScalingStudy.model_validate({
        "metadata": {"name": "mi2", "namespace": "ml"},
        "spec": {
            "dataset": {"uri": f"file://{corpus}",
                        "columns": {"report": "report", "labels": list(phantom.LABELS), "masks": ["catheter_mask"]},
                        "split": {"evalFraction": 0.5, "seed": 1}, "prepSize": 64},
            "sizes": [16], "computeBudget": {"steps": 2, "globalBatchSize": 8},
            "encoders": [{"name": "mi2", "paradigm": "unicl", "model": "davit_tiny", "imageSize": 64,
                          "init": str(tmp_path / "mi2.safetensors"),
                          "text": {"model": "text-tiny", "contextLength": 32, "embedDim": 32}}],
            "evaluation": {"tasks": [
                {"name": "devices", "kind": "classification", "labels": ["cvc", "ett"]},
                {"name": "catheter-seg", "kind": "segmentation", "maskColumn": "catheter_mask"}]},
            "output": f"file://{tmp_path}/out",
        },
    })
    p = plan.plan(doc)
    prep = plan.cell_spec(doc, p, None, api.Stage.PREPARE)
    man = read_manifest(f"file://{corpus}", "manifest.csv",
                        Columns(report="report", labels=phantom.LABELS, masks=("catheter_mask",)))
    shards.prepare(man, f"file://{corpus}", prep.shards, shards.PrepParams(prep_size=64, eval_fraction=0.5, seed=1))
    base = next(c for c in p.cells if c.baseline)
    cell = plan.cell_spec(doc, p, base, api.Stage.EVALUATE)
    assert cell.weights == str(tmp_path / "mi2.safetensors")
    data, cached = features.load(cell, torch.device("cpu"))
    assert not cached and data.patch == 32 and data.grid == (2, 2)
    train = data.splits["train"]
    assert train.cls.shape[1] == 768 and train.patches.shape[1:] == (4, 768)
    assert train.masks["catheter_mask"].shape[1:] == (64, 64)
    assert features.load(cell, torch.device("cpu"))[1]  # the second read is the cache
    for spec in cell.tasks:
        out = tasks.for_spec(spec, data).evaluate({"lr": 1e-2, "epochs": 2}, draws=8)
        headline = spec.headline_metric
        assert headline in out.metrics and 0.0 <= out.metrics[headline].value <= 1.0, out.metrics
