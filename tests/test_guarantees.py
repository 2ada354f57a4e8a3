"""What mtkit promises about a user's files and its exits, case by case: nothing of the user's is
deleted or overwritten, a killed command leaves what it had (and the next run tidies up), a full
disk or a full standard output is one line, signals exit with 128 + the signal, and damaged files
of every kind mtkit reads are refused in one line."""

import gzip
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, run_in_process, skip_unless_required, snapshot, train_tiny

from mtkit.model import checkpoint as ckpt
from mtkit.model.directory import REPLACED, RUN_FILES

DISK_FULL = "the disk is full"


def _dead_pid() -> int:
    """The PID of a process that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _run_script(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB file system of its own (tmpfs) to fill up; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        skip_unless_required("a small file system needs root and mount(8)")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        skip_unless_required(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(disk: Path, leave: int) -> None:
    """Take all of `disk`'s free space but `leave` bytes."""
    filler = disk / f"filler{len(list(disk.glob('filler*')))}"
    size = shutil.disk_usage(disk).free - leave
    if size > 0:
        with open(filler, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, size)


def _prepare(corpus: dict, tokenizer: Path, cache: Path) -> tuple[int, str]:
    """Encode the corpus into `cache`, as `mtkit train` does: (0, "") or (2, the error's line)."""
    from helpers import prepare_source

    from mtkit.config import DataConfig
    from mtkit.data.sources import TextPair
    from mtkit.data.tokenizer import Tokenizer
    from mtkit.errors import UserError

    try:
        prepare_source(TextPair(corpus["src"], corpus["tgt"]), Tokenizer.load(tokenizer), DataConfig(), cache)
    except UserError as e:
        return 2, f"error: {e}\n"
    return 0, ""


def _assert_disk_full_or_done(code: int, err: str, directory: Path) -> bool:
    """A command on a filling disk either succeeded or said, in one line naming a directory below
    `directory`, that the disk is full; returns whether it failed."""
    if code == 0:
        return False
    assert_one_line_error(code, err, DISK_FULL, str(directory))
    return True


# ----------------------------------------------------------------------------- the user's files are kept
def test_overwrite_never_touches_a_directory_that_is_not_a_run(tmp_path, corpus, reverse_with_tokenizer):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "src" / "main.py").write_text("print(1)\n")
    (proj / "thesis.txt").write_text("three years of work\n")
    for config in ('[tool.x]\nname = "p"\n', '[train]\nlr = 0.001\n'):  # another tool's, the user's own --config
        (proj / "config.toml").write_text(config)
        before = snapshot(proj)
        for extra in ([], ["--overwrite"]):
            code, _, err = train_tiny(proj, corpus, reverse_with_tokenizer["tokenizer"], "--max-steps", "1", *extra)
            assert_one_line_error(code, err, "not an mtkit run's", "nothing was changed")
            assert snapshot(proj) == before


def test_overwrite_replaces_only_mtkit_files_of_a_run(tmp_path, corpus, reverse_with_tokenizer):
    tok, model = reverse_with_tokenizer["tokenizer"], tmp_path / "m"
    assert train_tiny(model, corpus, tok, "--max-steps", "2", "--save-every", "2")[0] == 0
    (model / "NOTES.md").write_text("lr 1e-3 diverged\n")
    (model / "eval").mkdir()
    (model / "eval" / "test.hyp").write_text("a translation\n")
    code, _, err = train_tiny(model, corpus, tok, "--max-steps", "3", "--save-every", "3", "--overwrite")
    assert code == 0, err
    assert (model / "NOTES.md").read_text() == "lr 1e-3 diverged\n"
    assert (model / "eval" / "test.hyp").read_text() == "a translation\n"
    assert [p.name for p in ckpt.step_checkpoints(model)] == ["step_00000003.pt"]
    assert not (model / REPLACED).exists()


