"""mtkit tokenizer train / encode / decode."""

from __future__ import annotations

from pathlib import Path

import typer

from mtkit.cli.app import stdin_lines, stdout, tokenizer_app, work_begins
from mtkit.errors import UserError


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
    from mtkit.cli import render
    from mtkit.data.tokenizer import TokenizerOptions, train_tokenizer

    opts = TokenizerOptions(vocab_size, model_type, character_coverage, joint, input_sentence_size, seed)
    with render.status(f"training a {vocab_size}-token {model_type} model"):
        info = train_tokenizer(src, tgt, out, opts)
    render.print_info(f"wrote {out} ({', '.join(info['models'])}; vocabulary {info['src_vocab_size']}"
                        f"{'' if joint else ' / ' + str(info['tgt_vocab_size'])})")


@tokenizer_app.command("encode")
def tokenizer_encode(
    model_dir: Path = typer.Option(..., "-m", "--model", help="Tokenizer or model directory."),
    side: str = typer.Option("src", "--side", help="src or tgt model (same when joint)."),
    ids: bool = typer.Option(False, "--ids", help="Print ids instead of pieces."),
) -> None:
    """Encode stdin line by line to pieces (or ids) on stdout."""
    proc = _side(_load_tokenizer(model_dir), side)
    out = stdout()
    work_begins()
    for line in stdin_lines("pipe the text in (tokenizer encode reads standard input only)"):
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
    out = stdout()
    work_begins()
    for lineno, line in enumerate(stdin_lines("pipe the pieces or ids in (tokenizer decode reads standard input only)"),
                                  start=1):
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
    from mtkit.data.tokenizer import Tokenizer

    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: no such tokenizer or model directory")
    return Tokenizer.load(model_dir / "tokenizer" if (model_dir / "tokenizer").is_dir() else model_dir)
