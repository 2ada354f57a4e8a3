"""BLEU (Papineni et al., 2002) written from scratch, standard library only.

Every number (score, counts, totals, precisions, bp, lengths) equals sacrebleu 2.x's for the same
options. The API mirrors sacrebleu's: ``corpus_bleu(hyps, [refs_1, refs_2, ...])`` where each
``refs_k`` is one reference stream (a string per hypothesis; ``None`` marks a missing reference).

The work is split the way sacrebleu splits it (mtkit.metrics.base): each segment becomes a row of
sufficient statistics (``sys_len, ref_len, correct_1..N, total_1..N``) against its references'
n-gram counts, prepared once per segment for all systems, and one pure function turns their sum
into a score. Speed comes from letting C do the iterating (n-grams built by ``zip``, matched by
``filter`` against the reference counts of every order at once, clipped with sets:
base.clipped_matches) and from 13a's rules done with str.replace and substring tests where the
line allows (tokenizers.tokens_13a).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property, partial

from mtkit.errors import UserError
from mtkit.metrics import base, report
from mtkit.metrics.base import clipped_matches
from mtkit.metrics.report import Report  # noqa: F401  (part of this module's API)
from mtkit.metrics.significance import PairedResult, paired_bootstrap  # noqa: F401  (part of this module's API)
from mtkit.metrics.tokenizers import EXTERNAL, TOKEN_LISTS, TOKENIZERS, MissingTokenizer, external

SMOOTH_DEFAULTS: dict[str, float | None] = {"none": None, "floor": 0.1, "add-k": 1.0, "exp": None}
LOG_ZERO = -9999999999.0  # log(0) as mteval and sacrebleu floor it
MAX_NGRAM_ORDER = 10  # BLEU-N beyond this measures nothing useful, and costs time in N


# ----------------------------------------------------------------------------- options
@dataclass(frozen=True)
class BLEU:
    tokenize: str = "13a"
    lowercase: bool = False
    smooth_method: str = "exp"
    smooth_value: float | None = None
    max_ngram_order: int = 4
    effective_order: bool = False
    spm_model: str = ""  # the SentencePiece model of flores101/flores200/spm (else MTKIT_SPM_MODEL, sacreBLEU's cache)

    def __post_init__(self) -> None:
        if self.tokenize not in TOKENIZERS and self.tokenize not in EXTERNAL:
            raise UserError(f"--tokenize: unknown tokenizer {self.tokenize!r} (choose from "
                            f"{', '.join([*TOKENIZERS, *EXTERNAL])})")
        if self.tokenize in EXTERNAL:
            try:
                external(self.tokenize, self.spm_model)  # its package and model are here: checked before any work
            except MissingTokenizer as e:
                raise UserError(str(e)) from None
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
        return self._tokens(line.rstrip())

    @cached_property
    def _tokens(self) -> Callable[[str], list[str]]:
        if self.tokenize in TOKEN_LISTS:
            return TOKEN_LISTS[self.tokenize]
        return partial(_split_after, TOKENIZERS.get(self.tokenize) or external(self.tokenize, self.spm_model)[0])

    def signature(self, num_refs: int) -> str:
        smooth = self.smooth_method
        default = SMOOTH_DEFAULTS[smooth]
        if default is not None:
            smooth += f"[{(self.smooth_value if self.smooth_value is not None else default):.2f}]"
        tok = self.tokenize if self.tokenize not in EXTERNAL else external(self.tokenize, self.spm_model)[1]
        fields = [("case", "lc" if self.lowercase else "mixed"), ("eff", base.yes_no(self.effective_order)),
                  ("tok", tok), ("smooth", smooth)]
        if self.max_ngram_order != 4:
            fields.append(("ngram", str(self.max_ngram_order)))
        return base.signature(num_refs, *fields)

    # the metric interface of mtkit.metrics.base
    def reference_info(self, refs: list[str]) -> RefInfo:
        tokens = [self.preprocess(ref) for ref in refs]
        return RefInfo([len(t) for t in tokens], max_ngram_counts(tokens, self.max_ngram_order))

    def segment_stats(self, hypothesis: str, info: RefInfo) -> list[int]:
        return segment_stats(self.preprocess(hypothesis), info, self.max_ngram_order)

    def score(self, stats: Sequence[float], nrefs: int = 1) -> BLEUScore:
        return score_from_stats(stats or [0] * (2 + 2 * self.max_ngram_order), self, self.signature(nrefs))

    def sentence_metric(self) -> BLEU:
        return replace(self, effective_order=True)


def _split_after(tokenize: Callable[[str], str], line: str) -> list[str]:
    return tokenize(line).split()


# ----------------------------------------------------------------------------- statistics
def ngram_orders(tokens: list[str], max_order: int) -> Iterator[Iterable]:
    """The n-grams of orders 1..max_order, one order after the other, lazily: the tokens
    themselves for n = 1, tuples built by zip (in C) otherwise."""
    yield tokens
    shifted = [tokens]
    for n in range(1, max_order):
        shifted.append(tokens[n:])
        yield zip(*shifted)


@dataclass
class RefInfo:
    """One segment's references, as BLEU needs them."""

    lengths: list[int]  # tokens of each reference
    max_counts: base.NgramCounts  # every n-gram with its largest count in any one reference