def test_a_failed_setup_of_an_overwrite_keeps_the_users_files(tmp_path, corpus, reverse_with_tokenizer, monkeypatch):
    import mtkit.training.trainer as T

    tok, model = reverse_with_tokenizer["tokenizer"], tmp_path / "m"
    assert train_tiny(model, corpus, tok, "--max-steps", "2", "--save-every", "2")[0] == 0
    (model / "NOTES.md").write_text("mine\n")
    before = snapshot(model)

    def broken(*args, **kwargs):
        raise RuntimeError("setup failed")

    monkeypatch.setattr(T, "Transformer", broken)
    with pytest.raises(RuntimeError, match="setup failed"):
        train_tiny(model, corpus, tok, "--max-steps", "2", "--set", "model.d_ff=96", "--overwrite")
    assert snapshot(model) == before


@pytest.mark.slow
def test_a_killed_overwrite_leaves_the_old_run_and_the_next_train_restores_it(tmp_path, corpus, reverse_with_tokenizer):
    tok, model = reverse_with_tokenizer["tokenizer"], tmp_path / "m"
    args = ["train", "-o", str(model), "--src", str(corpus["src"]), "--tgt", str(corpus["tgt"]), "--tokenizer", str(tok),
            "--preset", "tiny", "--max-tokens", "256", "--warmup", "10", "--quiet", "--valid-every", "0"]
    assert run_in_process(*args, "--max-steps", "2", "--save-every", "2")[0] == 0
    before = snapshot(model)
    killed = _run_script("""
        import os, signal, sys
        import mtkit.training.trainer as T
        def die(*args, **kwargs):  # SIGKILL in the middle of the new run's setup
            os.kill(os.getpid(), signal.SIGKILL)
        T.Transformer = die
        from mtkit.cli import main
        sys.argv = ["mtkit", *sys.argv[1:]]
        main()
        """, *args, "--max-steps", "2", "--set", "model.d_ff=96", "--overwrite")
    assert killed.returncode == -signal.SIGKILL
    aside = model / REPLACED
    assert {p: b for p, b in snapshot(aside).items()} == {p: b for p, b in before.items()
                                                          if p.split("/")[0] in RUN_FILES}
    code, _, err = run_in_process("translate", "-m", str(model), stdin="alpha\n")
    assert_one_line_error(code, err, "replacement of this run was interrupted", REPLACED)
    code, _, err = run_in_process(*args, "--max-steps", "2", "--save-every", "2")  # the old run's own command
    assert code == 0, err
    after = snapshot(model)
    assert not aside.exists()
    for kept in ("config.toml", "tokenizer/spm.model", "checkpoints/step_00000002.pt"):
        assert after[kept] == before[kept]


@pytest.mark.slow
def test_an_overwrite_killed_before_its_first_checkpoint_keeps_the_old_run(tmp_path, corpus, reverse_with_tokenizer):
    """The old run's files wait aside until the new run has saved a checkpoint: a SIGKILL at the
    new run's first update (set up, nothing saved) leaves them, and the next train restores them."""
    tok, model = reverse_with_tokenizer["tokenizer"], tmp_path / "m"
    args = ["train", "-o", str(model), "--src", str(corpus["src"]), "--tgt", str(corpus["tgt"]), "--tokenizer", str(tok),
            "--preset", "tiny", "--max-tokens", "256", "--warmup", "10", "--quiet", "--valid-every", "0"]
    assert run_in_process(*args, "--max-steps", "2", "--save-every", "2")[0] == 0
    before = snapshot(model)
    killed = _run_script("""
        import os, signal, sys
        import mtkit.training.update as U
        def die(*args, **kwargs):  # SIGKILL at the new run's first update: set up, nothing saved
            os.kill(os.getpid(), signal.SIGKILL)
        U.Updater.__call__ = die
        from mtkit.cli import main
        sys.argv = ["mtkit", *sys.argv[1:]]
        main()
        """, *args, "--max-steps", "2", "--set", "model.d_ff=96", "--overwrite")
    assert killed.returncode == -signal.SIGKILL
    assert (model / "config.toml").is_file()  # the new run had been set up
    aside = model / REPLACED
    assert snapshot(aside) == {p: b for p, b in before.items() if p.split("/")[0] in RUN_FILES}
    code, _, err = run_in_process(*args, "--max-steps", "2", "--save-every", "2")  # the old run's own command
    assert code == 0, err
    assert not aside.exists() and snapshot(model)["checkpoints/step_00000002.pt"] == before["checkpoints/step_00000002.pt"]
    code, _, err = run_in_process(*args, "--max-steps", "2", "--set", "model.d_ff=96", "--overwrite")
    assert code == 0, err  # replaced for good once the new run saved
    assert not aside.exists() and ckpt.load(model / "checkpoints" / "last.pt")["config"]["model"]["d_ff"] == 96


