"""The model directory, its one owner: where each file of a run lives, what kind of directory a
path is, and what can be read from it without loading a model (its manifest, its languages,
its tokenizer).

    ModelDir(path)        a run's directory, as `mtkit train` writes it:

    config.toml           the resolved RunConfig the model was trained with
    tokenizer/            spm.model (or src.model + tgt.model) and tokenizer.json
    checkpoints/          last.pt (full training state), best.pt, step_00001000.pt ... (weights)
    metrics.jsonl         one JSON object per training/validation event
    manifest.json         versions, command line, data and tokenizer hashes, the parent of a
                          fine-tuning run
    valid_output.txt      the last validation's translations
    cache/                the encoded corpora (keyed by their content, tokenizer and cleaning)

A directory written by `mtkit convert` (CTranslate2) holds model.bin, the tokenizer and
mtkit.json instead: its kind is "converted". Only RUN_FILES are ever replaced or deleted by mtkit;
a user's own files beside them are left alone.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mtkit.errors import UserError

if TYPE_CHECKING:
    from mtkit.data.tokenizer import Tokenizer

# What a training run writes into its model directory: all that mtkit ever replaces or deletes
# there (a user's own files beside them are left alone).
RUN_FILES = ("config.toml", "manifest.json", "metrics.jsonl", "valid_output.txt", "tokenizer", "checkpoints", "cache")
REPLACED = ".replaced-run"  # a run being replaced (`mtkit train --overwrite`) waits here until its successor has a checkpoint
CONVERTED_MARKER = "mtkit.json"  # what `mtkit convert` writes beside CTranslate2's model.bin
LANG_RE = re.compile(r"[a-z]{2,3}(-[A-Za-z]{2,4})?")


@dataclass(frozen=True)
class ModelRef:
    """A model to load: its directory and which checkpoint (best, last, averaged or a path)."""

    path: Path
    checkpoint: str = "best"

    @classmethod
    def parse(cls, text: str, checkpoint: str = "best") -> ModelRef:
        """DIR, or DIR:CHECKPOINT (best, last, averaged, or a .pt file) where DIR is a directory."""
        head, sep, tail = text.rpartition(":")
        if sep and Path(head).is_dir() and (tail in ("best", "last", "averaged") or tail.endswith(".pt")):
            return cls(Path(head), tail)
        return cls(Path(text), checkpoint)


class ModelDir:
    """A model directory (see the module docstring): its paths, its kind, what it says of itself."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ModelDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ paths
    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / "tokenizer"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def valid_output(self) -> Path:
        return self.path / "valid_output.txt"

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    @property
    def replaced(self) -> Path:
        return self.path / REPLACED

    def checkpoint(self, which: str) -> Path:
        """best | last | averaged (refused when missing) | a path (taken as it is)."""
        if which in ("best", "last", "averaged"):
            path = self.checkpoints / f"{which}.pt"
            if not path.is_file():
                raise UserError(f"{self.path}: checkpoint {which!r} is missing ({path})")
            return path
        return Path(which)

    # ------------------------------------------------------------------ what it is
    @property
    def kind(self) -> str:
        """'missing', 'converted' (CTranslate2, by `mtkit convert`), 'run' (mtkit's, complete
        enough to translate with: config.toml and the tokenizer) or 'other'."""
        if not self.path.exists():
            return "missing"
        if (self.path / CONVERTED_MARKER).is_file() and (self.path / "model.bin").is_file():
            return "converted"
        if self.config.is_file() and self.tokenizer_dir.is_dir():
            return "run"
        return "other"

    def require(self, *kinds: str) -> None:
        """Refuse, in one line, a path that is not a model directory of one of `kinds`."""
        kind = self.kind
        if kind == "missing":
            raise UserError(f"{self.path}: no such directory (-m takes a model directory written by mtkit train"
                            f"{', or one written by mtkit convert' if 'converted' in kinds else ''})")
        if self.replaced.is_dir():
            raise UserError(f"{self.path}: a replacement of this run was interrupted (its files wait in "
                            f"{self.replaced}); the next `mtkit train -o {self.path} ...` puts them back first")
        if kind in kinds:
            return
        if not self.path.is_dir():
            raise UserError(f"{self.path}: is not a directory (-m takes a model directory)")
        if kind == "converted":
            raise UserError(f"{self.path}: a converted CTranslate2 model, not an mtkit run (it has no checkpoints)")
        missing = next(p.name for p in (self.config, self.tokenizer_dir) if not p.exists())
        raise UserError(f"{self.path}: not a complete model directory ({missing} is missing)")

    def is_run(self) -> bool:
        """Whether the directory holds an mtkit run: the manifest.json that mtkit writes, or the
        config.toml it writes (every section, nothing foreign) beside the tokenizer it copies first.
        A user's own `--config` file in a directory is not enough to make it a run."""
        from mtkit import config as C
        from mtkit.config_io import tomllib

        try:
            config = tomllib.loads(self.config.read_text(encoding="utf-8"))
            if set(config) == {"preset", *C.SECTIONS} and (self.tokenizer_dir / "tokenizer.json").is_file():
                return True
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            pass
        return "mtkit" in self.manifest()

    def has_checkpoint(self) -> bool:
        """Whether the run saved training state (a run without it has lost nothing if restarted)."""
        return (self.checkpoints / "last.pt").is_file()

    def manifest(self) -> dict:
        """manifest.json, or {} when there is none or it cannot be read."""
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def languages(self) -> tuple[str | None, str | None]:
        """The model's source and target language codes, from its training files' names (train.en,
        train.de.gz), given on the command line or recorded in the prepared data it used; for a
        converted model, from the run it was converted from. (None, None) when they do not say."""
        if self.kind == "converted":
            return self._converted_languages()
        files = self._training_files()
        codes = [Path(f).name.removesuffix(".gz").rpartition(".")[2] for f in files]
        if len(codes) == 2 and all(LANG_RE.fullmatch(c) for c in codes) and codes[0] != codes[1]:
            return codes[0], codes[1]
        return None, None

    def _converted_languages(self) -> tuple[str | None, str | None]:
        """What `mtkit convert` recorded (languages, or the checkpoint it read, whose run says)."""
        try:
            info = json.loads((self.path / CONVERTED_MARKER).read_text(encoding="utf-8"))
            if isinstance(info.get("languages"), list) and len(info["languages"]) == 2:
                return info["languages"][0], info["languages"][1]
            checkpoint = Path(info["source"])
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            return None, None
        run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
        return ModelDir(run).languages() if run != self.path else (None, None)

    def _training_files(self) -> list[str]:
        manifest = self.manifest()
        args = [str(a) for a in manifest.get("command_line", []) if isinstance(a, str)]
        files = [args[args.index(flag) + 1] for flag in ("--src", "--tgt") if flag in args[:-1]]
        if len(files) == 2:
            return files
        try:
            info = json.loads((Path(manifest["data"]["prepared"]) / "prepared.json").read_text(encoding="utf-8"))
            quick = info["corpora"][0]["quick"]
            return [quick["src"][0], quick["tgt"][0]]
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return []

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:
        """The run's tokenizer, loaded once."""
        from mtkit.data.tokenizer import Tokenizer

        return Tokenizer.load(self.tokenizer_dir)
