"""The `mtkit` command line. Each command parses options, calls one library function and renders
the result; heavy libraries (torch, datasets) are imported inside the commands that need them."""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mtkit.errors import CheckFailed, UserError

try:  # typer >= 0.2x carries its own click, whose errors derive from TyperException
    from typer import TyperException as _CommandLineError
except ImportError:  # pragma: no cover - older typer uses the click package
    from click import ClickException as _CommandLineError  # type: ignore[assignment]

app = typer.Typer(
    name="mtkit",
    help="Machine translation toolkit: SentencePiece tokenizers, Transformer training, beam search, BLEU.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from mtkit import __version__

        typer.echo(f"mtkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Machine translation toolkit: SentencePiece tokenizers, Transformer training, beam search, BLEU."""


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


def _stdin():
    if sys.stdin is None:
        raise UserError("standard input is closed: give the input with -i FILE (or pipe it in)")
    return sys.stdin


def _stdout():
    if sys.stdout is None:
        raise UserError("standard output is closed: nowhere to write the result (redirect it, or use -o FILE)")
    return sys.stdout


def _stream_stdin():
    """Lines of stdin, decoded as UTF-8 with errors naming <stdin> and the line."""
    from mtkit.textio import decode_line

    for i, raw in enumerate(_stdin().buffer, start=1):
        yield decode_line(raw, "<stdin>", i)


class _PipeClosed(Exception):
    """The reader of our output went away (`mtkit ... | head -1`): a normal end, exit status 0."""


def _closed_pipe_is_normal(command):
    """Wrap a command so that a closed output pipe reaches main() as _PipeClosed (click would
    turn it into exit status 1)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:
            raise _PipeClosed from None
    return wrapper


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
    from mtkit.metrics.bleu import BLEUOptions

    ref_files, hyp_files, _ = _split_inputs(files, "bleu")
    metric = BLEUOptions(tokenize, lowercase, smooth_method, smooth_value, max_ngram_order)
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
    from mtkit.metrics import BLEUOptions, CHRFOptions, TEROptions

    ref_files, hyp_files, names = _split_inputs(files, "score")
    unknown = [n for n in names if n.lower() not in METRIC_NAMES]
    if unknown:
        raise UserError(f"-m: unknown metric {unknown[0]!r} (choose from {', '.join(METRIC_NAMES)})")
    wanted = list(dict.fromkeys(n.lower() for n in names)) or list(METRIC_NAMES)
    build = {
        "bleu": lambda: BLEUOptions(tokenize, lowercase, smooth_method, smooth_value, max_ngram_order),
        "chrf": lambda: CHRFOptions(chrf_char_order, chrf_word_order, chrf_beta, lowercase, chrf_whitespace,
                                    chrf_eps_smoothing),
        "ter": lambda: TEROptions(ter_normalized, ter_no_punct, ter_asian_support, ter_case_sensitive),
    }
    metrics = [build[name]() for name in wanted]
    _score(ref_files, hyp_files, metrics, fmt, width, sentence_level, paired_bs, paired_bs_n, seed, jobs,
           check_sacrebleu)


def _score(ref_files: list[str], hyp_files: list[str], metrics: list, fmt: str, width: int, sentence_level: bool,
           paired_bs: bool, paired_bs_n: int, seed: int, jobs: int, check_sacrebleu: bool) -> None:
    """Read, check and score: every metric on every system, each segment's references prepared once."""
    from mtkit import progress
    from mtkit.metrics import base
    from mtkit.textio import read_lines

    if fmt not in ("text", "json"):
        raise UserError(f"--format: expected text or json, got {fmt!r}")
    if not 0 <= width <= 20:
        raise UserError(f"--width must be between 0 and 20 decimals, got {width}")
    if paired_bs and paired_bs_n < 1:
        raise UserError(f"--paired-bs-n must be at least 1, got {paired_bs_n}")
    base.check_jobs(jobs)
    _stdout()
    references = [read_lines(f) for f in ref_files]
    systems = [read_lines(f) for f in hyp_files] if hyp_files else [list(_stream_stdin())]
    names = hyp_files or ["<stdin>"]
    _work_begins()
    for name, hyps in zip(names, systems):
        for ref_name, refs in zip(ref_files, references):
            if len(refs) != len(hyps):
                raise UserError(f"{name} has {len(hyps)} lines but reference {ref_name} has {len(refs)}")
    if paired_bs and len(systems) < 2:
        raise UserError("--paired-bs needs a baseline and at least one more system: -i BASE SYS [SYS ...]")
    prepared = base.prepare(references)
    reports = []
    for metric in metrics:
        report = base.evaluate(systems, prepared, metric, sentence_level=sentence_level,
                               paired_bs_samples=paired_bs_n if paired_bs else 0, seed=seed, jobs=jobs)
        if check_sacrebleu:
            from mtkit.metrics.check import check_equal

            for name, hyps, result in zip(names, systems, report.scores):
                check_equal(metric, result, hyps, references, name)
        reports.append(report)
    progress.render_reports(reports, names, fmt, width)


def main() -> None:
    """Entry point: expected mistakes become one line on stderr and exit status 2."""
    bound_onednn_cache()
    try:
        with _start_up_without_cycle_collection():
            rv = app(standalone_mode=False)
        if sys.stdout is not None:
            sys.stdout.flush()  # here, where a reader that went away (`| head`) is handled below
    except UserError as e:
        _print_error(str(e))
        sys.exit(2)
    except CheckFailed as e:
        _print_error(str(e))
        sys.exit(1)
    except typer.Abort:
        sys.exit(130)
    except _CommandLineError as e:  # a missing option, a value of the wrong type: one line too
        _print_error(e.format_message().rstrip(".") + " (see --help)")  # type: ignore[attr-defined]
        sys.exit(e.exit_code)  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        sys.exit(130)
    except (_PipeClosed, BrokenPipeError):
        # nothing more can be written: point stdout at /dev/null so the exit flush cannot fail
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    sys.exit(rv if isinstance(rv, int) else 0)


@contextlib.contextmanager
def _start_up_without_cycle_collection():
    """Each full pass of Python's cycle collector walks every live object, and `import torch`
    leaves ~170,000 (84 ms a pass on the 2-core EPYC). Left alone, the collector made four such
    passes in a one-sentence `mtkit translate` (~270 ms, a sixth of the whole run), and none
    found anything worth the time. So it is off while a command starts; a command with work that
    may run long calls `_work_begins()` once it is set up; and the process exits without the final
    pass (atexit runs before it). The collector is left as it was found, for callers in-process."""
    was_enabled = gc.isenabled()
    gc.disable()
    atexit.unregister(gc.freeze)  # once, however often main() runs in one process
    atexit.register(gc.freeze)
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def _work_begins() -> None:
    """The command is set up (libraries imported, model loaded): freeze what start-up allocated,
    which lives as long as the process and need never be walked again, and collect cycles from
    here on as usual."""
    gc.freeze()
    gc.enable()


def bound_onednn_cache() -> None:
    """torch's CPU bf16 kernels come from oneDNN, which caches one compiled primitive per distinct
    tensor shape, up to 1,024. Length-bucketed batches bring new shapes at every step: bf16 training
    of the `small` model measured 4.4 GB after 600 updates (5.4 GB later) with the default, 2.7 GB
    with 16 entries, at the same speed (README, Speed). It is read when torch creates its first
    primitive; a value in the environment wins. (mtkit.train.train sets it too, for library use.)"""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")


def _print_error(message: str) -> None:
    from mtkit.progress import print_error  # rich is imported only when there is something to show

    print_error(message)


# ----------------------------------------------------------------------------- tokenizer
tokenizer_app = typer.Typer(help="Train and inspect SentencePiece tokenizers.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("train")
def tokenizer_train(
    src: list[Path] = typer.Option(..., "--src", help="Source-side text file(s), .gz allowed."),
    tgt: list[Path] = typer.Option(..., "--tgt", help="Target-side text file(s), .gz allowed."),
    out: Path = typer.Option(..., "-o", "--output", help="Directory to write the tokenizer to."),
    vocab_size: int = typer.Option(8000, "--vocab-size"),
    model_type: str = typer.Option("unigram", "--model-type", help="unigram or bpe."),
    character_coverage: float = typer.Option(1.0, "--character-coverage"),
    joint: bool = typer.Option(True, "--joint/--separate", help="One model for both sides, or one per side."),
    input_sentence_size: int = typer.Option(2_000_000, "--input-sentence-size", help="Sentences sampled (0: all)."),
    seed: int = typer.Option(1, "--seed"),
) -> None:
    """Train a SentencePiece model with mtkit's fixed special ids (pad 0, unk 1, bos 2, eos 3)."""
    from mtkit import progress
    from mtkit.tokenizer import TokenizerOptions, train_tokenizer

    opts = TokenizerOptions(vocab_size, model_type, character_coverage, joint, input_sentence_size, seed)
    with progress.status(f"training a {vocab_size}-token {model_type} model"):
        info = train_tokenizer(src, tgt, out, opts)
    progress.print_info(f"wrote {out} ({', '.join(info['models'])}; vocabulary {info['src_vocab_size']}"
                        f"{'' if joint else ' / ' + str(info['tgt_vocab_size'])})")


@tokenizer_app.command("encode")
def tokenizer_encode(
    model_dir: Path = typer.Option(..., "-m", "--model", help="Tokenizer or model directory."),
    side: str = typer.Option("src", "--side", help="src or tgt model (same when joint)."),
    ids: bool = typer.Option(False, "--ids", help="Print ids instead of pieces."),
) -> None:
    """Encode stdin line by line to pieces (or ids) on stdout."""
    proc = _side(_load_tokenizer(model_dir), side)
    out = _stdout()
    _work_begins()
    for line in _stream_stdin():
        pieces = proc.encode(line, out_type=int if ids else str)
        out.write(" ".join(map(str, pieces)) + "\n")
        out.flush()


@tokenizer_app.command("decode")
def tokenizer_decode(
    model_dir: Path = typer.Option(..., "-m", "--model", help="Tokenizer or model directory."),
    side: str = typer.Option("tgt", "--side", help="src or tgt model (same when joint)."),
) -> None:
    """Decode pieces or ids (one sentence per line) from stdin back to plain text."""
    import re

    proc = _side(_load_tokenizer(model_dir), side)
    out = _stdout()
    _work_begins()
    for lineno, line in enumerate(_stream_stdin(), start=1):
        parts = line.split()
        if parts and all(re.fullmatch(r"-?[0-9]+", p) for p in parts):
            values = [int(p) for p in parts]
            bad = [v for v in values if not 0 <= v < proc.vocab_size()]
            if bad:
                raise UserError(f"<stdin>:{lineno}: id {bad[0]} is outside the vocabulary (0..{proc.vocab_size() - 1})")
            out.write(proc.decode(values) + "\n")
        else:
            out.write(proc.decode_pieces(parts) + "\n")
        out.flush()


def _side(tok, side: str):
    if side not in ("src", "tgt"):
        raise UserError(f"--side: expected src or tgt, got {side!r}")
    return tok.src if side == "src" else tok.tgt


def _load_tokenizer(model_dir: Path):
    from mtkit.tokenizer import Tokenizer

    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: no such tokenizer or model directory")
    return Tokenizer.load(model_dir / "tokenizer" if (model_dir / "tokenizer").is_dir() else model_dir)


# ----------------------------------------------------------------------------- train
# The settings `mtkit train` takes as options of their own, each declared once, here: the option's
# name, type and help come from mtkit.config (data.max_tokens -> --max-tokens). Every other setting
# is reachable with --set section.key=value or a --config file.
TRAIN_OPTIONS = (
    "preset", "data.max_tokens", "train.update_freq", "train.lr", "train.warmup",
    "train.label_smoothing", "model.dropout", "train.weight_decay", "train.clip_norm", "train.max_steps",
    "train.max_epochs", "train.max_time", "train.valid_every", "train.save_every", "train.keep_last",
    "train.patience", "train.precision", "train.device", "train.seed", "train.compile",
)


def _with_config_options(keys: tuple[str, ...]):
    """Give a command one option per config setting of `keys`; the command receives them as
    `settings`: {key: value, or None when not given}."""
    import inspect

    from mtkit.config import describe, option_name

    def decorate(command):
        names = {key: key.rpartition(".")[2] for key in keys}
        options = []
        for key, name in names.items():
            kind, text = describe(key)
            flag = option_name(key)
            decl = f"{flag}/--no-{flag[2:]}" if kind is bool else flag
            options.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind | None,
                                             default=typer.Option(None, decl, help=text or None)))

        @functools.wraps(command)
        def run(**kwargs):
            return command(**{k: v for k, v in kwargs.items() if k not in names.values()},
                           settings={key: kwargs[name] for key, name in names.items()})

        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "settings"]
        run.__signature__ = inspect.Signature(own + options)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in own + options}
        return run

    return decorate


