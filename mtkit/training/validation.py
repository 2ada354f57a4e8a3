"""Validation: teacher-forced loss and perplexity, and BLEU and chrF of the model's own translations
(mtkit's metrics on detokenized text, the output kept so that `mtkit score` can recompute them)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from mtkit import config as C
from mtkit.data.batching import collate, make_batches
from mtkit.data.corpus import EncodedCorpus
from mtkit.data.tokenizer import PAD_ID, Tokenizer
from mtkit.files import write_text_atomic
from mtkit.inference.translate import translate
from mtkit.metrics.bleu import corpus_bleu
from mtkit.metrics.chrf import corpus_chrf
from mtkit.model.loss import LabelSmoothedObjective
from mtkit.model.transformer import Transformer
from mtkit.runtime import Precision, autocast
from mtkit.training.events import ValidationResult


@torch.no_grad()
def validate(
    model: Transformer, tokenizer: Tokenizer, corpus: EncodedCorpus, src_lines: list[str], refs: list[str],
    cfg: C.RunConfig, device: torch.device, precision: Precision, output: Path,
) -> ValidationResult:
    """Loss, perplexity, BLEU and chrF on the validation set; leaves the model in training mode."""
    model.eval()
    objective = LabelSmoothedObjective(model, cfg.train.label_smoothing, PAD_ID)
    loss = nll = tokens = 0.0
    for indices in make_batches(corpus.src_lens, corpus.tgt_lens, cfg.data.max_tokens, 0, 0)[0]:
        batch = collate(corpus, indices).to(device)
        with autocast(device.type, precision.dtype):
            b_loss, b_nll = objective(batch.src, batch.tgt_in, batch.tgt_out)
        loss, nll, tokens = loss + b_loss.item(), nll + b_nll.item(), tokens + batch.n_tgt_tokens
    limit = cfg.train.valid_max_sentences or len(src_lines)
    hyps = [t.text for t in translate(model, tokenizer, src_lines[:limit], cfg.decode,
                                      device=device, autocast_dtype=precision.dtype)]
    model.train()
    write_text_atomic(output, "".join(h + "\n" for h in hyps))
    bleu, chrf = corpus_bleu(hyps, [refs[:limit]]), corpus_chrf(hyps, [refs[:limit]])
    return ValidationResult(loss / tokens, nll / tokens, math.exp(min(nll / tokens, 50)), bleu.score, bleu.signature,
                            chrf.score, chrf.signature, limit)
