"""What translating produces, shared by mtkit's own search (mtkit.inference.search) and CTranslate2's
(mtkit.inference.ct2), and the small helpers both use. A leaf: it imports no other inference
module, and no torch, so that a CTranslate2 model translates without importing it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mtkit.data.sentences import Segments


@dataclass
class Translation:
    text: str
    tokens: list[int]
    score: float
    nbest: list[tuple[str, float]] = field(default_factory=list)  # (text, score), best first
    truncated: bool = False  # the source was longer than the model takes, and was cut


@dataclass
class TranslateStats:
    sentences: int = 0
    truncated: int = 0  # source lines cut to the model's maximum length
    tgt_tokens: int = 0


def hypotheses(t: Translation, nbest: int) -> list[tuple[str, float]]:
    """nbest (text, score) of a sentence, best first; the last repeated where the search found
    fewer (an empty line has one, empty)."""
    hyps = list(t.nbest) or [(t.text, t.score)]
    return hyps + [hyps[-1]] * (nbest - len(hyps))


def joined(segments: Segments, parts: list[Translation], nbest: int = 1) -> Translation:
    """One text's translation from its sentences' (one per segments.sentences, in order): each
    hypothesis k joins the sentences' k-th with the text's own whitespace; scores add up."""
    hyps = [hypotheses(t, nbest) for t in parts]
    texts = [segments.join(h[k][0] for h in hyps) for k in range(nbest)]
    scores = [sum(h[k][1] for h in hyps) for k in range(nbest)]
    return Translation(texts[0], [i for t in parts for i in t.tokens], scores[0], list(zip(texts, scores)),
                       truncated=any(t.truncated for t in parts))


def cpu_threads() -> int:
    """The threads a CPU engine uses by default: OMP_NUM_THREADS where set, else the cores this
    process may run on (torch's default too)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """The lines in lists of `size` (the last one shorter)."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def decode_nbests(decode: Callable[[list[list[int]]], list[str]], nbests: list[list[list[int]]]) -> list[list[str]]:
    """The texts of every hypothesis (token ids) of every sentence, from one call of the
    tokenizer's `decode`: sentencepiece starts a thread pool at each call, which cost 1 ms per
    call on a 16-core machine, more than decoding the sentence on a GPU."""
    flat = iter([_one_line(text) for text in decode([ids for nbest in nbests for ids in nbest])])
    return [[next(flat) for _ in nbest] for nbest in nbests]


def _one_line(text: str) -> str:
    """A translation as one line: a line break decoded from byte pieces (which sampling can draw)
    becomes a space, so that the output keeps one line per input line."""
    return text.replace("\r", " ").replace("\n", " ") if "\n" in text or "\r" in text else text