def test_average_writes_over_nothing_but_an_earlier_average(tmp_path, reverse_model):
    model = tmp_path / "m"
    shutil.copytree(reverse_model, model)
    corpus_copy = tmp_path / "train.de"
    corpus_copy.write_text("ein Satz\n")
    before = snapshot(model)
    refused = [
        (corpus_copy, "is not an averaged mtkit checkpoint"),
        (model / "config.toml", "is not an averaged mtkit checkpoint"),
        (model / "checkpoints" / "last.pt", "a training run's own checkpoint name"),
        (model / "checkpoints" / "best.pt", "a training run's own checkpoint name"),
        (model / "checkpoints" / "step_00099999.pt", "a training run's own checkpoint name"),
    ]
    for out, fragment in refused:
        code, _, err = run_in_process("average", "-m", str(model), "--last", "2", "-o", str(out))
        assert_one_line_error(code, err, fragment)
    assert corpus_copy.read_text() == "ein Satz\n" and snapshot(model) == before
    mine = tmp_path / "avg.pt"
    assert run_in_process("average", "-m", str(model), "--last", "2", "-o", str(mine))[0] == 0
    assert run_in_process("average", "-m", str(model), "--last", "3", "-o", str(mine))[0] == 0  # an average: replaced
    assert ckpt.load(mine)["averaged"] == [p.name for p in ckpt.step_checkpoints(model)[-3:]]


# ----------------------------------------------------------------------------- settings that would be lost
def test_resume_refuses_another_tokenizer_and_says_when_vocab_size_does_nothing(tmp_path, corpus, reverse_with_tokenizer):
    tok, model = reverse_with_tokenizer["tokenizer"], tmp_path / "m"
    assert train_tiny(model, corpus, tok, "--max-steps", "2", "--save-every", "2")[0] == 0
    other = tmp_path / "tok40"
    assert run_in_process("tokenizer", "train", "--src", str(corpus["src"]), "--tgt", str(corpus["tgt"]), "-o", str(other),
                          "--vocab-size", "40")[0] == 0
    code, _, err = train_tiny(model, corpus, other, "--max-steps", "4")
    assert_one_line_error(code, err, "other settings", "is not the run's tokenizer")
    code, _, err = run_in_process("train", "-o", str(model), "--src", str(corpus["src"]), "--tgt", str(corpus["tgt"]),
                                  "--preset", "tiny", "--max-tokens", "256", "--warmup", "10", "--quiet",
                                  "--valid-every", "0", "--vocab-size", "40", "--max-steps", "4")
    assert_one_line_error(code, err, "--vocab-size: 43 -> 40")
    code, _, err = train_tiny(model, corpus, tok, "--max-steps", "4", "--vocab-size", "500")
    assert code == 0 and "warning: --vocab-size 500 has no effect" in err, err


def test_a_run_that_never_saved_does_not_block_its_correction(tmp_path, corpus, reverse_with_tokenizer, monkeypatch):
    import mtkit.training.trainer as T
    from mtkit.errors import UserError

    tok, model = reverse_with_tokenizer["tokenizer"], tmp_path / "m"
    code, _, err = train_tiny(model, corpus, tok, "--max-steps", "2", "--max-tokens", "1")
    assert_one_line_error(code, err, "no batch fits --max-tokens 1")  # found in setup: nothing is left
    assert not model.exists()

    def fails_before_any_save(trainer):
        raise UserError("stopped before the first checkpoint")

    with monkeypatch.context() as m:
        m.setattr(T, "run", fails_before_any_save)
        code, _, err = train_tiny(model, corpus, tok, "--max-steps", "2", "--set", "model.d_ff=96")
        assert_one_line_error(code, err, "stopped before the first checkpoint")
    assert (model / "config.toml").is_file() and not (model / "checkpoints" / "last.pt").exists()
    (model / "NOTES.md").write_text("why it failed\n")
    code, _, err = train_tiny(model, corpus, tok, "--max-steps", "2")  # other settings: no --overwrite needed
    assert code == 0, err
    assert (model / "NOTES.md").read_text() == "why it failed\n"
    assert ckpt.load(model / "checkpoints" / "last.pt")["config"]["model"]["d_ff"] != 96


