"""What `mtkit train` was asked to do: the one object the run directory, its data and the loop share."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mtkit import config as C
from mtkit.config import TokenizerOptions
from mtkit.model.directory import ModelDir

if TYPE_CHECKING:
    from mtkit.data.tokenizer import Tokenizer
    from mtkit.training.parent import Parent


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
    init_from: Path | None = None  # fine-tuning: the trained model whose weights the run starts from
    init_checkpoint: str = "best"  # of init_from: best, last, averaged or a path

    @functools.cached_property
    def run(self) -> ModelDir:
        """The model directory, its paths and what it holds."""
        return ModelDir(self.model_dir)

    @functools.cached_property
    def parent(self) -> Parent | None:
        """The model the run starts from (--init-from), opened and checked once."""
        from mtkit.training.parent import COPY, Parent

        if self.init_from is None:
            return None
        if (self.run.checkpoints / COPY).is_file() and not self.overwrite:  # set up already: its own copy
            return Parent.copied(self.run)
        return Parent.open(self.init_from, self.init_checkpoint)

    @functools.cached_property
    def given_tokenizer(self) -> Tokenizer | None:
        """The tokenizer the run was given (--tokenizer, or the prepared data's), loaded once."""
        from mtkit.data.tokenizer import Tokenizer

        if self.tokenizer_dir is not None:
            return Tokenizer.load(self.tokenizer_dir)
        if self.data_dir is not None and (self.data_dir / "tokenizer").is_dir():
            return Tokenizer.load(self.data_dir / "tokenizer")
        return None
