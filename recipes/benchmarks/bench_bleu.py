"""Corpus BLEU speed: mtkit.metrics.bleu.corpus_bleu vs sacrebleu.corpus_bleu on the same inputs, one run.

Inputs: Multi30k test_2016_flickr German references x3 (3,000 sentences) and perturbed
hypotheses, default options (13a, exp smoothing). Prints seconds per call and the speed ratio.
"""

from __future__ import annotations

import random
import statistics
import sys

import sacrebleu
from common import corpus_lines, repeat, summary

from mtkit.metrics import bleu


def main(repeats: int = 7) -> dict:
    refs = corpus_lines("test_2016_flickr", "de") * 3
    rng = random.Random(0)
    hyps = []
    for r in refs:
        words = r.split()
        if rng.random() < 0.3:
            rng.shuffle(words)
        hyps.append(" ".join(words[: max(1, len(words) - rng.randint(0, 2))]))
    ours = bleu.corpus_bleu(hyps, [refs])
    theirs = sacrebleu.corpus_bleu(hyps, [refs])
    assert ours.counts == theirs.counts and abs(ours.score - theirs.score) < 1e-9, "scores differ"
    t_ours = repeat(lambda: bleu.corpus_bleu(hyps, [refs]), repeats)
    t_theirs = repeat(lambda: sacrebleu.corpus_bleu(hyps, [refs]), repeats)
    ratio = statistics.median(t_theirs) / statistics.median(t_ours)
    print(f"BLEU on {len(hyps)} sentences (score {ours.score:.2f}, equal in both)")
    print(f"  mtkit     s/call: {summary(t_ours)}")
    print(f"  sacrebleu s/call: {summary(t_theirs)}")
    print(f"  speed-up (median): {ratio:.2f}x")
    return {"mtkit_s": t_ours, "sacrebleu_s": t_theirs, "ratio": ratio}


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
