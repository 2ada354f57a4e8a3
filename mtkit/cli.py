"""The `mtkit` command line. Each command parses options, calls one library function and renders
the result; heavy libraries (torch, datasets) are imported inside the commands that need them."""

from __future__ import annotations

import sys

import click
import typer

from mtkit.errors import CheckFailed, UserError

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


def _split_inputs(args: list[str]) -> tuple[list[str], list[str]]:
    """sacrebleu-style `REF [REF ...] -i HYP [HYP ...]`: everything after -i/--input is a system."""
    refs: list[str] = []
    hyps: list[str] = []
    target = refs
    for arg in args:
        if arg in ("-i", "--input"):
            target = hyps
        elif arg.startswith("-") and arg != "-":
            raise UserError(f"unknown option {arg!r} (see mtkit bleu --help)")
        else:
            target.append(arg)
    if not refs:
        raise UserError("give at least one reference file: mtkit bleu REF [REF ...] -i HYP")
    if target is hyps and not hyps:
        raise UserError("-i/--input needs at least one hypothesis file")
    return refs, hyps


def _read_stdin_lines() -> list[str]:
    from mtkit.textio import decode_line

    return [decode_line(raw, "<stdin>", i) for i, raw in enumerate(sys.stdin.buffer, start=1)]


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
    sentence_level: bool = typer.Option(False, "--sentence-level", help="Also score each sentence."),
    fmt: str = typer.Option("text", "--format", "-f", help="text or json."),
    width: int = typer.Option(1, "--width", "-w", help="Decimals of the score in text output."),
    paired_bs: bool = typer.Option(False, "--paired-bs", help="Paired bootstrap against the first system."),
    paired_bs_n: int = typer.Option(1000, "--paired-bs-n", help="Bootstrap samples."),
    seed: int = typer.Option(12345, "--seed", help="Seed of the bootstrap resampling."),
    check_sacrebleu: bool = typer.Option(False, "--sacrebleu", help="Also compute sacrebleu's score; fail if they differ."),
) -> None:
    """Corpus BLEU of one or more systems (stdin when -i is absent), equal to sacreBLEU's.

    [bold]mtkit bleu[/] ref.de -i hyp.de · [bold]mtkit bleu[/] ref1 ref2 -i base.de new.de --paired-bs
    """
    from mtkit import bleu as B
    from mtkit import progress
    from mtkit.textio import read_lines

    if fmt not in ("text", "json"):
        raise UserError(f"--format: expected text or json, got {fmt!r}")
    ref_files, hyp_files = _split_inputs(files)
    opts = B.BLEUOptions(tokenize, lowercase, smooth_method, smooth_value, max_ngram_order)
    references = [read_lines(f) for f in ref_files]
    systems = [read_lines(f) for f in hyp_files] if hyp_files else [_read_stdin_lines()]
    names = hyp_files or ["<stdin>"]
    for name, hyps in zip(names, systems):
        for ref_name, refs in zip(ref_files, references):
            if len(refs) != len(hyps):
                raise UserError(f"{name} has {len(hyps)} lines but reference {ref_name} has {len(refs)}")
    if paired_bs and len(systems) < 2:
        raise UserError("--paired-bs needs a baseline and at least one more system: -i BASE SYS [SYS ...]")
    report = B.evaluate(
        systems, references, opts, sentence_level=sentence_level,
        paired_bs_samples=paired_bs_n if paired_bs else 0, seed=seed,
    )
    if check_sacrebleu:
        from mtkit.sacrebleu_check import check_equal

        for name, hyps, score in zip(names, systems, report.scores):
            check_equal(score, hyps, references, opts, name)
    progress.render_bleu_report(report, names, fmt, width)


def main() -> None:
    """Entry point: expected mistakes become one line on stderr and exit status 2."""
    from mtkit.progress import print_error

    try:
        rv = app(standalone_mode=False)
    except UserError as e:
        print_error(str(e))
        sys.exit(2)
    except CheckFailed as e:
        print_error(str(e))
        sys.exit(1)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(rv if isinstance(rv, int) else 0)
