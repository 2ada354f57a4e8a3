"""mtkit bleu and mtkit score: sacreBLEU's command lines, on mtkit's own metrics."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any

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
BootstrapSeed = Annotated[str | None, typer.Option("--seed", help="Seed of the resampling (bootstrap, approximate "
                                                                   "randomization): an integer, or none [default: "
                                                                   "SACREBLEU_SEED, else 12345]", show_default=False)]
Confidence = Annotated[bool, typer.Option("--confidence", help="Each system's 95% bootstrap interval (μ ± ci).")]
ConfidenceSamples = Annotated[int, typer.Option("--confidence-n", help="Bootstrap samples of the interval.")]
PairedAR = Annotated[bool, typer.Option("--paired-ar", help="Paired approximate randomization against the first system.")]
PairedARTrials = Annotated[int, typer.Option("--paired-ar-n", help="Trials of approximate randomization.")]
LanguagePair = Annotated[str | None, typer.Option("-l", "--language-pair", help="SRC-TGT: the tokenizer of the target "
                                                  "language unless --tokenize is given (zh, ja-mecab, ko-mecab; 13a).")]
PairedJobs = Annotated[int, typer.Option("--paired-jobs", help="Processes for the paired tests and intervals, a "
                                                              "system each (0: one per system, at most one per CPU).")]
ShortSignature = Annotated[bool, typer.Option("--short", "-sh", help="sacreBLEU's short signatures in text output.")]
ScoringJobs = Annotated[int, typer.Option("--jobs", "-j", help="Processes (Linux). 0: every CPU once the work is "
                                                               "large enough (20,000 segments x systems).")]


def metric_options(names: list[str]):
    """Give a command one option per option of the named metrics (mtkit.metrics.registry): flag and
    help from the registry, type and default from the metric's options class. The command receives
    them as `metric_values`: {field: value}."""
    import dataclasses
    import inspect
    import typing

    from mtkit.metrics.registry import METRICS, options_of

    def decorate(command: Callable) -> Callable:
        hints: dict[str, Any] = {}
        defaults: dict[str, Any] = {}
        for name in names:
            cls = METRICS[name].cls
            hints.update(typing.get_type_hints(cls))
            defaults.update({f.name: f.default for f in dataclasses.fields(cls)})
        options = [inspect.Parameter(o.field, inspect.Parameter.KEYWORD_ONLY,
                                     annotation=hints[o.field] | None if o.chosen_later else hints[o.field],
                                     default=typer.Option(None if o.chosen_later else defaults[o.field], *o.flags,
                                                          help=o.help, show_default=not o.chosen_later))
                   for o in options_of(names)]
        fields = {o.field for o in options_of(names)}

        @functools.wraps(command)
        def run(**kwargs):
            return command(**{k: v for k, v in kwargs.items() if k not in fields},
                           metric_values={k: kwargs[k] for k in fields})

        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "metric_values"]
        run.__signature__ = inspect.Signature(own + options)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in own + options}
        return run

    return decorate


@dataclass(frozen=True)
class Reporting:
    """How the scores are computed and shown, shared by bleu and score."""

    fmt: str = "text"
    width: int = 1
    sentence_level: bool = False
    paired_bs: bool = False
    paired_bs_n: int = 1000
    seed: str | None = None  # an integer, "none" (unseeded), or None: SACREBLEU_SEED, else 12345
    jobs: int = 0
    check_sacrebleu: bool = False
    confidence: bool = False
    confidence_n: int = 1000
    paired_ar: bool = False
    paired_ar_n: int = 10_000
    short: bool = False
    paired_jobs: int = 1

    @classmethod
    def of(cls, options: dict) -> Reporting:
        """The reporting options among a command's parameters (named as the fields)."""
        return cls(**{f.name: options[f.name] for f in fields(cls)})

    @property
    def rng_seed(self) -> int | None:
        """The seed as sacreBLEU reads it: the option, else SACREBLEU_SEED, else 12345; none: unseeded."""
        import os

        text = self.seed if self.seed is not None else os.environ.get("SACREBLEU_SEED", "12345")
        if text.strip().lower() == "none":
            return None
        try:
            return int(text)
        except ValueError:
            raise UserError(f"--seed: expected an integer or none, got {text!r}") from None


