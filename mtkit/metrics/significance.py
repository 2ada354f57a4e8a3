"""Significance and confidence, on the statistics rows every metric computes (mtkit.metrics.base):
paired bootstrap resampling of several systems against the first (Koehn, 2004), paired
approximate randomization (Riezler and Maxwell, 2005), and one system's bootstrap interval.
Standard library only: resamples and swaps are drawn with Python's random from a seed (sacreBLEU
draws them with numpy; the tests pin both on the same draws)."""

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


def check_bootstrap(n_samples: int, n_segments: int | None = None, option: str = "--paired-bs-n") -> None:
    """Refuse a bootstrap that would not fit in memory, before any work."""
    if not 1 <= n_samples <= MAX_BOOTSTRAP_SAMPLES:
        raise UserError(f"{option} must be between 1 and {MAX_BOOTSTRAP_SAMPLES:,}, got {n_samples:,}")
    if n_segments is not None and n_samples * n_segments > MAX_BOOTSTRAP_CELLS:
        raise UserError(f"{option} {n_samples:,} on {n_segments:,} segments would hold {n_samples * n_segments:,} "
                        f"counts in memory (at most {MAX_BOOTSTRAP_CELLS:,}): use at most "
                        f"{MAX_BOOTSTRAP_CELLS // n_segments:,} samples")


def _resample_weights(n_segments: int, n_samples: int, seed: int | None) -> list[list[int]]:
    """For each bootstrap sample, how many times each segment was drawn (shared by all systems)."""
    rng = random.Random(seed)
    weights = []
    for _ in range(n_samples):
        row = [0] * n_segments
        for i in rng.choices(range(n_segments), k=n_segments):
            row[i] += 1
        weights.append(row)
    return weights


# ----------------------------------------------------------------------------- one system per process
_SHARED: tuple = ()  # what forked processes read: (function, systems' statistics, arguments)


def check_paired_jobs(jobs: int) -> None:
    if jobs < 0:
        raise UserError(f"--paired-jobs must be 0 (a process per system) or more, got {jobs}")


def _each_system(function, systems_stats: Sequence, systems: Sequence[int], jobs: int, *args) -> list:
    """function(systems_stats, k, *args) for each k of `systems`, in `jobs` forked processes (1: in
    this one; 0: one per system, at most one per CPU; Linux only, elsewhere in this process)."""
    import os
    import sys

    check_paired_jobs(jobs)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    jobs = min(len(systems), cpus if jobs == 0 else jobs)
    if jobs <= 1 or sys.platform != "linux":
        return [function(systems_stats, k, *args) for k in systems]
    import multiprocessing

    global _SHARED
    _SHARED = (function, systems_stats, args)
    try:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            return pool.map(_one_system, systems)
    finally:
        _SHARED = ()


def _one_system(k: int):
    function, systems_stats, args = _SHARED
    return function(systems_stats, k, *args)


# ----------------------------------------------------------------------------- paired bootstrap
def paired_bootstrap(systems_stats: Sequence[Sequence[Sequence[float]]], metric: Metric, nrefs: int = 1,
                     n_samples: int = 1000, seed: int | None = 12345, jobs: int = 1) -> list[PairedResult]:
    """Paired bootstrap resampling (Koehn, 2004) of several systems against the first: every system
    is scored on the same `n_samples` resampled segment sets, drawn from `seed` (jobs: processes,
    see _each_system)."""
    n_segments = len(systems_stats[0])
    if n_segments == 0:
        raise UserError("paired bootstrap needs at least one segment")
    check_bootstrap(n_samples, n_segments)
    return bootstrap_from_weights(systems_stats, metric, nrefs, _resample_weights(n_segments, n_samples, seed), jobs)


def _resampled_scores(systems_stats: Sequence, k: int, metric: Metric, nrefs: int,
                      weights: Sequence[Sequence[int]]) -> list[float]:
    columns = list(zip(*systems_stats[k]))
    return [metric.score([sum(map(operator.mul, w, c)) for c in columns], nrefs).score for w in weights]


def bootstrap_from_weights(systems_stats: Sequence[Sequence[Sequence[float]]], metric: Metric, nrefs: int,
                           weights: Sequence[Sequence[int]], jobs: int = 1) -> list[PairedResult]:
    """The paired bootstrap's numbers from the resamples (`weights`: per sample, how often each
    segment was drawn). The mean of a system's resampled scores and its 95% interval (the mean
    plus and minus half the distance between the 1/40 and 39/40 order statistics) are sacreBLEU's:
    the same resamples give the same numbers. The p-value is two-sided, as in Koehn (2004) and
    Clark et al. (2011): under the null hypothesis the differences to the baseline are centred on
    0, and p = (1 + samples whose centred difference is at least the observed one in magnitude) /
    (samples + 1). sacreBLEU centres the absolute differences instead, which gives a system
    compared with itself p = 1 / (samples + 1); here it gets 1.0."""
    n_samples = len(weights)
    samples = _each_system(_resampled_scores, systems_stats, range(len(systems_stats)), jobs, metric, nrefs, weights)
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


# ----------------------------------------------------------------------------- one system's interval
@dataclass(frozen=True)
class Interval:
    """A score's bootstrap estimate: the mean of the resampled scores and half the width of their
    95% interval (sacreBLEU's `μ = mean ± ci`)."""

    mean: float
    ci: float


