"""Report generation LLaVA-style with a Hugging Face causal LM, offline: a tiny randomly initialised GPT-2
built from a config and a word-level tokenizer trained on the training reports, saved as
save_pretrained folders. Never downloads one."""

from __future__ import annotations

import pytest
import torch

from radscale.operator.api import TaskSpec
from radscale.trainer.evaluate import lm_decoder, tasks
from tests.unit.test_eval_tasks import TEMPLATES, synthetic


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    raw.train_from_iterator(list(TEMPLATES) * 4, trainers.WordLevelTrainer(
        special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  unk_token="<unk>")
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    # initializer_range 0.2, not GPT-2's 0.02: at 0.02 a random LM's logits are near uniform whatever its
    # input, so a frozen one could not be steered by any projector (a pretrained LM's are not)
    config = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=128, n_layer=2, n_head=4,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_frozen_lm_with_a_trained_projector_writes_the_right_report(data, tiny_lm):
    spec = TaskSpec.model_validate({"name": "report-gen", "kind": "report-generation",
                                    "decoder": {"model": str(tiny_lm)}})
    task = tasks.for_spec(spec, data)
    model = task.build()
    assert isinstance(model, lm_decoder.LMReportModel)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projector.") for n in trainable)
    before = {n: p.detach().clone() for n, p in model.lm.named_parameters()}
    out = task.evaluate({"lr": 1e-2, "epochs": 40})
    assert out.metrics["rougeL"].value > 0.75, out.metrics
    assert out.metrics["clinicalF1"].value > 0.6, out.metrics
    for n, p in task.model.lm.named_parameters():  # frozen: the LM is the one on disk
        assert torch.equal(p, before[n]), n
    gen = task.generate(task.model, task.x["test"][:8])
    squeeze = [g.replace(" ", "") for g in gen]  # the word-level tokenizer decodes "findings :"
    assert sum(g == t.replace(" ", "") for g in squeeze for t in TEMPLATES) >= 3, gen  # word for word


# peft 0.21.2 still calls transformers' is_gradient_checkpointing, deprecated in 5.24
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_trains_adapters_and_the_projector_only(data, tiny_lm):
    spec = TaskSpec.model_validate({"name": "report-gen", "kind": "report-generation",
                                    "decoder": {"model": str(tiny_lm), "tuning": "lora", "loraRank": 4}})
    task = tasks.for_spec(spec, data)
    model = task.build()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable)
    assert all(n.startswith("projector.") or "lora_" in n for n in trainable), trainable
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    torch.manual_seed(0)
    with torch.no_grad():
        first = float(task.loss(model, torch.arange(32)))
    task.evaluate({"lr": 1e-2, "epochs": 3})
    trained = dict(task.model.named_parameters())
    assert any(not torch.equal(trained[n], v) for n, v in lora_before.items())  # the adapters moved
    with torch.no_grad():
        assert float(task.loss(task.model, torch.arange(32))) < first


def test_a_folder_without_an_lm_is_named(data, tmp_path):
    spec = TaskSpec.model_validate({"name": "report-gen", "kind": "report-generation",
                                    "decoder": {"model": str(tmp_path)}})
    with pytest.raises(ValueError, match=r"evaluation\.tasks\[report-gen\]\.decoder\.model: .* is not a causal LM"):
        tasks.for_spec(spec, data)


def test_builtin_stays_the_default(data):
    spec = TaskSpec(name="report-gen", kind="report-generation")
    assert spec.decoder is None
    assert not isinstance(tasks.for_spec(spec, data).build(), lm_decoder.LMReportModel)
