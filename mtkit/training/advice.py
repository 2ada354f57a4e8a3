"""Warnings that save a run: settings that make training learn nothing or learn slowly, said at
the start (or as soon as they can be known) instead of found out after hours."""

from __future__ import annotations

from mtkit import config as C


def warmup_warning(t: C.TrainConfig, updates: float, budget: str) -> str | None:
    """When the run ends before its warmup does, the learning rate never reaches --lr (a tiny
    model trained 1,500 updates with a 4,000-update warmup learns next to nothing)."""
    if t.warmup <= updates:
        return None
    return (f"--warmup {t.warmup} is longer than the {int(updates):,} updates {budget} allows: the learning rate "
            f"never reaches --lr; a warmup of about {max(1, int(updates) // 10):,} updates would")


def vocabulary_warning(tokens: int, cfg: C.ModelConfig, given: bool = False) -> str | None:
    """When the vocabulary is large for the corpus (fewer than 10 occurrences per entry on average).
    given: the tokenizer came with the run (--tokenizer, or the prepared data's), so --vocab-size
    cannot change it."""
    entries = cfg.src_vocab_size + (0 if cfg.share_embeddings else cfg.tgt_vocab_size)
    if tokens >= 10 * entries:
        return None
    smaller = max(8, tokens // 50)
    advice = (f"a tokenizer with a smaller vocabulary (about {smaller:,}; `mtkit tokenizer train --vocab-size`)"
              if given else f"a smaller --vocab-size (about {smaller:,})")
    return (f"the vocabulary ({entries:,} entries) is large for this corpus ({tokens:,} tokens, "
            f"{tokens / entries:.1f} per entry): {advice} learns faster")