# ----------------------------------------------------------------------------- outputs and damaged inputs
def test_translate_writes_gzip_when_the_name_says_so(tmp_path, reverse_model, reverse_data):
    plain, packed = tmp_path / "out.txt", tmp_path / "out.txt.gz"
    for out in (plain, packed):
        code, _, err = run_in_process("translate", "-m", str(reverse_model), "-i", str(reverse_data["valid_src"]),
                                      "-o", str(out), "--greedy")
        assert code == 0, err
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    code, out, err = run_in_process("bleu", str(reverse_data["valid_tgt"]), "-i", str(packed))
    assert code == 0 and out.startswith("BLEU"), err


@pytest.mark.parametrize("damage", ["one", "all"])
def test_non_finite_weights_are_refused_at_load(tmp_path, reverse_model, damage):
    state = torch.load(reverse_model / "checkpoints" / "best.pt", weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point() and v.dim() == 2)
    for value in state["model"].values():
        if damage == "all" and value.is_floating_point():
            value.fill_(float("nan"))
    state["model"][name].view(-1)[3] = float("nan")
    bad = tmp_path / "nan.pt"
    ckpt.save(bad, state)
    code, _, err = run_in_process("translate", "-m", str(reverse_model), "--checkpoint", str(bad), stdin="alpha\n")
    assert_one_line_error(code, err, "nan.pt", "holds non-finite values")
    if damage == "one":
        assert f"weight {name} " in err


def test_damaged_files_of_a_run_are_named(tmp_path, corpus, reverse_with_tokenizer):
    tok, model = reverse_with_tokenizer["tokenizer"], tmp_path / "m"
    assert train_tiny(model, corpus, tok, "--max-steps", "2", "--save-every", "2")[0] == 0
    with open(model / "metrics.jsonl", "ab") as f:
        f.write(b'{"kind": "train", "step": 1, "loss": "\xff\xfe"}\n')
    code, _, err = train_tiny(model, corpus, tok, "--max-steps", "3", "--save-every", "3")
    assert code == 0 and "metrics.jsonl: 1 damaged line(s) dropped" in err, err
    manifest = model / "manifest.json"
    for damaged in (b"{", b"\xff\xfe", b"[1, 2]"):
        manifest.write_bytes(damaged)
        code, _, err = train_tiny(model, corpus, tok, "--max-steps", "4")
        assert_one_line_error(code, err, "manifest.json: damaged", "--reset-data")
        assert "another corpus" not in err


def test_a_damaged_converted_model_is_named(tmp_path, reverse_model):
    pytest.importorskip("ctranslate2", reason="CTranslate2 is optional (pip install 'mtkit[ct2]')")
    out = tmp_path / "ct2"
    assert run_in_process("convert", "-m", str(reverse_model), "-o", str(out))[0] == 0
    for damaged in (b"{", b"\xff", b'{"format": "ctranslate2"}', b"[]"):
        (out / "mtkit.json").write_bytes(damaged)
        code, _, err = run_in_process("translate", "-m", str(out), stdin="alpha\n")
        assert_one_line_error(code, err, "mtkit.json: damaged", "mtkit convert")


def test_inputs_that_are_directories_are_called_directories(tmp_path, reverse_model, corpus):
    folder = tmp_path / "folder"
    folder.mkdir()
    cases = [
        ("train", "-o", str(tmp_path / "m"), "--src", str(folder), "--tgt", str(corpus["tgt"]), "--preset", "tiny"),
        ("translate", "-m", str(reverse_model), "-i", str(folder)),
        ("tokenizer", "train", "--src", str(folder), "--tgt", str(corpus["tgt"]), "-o", str(tmp_path / "tok")),
        ("bleu", str(folder), "-i", str(corpus["tgt"])),
    ]
    for args in cases:
        code, _, err = run_in_process(*args)
        assert_one_line_error(code, err, f"{folder}: is a directory")


