"""One metric on several systems at once: a corpus score each, sentence scores, and the paired
bootstrap (mtkit.metrics.significance), from one pass of statistics (mtkit.metrics.base)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mtkit.metrics.base import Metric, References, column_sums, statistics
from mtkit.metrics.significance import PairedResult, paired_bootstrap


@dataclass
class Report:
    """One metric on several systems: a corpus score each, optionally sentence scores and
    paired-bootstrap results (the first system is the baseline)."""

    scores: list[Any]
    sentence_scores: list[list[Any]] = field(default_factory=list)
    paired: list[PairedResult] = field(default_factory=list)


def evaluate(systems: Sequence[Sequence[str]], references: References, metric: Metric, *,
             sentence_level: bool = False, paired_bs_samples: int = 0, seed: int = 12345, jobs: int = 1) -> Report:
    """Score each system against the same prepared references (jobs: see statistics)."""
    all_stats = statistics(metric, systems, references, jobs)
    report = Report([metric.score(column_sums(stats), references.nrefs) for stats in all_stats])
    if sentence_level:
        single = metric.sentence_metric()
        report.sentence_scores = [[single.score(row, references.nrefs) for row in stats] for stats in all_stats]
    if paired_bs_samples:
        report.paired = paired_bootstrap(all_stats, metric, references.nrefs, paired_bs_samples, seed)
    return report
