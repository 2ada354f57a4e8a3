"""Nothing lost, nothing hangs: data safety, leftovers, locking, resumption on changed data, and
one line with exit status 2 for every expected mistake (tables per command, then fuzzing)."""

import errno
import fcntl
import gzip
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch
from helpers import TINY, assert_one_line_error, run_in_process, train_tiny, tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtkit import files
from mtkit.data.batching import BatchIterator
from mtkit.errors import Interrupted
from mtkit.model import checkpoint as ckpt
from mtkit.runtime import stop_on_signals
from mtkit.training.metrics_log import read as read_metrics

_train, _tree = train_tiny, tree


# ----------------------------------------------------------------------------- data loss
def test_tokenizer_train_refuses_a_foreign_directory_and_the_working_directory(tmp_path, corpus):
    foreign = tmp_path / "foreign"
    (foreign / "sub").mkdir(parents=True)
    (foreign / "mine.txt").write_text("keep")
    before = _tree(foreign)
    code, _, err = run_in_process("tokenizer", "train", "--src", str(corpus["src"]), "--tgt", str(corpus["tgt"]),
                                  "-o", str(foreign), "--vocab-size", "40")
    assert_one_line_error(code, err, "not an mtkit tokenizer directory")
    assert _tree(foreign) == before and (foreign / "mine.txt").read_text() == "keep"
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.txt").write_text("keep")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        code, _, err = run_in_process("tokenizer", "train", "--src", str(corpus["src"]), "--tgt", str(corpus["tgt"]),
                                      "-o", ".", "--vocab-size", "40")
    finally:
        os.chdir(cwd)
    assert_one_line_error(code, err)
    assert os.listdir(work) == ["a.txt"]


def test_tokenizer_retraining_replaces_only_its_own_files(tmp_path, corpus):
    out = tmp_path / "tok"
    args = ["tokenizer", "train", "--src", str(corpus["src"]), "--tgt", str(corpus["tgt"]), "-o", str(out)]
    assert run_in_process(*args, "--vocab-size", "40")[0] == 0
    (out / "NOTES.md").write_text("mine")
    code, _, err = run_in_process(*args, "--vocab-size", "41", "--separate")
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["NOTES.md", "src.model", "tgt.model", "tokenizer.json"]
    assert json.loads((out / "tokenizer.json").read_text())["src_vocab_size"] == 41
    code, _, err = run_in_process(*args, "--vocab-size", "8")  # fails: the old tokenizer is left whole
    assert_one_line_error(code, err, "--vocab-size 8 is too small")
    assert json.loads((out / "tokenizer.json").read_text())["src_vocab_size"] == 41


def test_overwrite_validates_first_and_deletes_last(tmp_path, corpus, reverse_with_tokenizer):
    tok, model = reverse_with_tokenizer["tokenizer"], tmp_path / "m"
    assert _train(model, corpus, tok, "--max-steps", "4", "--save-every", "2")[0] == 0
    before = _tree(model)
    code, _, err = _train(model, corpus, tok, "--max-steps", "4", "--overwrite", tgt="short_tgt")
    assert_one_line_error(code, err, "not parallel")
    assert _tree(model) == before
    code, _, err = _train(model, corpus, tok, "--max-steps", "3", "--save-every", "3", "--overwrite")
    assert code == 0, err
    assert [p.name for p in ckpt.step_checkpoints(model)] == ["step_00000003.pt"]
    assert not list(model.glob(files.TEMP_GLOB))


def test_overwrite_refuses_a_directory_that_is_not_a_model(tmp_path, corpus, reverse_with_tokenizer):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"\xff\xd8")
    code, _, err = _train(foreign, corpus, reverse_with_tokenizer["tokenizer"], "--max-steps", "2", "--overwrite")
    assert_one_line_error(code, err, "not an mtkit model directory")
    assert os.listdir(foreign) == ["holiday.jpg"]


def test_failed_setup_of_an_overwrite_restores_the_old_run(tmp_path, corpus, reverse_with_tokenizer, monkeypatch):
    import mtkit.training.trainer as T

    tok, model = reverse_with_tokenizer["tokenizer"], tmp_path / "m"
    assert _train(model, corpus, tok, "--max-steps", "2", "--save-every", "2")[0] == 0
    before = {p: (model / p).read_bytes() for p in _tree(model) if (model / p).is_file() and p != ".lock"}

    def broken(*args, **kwargs):
        raise RuntimeError("setup failed")

    monkeypatch.setattr(T, "Transformer", broken)  # fails after the tokenizer, config and corpus cache
    with pytest.raises(RuntimeError, match="setup failed"):
        _train(model, corpus, tok, "--max-steps", "2", "--set", "model.d_ff=96", "--overwrite")
    after = {p: (model / p).read_bytes() for p in _tree(model) if (model / p).is_file() and p != ".lock"}
    assert after == before


