"""Cross-check of mtkit's BLEU against sacrebleu's, for `mtkit bleu --sacrebleu` and the tests."""

from __future__ import annotations

from collections.abc import Sequence

from mtkit.bleu import BLEUOptions, BLEUScore
from mtkit.errors import CheckFailed


def sacrebleu_score(hyps: Sequence[str], references: Sequence[Sequence[str | None]], opts: BLEUOptions):
    import sacrebleu

    metric = sacrebleu.BLEU(
        tokenize=opts.tokenize, lowercase=opts.lowercase, smooth_method=opts.smooth_method,
        smooth_value=opts.smooth_value, max_ngram_order=opts.max_ngram_order,
        effective_order=opts.effective_order, force=True,
    )
    return metric.corpus_score(list(hyps), [list(r) for r in references])  # type: ignore[arg-type]


def check_equal(
    score: BLEUScore, hyps: Sequence[str], references: Sequence[Sequence[str | None]], opts: BLEUOptions, name: str
) -> None:
    theirs = sacrebleu_score(hyps, references, opts)
    same = (
        list(score.counts) == list(theirs.counts)
        and list(score.totals) == list(theirs.totals)
        and (score.sys_len, score.ref_len) == (theirs.sys_len, theirs.ref_len)
        and abs(score.score - theirs.score) <= 1e-9
        and abs(score.bp - theirs.bp) <= 1e-12
    )
    if not same:
        raise CheckFailed(
            f"{name}: mtkit and sacrebleu differ: mtkit {score.format(signature=False)} counts {score.counts} "
            f"totals {score.totals}; sacrebleu {theirs} counts {theirs.counts} totals {theirs.totals}"
        )
