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


def vocabulary_warning(tokens: int, cfg: C.ModelConfig) -> str | None:
    """When the vocabulary is large for the corpus (fewer than 10 occurrences per entry on average)."""
    entries = cfg.src_vocab_size + (0 if cfg.share_embeddings else cfg.tgt_vocab_size)
    if tokens >= 10 * entries:
        return None
    return (f"the vocabulary ({entries:,} entries) is large for this corpus ({tokens:,} tokens, "
            f"{tokens / entries:.1f} per entry): a smaller --vocab-size (about {max(8, tokens // 50):,}) learns faster")
