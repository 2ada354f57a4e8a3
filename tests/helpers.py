"""Small corpora and models shared by the tests."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def write_reverse_task(directory: Path, n_train: int = 4000, n_valid: int = 100, seed: int = 0) -> dict[str, Path]:
    """A parallel corpus whose target is the source's words reversed."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", n_train), ("valid", n_valid)):
        src, tgt = directory / f"{split}.src", directory / f"{split}.tgt"
        rows = [[rng.choice(WORDS) for _ in range(rng.randint(2, 7))] for _ in range(n)]
        src.write_text("".join(" ".join(r) + "\n" for r in rows))
        tgt.write_text("".join(" ".join(reversed(r)) + "\n" for r in rows))
        paths[f"{split}_src"], paths[f"{split}_tgt"] = src, tgt
    return paths


def write_pair(directory: Path, src_lines: list[str], tgt_lines: list[str], name: str = "c") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    src, tgt = directory / f"{name}.src", directory / f"{name}.tgt"
    src.write_text("".join(line + "\n" for line in src_lines), encoding="utf-8")
    tgt.write_text("".join(line + "\n" for line in tgt_lines), encoding="utf-8")
    return src, tgt


REVERSE_SETTINGS = [
    "--preset", "tiny", "--set", "model.d_model=64", "--set", "model.n_heads=4", "--set", "model.d_ff=128",
    "--set", "model.n_enc_layers=2", "--set", "model.n_dec_layers=2", "--warmup", "50", "--lr", "0.005",
    "--label-smoothing", "0", "--max-tokens", "1024", "--vocab-size", "43",
]


def run_in_process(*args: str, stdin: str | bytes | None = "", stdout: io.StringIO | None = None) -> tuple[int, str, str]:
    """mtkit's real entry point, run in this process (no interpreter start-up): (exit status,
    stdout, stderr). stdin=None runs with standard input closed, as `mtkit ... <&-` does; `stdout`
    is the stream standard output writes to (a fresh StringIO by default)."""
    import contextlib
    import sys

    from mtkit.cli import main

    out, err = stdout or io.StringIO(), io.StringIO()
    raw = stdin.encode() if isinstance(stdin, str) else stdin
    fake_stdin = None if raw is None else io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8")
    old_argv, old_stdin = sys.argv, sys.stdin
    sys.argv, sys.stdin = ["mtkit", *args], fake_stdin
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv, sys.stdin = old_argv, old_stdin
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """What every expected mistake gives: exit status 2 and one line on stderr naming the problem."""
    assert code == 2, (code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


TINY = ["--preset", "tiny", "--max-tokens", "256", "--warmup", "10", "--quiet", "--valid-every", "0"]


def train_tiny(out: Path, corpus: dict[str, Path], tokenizer: Path, *extra: str, src: str = "src",
               tgt: str = "tgt") -> tuple[int, str, str]:
    """`mtkit train` of the tiny preset on the `corpus` fixture's files, in process."""
    return run_in_process("train", "-o", str(out), "--src", str(corpus[src]), "--tgt", str(corpus[tgt]),
                          "--tokenizer", str(tokenizer), *TINY, *extra)


def tree(directory: Path) -> list[str]:
    """Every path below `directory`, relative and sorted."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path below `directory` with the bytes of each file (None for a folder), .lock aside."""
    return {p: (None if (directory / p).is_dir() else (directory / p).read_bytes())
            for p in tree(directory) if p != ".lock"}


def prepare_source(source, tok, cfg, cache):
    """A corpus source prepared into `cache` (as `mtkit train` does for text), mapped."""
    from mtkit.data.corpus import Cleaning
    from mtkit.data.prepare import CorpusInput, prepare_cached

    return prepare_cached([CorpusInput("train", source)], tok, Cleaning.of(cfg), cache, cfg.num_proc)[0]


def skip_unless_required(reason: str) -> None:
    """Skip a test that this machine cannot run; where MTKIT_REQUIRE_ALL=1 (CI: .ci/run), fail it
    instead, so that a promise of the README is never silently untested."""
    if os.environ.get("MTKIT_REQUIRE_ALL") == "1":
        pytest.fail(f"required, but cannot run here: {reason}")
    pytest.skip(reason)
