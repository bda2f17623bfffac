"""Report generation from frozen features: a small transformer decoder over the patch tokens, or
(``decoder.model``: a Hugging Face causal LM) LLaVA-style through :mod:`lm_decoder`.

The decoder (2 layers, width 128, pre-norm) cross-attends to the CLS and patch tokens (with a
learned position per memory token) and is
trained with teacher forcing on the probe-train reports, over a word-level vocabulary built from
them (as R2Gen does; numbers such as "4.2" stay one token). Decoding is greedy, or beam search
with ``beam > 1``. Metrics on the test split: BLEU-4 (sacrebleu's corpus BLEU), ROUGE-L
(rouge-score, mean F-measure) and clinical F1 (micro F1 of the findings and devices that
:mod:`labeler` finds in the generated and the reference report).

Each is a weighted sum over reports, so every patient resample (:mod:`resample`) is one matrix
product: BLEU from the weighted sums of sacrebleu's per-sentence sufficient statistics (n-gram
matches, totals, lengths), ROUGE-L as a weighted mean, clinical F1 from weighted TP and mismatch
counts. Unit weights give the usual corpus values.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU
from torch import nn

from radscale.trainer.evaluate import labeler, tasks
from radscale.trainer.evaluate.features import EvalData

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
TOKEN = re.compile(r"\d+(?:\.\d+)?|\w+|[^\w\s]")
MAX_VOCAB = 5000
VAL_REPORTS = 32  # validation decodes this many reports per epoch (what ASHA compares)


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def detokenize(tokens: Sequence[str]) -> str:
    return re.sub(r" ([.,;:!?)])", r"\1", " ".join(tokens)).replace("( ", "(")


class Vocab:
    def __init__(self, texts: Sequence[str], max_size: int = MAX_VOCAB):
        counts = collections.Counter(t for text in texts for t in tokenize(text))
        self.itos = [*SPECIALS, *sorted(w for w, _ in counts.most_common(max_size - len(SPECIALS)))]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, max_len: int) -> list[int]:
        ids = [self.stoi.get(t, UNK) for t in tokenize(text)][: max_len - 2]
        return [BOS, *ids, EOS]

    def decode(self, ids: Sequence[int]) -> str:
        words = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                words.append(self.itos[i])
        return detokenize(words)


class ReportDecoder(nn.Module):
    def __init__(self, feat_dim: int, vocab: int, max_len: int, memory_len: int, width: int = 128, heads: int = 4,
                 layers: int = 2):
        super().__init__()
        self.memory_proj = nn.Sequential(nn.LayerNorm(feat_dim), nn.Linear(feat_dim, width))
        # where each memory token sits (CLS, then the patch grid): laterality is in the words
        self.memory_pos = nn.Parameter(torch.randn(1, memory_len, width) * 0.02)
        self.embed = nn.Embedding(vocab, width, padding_idx=PAD)
        self.pos = nn.Parameter(torch.randn(1, max_len, width) * 0.02)
        layer = nn.TransformerDecoderLayer(width, heads, 2 * width, dropout=0.1, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(width))
        self.head = nn.Linear(width, vocab)

    def memory(self, feats: torch.Tensor) -> torch.Tensor:
        return self.memory_proj(feats) + self.memory_pos

    def forward(self, feats: torch.Tensor, tokens: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V) for input tokens (B, T) given features (B, M, C)."""
        t = tokens.shape[1]
        mem = self.memory(feats) if memory is None else memory
        x = self.embed(tokens) + self.pos[:, :t]
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=tokens.device)
        return self.head(self.decoder(x, mem, tgt_mask=causal, tgt_is_causal=True))

    @torch.no_grad()
    def greedy(self, feats: torch.Tensor, max_len: int) -> torch.Tensor:
        mem = self.memory(feats)
        out = torch.full((len(feats), 1), BOS, dtype=torch.long)
        done = torch.zeros(len(feats), dtype=torch.bool)
        for _ in range(max_len - 1):
            nxt = self(feats, out, mem)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            out = torch.cat([out, nxt[:, None]], 1)
            done |= nxt == EOS
            if done.all():
                break
        return out

    @torch.no_grad()
    def beam_search(self, feats: torch.Tensor, max_len: int, beam: int) -> torch.Tensor:
        """Per image: of the hypotheses that ended, the one with the highest length-normalised
        log-probability. Search stops when no live hypothesis can still beat the best ended one
        (log-probabilities only fall as words are added) or at ``max_len``."""
        rows = []
        for f in feats:
            mem = self.memory(f[None])
            seqs, scores = torch.full((1, 1), BOS, dtype=torch.long), torch.zeros(1)
            ended: list[tuple[float, float, torch.Tensor]] = []  # (normalised, raw, sequence)
            for _ in range(max_len - 1):
                logp = F.log_softmax(self(f[None].expand(len(seqs), -1, -1), seqs,
                                          mem.expand(len(seqs), -1, -1))[:, -1], -1)
                cand = (scores[:, None] + logp).flatten()
                top = cand.topk(min(beam, len(cand)))
                src, tok = top.indices // logp.shape[1], top.indices % logp.shape[1]
                seqs, scores = torch.cat([seqs[src], tok[:, None]], 1), top.values
                done = tok == EOS
                ended += [(float(sc) / seqs.shape[1], float(sc), q) for sc, q in
                          zip(scores[done], seqs[done], strict=True)]
                seqs, scores = seqs[~done], scores[~done]
                if len(seqs) == 0 or (ended and float(scores.max()) < max(e[1] for e in ended)):
                    break
            ended += [(float(sc) / seqs.shape[1], float(sc), q) for sc, q in zip(scores, seqs, strict=True)]
            rows.append(max(ended, key=lambda e: e[0])[2])
        width = max(len(r) for r in rows)
        return torch.stack([F.pad(r, (0, width - len(r)), value=PAD) for r in rows])


