"""BLEU (Papineni et al., 2002) written from scratch, standard library only.

Every number (score, counts, totals, precisions, bp, lengths) equals sacrebleu 2.x's for the same
options. The API mirrors sacrebleu's: ``corpus_bleu(hyps, [refs_1, refs_2, ...])`` where each
``refs_k`` is one reference stream (a string per hypothesis; ``None`` marks a missing reference).

The work is split the way sacrebleu splits it: each segment becomes a row of sufficient statistics
(``sys_len, ref_len, correct_1..N, total_1..N``) and one pure function turns their sum into a
score. Speed comes from building n-gram counters with ``zip`` (C loops) instead of slicing tuples
one by one, and from a translate table for the first (character-class) rule of 13a.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from mtkit import __version__
from mtkit.bleu_tokenizers import TOKENIZERS
from mtkit.errors import UserError

SMOOTH_DEFAULTS: dict[str, float | None] = {"none": None, "floor": 0.1, "add-k": 1.0, "exp": None}
LOG_ZERO = -9999999999.0  # log(0) as mteval and sacrebleu floor it
MAX_NGRAM_ORDER = 10  # BLEU-N beyond this measures nothing useful, and costs time in N


# ----------------------------------------------------------------------------- options
@dataclass(frozen=True)
class BLEUOptions:
    tokenize: str = "13a"
    lowercase: bool = False
    smooth_method: str = "exp"
    smooth_value: float | None = None
    max_ngram_order: int = 4
    effective_order: bool = False

    def __post_init__(self) -> None:
        if self.tokenize not in TOKENIZERS:
            raise UserError(f"--tokenize: unknown tokenizer {self.tokenize!r} (choose from {', '.join(TOKENIZERS)})")
        if self.smooth_method not in SMOOTH_DEFAULTS:
            raise UserError(
                f"--smooth-method: unknown method {self.smooth_method!r} (choose from {', '.join(SMOOTH_DEFAULTS)})"
            )
        if not 1 <= self.max_ngram_order <= MAX_NGRAM_ORDER:
            raise UserError(f"--max-ngram-order must be between 1 and {MAX_NGRAM_ORDER}, got {self.max_ngram_order}")
        if self.smooth_value is not None and not (math.isfinite(self.smooth_value) and self.smooth_value >= 0):
            raise UserError(f"--smooth-value must be a number >= 0, got {self.smooth_value}")

    def preprocess(self, line: str) -> list[str]:
        """Lowercase, strip trailing white space, tokenize and split: the tokens BLEU counts."""
        if self.lowercase:
            line = line.lower()
        return TOKENIZERS[self.tokenize](line.rstrip()).split()

    def signature(self, num_refs: int) -> str:
        smooth = self.smooth_method
        default = SMOOTH_DEFAULTS[smooth]
        if default is not None:
            smooth += f"[{(self.smooth_value if self.smooth_value is not None else default):.2f}]"
        parts = [
            f"nrefs:{num_refs if num_refs >= 0 else 'var'}",
            f"case:{'lc' if self.lowercase else 'mixed'}",
            f"eff:{'yes' if self.effective_order else 'no'}",
            f"tok:{self.tokenize}",
            f"smooth:{smooth}",
        ]
        if self.max_ngram_order != 4:
            parts.append(f"ngram:{self.max_ngram_order}")
        parts.append(f"version:mtkit-{__version__}")
        return "|".join(parts)


# ----------------------------------------------------------------------------- statistics
def ngrams(tokens: list[str], n: int) -> Iterable:
    """The n-grams of one order, lazily: the tokens themselves for n = 1, tuples otherwise."""
    return tokens if n == 1 else zip(*[tokens[i:] for i in range(n)])


def clipped_matches(hyp: list[str], refs: list[list[str]], n: int) -> int:
    """Hypothesis n-grams found in the references, each counted at most as often as it occurs in
    the single reference where it is most frequent."""
    distinct = set(ngrams(hyp, n))
    if len(distinct) == max(0, len(hyp) - n + 1):  # no repeats, so clipping cannot bind
        if len(refs) == 1:
            return len(distinct.intersection(ngrams(refs[0], n)))
        found: set = set()
        for ref in refs:
            found |= distinct.intersection(ngrams(ref, n))
        return len(found)
    ref_max: Counter = Counter()
    for ref in refs:
        ref_max |= Counter(ngrams(ref, n))  # Counter union keeps the maximum count
    return sum(min(c, ref_max[g]) for g, c in Counter(ngrams(hyp, n)).items() if g in ref_max)


def closest_ref_len(hyp_len: int, ref_lens: list[int]) -> int:
    """The reference length closest to hyp_len, the shorter one on ties; -1 with no reference."""
    return min(ref_lens, key=lambda n: (abs(hyp_len - n), n)) if ref_lens else -1


def segment_stats(hyp: list[str], refs: list[list[str]], max_order: int) -> list[int]:
    """[sys_len, ref_len, correct_1..N, total_1..N] for one tokenized hypothesis and its references."""
    orders = range(1, max_order + 1)
    correct = [clipped_matches(hyp, refs, n) for n in orders]
    total = [max(0, len(hyp) - n + 1) for n in orders]
    return [len(hyp), closest_ref_len(len(hyp), [len(r) for r in refs]), *correct, *total]


# ----------------------------------------------------------------------------- score
@dataclass
class BLEUScore:
    score: float
    counts: list[float]
    totals: list[float]
    precisions: list[float]
    bp: float
    sys_len: int
    ref_len: int
    signature: str = ""
    name: str = field(default="BLEU")

    @property
    def ratio(self) -> float:
        return self.sys_len / self.ref_len if self.ref_len else 0.0

    def format(self, width: int = 2, signature: bool = True) -> str:
        """sacrebleu's text line: ``BLEU|sig = 34.1 65.1/40.2/27.3/19.1 (BP = ... ref_len = ...)``."""
        name = f"{self.name}|{self.signature}" if signature and self.signature else self.name
        precisions = "/".join(f"{p:.1f}" for p in self.precisions)
        return (
            f"{name} = {self.score:.{width}f} {precisions} (BP = {self.bp:.3f} ratio = {self.ratio:.3f} "
            f"hyp_len = {self.sys_len:d} ref_len = {self.ref_len:d})"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}

    def __str__(self) -> str:
        return self.format()


