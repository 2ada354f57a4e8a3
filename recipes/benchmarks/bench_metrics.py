"""Scoring speed: 16 systems x 3,000 sentences, BLEU, chrF, chrF++ and TER, mtkit vs sacreBLEU, one run.

The reference set is 3,000 sentences of WMT-like length (two consecutive Multi30k train.de lines
joined, ~25 words); the 16 systems are perturbations of it (blocks moved, words dropped, replaced
and repeated, at rates that differ per system). Both sides score the 16 systems as their command
lines do, references prepared once per metric (mtkit: each segment's references once, inside
report.evaluate, for all systems; sacreBLEU: the metric built with references=..., then
corpus_score(system, None) for every system). Every score is checked to be equal. Times are wall
seconds for all 16 systems, min / median / max of `repeats`; mtkit is timed in one process
(--jobs 1) and as `mtkit score` chooses (--jobs 0: every usable CPU for work this large).
Usage: python recipes/benchmarks/bench_metrics.py [--systems 16] [--sentences 3000] [--repeats 3] [--jobs 1 0]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import sacrebleu
from common import corpus_lines, summary

from mtkit.metrics import BLEU, CHRF, TER, base, report


def make_data(n_sentences: int, n_systems: int) -> tuple[list[str], list[list[str]]]:
    lines = corpus_lines("train", "de")
    refs = [f"{lines[2 * i]} {lines[2 * i + 1]}" for i in range(n_sentences)]
    vocab = " ".join(refs[:500]).split()
    systems = []
    for k in range(n_systems):
        rng, rate = random.Random(k), 0.05 + 0.3 * k / n_systems
        out = []
        for ref in refs:
            words = ref.split()
            if len(words) > 4 and rng.random() < rate:
                i = rng.randrange(len(words) - 3)
                block = words[i:i + 3]
                del words[i:i + 3]
                words[rng.randrange(len(words) + 1):0] = block
            words = [rng.choice(vocab) if rng.random() < rate / 2 else w for w in words if rng.random() > rate / 3]
            out.append(" ".join(words))
        systems.append(out)
    return refs, systems


def time_mtkit(metric, refs: list[str], systems: list[list[str]], jobs: int) -> tuple[float, list[float]]:
    start = time.perf_counter()
    result = report.evaluate(systems, base.prepare_references([refs]), metric, jobs=jobs)
    return time.perf_counter() - start, [s.score for s in result.scores]


def time_sacrebleu(factory, refs: list[str], systems: list[list[str]]) -> tuple[float, list[float]]:
    start = time.perf_counter()
    metric = factory(references=[refs])
    scores = [metric.corpus_score(hyps, None).score for hyps in systems]
    return time.perf_counter() - start, scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--systems", type=int, default=16)
    ap.add_argument("--sentences", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 0],
                    help="mtkit's processes, each timed (0: as mtkit score chooses, every usable CPU)")
    args = ap.parse_args()
    refs, systems = make_data(args.sentences, args.systems)
    print(f"{args.systems} systems x {args.sentences} sentences (mean {statistics.mean(len(r.split()) for r in refs):.1f} "
          f"words), each segment's references prepared once per metric; wall seconds for all systems, {args.repeats} runs")
    cases = [
        ("BLEU", BLEU(), lambda references: sacrebleu.BLEU(references=references)),
        ("chrF2", CHRF(), lambda references: sacrebleu.CHRF(references=references)),
        ("chrF2++", CHRF(word_order=2), lambda references: sacrebleu.CHRF(word_order=2, references=references)),
        ("TER", TER(), lambda references: sacrebleu.TER(references=references)),
    ]
    for name, metric, factory in cases:
        ours: dict[int, list[float]] = {jobs: [] for jobs in args.jobs}
        theirs = []
        for _ in range(args.repeats):
            for jobs, times in ours.items():
                t, a = time_mtkit(metric, refs, systems, jobs)
                times.append(t)
            t, b = time_sacrebleu(factory, refs, systems)
            theirs.append(t)
            if a != b:
                raise SystemExit(f"{name}: scores differ: {a} vs {b}")
        print(f"{name:8s} sacrebleu {summary(theirs)} s; all {args.systems} scores equal", flush=True)
        for jobs, times in ours.items():
            used = base.usable_jobs(jobs, args.systems * args.sentences)
            print(f"{'':8s} mtkit --jobs {jobs} ({used} process{'es' if used > 1 else ''}) {summary(times)} s; "
                  f"{statistics.median(theirs) / statistics.median(times):.2f}x faster", flush=True)


if __name__ == "__main__":
    main()
