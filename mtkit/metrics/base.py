"""What every metric shares, as sacreBLEU shares it: each segment becomes a row of sufficient
statistics, computed against reference information prepared once per reference set (so scoring
16 systems does not tokenize the references 16 times); one function of the metric turns their
column sums into a score. Sentence scores, several systems and paired bootstrap resampling all
reuse the same rows. Standard library only.

A metric is an options object with four methods:
    reference_info(refs)        what one segment's references (None removed) contribute, once
    segment_stats(hyp, info)    the statistics row of one hypothesis
    score(stats, nrefs)         a score (with its signature) from summed statistics
    sentence_metric()           the metric that scores single sentences (BLEU: effective order)
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from mtkit.errors import UserError


class Score(Protocol):
    name: str
    score: float
    signature: str

    def format(self, width: int = 2, signature: bool = True) -> str: ...

    def to_dict(self) -> dict: ...


class OneNumberScore:
    """format, to_dict and str of a dataclass score reported as one number (chrF, TER), as
    sacreBLEU prints it: ``NAME|signature = 59.41``."""

    name: str
    score: float
    signature: str

    def format(self, width: int = 2, signature: bool = True) -> str:
        name = f"{self.name}|{self.signature}" if signature and self.signature else self.name
        return f"{name} = {self.score:.{width}f}"

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    def __str__(self) -> str:
        return self.format()


class Metric(Protocol):
    def reference_info(self, refs: list[str]) -> Any: ...

    def segment_stats(self, hypothesis: str, info: Any) -> list: ...

    def score(self, stats: Sequence[float], nrefs: int = 1) -> Any: ...

    def sentence_metric(self) -> Metric: ...


@dataclass
class References:
    """A reference set prepared for one metric."""

    infos: list[Any]  # per segment, what metric.reference_info returned
    nrefs: int  # references per segment; -1 when it varies


def prepare(metric: Metric, references: Sequence[Sequence[str | None]]) -> References:
    """Reference streams (each a string per segment; None marks a missing reference) prepared once."""
    if isinstance(references, str) or (references and isinstance(references[0], str)):
        raise TypeError("references are a list of reference streams, each a list of strings")
    lengths = {len(stream) for stream in references}
    if len(lengths) > 1:
        raise UserError(f"the reference streams have different numbers of lines ({', '.join(map(str, sorted(lengths)))})")
    infos, counts = [], set()
    for refs in zip(*references):
        present = [r for r in refs if r is not None]
        counts.add(len(present))
        infos.append(metric.reference_info(present))
    return References(infos, counts.pop() if len(counts) == 1 else -1)


def statistics(metric: Metric, hypotheses: Sequence[str], references: References) -> list[list]:
    """One row of statistics per hypothesis."""
    if isinstance(hypotheses, str):
        raise TypeError("hypotheses are a list of strings")
    if len(hypotheses) != len(references.infos):
        raise UserError(f"the references have {len(references.infos)} lines but there are {len(hypotheses)} hypotheses")
    return [metric.segment_stats(h, info) for h, info in zip(hypotheses, references.infos)]


def column_sums(rows: Sequence[Sequence[float]]) -> list:
    """Column sums of statistics rows (an empty corpus sums to an empty list), added one row after
    another as sacreBLEU does: for float columns (TER's average reference lengths) Python 3.12's
    compensated sum() could differ in the last digit."""
    totals = list(rows[0]) if rows else []
    for row in rows[1:]:
        totals = [a + b for a, b in zip(totals, row)]
    return totals


# ----------------------------------------------------------------------------- significance
@dataclass(frozen=True)
class PairedResult:
    """One system's bootstrap estimate and its significance against the baseline (the first system)."""

    score: float
    mean: float
    ci_low: float
    ci_high: float
    p_value: float | None  # None for the baseline itself


def _resample_weights(n_segments: int, n_samples: int, seed: int) -> list[list[int]]:
    """For each bootstrap sample, how many times each segment was drawn (shared by all systems)."""
    rng = random.Random(seed)
    weights = []
    for _ in range(n_samples):
        row = [0] * n_segments
        for i in rng.choices(range(n_segments), k=n_segments):
            row[i] += 1
        weights.append(row)
    return weights


def paired_bootstrap(systems_stats: Sequence[Sequence[Sequence[float]]], metric: Metric, nrefs: int = 1,
                     n_samples: int = 1000, seed: int = 12345) -> list[PairedResult]:
    """Paired bootstrap resampling (Koehn, 2004) of several systems against the first.

    Every system is scored on the same resampled segment sets. The p-value is two-sided: the
    share of samples whose difference to the baseline, centred on its mean (the null hypothesis),
    is at least as large in magnitude as the observed difference, with add-one smoothing."""
    n_segments = len(systems_stats[0])
    if n_segments == 0:
        raise UserError("paired bootstrap needs at least one segment")
    weights = _resample_weights(n_segments, n_samples, seed)
    samples = []
    for stats in systems_stats:
        columns = list(zip(*stats))
        samples.append([metric.score([sum(map(operator.mul, w, c)) for c in columns], nrefs).score for w in weights])
    observed = [metric.score(column_sums(s), nrefs).score for s in systems_stats]
    results = []
    for k, sample in enumerate(samples):
        ordered = sorted(sample)
        low, high = ordered[int(0.025 * n_samples)], ordered[min(n_samples - 1, int(0.975 * n_samples))]
        p_value = None
        if k > 0:
            diffs = [s - b for s, b in zip(sample, samples[0])]
            mean_diff = math.fsum(diffs) / n_samples
            real = abs(observed[k] - observed[0])
            p_value = (1 + sum(abs(d - mean_diff) >= real for d in diffs)) / (n_samples + 1)
        results.append(PairedResult(observed[k], math.fsum(sample) / n_samples, low, high, p_value))
    return results


# ----------------------------------------------------------------------------- several systems
@dataclass
class Report:
    """One metric on several systems: a corpus score each, optionally sentence scores and
    paired-bootstrap results (the first system is the baseline)."""

    scores: list[Any]
    sentence_scores: list[list[Any]] = field(default_factory=list)
    paired: list[PairedResult] = field(default_factory=list)


def evaluate(systems: Sequence[Sequence[str]], references: References, metric: Metric, *,
             sentence_level: bool = False, paired_bs_samples: int = 0, seed: int = 12345) -> Report:
    """Score each system against the same prepared references."""
    all_stats = [statistics(metric, hyps, references) for hyps in systems]
    report = Report([metric.score(column_sums(stats), references.nrefs) for stats in all_stats])
    if sentence_level:
        single = metric.sentence_metric()
        report.sentence_scores = [[single.score(row, references.nrefs) for row in stats] for stats in all_stats]
    if paired_bs_samples:
        report.paired = paired_bootstrap(all_stats, metric, references.nrefs, paired_bs_samples, seed)
    return report