def test_translate_output_is_written_whole_or_not_at_all(tmp_path, reverse_model):
    keep = tmp_path / "keep.txt"
    keep.write_text("old\n")
    code, _, err = run_in_process("translate", "-m", str(reverse_model), "-i", str(tmp_path / "nosuch"), "-o", str(keep))
    assert_one_line_error(code, err, "no such file")
    half_bad = tmp_path / "half.txt"
    half_bad.write_bytes(b"alpha bravo\n" * 2500 + b"\xff\n")  # fails after the first chunk of 2,000 lines
    code, _, err = run_in_process("translate", "-m", str(reverse_model), "-i", str(half_bad), "-o", str(keep), "--greedy")
    assert_one_line_error(code, err, "half.txt:2501: invalid UTF-8")
    assert keep.read_text() == "old\n" and not list(tmp_path.glob(files.TEMP_GLOB))
    same = tmp_path / "same.txt"
    same.write_text("alpha bravo\n")
    code, _, err = run_in_process("translate", "-m", str(reverse_model), "-i", str(same), "-o", str(same))
    assert_one_line_error(code, err, "is the input file")
    assert same.read_text() == "alpha bravo\n"


# ----------------------------------------------------------------------------- hangs
def test_resuming_on_another_corpus_is_refused_unless_reset(tmp_path, corpus, reverse_with_tokenizer):
    tok, model = reverse_with_tokenizer["tokenizer"], tmp_path / "m"
    assert _train(model, corpus, tok, "--max-steps", "30", "--save-every", "30")[0] == 0
    code, _, err = _train(model, corpus, tok, "--max-steps", "40", src="short_src", tgt="short_tgt")
    assert_one_line_error(code, err, "another corpus", "--reset-data")
    code, _, err = _train(model, corpus, tok, "--max-steps", "40", "--reset-data", src="short_src", tgt="short_tgt")
    assert code == 0, err
    assert torch.load(model / "checkpoints" / "last.pt", weights_only=True)["step"] == 40


def test_a_saved_position_past_the_epoch_end_moves_on(reverse_data, tmp_path):
    from helpers import prepare_source

    from mtkit.config import DataConfig
    from mtkit.data.sources import TextPair
    from mtkit.data.tokenizer import Tokenizer, TokenizerOptions, train_tokenizer

    train_tokenizer([reverse_data["valid_src"]], [reverse_data["valid_tgt"]], tmp_path / "tok", TokenizerOptions(40))
    corpus = prepare_source(TextPair(reverse_data["valid_src"], reverse_data["valid_tgt"]),
                            Tokenizer.load(tmp_path / "tok"), DataConfig(), tmp_path / "cache")
    it = BatchIterator(corpus, 256, seed=1)
    n_batches = len(it.epoch_batches(1))
    it.load_state({"epoch": 1, "index": n_batches + 50})  # e.g. a position saved on a larger corpus
    first = next(iter(it))
    assert it.state() == {"epoch": 2, "index": 1} and len(first.indices) > 0


def test_a_second_signal_always_stops():
    with stop_on_signals() as flag:
        with pytest.raises(Interrupted):  # during setup: at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        flag.armed = True
        os.kill(os.getpid(), signal.SIGTERM)  # the first asks the loop to save and stop
        time.sleep(0.05)
        assert flag.signal == signal.SIGTERM
        with pytest.raises(Interrupted):  # the second does not wait for the loop
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)


def test_bleu_refuses_a_meaningless_ngram_order(tmp_path):
    ref = tmp_path / "ref"
    ref.write_text("a b c\n")
    start = time.monotonic()
    code, _, err = run_in_process("bleu", str(ref), "-i", str(ref), "--max-ngram-order", "1000000000")
    assert_one_line_error(code, err, "--max-ngram-order must be between 1 and 10")
    assert time.monotonic() - start < 5


# ----------------------------------------------------------------------------- leftovers, locks, durability
def test_leftovers_of_a_killed_run_are_removed_and_never_block_a_rerun(tmp_path, corpus, reverse_with_tokenizer):
    tok, model = reverse_with_tokenizer["tokenizer"], tmp_path / "m"
    (model / ".tokenizer.0badcafe.tmp").mkdir(parents=True)  # a kill during setup
    assert _train(model, corpus, tok, "--max-steps", "2", "--save-every", "2")[0] == 0
    orphan = model / "checkpoints" / ".last.pt.deadbeef.tmp"  # a kill during a save
    orphan.write_bytes(b"x" * 1000)
    (model / "cache" / ".abc.1234abcd.tmp").mkdir()  # a kill while encoding the corpus
    code, _, err = _train(model, corpus, tok, "--max-steps", "4", "--save-every", "2")
    assert code == 0, err
    assert not orphan.exists() and not list(model.rglob(".*.tmp"))


