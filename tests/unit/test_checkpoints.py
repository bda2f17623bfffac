"""The open checkpoints' formats, offline: a random transformers Dinov2Model (RAD-DINO's release format)
and a random open_clip model load into timm through radscale's init and agree block by block with
their own forwards; hf-hub resolution from a local cache; the normalisation that travels with the
weights into pretraining and feature extraction; the DINO head kept from a checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from radscale.operator.api import EncoderSpec
from radscale.trainer import augment, paradigms
from radscale.trainer.models import checkpoints, encoders
from radscale.trainer.models.encoders import WeightsError, build_encoder, encoder_from_spec
from radscale.trainer.objectives.heads import DINOHead

RAD_DINO = {"image_mean": [0.5307, 0.5307, 0.5307], "image_std": [0.2583, 0.2583, 0.2583],
            "crop_size": {"height": 518, "width": 518}}


def _blocks_out(model: torch.nn.Module, blocks, x: torch.Tensor, transpose: bool = False) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: outs.append(o[0] if isinstance(o, tuple) else o))
             for b in blocks]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return [o.transpose(0, 1) if transpose else o for o in outs]


@pytest.fixture(scope="module")
def hf_dinov2(tmp_path_factory):
    """A random Dinov2Model with ViT-S/14's shape (timm's vit_small_patch14_dinov2), saved as transformers
    does (model.safetensors + config.json), with RAD-DINO's preprocessor_config.json beside it."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                          image_size=28, patch_size=14, layerscale_value=0.5)
    model = Dinov2Model(config).eval()
    with torch.no_grad():  # a mask token that is not zeros, so that carrying it over is visible
        model.embeddings.mask_token.normal_()
    folder = tmp_path_factory.mktemp("rad-dino")
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(RAD_DINO))
    return model, folder


def test_hf_dinov2_blocks_equal_transformers_forward(hf_dinov2):
    hf, folder = hf_dinov2
    assert (folder / "model.safetensors").exists()
    enc = build_encoder("vit_small_patch14_dinov2", img_size=28, attention_backend="triton",
                        weights=str(folder)).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        ref = hf(pixel_values=x, output_hidden_states=True)
    ours = _blocks_out(enc.model, enc.model.blocks, x)
    assert len(ours) == len(ref.hidden_states) - 1 == 12
    for i, (mine, theirs) in enumerate(zip(ours, ref.hidden_states[1:], strict=True)):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5, msg=f"block {i}")
    with torch.no_grad():
        feats = enc(x)
    torch.testing.assert_close(feats.cls, ref.last_hidden_state[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats.patches, ref.last_hidden_state[:, 1:], rtol=1e-5, atol=1e-5)
    # what travels with these weights: RAD-DINO's normalisation and its 518 px, from preprocessor_config.json
    assert enc.preprocess.mean == (0.5307,) * 3 and enc.preprocess.std == (0.2583,) * 3
    assert enc.preprocess.input_size == 518
    # the mask token is the DINO student's, not the tower's
    student = paradigms.DinoStudent(enc, prototypes=32)
    torch.testing.assert_close(student.mask_token.data, hf.embeddings.mask_token.reshape(-1))
    assert student.head_from_checkpoint is False and enc.extras == {}


def test_hf_dinov2_4x_key_spelling_maps_the_same():
    """rad-dino was saved by transformers 4.x: attention.attention.query / attention.output.dense."""
    sd = {"embeddings.cls_token": torch.zeros(1, 1, 4), "embeddings.position_embeddings": torch.zeros(1, 2, 4),
          "embeddings.patch_embeddings.projection.weight": torch.zeros(4, 3, 2, 2),
          "embeddings.patch_embeddings.projection.bias": torch.zeros(4),
          "layernorm.weight": torch.ones(4), "layernorm.bias": torch.zeros(4)}
    for name, val in (("query", 1.0), ("key", 2.0), ("value", 3.0)):
        sd[f"encoder.layer.0.attention.attention.{name}.weight"] = torch.full((4, 4), val)
        sd[f"encoder.layer.0.attention.attention.{name}.bias"] = torch.full((4,), val)
    sd["encoder.layer.0.attention.output.dense.weight"] = torch.eye(4)
    sd["encoder.layer.0.attention.output.dense.bias"] = torch.zeros(4)
    sd["encoder.layer.0.layer_scale1.lambda1"] = torch.full((4,), 0.1)
    out, _ = checkpoints.hf_dinov2_to_timm({f"dinov2.{k}": v for k, v in sd.items()})
    assert out["blocks.0.attn.qkv.weight"].shape == (12, 4)
    assert out["blocks.0.attn.qkv.bias"].tolist() == [1.0] * 4 + [2.0] * 4 + [3.0] * 4
    assert torch.equal(out["blocks.0.attn.proj.weight"], torch.eye(4))
    assert torch.equal(out["blocks.0.ls1.gamma"], torch.full((4,), 0.1))


def _fake_hub_cache(root, repo: str, folder) -> None:
    """The Hugging Face cache layout: models--ORG--NAME/{refs/main, snapshots/<rev>/<files>}."""
    base = root / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text("0123abcd")
    for name in ("model.safetensors", "config.json"):
        (snap / name).write_bytes((folder / name).read_bytes())


def test_hf_hub_reads_the_local_cache_and_knows_rad_dinos_normalisation(hf_dinov2, tmp_path, monkeypatch):
    _, folder = hf_dinov2
    _fake_hub_cache(tmp_path, "microsoft/rad-dino", folder)  # no preprocessor_config.json: the known values
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = EncoderSpec(name="rad-dino", paradigm="dino", model="vit_small_patch14_dinov2", image_size=42,
                       init="hf-hub:microsoft/rad-dino")
    enc = encoder_from_spec(spec, attention_backend="sdpa")
    # trained at 28 px (2 x 2 patches): the position grid is resampled to 3 x 3, the same either way
    ref = build_encoder("vit_small_patch14_dinov2", img_size=42, attention_backend="sdpa", weights=str(folder))
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, enc.model.state_dict()[k]), k
    assert enc.preprocess == checkpoints.KNOWN["hf-hub:microsoft/rad-dino"]
    # the spec's normalisation wins over what travels with the weights
    spec2 = EncoderSpec.model_validate({**spec.model_dump(by_alias=True), "normalization": {"mean": [0.4],
                                                                                          "std": [0.3]}})
    assert encoder_from_spec(spec2, attention_backend="sdpa").preprocess.mean == (0.4,) * 3


