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

How it is fast in Python, with every number unchanged:

- The edit distance is bit-parallel (Myers, 1999; Hyyro, 2003): a row of the matrix is two
  integers (where the column goes up or down by one), computed by a dozen integer operations per
  hypothesis word whatever the reference's length; the trace is read back from them. That is the
  distance without a band; it is Tercom's banded one whenever no cell outside the band can lie on
  an optimal path: every such cell costs at least |i - j| + |(n - i) - (m - j)| to pass through,
  and when the distance found is below the least of those (`_least_outside`, per length pair),
  the band changes no cell of an optimal path and no choice of the trace. Otherwise the banded
  matrix is computed as Tercom does (`BandedDistance`, rows cached by hypothesis prefix).
- A shift candidate shares its hypothesis's rows up to where the block leaves or lands, so only
  the rows after that are computed; a candidate that cannot gain is not refined further.
- The reference's side (its words' bit masks, where each word occurs) is made once per segment,
  for every system scored against it.
"""

from __future__ import annotations

import functools
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
class BandedDistance:
    """Tercom's banded Levenshtein distance from hypotheses to one reference, with the trace of
    operations and a cache of matrix rows keyed by hypothesis prefix (a trie of dicts): the
    reference the bit-parallel distance is checked against, and what it falls back to."""

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
        return _walk_back(lambda i, j: rows[i][j][1], i, len(self.ref))


def _walk_back(op_at, i: int, j: int) -> str:
    """The trace from the cell (i, j) back to (0, 0): op_at(i, j) names the step that reached each
    cell on the way (MATCH or SUB from (i-1, j-1), INS from (i, j-1), DEL from (i-1, j))."""
    ops = []
    while i > 0 or j > 0:
        op = op_at(i, j)
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


# ----------------------------------------------------------------------------- the reference's side
class Reference:
    """One reference's words, with what every hypothesis scored against it uses: each word's bit
    mask of positions (for the bit-parallel distance) and sorted positions (for shift blocks)."""

    __slots__ = ("words", "masks", "positions", "banded")

    def __init__(self, words: list[str]):
        self.words = words
        self.masks: dict[str, int] = {}
        self.positions: dict[str, list[int]] = {}
        for j, word in enumerate(words):
            self.masks[word] = self.masks.get(word, 0) | (1 << j)
            self.positions.setdefault(word, []).append(j)
        self.banded: BandedDistance | None = None  # made when first needed

    def __len__(self) -> int:
        return len(self.words)

    def __reduce__(self):  # sent to scoring processes as its words
        return Reference, (self.words,)


# ----------------------------------------------------------------------------- bit-parallel distance
def _columns(ref: Reference, hyp: list[str], start: int, state: tuple[int, int, int], out: list | None = None):
    """Run the bit-parallel recurrence over hyp[start:] from `state` (VP, VN, distance) after
    hyp[:start]: bit j-1 of VP (VN) says the distance to ref[:j] is one more (less) than to
    ref[:j-1]. Returns the last state; `out` receives every state when given."""
    masks, m = ref.masks, len(ref.words)
    full, top = (1 << m) - 1, 1 << (m - 1)
    vp, vn, score = state
    for word in hyp[start:]:
        x = masks.get(word, 0) | vn
        d0 = (((x & vp) + vp) ^ vp) | x
        hp = vn | ~(d0 | vp)
        hn = vp & d0
        if hp & top:
            score += 1
        elif hn & top:
            score -= 1
        hp = (hp << 1) | 1
        vp = ((hn << 1) | ~(d0 | hp)) & full
        vn = hp & d0 & full
        if out is not None:
            out.append((vp, vn, score))
    return vp, vn, score


def _start(ref: Reference) -> tuple[int, int, int]:
    return (1 << len(ref.words)) - 1, 0, len(ref.words)


def _trace(ref: Reference, hyp: list[str], states: list[tuple[int, int, int]]) -> str:
    """Tercom's trace (a match or substitution, then a deletion, then an insertion, on equal cost)
    read back from the rows' bit vectors: the cell (i, j) is i + ones of VP below j - ones of VN."""

    def cost(i: int, j: int) -> int:
        below = (1 << j) - 1
        vp, vn, _ = states[i]
        return i + (vp & below).bit_count() - (vn & below).bit_count()

    def op_at(i: int, j: int) -> str:
        if i == 0:
            return INS
        if j == 0:
            return DEL
        same = hyp[i - 1] == ref.words[j - 1]
        here, op = cost(i - 1, j - 1) + (not same), MATCH if same else SUB
        if cost(i - 1, j) + 1 < here:
            here, op = cost(i - 1, j) + 1, DEL
        return INS if cost(i, j - 1) + 1 < here else op

    return _walk_back(op_at, len(hyp), len(ref.words))


