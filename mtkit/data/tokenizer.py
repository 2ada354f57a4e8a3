"""SentencePiece tokenizers with the special ids fixed across mtkit: pad 0, unk 1, bos 2, eos 3.

A tokenizer directory holds `spm.model` (joint, the default) or `src.model` + `tgt.model`
(separate), and `tokenizer.json` describing sizes, options and the hashes of the training corpus.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sentencepiece as spm

from mtkit.config import TokenizerOptions
from mtkit.data.textio import iter_lines, require_file
from mtkit.errors import UserError, describe
from mtkit.files import (
    TEMP_RE,
    atomic_write,
    default_dir_mode,
    disk_full,
    fsync_dir,
    make_temp_dir,
    write_error,
)

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
INFO_FILE = "tokenizer.json"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _model_sha256(path: Path) -> str:
    """The SHA-256 of a model file (small: read at once; not a corpus, whose hash is file_sha256's)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _without_training_record(model: bytes) -> bytes:
    """A SentencePiece model (a ModelProto) without its trainer_spec (field 2), the record of how it
    was trained (input files, temporary paths, threads), which does not change what it encodes.
    Top-level protobuf fields: a varint key (field << 3 | wire type), then the value."""

    def varint(at: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = model[at]
            value, shift, at = value | (byte & 0x7F) << shift, shift + 7, at + 1
            if byte < 0x80:
                return value, at

    kept, at = bytearray(), 0
    while at < len(model):
        start = at
        key, at = varint(at)
        wire = key & 7
        if wire == 0:
            _, at = varint(at)
        elif wire == 2:
            size, at = varint(at)
            at += size
        else:
            at += 8 if wire == 1 else 4
        if key >> 3 != 2:
            kept += model[start:at]
    return bytes(kept)


def _sample(paths: Sequence[Path], size: int, seed: int) -> Iterator[str]:
    """Non-empty lines of the files; a uniform reservoir sample of `size` lines when size > 0."""
    lines = (line for p in paths for line in iter_lines(p) if line.strip())
    if size <= 0:
        yield from lines
        return
    rng, reservoir = random.Random(seed), []
    for i, line in enumerate(lines):
        if i < size:
            reservoir.append(line)
        elif (j := rng.randrange(i + 1)) < size:
            reservoir[j] = line
    yield from reservoir


def _train_one(paths: Sequence[Path], prefix: Path, opts: TokenizerOptions) -> None:
    sentences = list(_sample(paths, opts.input_sentence_size, opts.seed))
    if not sentences:
        raise UserError(f"{', '.join(map(str, paths))}: no non-empty lines to train a tokenizer on")
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_prefix=str(prefix),
            vocab_size=opts.vocab_size,
            model_type=opts.model_type,
            character_coverage=opts.character_coverage,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            max_sentence_length=1 << 16,
            byte_fallback=opts.byte_fallback,
            user_defined_symbols=list(opts.tags),
            num_threads=2,
            minloglevel=2,
        )
    except RuntimeError as e:
        if disk_full(prefix.parent):
            raise OSError(errno.ENOSPC, "No space left on device") from None
        raise UserError(_explain_training_error(str(e), opts)) from None
    if disk_full(prefix.parent):  # SentencePiece does not report a model it could not write whole
        raise OSError(errno.ENOSPC, "No space left on device")


def _explain_training_error(error: str, opts: TokenizerOptions) -> str:
    """SentencePiece's message turned into advice about the option to change."""
    if m := re.search(r"smaller than required_chars\. (\d+) vs (\d+)", error):
        return (f"--vocab-size {opts.vocab_size} is too small: this corpus needs at least {m.group(2)} entries "
                "for its characters and the special tokens (or lower --character-coverage)")
    if m := re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", error):
        return f"--vocab-size {opts.vocab_size} is too large for this corpus: at most {m.group(2)} pieces can be learnt from it"
    return f"SentencePiece training failed: {error.splitlines()[-1] if error else 'unknown error'}"


MODEL_FILES = ("spm.model", "src.model", "tgt.model")


def is_tokenizer_dir(directory: Path) -> bool:
    """True if `directory` holds an mtkit tokenizer (its tokenizer.json names its model files)."""
    return (directory / INFO_FILE).is_file()


def _check_output_dir(out_dir: Path) -> None:
    """Refuse to write into a directory holding anything but an mtkit tokenizer."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and not is_tokenizer_dir(out_dir) and any(
            not TEMP_RE.fullmatch(p.name) for p in out_dir.iterdir()):
        raise UserError(f"{out_dir}: exists, is not empty and is not an mtkit tokenizer directory; "
                        "choose a new or empty directory (nothing was written)")


def train_tokenizer(
    src_files: Sequence[str | Path], tgt_files: Sequence[str | Path], out_dir: str | Path, opts: TokenizerOptions
) -> dict:
    """Train into out_dir and return the description it saved.

    out_dir must be new, empty, or an mtkit tokenizer directory; in the last case only mtkit's
    own files are replaced (each atomically, tokenizer.json last), so a failure or a kill leaves
    the previous tokenizer whole, and nothing else in the directory is touched."""
    opts.validate()
    src, tgt = [Path(p) for p in src_files], [Path(p) for p in tgt_files]
    for p in (*src, *tgt):
        require_file(p)
    out_dir = Path(out_dir).resolve()
    _check_output_dir(out_dir)
    work = make_temp_dir(out_dir)
    try:
        info = _train_into(work, src, tgt, opts)
        _install(work, out_dir, info["models"])
    except OSError as e:
        raise write_error(out_dir / ("spm.model" if opts.joint else "src.model"), e) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return info



def _train_into(work: Path, src: list[Path], tgt: list[Path], opts: TokenizerOptions) -> dict:
    if opts.joint:
        _train_one([*src, *tgt], work / "spm", opts)
    else:
        _train_one(src, work / "src", opts)
        _train_one(tgt, work / "tgt", opts)
    info: dict[str, Any] = {
        "options": {**asdict(opts), "byte_fallback": opts.byte_fallback},
        "models": ["spm.model"] if opts.joint else ["src.model", "tgt.model"],
        "corpus": {str(p): file_sha256(p) for p in (*src, *tgt)},
    }
    tok = Tokenizer.load(work, info=info)
    info["src_vocab_size"], info["tgt_vocab_size"] = tok.src_vocab_size, tok.tgt_vocab_size
    info["model_sha256"] = {name: _model_sha256(work / name) for name in info["models"]}  # checked at every load
    (work / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    for name in info["models"]:
        (work / name).chmod(0o666 & default_dir_mode())
    return info


def _install(work: Path, out_dir: Path, models: list[str]) -> None:
    """Move a trained tokenizer from work into out_dir: one rename for a new directory, else file
    by file with tokenizer.json (which names the models) last."""
    if not out_dir.exists():
        for vocab in work.glob("*.vocab"):
            vocab.unlink()
        work.rename(out_dir)
        fsync_dir(out_dir.parent)
        return
    for name in models:
        os.replace(work / name, out_dir / name)
    with atomic_write(out_dir / INFO_FILE) as f:
        f.write((work / INFO_FILE).read_bytes())
    for name in set(MODEL_FILES) - set(models):  # e.g. spm.model after retraining with --separate
        (out_dir / name).unlink(missing_ok=True)


def _read_info(directory: Path) -> dict:
    info_path = directory / INFO_FILE
    if not info_path.is_file():
        raise UserError(f"{directory}: not a tokenizer directory ({INFO_FILE} is missing)")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{info_path}: unreadable ({e})") from None
    models = info.get("models") if isinstance(info, dict) else None
    if not (isinstance(models, list) and models and set(models) <= set(MODEL_FILES) and len(models) <= 2):
        raise UserError(f"{info_path}: damaged (expected \"models\": [\"spm.model\"] or [\"src.model\", \"tgt.model\"])")
    return info


def _load_model(path: Path) -> spm.SentencePieceProcessor:
    if not path.is_file():
        raise UserError(f"{path}: tokenizer model is missing")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as e:
        raise UserError(f"{path}: not a readable SentencePiece model ({describe(e)})") from None


class Tokenizer:
    """Encode source/target text to ids and decode target ids back to plain text."""

    def __init__(self, src: spm.SentencePieceProcessor, tgt: spm.SentencePieceProcessor, directory: Path):
        self.src, self.tgt, self.directory = src, tgt, directory
        for proc in {id(src): src, id(tgt): tgt}.values():
            ids = (proc.pad_id(), proc.unk_id(), proc.bos_id(), proc.eos_id())
            if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
                raise UserError(f"{directory}: tokenizer has special ids {ids}, mtkit needs (0, 1, 2, 3)")

    @classmethod
    def load(cls, directory: str | Path, info: dict | None = None) -> Tokenizer:
        """The tokenizer of `directory`; a model file whose bytes are not those recorded when it
        was trained (damaged, or replaced) is refused, naming it."""
        directory = Path(directory)
        if info is None:
            info = _read_info(directory)
        recorded = info.get("model_sha256")
        recorded = recorded if isinstance(recorded, dict) else {}
        for name in info["models"]:
            if name in recorded and (directory / name).is_file() and _model_sha256(directory / name) != recorded[name]:
                raise UserError(f"{directory / name}: damaged (its bytes are not those of the tokenizer that was "
                                f"trained; {INFO_FILE} records them): copy or train the tokenizer again")
        procs = [_load_model(directory / name) for name in info["models"]]
        return cls(procs[0], procs[-1], directory)

    @property
    def joint(self) -> bool:
        return self.src is self.tgt

    @property
    def src_vocab_size(self) -> int:
        return self.src.vocab_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt.vocab_size()

    def model_files(self) -> list[Path]:
        return [self.directory / n for n in ("spm.model", "src.model", "tgt.model") if (self.directory / n).is_file()]

    def fingerprint(self) -> str:
        """A hash of the model files: what an encoded corpus cache depends on."""
        h = hashlib.sha256()
        for path in self.model_files():
            h.update(path.name.encode() + path.read_bytes())
        return h.hexdigest()[:16]

    def encoding_fingerprint(self) -> str:
        """A hash of what encoding and decoding depend on (the pieces, their scores, the
        normalisation): equal for two tokenizers trained alike in different places, whose model
        files differ only in SentencePiece's record of their training. What models that must
        share a vocabulary (an ensemble, a fine-tuned model and its parent) are compared by."""
        h = hashlib.sha256()
        for path in self.model_files():
            h.update(path.name.encode() + _without_training_record(path.read_bytes()))
        return h.hexdigest()[:16]

    def encode_src(self, lines: list[str]) -> list[list[int]]:
        return self.src.encode(lines)

    def encode_tgt(self, lines: list[str]) -> list[list[int]]:
        return self.tgt.encode(lines)

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        return self.tgt.decode(ids)

    def copy_to(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for path in [*self.model_files(), self.directory / INFO_FILE]:
            shutil.copy2(path, directory / path.name)