def test_hf_hub_missing_offline_names_the_field_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = EncoderSpec(name="rad-dino", paradigm="dino", model="vit_small_patch14_dinov2", image_size=42,
                       init="hf-hub:microsoft/rad-dino")
    with pytest.raises(WeightsError) as exc:
        encoder_from_spec(spec, attention_backend="sdpa")
    msg = str(exc.value)
    assert msg.startswith("encoders[rad-dino].init: hf-hub:microsoft/rad-dino is not in the local Hugging Face cache")
    assert "HF_HUB_OFFLINE" in msg and "hf download microsoft/rad-dino" in msg and str(tmp_path) in msg


def test_open_clip_checkpoint_blocks_equal_open_clips_forward(tmp_path):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(1)
    clip = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=12, width=768, head_width=64, patch_size=16,
                                                       image_size=32),
                text_cfg=CLIPTextCfg(context_length=8, vocab_size=100, width=32, heads=2, layers=1)).eval()
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(tmp_path / "open_clip.safetensors"))
    enc = build_encoder("vit_base_patch16_clip_224", img_size=32, attention_backend="triton",
                        weights=str(tmp_path / "open_clip.safetensors")).eval()
    x = torch.randn(2, 3, 32, 32)
    visual = clip.visual
    theirs = _blocks_out(visual, visual.transformer.resblocks, x,
                         transpose=not getattr(visual.transformer, "batch_first", True))
    ours = _blocks_out(enc.model, enc.model.blocks, x)
    assert len(ours) == len(theirs) == 12
    for i, (mine, ref) in enumerate(zip(ours, theirs, strict=True)):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5, msg=f"block {i}")
    with torch.no_grad():  # open_clip: ln_post on the class token, then the projection
        pooled = visual.ln_post(theirs[-1][:, 0])
        torch.testing.assert_close(enc(x).cls, pooled, rtol=1e-5, atol=1e-5)
    assert enc.preprocess.mean == checkpoints.OPENAI_CLIP_MEAN


# ---- normalisation through the stages -----------------------------------------------------------


def test_saved_weights_carry_their_normalisation_into_pretraining_views(tmp_path):
    pre = checkpoints.Preprocess.of([0.5307], [0.2583], 518, "test")
    src = build_encoder("vit_tiny_patch16_224", img_size=32, attention_backend="sdpa")
    encoders.save_weights(src.model, str(tmp_path / "enc.safetensors"), preprocess=pre)
    meta = checkpoints.metadata_of(tmp_path / "enc.safetensors")
    assert json.loads(meta["radscale.mean"]) == [0.5307] * 3 and meta["radscale.input_size"] == "518"
    enc = build_encoder("vit_tiny_patch16_224", img_size=32, attention_backend="sdpa",
                        weights=str(tmp_path / "enc.safetensors"))
    assert (enc.preprocess.mean, enc.preprocess.std, enc.preprocess.input_size) == (pre.mean, pre.std, 518)
    student = paradigms.DinoStudent(enc, prototypes=16)
    from radscale import recipes
    from radscale.spec import EncoderSpec

    recipe = recipes.resolve(EncoderSpec(name="d", paradigm="dino", model="vit_tiny_patch16_224", image_size=32), 4)
    objective = paradigms.DinoObjective(student, recipe, local_crops=1)
    assert objective.crops.norm == augment.Normalize(pre.mean, pre.std)
    # an image at the weights' mean standardises to zeros; every crop is standardised the same way
    img = torch.full((1, 3, 32, 32), 0.5307)
    torch.testing.assert_close(objective.crops.norm(img), torch.zeros_like(img), atol=1e-6, rtol=0)
    for view in objective.crops(torch.rand(2, 3, 32, 32)):
        unit = view * 0.2583 + 0.5307  # undone with the weights' values, the crop is back in [0, 1]
        assert unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5
        assert view.min() < -0.5  # standardised, not [0, 1] (blur smooths the extremes)
    assert build_encoder("vit_tiny_patch16_224", img_size=32).preprocess.mean == augment.DEFAULT.mean


