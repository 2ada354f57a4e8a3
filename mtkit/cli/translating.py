"""mtkit translate, and the commands that use a trained model: convert (to CTranslate2) and
attention."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import typer

from mtkit.cli.app import app, config_options, stdin_lines, stdout, work_begins
from mtkit.config import DecodeConfig
from mtkit.errors import UserError

# The search settings `mtkit translate` takes, declared in mtkit.config.DecodeConfig.
DECODE_OPTIONS = ("beam", "length_penalty", "max_len_a", "max_len_b", "nbest", "max_tokens", "sampling", "topk", "topp",
                  "temperature", "seed")


@app.command()
@config_options(DECODE_OPTIONS, root=DecodeConfig, show_defaults=True)
def translate(
    models: list[str] = typer.Option(..., "-m", "--model", help="Model directory written by mtkit train (or "
                                     "converted); repeat for an ensemble; DIR:CHECKPOINT picks a checkpoint."),
    input_file: Path | None = typer.Option(None, "-i", "--input", help="Input file (default: stdin)."),
    output_file: Path | None = typer.Option(None, "-o", "--output", help="Output file (default: stdout)."),
    greedy: bool = typer.Option(False, "--greedy", help="Greedy search (same as --beam 1)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last, averaged or a path."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16, fp16, or int8 (int8 linear layers, on the CPU)."),
    fmt: str = typer.Option("text", "--format", "-f", help="text or jsonl."),
    interactive: bool = typer.Option(False, "--interactive", help="Answer each line as it arrives."),
    split_sentences: bool = typer.Option(False, "--split-sentences", help="Cut each line into sentences (by the "
                                         "model's source language), translate them, and join them again: for "
                                         "paragraphs; one output line per input line still."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no summary (warnings and errors still)."),
    *,
    settings: dict,
) -> None:
    """Translate lines (stdin to stdout by default), one output line per input line, in order.

    MODEL is a model directory, or a CTranslate2 model written by mtkit convert (its checkpoint
    was chosen at conversion). Several -m translate as an ensemble (their log-probabilities
    averaged; one tokenizer). Progress and a summary go to stderr."""
    import time

    from mtkit.cli import render
    from mtkit.inference.engine import BySentences, open_engine
    from mtkit.model.directory import ModelDir, ModelRef

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    refs = [ModelRef.parse(m, checkpoint) for m in models]
    cfg = _checked(settings, greedy, fmt, precision, device, refs, input_file, output_file, distributed)
    language = ModelDir(refs[0].path).languages()[0] if split_sentences else None

    def engine_on(where: str):
        engine = open_engine(refs, checkpoint, where, precision)
        return BySentences(engine, language) if split_sentences else engine

    started = time.monotonic()
    if distributed:
        done = _translate_distributed(engine_on, device, cfg, input_file, output_file, fmt, quiet)  # type: ignore[arg-type]
    else:
        done = _translate_here(engine_on(device), cfg, input_file, output_file, fmt, quiet, interactive)
    if done is None:
        return
    stats, engine_max = done
    if stats.truncated:
        render.print_warning(f"{stats.truncated} input line(s) were longer than the model's maximum "
                             f"({engine_max - 1} tokens) and were truncated")
    if not quiet and not interactive:
        seconds = time.monotonic() - started
        render.print_info(f"translated {stats.sentences:,} lines ({stats.tgt_tokens:,} target tokens) in "
                          f"{seconds:,.1f} s: {stats.sentences / max(seconds, 1e-9):,.1f} lines/s"
                          + (f"; {stats.truncated:,} truncated" if stats.truncated else ""))


def _checked(settings: dict, greedy: bool, fmt: str, precision: str, device: str, refs: list,
             input_file: Path | None, output_file: Path | None, distributed: bool) -> DecodeConfig:
    """The search settings, every option and path checked before any work. Under torchrun what
    every process finds alike is said once, by rank 0."""
    from mtkit.cli import render
    from mtkit.config import DEVICE_RE, validate_labelled
    from mtkit.config_io import option_name
    from mtkit.data.textio import require_file
    from mtkit.model.directory import ModelDir

    try:
        if fmt not in ("text", "jsonl"):
            raise UserError(f"--format: expected text or jsonl, got {fmt!r}")
        if precision not in ("auto", "fp32", "bf16", "fp16", "int8"):
            raise UserError(f"--precision: expected auto, fp32, bf16, fp16 or int8, got {precision!r}")
        if not DEVICE_RE.fullmatch(device):
            raise UserError(f"--device: expected auto, cpu, cuda or cuda:N, got {device!r}")
        cfg = DecodeConfig(**{key: value for key, value in settings.items() if value is not None})
        if greedy:
            cfg.beam = 1
        validate_labelled(cfg, {f"decode.{key}": option_name(key) for key in DECODE_OPTIONS})
        if input_file is not None:
            require_file(input_file)
        if output_file is not None:
            check_output(output_file, input_file)
        if distributed and (input_file is None or output_file is None):
            raise UserError("translating with several processes (torchrun) needs -i FILE and -o FILE")
        for ref in refs:
            ModelDir(ref.path).require("run", "converted")
    except UserError as e:
        e.quiet = distributed and os.environ.get("RANK", "0") != "0"
        raise
    ignored = [option_name(f"decode.{k}") for k in ("topk", "topp", "temperature", "seed") if settings.get(k) is not None]
    if ignored and not cfg.sampling:
        render.print_warning(f"{', '.join(ignored)} only apply{'s' * (len(ignored) == 1)} with --sampling: ignored")
    return cfg


def _translate_here(engine, cfg: DecodeConfig, input_file: Path | None, output_file: Path | None, fmt: str,
                    quiet: bool, interactive: bool):
    """One process: the input (a file, or stdin) translated to the output, with progress on stderr;
    the statistics and the model's longest input."""
    from mtkit.cli import render
    from mtkit.data.textio import count_lines, iter_lines
    from mtkit.inference.types import TranslateStats

    work_begins()
    lines = iter_lines(input_file) if input_file else stdin_lines()
    total = count_lines(input_file) if input_file is not None and not quiet else None
    stats = TranslateStats()
    with _output(output_file, input_file) as out, \
            render.WorkProgress("translating", "sentences", total, quiet or interactive) as progress:
        for k, t in enumerate(engine.translate(lines, cfg, stats, 1 if interactive else 2000), start=1):
            out.write(_format(t, fmt))
            if interactive:
                out.flush()
            progress.update(k)
    return stats, engine.max_positions