def _bleu() -> BLEU:
    return BLEU(lowercase=True)


def bleu_stats(generated: Sequence[str], reference: Sequence[str]) -> np.ndarray:
    """(N, 2 + 2 x 4) sacrebleu's per-sentence sufficient statistics: hypothesis and reference length,
    then matching and total n-grams for n = 1..4."""
    bleu = _bleu()
    if not generated:
        return np.zeros((0, 2 + 2 * bleu.max_ngram_order))
    # a private method, but the one sacrebleu's own bootstrap and paired tests resample
    return np.asarray(bleu._extract_corpus_statistics(list(generated), [list(reference)]), np.float64)


def bleu4_weighted(stats: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(D,) corpus BLEU-4 in [0, 1] of each weight row (D, N) over the sentences' :func:`bleu_stats`:
    sacrebleu's score of the weighted sums of the statistics (its ``corpus_score`` with unit weights)."""
    bleu, sums = _bleu(), weights @ stats
    return np.array([bleu._compute_score_from_stats([float(v) for v in row]).score / 100 for row in sums])


def bleu4(generated: Sequence[str], reference: Sequence[str]) -> float:
    """Corpus BLEU-4 of lower-cased text as a fraction in [0, 1] (sacrebleu's 0-100 / 100, on the scale
    of the other metrics)."""
    return float(bleu4_weighted(bleu_stats(generated, reference), np.ones((1, len(generated))))[0])


def clinical_f1_weighted(generated: np.ndarray, reference: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(D,) :func:`labeler.f1` of two :func:`labeler.positives` arrays under each weight row (D, N): its
    micro TP and mismatch counts summed with the weights (on integer weights, the rows repeated)."""
    tp = weights @ (generated & reference).sum(1).astype(np.float64)
    wrong = weights @ (generated ^ reference).sum(1).astype(np.float64)
    return 2 * tp / np.maximum(2 * tp + wrong, 1)


def rouge_l(generated: Sequence[str], reference: Sequence[str]) -> np.ndarray:
    """Per-report ROUGE-L F-measure."""
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return np.array([scorer.score(r, g)["rougeL"].fmeasure for g, r in zip(generated, reference, strict=True)])


class ReportTask(tasks.Task):
    kind = tasks.TaskKind.REPORT_GENERATION
    beam = 1

    def __init__(self, spec: tasks.TaskSpec, data: EvalData, seed: int = 0, resample_seed: int = 0):
        super().__init__(spec, data, seed, resample_seed)
        train = data.splits["train"].reports
        if not any(r.strip() for r in train):
            raise ValueError(f"evaluation.tasks[{spec.name}]: report generation needs reports; set "
                             "dataset.columns.report")
        feats = {k: np.concatenate([s.cls[:, None], s.patches], 1) for k, s in data.splits.items()}
        mean, std = tasks.standardiser(feats["train"])
        self.x = {k: torch.as_tensor((v - mean) / std, dtype=torch.float32) for k, v in feats.items()}
        self.refs = {k: s.reports for k, s in data.splits.items()}
        decoder = spec.decoder
        self.lm_folder = None
        if decoder is not None and decoder.model != "builtin":
            from radscale.trainer.evaluate import lm_decoder

            self.field = f"evaluation.tasks[{spec.name}].decoder.model"
            self.lm_folder = lm_decoder.resolve(decoder.model, self.field)
            self.tokenizer = lm_decoder.load_tokenizer(self.lm_folder, self.field)
            tok = self.tokenizer
            bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            lengths = [len(tok(r, add_special_tokens=False)["input_ids"]) + 2 for r in train]
            self.max_len = int(min(max(np.percentile(lengths, 95), 8), 256))
            self.lm_ids, self.lm_lengths = lm_decoder.encode(tok, list(train), bos, tok.eos_token_id, self.max_len)
            return
        self.vocab = Vocab(train)
        lengths = [len(tokenize(r)) + 2 for r in train]
        self.max_len = int(min(max(np.percentile(lengths, 95), 8), 160))
        ids = [self.vocab.encode(r, self.max_len) for r in train]
        self.tokens = torch.full((len(ids), self.max_len), PAD, dtype=torch.long)
        for i, row in enumerate(ids):
            self.tokens[i, :len(row)] = torch.tensor(row)

    def build(self) -> nn.Module:
        if self.lm_folder is not None:
            from radscale.trainer.evaluate import lm_decoder

            return lm_decoder.build(self.spec.decoder, self.lm_folder, self.x["train"].shape[-1], self.tokenizer,
                                    self.field)
        return ReportDecoder(self.x["train"].shape[-1], len(self.vocab), self.max_len, self.x["train"].shape[1])

    def loss(self, model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        if self.lm_folder is not None:
            return model(self.x["train"][rows], self.lm_ids[rows], self.lm_lengths[rows])
        tok = self.tokens[rows]
        logits = model(self.x["train"][rows], tok[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok[:, 1:].reshape(-1), ignore_index=PAD)

    def generate(self, model: nn.Module, feats: torch.Tensor) -> list[str]:
        """Greedy, or beam search with ``beam > 1`` (the built-in decoder; an LM decodes greedily)."""
        if self.lm_folder is not None:
            rows = [r for chunk in feats.split(32) for r in model.greedy(chunk, self.max_len - 1)]
            return [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]
        out = []
        for chunk in feats.split(128):
            ids = model.beam_search(chunk, self.max_len, self.beam) if self.beam > 1 else model.greedy(chunk,
                                                                                                     self.max_len)
            out += [self.vocab.decode(row.tolist()) for row in ids]
        return out

    @torch.no_grad()
    def validate(self, model: nn.Module) -> float:
        gen = self.generate(model, self.x["val"][:VAL_REPORTS])
        refs = self.refs["val"][:VAL_REPORTS]
        if self.spec.headline_metric == "rougeL":
            return float(rouge_l(gen, refs).mean()) if gen else 0.0
        if self.spec.headline_metric == "clinicalF1":
            return labeler.f1(labeler.positives(gen, labeler.LABELS), labeler.positives(refs, labeler.LABELS))
        return bleu4(gen, refs) if gen else 0.0

    @torch.no_grad()
    def test(self, model: nn.Module, draws: int = tasks.TEST_DRAWS) -> tasks.TestOutput:
        gen, refs = self.generate(model, self.x["test"]), self.refs["test"]
        weights = self.test_weights(draws)
        rl = rouge_l(gen, refs)
        pg, pr = labeler.positives(gen, labeler.LABELS), labeler.positives(refs, labeler.LABELS)
        values = {"bleu4": bleu4_weighted(bleu_stats(gen, refs), weights),
                  "rougeL": tasks.weighted_mean(rl, weights),
                  "clinicalF1": clinical_f1_weighted(pg, pr, weights)}
        if not gen:  # no test reports: nothing is defined (BLEU and F1 of nothing would read 0)
            values = {k: np.full(len(weights), np.nan) for k in values}
        examples = self.examples(generated=pa.array(gen, pa.string()), reference=pa.array(list(refs), pa.string()),
                                 rougeL=rl.astype(np.float64))
        return self.output(values, {}, examples)
