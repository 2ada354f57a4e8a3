"""mtkit train, and the commands around it: prepare (data, once), average (checkpoints) and export
(a hub corpus)."""

from __future__ import annotations

from pathlib import Path

import typer

from mtkit.cli.app import app, config_options, work_begins
from mtkit.config import TokenizerOptions
from mtkit.errors import UserError

# The settings `mtkit train` takes as options of their own, each declared once, here: the option's
# name, type and help come from mtkit.config (data.max_tokens -> --max-tokens). Every other setting
# is reachable with --set section.key=value or a --config file.
TRAIN_OPTIONS = (
    "preset", "data.max_tokens", "train.update_freq", "train.lr", "train.warmup",
    "train.label_smoothing", "model.dropout", "train.weight_decay", "train.clip_norm", "train.max_steps",
    "train.max_epochs", "train.max_time", "train.valid_every", "train.save_every", "train.keep_last",
    "train.patience", "train.precision", "train.device", "train.seed", "train.compile",
)


@app.command()
@config_options(TRAIN_OPTIONS, show_defaults=True)
def train(
    output: Path = typer.Option(..., "-o", "--output", help="Model directory (created, or resumed)."),
    src: Path | None = typer.Option(None, "--src", help="Training source file (or a TSV/JSONL file alone)."),
    tgt: Path | None = typer.Option(None, "--tgt", help="Training target file."),
    data: Path | None = typer.Option(None, "--data", help="Prepared data (`mtkit prepare`) instead of text: "
                                     "its tokenizer, corpora, weights and tags."),
    valid_src: Path | None = typer.Option(None, "--valid-src"),
    valid_tgt: Path | None = typer.Option(None, "--valid-tgt"),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="Tokenizer directory (else one is trained)."),
    vocab_size: int | None = typer.Option(None, "--vocab-size", help="Of the tokenizer trained when --tokenizer is "
                                          f"absent (default {TokenizerOptions().vocab_size}).", show_default=False),
    config_file: Path | None = typer.Option(None, "--config", help="TOML file with \\[model] \\[data] \\[train] \\[decode] sections."),
    overrides: list[str] = typer.Option([], "--set", help="section.key=value, repeatable (any config setting)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a model directory holding another run."),
    reset_data: bool = typer.Option(False, "--reset-data", help="Resume on another corpus, from its first batch."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the summary."),
    *,
    settings: dict,
) -> None:
    """Train (or resume) a Transformer; the model directory is all `mtkit translate` needs."""
    from mtkit.cli import render
    from mtkit.config_io import assemble
    from mtkit.training.rundir import TrainJob
    from mtkit.training.trainer import train as run_training

    cfg = assemble(config_file, settings, overrides)
    if src is None and data is None and not cfg.data.corpora:
        raise UserError("no training data: give --src and --tgt (or a TSV/JSONL file as --src), --data DIR "
                        "(from `mtkit prepare`), or [[data.corpora]] tables in a --config file")
    if tgt is not None and src is None:
        raise UserError("--tgt needs --src")
    options = TokenizerOptions(seed=cfg.train.seed)
    if vocab_size is not None:
        options.vocab_size = vocab_size
    job = TrainJob(output, cfg, src, tgt, valid_src, valid_tgt, tokenizer, options, overwrite,
                   vocab_size_given=vocab_size is not None, reset_data=reset_data, data_dir=data,
                   config_file=config_file)
    if tokenizer is not None and vocab_size is not None:
        render.print_warning(f"--vocab-size {vocab_size} has no effect: --tokenizer {tokenizer} gives the vocabulary")
    renderer = render.TrainRenderer(quiet=quiet)
    work_begins()
    with renderer:
        done = run_training(job, renderer)
    if done.reason == "signal":
        raise typer.Exit(128 + done.signal)


PREPARE_OPTIONS = ("data.max_len", "data.max_ratio", "data.dedup", "data.num_proc")