def test_a_model_directory_in_use_is_locked_and_a_stale_lock_is_taken_over(tmp_path, corpus, reverse_with_tokenizer):
    tok, model = reverse_with_tokenizer["tokenizer"], tmp_path / "m"
    model.mkdir()
    (model / ".lock").write_text("999999\n")  # left by a dead process: no flock is held
    assert _train(model, corpus, tok, "--max-steps", "2", "--save-every", "2")[0] == 0
    fd = os.open(model / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        code, _, err = _train(model, corpus, tok, "--max-steps", "4")
        assert_one_line_error(code, err, f"locked by PID {os.getpid()}")
    finally:
        os.close(fd)
    assert torch.load(model / "checkpoints" / "last.pt", weights_only=True)["step"] == 2


@pytest.mark.slow
def test_two_trainings_on_one_directory_do_not_both_run(tmp_path, corpus, reverse_with_tokenizer):
    tok, model = reverse_with_tokenizer["tokenizer"], tmp_path / "m"
    cmd = [sys.executable, "-m", "mtkit", "train", "-o", str(model), "--src", str(corpus["src"]), "--tgt",
           str(corpus["tgt"]), "--tokenizer", str(tok), *TINY, "--max-steps", "100000"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (model / "checkpoints").exists() and not (model / "metrics.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        while not (model / "config.toml").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert_one_line_error(second.returncode, second.stderr, f"locked by PID {first.pid}")
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM


def test_metrics_of_a_resumed_run_read_as_one_run(tmp_path, corpus, reverse_with_tokenizer):
    tok, model = reverse_with_tokenizer["tokenizer"], tmp_path / "m"
    log = ["--set", "train.log_every=5", "--save-every", "10"]
    assert _train(model, corpus, tok, "--max-steps", "20", *log)[0] == 0
    with open(model / "metrics.jsonl", "a") as f:  # as if killed after logging step 25, saved at 20
        f.write(json.dumps({"kind": "train", "step": 25}) + "\n" + '{"kind": "tra')
    assert _train(model, corpus, tok, "--max-steps", "30", *log)[0] == 0
    events = read_metrics(model / "metrics.jsonl")
    train_steps = [e["step"] for e in events if e["kind"] == "train"]
    assert train_steps == [5, 10, 15, 20, 25, 30] and [e["kind"] for e in events].count("done") == 1


def test_writes_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    ckpt.save(tmp_path / "last.pt", {"model": {"w": torch.ones(2)}, "config": {}})
    assert synced[0].endswith(".tmp") and synced[1] == str(tmp_path)  # the file, then its directory


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_honour_the_umask(tmp_path, corpus, umask):
    old = os.umask(umask)
    try:
        ckpt.save(tmp_path / "c.pt", {"model": {}, "config": {}})
        files.write_text_atomic(tmp_path / "t.txt", "x")
        code, _, err = run_in_process("tokenizer", "train", "--src", str(corpus["src"]), "--tgt", str(corpus["tgt"]),
                                      "-o", str(tmp_path / "tok"), "--vocab-size", "40")
        assert code == 0, err
    finally:
        os.umask(old)
    for path in (tmp_path / "c.pt", tmp_path / "t.txt", tmp_path / "tok" / "spm.model"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert stat.S_IMODE((tmp_path / "tok").stat().st_mode) == 0o777 & ~umask


def test_checkpoints_hold_cpu_tensors_only(reverse_model):
    state = torch.load(reverse_model / "checkpoints" / "last.pt", weights_only=True)

    def devices(obj):
        if isinstance(obj, torch.Tensor):
            yield obj.device.type
        elif isinstance(obj, dict | list | tuple):
            for v in obj.values() if isinstance(obj, dict) else obj:
                yield from devices(v)

    assert set(devices(state)) == {"cpu"}


# ----------------------------------------------------------------------------- one line, exit 2
BLEU_CASES = [
    (["-w", "-1"], "--width"),
    (["--max-ngram-order", "0"], "--max-ngram-order"),
    (["--smooth-method", "floor", "--smooth-value", "-1"], "--smooth-value"),
    (["--smooth-method", "bogus"], "--smooth-method"),
    (["--tokenize", "bogus"], "--tokenize"),
    (["--format", "xml"], "--format"),
    (["--paired-bs", "--paired-bs-n", "0"], "--paired-bs-n"),
    (["--paired-bs", "--paired-bs-n", "1000000000"], "--paired-bs-n must be between 1 and 100,000"),
    (["--paired-bs"], "needs a baseline"),
    (["--bogus"], "unknown option"),
]


@pytest.mark.parametrize("args, fragment", BLEU_CASES, ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_bleu_bad_options(tmp_path, args, fragment):
    ref = tmp_path / "ref"
    ref.write_text("a b c\n")
    code, _, err = run_in_process("bleu", str(ref), "-i", str(ref), *args)
    assert_one_line_error(code, err, fragment)


def test_bleu_bad_inputs(tmp_path):
    ref, bad, gz = tmp_path / "ref", tmp_path / "bad", tmp_path / "t.gz"
    ref.write_text("a b c\n")
    bad.write_bytes(b"\xff\n")
    gz.write_bytes(gzip.compress(b"a b c\n")[:-4])
    assert_one_line_error(*run_in_process("bleu", str(ref), stdin=None)[::2], "standard input is closed")
    assert_one_line_error(*run_in_process("bleu", str(ref), "-i", str(bad))[::2], "bad:1: invalid UTF-8")
    assert_one_line_error(*run_in_process("bleu", str(ref), "-i", str(gz))[::2], "t.gz")
    assert_one_line_error(*run_in_process("bleu", str(ref), "-i", str(tmp_path))[::2], "is a directory")


@pytest.mark.slow
def test_closed_stdout_and_closed_pipe(tmp_path, reverse_model):
    ref = tmp_path / "ref"
    ref.write_text("a b c\n" * 10)
    closed = subprocess.run(f"{sys.executable} -m mtkit bleu {ref} -i {ref} >&-", shell=True, capture_output=True, text=True)
    assert_one_line_error(closed.returncode, closed.stderr, "standard output is closed")
    piped = subprocess.run(f"{sys.executable} -m mtkit bleu {ref} -i {ref} {ref} {ref} | head -1; exit ${{PIPESTATUS[0]}}",
                           shell=True, executable="/bin/bash", capture_output=True, text=True)
    assert piped.returncode == 0 and piped.stderr == "" and len(piped.stdout.splitlines()) == 1


def test_tokenizer_bad_inputs(tmp_path, reverse_model, corpus):
    tok = tmp_path / "tok"
    assert run_in_process("tokenizer", "train", "--src", str(corpus["src"]), "--tgt", str(corpus["tgt"]),
                          "-o", str(tok), "--vocab-size", "40")[0] == 0
    code, out, err = run_in_process("tokenizer", "decode", "-m", str(tok), stdin="--5\n²\n")
    assert code == 0, err  # not ids, so decoded as pieces
    assert_one_line_error(*run_in_process("tokenizer", "decode", "-m", str(tok), stdin="99999\n")[::2], "outside the vocabulary")
    assert_one_line_error(*run_in_process("tokenizer", "encode", "-m", str(tok), "--side", "bogus", stdin="a\n")[::2], "--side")
    assert_one_line_error(*run_in_process("tokenizer", "encode", "-m", str(tmp_path / "nope"), stdin="a\n")[::2], "no such")
    (tok / "spm.model").write_bytes(b"garbage")
    assert_one_line_error(*run_in_process("tokenizer", "encode", "-m", str(tok), stdin="a\n")[::2], "spm.model")
    (tok / "tokenizer.json").write_text("{")
    assert_one_line_error(*run_in_process("tokenizer", "encode", "-m", str(tok), stdin="a\n")[::2], "tokenizer.json")
    for vocab, fragment in (("8", "is too small"), ("100000", "is too large")):
        code, _, err = run_in_process("tokenizer", "train", "--src", str(corpus["src"]), "--tgt", str(corpus["tgt"]),
                                      "-o", str(tmp_path / f"v{vocab}"), "--vocab-size", vocab)
        assert_one_line_error(code, err, f"--vocab-size {vocab} {fragment}")
    for tag, fragment in (("<s>", "reserved"), ("<0x41>", "reserved"), ("<BT> x", "without spaces"),
                          ("a", "plain word would replace every 'a'"), ("2", "plain word")):
        code, _, err = run_in_process("tokenizer", "train", "--src", str(corpus["src"]), "--tgt", str(corpus["tgt"]),
                                      "-o", str(tmp_path / "tagged"), "--vocab-size", "40", "--tag", tag)
        assert_one_line_error(code, err, f"--tag {tag!r}", fragment)
        assert not (tmp_path / "tagged").exists()


TRAIN_CASES = [
    (["--set", "train.lr=nan"], "--set train.lr must be a finite number"),
    (["--set", "train.log_every=0"], "--set train.log_every must be positive"),
    (["--set", "train.threads=-1"], "--set train.threads must be >= 0"),
    (["--set", "train.betas=2,2"], "--set train.betas must both be in [0, 1)"),
    (["--set", "model.max_positions=1"], "--set model.max_positions must be at least 2"),
    (["--set", "train.max_time=nan"], "--set train.max_time must be a finite number"),
    (["--set", "data.max_ratio=nan"], "--set data.max_ratio must be a finite number"),
    (["--clip-norm", "-1"], "--clip-norm must be >= 0"),
    (["--weight-decay", "-0.1"], "--weight-decay must be >= 0"),
    (["--device", "bogus"], "--device 'bogus' is not a device"),
    (["--precision", "bogus"], "--precision: invalid value 'bogus'"),
    (["--preset", "huge"], "--preset 'huge' is unknown"),
    (["--set", "nonsense"], "expected key=value"),
    (["--set", "train.nope=1"], "unknown setting train.nope"),
    (["--set", "model.d_model=100000", "--set", "model.n_heads=1", "--set", "model.d_ff=100000"], "training state needs"),
    (["--set", "train.betas=0.9"], "expected 2 comma-separated values, got 1"),
]


@pytest.mark.parametrize("args, fragment", TRAIN_CASES, ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_train_bad_settings(tmp_path, corpus, reverse_with_tokenizer, args, fragment):
    code, _, err = _train(tmp_path / "m", corpus, reverse_with_tokenizer["tokenizer"], "--max-steps", "2", *args)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "m").exists()


def test_train_bad_files(tmp_path, corpus):
    assert_one_line_error(*run_in_process("train", "-o", str(tmp_path / "m"), "--config", str(tmp_path))[::2], "is a directory")
    bad = tmp_path / "bad.de"
    bad.write_bytes(corpus["tgt"].read_bytes()[:-40] + b"\xff\xfe\n")
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m"), "--src", str(corpus["src"]), "--tgt", str(bad),
                                  *TINY, "--max-steps", "2")  # no --tokenizer: the check comes before training one
    assert_one_line_error(code, err, "bad.de:", "invalid UTF-8")
    assert not (tmp_path / "m").exists()


def test_translate_and_average_bad_inputs(tmp_path, reverse_model, corpus):
    m = str(reverse_model)
    cases = [
        (["--device", "bogus"], "--device"), (["--precision", "bogus"], "--precision"),
        (["--max-len-a", "-5"], "--max-len-a must be >= 0"), (["--length-penalty", "nan"], "--length-penalty"),
        (["--beam", "0"], "--beam must be positive"), (["--nbest", "6", "--beam", "5"], "--nbest (6)"),
        (["-o", str(tmp_path)], "is a directory"), (["-o", str(tmp_path / "no" / "x.txt")], "no such directory"),
        (["--checkpoint", str(tmp_path / "none.pt")], "no such checkpoint"),
        (["--sampling", "--seed", str(2**64)], "--seed must be below 2**64"),
        (["-m", str(tmp_path / "nope")], "no such directory"),
    ]
    for args, fragment in cases:
        assert_one_line_error(*run_in_process("translate", "-m", m, *args, stdin="alpha\n")[::2], fragment)
    if os.path.exists("/dev/full"):
        assert_one_line_error(*run_in_process("translate", "-m", m, "-o", "/dev/full", stdin="alpha\n")[::2], "No space")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert_one_line_error(*run_in_process("translate", "-m", m, "--checkpoint", str(empty), stdin="a\n")[::2], "empty.pt")
    other = torch.load(reverse_model / "checkpoints" / "last.pt", weights_only=True)
    other["model"] = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) if k.endswith("tokens.weight") else v
                      for k, v in other["model"].items()}
    ckpt.save(tmp_path / "other.pt", other)
    assert_one_line_error(*run_in_process("translate", "-m", m, "--checkpoint", str(tmp_path / "other.pt"),
                                          stdin="a\n")[::2], "do not fit this model")
    assert_one_line_error(*run_in_process("average", "-m", str(tmp_path / "nosuch"), "--last", "2")[::2], "no such model directory")
    assert_one_line_error(*run_in_process("average", "-m", m, "--last", "2", "-o", str(tmp_path))[::2], "is a directory")


def test_under_torchrun_what_every_rank_finds_is_said_once(tmp_path, reverse_model, corpus, monkeypatch):
    """A mistake every process of a torchrun finds alike (here a missing output directory) is said
    by rank 0 alone; the others exit 2 without a word."""
    args = ["translate", "-m", str(reverse_model), "-i", str(corpus["src"]), "-o", str(tmp_path / "missing" / "x.de")]
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, lines in (("0", 1), ("1", 0)):
        monkeypatch.setenv("RANK", rank)
        code, _, err = run_in_process(*args)
        assert code == 2 and len(err.strip().splitlines()) == lines and "Traceback" not in err, (rank, err)
    assert not (tmp_path / "missing").exists()


def test_sampling_options_without_sampling_are_warned_about(reverse_model):
    code, out, err = run_in_process("translate", "-m", str(reverse_model), "--topk", "5", "--temperature", "0.5",
                                    stdin="alpha bravo\n")
    assert code == 0 and out.count("\n") == 1
    assert "--topk, --temperature only apply with --sampling: ignored" in err, err


def test_translate_shows_its_progress_and_a_summary_on_stderr(tmp_path, reverse_model, corpus):
    out = tmp_path / "out.txt"
    code, stdout, err = run_in_process("translate", "-m", str(reverse_model), "-i", str(corpus["short_src"]),
                                       "-o", str(out), "--greedy")
    assert code == 0 and stdout == ""
    assert re.search(r"translated 200 lines \([\d,]+ target tokens\) in [\d.]+ s: [\d,.]+ lines/s", err), err
    code, stdout, err = run_in_process("translate", "-m", str(reverse_model), "-i", str(corpus["short_src"]),
                                       "--greedy", "--quiet")
    assert code == 0 and err == "" and stdout.count("\n") == 200


def test_progress_lines_say_how_much_is_done_and_how_long_is_left(capsys):
    from mtkit.cli import render

    with render.WorkProgress("translating", "sentences", total=400, every=0) as progress:
        progress.update(100)
    line = capsys.readouterr().err
    assert "translating: 100 of 400 sentences (25%)" in line and "sentences/s, eta" in line, line
    shown = render.PrepareProgress(render.stderr_console(), every=0)
    shown.show("news", 10)
    shown.show("news", 5000, 0.5)
    assert re.search(r"preparing news: 5,000 pairs read \(50% of its text, eta \d+:\d\d:\d\d\)", capsys.readouterr().err)


def test_translate_split_sentences_translates_each_sentence_of_a_line(tmp_path, reverse_model):
    sentences = ["alpha bravo charlie.", "delta echo!", "foxtrot golf?"]
    code, each, err = run_in_process("translate", "-m", str(reverse_model), "--greedy",
                                     stdin="".join(s + "\n" for s in sentences))
    assert code == 0, err
    code, joined, err = run_in_process("translate", "-m", str(reverse_model), "--greedy", "--split-sentences",
                                       stdin=" ".join(sentences[:2]) + "  " + sentences[2] + "\n\nalpha\n")
    assert code == 0, err
    e = each.splitlines()
    assert joined.splitlines() == [f"{e[0]} {e[1]}  {e[2]}", "", run_in_process(
        "translate", "-m", str(reverse_model), "--greedy", stdin="alpha\n")[1].strip()]
    code, _, err = run_in_process("translate", "-m", str(reverse_model), "--split-sentences", "--sampling",
                                  stdin="alpha. bravo.\n")
    assert_one_line_error(code, err, "--split-sentences", "--sampling")


def test_a_hub_corpus_without_a_network_fails_at_once(monkeypatch):
    """datasets retries an unreachable hub for ~30 s, a dozen lines of retries: mtkit tries the
    host first (here a closed port) and says so in one line."""
    import time

    from mtkit.data.sources import HubCorpus
    from mtkit.errors import UserError

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(UserError, match="the hub cannot be reached .*127.0.0.1.* not in the local cache"):
        HubCorpus("nobody/no-such-corpus", None, "train", "translation.en", "translation.de").load()
    assert time.monotonic() - started < 10


def test_averaging_checkpoints_of_different_models_is_refused(tmp_path, reverse_model):
    model = tmp_path / "m"
    (model / "checkpoints").mkdir(parents=True)
    last = torch.load(reverse_model / "checkpoints" / "last.pt", weights_only=True)
    ckpt.save(model / "checkpoints" / "step_00000001.pt", {"config": last["config"], "step": 1, "model": last["model"]})
    bigger = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) if v.dim() else v for k, v in last["model"].items()}
    ckpt.save(model / "checkpoints" / "step_00000002.pt", {"config": last["config"], "step": 2, "model": bigger})
    assert_one_line_error(*run_in_process("average", "-m", str(model), "--last", "2")[::2], "another model")


