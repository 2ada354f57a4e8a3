"""Prepared data (`mtkit prepare`, `mtkit train --data`): the same batches as the text path,
several corpora with weights and tags, restarts that read no text, and bad input refused."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, assert_one_line_error, run_in_process, snapshot, write_pair

from mtkit.config import DataConfig
from mtkit.config_io import parse_corpora
from mtkit.data import batching as B
from mtkit.data import prepare as P
from mtkit.data.corpus import Cleaning
from mtkit.data.prepared import load_prepared
from mtkit.data.sources import TextPair
from mtkit.data.tokenizer import Tokenizer, TokenizerOptions, train_tokenizer

TAG = "<BT>"


@pytest.fixture(scope="module")
def data(tmp_path_factory, reverse_data):
    """Three small corpora of the reverse task and a tokenizer that keeps <BT> as one piece."""
    d = tmp_path_factory.mktemp("prepared")
    src = reverse_data["train_src"].read_text().splitlines()
    tgt = reverse_data["train_tgt"].read_text().splitlines()
    files = {"a": write_pair(d, src[:300], tgt[:300], "a"), "b": write_pair(d, src[300:500], tgt[300:500], "b"),
             "c": write_pair(d, src[500:600], tgt[500:600], "c")}
    train_tokenizer([files["a"][0]], [files["a"][1]], d / "tok", TokenizerOptions(vocab_size=40, tags=(TAG,)))
    return {"dir": d, "files": files, "tok": d / "tok"}


def _config(path: Path, corpora: list[dict], extra: str = "") -> Path:
    lines = [extra]
    for c in corpora:
        lines.append("[[data.corpora]]")
        lines += [f"{k} = {json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else v}" for k, v in c.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _weighted(data: dict, tag_b: bool = True) -> list[dict]:
    f = data["files"]
    return [{"name": "a", "src": str(f["a"][0]), "tgt": str(f["a"][1]), "weight": 2.0},
            {"name": "b", "src": str(f["b"][0]), "tgt": str(f["b"][1]), "weight": 0.5, **({"tag": TAG} if tag_b else {})},
            {"name": "c", "src": str(f["c"][0]), "tgt": str(f["c"][1]), "weight": 1.25}]


def _prepare_cli(out: Path, data: dict, *args: str) -> tuple[int, str, str]:
    return run_in_process("prepare", "-o", str(out), "--tokenizer", str(data["tok"]), *args)


def _batches(corpus, epochs=(1, 2, 3), max_tokens=256):
    it = B.BatchIterator(corpus, max_tokens, seed=3)
    return [[b.tolist() for b in it.epoch_batches(e)] for e in epochs]


# ----------------------------------------------------------------------------- one path for both
def test_prepared_data_gives_the_text_paths_batches_and_training(tmp_path, data):
    src, tgt = data["files"]["a"]
    code, _, err = _prepare_cli(tmp_path / "data", data, "--src", str(src), "--tgt", str(tgt))
    assert code == 0, err
    prepared, info = load_prepared(tmp_path / "data")
    text, _ = P.prepare_cached([P.CorpusInput("train", TextPair(src, tgt))], Tokenizer.load(data["tok"]),
                               Cleaning(), tmp_path / "cache")
    assert _batches(prepared) == _batches(text)
    common = ["--max-steps", "12", *TINY]
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m1"), "--data", str(tmp_path / "data"), *common)
    assert code == 0, err
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m2"), "--src", str(src), "--tgt", str(tgt),
                                  "--tokenizer", str(data["tok"]), *common)
    assert code == 0, err
    w1, w2 = (torch.load(tmp_path / m / "checkpoints" / "last.pt", weights_only=True)["model"] for m in ("m1", "m2"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    ids = [json.loads((tmp_path / m / "manifest.json").read_text())["data"]["id"] for m in ("m1", "m2")]
    assert ids[0] == ids[1] == info["id"]  # the same data, whichever way it was given


# ----------------------------------------------------------------------------- weights and tags
def test_weights_give_each_corpus_its_share_of_every_epoch(tmp_path, data):
    code, _, err = _prepare_cli(tmp_path / "data", data, "--config", str(_config(tmp_path / "c.toml", _weighted(data))))
    assert code == 0, err
    corpus, _ = load_prepared(tmp_path / "data")
    parts = {p.name: p for p in corpus.parts}
    draws = []
    for epoch in (1, 2):
        drawn = B.epoch_pairs(corpus.parts, 3, epoch)
        assert np.array_equal(drawn, B.epoch_pairs(corpus.parts, 3, epoch))  # a function of (seed, epoch)
        batches = B.BatchIterator(corpus, 4096, seed=3).epoch_batches(epoch)
        assert sorted(np.concatenate(list(batches)).tolist()) == sorted(drawn.tolist())  # the batches are the draw
        for name, weight in (("a", 2.0), ("b", 0.5), ("c", 1.25)):
            p = parts[name]
            mine = drawn[(drawn >= p.start) & (drawn < p.start + p.size)]
            assert abs(len(mine) - weight * p.size) <= 1
            counts = np.bincount(mine - p.start, minlength=p.size)
            assert counts.min() >= int(weight) and counts.max() <= math.ceil(weight)
        draws.append(drawn)
    assert not np.array_equal(draws[0], draws[1])  # fractional weights draw other pairs each epoch


def test_a_tag_is_one_token_before_every_source_sentence_of_its_corpus_only(tmp_path, data):
    code, _, err = _prepare_cli(tmp_path / "data", data, "--config", str(_config(tmp_path / "c.toml", _weighted(data))))
    assert code == 0, err
    corpus, _ = load_prepared(tmp_path / "data")
    tag = Tokenizer.load(data["tok"]).src.piece_to_id(TAG)
    b = next(p for p in corpus.parts if p.name == "b")
    it = B.BatchIterator(corpus, 256, seed=1)
    seen = 0
    for indices in it.epoch_batches(1):
        batch = B.collate(corpus, indices)
        tagged = torch.from_numpy((indices >= b.start) & (indices < b.start + b.size))
        assert batch.src[tagged, 0].eq(tag).all() and batch.src[tagged, 1:].ne(tag).all()
        assert batch.src[~tagged].ne(tag).all() and batch.tgt_in.ne(tag).all() and batch.tgt_out.ne(tag).all()
        seen += int(tagged.sum())
    assert seen == b.drawn()


def test_resume_in_the_middle_of_an_epoch_of_weighted_corpora_is_exact(tmp_path, data):
    config = _config(tmp_path / "c.toml", _weighted(data))
    common = ["--config", str(config), "--tokenizer", str(data["tok"]), *TINY, "--save-every", "7"]
    code, _, err = run_in_process("train", "-o", str(tmp_path / "straight"), "--max-steps", "50", *common)
    assert code == 0, err
    code, _, err = run_in_process("train", "-o", str(tmp_path / "resumed"), "--max-steps", "21", *common)
    assert code == 0, err
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    assert state["data"]["epoch"] == 1 and state["data"]["index"] > 0  # stopped inside the first epoch
    code, _, err = run_in_process("train", "-o", str(tmp_path / "resumed"), "--max-steps", "50", *common)
    assert code == 0, err
    a, b = (torch.load(tmp_path / m / "checkpoints" / "last.pt", weights_only=True) for m in ("straight", "resumed"))
    assert a["data"] == b["data"] and a["data"]["epoch"] >= 2  # crossed into a new draw of the corpora
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_the_report_gives_each_corpus_its_counts_and_share(tmp_path, data):
    config = _config(tmp_path / "c.toml", _weighted(data))
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m"), "--config", str(config), "--tokenizer",
                                  str(data["tok"]), "--max-steps", "1", *[a for a in TINY if a != "--quiet"])
    assert code == 0, err
    assert "b: 200 read, 200 kept" in err and "weight 0.5, tag <BT>: 100 pairs per epoch" in err
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert [(c["name"], c["weight"], c["pairs"]) for c in manifest["data"]["corpora"]] == \
        [("a", 2.0, 300), ("b", 0.5, 200), ("c", 1.25, 100)]


# ----------------------------------------------------------------------------- restarts and sharing
def test_a_restart_reads_no_text(tmp_path, data, monkeypatch):
    src, tgt = data["files"]["a"]
    args = ["train", "-o", str(tmp_path / "m"), "--src", str(src), "--tgt", str(tgt), "--tokenizer", str(data["tok"]), *TINY]
    code, _, err = run_in_process(*args, "--max-steps", "3")
    assert code == 0, err

    def no_reading(*a, **k):
        raise AssertionError("the text was read again")

    import mtkit.data.sources as S
    import mtkit.data.tokenizer as T

    for target, name in ((S.TextPair, "chunks"), (S.TextPair, "check"), (S, "check_text"), (T, "file_sha256")):
        monkeypatch.setattr(target, name, no_reading)
    code, _, err = run_in_process(*args, "--max-steps", "6")
    assert code == 0, err
    assert torch.load(tmp_path / "m" / "checkpoints" / "last.pt", weights_only=True)["step"] == 6


def test_two_runs_read_one_prepared_directory_at_once(tmp_path, data):
    src, tgt = data["files"]["a"]
    assert _prepare_cli(tmp_path / "data", data, "--src", str(src), "--tgt", str(tgt))[0] == 0
    before = snapshot(tmp_path / "data")
    runs = [subprocess.Popen([sys.executable, "-m", "mtkit", "train", "-o", str(tmp_path / f"m{k}"), "--data",
                              str(tmp_path / "data"), "--max-steps", "20", "--seed", str(k), *TINY],
                             stderr=subprocess.PIPE, text=True) for k in (1, 2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    assert snapshot(tmp_path / "data") == before  # read only
    assert all((tmp_path / f"m{k}" / "checkpoints" / "last.pt").is_file() for k in (1, 2))


def test_prepare_again_is_a_no_op_and_other_data_needs_overwrite(tmp_path, data):
    (a_src, a_tgt), (b_src, b_tgt) = data["files"]["a"], data["files"]["b"]
    out = tmp_path / "data"
    assert _prepare_cli(out, data, "--src", str(a_src), "--tgt", str(a_tgt))[0] == 0
    before = snapshot(out)
    code, _, err = _prepare_cli(out, data, "--src", str(a_src), "--tgt", str(a_tgt))
    assert code == 0 and "already" in err and snapshot(out) == before
    code, _, err = _prepare_cli(out, data, "--src", str(b_src), "--tgt", str(b_tgt))
    assert_one_line_error(code, err, str(out), "--overwrite")
    assert snapshot(out) == before
    code, _, err = _prepare_cli(out, data, "--src", str(b_src), "--tgt", str(b_tgt), "--overwrite")
    assert code == 0, err
    assert load_prepared(out)[1]["corpora"][0]["pairs"] == 200
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # nothing left beside it
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    code, _, err = _prepare_cli(tmp_path / "mine", data, "--src", str(a_src), "--tgt", str(a_tgt))
    assert_one_line_error(code, err, "not prepared data")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- refused
BAD_ENTRIES = [
    ({"src": "missing.src"}, "(a) src", "no such file"),
    ({"colour": "red"}, "colour", "unknown key"),
    ({"weight": -1.0}, "weight", "positive"),
    ({"weight": float("nan")}, "weight", "positive"),
    ({"tag": "<NOT-A-PIECE>"}, "tag", "not one piece"),
    ({"name": "a b"}, "name", "not a name"),
    ({"table": "x.tsv"}, "give exactly one of", "src/tgt + table"),
]


@pytest.mark.parametrize("change,key,problem", BAD_ENTRIES, ids=[k for _, k, _ in BAD_ENTRIES])
def test_every_bad_corpus_entry_is_one_line_naming_its_key(tmp_path, data, change, key, problem):
    corpora = _weighted(data, tag_b=False)
    corpora[0] = {**corpora[0], **change}
    config = _config(tmp_path / "c.toml", corpora)
    code, _, err = _prepare_cli(tmp_path / "data", data, "--config", str(config))
    assert_one_line_error(code, err, key, problem)
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m"), "--config", str(config), "--tokenizer",
                                  str(data["tok"]), *TINY)
    assert_one_line_error(code, err, key, problem)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]  # nothing written


def test_a_duplicate_corpus_name_is_refused():
    with pytest.raises(Exception, match="used by another corpus"):
        parse_corpora([{"name": "x", "src": "a", "tgt": "b"}, {"name": "x", "src": "c", "tgt": "d"}], "c.toml")


def test_damaged_or_foreign_prepared_data_is_refused_in_one_line(tmp_path, data):
    src, tgt = data["files"]["a"]
    assert _prepare_cli(tmp_path / "data", data, "--src", str(src), "--tgt", str(tgt))[0] == 0
    train_tokenizer([src], [tgt], tmp_path / "other", TokenizerOptions(vocab_size=38))
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m"), "--data", str(tmp_path / "data"),
                                  "--tokenizer", str(tmp_path / "other"), *TINY)
    assert_one_line_error(code, err, "another tokenizer")
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m"), "--data", str(tmp_path / "data"),
                                  "--max-steps", "2", *TINY)
    assert code == 0, err
    code, _, err = _prepare_cli(tmp_path / "data2", {**data, "tok": tmp_path / "other"}, "--src", str(src), "--tgt", str(tgt))
    assert code == 0, err
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m"), "--data", str(tmp_path / "data2"),
                                  "--max-steps", "4", *TINY)
    assert_one_line_error(code, err, "another tokenizer")
    ids = tmp_path / "data" / "corpora" / "train" / "src.ids"
    ids.write_bytes(ids.read_bytes()[:-2])
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m3"), "--data", str(tmp_path / "data"), *TINY)
    assert_one_line_error(code, err, "damaged", "src.ids")
    info = tmp_path / "data2" / "prepared.json"
    info.write_text(info.read_text().replace('"weight": 1.0', '"weight": 3.0'))
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m4"), "--data", str(tmp_path / "data2"), *TINY)
    assert_one_line_error(code, err, "damaged", "prepared.json")
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m4"), "--data", str(tmp_path / "nowhere"), *TINY)
    assert_one_line_error(code, err, "not prepared data")
    assert not (tmp_path / "m3").exists() and not (tmp_path / "m4").exists()


def test_lengths_changed_in_place_and_ids_beyond_the_vocabulary_are_refused(tmp_path, data):
    src, tgt = data["files"]["a"]
    assert _prepare_cli(tmp_path / "data", data, "--src", str(src), "--tgt", str(tgt))[0] == 0
    info = json.loads((tmp_path / "data" / "prepared.json").read_text())
    assert all(0 < m < 40 for m in info["corpora"][0]["max_ids"])  # recorded at preparation
    damaged = shutil.copytree(tmp_path / "data", tmp_path / "lens")
    lens_file = damaged / "corpora" / "train" / "tgt.len.npy"
    lens = np.load(lens_file)
    lens[[3, 4]] = lens[[4, 3]] + np.array([1, -1])  # the same total, the same size: pairs misaligned
    np.save(lens_file, lens)
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m1"), "--data", str(damaged), *TINY)
    assert_one_line_error(code, err, "damaged", "tgt.len.npy", "pair 3")
    damaged = shutil.copytree(tmp_path / "data", tmp_path / "ids")
    ids_file = damaged / "corpora" / "train" / "src.ids"
    ids = np.fromfile(ids_file, dtype=info["id_dtype"])
    ids[5] = 60000  # changed after preparation: the recorded maximum cannot know
    ids.tofile(ids_file)
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m2"), "--data", str(damaged), "--max-steps", "50",
                                  *TINY)
    assert_one_line_error(code, err, "damaged prepared data", "source id 60,000", "vocabulary has 40")
    recorded = json.loads((tmp_path / "ids" / "prepared.json").read_text())
    recorded["corpora"][0]["max_ids"][1] = 40
    (tmp_path / "ids" / "prepared.json").write_text(json.dumps(recorded))
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m3"), "--data", str(damaged), *TINY)
    assert_one_line_error(code, err, "damaged prepared data", "tgt ids reach 40")


def test_overwrite_replaces_only_mtkits_entries_and_refuses_foreign_directories(tmp_path, data):
    (a_src, a_tgt), (b_src, b_tgt) = data["files"]["a"], data["files"]["b"]
    out = tmp_path / "data"
    assert _prepare_cli(out, data, "--src", str(a_src), "--tgt", str(a_tgt))[0] == 0
    (out / "NOTES.md").write_text("how I made this")
    code, _, err = _prepare_cli(out, data, "--src", str(b_src), "--tgt", str(b_tgt), "--overwrite")
    assert code == 0, err
    assert (out / "NOTES.md").read_text() == "how I made this"
    assert load_prepared(out)[1]["corpora"][0]["pairs"] == 200
    assert sorted(p.name for p in out.iterdir()) == [".lock", "NOTES.md", "corpora", "prepared.json", "tokenizer"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "prepared.json").write_text('{"format": 1}')
    (foreign / "notes.md").write_text("mine")
    for extra in ([], ["--overwrite"]):
        code, _, err = _prepare_cli(foreign, data, "--src", str(a_src), "--tgt", str(a_tgt), *extra)
        assert_one_line_error(code, err, "not mtkit's")
        assert sorted(p.name for p in foreign.iterdir()) == ["notes.md", "prepared.json"]
    interrupted = shutil.copytree(out, tmp_path / "interrupted")
    (interrupted / "prepared.json").unlink()
    (interrupted / ".mtkit-replacing").touch()  # what a replacement killed half-way leaves
    code, _, err = _prepare_cli(interrupted, data, "--src", str(a_src), "--tgt", str(a_tgt))
    assert_one_line_error(code, err, "--overwrite")
    code, _, err = _prepare_cli(interrupted, data, "--src", str(a_src), "--tgt", str(a_tgt), "--overwrite")
    assert code == 0, err
    assert load_prepared(interrupted)[1]["corpora"][0]["pairs"] == 300 and (interrupted / "NOTES.md").exists()
    assert not (interrupted / ".mtkit-replacing").exists()


def test_processes_and_weights_are_bounded(tmp_path, data):
    src, tgt = data["files"]["a"]
    code, _, err = _prepare_cli(tmp_path / "d1", data, "--src", str(src), "--tgt", str(tgt), "--num-proc", "40")
    assert code == 0 and "--num-proc 40: this process may use" in err, err
    code, _, err = _prepare_cli(tmp_path / "d2", data, "--src", str(src), "--tgt", str(tgt), "--num-proc", "5000")
    assert_one_line_error(code, err, "--num-proc", "at most 1,024")
    huge = _config(tmp_path / "huge.toml", [{**_weighted(data, tag_b=False)[0], "weight": 1e10}])
    code, _, err = _prepare_cli(tmp_path / "d3", data, "--config", str(huge))
    assert_one_line_error(code, err, "weight", "at most 2,147,483,648")
    heavy = _config(tmp_path / "heavy.toml", [{**_weighted(data, tag_b=False)[0], "weight": 1e9}])
    code, _, err = _prepare_cli(tmp_path / "d4", data, "--config", str(heavy))
    assert_one_line_error(code, err, "corpus a", "pairs an epoch", "lower its weight")
    assert not (tmp_path / "d4").exists()


def test_settings_that_prepared_data_would_ignore_are_refused_or_warned_about(tmp_path, data):
    src, tgt = data["files"]["a"]
    assert _prepare_cli(tmp_path / "data", data, "--src", str(src), "--tgt", str(tgt))[0] == 0
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m1"), "--data", str(tmp_path / "data"),
                                  "--set", "data.max_len=5", *TINY)
    assert_one_line_error(code, err, "--set data.max_len", "no effect with --data")
    code, _, err = run_in_process("train", "-o", str(tmp_path / "m2"), "--data", str(tmp_path / "data"),
                                  "--vocab-size", "1000", "--max-steps", "1", *TINY)
    assert code == 0 and "--vocab-size 1000 has no effect" in err, err
    assert "smaller --vocab-size" not in err  # the advice names what can change the vocabulary


def test_weights_and_tags_round_trip_through_a_config_file():
    from mtkit.config_io import from_dict, to_toml, tomllib

    cfg = from_dict({"data": {"corpora": [{"name": "bt", "src": "x", "tgt": "y", "weight": 0.5, "tag": TAG}]}}, "t")
    again = from_dict(tomllib.loads(to_toml(cfg)), "again")
    assert again.data.corpora == cfg.data.corpora and again.data.corpora[0].tag == TAG
    assert DataConfig().num_proc == 0  # every CPU by default
