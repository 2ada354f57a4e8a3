"""TER, translation edit rate (Snover et al., 2006), written from scratch, standard library only.

TER = (word edits + shifts) / reference words, the fewest edits that turn the hypothesis into
the reference, where moving a block of up to 10 words counts as one edit. Every number equals
sacreBLEU 2.x's, which follows Tercom (github.com/jhclark/tercom); so does this, heuristics
included:

- The edit distance is computed in a band of +-25 columns around the (length-scaled) diagonal,
  preferring, on equal cost, a match or substitution, then a deletion, then an insertion.
- Shifts are chosen greedily: among hypothesis blocks that also occur in the reference (at most
  10 words, starting at most 50 words apart), where the hypothesis block is not fully correct,
  the reference block is not fully matched, and the block's target is outside itself, try each
  insertion point next to the aligned reference block; keep the candidate that lowers the edit
  distance most (then the longest, the earliest, the earliest target). Repeat while it helps,
  with at most 1,000 candidates tried in all.
- Several references: the fewest edits over them, divided by their average length.

Rows of the edit distance are cached by hypothesis prefix (shifts change only suffixes), which
is what makes the shift search affordable in Python.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mtkit.metrics import base, report

MAX_SHIFT_SIZE = 10
MAX_SHIFT_DIST = 50
BEAM_WIDTH = 25
MAX_SHIFT_CANDIDATES = 1000
MAX_CACHED_ROWS = 10000
INFINITY = 10**16
# edit operations, as a trace of rewriting the hypothesis into the reference
MATCH, SUB, INS, DEL = " ", "s", "i", "d"


# ----------------------------------------------------------------------------- tokenization
class _Tercom:
    """Tercom's normalisation (src/ter/core/Normalizer.java), as sacreBLEU's TercomTokenizer."""

    ASIAN_PUNCT = r"([\u3001\u3002\u3008-\u3011\u3014-\u301f\uff61-\uff65\u30fb])"
    FULL_WIDTH_PUNCT = r"([\uff0e\uff0c\uff1f\uff1a\uff1b\uff01\uff02\uff08\uff09])"
    WESTERN = [(re.compile(a), b) for a, b in (
        (r"\n-", ""), (r"\n", " "), (r"&quot;", '"'), (r"&amp;", "&"), (r"&lt;", "<"), (r"&gt;", ">"))]
    WESTERN_AFTER = [(re.compile(a), b) for a, b in (
        (r"([{-~[-` -&(-+:-@/])", r" \1 "), (r"'s ", r" 's "), (r"'s$", r" 's"),
        (r"([^0-9])([\.,])", r"\1 \2 "), (r"([\.,])([^0-9])", r" \1 \2"), (r"([0-9])(-)", r"\1 \2 "))]
    # the kana patterns are Tercom's as sacreBLEU reproduces them, `(^|^[...])` included
    ASIAN = [(re.compile(a), b) for a, b in (
        (r"([\u4e00-\u9fff\u3400-\u4dbf])", r" \1 "), (r"([\u31c0-\u31ef\u2e80-\u2eff])", r" \1 "),
        (r"([\u3300-\u33ff\uf900-\ufaff\ufe30-\ufe4f])", r" \1 "), (r"([\u3200-\u3f22])", r" \1 "),
        (r"(^|^[\u3040-\u309f])([\u3040-\u309f]+)(?=$|^[\u3040-\u309f])", r"\1 \2 "),
        (r"(^|^[\u30a0-\u30ff])([\u30a0-\u30ff]+)(?=$|^[\u30a0-\u30ff])", r"\1 \2 "),
        (r"(^|^[\u31f0-\u31ff])([\u31f0-\u31ff]+)(?=$|^[\u31f0-\u31ff])", r"\1 \2 "),
        (ASIAN_PUNCT, r" \1 "), (FULL_WIDTH_PUNCT, r" \1 "))]
    PUNCT = re.compile(r"[\.,\?:;!\"\(\)]")
    ASIAN_PUNCT_RE = [re.compile(ASIAN_PUNCT), re.compile(FULL_WIDTH_PUNCT)]

    @classmethod
    def tokenize(cls, text: str, normalized: bool, no_punct: bool, asian: bool, case_sensitive: bool) -> str:
        if not text:
            return ""
        if not case_sensitive:
            text = text.lower()
        if normalized:
            for pattern, repl in cls.WESTERN:
                text = pattern.sub(repl, text)
            text = f" {text} "
            for pattern, repl in cls.WESTERN_AFTER:
                text = pattern.sub(repl, text)
            if asian:
                for pattern, repl in cls.ASIAN:
                    text = pattern.sub(repl, text)
        if no_punct:
            text = cls.PUNCT.sub("", text)
            if asian:
                for pattern in cls.ASIAN_PUNCT_RE:
                    text = pattern.sub("", text)
        return " ".join(text.split())


# ----------------------------------------------------------------------------- edit distance
class EditDistance:
    """Banded Levenshtein distance from hypotheses to one reference, with the trace of operations
    and a cache of matrix rows keyed by hypothesis prefix (a trie of dicts)."""

    def __init__(self, ref: list[str]):
        self.ref = ref
        self.first_row = [(j, INS) for j in range(len(ref) + 1)]  # reaching ref[:j] from nothing
        self.trie: dict = {}
        self.cached_rows = 0

    def __call__(self, hyp: list[str]) -> tuple[int, str]:
        """(distance, trace): the trace spells, per position, how the hypothesis becomes the reference."""
        rows, node = [self.first_row], self.trie
        for word in hyp:  # the longest prefix already computed
            if word not in node:
                break
            node, row = node[word]
            rows.append(row)
        known = len(rows) - 1
        rows += self._rows(hyp, known, rows[-1])
        self._remember(hyp, known, rows)
        return rows[-1][-1][0], self._trace(rows, len(hyp))

    def _rows(self, hyp: list[str], start: int, previous: list) -> list[list]:
        n_ref = len(self.ref)
        ratio = n_ref / len(hyp) if hyp else 1
        band = math.ceil(ratio / 2 + BEAM_WIDTH) if BEAM_WIDTH < ratio / 2 else BEAM_WIDTH
        new_rows = []
        for i in range(start + 1, len(hyp) + 1):
            row = [(INFINITY, "x")] * (n_ref + 1)
            centre = math.floor(i * ratio)
            low, high = max(0, centre - band), min(n_ref + 1, centre + band)
            if i == len(hyp):
                high = n_ref + 1
            word = hyp[i - 1]
            for j in range(low, high):
                if j == 0:
                    row[0] = (previous[0][0] + 1, DEL)
                    continue
                same = word == self.ref[j - 1]
                cost, op = INFINITY, "x"  # a cell every option of which is out of the band stays so
                if previous[j - 1][0] + (not same) < cost:
                    cost, op = previous[j - 1][0] + (not same), MATCH if same else SUB
                if previous[j][0] + 1 < cost:
                    cost, op = previous[j][0] + 1, DEL
                if row[j - 1][0] + 1 < cost:
                    cost, op = row[j - 1][0] + 1, INS
                row[j] = (cost, op)
            new_rows.append(row)
            previous = row
        return new_rows

    def _remember(self, hyp: list[str], known: int, rows: list[list]) -> None:
        if self.cached_rows >= MAX_CACHED_ROWS:
            return
        node = self.trie
        for word in hyp[:known]:
            node = node[word][0]
        for word, row in zip(hyp[known:], rows[known + 1:]):
            if word not in node:
                node[word] = ({}, row)
                self.cached_rows += 1
            node = node[word][0]

    def _trace(self, rows: list[list], i: int) -> str:
        ops, j = [], len(self.ref)
        while i > 0 or j > 0:
            op = rows[i][j][1]
            ops.append(op)
            if op in (MATCH, SUB):
                i, j = i - 1, j - 1
            elif op == INS:
                j -= 1
            else:
                i -= 1
        return "".join(reversed(ops))


def _alignment(trace: str) -> tuple[dict[int, int], list[int], list[int]]:
    """From the trace of rewriting the reference into the hypothesis: for each reference position,
    the hypothesis position it aligns to; and 0/1 error flags along the reference and hypothesis."""
    align: dict[int, int] = {}
    ref_err: list[int] = []
    hyp_err: list[int] = []
    r = h = -1
    for op in trace:
        if op in (MATCH, SUB):
            r, h = r + 1, h + 1
            align[r] = h
            ref_err.append(op == SUB)
            hyp_err.append(op == SUB)
        elif op == INS:  # a hypothesis word the reference lacks
            h += 1
            hyp_err.append(1)
        else:  # DEL: a reference word the hypothesis lacks
            r += 1
            align[r] = h
            ref_err.append(1)
    return align, ref_err, hyp_err


# ----------------------------------------------------------------------------- shifts
def _common_blocks(hyp: list[str], ref: list[str]):
    """(hyp start, ref start, length) of every block of 1..MAX_SHIFT_SIZE words occurring in both,
    starts at most MAX_SHIFT_DIST apart, in order of hyp start, ref start, length."""
    for h in range(len(hyp)):
        for r in range(max(0, h - MAX_SHIFT_DIST), min(len(ref), h + MAX_SHIFT_DIST + 1)):
            length = 0
            while length < MAX_SHIFT_SIZE and h + length < len(hyp) and r + length < len(ref) \
                    and hyp[h + length] == ref[r + length]:
                length += 1
                yield h, r, length


def _moved(words: list[str], start: int, length: int, target: int) -> list[str]:
    """words with the block words[start:start+length] moved: before words[target] when target lies
    outside the block; else `target - start` words further on."""
    block, rest = words[start:start + length], words[:start] + words[start + length:]
    position = target if target <= start + length else target - length
    return rest[:position] + block + rest[position:]


def _best_shift(hyp: list[str], ref: list[str], distance: EditDistance, tried: int) -> tuple[int, list[str], int]:
    """The shift that lowers the edit distance most, as (gain, shifted hypothesis, candidates
    tried so far); a gain of 0 and the hypothesis itself when none helps."""
    current, trace = distance(hyp)
    align, ref_err, hyp_err = _alignment(trace.translate(str.maketrans(INS + DEL, DEL + INS)))
    best: tuple | None = None
    for h, r, length in _common_blocks(hyp, ref):
        if not any(hyp_err[h:h + length]) or not any(ref_err[r:r + length]):
            continue  # the block is right already, or its target place is
        if h <= align[r] < h + length:
            continue  # the target lies inside the block
        previous = -1
        for offset in range(-1, length):
            if r + offset == -1:
                target = 0
            elif r + offset in align:
                target = align[r + offset] + 1
            else:
                break
            if target == previous:
                continue
            previous = target
            shifted = _moved(hyp, h, length, target)
            tried += 1
            candidate = (current - distance(shifted)[0], length, -h, -target, shifted)
            if best is None or candidate > best:
                best = candidate
        if tried >= MAX_SHIFT_CANDIDATES:
            break
    if best is None:
        return 0, hyp, tried
    return best[0], best[4], tried


def edit_count(hyp: list[str], ref: list[str]) -> int:
    """Shifts plus word edits that turn hyp into ref (see the module docstring)."""
    if not ref:
        return len(hyp)
    distance = EditDistance(ref)
    shifts, tried = 0, 0
    while True:
        gain, shifted, tried = _best_shift(hyp, ref, distance, tried)
        if tried >= MAX_SHIFT_CANDIDATES or gain <= 0:
            break
        shifts, hyp = shifts + 1, shifted
    return shifts + distance(hyp)[0]


# ----------------------------------------------------------------------------- the metric
@dataclass(frozen=True)
class TER:
    normalized: bool = False  # Tercom's normalisation (punctuation, XML entities, numbers)
    no_punct: bool = False  # remove punctuation
    asian_support: bool = False  # CJK characters as words, CJK punctuation (with the two above)
    case_sensitive: bool = False

    name = "TER"

    def preprocess(self, line: str) -> list[str]:
        return _Tercom.tokenize(line.rstrip(), self.normalized, self.no_punct, self.asian_support,
                                self.case_sensitive).split()

    def signature(self, nrefs: int) -> str:
        return base.signature(nrefs, ("case", "mixed" if self.case_sensitive else "lc"), ("tok", "tercom"),
                              ("norm", base.yes_no(self.normalized)), ("punct", base.yes_no(not self.no_punct)),
                              ("asian", base.yes_no(self.asian_support)))

    # the metric interface of mtkit.metrics.base
    def reference_info(self, refs: list[str]) -> list[list[str]]:
        return [self.preprocess(ref) for ref in refs]

    def segment_stats(self, hypothesis: str, info: list[list[str]]) -> list[float]:
        """[fewest edits over the references, their average length]."""
        if not info:
            return [0, 0.0]
        hyp = self.preprocess(hypothesis)
        return [min(edit_count(hyp, ref) for ref in info), sum(map(len, info)) / len(info)]

    def score(self, stats: Sequence[float], nrefs: int = 1) -> TERScore:
        edits, ref_length = (list(stats) or [0, 0.0])[:2]
        rate = edits / ref_length if ref_length > 0 else (1.0 if edits > 0 else 0.0)
        return TERScore(100 * rate, int(edits), ref_length, self.signature(nrefs))

    def sentence_metric(self) -> TER:
        return self


@dataclass
class TERScore(base.OneNumberScore):
    score: float
    num_edits: int
    ref_length: float
    signature: str = ""
    name: str = "TER"


def corpus_ter(hypotheses: Sequence[str], references: Sequence[Sequence[str | None]], *, normalized: bool = False,
               no_punct: bool = False, asian_support: bool = False, case_sensitive: bool = False) -> TERScore:
    """Corpus TER of hypotheses against one or more reference streams."""
    metric = TER(normalized, no_punct, asian_support, case_sensitive)
    return report.evaluate([hypotheses], base.prepare_references(references), metric).scores[0]


def sentence_ter(hypothesis: str, references: Sequence[str | None], **options) -> TERScore:
    """TER of one hypothesis against its references."""
    return corpus_ter([hypothesis], [[ref] for ref in references], **options)