# ----------------------------------------------------------------------------- fuzzing
VALUES = st.one_of(st.integers(-10**12, 10**12).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                   st.sampled_from(["", "-", "--", "nan", "1e400", "0", "-1", "²", "bogus", "cuda:99", "1,2,3"]),
                   st.text(max_size=8))


def _options(names):
    return st.lists(st.tuples(st.sampled_from(names), VALUES), max_size=3).map(
        lambda pairs: [x for name, value in pairs for x in (name, value)])


def _assert_clean(code, err, out=None, oracle=None):
    """What any input may give: exit 0 with what the oracle says (the output of an undamaged or
    independent run, or a check of the result), or exit 2 with one line; never a traceback."""
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
    elif oracle is not None:
        assert oracle(out) if callable(oracle) else out == oracle, (out, err)


# MTKIT_FUZZ_EXAMPLES=1000 for a longer search than the default suite's
FUZZ = settings(max_examples=int(os.environ.get("MTKIT_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(args=_options(["-w", "--max-ngram-order", "--smooth-value", "--smooth-method", "--tokenize", "--format",
                      "--paired-bs-n", "--seed"]), data=st.binary(max_size=40))
@pytest.mark.slow
def test_fuzz_bleu(tmp_path_factory, args, data):
    d = tmp_path_factory.mktemp("fuzz")
    (d / "ref").write_bytes(b"a b c\n")
    (d / "hyp").write_bytes(data)
    code, out, err = run_in_process("bleu", str(d / "ref"), "-i", str(d / "hyp"), *args)

    def equals_sacrebleu(_: str) -> bool:  # the same options, cross-checked: exit 1 if sacreBLEU differs
        again, _, why = run_in_process("bleu", str(d / "ref"), "-i", str(d / "hyp"), *args, "--sacrebleu")
        return again == 0 or (again == 2 and "empty corpus" in why)

    _assert_clean(code, err, out, equals_sacrebleu)


