"""Cross-check of mtkit's metrics against sacreBLEU's, for `--sacrebleu` and the tests: every
number (score, and BLEU's counts, totals, lengths and brevity penalty, TER's edits and reference
length) must be equal, or CheckFailed is raised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mtkit.errors import CheckFailed
from mtkit.metrics.bleu import BLEU
from mtkit.metrics.chrf import CHRF
from mtkit.metrics.ter import TER


def sacrebleu_metric(metric: Any) -> Any:
    """The sacreBLEU metric object with the same options."""
    import sacrebleu

    if isinstance(metric, BLEU):
        return sacrebleu.BLEU(tokenize=metric.tokenize, lowercase=metric.lowercase, smooth_method=metric.smooth_method,
                              smooth_value=metric.smooth_value, max_ngram_order=metric.max_ngram_order,
                              effective_order=metric.effective_order, force=True)
    if isinstance(metric, CHRF):
        return sacrebleu.CHRF(char_order=metric.char_order, word_order=metric.word_order, beta=metric.beta,
                              lowercase=metric.lowercase, whitespace=metric.whitespace,
                              eps_smoothing=metric.eps_smoothing)
    if isinstance(metric, TER):
        return sacrebleu.TER(normalized=metric.normalized, no_punct=metric.no_punct,
                             asian_support=metric.asian_support, case_sensitive=metric.case_sensitive)
    raise TypeError(f"no sacreBLEU counterpart for {type(metric).__name__}")


def sacrebleu_score(metric: Any, hyps: Sequence[str], references: Sequence[Sequence[str | None]]) -> Any:
    return sacrebleu_metric(metric).corpus_score(list(hyps), [list(r) for r in references])


def _fields(score: Any) -> dict[str, Any]:
    """The numbers to compare, by metric."""
    if hasattr(score, "counts"):
        return {"score": score.score, "counts": list(score.counts), "totals": list(score.totals),
                "sys_len": score.sys_len, "ref_len": score.ref_len, "bp": score.bp}
    if hasattr(score, "num_edits"):
        return {"score": score.score, "num_edits": int(score.num_edits), "ref_length": float(score.ref_length)}
    return {"score": score.score}


def check_equal(metric: Any, score: Any, hyps: Sequence[str], references: Sequence[Sequence[str | None]],
                name: str) -> None:
    theirs = _fields(sacrebleu_score(metric, hyps, references))
    ours = _fields(score)
    differ = [k for k in ours if ours[k] != theirs[k] and not (isinstance(ours[k], float) and abs(ours[k] - theirs[k]) <= 1e-9)]
    if differ:
        raise CheckFailed(f"{name}: mtkit and sacrebleu differ in {', '.join(differ)}: "
                          + "; ".join(f"{k} {ours[k]} vs {theirs[k]}" for k in differ))