def _tokenizer_for(values: dict, language_pair: str | None) -> None:
    """--tokenize as given, or (given -l SRC-TGT) the target language's, as sacreBLEU chooses it;
    a warning when the one given is not what sacreBLEU recommends for that language."""
    from mtkit.cli import render
    from mtkit.metrics.tokenizers import BY_TARGET

    target = None
    if language_pair is not None:
        parts = language_pair.split("-")
        if len(parts) != 2 or not all(p.isalpha() and 2 <= len(p) <= 3 for p in parts):
            raise UserError(f"-l/--language-pair: expected SRC-TGT language codes, e.g. en-ja, got {language_pair!r}")
        target = parts[1].lower()
    recommended = BY_TARGET.get(target or "", "13a")
    if values.get("tokenize") is None:
        values["tokenize"] = recommended
    elif target in BY_TARGET and values["tokenize"] != recommended:
        render.print_warning(f"--tokenize {values['tokenize']} for target language {target}: sacreBLEU recommends "
                             f"{recommended} (or spm)")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    no_args_is_help=True,
)
@metric_options(["bleu"])
def bleu(
    files: list[str] = typer.Argument(..., metavar="REF [REF ...] [-i HYP [HYP ...]]", show_default=False),
    sentence_level: SentenceLevel = False,
    fmt: ReportFormat = "text",
    width: ReportWidth = 1,
    paired_bs: PairedBootstrap = False,
    paired_bs_n: BootstrapSamples = 1000,
    paired_ar: PairedAR = False,
    paired_ar_n: PairedARTrials = 10_000,
    confidence: Confidence = False,
    confidence_n: ConfidenceSamples = 1000,
    seed: BootstrapSeed = None,
    language_pair: LanguagePair = None,
    paired_jobs: PairedJobs = 1,
    short: ShortSignature = False,
    jobs: ScoringJobs = 0,
    check_sacrebleu: bool = typer.Option(False, "--sacrebleu", help="Also compute sacrebleu's score; fail if they differ."),
    *,
    metric_values: dict,
) -> None:
    """Corpus BLEU of one or more systems (stdin when -i is absent), equal to sacreBLEU's.

    [bold]mtkit bleu[/] ref.de -i hyp.de · [bold]mtkit bleu[/] ref1 ref2 -i base.de new.de --paired-bs
    """
    from mtkit.metrics.registry import METRICS

    ref_files, hyp_files, _ = _split_inputs(files, "bleu")
    _tokenizer_for(metric_values, language_pair)
    _score(ref_files, hyp_files, [METRICS["bleu"].build(metric_values)],
           Reporting.of(locals()))


METRIC_NAMES = ("bleu", "chrf", "ter")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    no_args_is_help=True,
)
@metric_options(list(METRIC_NAMES))
def score(
    files: list[str] = typer.Argument(..., metavar="REF [REF ...] [-i HYP [HYP ...]] [-m bleu chrf ter]",
                                      show_default=False),
    sentence_level: SentenceLevel = False,
    fmt: ReportFormat = "text",
    width: ReportWidth = 1,
    paired_bs: PairedBootstrap = False,
    paired_bs_n: BootstrapSamples = 1000,
    paired_ar: PairedAR = False,
    paired_ar_n: PairedARTrials = 10_000,
    confidence: Confidence = False,
    confidence_n: ConfidenceSamples = 1000,
    seed: BootstrapSeed = None,
    language_pair: LanguagePair = None,
    paired_jobs: PairedJobs = 1,
    short: ShortSignature = False,
    jobs: ScoringJobs = 0,
    check_sacrebleu: bool = typer.Option(False, "--sacrebleu", help="Also compute sacreBLEU's scores; fail if any differs."),
    *,
    metric_values: dict,
) -> None:
    """Several metrics (-m bleu chrf ter; default all three) of one or more systems, equal to sacreBLEU's.

    [bold]mtkit score[/] ref.de -i a.de b.de -m bleu chrf · [bold]mtkit score[/] ref.de -i a.de --chrf-word-order 2 -m chrf
    """
    from mtkit.metrics.registry import METRICS

    ref_files, hyp_files, names = _split_inputs(files, "score")
    unknown = [n for n in names if n.lower() not in METRICS]
    if unknown:
        raise UserError(f"-m: unknown metric {unknown[0]!r} (choose from {', '.join(METRICS)})")
    wanted = list(dict.fromkeys(n.lower() for n in names)) or list(METRIC_NAMES)
    _tokenizer_for(metric_values, language_pair)
    _score(ref_files, hyp_files, [METRICS[name].build(metric_values) for name in wanted],
           Reporting.of(locals()))


