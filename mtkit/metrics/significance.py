"""Significance and confidence: paired bootstrap resampling of several systems against the
first (Koehn, 2004), on the statistics rows every metric computes (mtkit.metrics.base).
Standard library only."""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Sequence
from dataclasses import dataclass

from mtkit.errors import UserError
from mtkit.metrics.base import Metric, column_sums


@dataclass(frozen=True)
class PairedResult:
    """One system's bootstrap estimate and its significance against the baseline (the first system)."""

    score: float
    mean: float
    ci_low: float
    ci_high: float
    p_value: float | None  # None for the baseline itself


MAX_BOOTSTRAP_SAMPLES = 100_000  # sacreBLEU's default is 1,000; 10,000 is the most papers use
MAX_BOOTSTRAP_CELLS = 50_000_000  # samples x segments held at once (about 0.4 GB)


def check_bootstrap(n_samples: int, n_segments: int | None = None) -> None:
    """Refuse a paired bootstrap that would not fit in memory, before any work."""
    if not 1 <= n_samples <= MAX_BOOTSTRAP_SAMPLES:
        raise UserError(f"--paired-bs-n must be between 1 and {MAX_BOOTSTRAP_SAMPLES:,}, got {n_samples:,}")
    if n_segments is not None and n_samples * n_segments > MAX_BOOTSTRAP_CELLS:
        raise UserError(f"--paired-bs-n {n_samples:,} on {n_segments:,} segments would hold {n_samples * n_segments:,} "
                        f"counts in memory (at most {MAX_BOOTSTRAP_CELLS:,}): use at most "
                        f"{MAX_BOOTSTRAP_CELLS // n_segments:,} samples")


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
    """Paired bootstrap resampling (Koehn, 2004) of several systems against the first: every system
    is scored on the same `n_samples` resampled segment sets, drawn from `seed`."""
    n_segments = len(systems_stats[0])
    if n_segments == 0:
        raise UserError("paired bootstrap needs at least one segment")
    check_bootstrap(n_samples, n_segments)
    return bootstrap_from_weights(systems_stats, metric, nrefs, _resample_weights(n_segments, n_samples, seed))


def bootstrap_from_weights(systems_stats: Sequence[Sequence[Sequence[float]]], metric: Metric, nrefs: int,
                           weights: Sequence[Sequence[int]]) -> list[PairedResult]:
    """The paired bootstrap's numbers from the resamples (`weights`: per sample, how often each
    segment was drawn). The mean of a system's resampled scores and its 95% interval (the mean
    plus and minus half the distance between the 1/40 and 39/40 order statistics) are sacreBLEU's:
    the same resamples give the same numbers. The p-value is two-sided, as in Koehn (2004) and
    Clark et al. (2011): under the null hypothesis the differences to the baseline are centred on
    0, and p = (1 + samples whose centred difference is at least the observed one in magnitude) /
    (samples + 1). sacreBLEU centres the absolute differences instead, which gives a system
    compared with itself p = 1 / (samples + 1); here it gets 1.0."""
    n_samples = len(weights)
    samples = []
    for stats in systems_stats:
        columns = list(zip(*stats))
        samples.append([metric.score([sum(map(operator.mul, w, c)) for c in columns], nrefs).score for w in weights])
    observed = [metric.score(column_sums(s), nrefs).score for s in systems_stats]
    lower = n_samples // 40
    results = []
    for k, sample in enumerate(samples):
        mean = math.fsum(sample) / n_samples
        ordered = sorted(sample)
        half = 0.5 * (ordered[n_samples - lower - 1] - ordered[lower])
        p_value = None
        if k > 0:
            diffs = [s - b for s, b in zip(sample, samples[0])]
            centre = math.fsum(diffs) / n_samples
            real = abs(observed[k] - observed[0])
            p_value = (1 + sum(abs(d - centre) >= real for d in diffs)) / (n_samples + 1)
        results.append(PairedResult(observed[k], mean, mean - half, mean + half, p_value))
    return results