@app.command()
@config_options(PREPARE_OPTIONS, show_defaults=True)
def prepare(
    output: Path = typer.Option(..., "-o", "--output", help="Prepared-data directory (created)."),
    tokenizer: Path = typer.Option(..., "--tokenizer", help="Tokenizer (or model) directory whose ids to write."),
    src: Path | None = typer.Option(None, "--src", help="Source file of a single corpus (or a TSV/JSONL file alone)."),
    tgt: Path | None = typer.Option(None, "--tgt", help="Target file of a single corpus."),
    config_file: Path | None = typer.Option(None, "--config", help="TOML file with \\[\\[data.corpora]] tables (name, src, "
                                            "tgt, weight, tag...) and \\[data] cleaning settings."),
    overrides: list[str] = typer.Option([], "--set", help="section.key=value, repeatable (any data setting)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace earlier prepared data in --output."),
    *,
    settings: dict,
) -> None:
    """Encode and clean corpora once into memory-mapped files that `mtkit train --data` reuses."""
    import time

    from mtkit.cli import render
    from mtkit.config_io import assemble
    from mtkit.data.corpus import Cleaning
    from mtkit.data.prepare import corpus_inputs, tag_ids
    from mtkit.data.tokenizer import Tokenizer

    cfg = assemble(config_file, settings, overrides)
    if tgt is not None and src is None:
        raise UserError("--tgt needs --src")
    inputs = corpus_inputs(cfg.data, src, tgt, f"{config_file} [[data.corpora]]")
    tok = Tokenizer.load(tokenizer / "tokenizer" if (tokenizer / "tokenizer").is_dir() else tokenizer)
    tag_ids(inputs, tok)
    cleaning = Cleaning.of(cfg.data)
    if _already_prepared(output, inputs, tok, cleaning, overwrite):
        render.print_info(f"{output} already holds this data, prepared (nothing to do; --overwrite prepares it again)")
        return
    work_begins()
    started, shown = time.monotonic(), render.PrepareProgress(render.stderr_console())
    info = _prepare_into(output, inputs, tok, cleaning, cfg.data.num_proc, shown.show)
    seconds = time.monotonic() - started
    for c in info["corpora"]:
        r = c["report"]
        removed = ", ".join(f"{k} {v:,}" for k, v in r.items() if k not in ("read", "kept"))
        render.print_info(f"{c['name']}: {r['read']:,} pairs read, {r['kept']:,} kept (removed: {removed}); "
                          f"{c['tokens'][0]:,} + {c['tokens'][1]:,} tokens")
    read = sum(c["report"]["read"] for c in info["corpora"])
    render.print_info(f"wrote {output} in {seconds:,.1f} s ({read / max(seconds, 1e-9):,.0f} pairs/s)")


def _already_prepared(output: Path, inputs, tok, cleaning, overwrite: bool) -> bool:
    """Whether `output` holds exactly this data (same sources by path, size and time; tokenizer;
    settings). Anything else in it is refused unless it is prepared data and --overwrite is given."""
    from mtkit.data.prepare import is_prepared, quick_key, read_info
    from mtkit.files import TEMP_RE

    if not output.exists():
        return False
    if not output.is_dir():
        raise UserError(f"{output}: exists and is not a directory")
    if is_prepared(output):
        try:
            same = read_info(output).get("quick_key") == quick_key(inputs, tok, cleaning)
        except UserError:
            same = False
        if same and not overwrite:
            return True
        if not overwrite:
            raise UserError(f"{output}: holds other prepared data; nothing was changed: pass --overwrite to replace it, "
                            "or choose another -o")
        return False
    if any(not TEMP_RE.fullmatch(p.name) for p in output.iterdir()):
        raise UserError(f"{output}: exists and is not prepared data; nothing was changed: choose another -o")
    return False


def _prepare_into(output: Path, inputs, tok, cleaning, num_proc: int, progress):
    from mtkit.data.prepare import is_prepared, prepare, replace_prepared
    from mtkit.files import remove_leftovers

    def build(out: Path):
        return prepare(inputs, tok, cleaning, out, num_proc, progress)

    if is_prepared(output):
        return replace_prepared(output, build)
    if output.is_dir():  # empty, or what a killed run left
        remove_leftovers(output)
        output.rmdir()
    return build(output)


@app.command()
def average(
    model_dir: Path = typer.Option(..., "-m", "--model", help="Model directory."),
    last: int = typer.Option(10, "--last", help="How many of the latest step checkpoints."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Default: checkpoints/averaged.pt."),
) -> None:
    """Average the weights of the last N checkpoints (use with translate --checkpoint averaged)."""
    from mtkit.cli import render
    from mtkit.model.checkpoint import average_last

    if last < 1:
        raise UserError(f"--last must be at least 1, got {last}")
    path = average_last(model_dir, last, output)
    render.print_info(f"wrote {path} (average of the last {last} checkpoints)")


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
    from mtkit.cli import render
    from mtkit.data.sources import HubCorpus, export_pairs

    work_begins()
    source = HubCorpus(hub, config, split, src_key or f"translation.{src_lang}", tgt_key or f"translation.{tgt_lang}")
    output.parent.mkdir(parents=True, exist_ok=True)
    src_out, tgt_out = Path(f"{output}.{src_lang}"), Path(f"{output}.{tgt_lang}")
    with render.status(f"exporting {hub} {config or ''} {split}"):
        n = export_pairs(source, src_out, tgt_out)
    render.print_info(f"wrote {n:,} pairs to {src_out} and {tgt_out}")