@app.command()
@_with_config_options(TRAIN_OPTIONS)
def train(
    output: Path = typer.Option(..., "-o", "--output", help="Model directory (created, or resumed)."),
    src: Path | None = typer.Option(None, "--src", help="Training source file (or a TSV/JSONL file alone)."),
    tgt: Path | None = typer.Option(None, "--tgt", help="Training target file."),
    valid_src: Path | None = typer.Option(None, "--valid-src"),
    valid_tgt: Path | None = typer.Option(None, "--valid-tgt"),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="Tokenizer directory (else one is trained)."),
    vocab_size: int = typer.Option(8000, "--vocab-size", help="Of the tokenizer trained when --tokenizer is absent."),
    config_file: Path | None = typer.Option(None, "--config", help="TOML file with \\[model] \\[data] \\[train] \\[decode] sections."),
    overrides: list[str] = typer.Option([], "--set", help="section.key=value, repeatable (any config setting)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a model directory holding another run."),
    reset_data: bool = typer.Option(False, "--reset-data", help="Resume on another corpus, from its first batch."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the summary."),
    *,
    settings: dict,
) -> None:
    """Train (or resume) a Transformer; the model directory is all `mtkit translate` needs."""
    from mtkit import progress
    from mtkit.config import assemble
    from mtkit.rundir import TrainJob
    from mtkit.tokenizer import TokenizerOptions
    from mtkit.train import train as run_training

    cfg = assemble(config_file, settings, overrides)
    if src is None:
        raise UserError("--src is required (with --tgt, or alone for a TSV/JSONL corpus)")
    job = TrainJob(output, cfg, src, tgt, valid_src, valid_tgt, tokenizer,
                   TokenizerOptions(vocab_size=vocab_size, seed=cfg.train.seed), overwrite, reset_data=reset_data)
    renderer = progress.TrainRenderer(quiet=quiet)
    _work_begins()
    with renderer:
        summary = run_training(job, renderer)
    if summary.get("reason") == "signal":
        raise typer.Exit(128 + int(summary.get("signal", 15)))