def score_from_stats(stats: Sequence[float], opts: BLEUOptions, signature: str = "") -> BLEUScore:
    """BLEU from summed statistics: brevity penalty times the geometric mean of precisions."""
    order = opts.max_ngram_order
    sys_len, ref_len = int(stats[0]), int(stats[1])
    correct, total = list(stats[2 : 2 + order]), list(stats[2 + order : 2 + 2 * order])
    default = SMOOTH_DEFAULTS[opts.smooth_method] or 0.0  # only floor and add-k use k
    k = opts.smooth_value if opts.smooth_value is not None else default
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    precisions = [0.0] * order
    if not any(correct):
        return BLEUScore(0.0, correct, total, precisions, bp, sys_len, ref_len, signature)
    exp_divisor, eff_order = 1.0, order
    for n in range(order):
        if opts.smooth_method == "add-k" and n > 0:
            correct[n] += k  # as sacrebleu: the reported counts/totals include k
            total[n] += k
        if total[n] == 0:
            break
        if opts.effective_order:
            eff_order = n + 1
        if correct[n] > 0:
            precisions[n] = 100.0 * correct[n] / total[n]
        elif opts.smooth_method == "exp":
            exp_divisor *= 2
            precisions[n] = 100.0 / (exp_divisor * total[n])
        elif opts.smooth_method == "floor":
            precisions[n] = 100.0 * k / total[n]
    log_sum = sum(math.log(p) if p > 0 else LOG_ZERO for p in precisions[:eff_order])
    score = bp * math.exp(log_sum / eff_order)
    return BLEUScore(score, correct, total, precisions, bp, sys_len, ref_len, signature)


def corpus_stats(
    hypotheses: Sequence[str], references: Sequence[Sequence[str | None]], opts: BLEUOptions
) -> tuple[list[list[int]], int]:
    """Per-segment statistics and the number of references (-1 when it varies per segment)."""
    for k, stream in enumerate(references):
        if len(stream) != len(hypotheses):
            raise UserError(
                f"reference stream {k + 1} has {len(stream)} lines but there are {len(hypotheses)} hypotheses"
            )
    stats, nrefs = [], set()
    for i, hyp in enumerate(hypotheses):
        refs = [opts.preprocess(ref) for ref in (stream[i] for stream in references) if ref is not None]
        nrefs.add(len(refs))
        stats.append(segment_stats(opts.preprocess(hyp), refs, opts.max_ngram_order))
    return stats, (nrefs.pop() if len(nrefs) == 1 else -1)


