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
    init_from: Path | None = typer.Option(None, "--init-from", help="Fine-tune: start from this trained model's "
                                          "weights (its tokenizer and model shape; a fresh optimiser and schedule)."),
    init_checkpoint: str = typer.Option("best", "--init-checkpoint", help="Of --init-from: best, last, averaged "
                                        "or a path."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the summary."),
    *,
    settings: dict,
) -> None:
    """Train (or resume) a Transformer; the model directory is all `mtkit translate` needs."""
    from mtkit.cli import render
    from mtkit.config_io import assemble, given_settings
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
    given = given_settings(config_file, settings, overrides)
    if init_from is not None:
        tokenizer = _from_parent(cfg, output, overwrite, init_from, init_checkpoint, tokenizer, vocab_size, given)
    job = TrainJob(output, cfg, src, tgt, valid_src, valid_tgt, tokenizer, options, overwrite,
                   vocab_size_given=vocab_size is not None, reset_data=reset_data, data_dir=data,
                   config_file=config_file, init_from=init_from, init_checkpoint=init_checkpoint)
    _check_given(data, tokenizer if init_from is None else None, vocab_size, given)
    renderer = render.TrainRenderer(quiet=quiet)
    work_begins()
    with renderer:
        done = run_training(job, renderer)
    if done.reason == "signal":
        raise typer.Exit(128 + done.signal)


def _from_parent(cfg, output: Path, overwrite: bool, init_from: Path, which: str, tokenizer: Path | None,
                 vocab_size: int | None, given: dict[str, str]) -> Path:
    """A run that starts from a trained model: its model settings become the parent's (the dropout
    may be the run's own); what would change its shape or tokenizer is refused. Returns the
    tokenizer directory the run uses (the parent's, unless the same one is given)."""
    from mtkit.model.directory import ModelDir
    from mtkit.training.parent import COPY, Parent

    run = ModelDir(output)
    parent = Parent.copied(run) if (run.checkpoints / COPY).is_file() and not overwrite else Parent.open(init_from, which)
    if vocab_size is not None:
        raise UserError(f"--vocab-size: the run starts from {init_from} and keeps its tokenizer")
    shape = [how for key, how in given.items() if key == "preset" or (key.startswith("model.") and key != "model.dropout")]
    if shape:
        raise UserError(f"{shape[0]}: the run starts from {init_from}, whose model's shape it keeps (only model.dropout "
                        "may change)")
    cfg.preset = parent.cfg.preset
    cfg.model = parent.child_model(cfg.model.dropout if "model.dropout" in given else None)
    return tokenizer or parent.tokenizer_dir


def _check_given(data: Path | None, tokenizer: Path | None, vocab_size: int | None, given: dict[str, str]) -> None:
    """Settings that a run would silently ignore: a vocabulary size where the tokenizer is given
    (warned about), cleaning settings where the data was cleaned when prepared (refused)."""
    from mtkit.cli import render

    if vocab_size is not None and (tokenizer is not None or data is not None):
        what = f"--tokenizer {tokenizer}" if tokenizer is not None else f"the prepared data's tokenizer ({data})"
        render.print_warning(f"--vocab-size {vocab_size} has no effect: {what} gives the vocabulary")
    if data is not None:
        for key in ("data.max_len", "data.max_ratio", "data.dedup"):
            if key in given:
                raise UserError(f"{given[key]}: has no effect with --data (the data was cleaned when it was "
                                f"prepared): prepare it again with `mtkit prepare --set {key}=...`")


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
    from mtkit.data.prepare import corpus_inputs, encoding_processes, prepare_into, tag_ids
    from mtkit.data.tokenizer import Tokenizer

    cfg = assemble(config_file, settings, overrides)
    if tgt is not None and src is None:
        raise UserError("--tgt needs --src")
    inputs = corpus_inputs(cfg.data, src, tgt, f"{config_file} [[data.corpora]]")
    tok = Tokenizer.load(tokenizer / "tokenizer" if (tokenizer / "tokenizer").is_dir() else tokenizer)
    tag_ids(inputs, tok)
    if cfg.data.num_proc > (usable := encoding_processes(cfg.data.num_proc)):
        render.print_warning(f"--num-proc {cfg.data.num_proc}: this process may use {usable} CPU(s); "
                             f"{usable} process(es) encode")
    work_begins()
    started, shown = time.monotonic(), render.PrepareProgress(render.stderr_console())
    info = prepare_into(output, inputs, tok, Cleaning.of(cfg.data), cfg.data.num_proc, overwrite, shown.show)
    if info is None:
        render.print_info(f"{output} already holds this data, prepared (nothing to do; --overwrite prepares it again)")
        return
    seconds = time.monotonic() - started
    for c in info["corpora"]:
        r = c["report"]
        removed = ", ".join(f"{k} {v:,}" for k, v in r.items() if k not in ("read", "kept"))
        render.print_info(f"{c['name']}: {r['read']:,} pairs read, {r['kept']:,} kept (removed: {removed}); "
                          f"{c['tokens'][0]:,} + {c['tokens'][1]:,} tokens")
    read = sum(c["report"]["read"] for c in info["corpora"])
    render.print_info(f"wrote {output} in {seconds:,.1f} s ({read / max(seconds, 1e-9):,.0f} pairs/s)")


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