@FUZZ
@given(args=_options(["--beam", "--length-penalty", "--max-len-a", "--max-len-b", "--nbest", "--max-tokens",
                      "--device", "--precision", "--checkpoint", "--format"]))
@pytest.mark.slow
def test_fuzz_translate_options(reverse_model, args):
    """Accepted options translate the one line into one line (one JSON object with --format jsonl)."""
    code, out, err = run_in_process("translate", "-m", str(reverse_model), *args, stdin="alpha bravo\n")

    def one_translation(text: str) -> bool:
        lines = text.splitlines()
        return len(lines) == 1 and ("translation" in json.loads(lines[0]) if lines[0].startswith("{") else True)

    _assert_clean(code, err, out, one_translation)


@settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 2))
@given(sets=st.lists(st.tuples(st.sampled_from(["train.lr", "train.warmup", "train.betas", "train.clip_norm",
                                                "train.log_every", "train.max_time", "model.d_model", "model.n_heads",
                                                "model.dropout", "model.max_positions", "data.max_tokens",
                                                "data.max_ratio", "decode.beam", "train.device", "train.precision"]),
                               VALUES), max_size=3))
@pytest.mark.slow
def test_fuzz_train_settings(tmp_path_factory, corpus, reverse_with_tokenizer, sets):
    """Real files, so that what is refused is refused for its settings: exit 2 and nothing written,
    or one update of a run that starts."""
    out = tmp_path_factory.mktemp("fuzz") / "m"
    args = [x for key, value in sets for x in ("--set", f"{key}={value}")]
    code, _, err = _train(out, corpus, reverse_with_tokenizer["tokenizer"], "--max-steps", "1", *args)

    def trained_as_asked(_: str) -> bool:  # every setting given is the one the run recorded and used
        from mtkit.config_io import apply_override, load_toml

        stored, wanted = load_toml(out / "config.toml"), load_toml(out / "config.toml")
        for assignment in args[1::2]:
            apply_override(wanted, assignment)
        return stored == wanted and (out / "checkpoints" / "last.pt").is_file()

    _assert_clean(code, err, "", trained_as_asked)
    if code == 2:
        assert not out.exists(), err


