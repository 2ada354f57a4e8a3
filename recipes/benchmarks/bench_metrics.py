"""Scoring speed: 16 systems x 3,000 sentences, BLEU, chrF, chrF++ and TER, mtkit vs sacreBLEU, one run.

The reference set is 3,000 sentences of WMT-like length (two consecutive Multi30k train.de lines
joined, ~25 words); the 16 systems are perturbations of it (blocks moved, words dropped, replaced
and repeated, at rates that differ per system). With --refs and --hyps, real system outputs are
scored instead (for instance WMT22's, from github.com/wmt-conference/wmt22-news-systems, txt/).

By default both sides score all systems as their command lines do, references prepared once per
metric (mtkit: each segment's references once, inside report.evaluate, for all systems;
sacreBLEU: the metric built with references=..., then corpus_score(system, None) for every
system). With --per-call every system is scored by a call of its own that prepares the
references too, as a corpus_bleu / corpus_chrf / corpus_ter call does. Every score is checked to
be equal. Times are wall seconds for all systems, min / median / max of `repeats`; mtkit is timed
in one process (--jobs 1) and as `mtkit score` chooses (--jobs 0: every usable CPU for work this
large).
Usage: python recipes/benchmarks/bench_metrics.py [--systems 16] [--sentences 3000] [--repeats 3] [--jobs 1 0]
       [--metrics BLEU chrF2 chrF2++ TER] [--per-call] [--refs REF... --hyps HYP...]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from functools import partial

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


def read_lines(paths: list[str]) -> list[list[str]]:
    streams = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            streams.append(f.read().splitlines())
    if len({len(stream) for stream in streams}) > 1:
        raise SystemExit(f"{', '.join(paths)}: the files have different numbers of lines")
    return streams


def time_mtkit(metric, refs: list[list[str]], systems: list[list[str]], jobs: int,
               per_call: bool) -> tuple[float, list[float]]:
    start = time.perf_counter()
    if per_call:
        scores = [report.evaluate([hyps], base.prepare_references(refs), metric, jobs=jobs).scores[0] for hyps in systems]
    else:
        scores = report.evaluate(systems, base.prepare_references(refs), metric, jobs=jobs).scores
    return time.perf_counter() - start, [s.score for s in scores]


def time_sacrebleu(factory, refs: list[list[str]], systems: list[list[str]], per_call: bool) -> tuple[float, list[float]]:
    start = time.perf_counter()
    if per_call:
        scores = [factory().corpus_score(hyps, refs).score for hyps in systems]
    else:
        metric = factory(references=refs)
        scores = [metric.corpus_score(hyps, None).score for hyps in systems]
    return time.perf_counter() - start, scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--systems", type=int, default=16)
    ap.add_argument("--sentences", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 0],
                    help="mtkit's processes, each timed (0: as mtkit score chooses, every usable CPU)")
    ap.add_argument("--metrics", nargs="+", choices=["BLEU", "chrF2", "chrF2++", "TER"],
                    default=["BLEU", "chrF2", "chrF2++", "TER"])
    ap.add_argument("--per-call", action="store_true",
                    help="score every system by a call of its own, references prepared in each call")
    ap.add_argument("--refs", nargs="+", metavar="REF", help="reference files (one stream each) instead of the synthetic set")
    ap.add_argument("--hyps", nargs="+", metavar="HYP", help="system output files, with --refs")
    args = ap.parse_args()
    if bool(args.refs) != bool(args.hyps):
        raise SystemExit("--refs and --hyps go together")
    if args.refs:
        refs, systems = read_lines(args.refs), read_lines(args.hyps)
        if len(systems[0]) != len(refs[0]):
            raise SystemExit(f"the references have {len(refs[0])} lines, the systems {len(systems[0])}")
    else:
        ref, systems = make_data(args.sentences, args.systems)
        refs = [ref]
    how = "each system by a call of its own" if args.per_call else "each segment's references prepared once per metric"
    print(f"{len(systems)} systems x {len(refs[0])} sentences, {len(refs)} reference(s) (mean "
          f"{statistics.mean(len(r.split()) for r in refs[0]):.1f} words), {how}; wall seconds for all systems, "
          f"{args.repeats} runs")
    cases = [
        ("BLEU", BLEU(), sacrebleu.BLEU),
        ("chrF2", CHRF(), sacrebleu.CHRF),
        ("chrF2++", CHRF(word_order=2), partial(sacrebleu.CHRF, word_order=2)),
        ("TER", TER(), sacrebleu.TER),
    ]
    for name, metric, factory in (case for case in cases if case[0] in args.metrics):
        ours: dict[int, list[float]] = {jobs: [] for jobs in args.jobs}
        theirs = []
        for _ in range(args.repeats):
            for jobs, times in ours.items():
                t, a = time_mtkit(metric, refs, systems, jobs, args.per_call)
                times.append(t)
            t, b = time_sacrebleu(factory, refs, systems, args.per_call)
            theirs.append(t)
            if a != b:
                raise SystemExit(f"{name}: scores differ: {a} vs {b}")
        print(f"{name:8s} sacrebleu {summary(theirs)} s; all {len(systems)} scores equal", flush=True)
        for jobs, times in ours.items():
            used = base.usable_jobs(jobs, (1 if args.per_call else len(systems)) * len(refs[0]))
            print(f"{'':8s} mtkit --jobs {jobs} ({used} process{'es' if used > 1 else ''}) {summary(times)} s; "
                  f"{statistics.median(theirs) / statistics.median(times):.2f}x faster", flush=True)


if __name__ == "__main__":
    main()
