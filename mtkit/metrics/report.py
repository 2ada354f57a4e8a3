"""One metric on several systems at once: a corpus score each, sentence scores, each system's
bootstrap interval, and the paired tests against the first system (bootstrap, approximate
randomization: mtkit.metrics.significance), from one pass of statistics (mtkit.metrics.base).

When an interval or a test is computed, the scores' signatures say so as sacreBLEU's do:
`nrefs:1|bs:1000|seed:12345|...` (an interval, or the paired bootstrap), `nrefs:1|ar:10000|seed:...`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mtkit.metrics.base import Metric, References, column_sums, statistics
from mtkit.metrics.significance import Interval, PairedResult, intervals, paired_ar, paired_bootstrap


@dataclass
class Report:
    """One metric on several systems: a corpus score each, optionally sentence scores and
    paired-bootstrap results (the first system is the baseline)."""

    scores: list[Any]
    sentence_scores: list[list[Any]] = field(default_factory=list)
    paired: list[PairedResult] = field(default_factory=list)
    intervals: list[Interval] = field(default_factory=list)  # each system's, with --confidence
    ar_p_values: list[float | None] = field(default_factory=list)  # paired approximate randomization


def evaluate(systems: Sequence[Sequence[str]], references: References, metric: Metric, *,
             sentence_level: bool = False, paired_bs_samples: int = 0, seed: int | None = 12345, jobs: int = 1,
             confidence_samples: int = 0, paired_ar_trials: int = 0, paired_jobs: int = 1) -> Report:
    """Score each system against the same prepared references (jobs: see statistics); with
    confidence_samples, each system's bootstrap interval; with paired_bs_samples or
    paired_ar_trials, the paired test of every system against the first (paired_jobs processes:
    mtkit.metrics.significance._each_system)."""
    all_stats = statistics(metric, systems, references, jobs)
    report = Report([metric.score(column_sums(stats), references.nrefs) for stats in all_stats])
    if sentence_level:
        single = metric.sentence_metric()
        report.sentence_scores = [[single.score(row, references.nrefs) for row in stats] for stats in all_stats]
    if paired_bs_samples:
        report.paired = paired_bootstrap(all_stats, metric, references.nrefs, paired_bs_samples, seed, paired_jobs)
    if paired_ar_trials:
        report.ar_p_values = paired_ar(all_stats, metric, references.nrefs, paired_ar_trials, seed, paired_jobs)
    if confidence_samples:
        report.intervals = intervals(all_stats, metric, references.nrefs, confidence_samples, seed, paired_jobs)
    bootstrap = paired_bs_samples or confidence_samples  # sacreBLEU's order: bs, ar, seed
    test = [(k, v) for k, v in (("bs", bootstrap), ("ar", paired_ar_trials)) if v]
    if test:
        fields = "|".join(f"{k}:{v}" for k, v in [*test, ("seed", str(seed).lower())])
        for score in report.scores:
            score.signature = with_fields(score.signature, fields)
    return report


def with_fields(signature: str, fields: str) -> str:
    """A signature with the test's fields after nrefs, where sacreBLEU puts them."""
    head, sep, rest = signature.partition("|")
    return f"{head}|{fields}{sep}{rest}" if head.startswith("nrefs:") else signature