@pytest.mark.slow
@FUZZ
@given(cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=4))
def test_fuzz_damaged_checkpoint_and_tokenizer(tmp_path_factory, reverse_model, cut, flips):
    d = tmp_path_factory.mktemp("damaged")
    model = d / "m"
    import shutil

    shutil.copytree(reverse_model / "tokenizer", model / "tokenizer")
    shutil.copy(reverse_model / "config.toml", model / "config.toml")
    for source, target in ((reverse_model / "checkpoints" / "best.pt", model / "checkpoints" / "best.pt"),
                           (reverse_model / "tokenizer" / "spm.model", model / "tokenizer" / "spm.model")):
        data = bytearray(source.read_bytes())
        data = data[: max(1, int(len(data) * cut))] if cut < 0.5 else data
        for where, xor in flips:
            data[min(len(data) - 1, int(where * len(data)))] ^= xor
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bytes(data))
    undamaged = {command: run_in_process(*command, "-m", str(reverse_model), *extra, stdin="alpha bravo\n")[1]
                 for command, extra in ((("translate",), ("--greedy",)), (("tokenizer", "encode"), ()))}
    for command, extra in ((("translate",), ("--greedy",)), (("tokenizer", "encode"), ())):
        code, out, err = run_in_process(*command, "-m", str(model), *extra, stdin="alpha bravo\n")
        _assert_clean(code, err, out, undamaged[command])  # damage is refused, never translated with


