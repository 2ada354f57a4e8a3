"""mtkit bleu and mtkit score: sacreBLEU's command lines, on mtkit's own metrics."""

from __future__ import annotations

import contextlib
import time
from typing import Annotated

import typer

from mtkit.cli.app import app, stdin_lines, stdout, work_begins
from mtkit.errors import UserError

LARGE = 20_000  # segments x systems from which scoring shows what it is doing on a terminal

# The reporting options `mtkit bleu` and `mtkit score` share.
SentenceLevel = Annotated[bool, typer.Option("--sentence-level", help="Also score each sentence.")]
ReportFormat = Annotated[str, typer.Option("--format", "-f", help="text or json.")]
ReportWidth = Annotated[int, typer.Option("--width", "-w", help="Decimals of the score in text output.")]
PairedBootstrap = Annotated[bool, typer.Option("--paired-bs", help="Paired bootstrap against the first system.")]
BootstrapSamples = Annotated[int, typer.Option("--paired-bs-n", help="Bootstrap samples.")]
BootstrapSeed = Annotated[int, typer.Option("--seed", help="Seed of the bootstrap resampling.")]
ScoringJobs = Annotated[int, typer.Option("--jobs", "-j", help="Processes (Linux). 0: every CPU once the work is "
                                                               "large enough (20,000 segments x systems).")]


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    no_args_is_help=True,
)
def bleu(
    files: list[str] = typer.Argument(..., metavar="REF [REF ...] [-i HYP [HYP ...]]", show_default=False),
    tokenize: str = typer.Option("13a", "--tokenize", help="13a, intl, zh, char or none."),
    lowercase: bool = typer.Option(False, "--lowercase", "-lc", help="Lowercase before scoring."),
    smooth_method: str = typer.Option("exp", "--smooth-method", help="none, floor, add-k or exp."),
    smooth_value: float | None = typer.Option(None, "--smooth-value", help="For floor (0.1) and add-k (1)."),
    max_ngram_order: int = typer.Option(4, "--max-ngram-order", help="BLEU-N: the longest n-gram counted."),
    sentence_level: SentenceLevel = False,
    fmt: ReportFormat = "text",
    width: ReportWidth = 1,
    paired_bs: PairedBootstrap = False,
    paired_bs_n: BootstrapSamples = 1000,
    seed: BootstrapSeed = 12345,
    jobs: ScoringJobs = 0,
    check_sacrebleu: bool = typer.Option(False, "--sacrebleu", help="Also compute sacrebleu's score; fail if they differ."),
) -> None:
    """Corpus BLEU of one or more systems (stdin when -i is absent), equal to sacreBLEU's.

    [bold]mtkit bleu[/] ref.de -i hyp.de · [bold]mtkit bleu[/] ref1 ref2 -i base.de new.de --paired-bs
    """
    from mtkit.metrics.bleu import BLEU

    ref_files, hyp_files, _ = _split_inputs(files, "bleu")
    metric = BLEU(tokenize, lowercase, smooth_method, smooth_value, max_ngram_order)
    _score(ref_files, hyp_files, [metric], fmt, width, sentence_level, paired_bs, paired_bs_n, seed, jobs,
           check_sacrebleu)


METRIC_NAMES = ("bleu", "chrf", "ter")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    no_args_is_help=True,
)
def score(
    files: list[str] = typer.Argument(..., metavar="REF [REF ...] [-i HYP [HYP ...]] [-m bleu chrf ter]",
                                      show_default=False),
    tokenize: str = typer.Option("13a", "--tokenize", help="BLEU: 13a, intl, zh, char or none."),
    lowercase: bool = typer.Option(False, "--lowercase", "-lc", help="BLEU and chrF: lowercase before scoring."),
    smooth_method: str = typer.Option("exp", "--smooth-method", help="BLEU: none, floor, add-k or exp."),
    smooth_value: float | None = typer.Option(None, "--smooth-value", help="BLEU: for floor (0.1) and add-k (1)."),
    max_ngram_order: int = typer.Option(4, "--max-ngram-order", help="BLEU-N: the longest n-gram counted."),
    chrf_char_order: int = typer.Option(6, "--chrf-char-order", help="chrF: character n-gram order."),
    chrf_word_order: int = typer.Option(0, "--chrf-word-order", help="chrF: word n-gram order (2: chrF++)."),
    chrf_beta: int = typer.Option(2, "--chrf-beta", help="chrF: weight of recall against precision."),
    chrf_whitespace: bool = typer.Option(False, "--chrf-whitespace", help="chrF: keep spaces in character n-grams."),
    chrf_eps_smoothing: bool = typer.Option(False, "--chrf-eps-smoothing", help="chrF: chrF++.py's smoothing."),
    ter_normalized: bool = typer.Option(False, "--ter-normalized", help="TER: Tercom's normalisation."),
    ter_no_punct: bool = typer.Option(False, "--ter-no-punct", help="TER: remove punctuation."),
    ter_asian_support: bool = typer.Option(False, "--ter-asian-support", help="TER: CJK characters as words."),
    ter_case_sensitive: bool = typer.Option(False, "--ter-case-sensitive", help="TER: keep case."),
    sentence_level: SentenceLevel = False,
    fmt: ReportFormat = "text",
    width: ReportWidth = 1,
    paired_bs: PairedBootstrap = False,
    paired_bs_n: BootstrapSamples = 1000,
    seed: BootstrapSeed = 12345,
    jobs: ScoringJobs = 0,
    check_sacrebleu: bool = typer.Option(False, "--sacrebleu", help="Also compute sacreBLEU's scores; fail if any differs."),
) -> None:
    """Several metrics (-m bleu chrf ter; default all three) of one or more systems, equal to sacreBLEU's.

    [bold]mtkit score[/] ref.de -i a.de b.de -m bleu chrf · [bold]mtkit score[/] ref.de -i a.de --chrf-word-order 2 -m chrf
    """
    from mtkit.metrics import BLEU, CHRF, TER

    ref_files, hyp_files, names = _split_inputs(files, "score")
    unknown = [n for n in names if n.lower() not in METRIC_NAMES]
    if unknown:
        raise UserError(f"-m: unknown metric {unknown[0]!r} (choose from {', '.join(METRIC_NAMES)})")
    wanted = list(dict.fromkeys(n.lower() for n in names)) or list(METRIC_NAMES)
    build = {
        "bleu": lambda: BLEU(tokenize, lowercase, smooth_method, smooth_value, max_ngram_order),
        "chrf": lambda: CHRF(chrf_char_order, chrf_word_order, chrf_beta, lowercase, chrf_whitespace,
                                    chrf_eps_smoothing),
        "ter": lambda: TER(ter_normalized, ter_no_punct, ter_asian_support, ter_case_sensitive),
    }
    metrics = [build[name]() for name in wanted]
    _score(ref_files, hyp_files, metrics, fmt, width, sentence_level, paired_bs, paired_bs_n, seed, jobs,
           check_sacrebleu)