def sum_stats(stats: Sequence[Sequence[int]], max_order: int) -> list[int]:
    """Column sums of per-segment statistics (zeros for an empty corpus)."""
    return [sum(column) for column in zip(*stats)] if stats else [0] * (2 + 2 * max_order)


def corpus_bleu(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str | None]],
    *,
    tokenize: str = "13a",
    lowercase: bool = False,
    smooth_method: str = "exp",
    smooth_value: float | None = None,
    max_ngram_order: int = 4,
    use_effective_order: bool = False,
) -> BLEUScore:
    """Corpus BLEU of hypotheses against one or more reference streams (sacrebleu's defaults)."""
    if isinstance(hypotheses, str) or (references and isinstance(references[0], str)):
        raise TypeError("corpus_bleu takes a list of hypotheses and a list of reference streams (lists)")
    opts = BLEUOptions(tokenize, lowercase, smooth_method, smooth_value, max_ngram_order, use_effective_order)
    return evaluate([hypotheses], references, opts).scores[0]


def sentence_bleu(
    hypothesis: str,
    references: Sequence[str | None],
    *,
    tokenize: str = "13a",
    lowercase: bool = False,
    smooth_method: str = "exp",
    smooth_value: float | None = None,
    max_ngram_order: int = 4,
    use_effective_order: bool = True,
) -> BLEUScore:
    """Sentence BLEU: one hypothesis against its references, effective order on by default."""
    return corpus_bleu(
        [hypothesis],
        [[ref] for ref in references],
        tokenize=tokenize,
        lowercase=lowercase,
        smooth_method=smooth_method,
        smooth_value=smooth_value,
        max_ngram_order=max_ngram_order,
        use_effective_order=use_effective_order,
    )


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


def paired_bootstrap(
    systems_stats: Sequence[Sequence[Sequence[int]]],
    opts: BLEUOptions,
    n_samples: int = 1000,
    seed: int = 12345,
) -> list[PairedResult]:
    """Paired bootstrap resampling (Koehn, 2004) of several systems against the first.

    Every system is scored on the same resampled segment sets. The p-value is two-sided: the
    share of samples whose difference to the baseline, centred on its mean (the null hypothesis),
    is at least as large in magnitude as the observed difference, with add-one smoothing.
    """
    n_segments = len(systems_stats[0])
    if n_segments == 0:
        raise UserError("paired bootstrap needs at least one segment")
    weights = _resample_weights(n_segments, n_samples, seed)
    samples = []
    for stats in systems_stats:
        columns = list(zip(*stats))
        samples.append([score_from_stats([sum(map(int.__mul__, w, c)) for c in columns], opts).score for w in weights])
    observed = [score_from_stats(sum_stats(s, opts.max_ngram_order), opts).score for s in systems_stats]
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
class BLEUReport:
    """What `mtkit bleu` computes: one corpus score per system, optionally sentence scores and
    paired-bootstrap results (the first system is the baseline)."""

    scores: list[BLEUScore]
    sentence_scores: list[list[BLEUScore]] = field(default_factory=list)
    paired: list[PairedResult] = field(default_factory=list)


def evaluate(
    systems: Sequence[Sequence[str]],
    references: Sequence[Sequence[str | None]],
    opts: BLEUOptions,
    *,
    sentence_level: bool = False,
    paired_bs_samples: int = 0,
    seed: int = 12345,
) -> BLEUReport:
    """Score each system against the same references; see BLEUReport."""
    all_stats, scores = [], []
    for hyps in systems:
        stats, nrefs = corpus_stats(hyps, references, opts)
        scores.append(score_from_stats(sum_stats(stats, opts.max_ngram_order), opts, opts.signature(nrefs)))
        all_stats.append(stats)
    report = BLEUReport(scores)
    if sentence_level:
        sent_opts = BLEUOptions(**{**asdict(opts), "effective_order": True})
        report.sentence_scores = [[score_from_stats(s, sent_opts) for s in stats] for stats in all_stats]
    if paired_bs_samples:
        report.paired = paired_bootstrap(all_stats, opts, paired_bs_samples, seed)
    return report