@pytest.fixture(scope="module")
def resumable(tmp_path_factory, corpus, reverse_with_tokenizer):
    """A tiny run that saved at step 2, and the command that resumes it."""
    model = tmp_path_factory.mktemp("resumable") / "m"
    assert _train(model, corpus, reverse_with_tokenizer["tokenizer"], "--max-steps", "2", "--save-every", "2")[0] == 0
    return model, ["train", "-o", "MODEL", "--src", str(corpus["src"]), "--tgt", str(corpus["tgt"]), *TINY,
                   "--max-steps", "2"]


def _damage(data: bytes, cut: float, flips: list[tuple[float, int]]) -> bytes:
    damaged = bytearray(data[: max(1, int(len(data) * cut))] if cut < 0.5 else data)
    for where, xor in flips:
        damaged[min(len(damaged) - 1, int(where * len(damaged)))] ^= xor
    return bytes(damaged)


DAMAGE = dict(cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=4))


@pytest.mark.slow
@settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 2))
@given(name=st.sampled_from(["manifest.json", "metrics.jsonl", "config.toml", "tokenizer/tokenizer.json"]), **DAMAGE)
def test_fuzz_damaged_files_of_a_run_on_resume(tmp_path_factory, resumable, name, cut, flips):
    import shutil

    source, command = resumable
    model = tmp_path_factory.mktemp("damaged") / "m"
    shutil.copytree(source, model)
    (model / name).write_bytes(_damage((source / name).read_bytes(), cut, flips))
    code, out, err = run_in_process(*[str(model) if a == "MODEL" else a for a in command])
    weights = (source / "checkpoints" / "step_00000002.pt").read_bytes()
    # damaged metadata never changes the weights: the run resumes as it was (or is refused)
    _assert_clean(code, err, out, lambda _: (model / "checkpoints" / "step_00000002.pt").read_bytes() == weights)