def _score(ref_files: list[str], hyp_files: list[str], metrics: list, how: Reporting) -> None:
    """Read, check and score: every metric on every system, each segment's references prepared once."""
    from mtkit.cli import render
    from mtkit.data.textio import read_lines

    _check_reporting(how)
    stdout()  # closed: refused before reading anything
    references = [read_lines(f) for f in ref_files]
    systems = [read_lines(f) for f in hyp_files] if hyp_files else [list(stdin_lines())]
    names = hyp_files or ["<stdin>"]
    work_begins()
    _check_systems(ref_files, references, names, systems, how)
    started = time.monotonic()
    reports = [_evaluate(metric, systems, references, names, how) for metric in metrics]
    render.render_reports(reports, names, how.fmt, how.width, stdout(), how.short)
    if (seconds := time.monotonic() - started) >= 3:  # on stderr: the report on stdout stays as it is
        render.print_info(f"scored {len(systems) * len(systems[0]):,} segments ({len(systems)} system(s) x "
                          f"{len(systems[0]):,}) with {len(metrics)} metric(s) in {seconds:,.1f} s")


def _check_reporting(how: Reporting) -> None:
    from mtkit.metrics import base, significance

    if how.fmt not in ("text", "json"):
        raise UserError(f"--format: expected text or json, got {how.fmt!r}")
    if not 0 <= how.width <= 20:
        raise UserError(f"--width must be between 0 and 20 decimals, got {how.width}")
    if how.paired_bs and how.paired_ar:
        raise UserError("--paired-bs and --paired-ar are two tests of the same question: choose one")
    if how.paired_bs:
        significance.check_bootstrap(how.paired_bs_n)
    if how.paired_ar:
        significance.check_ar(how.paired_ar_n)
    if how.confidence:
        significance.check_bootstrap(how.confidence_n, option="--confidence-n")
    significance.check_paired_jobs(how.paired_jobs)
    how.rng_seed  # noqa: B018 (checked before reading anything)
    base.check_jobs(how.jobs)


def _check_systems(ref_files: list[str], references: list[list[str]], names: list[str], systems: list[list[str]],
                   how: Reporting) -> None:
    from mtkit.metrics import significance

    for name, hyps in zip(names, systems):
        for ref_name, refs in zip(ref_files, references):
            if len(refs) != len(hyps):
                raise UserError(f"{name} has {len(hyps)} lines but reference {ref_name} has {len(refs)}")
    paired = "--paired-bs" if how.paired_bs else "--paired-ar" if how.paired_ar else None
    if paired and len(systems) < 2:
        raise UserError(f"{paired} needs a baseline and at least one more system: -i BASE SYS [SYS ...]")
    if how.paired_bs:
        significance.check_bootstrap(how.paired_bs_n, len(systems[0]))
    if how.confidence:
        significance.check_bootstrap(how.confidence_n, len(systems[0]), option="--confidence-n")
    if how.check_sacrebleu and not systems[0]:
        raise UserError(f"{names[0]}: no lines to score; --sacrebleu cannot check an empty corpus "
                        "(sacreBLEU itself fails on one)")


def _evaluate(metric, systems: list[list[str]], references: list[list[str]], names: list[str], how: Reporting):
    """One metric's report on every system (cross-checked with sacreBLEU when asked)."""
    from mtkit.cli import render
    from mtkit.metrics import base, report

    segments = len(systems) * len(systems[0])
    shown = render.status(f"{type(metric).__name__}: {segments:,} segments") if segments >= LARGE else contextlib.nullcontext()
    with shown:
        result = report.evaluate(systems, base.prepare_references(references), metric,
                                 sentence_level=how.sentence_level,
                                 paired_bs_samples=how.paired_bs_n if how.paired_bs else 0, seed=how.rng_seed,
                                 jobs=how.jobs, confidence_samples=how.confidence_n if how.confidence else 0,
                                 paired_ar_trials=how.paired_ar_n if how.paired_ar else 0, paired_jobs=how.paired_jobs)
    if how.check_sacrebleu:
        from mtkit.metrics.check import check_equal

        for name, hyps, score in zip(names, systems, result.scores):
            check_equal(metric, score, hyps, references, name)
    return result


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