def confidence(stats: Sequence[Sequence[float]], metric: Metric, nrefs: int = 1, n_samples: int = 1000,
               seed: int | None = 12345) -> Interval:
    """A single system's bootstrap interval (sacreBLEU's --confidence), from `n_samples` resamples
    of its segments drawn from `seed` (None: from the system's entropy)."""
    if not stats:
        raise UserError("a confidence interval needs at least one segment")
    check_bootstrap(n_samples, len(stats), option="--confidence-n")
    return interval_from_weights(stats, metric, nrefs, _resample_weights(len(stats), n_samples, seed))


def intervals(systems_stats: Sequence[Sequence[Sequence[float]]], metric: Metric, nrefs: int = 1,
              n_samples: int = 1000, seed: int | None = 12345, jobs: int = 1) -> list[Interval]:
    """Each system's interval, all on the same resamples (as sacreBLEU's, which draws each system's
    from a fresh generator of the same seed); jobs: see _each_system."""
    if not systems_stats[0]:
        raise UserError("a confidence interval needs at least one segment")
    check_bootstrap(n_samples, len(systems_stats[0]), option="--confidence-n")
    weights = _resample_weights(len(systems_stats[0]), n_samples, seed)
    return _each_system(lambda all_stats, k: interval_from_weights(all_stats[k], metric, nrefs, weights),
                        systems_stats, range(len(systems_stats)), jobs)


def interval_from_weights(stats: Sequence[Sequence[float]], metric: Metric, nrefs: int,
                          weights: Sequence[Sequence[int]]) -> Interval:
    """The interval from given resamples (per sample, how often each segment was drawn)."""
    columns = list(zip(*stats))
    scores = sorted(metric.score([sum(map(operator.mul, w, c)) for c in columns], nrefs).score for w in weights)
    n, lower = len(scores), len(scores) // 40
    return Interval(math.fsum(scores) / n, 0.5 * (scores[n - lower - 1] - scores[lower]))


# ----------------------------------------------------------------------------- approximate randomization
MAX_AR_TRIALS = 1_000_000


def check_ar(n_trials: int) -> None:
    if not 1 <= n_trials <= MAX_AR_TRIALS:
        raise UserError(f"--paired-ar-n must be between 1 and {MAX_AR_TRIALS:,}, got {n_trials:,}")


def swap_masks(n_segments: int, n_trials: int, seed: int | None = 12345) -> list[int]:
    """For each trial, which segments keep their baseline statistics in the first pseudo-system (a
    bit per segment, segment i as bit i), drawn fairly from `seed`."""
    rng = random.Random(seed)
    return [rng.getrandbits(n_segments) if n_segments else 0 for _ in range(n_trials)]


def paired_ar(systems_stats: Sequence[Sequence[Sequence[float]]], metric: Metric, nrefs: int = 1,
              n_trials: int = 10_000, seed: int | None = 12345, jobs: int = 1) -> list[float | None]:
    """Paired approximate randomization (Riezler and Maxwell, 2005; sacreBLEU's --paired-ar) of
    every system against the first: p-values (None for the baseline; jobs: see _each_system)."""
    check_ar(n_trials)
    n_segments = len(systems_stats[0])
    if n_segments == 0:
        raise UserError("approximate randomization needs at least one segment")
    return ar_from_masks(systems_stats, metric, nrefs, swap_masks(n_segments, n_trials, seed), jobs)


def ar_from_masks(systems_stats: Sequence[Sequence[Sequence[float]]], metric: Metric, nrefs: int,
                  masks: Sequence[int], jobs: int = 1) -> list[float | None]:
    """The p-values from given trials: in each, the segments of `mask` keep the baseline's
    statistics in pseudo-system A and the system's in B, the others the other way round; p is
    (1 + trials whose |score(A) - score(B)| exceeds the real |difference|) / (trials + 1), as
    sacreBLEU (after multeval) computes it.

    No Python step per segment and trial: A's column sums are the system's plus the sum of the
    baseline-minus-system differences over the masked segments, and a column's differences take few
    distinct values, so that sum is the sum over values of value x popcount(mask & the segments with
    that difference), one AND and one bit count of a big integer each."""
    return [None, *_each_system(_ar_p_value, systems_stats, range(1, len(systems_stats)), jobs, metric, nrefs, masks)]


def _ar_p_value(systems_stats: Sequence, k: int, metric: Metric, nrefs: int, masks: Sequence[int]) -> float:
    base, stats = systems_stats[0], systems_stats[k]
    base_totals, totals = column_sums(base), column_sums(stats)
    real = abs(metric.score(base_totals, nrefs).score - metric.score(totals, nrefs).score)
    groups = _difference_groups(base, stats)
    exceed = 0
    for mask in masks:
        shift = [sum(value * (mask & bits).bit_count() for value, bits in column) for column in groups]
        a = [t + d for t, d in zip(totals, shift)]
        b = [t - d for t, d in zip(base_totals, shift)]
        exceed += abs(metric.score(a, nrefs).score - metric.score(b, nrefs).score) > real
    return (exceed + 1) / (len(masks) + 1)


def _difference_groups(base: Sequence[Sequence[float]], stats: Sequence[Sequence[float]]) -> list[list[tuple]]:
    """Per column, the distinct nonzero differences baseline - system, each with the segments (as
    bits of an integer) where the column differs by it."""
    groups: list[dict] = [{} for _ in (base[0] if base else [])]
    for i, (b_row, s_row) in enumerate(zip(base, stats)):
        for k, (b, s) in enumerate(zip(b_row, s_row)):
            if b != s:
                groups[k][b - s] = groups[k].get(b - s, 0) | (1 << i)
    return [list(g.items()) for g in groups]