def max_ngram_counts(refs: list[list[str]], max_order: int) -> base.NgramCounts:
    """Every n-gram of the references with its largest count in any one of them.

    Most n-grams occur at most once in each reference, so the references' counts merge as dicts
    (in C), and only the n-grams that some reference repeats are compared one by one (Counter's
    union compares every n-gram in Python: a third of two-reference BLEU's time)."""
    each = [base.NgramCounts.of(Counter(itertools.chain.from_iterable(ngram_orders(ref, max_order)))) for ref in refs]
    if len(each) == 1:
        return each[0]
    repeated: dict = {}
    for ref in each:
        for gram, count in ref.repeated.items():
            if count > repeated.get(gram, 1):
                repeated[gram] = count
    counts: dict = {}
    for ref in each:
        counts.update(ref.counts)
    counts.update(repeated)
    return base.NgramCounts(counts, repeated, [])


def closest_ref_len(hyp_len: int, ref_lens: list[int]) -> int:
    """The reference length closest to hyp_len, the shorter one on ties; -1 with no reference."""
    if len(ref_lens) == 1:
        return ref_lens[0]
    return min(ref_lens, key=lambda n: (abs(hyp_len - n), n)) if ref_lens else -1


def segment_stats(hyp: list[str], refs: RefInfo, max_order: int) -> list[int]:
    """[sys_len, ref_len, correct_1..N, total_1..N] for one tokenized hypothesis and its references."""
    n_tokens = len(hyp)
    correct = clipped_matches(ngram_orders(hyp, max_order), refs.max_counts)
    total = [max(0, n_tokens - n) for n in range(max_order)]
    return [n_tokens, closest_ref_len(n_tokens, refs.lengths), *correct, *total]


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


def score_from_stats(stats: Sequence[float], opts: BLEU, signature: str = "") -> BLEUScore:
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
    opts = BLEU(tokenize, lowercase, smooth_method, smooth_value, max_ngram_order, use_effective_order)
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


def evaluate(
    systems: Sequence[Sequence[str]],
    references: Sequence[Sequence[str | None]],
    opts: BLEU,
    *,
    sentence_level: bool = False,
    paired_bs_samples: int = 0,
    seed: int = 12345,
) -> Report:
    """Score each system against the same references (prepared once); see mtkit.metrics.report.Report."""
    return report.evaluate(systems, base.prepare_references(references), opts, sentence_level=sentence_level,
                         paired_bs_samples=paired_bs_samples, seed=seed)