def test_feature_extraction_standardises_with_the_weights_normalisation(tmp_path):
    from radscale.cells import CellSpec
    from radscale.trainer.evaluate import features

    pre = checkpoints.Preprocess.of([0.6], [0.2], 32, "test")
    src = build_encoder("vit_tiny_patch16_224", img_size=32, attention_backend="sdpa").eval()
    encoders.save_weights(src.model, str(tmp_path / "enc.safetensors"), preprocess=pre)
    cell = CellSpec(study="s", cell="s-enc-0", stage="evaluate",
                    encoder={"name": "enc", "paradigm": "clip", "model": "vit_tiny_patch16_224", "imageSize": 32,
                             "init": str(tmp_path / "enc.safetensors")},
                    dataset={"uri": str(tmp_path)}, prep_size=32, shards=str(tmp_path / "shards"),
                    output=str(tmp_path / "out"), weights=str(tmp_path / "enc.safetensors"),
                    budget={"steps": 1, "globalBatchSize": 1}, attention="sdpa")
    images = np.random.default_rng(0).integers(0, 65535, (3, 32, 32), dtype=np.uint16)
    cls, _, patch = features.extract(cell, images, torch.device("cpu"))
    x = torch.from_numpy(images.astype(np.float32) / 65535.0)[:, None].expand(-1, 3, -1, -1)
    with torch.no_grad():
        expected = src((x - 0.6) / 0.2).cls.numpy()
        default = src((x - 0.5) / 0.25).cls.numpy()
    np.testing.assert_allclose(cls, expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(cls, default, atol=1e-3) and patch == 16


# ---- the DINO head ----------------------------------------------------------------------------


def _dinov2_teacher_checkpoint(path, enc: encoders.Encoder, head: DINOHead | None) -> None:
    teacher = {f"backbone.{k}": v for k, v in enc.model.state_dict().items()}
    teacher["backbone.mask_token"] = torch.arange(enc.embed_dim, dtype=torch.float32)[None]
    if head is not None:  # DINOv2 saves the weight-normed last layer as weight_g / weight_v
        names = {"last_layer.parametrizations.weight.original0": "last_layer.weight_g",
                 "last_layer.parametrizations.weight.original1": "last_layer.weight_v"}
        teacher.update({f"dino_head.{names.get(k, k)}": v for k, v in head.state_dict().items()})
    torch.save({"teacher": teacher, "iteration": 10}, path)


def test_dino_head_is_kept_from_a_checkpoint_that_has_one(tmp_path):
    torch.manual_seed(3)
    src = build_encoder("vit_small_patch14_dinov2", img_size=28, attention_backend="sdpa")
    head = DINOHead(384, out_dim=32, hidden_dim=64, bottleneck_dim=16)
    with torch.no_grad():
        head.last_layer.parametrizations.weight.original1.normal_()
    _dinov2_teacher_checkpoint(tmp_path / "with_head.pth", src, head)
    enc = build_encoder("vit_small_patch14_dinov2", img_size=28, attention_backend="sdpa",
                        weights=str(tmp_path / "with_head.pth"))
    for k, v in src.model.state_dict().items():
        assert torch.equal(v, enc.model.state_dict()[k]), k
    student = paradigms.DinoStudent.__new__(paradigms.DinoStudent)
    torch.nn.Module.__init__(student)
    mine = DINOHead(384, out_dim=32, hidden_dim=64, bottleneck_dim=16)
    assert paradigms.load_head(mine, enc.extras) is True
    x = torch.randn(5, 384)
    with torch.no_grad():
        torch.testing.assert_close(mine(x), head(x))
    assert torch.equal(enc.extras["mask_token"], torch.arange(384, dtype=torch.float32))
    # the shipped prototypes differ from the spec's: named, not silently re-initialised
    with pytest.raises(ValueError, match=r"prototypes=64"):
        paradigms.load_head(DINOHead(384, out_dim=64, hidden_dim=64, bottleneck_dim=16), enc.extras)


def test_without_a_head_the_student_starts_a_random_one(tmp_path):
    src = build_encoder("vit_small_patch14_dinov2", img_size=28, attention_backend="sdpa")
    _dinov2_teacher_checkpoint(tmp_path / "no_head.pth", src, None)
    enc = build_encoder("vit_small_patch14_dinov2", img_size=28, attention_backend="sdpa",
                        weights=str(tmp_path / "no_head.pth"))
    student = paradigms.DinoStudent(enc, prototypes=32)
    assert student.head_from_checkpoint is False
    assert torch.equal(student.mask_token.data, torch.arange(384, dtype=torch.float32))
    assert not student.head.last_layer.parametrizations.weight.original0.requires_grad  # unit-norm prototypes
