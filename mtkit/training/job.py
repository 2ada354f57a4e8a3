"""What `mtkit train` was asked to do: the one object the run directory, its data and the loop share."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from mtkit import config as C
from mtkit.config import TokenizerOptions


@dataclass
class TrainJob:
    """What `mtkit train` was asked to do."""

    model_dir: Path
    cfg: C.RunConfig
    train_src: Path | None  # None: the data is --data or the config's [[data.corpora]]
    train_tgt: Path | None  # None: train_src is a TSV/JSONL file
    valid_src: Path | None = None
    valid_tgt: Path | None = None
    tokenizer_dir: Path | None = None
    tokenizer_options: TokenizerOptions = field(default_factory=TokenizerOptions)
    overwrite: bool = False
    vocab_size_given: bool = False  # --vocab-size was given (it must then match a resumed run's tokenizer)
    cache_dir: Path | None = None
    reset_data: bool = False  # resume on a corpus other than the run's, from its first batch
    data_dir: Path | None = None  # prepared data (`mtkit prepare`), instead of text
    config_file: Path | None = None  # where [[data.corpora]] came from (for messages)
    command_line: list[str] = field(default_factory=lambda: list(sys.argv))
