"""Cross-check of mtkit's metrics against sacreBLEU's, for `--sacrebleu` and the tests: every
number (score, and BLEU's counts, totals, lengths and brevity penalty, TER's edits and reference
length) must be equal, or CheckFailed is raised."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from mtkit.errors import CheckFailed
from mtkit.metrics.registry import info_of


def sacrebleu_metric(metric: Any) -> Any:
    """The sacreBLEU metric object with the same options (mtkit.metrics.registry)."""
    import sacrebleu

    info = info_of(metric)
    options = {f.name: getattr(metric, f.name) for f in fields(metric) if f.name not in info.ours_only}
    return getattr(sacrebleu, info.sacrebleu)(**options, **dict(info.sacrebleu_extra))


def sacrebleu_score(metric: Any, hyps: Sequence[str], references: Sequence[Sequence[str | None]]) -> Any:
    return sacrebleu_metric(metric).corpus_score(list(hyps), [list(r) for r in references])


def check_equal(metric: Any, score: Any, hyps: Sequence[str], references: Sequence[Sequence[str | None]],
                name: str) -> None:
    compared = info_of(metric).compared
    theirs, ours = _numbers(sacrebleu_score(metric, hyps, references), compared), _numbers(score, compared)
    differ = [k for k in ours if ours[k] != theirs[k] and not (isinstance(ours[k], float) and abs(ours[k] - theirs[k]) <= 1e-9)]
    if differ:
        raise CheckFailed(f"{name}: mtkit and sacrebleu differ in {', '.join(differ)}: "
                          + "; ".join(f"{k} {ours[k]} vs {theirs[k]}" for k in differ))


def _numbers(score: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The named numbers of a score, as plain values (sacreBLEU keeps some as numpy numbers)."""
    values = {name: getattr(score, name) for name in names}
    return {k: list(v) if isinstance(v, list | tuple) else v for k, v in values.items()}