@functools.lru_cache(maxsize=65536)
def _least_outside(n: int, m: int) -> float:
    """The least cost of any path from (0, 0) to (n, m) through a cell outside Tercom's band (hyp
    length n, ref length m): at least |i - j| + |(n - i) - (m - j)| for the cell (i, j); infinity
    when the band holds every cell."""
    least = math.inf
    if n == 0:
        return least
    ratio = m / n
    band = math.ceil(ratio / 2 + BEAM_WIDTH) if BEAM_WIDTH < ratio / 2 else BEAM_WIDTH
    for i in range(1, n + 1):
        centre = math.floor(i * ratio)
        low, high = max(0, centre - band), min(m + 1, centre + band)
        if i == n:
            high = m + 1
        a, b = min(i, m - n + i), max(i, m - n + i)  # the cells of least cost in this row: a..b
        if low > 0:
            least = min(least, b - a if low - 1 >= a else (a - low + 1) + (b - low + 1))
        if high <= m:
            least = min(least, b - a if high <= b else (high - a) + (high - b))
    return least


def _banded(ref: Reference) -> BandedDistance:
    if ref.banded is None:
        ref.banded = BandedDistance(ref.words)
    return ref.banded


def _distance_and_trace(ref: Reference, hyp: list[str]) -> tuple[int, str, list]:
    """Tercom's distance and trace for hyp, and the bit-parallel rows of hyp's prefixes."""
    states = [_start(ref)]
    score = _columns(ref, hyp, 0, states[0], states)[2]
    if score < _least_outside(len(hyp), len(ref.words)):
        return score, _trace(ref, hyp, states), states
    distance, trace = _banded(ref)(hyp)
    return distance, trace, states


# ----------------------------------------------------------------------------- shifts
def _common_blocks(hyp: list[str], ref: Reference):
    """(hyp start, ref start, length) of every block of 1..MAX_SHIFT_SIZE words occurring in both,
    starts at most MAX_SHIFT_DIST apart, in order of hyp start, ref start, length."""
    words, n, m = ref.words, len(hyp), len(ref.words)
    for h, word in enumerate(hyp):
        for r in ref.positions.get(word, ()):
            if r < h - MAX_SHIFT_DIST:
                continue
            if r > h + MAX_SHIFT_DIST:
                break
            length = 1
            yield h, r, 1
            while length < MAX_SHIFT_SIZE and h + length < n and r + length < m and hyp[h + length] == words[r + length]:
                length += 1
                yield h, r, length


def _moved(words: list[str], start: int, length: int, target: int) -> list[str]:
    """words with the block words[start:start+length] moved: before words[target] when target lies
    outside the block; else `target - start` words further on."""
    block, rest = words[start:start + length], words[:start] + words[start + length:]
    position = target if target <= start + length else target - length
    return rest[:position] + block + rest[position:]


def _best_shift(hyp: list[str], ref: Reference, tried: int) -> tuple[int, int, list[str], int]:
    """The shift that lowers the edit distance most (then the longest, the earliest, the earliest
    target), as (hyp's distance, gain, shifted hypothesis, candidates tried so far); a gain of 0
    and the hypothesis itself when none helps."""
    current, trace, states = _distance_and_trace(ref, hyp)
    align, ref_err, hyp_err = _alignment(trace.translate(str.maketrans(INS + DEL, DEL + INS)))
    least_outside = _least_outside(len(hyp), len(ref.words))
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
            tried += 1
            shifted = _moved(hyp, h, length, target)
            same = min(h, target)  # the rows of hyp[:same] are the candidate's too
            distance = _columns(ref, shifted, same, states[same])[2]  # no band: at most Tercom's
            key = (current - distance, length, -h, -target)
            if key[0] <= 0 or (best is not None and key < best[0]):
                continue  # it cannot gain, or cannot beat the best so far, band or no band
            if distance >= least_outside:
                key = (current - _banded(ref)(shifted)[0], *key[1:])
                if key[0] <= 0 or (best is not None and key < best[0]):
                    continue
            best = (key, shifted)
        if tried >= MAX_SHIFT_CANDIDATES:
            break
    if best is None:
        return current, 0, hyp, tried
    return current, best[0][0], best[1], tried


def edit_count(hyp: list[str], ref: list[str] | Reference) -> int:
    """Shifts plus word edits that turn hyp into ref (see the module docstring)."""
    if not isinstance(ref, Reference):
        ref = Reference(ref)
    if not ref.words:
        return len(hyp)
    shifts, tried = 0, 0
    while True:
        distance, gain, shifted, tried = _best_shift(hyp, ref, tried)
        if tried >= MAX_SHIFT_CANDIDATES or gain <= 0:
            return shifts + distance
        shifts, hyp = shifts + 1, shifted


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
    def reference_info(self, refs: list[str]) -> list[Reference]:
        return [Reference(self.preprocess(ref)) for ref in refs]

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