def test_scoring_empty_files_against_sacrebleu_is_one_line(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for command in ("bleu", "score"):
        code, _, err = run_in_process(command, str(empty), "-i", str(empty), "--sacrebleu")
        assert_one_line_error(code, err, "no lines to score")


def test_a_huge_bootstrap_is_refused_before_any_work(tmp_path):
    ref = tmp_path / "ref"
    ref.write_text("a b c\n" * 1000)
    start = time.monotonic()
    for n, fragment in (("1000000000", "--paired-bs-n must be between 1 and 100,000"),
                        ("100000", "use at most 50,000 samples")):
        code, _, err = run_in_process("bleu", str(ref), "-i", str(ref), str(ref), "--paired-bs", "--paired-bs-n", n)
        assert_one_line_error(code, err, fragment)
    assert time.monotonic() - start < 10


def test_attention_on_a_very_long_sentence_is_cut_and_says_so(reverse_model):
    sentence = " ".join(["alpha bravo charlie"] * 500)
    start = time.monotonic()
    code, out, err = run_in_process("attention", sentence, "-m", str(reverse_model), "--max-src-pieces", "20")
    assert code == 0, err
    assert "only its first 20 were translated" in err
    assert time.monotonic() - start < 60


def test_converted_directories_honour_the_umask(tmp_path, reverse_model):
    pytest.importorskip("ctranslate2", reason="CTranslate2 is optional (pip install 'mtkit[ct2]')")
    old = os.umask(0o022)
    try:
        assert run_in_process("convert", "-m", str(reverse_model), "-o", str(tmp_path / "ct2"))[0] == 0
    finally:
        os.umask(old)
    for directory in (tmp_path / "ct2", tmp_path / "ct2" / "tokenizer"):
        assert directory.stat().st_mode & 0o777 == 0o755, directory


# ----------------------------------------------------------------------------- leftovers of killed commands
def test_leftovers_of_killed_commands_are_removed_by_the_next_run(tmp_path, reverse_model, corpus):
    dead, alive = _dead_pid(), os.getpid()
    tok = tmp_path / "tok"
    stale_dir = tmp_path / f".tok.{dead}-0badcafe.tmp"
    stale_dir.mkdir()
    (stale_dir / "spm.model").write_bytes(b"half")
    busy = tmp_path / f".tok.{alive}-0000beef.tmp"  # a live process's: left alone
    busy.mkdir()
    hyp = tmp_path / "hyp.txt"
    stale_file = tmp_path / f".hyp.txt.{dead}-deadbeef.tmp"
    stale_file.write_text("half a translation")
    mine = [tmp_path / ".hyp.txt.backup.tmp", tmp_path / ".tok.notes.tmp"]  # a user's own hidden files
    for path in mine:
        path.write_text("keep")
    assert run_in_process("tokenizer", "train", "--src", str(corpus["src"]), "--tgt", str(corpus["tgt"]),
                          "-o", str(tok), "--vocab-size", "40")[0] == 0
    assert run_in_process("translate", "-m", str(reverse_model), "-o", str(hyp), stdin="alpha\n")[0] == 0
    assert not stale_dir.exists() and not stale_file.exists() and busy.exists()
    assert all(path.read_text() == "keep" for path in mine)


@pytest.mark.slow
def test_sigterm_stops_translate_with_143_and_leaves_nothing(tmp_path, reverse_model):
    big = tmp_path / "big.txt"
    big.write_text("alpha bravo charlie delta echo foxtrot\n" * 50_000)
    out = tmp_path / "out.txt"
    proc = subprocess.Popen([sys.executable, "-m", "mtkit", "translate", "-m", str(reverse_model), "-i", str(big),
                             "-o", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.txt.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert len(err.strip().splitlines()) == 1 and "interrupted by SIGTERM" in err, err
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_sigterm_during_setup_and_a_second_one_in_training_exit_143(tmp_path, corpus, reverse_with_tokenizer,
                                                                     monkeypatch):
    import mtkit.training.trainer as T

    tok = reverse_with_tokenizer["tokenizer"]
    real_transformer, real_save = T.Transformer, T.Trainer.save

    def term_during_setup(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return real_transformer(*args, **kwargs)

    monkeypatch.setattr(T, "Transformer", term_during_setup)
    code, _, err = train_tiny(tmp_path / "a", corpus, tok, "--max-steps", "2")
    assert code == 128 + signal.SIGTERM and "interrupted by SIGTERM" in err and err.count("\n") == 1, err
    assert not (tmp_path / "a").exists()  # it made the directory, so it removed it
    monkeypatch.setattr(T, "Transformer", real_transformer)

    def term_twice(self):
        os.kill(os.getpid(), signal.SIGTERM)  # the first asks the loop to save and stop
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # the second stops at once
        time.sleep(5)
        real_save(self)

    monkeypatch.setattr(T.Trainer, "save", term_twice)
    code, _, err = train_tiny(tmp_path / "b", corpus, tok, "--max-steps", "10", "--save-every", "2")
    assert code == 128 + signal.SIGTERM and "interrupted by SIGTERM" in err, err


# ----------------------------------------------------------------------------- a full standard output
@pytest.mark.slow
def test_a_full_standard_output_is_one_line(tmp_path, reverse_model, reverse_data):
    src, ref = reverse_data["valid_src"], reverse_data["valid_tgt"]
    commands = [
        ["tokenizer", "encode", "-m", str(reverse_model)],
        ["translate", "-m", str(reverse_model), "-i", str(src)],
        ["score", str(ref), "-i", str(ref)],
        ["bleu", str(ref), "-i", str(ref), "--format", "json"],
    ]
    try:
        import ctranslate2  # noqa: F401

        converted = tmp_path / "ct2"
        assert run_in_process("convert", "-m", str(reverse_model), "-o", str(converted))[0] == 0
        commands.append(["translate", "-m", str(converted), "-i", str(src)])
    except ImportError:
        pass
    for args in commands:
        with open("/dev/full", "w") as full, open(src, "rb") as stdin:
            done = subprocess.run([sys.executable, "-m", "mtkit", *args], stdin=stdin, stdout=full,
                                  stderr=subprocess.PIPE, text=True, timeout=120)
        assert_one_line_error(done.returncode, done.stderr, "standard output: cannot write (No space left on device)")


# ----------------------------------------------------------------------------- a full disk
@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_directory_and_damages_nothing(small_disk, corpus, reverse_with_tokenizer,
                                                                          reverse_model):
    tok = reverse_with_tokenizer["tokenizer"]
    model = small_disk / "m"
    assert train_tiny(model, corpus, tok, "--max-steps", "2", "--save-every", "2")[0] == 0
    last = (model / "checkpoints" / "last.pt").read_bytes()
    failures = 0
    for leave in (0, 4 << 10, 64 << 10, 256 << 10):  # the disk fills at a different write each time
        _fill(small_disk, leave)
        code, _, err = train_tiny(model, corpus, tok, "--max-steps", "4", "--save-every", "4")
        failures += _assert_disk_full_or_done(code, err, model)
        assert ckpt.load(model / "checkpoints" / "last.pt")  # whole: the old one, or the new one
        if code != 0:
            assert (model / "checkpoints" / "last.pt").read_bytes() == last  # resumable as it was
        last = (model / "checkpoints" / "last.pt").read_bytes()
        code, _, err = run_in_process("average", "-m", str(reverse_model), "--last", "2", "-o", str(small_disk / "a.pt"))
        failures += _assert_disk_full_or_done(code, err, small_disk)
        code, _, err = run_in_process("tokenizer", "train", "--src", str(corpus["src"]), "--tgt", str(corpus["tgt"]),
                                      "-o", str(small_disk / f"tok{leave}"), "--vocab-size", "40")
        failures += _assert_disk_full_or_done(code, err, small_disk)
        code, _, err = train_tiny(small_disk / f"fresh{leave}", corpus, tok, "--max-steps", "1")
        failures += _assert_disk_full_or_done(code, err, small_disk)
        code, err = _prepare(corpus, tok, small_disk / f"cache{leave}")
        if _assert_disk_full_or_done(code, err, small_disk / f"cache{leave}"):
            failures += 1
            assert str(corpus["src"]) not in err  # the cache that could not be written is named, not the corpus
        for filler in small_disk.glob("filler*"):
            filler.unlink()
    assert failures >= 10
    assert not list(small_disk.rglob(".*.tmp"))
