"""chrF (Popović, 2015) and chrF++ (Popović, 2017), written from scratch, standard library only.

Every number equals sacreBLEU 2.x's for the same options. For each n-gram order (character
orders 1..char_order on the text without spaces, then word orders 1..word_order on words with
leading/trailing punctuation split off) a segment contributes three counts: hypothesis n-grams
(0 when the reference has none of that order), reference n-grams, and clipped matches. With
several references, a segment takes the counts of the reference that gives it the best
sentence-level score (the first one on ties). The corpus score is an F-beta of the counts'
column sums: by default precision and recall are averaged over the orders where both sides have
n-grams ("effective order", sacreBLEU >= 2.0), with eps_smoothing the per-order F-scores are
averaged with 1e-16 standing in for empty orders (chrF++.py, Moses and NLTK).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

from mtkit.errors import UserError
from mtkit.metrics import base, report

PUNCTUATION = frozenset('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~')
EPS = 1e-16


@dataclass(frozen=True)
class CHRF:
    char_order: int = 6
    word_order: int = 0  # 2: chrF++
    beta: int = 2  # recall weighs beta times as much as precision
    lowercase: bool = False
    whitespace: bool = False  # keep spaces inside character n-grams
    eps_smoothing: bool = False

    def __post_init__(self) -> None:
        for name, value, high in (("--chrf-char-order", self.char_order, 20), ("--chrf-word-order", self.word_order, 10),
                                  ("--chrf-beta", self.beta, 100)):
            if not (isinstance(value, int) and 0 <= value <= high):
                raise UserError(f"{name} must be an integer between 0 and {high}, got {value!r}")
        if self.char_order + self.word_order == 0:
            raise UserError("chrF needs at least one n-gram order (--chrf-char-order or --chrf-word-order)")

    @property
    def name(self) -> str:
        return f"chrF{self.beta}" + "+" * self.word_order

    def signature(self, nrefs: int) -> str:
        return base.signature(nrefs, ("case", "lc" if self.lowercase else "mixed"),
                              ("eff", base.yes_no(not self.eps_smoothing)), ("nc", str(self.char_order)),
                              ("nw", str(self.word_order)), ("space", base.yes_no(self.whitespace)))

    def ngrams(self, text: str) -> list[list[Sequence[str]]]:
        """A segment's n-grams, per order: characters (orders 1..char_order), then words (1..word_order)."""
        if self.lowercase:
            text = text.lower()
        grams = [char_ngrams(text if self.whitespace else "".join(text.split()), self.char_order)]
        if self.word_order:
            words = split_punctuation(text)
            word_grams: list[Sequence[str]] = [words]
            word_grams += [list(map(" ".join, zip(*[words[i:] for i in range(n)]))) for n in range(2, self.word_order + 1)]
            grams.append(word_grams)
        return grams

    # the metric interface of mtkit.metrics.base
    def reference_info(self, refs: list[str]) -> list[list[base.NgramCounts]]:
        """Per reference, its character n-grams and its word n-grams (each of all orders in one dict)."""
        return [[base.count_ngrams(orders) for orders in self.ngrams(ref)] for ref in refs]

    def segment_stats(self, hypothesis: str, info: list[list[base.NgramCounts]]) -> list[int]:
        hyp = self.ngrams(hypothesis)
        best: list[int] = [0] * (3 * (self.char_order + self.word_order))
        best_f = -1.0
        for ref in info:
            stats = []
            for orders, ref_grams in zip(hyp, ref):
                for grams, total, matched in zip(orders, ref_grams.totals, base.clipped_matches(orders, ref_grams)):
                    stats += [len(grams) if total else 0, total, matched]
            f = f_score(stats, self.beta, self.eps_smoothing) if len(info) > 1 else 0.0
            if f > best_f:
                best, best_f = stats, f
        return best

    def score(self, stats: Sequence[float], nrefs: int = 1) -> CHRFScore:
        stats = list(stats) or [0] * (3 * (self.char_order + self.word_order))
        return CHRFScore(f_score(stats, self.beta, self.eps_smoothing), self.char_order, self.word_order, self.beta,
                         self.name, self.signature(nrefs))

    def sentence_metric(self) -> CHRF:
        return self


def split_punctuation(text: str) -> list[str]:
    """Words, with one punctuation mark split off the end (or else the start) of each longer word,
    as chrF++'s reference implementation does."""
    words = []
    for w in text.split():
        if len(w) > 1 and w[-1] in PUNCTUATION:
            words += [w[:-1], w[-1]]
        elif len(w) > 1 and w[0] in PUNCTUATION:
            words += [w[0], w[1:]]
        else:
            words.append(w)
    return words


def char_ngrams(chars: str, max_order: int) -> list[Sequence[str]]:
    """The character n-grams of orders 1..max_order, in order: the string itself for order 1,
    each longer order as the previous one's n-grams each extended by the next character (one
    string concatenation per n-gram, done by map in C: 1.6x faster than joining zip's tuples)."""
    grams: list[Sequence[str]] = [chars] if max_order else []
    for n in range(2, max_order + 1):
        grams.append(list(map(operator.add, grams[-1], chars[n - 1:])))
    return grams


def f_score(stats: Sequence[float], beta: float, eps_smoothing: bool) -> float:
    """chrF in [0, 100] from [hyp, ref, match] counts per order (see the module docstring). The
    arithmetic is done in sacreBLEU's order, with plain += sums (Python 3.12's sum() of floats is
    compensated, which would change the last digit)."""
    factor = beta ** 2
    per_order_f, sum_precision, sum_recall, effective_order = 0.0, 0.0, 0.0, 0
    for i in range(0, len(stats), 3):
        n_hyp, n_ref, n_match = stats[i:i + 3]
        precision = n_match / n_hyp if n_hyp > 0 else EPS
        recall = n_match / n_ref if n_ref > 0 else EPS
        denominator = factor * precision + recall
        per_order_f += (1 + factor) * precision * recall / denominator if denominator > 0 else EPS
        if n_hyp > 0 and n_ref > 0:
            sum_precision += precision
            sum_recall += recall
            effective_order += 1
    if eps_smoothing:
        return 100 * per_order_f / (len(stats) // 3)
    if effective_order == 0:
        return 0.0
    p, r = sum_precision / effective_order, sum_recall / effective_order
    if not p + r:
        return 0.0
    score = (1 + factor) * p * r
    score /= factor * p + r
    return 100 * score


@dataclass
class CHRFScore(base.OneNumberScore):
    score: float
    char_order: int
    word_order: int
    beta: int
    name: str = "chrF2"
    signature: str = ""


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[Sequence[str | None]], *, char_order: int = 6,
                word_order: int = 0, beta: int = 2, lowercase: bool = False, whitespace: bool = False,
                eps_smoothing: bool = False) -> CHRFScore:
    """Corpus chrF (word_order=2: chrF++) of hypotheses against one or more reference streams."""
    metric = CHRF(char_order, word_order, beta, lowercase, whitespace, eps_smoothing)
    return report.evaluate([hypotheses], base.prepare_references(references), metric).scores[0]


def sentence_chrf(hypothesis: str, references: Sequence[str | None], **options) -> CHRFScore:
    """chrF of one hypothesis against its references."""
    return corpus_chrf([hypothesis], [[ref] for ref in references], **options)
