"""mtkit tokenizer train / encode / decode."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import typer

from mtkit.cli.app import config_options, stdin_lines, stdout, tokenizer_app, work_begins
from mtkit.config import TokenizerOptions
from mtkit.errors import UserError


@tokenizer_app.command("train")
@config_options([f.name for f in fields(TokenizerOptions) if f.name != "tags"], root=TokenizerOptions,
                show_defaults=True)
def tokenizer_train(
    src: list[Path] = typer.Option(..., "--src", help="Source-side text file(s), .gz allowed."),
    tgt: list[Path] = typer.Option(..., "--tgt", help="Target-side text file(s), .gz allowed."),
    out: Path = typer.Option(..., "-o", "--output", help="Directory to write the tokenizer to."),
    tags: list[str] = typer.Option([], "--tag", help="A token kept as one piece, e.g. <BT> for tagged "
                                   "back-translation (repeatable)."),
    *,
    settings: dict,
) -> None:
    """Train a SentencePiece model with mtkit's fixed special ids (pad 0, unk 1, bos 2, eos 3)."""
    from mtkit.cli import render
    from mtkit.data.tokenizer import train_tokenizer

    opts = TokenizerOptions(**{k: v for k, v in settings.items() if v is not None}, tags=tuple(tags))
    with render.status(f"training a {opts.vocab_size}-token {opts.model_type} model"):
        info = train_tokenizer(src, tgt, out, opts)
    render.print_info(f"wrote {out} ({', '.join(info['models'])}; vocabulary {info['src_vocab_size']}"
                      f"{'' if opts.joint else ' / ' + str(info['tgt_vocab_size'])})")


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