# ----------------------------------------------------------------------------- translate
@app.command()
def translate(
    model_dir: Path = typer.Option(..., "-m", "--model", help="Model directory written by mtkit train."),
    input_file: Path | None = typer.Option(None, "-i", "--input", help="Input file (default: stdin)."),
    output_file: Path | None = typer.Option(None, "-o", "--output", help="Output file (default: stdout)."),
    beam: int = typer.Option(5, "--beam", help="Beam size."),
    greedy: bool = typer.Option(False, "--greedy", help="Greedy search (same as --beam 1)."),
    length_penalty: float = typer.Option(1.0, "--length-penalty", help="Alpha: score = log p / length**alpha (fairseq --lenpen); 0 = raw log-probability."),
    max_len_a: float = typer.Option(1.2, "--max-len-a"),
    max_len_b: int = typer.Option(10, "--max-len-b", help="Longest output: a * source length + b tokens."),
    nbest: int = typer.Option(1, "--nbest", help="Hypotheses per sentence (jsonl output lists them)."),
    max_tokens: int = typer.Option(0, "--max-tokens", help="Batch budget: source tokens x beam (0: 8,000 on a CPU, 65,536 on a GPU)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last, averaged or a path."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16, fp16, or int8 (int8 linear layers, on the CPU)."),
    fmt: str = typer.Option("text", "--format", "-f", help="text or jsonl."),
    interactive: bool = typer.Option(False, "--interactive", help="Answer each line as it arrives."),
) -> None:
    """Translate lines (stdin to stdout by default), one output line per input line, in order.

    MODEL is a model directory, or a CTranslate2 model written by mtkit convert (its checkpoint
    was chosen at conversion)."""
    import json as _json

    from mtkit.config import DEVICE_RE, DecodeConfig, validate_labelled
    from mtkit.textio import iter_lines
    from mtkit.translation import TranslateStats, open_engine

    if fmt not in ("text", "jsonl"):
        raise UserError(f"--format: expected text or jsonl, got {fmt!r}")
    if precision not in ("auto", "fp32", "bf16", "fp16", "int8"):
        raise UserError(f"--precision: expected auto, fp32, bf16, fp16 or int8, got {precision!r}")
    if not DEVICE_RE.fullmatch(device):
        raise UserError(f"--device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    cfg = DecodeConfig(1 if greedy else beam, length_penalty, max_len_a, max_len_b, nbest, max_tokens)
    validate_labelled(cfg, {f"decode.{k}": f"--{k.replace('_', '-')}" for k in vars(cfg)})
    if input_file is not None and not input_file.is_file():
        raise UserError(f"{input_file}: no such file")
    engine = open_engine(model_dir, checkpoint, device, precision)
    _work_begins()
    lines = iter_lines(input_file) if input_file else _stream_stdin()
    stats = TranslateStats()
    with _output(output_file, input_file) as out:
        for t in engine.translate(lines, cfg, stats, 1 if interactive else 2000):
            if fmt == "text":
                out.write(t.text + "\n")
            else:
                out.write(_json.dumps({"translation": t.text, "score": t.score, "tokens": t.tokens,
                                       "nbest": [{"translation": x, "score": s} for x, s in t.nbest]},
                                      ensure_ascii=False) + "\n")
            if interactive:
                out.flush()
    if stats.truncated:
        from mtkit import progress

        progress.print_warning(f"{stats.truncated} input line(s) were longer than the model's maximum "
                               f"({engine.max_positions - 1} tokens) and were truncated")


@app.command()
def convert(
    model_dir: Path = typer.Option(..., "-m", "--model", help="Model directory written by mtkit train."),
    to: str = typer.Option("ctranslate2", "--to", help="Target format: ctranslate2."),
    output: Path = typer.Option(..., "-o", "--output", help="Directory to write (new or empty)."),
    quantization: str = typer.Option("int8", "--quantization",
                                     help="int8, int8_float32, int8_float16, int8_bfloat16, float16, bfloat16 or float32."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last, averaged or a path."),
) -> None:
    """Convert a model for CTranslate2 (needs pip install 'mtkit[ct2]'); mtkit translate -m OUT uses it."""
    from mtkit import ct2, progress

    if to != "ctranslate2":
        raise UserError(f"--to: the only format is ctranslate2, got {to!r}")
    out = ct2.convert(model_dir, output, quantization, checkpoint)
    progress.print_info(f"wrote {out} (CTranslate2, {quantization}); translate with: mtkit translate -m {out}")


@contextlib.contextmanager
def _output(path: Path | None, input_path: Path | None):
    """Where a command writes its result: stdout, or a file that appears whole once the command
    has succeeded (a temporary file renamed; an old file stays as it was on failure). A device or
    a pipe (`-o /dev/stdout`) is written as the output comes."""
    from mtkit.files import atomic_write

    if path is None:
        yield _stdout()
        return
    if input_path is not None and path.exists() and os.path.samefile(path, input_path):
        raise UserError(f"-o {path} is the input file: write the output elsewhere (the input would be lost)")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; -o takes a file name")
    if not path.parent.is_dir():
        raise UserError(f"{path}: no such directory {path.parent}")
    try:
        if path.exists() and not path.is_file():
            with open(path, "w", encoding="utf-8") as f:
                yield f
        else:
            with atomic_write(path, "w", encoding="utf-8") as f:
                yield f
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from None


@app.command()
def average(
    model_dir: Path = typer.Option(..., "-m", "--model", help="Model directory."),
    last: int = typer.Option(10, "--last", help="How many of the latest step checkpoints."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Default: checkpoints/averaged.pt."),
) -> None:
    """Average the weights of the last N checkpoints (use with translate --checkpoint averaged)."""
    from mtkit import progress
    from mtkit.checkpoint import average_last

    if last < 1:
        raise UserError(f"--last must be at least 1, got {last}")
    path = average_last(model_dir, last, output)
    progress.print_info(f"wrote {path} (average of the last {last} checkpoints)")


@app.command()
def attention(
    sentence: str = typer.Argument(..., help="Source sentence."),
    model_dir: Path = typer.Option(..., "-m", "--model", help="Model directory."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write a PNG heatmap (needs matplotlib)."),
    checkpoint: str = typer.Option("best", "--checkpoint"),
) -> None:
    """Show the cross-attention of a sentence's greedy translation as a heatmap."""
    from mtkit import progress
    from mtkit.checkpoint import load_for_inference
    from mtkit.decode import cross_attention

    model, tok, _ = load_for_inference(model_dir, checkpoint, "cpu")
    result = cross_attention(model, tok, sentence)
    if output is not None:
        progress.attention_png(result, output)
        progress.print_info(f"wrote {output}")
    else:
        progress.attention_table(result)


@app.command()
def export(
    hub: str = typer.Option(..., "--hub", help="A datasets hub id, e.g. wmt14."),
    output: Path = typer.Option(..., "-o", "--output", help="Prefix: writes PREFIX.SRC_LANG and PREFIX.TGT_LANG."),
    config: str | None = typer.Option(None, "--config", help="Dataset config, e.g. de-en."),
    split: str = typer.Option("train", "--split"),
    src_lang: str = typer.Option(..., "--src-lang", help="Source language code, e.g. en."),
    tgt_lang: str = typer.Option(..., "--tgt-lang", help="Target language code, e.g. de."),
    src_key: str | None = typer.Option(None, "--src-key", help="Field of the source text (default translation.SRC_LANG)."),
    tgt_key: str | None = typer.Option(None, "--tgt-key", help="Field of the target text (default translation.TGT_LANG)."),
) -> None:
    """Write a `datasets` hub translation corpus as two plain-text files (for tokenizer and train)."""
    from mtkit import progress
    from mtkit.data import HubCorpus, export_pairs

    _work_begins()
    source = HubCorpus(hub, config, split, src_key or f"translation.{src_lang}", tgt_key or f"translation.{tgt_lang}")
    output.parent.mkdir(parents=True, exist_ok=True)
    src_out, tgt_out = Path(f"{output}.{src_lang}"), Path(f"{output}.{tgt_lang}")
    with progress.status(f"exporting {hub} {config or ''} {split}"):
        n = export_pairs(source, src_out, tgt_out)
    progress.print_info(f"wrote {n:,} pairs to {src_out} and {tgt_out}")


for _info in [*app.registered_commands, *tokenizer_app.registered_commands]:
    _info.callback = _closed_pipe_is_normal(_info.callback)