def _format(t, fmt: str) -> str:
    """A translation as an output line: its text, or a JSON object with its score and n-best."""
    import json

    if fmt == "text":
        return t.text + "\n"
    return json.dumps({"translation": t.text, "score": t.score, "tokens": t.tokens,
                       "nbest": [{"translation": x, "score": s} for x, s in t.nbest]}, ensure_ascii=False) + "\n"


def _translate_distributed(engine_on, device: str, cfg: DecodeConfig, input_file: Path, output_file: Path, fmt: str,
                           quiet: bool):
    """Under torchrun: each rank its share of the lines (mtkit.inference.distributed); rank 0 shows
    its progress and returns the statistics over every rank and the model's longest input."""
    from mtkit.cli import render
    from mtkit.inference import distributed
    from mtkit.runtime import end_distributed, init_distributed

    d = init_distributed(device)
    try:
        engine = engine_on(distributed.rank_device(device, d))
        work_begins()
        with render.WorkProgress(f"rank 0 of {d.world}", "sentences", None, quiet or not d.main) as progress:
            stats = distributed.translate_file(d, engine, cfg, input_file, output_file, lambda t: _format(t, fmt),
                                               lambda done, share: progress.update(done, done / max(share, 1)))
        return None if stats is None else (stats, engine.max_positions)
    finally:
        end_distributed(d)


@app.command()
def convert(
    model_dir: Path = typer.Option(..., "-m", "--model", help="Model directory written by mtkit train."),
    to: str = typer.Option("ctranslate2", "--to", help="Target format: ctranslate2."),
    output: Path = typer.Option(..., "-o", "--output", help="Directory to write (new or empty)."),
    quantization: str = typer.Option("int8", "--quantization",
                                     help="int8, int8_float32, int8_float16, int8_bfloat16, float16, bfloat16 or float32."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last, averaged or a path."),
) -> None:
    r"""Convert a model for CTranslate2 (needs pip install 'mtkit\[ct2]'); mtkit translate -m OUT uses it."""
    from mtkit.cli import render
    from mtkit.inference import ct2

    if to != "ctranslate2":
        raise UserError(f"--to: the only format is ctranslate2, got {to!r}")
    out = ct2.convert(model_dir, output, quantization, checkpoint)
    render.print_info(f"wrote {out} (CTranslate2, {quantization}); translate with: mtkit translate -m {out}")


@app.command()
def attention(
    sentence: str = typer.Argument(..., help="Source sentence."),
    model_dir: Path = typer.Option(..., "-m", "--model", help="Model directory."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write a PNG heatmap (needs matplotlib)."),
    checkpoint: str = typer.Option("best", "--checkpoint"),
    max_src: int = typer.Option(100, "--max-src-pieces", help="Longest source shown, in pieces (longer ones are cut)."),
) -> None:
    """Show the cross-attention of a sentence's greedy translation as a heatmap."""
    from mtkit.cli import render
    from mtkit.inference.search import cross_attention
    from mtkit.model.checkpoint import load_for_inference

    if max_src < 1:
        raise UserError(f"--max-src-pieces must be at least 1, got {max_src}")
    model, tok, _ = load_for_inference(model_dir, checkpoint, "cpu")
    result = cross_attention(model, tok, sentence, max_src=max_src)
    shown = len(result.src_pieces) - 1
    if result.src_length > shown:
        render.print_warning(f"the sentence has {result.src_length} pieces: only its first {shown} were "
                               "translated and are shown (--max-src-pieces)")
    if output is not None:
        render.attention_png(result, output)
        render.print_info(f"wrote {output}")
    else:
        render.attention_table(result)


def check_output(path: Path, input_path: Path | None) -> None:
    """Refuse, before any work, an output file that cannot be written as asked."""
    if input_path is not None and path.exists() and input_path.exists() and os.path.samefile(path, input_path):
        raise UserError(f"-o {path} is the input file: write the output elsewhere (the input would be lost)")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; -o takes a file name")
    if not path.parent.is_dir():
        raise UserError(f"{path}: no such directory {path.parent}")


@contextlib.contextmanager
def _output(path: Path | None, input_path: Path | None):
    """Where a command writes its result: stdout, or a file that appears whole once the command
    has succeeded (a temporary file renamed; an old file stays as it was on failure). A device or
    a pipe (`-o /dev/stdout`) is written as the output comes."""
    from mtkit.files import atomic_write

    if path is None:
        yield stdout()
        return
    check_output(path, input_path)
    try:
        if path.exists() and not path.is_file():
            with open(path, "w", encoding="utf-8") as f:
                yield f
        else:
            with atomic_write(path, "w", encoding="utf-8") as f:
                yield f
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from None
