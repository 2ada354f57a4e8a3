"""Setting up a model directory for training: tokenizer, config check, manifest.

A fresh directory is only left behind once setup has succeeded; a directory that already holds
a run is resumed only if it was trained with the same settings (else --overwrite is needed).
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mtkit import __version__
from mtkit import config as C
from mtkit.errors import UserError
from mtkit.textio import write_text_atomic
from mtkit.tokenizer import Tokenizer, TokenizerOptions, train_tokenizer

# Settings that may change when a run is resumed: when to stop, log and save, and where to run.
RESUMABLE = {
    "train": {"max_steps", "max_epochs", "max_time", "valid_every", "save_every", "keep_last", "patience",
              "device", "compile", "log_every", "valid_max_sentences", "threads", "max_nonfinite"},
    "decode": {"beam", "length_penalty", "max_len_a", "max_len_b", "nbest", "max_tokens"},
    "data": {"num_proc"},
}


@dataclass
class TrainJob:
    """What `mtkit train` was asked to do."""

    model_dir: Path
    cfg: C.RunConfig
    train_src: Path
    train_tgt: Path | None  # None: train_src is a TSV/JSONL file
    valid_src: Path | None = None
    valid_tgt: Path | None = None
    tokenizer_dir: Path | None = None
    tokenizer_options: TokenizerOptions = field(default_factory=TokenizerOptions)
    overwrite: bool = False
    cache_dir: Path | None = None
    command_line: list[str] = field(default_factory=lambda: list(sys.argv))


def check_inputs(job: TrainJob) -> None:
    """Everything that can be checked before any work is done."""
    job.cfg.validate()
    for path in (job.train_src, job.train_tgt, job.valid_src, job.valid_tgt):
        if path is not None and not Path(path).is_file():
            raise UserError(f"{path}: no such file")
    if (job.valid_src is None) != (job.valid_tgt is None):
        raise UserError("give both --valid-src and --valid-tgt, or neither")
    if job.tokenizer_dir is not None:
        Tokenizer.load(job.tokenizer_dir)
    if job.model_dir.exists() and not job.model_dir.is_dir():
        raise UserError(f"{job.model_dir}: exists and is not a directory")


def _differences(stored: C.RunConfig, wanted: C.RunConfig) -> list[str]:
    a, b = C.to_dict(stored), C.to_dict(wanted)
    diffs = [f"preset: {a['preset']} -> {b['preset']}"] if a["preset"] != b["preset"] else []
    for section in C.SECTIONS:
        for key, value in a[section].items():
            if key not in RESUMABLE.get(section, set()) and b[section][key] != value:
                diffs.append(f"{section}.{key}: {value} -> {b[section][key]}")
    return diffs


def _tokenizer_for(job: TrainJob, fresh: bool, on_event: Callable[[dict], None]) -> Tokenizer:
    target = job.model_dir / "tokenizer"
    if not fresh and target.is_dir():
        return Tokenizer.load(target)
    if job.tokenizer_dir is not None:
        Tokenizer.load(job.tokenizer_dir).copy_to(target)
        return Tokenizer.load(target)
    if job.train_tgt is None:
        raise UserError("training a tokenizer needs --src and --tgt text files; pass --tokenizer DIR for TSV/JSONL input")
    on_event({"kind": "info", "message": f"training a {job.tokenizer_options.vocab_size}-token SentencePiece model"})
    train_tokenizer([job.train_src], [job.train_tgt], target, job.tokenizer_options)
    return Tokenizer.load(target)


def prepare_model_dir(job: TrainJob, on_event: Callable[[dict], None]) -> Tokenizer:
    """Create or check the model directory; returns the tokenizer and fixes the vocabulary sizes."""
    config_path = job.model_dir / "config.toml"
    if job.overwrite and job.model_dir.exists():
        shutil.rmtree(job.model_dir)
    fresh = not config_path.is_file()
    if fresh and job.model_dir.exists() and any(job.model_dir.iterdir()):
        raise UserError(f"{job.model_dir}: exists and is not an mtkit model directory (use --overwrite to replace it)")
    created = not job.model_dir.exists()
    try:
        _fill_model_dir(job, fresh, config_path, on_event)
    except BaseException:
        if created:
            shutil.rmtree(job.model_dir, ignore_errors=True)
        raise
    return Tokenizer.load(job.model_dir / "tokenizer")


def _fill_model_dir(job: TrainJob, fresh: bool, config_path: Path, on_event: Callable[[dict], None]) -> None:
    try:
        job.model_dir.mkdir(parents=True, exist_ok=True)
        tok = _tokenizer_for(job, fresh, on_event)
    except OSError as e:
        raise UserError(f"{job.model_dir}: cannot write ({e.strerror or e})") from None
    model = job.cfg.model
    model.src_vocab_size, model.tgt_vocab_size = tok.src_vocab_size, tok.tgt_vocab_size
    model.share_embeddings = model.share_embeddings and tok.joint
    job.cfg.validate()
    if not fresh:
        diffs = _differences(C.load_toml(config_path), job.cfg)
        if diffs:
            raise UserError(f"{job.model_dir} holds a run with other settings ({'; '.join(diffs)}); "
                            "use --overwrite to start over, or another -o")
    write_text_atomic(config_path, C.to_toml(job.cfg))


def write_manifest(job: TrainJob, tok: Tokenizer, data_identity: dict, bleu_signature: str | None) -> None:
    import torch

    manifest = {
        "mtkit": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command_line": job.command_line,
        "data": data_identity,
        "tokenizer": tok.fingerprint(),
        "bleu_signature": bleu_signature,
    }
    write_text_atomic(job.model_dir / "manifest.json", json.dumps(manifest, indent=1) + "\n")
