"""SentencePiece tokenizers with the special ids fixed across mtkit: pad 0, unk 1, bos 2, eos 3.

A tokenizer directory holds `spm.model` (joint, the default) or `src.model` + `tgt.model`
(separate), and `tokenizer.json` describing sizes, options and the hashes of the training corpus.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sentencepiece as spm

from mtkit.errors import UserError
from mtkit.textio import iter_lines

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
INFO_FILE = "tokenizer.json"


@dataclass
class TokenizerOptions:
    vocab_size: int = 8000
    model_type: str = "unigram"  # unigram or bpe
    character_coverage: float = 1.0
    joint: bool = True  # one model for both sides
    input_sentence_size: int = 2_000_000  # sentences sampled per model (0: all)
    seed: int = 1

    @property
    def byte_fallback(self) -> bool:
        """Unseen characters become UTF-8 byte pieces, so decoding restores them exactly. It takes
        256 vocabulary entries, so it is used only when the vocabulary has room for them."""
        return self.vocab_size >= 1024

    def validate(self) -> None:
        if self.model_type not in ("unigram", "bpe"):
            raise UserError(f"--model-type: expected unigram or bpe, got {self.model_type!r}")
        if self.vocab_size < 8:
            raise UserError(f"--vocab-size must be at least 8, got {self.vocab_size}")
        if not 0.0 < self.character_coverage <= 1.0:
            raise UserError(f"--character-coverage must be in (0, 1], got {self.character_coverage}")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
            num_threads=2,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e).splitlines()[-1] if str(e) else repr(e)
        if "Vocabulary size too high" in msg or "vocab_size" in msg:
            raise UserError(f"--vocab-size {opts.vocab_size} is too large for this corpus ({msg}); try a smaller one") from None
        raise UserError(f"SentencePiece training failed: {msg}") from None


def train_tokenizer(
    src_files: Sequence[str | Path], tgt_files: Sequence[str | Path], out_dir: str | Path, opts: TokenizerOptions
) -> dict:
    """Train into out_dir (written whole or not at all) and return the description it saved."""
    opts.validate()
    src, tgt = [Path(p) for p in src_files], [Path(p) for p in tgt_files]
    for p in (*src, *tgt):
        if not p.is_file():
            raise UserError(f"{p}: no such file")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp"))
    work.chmod(0o755)
    try:
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
        (work / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        for vocab in work.glob("*.vocab"):
            vocab.unlink()
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return info


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
        directory = Path(directory)
        if info is None:
            info_path = directory / INFO_FILE
            if not info_path.is_file():
                raise UserError(f"{directory}: not a tokenizer directory ({INFO_FILE} is missing)")
            info = json.loads(info_path.read_text(encoding="utf-8"))
        models = [directory / m for m in info["models"]]
        for m in models:
            if not m.is_file():
                raise UserError(f"{m}: tokenizer model is missing")
        procs = [spm.SentencePieceProcessor(model_file=str(m)) for m in models]
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
