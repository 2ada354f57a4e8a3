"""mtkit translate, and the commands that use a trained model: convert (to CTranslate2) and
attention."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mtkit.cli.app import app, config_options, stdin_lines, stdout, work_begins
from mtkit.config import DecodeConfig
from mtkit.errors import UserError

if TYPE_CHECKING:
    from mtkit.runtime import Dist

# The search settings `mtkit translate` takes, declared in mtkit.config.DecodeConfig.
DECODE_OPTIONS = ("beam", "length_penalty", "max_len_a", "max_len_b", "nbest", "max_tokens", "sampling", "topk", "topp",
                  "temperature", "seed")


@app.command()
@config_options(DECODE_OPTIONS, root=DecodeConfig, show_defaults=True)
def translate(
    model_dir: Path = typer.Option(..., "-m", "--model", help="Model directory written by mtkit train."),
    input_file: Path | None = typer.Option(None, "-i", "--input", help="Input file (default: stdin)."),
    output_file: Path | None = typer.Option(None, "-o", "--output", help="Output file (default: stdout)."),
    greedy: bool = typer.Option(False, "--greedy", help="Greedy search (same as --beam 1)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last, averaged or a path."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16, fp16, or int8 (int8 linear layers, on the CPU)."),
    fmt: str = typer.Option("text", "--format", "-f", help="text or jsonl."),
    interactive: bool = typer.Option(False, "--interactive", help="Answer each line as it arrives."),
    *,
    settings: dict,
) -> None:
    """Translate lines (stdin to stdout by default), one output line per input line, in order.

    MODEL is a model directory, or a CTranslate2 model written by mtkit convert (its checkpoint
    was chosen at conversion)."""
    from mtkit.config import DEVICE_RE, validate_labelled
    from mtkit.config_io import option_name
    from mtkit.data.textio import iter_lines, require_file
    from mtkit.inference.engine import open_engine
    from mtkit.inference.types import TranslateStats

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
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        done = _translate_distributed(model_dir, checkpoint, device, precision, cfg, input_file, output_file, fmt)
        if done is None:
            return
        stats, engine_max = done
    else:
        engine = open_engine(model_dir, checkpoint, device, precision)
        engine_max = engine.max_positions
        work_begins()
        lines = iter_lines(input_file) if input_file else stdin_lines()
        stats = TranslateStats()
        with _output(output_file, input_file) as out:
            for t in engine.translate(lines, cfg, stats, 1 if interactive else 2000):
                out.write(_format(t, fmt))
                if interactive:
                    out.flush()
    if stats.truncated:
        from mtkit.cli import render

        render.print_warning(f"{stats.truncated} input line(s) were longer than the model's maximum "
                             f"({engine_max - 1} tokens) and were truncated")


def _format(t, fmt: str) -> str:
    """A translation as an output line: its text, or a JSON object with its score and n-best."""
    import json

    if fmt == "text":
        return t.text + "\n"
    return json.dumps({"translation": t.text, "score": t.score, "tokens": t.tokens,
                       "nbest": [{"translation": x, "score": s} for x, s in t.nbest]}, ensure_ascii=False) + "\n"


def _translate_distributed(model_dir: Path, checkpoint: str, device: str, precision: str, cfg: DecodeConfig,
                           input_file: Path | None, output_file: Path | None, fmt: str):
    """Under torchrun: rank r translates lines [r n / W, (r+1) n / W) of the input (on its own GPU,
    or CPU), into a temporary file beside the output; rank 0 then joins them, in input order, into
    the output, which appears whole or not at all. A sentence's translation does not depend on its
    batch, and sampling draws from the line numbers: the output is a single process's. Returns the
    statistics summed over the ranks and the model's longest input on rank 0, None on the others."""
    from mtkit.runtime import end_distributed, init_distributed

    if input_file is None or output_file is None:
        raise UserError("translating with several processes (torchrun) needs -i FILE and -o FILE")
    d = init_distributed(device)
    try:
        return _translate_rank(d, model_dir, checkpoint, device, precision, cfg, input_file, output_file, fmt)
    finally:
        end_distributed(d)


def _translate_rank(d: Dist, model_dir: Path, checkpoint: str, device: str, precision: str, cfg: DecodeConfig,
                    input_file: Path, output_file: Path, fmt: str):
    """This rank's share of the lines; rank 0 joins the shares into the output."""
    import itertools
    import time

    from mtkit.cli import render
    from mtkit.data.textio import check_text, iter_lines
    from mtkit.files import temp_name
    from mtkit.inference.engine import open_engine
    from mtkit.inference.types import TranslateStats
    from mtkit.runtime import barrier, gather_objects

    local = device
    if device == "auto":
        import torch

        local = f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu"
    n = check_text(input_file)
    first, last = d.rank * n // d.world, (d.rank + 1) * n // d.world
    engine = open_engine(model_dir, checkpoint, local, precision)
    work_begins()
    stats, part = TranslateStats(), temp_name(output_file)
    shown, started = time.monotonic(), time.monotonic()
    try:
        with open(part, "w", encoding="utf-8") as out:
            lines = itertools.islice(iter_lines(input_file), first, last)
            for k, t in enumerate(engine.translate(lines, cfg, stats, 2000, first_line=first), start=1):
                out.write(_format(t, fmt))
                if d.main and time.monotonic() - shown >= 10:
                    render.print_info(f"rank 0: {k:,} of {last - first:,} lines ({k / (time.monotonic() - started):,.1f}"
                                      f" lines/s), {d.world} processes")
                    shown = time.monotonic()
        parts = gather_objects((str(part), vars(stats)), d)
        if d.main:
            with _output(output_file, input_file) as merged:
                for path, _ in parts:
                    with open(path, encoding="utf-8") as f:
                        for line in f:
                            merged.write(line)
        barrier(d)
    finally:
        part.unlink(missing_ok=True)
    if not d.main:
        return None
    total = TranslateStats(*(sum(p[1][k] for p in parts) for k in ("sentences", "truncated", "tgt_tokens")))
    return total, engine.max_positions


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


@contextlib.contextmanager
def _output(path: Path | None, input_path: Path | None):
    """Where a command writes its result: stdout, or a file that appears whole once the command
    has succeeded (a temporary file renamed; an old file stays as it was on failure). A device or
    a pipe (`-o /dev/stdout`) is written as the output comes."""
    from mtkit.files import atomic_write

    if path is None:
        yield stdout()
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