@pytest.mark.slow
@FUZZ
@given(**DAMAGE)
def test_fuzz_damaged_converted_model_metadata(tmp_path_factory, reverse_model, cut, flips):
    pytest.importorskip("ctranslate2", reason="CTranslate2 is optional (pip install 'mtkit[ct2]')")
    converted = tmp_path_factory.getbasetemp() / "fuzz-ct2"
    if not converted.exists():
        assert run_in_process("convert", "-m", str(reverse_model), "-o", str(converted))[0] == 0
        (converted / "mtkit.json.orig").write_bytes((converted / "mtkit.json").read_bytes())
    (converted / "mtkit.json").write_bytes(_damage((converted / "mtkit.json.orig").read_bytes(), cut, flips))
    (converted / "mtkit.json").rename(converted / "mtkit.json.damaged")
    (converted / "mtkit.json.orig").rename(converted / "mtkit.json")
    undamaged = run_in_process("translate", "-m", str(converted), stdin="alpha bravo\n")[1]
    (converted / "mtkit.json").rename(converted / "mtkit.json.orig")
    (converted / "mtkit.json.damaged").rename(converted / "mtkit.json")
    code, out, err = run_in_process("translate", "-m", str(converted), stdin="alpha bravo\n")
    _assert_clean(code, err, out, undamaged)


class _FullAfter(io.StringIO):
    """A standard output whose device fills up after `room` characters."""

    def __init__(self, room: int):
        super().__init__()
        self.room = room

    def write(self, text: str) -> int:
        if self.tell() + len(text) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(text)


@FUZZ
@given(room=st.integers(0, 3000), command=st.sampled_from(["translate", "encode", "decode", "bleu", "score"]))
@pytest.mark.slow
def test_fuzz_a_standard_output_that_fills_up(reverse_model, reverse_data, room, command):
    src, ref = str(reverse_data["valid_src"]), str(reverse_data["valid_tgt"])
    args = {"translate": ["translate", "-m", str(reverse_model), "-i", src, "--greedy"],
            "encode": ["tokenizer", "encode", "-m", str(reverse_model)],
            "decode": ["tokenizer", "decode", "-m", str(reverse_model)],
            "bleu": ["bleu", ref, "-i", ref, ref, "--sentence-level"],
            "score": ["score", ref, "-i", ref, "--format", "json"]}[command]
    code, _, stderr = run_in_process(*args, stdin=reverse_data["valid_src"].read_text(), stdout=_FullAfter(room))
    _assert_clean(code, stderr)
    if code == 2:
        assert "standard output: cannot write (No space left on device)" in stderr, stderr