def _score(ref_files: list[str], hyp_files: list[str], metrics: list, fmt: str, width: int, sentence_level: bool,
           paired_bs: bool, paired_bs_n: int, seed: int, jobs: int, check_sacrebleu: bool) -> None:
    """Read, check and score: every metric on every system, each segment's references prepared once."""
    from mtkit.cli import render
    from mtkit.data.textio import read_lines
    from mtkit.metrics import base

    if fmt not in ("text", "json"):
        raise UserError(f"--format: expected text or json, got {fmt!r}")
    if not 0 <= width <= 20:
        raise UserError(f"--width must be between 0 and 20 decimals, got {width}")
    if paired_bs:
        base.check_bootstrap(paired_bs_n)
    base.check_jobs(jobs)
    stdout()  # closed: refused before reading anything
    references = [read_lines(f) for f in ref_files]
    systems = [read_lines(f) for f in hyp_files] if hyp_files else [list(stdin_lines())]
    names = hyp_files or ["<stdin>"]
    work_begins()
    for name, hyps in zip(names, systems):
        for ref_name, refs in zip(ref_files, references):
            if len(refs) != len(hyps):
                raise UserError(f"{name} has {len(hyps)} lines but reference {ref_name} has {len(refs)}")
    if paired_bs and len(systems) < 2:
        raise UserError("--paired-bs needs a baseline and at least one more system: -i BASE SYS [SYS ...]")
    if paired_bs:
        base.check_bootstrap(paired_bs_n, len(systems[0]))
    if check_sacrebleu and not systems[0]:
        raise UserError(f"{names[0]}: no lines to score; --sacrebleu cannot check an empty corpus "
                        "(sacreBLEU itself fails on one)")
    started, segments = time.monotonic(), len(systems) * len(systems[0])
    prepared = base.prepare(references)
    reports = []
    for metric in metrics:
        shown = render.status(f"{type(metric).__name__}: {segments:,} segments") if segments >= LARGE else contextlib.nullcontext()
        with shown:
            report = base.evaluate(systems, prepared, metric, sentence_level=sentence_level,
                                   paired_bs_samples=paired_bs_n if paired_bs else 0, seed=seed, jobs=jobs)
        if check_sacrebleu:
            from mtkit.metrics.check import check_equal

            for name, hyps, result in zip(names, systems, report.scores):
                check_equal(metric, result, hyps, references, name)
        reports.append(report)
    render.render_reports(reports, names, fmt, width, stdout())
    if (seconds := time.monotonic() - started) >= 3:  # on stderr: the report on stdout stays as it is
        render.print_info(f"scored {segments:,} segments ({len(systems)} system(s) x {len(systems[0]):,}) with "
                          f"{len(metrics)} metric(s) in {seconds:,.1f} s")


def _split_inputs(args: list[str], command: str) -> tuple[list[str], list[str], list[str]]:
    """sacrebleu-style `REF [REF ...] -i HYP [HYP ...] [-m METRIC ...]`: what follows -i is a system,
    what follows -m a metric name. Returns (references, hypotheses, metric names)."""
    lists: dict[str, list[str]] = {"refs": [], "hyps": [], "metrics": []}
    target = "refs"
    for arg in args:
        if arg in ("-i", "--input"):
            target = "hyps"
        elif arg in ("-m", "--metrics") and command == "score":
            target = "metrics"
        elif arg.startswith("-") and arg != "-":
            raise UserError(f"unknown option {arg!r} (see mtkit {command} --help)")
        else:
            lists[target].append(arg)
    if not lists["refs"]:
        raise UserError(f"give at least one reference file: mtkit {command} REF [REF ...] -i HYP")
    if "-i" in args or "--input" in args:
        if not lists["hyps"]:
            raise UserError("-i/--input needs at least one hypothesis file")
    return lists["refs"], lists["hyps"], lists["metrics"]
