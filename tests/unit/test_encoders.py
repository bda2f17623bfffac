"""One suite over every supported encoder: the attention swap, multi-crop packing, weights from URIs."""

from __future__ import annotations

import functools

import fsspec
import pytest
import timm
import torch

from radscale.trainer.kernels.attention import attention
from radscale.trainer.models import encoders as enc_mod
from radscale.trainer.models.encoders import RadscaleAttention, WeightsError, build_encoder, load_weights

# (timm name, small test resolution, local-crop resolution): DINOv2 (RAD-DINO), CLIP tower (MI2), plain ViT.
SUPPORTED = [
    ("vit_small_patch14_dinov2", 56, 28),
    ("vit_base_patch16_clip_224", 48, 32),
    ("vit_tiny_patch16_224", 64, 32),
]
IDS = [s[0] for s in SUPPORTED]


@functools.cache
def pair(name: str, size: int) -> tuple[enc_mod.Encoder, torch.nn.Module]:
    """Our encoder (Triton attention) and timm's own model with the same weights."""
    torch.manual_seed(0)
    ours = build_encoder(name, img_size=size, attention_backend="triton").eval()
    theirs = timm.create_model(name, pretrained=False, num_classes=0, img_size=size, dynamic_img_size=True).eval()
    theirs.load_state_dict(ours.model.state_dict())
    return ours, theirs


@pytest.mark.parametrize(("name", "size", "_local"), SUPPORTED, ids=IDS)
def test_swap_keeps_parameters_and_keys(name, size, _local):
    ours, theirs = pair(name, size)
    assert ours.model.state_dict().keys() == theirs.state_dict().keys()
    attns = [m for m in ours.model.modules() if isinstance(m, timm.layers.attention.Attention)]
    assert attns and all(type(m) is RadscaleAttention for m in attns)


@pytest.mark.parametrize(("name", "size", "_local"), SUPPORTED, ids=IDS)
def test_each_attention_module_equals_timms(name, size, _local):
    """Block-level check: LayerScale (1e-5 in DINOv2) would hide attention errors in a whole-model check."""
    ours, theirs = pair(name, size)
    dim = ours.embed_dim
    x = torch.randn(2, 17, dim)
    for mine, ref in zip(ours.model.blocks, theirs.blocks, strict=True):
        with torch.no_grad():
            torch.testing.assert_close(mine.attn(x), ref.attn(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "size", "_local"), SUPPORTED, ids=IDS)
def test_forward_equals_timms_forward(name, size, _local):
    ours, theirs = pair(name, size)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats, ref = ours(x), theirs.forward_features(x)
    torch.testing.assert_close(feats.cls, ref[:, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats.patches, ref[:, ours.num_prefix_tokens:], rtol=1e-4, atol=1e-4)
    assert feats.patches.shape[1] == (size // theirs.patch_embed.patch_size[0]) ** 2


@pytest.mark.parametrize(("name", "size", "local"), SUPPORTED, ids=IDS)
def test_multicrop_equals_each_crop_size_alone(name, size, local):
    ours, _ = pair(name, size)
    globals_, locals_ = torch.randn(2, 3, size, size), torch.randn(4, 3, local, local)
    with torch.no_grad():
        g, loc = ours.forward_multicrop([globals_, locals_])
        g_alone, l_alone = ours(globals_), ours(locals_)
    for packed, alone in ((g, g_alone), (loc, l_alone)):
        torch.testing.assert_close(packed.cls, alone.cls, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(packed.patches, alone.patches, rtol=1e-5, atol=1e-5)
    assert loc.patches.shape[:2] == (4, (local // ours.model.patch_embed.patch_size[0]) ** 2)


def test_multicrop_backward_reaches_every_parameter_and_matches_sdpa():
    torch.manual_seed(1)
    ours = build_encoder("vit_small_patch14_dinov2", img_size=28, attention_backend="triton").train()
    ref = build_encoder("vit_small_patch14_dinov2", img_size=28, attention_backend="sdpa").train()
    ref.load_state_dict(ours.state_dict())
    crops = [torch.randn(2, 3, 28, 28), torch.randn(3, 3, 14, 14)]
    grads = []
    for enc in (ours, ref):
        out = enc.forward_multicrop(crops)
        loss = sum((f.cls.square().sum() + f.patches.mean()) for f in out)
        loss.backward()
        grads.append({n: p.grad for n, p in enc.named_parameters() if p.requires_grad})
    assert all(g is not None for g in grads[0].values())
    for n, g in grads[0].items():
        if n == "model.mask_token":
            continue
        torch.testing.assert_close(g, grads[1][n], rtol=1e-4, atol=1e-6, msg=n)


def test_grad_checkpointing_gives_the_same_result():
    torch.manual_seed(2)
    enc = build_encoder("vit_tiny_patch16_224", img_size=32, attention_backend="sdpa", grad_checkpointing=True)
    enc.train()
    x = [torch.randn(2, 3, 32, 32)]
    a = enc.forward_multicrop(x)[0].cls
    enc.set_grad_checkpointing(False)
    b = enc.forward_multicrop(x)[0].cls
    torch.testing.assert_close(a, b)
    a.sum().backward()


def test_packing_context_does_not_leak():
    assert enc_mod._PACKING.get() is None
    with enc_mod.packed(torch.tensor([0, 3], dtype=torch.int32), 3):
        assert enc_mod._PACKING.get() is not None
    assert enc_mod._PACKING.get() is None


def test_sdpa_backend_never_calls_triton(monkeypatch):
    enc = build_encoder("vit_tiny_patch16_224", img_size=32, attention_backend="sdpa").eval()
    monkeypatch.setattr("radscale.trainer.kernels.attention.flash_attention",
                        lambda *a, **k: pytest.fail("triton used"))
    with torch.no_grad():
        enc(torch.randn(1, 3, 32, 32))
    assert callable(attention)


# ---- weights ------------------------------------------------------------------------------------


def test_weights_round_trip_through_an_fsspec_url():
    src = build_encoder("vit_tiny_patch16_224", img_size=32, attention_backend="sdpa").eval()
    enc_mod.save_weights(src.model, "memory://weights/tiny.safetensors")
    dst = build_encoder("vit_tiny_patch16_224", img_size=32, attention_backend="sdpa",
                        weights="memory://weights/tiny.safetensors").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(src(x).cls, dst(x).cls)


def test_torch_state_dict_with_wrapper_and_prefix(tmp_path):
    src = build_encoder("vit_tiny_patch16_224", img_size=32, attention_backend="sdpa")
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.model.state_dict().items()}, "epoch": 3}, path)
    dst = build_encoder("vit_tiny_patch16_224", img_size=32, attention_backend="sdpa", weights=str(path))
    for k, v in src.model.state_dict().items():
        assert torch.equal(v, dst.model.state_dict()[k]), k


def test_dinov2_training_checkpoint_loads_its_teacher_backbone(tmp_path):
    """DINOv2's teacher_checkpoint.pth: {"teacher": {"backbone.*", "dino_head.*", "ibot_head.*"}}."""
    src = build_encoder("vit_small_patch14_dinov2", img_size=28, attention_backend="sdpa")
    teacher = {f"backbone.{k}": v for k, v in src.model.state_dict().items()}
    teacher["dino_head.mlp.0.weight"] = torch.zeros(4, 384)
    teacher["ibot_head.last_layer.weight_g"] = torch.zeros(4, 1)
    torch.save({"teacher": teacher, "iteration": 1000}, tmp_path / "teacher_checkpoint.pth")
    dst = build_encoder("vit_small_patch14_dinov2", img_size=28, attention_backend="sdpa",
                        weights=str(tmp_path / "teacher_checkpoint.pth"))
    for k, v in src.model.state_dict().items():
        assert torch.equal(v, dst.model.state_dict()[k]), k


def test_encoder_from_spec():
    from radscale.operator.api import EncoderSpec

    spec = EncoderSpec(name="rad-dino", paradigm="dino", model="vit_small_patch14_dinov2", image_size=56)
    enc = enc_mod.encoder_from_spec(spec, attention_backend="sdpa")
    assert enc.embed_dim == 384 and enc.model.patch_embed.img_size == (56, 56)


def test_mismatched_weights_name_missing_and_unexpected_keys(tmp_path):
    other = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=28)
    enc_mod.save_weights(other, str(tmp_path / "small.safetensors"))
    with pytest.raises(WeightsError) as exc:
        build_encoder("vit_tiny_patch16_224", img_size=32, weights=str(tmp_path / "small.safetensors"))
    msg = str(exc.value)
    assert "do not fit" in msg and ("missing keys" in msg or "shape mismatches" in msg)
    assert "unexpected keys" in msg and "ls1.gamma" in msg


def test_missing_and_garbage_files_give_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match=r"weights not found at .*nope\.safetensors"):
        load_weights(torch.nn.Linear(1, 1), str(tmp_path / "nope.safetensors"))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00not weights at all")
    with pytest.raises(WeightsError, match="neither a safetensors file nor a torch state dict"):
        load_weights(torch.nn.Linear(1, 1), str(junk))
    with fsspec.open("memory://w/list.pt", "wb") as fh:
        torch.save([1, 2, 3], fh)
    with pytest.raises(WeightsError, match="no state dict"):
        load_weights(torch.nn.Linear(1, 1), "memory://w/list.pt")


def test_none_loads_nothing():
    lin = torch.nn.Linear(2, 2)
    before = lin.weight.clone()
    load_weights(lin, "none")
    assert torch.equal(before, lin.weight)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown timm architecture 'vit_imaginary'"):
        build_encoder("vit_imaginary", img_size=32)
