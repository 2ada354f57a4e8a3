"""mtkit translate: search properties on a trained model, the CLI, bad input, averaging, attention."""

import json

import pytest
import torch
import torch.nn.functional as F

from mtkit.config import DecodeConfig
from mtkit.data.batching import pad_sequences
from mtkit.data.textio import read_lines
from mtkit.data.tokenizer import BOS_ID, EOS_ID
from mtkit.inference.search import beam_search, greedy, length_penalty
from mtkit.inference.translate import translate
from mtkit.model.checkpoint import load_for_inference


@pytest.fixture(scope="module")
def loaded(reverse_model):
    model, tok, _ = load_for_inference(reverse_model, "last")
    return model, tok


@pytest.fixture(scope="module")
def sources(reverse_data):
    return read_lines(reverse_data["valid_src"])


def _src(tok, lines):
    return pad_sequences([torch.tensor(x) for x in tok.encode_src(lines)], suffix=EOS_ID)


def test_beam_one_equals_greedy(loaded, sources):
    model, tok = loaded
    for alpha in (0.0, 1.0):
        cfg = DecodeConfig(beam=1, length_penalty=alpha)
        src = _src(tok, sources[:50])
        g, b = greedy(model, src, cfg), beam_search(model, src, cfg)
        assert [x[0].tokens for x in g] == [x[0].tokens for x in b]
        assert [x[0].score for x in g] == pytest.approx([x[0].score for x in b], abs=1e-5)


@torch.inference_mode()
def rescore(model, src_ids: list[int], tokens: list[int], alpha: float) -> float:
    """log p(tokens + eos | src) / lp by one full forward pass (to check search scores)."""
    src = torch.tensor([src_ids + [EOS_ID]])
    tgt_in = torch.tensor([[BOS_ID] + tokens])
    tgt_out = torch.tensor([tokens + [EOS_ID]])
    logprobs = F.log_softmax(model(src, tgt_in).float(), dim=-1)
    total = logprobs.gather(2, tgt_out[..., None]).sum().item()
    return total / length_penalty(len(tokens) + 1, alpha)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_scores_equal_full_forward_rescoring_and_nbest_is_sorted(loaded, sources, alpha):
    model, tok = loaded
    cfg = DecodeConfig(beam=4, nbest=4, length_penalty=alpha)
    ids = tok.encode_src(sources[:20])
    hyps = beam_search(model, _src(tok, sources[:20]), cfg)
    for src_ids, nbest in zip(ids, hyps, strict=True):
        assert len(nbest) >= 1
        scores = [h.score for h in nbest]
        assert scores == sorted(scores, reverse=True)
        for h in nbest:
            assert rescore(model, src_ids, h.tokens, alpha) == pytest.approx(h.score, abs=1e-4)
            assert h.score == pytest.approx(h.logprob / (len(h.tokens) + 1) ** alpha)  # eos counts in the length


@pytest.mark.parametrize("beam", [1, 5])
def test_batch_size_independence(loaded, sources, beam):
    model, tok = loaded
    cfg = DecodeConfig(beam=beam)
    batched = [t.tokens for t in translate(model, tok, sources, cfg)]  # 100 sentences, length-sorted batches
    alone = [t.tokens for line in sources for t in translate(model, tok, [line], cfg)]
    assert batched == alone


def test_a_cpu_decodes_a_batch_per_thread(loaded, sources, monkeypatch):
    """With two torch threads and several batches, two batches are decoded at once, each with one
    intra-op thread, and the output equals one batch at a time; the thread setting comes back,
    also after a batch fails."""
    import threading

    import mtkit.inference.translate

    model, tok = loaded
    cfg = DecodeConfig(beam=3, max_tokens=300)  # ~10 batches of the 100 sentences
    seen: list[tuple[int, int]] = []  # (thread, its torch threads) of each batch
    search = mtkit.inference.translate.search

    def spy(*args):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        return search(*args)

    monkeypatch.setattr(mtkit.inference.translate, "search", spy)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one_at_a_time = [t.tokens for t in translate(model, tok, sources, cfg, concurrent=1)]
        assert len(seen) > 2 and {n for _, n in seen} == {2} and {t for t, _ in seen} == {threading.get_ident()}
        seen.clear()
        assert [t.tokens for t in translate(model, tok, sources, cfg)] == one_at_a_time
        assert len({t for t, _ in seen}) == 2 and {n for _, n in seen} == {1} and torch.get_num_threads() == 2

        def fails(*args):
            raise RuntimeError("a batch failed")

        monkeypatch.setattr(mtkit.inference.translate, "search", fails)
        with pytest.raises(RuntimeError, match="a batch failed"):
            list(translate(model, tok, sources, cfg))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("search", [greedy, beam_search])
def test_finished_sentences_leave_the_batch(loaded, sources, search):
    """Rows that have ended cost nothing more: the decoder sees fewer rows as sentences finish."""
    from mtkit.inference.search import FullRecompute

    class Counting(FullRecompute):
        def __init__(self, model):
            super().__init__(model)
            self.rows: list[int] = []

        def decode_step(self, tokens, state):
            self.rows.append(tokens.size(0))
            return super().decode_step(tokens, state)

    model, tok = loaded
    src = _src(tok, sources[:20])
    counting = Counting(model)
    hyps = search(counting, src, DecodeConfig(beam=1 if search is greedy else 3, length_penalty=0.0))
    lengths = sorted(len(h[0].tokens) for h in hyps)
    assert lengths[0] < lengths[-1]  # the sentences end at different steps
    assert counting.rows == sorted(counting.rows, reverse=True) and counting.rows[-1] < counting.rows[0]
    assert len(counting.rows) == lengths[-1] + 1  # the longest output and its eos


@pytest.mark.parametrize(("vocab", "beams", "count"), [(8000, 5, 10), (1000, 4, 8), (8000, 1, 1), (300, 3, 6)])
def test_candidates_ranked_by_blocks_equal_one_top_k(vocab, beams, count):
    """A CPU ranks vocabulary blocks first: the same candidates as one top-k over every
    (beam, token), with beams at -inf (the first step) and vocabularies not a multiple of the block."""
    from mtkit.inference.search import _best_candidates

    torch.manual_seed(vocab + beams)
    n = 7
    logprobs = F.log_softmax(3 * torch.randn(n * beams, vocab), dim=-1)
    scores = -5 * torch.rand(n, beams)
    scores[:2, 1:] = float("-inf")
    top, beam_of, token = _best_candidates(logprobs, scores, count)
    expected, flat = (scores[:, :, None] + logprobs.view(n, beams, vocab)).view(n, -1).topk(count, dim=1)
    assert torch.equal(top, expected)
    assert torch.equal(beam_of, flat // vocab) and torch.equal(token, flat % vocab)


def test_search_by_blocks_equals_search_by_top_k(loaded, sources, monkeypatch):
    """The test model's 43-token vocabulary is ranked by plain top-k; with blocks of 4 tokens it
    goes through the blocked ranking (padded to 44): the same translations and scores."""
    import mtkit.inference.search

    model, tok = loaded
    src = _src(tok, sources[:40])
    for search, beam in ((greedy, 1), (beam_search, 5)):
        cfg = DecodeConfig(beam=beam, nbest=beam)
        plain = search(model, src, cfg)
        monkeypatch.setattr(mtkit.inference.search, "BLOCK", 4)
        blocked = search(model, src, cfg)
        monkeypatch.undo()
        assert [[h.tokens for h in x] for x in blocked] == [[h.tokens for h in x] for x in plain]
        assert [h.score for x in blocked for h in x] == pytest.approx([h.score for x in plain for h in x], abs=1e-6)


def test_beam_finds_at_least_the_greedy_score(loaded, sources):
    model, tok = loaded
    src = _src(tok, sources[:30])
    g = greedy(model, src, DecodeConfig(beam=1, length_penalty=0.0))
    b = beam_search(model, src, DecodeConfig(beam=5, length_penalty=0.0))
    assert all(bb[0].score >= gg[0].score - 1e-5 for gg, bb in zip(g, b, strict=True))


def _library(reverse_model, lines, checkpoint="best", autocast_dtype=None, **cfg):
    model, tok, _ = load_for_inference(reverse_model, checkpoint)
    return [t.text for t in translate(model, tok, lines, DecodeConfig(**cfg), autocast_dtype=autocast_dtype)]


def test_cli_stdin_stdout_files_and_empty_lines(reverse_model, mtkit_cli, tmp_path):
    text = "alpha bravo charlie\n\ndelta echo\n"
    out = mtkit_cli("translate", "-m", str(reverse_model), stdin=text)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""
    assert [lines[0], lines[2]] == _library(reverse_model, ["alpha bravo charlie", "delta echo"], beam=5)
    (tmp_path / "in.txt").write_text(text)
    res = mtkit_cli("translate", "-m", str(reverse_model), "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"),
                    "--greedy", "--checkpoint", "last")
    assert res.returncode == 0 and (tmp_path / "out.txt").read_text() == out.stdout
    js = mtkit_cli("translate", "-m", str(reverse_model), "-f", "jsonl", "--nbest", "3", stdin="alpha bravo\n")
    row = json.loads(js.stdout)
    assert row["translation"] == _library(reverse_model, ["alpha bravo"], beam=5, nbest=3)[0]
    assert row["translation"] == row["nbest"][0]["translation"] and len(row["nbest"]) == 3 and row["tokens"]
    assert [x["score"] for x in row["nbest"]] == sorted((x["score"] for x in row["nbest"]), reverse=True)


def test_cli_interactive_answers_line_by_line(reverse_model):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "mtkit", "translate", "-m", str(reverse_model), "--interactive"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    import select

    try:
        proc.stdin.write("alpha bravo\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 120)  # a regression fails the test, not hangs it
        assert ready, "no answer within 120 s while stdin stays open"
        answer = proc.stdout.readline()  # answered before stdin is closed
        assert answer == _library(reverse_model, ["alpha bravo"], beam=5)[0] + "\n"
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def test_long_lines_are_truncated_with_a_warning(reverse_model, mtkit_cli):
    long_line = " ".join(["alpha"] * 1500)
    out = mtkit_cli("translate", "-m", str(reverse_model), "--greedy", "--max-len-b", "5", "--max-len-a", "0",
                    stdin=f"{long_line}\nbravo alpha\n")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2 and "1 input line(s)" in out.stderr and "truncated" in out.stderr


@pytest.mark.slow
def test_bad_input(reverse_model, mtkit_cli, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"alpha\n\xff\xfe\n")
    res = mtkit_cli("translate", "-m", str(reverse_model), "-i", str(bad))
    assert res.returncode == 2 and "bad.txt:2: invalid UTF-8" in res.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.toml").write_text((reverse_model / "config.toml").read_text())
    res = mtkit_cli("translate", "-m", str(broken), stdin="alpha\n")
    assert res.returncode == 2 and "tokenizer is missing" in res.stderr
    res = mtkit_cli("translate", "-m", str(reverse_model), "--checkpoint", "averaged-nope.pt", stdin="a\n")
    assert res.returncode == 2 and "no such checkpoint" in res.stderr
    res = mtkit_cli("translate", "-m", str(reverse_model), "--nbest", "6", "--beam", "5", stdin="a\n")
    assert res.returncode == 2 and "--nbest" in res.stderr


@pytest.mark.slow
def test_average_and_attention(reverse_model, mtkit_cli):
    res = mtkit_cli("average", "-m", str(reverse_model), "--last", "3")
    assert res.returncode == 0, res.stderr
    steps = [torch.load(p, weights_only=True)["model"] for p in sorted((reverse_model / "checkpoints").glob("step_*.pt"))[-3:]]
    averaged = torch.load(reverse_model / "checkpoints" / "averaged.pt", weights_only=True)["model"]
    name = "encoder.0.ff.fc1.weight"
    torch.testing.assert_close(averaged[name], sum(s[name] for s in steps) / 3)
    out = mtkit_cli("translate", "-m", str(reverse_model), "--checkpoint", "averaged", stdin="alpha bravo\n")
    assert out.returncode == 0 and out.stdout.splitlines() == _library(reverse_model, ["alpha bravo"], "averaged")
    too_many = mtkit_cli("average", "-m", str(reverse_model), "--last", "99")
    assert too_many.returncode == 2 and "only" in too_many.stderr
    att = mtkit_cli("attention", "-m", str(reverse_model), "alpha bravo charlie")
    assert att.returncode == 0 and "▁alpha" in att.stdout and "▁charlie" in att.stdout
    assert _library(reverse_model, ["alpha bravo charlie"], beam=1)[0] in att.stdout  # its greedy translation


@pytest.mark.parametrize("beam", [1, 4])
def test_cached_search_equals_full_recompute(loaded, sources, beam):
    from mtkit.inference.search import FullRecompute

    model, tok = loaded
    cfg = DecodeConfig(beam=beam, nbest=beam)
    src = _src(tok, sources[:25])
    search = greedy if beam == 1 else beam_search
    cached, uncached = search(model, src, cfg), search(FullRecompute(model), src, cfg)
    assert [[h.tokens for h in x] for x in cached] == [[h.tokens for h in x] for x in uncached]
    for a, b in zip(cached, uncached, strict=True):
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)


def test_cli_precision_and_device(reverse_model, mtkit_cli):
    lines = "alpha bravo charlie\ndelta echo\n"
    fp32 = mtkit_cli("translate", "-m", str(reverse_model), "--precision", "fp32", "--device", "cpu", stdin=lines)
    assert fp32.returncode == 0 and fp32.stdout.splitlines() == _library(reverse_model, lines.split("\n")[:2], beam=5)
    bf16 = mtkit_cli("translate", "-m", str(reverse_model), "--precision", "bf16", "--device", "cpu", stdin=lines)
    assert bf16.returncode == 0, bf16.stderr
    assert bf16.stdout.splitlines() == _library(reverse_model, lines.split("\n")[:2], autocast_dtype=torch.bfloat16)
    assert bf16.stdout.splitlines() == ["charlie bravo alpha", "echo delta"]  # the task, learnt: reversed


def test_attention_png(reverse_model, mtkit_cli, tmp_path):
    pytest.importorskip("matplotlib", reason="the PNG needs matplotlib (pip install 'mtkit[plot]')")
    out = mtkit_cli("attention", "-m", str(reverse_model), "alpha bravo charlie", "-o", str(tmp_path / "a.png"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.perf
def test_a_batch_of_translations_is_detokenized_in_one_call(reverse_model, reverse_data, monkeypatch):
    """sentencepiece starts a thread pool at each decode call (1 ms on 16 cores): one call per batch."""
    model, tok, _ = load_for_inference(reverse_model, "best")
    lines = read_lines(reverse_data["valid_src"])[:20]
    expected = [t.text for t in translate(model, tok, lines, DecodeConfig(beam=3, nbest=2))]
    calls = []
    decode = tok.decode_tgt
    monkeypatch.setattr(tok, "decode_tgt", lambda ids: calls.append(len(ids)) or decode(ids))
    got = list(translate(model, tok, lines, DecodeConfig(beam=3, nbest=2, max_tokens=100000)))
    assert [t.text for t in got] == expected and calls == [40]
    assert all(len(t.nbest) == 2 and t.nbest[0][0] == t.text for t in got)


@pytest.mark.perf
def test_cycle_collection_is_off_while_translate_starts_and_back_for_its_work(reverse_model, reverse_data,
                                                                               monkeypatch):
    """Start-up runs without the cycle collector (a quarter of a second of a one-sentence run);
    the work runs with it, start-up's objects frozen; and main() leaves the collector as it was."""
    import gc

    from helpers import run_in_process

    import mtkit.data.textio
    import mtkit.inference.engine

    seen = {}
    open_engine, iter_lines = mtkit.inference.engine.open_engine, mtkit.data.textio.iter_lines

    def spy_open(*args):
        seen.setdefault("start-up", gc.isenabled())
        return open_engine(*args)

    def spy_lines(path):
        seen.setdefault("work", (gc.isenabled(), gc.get_freeze_count() > 0))
        return iter_lines(path)

    monkeypatch.setattr(mtkit.inference.engine, "open_engine", spy_open)
    monkeypatch.setattr(mtkit.data.textio, "iter_lines", spy_lines)
    assert gc.isenabled()
    code, out, _ = run_in_process("translate", "-m", str(reverse_model), "--checkpoint", "last",
                                  "-i", str(reverse_data["valid_src"]))
    assert code == 0 and out.count("\n") == len(read_lines(reverse_data["valid_src"]))
    assert seen == {"start-up": False, "work": (True, True)}
    assert gc.isenabled() and gc.get_freeze_count() == 0


@pytest.mark.perf
def test_a_beam_step_reaches_the_host_exactly():
    """One transfer per step, every column exact: token ids past 2**24 (a float32 would round them)
    and log-probabilities to the bit."""
    from mtkit.inference.search import _StepOnHost

    top = torch.tensor([[-0.1234567, -1e-30], [-3.5, float("-inf")]])
    beam_of = torch.tensor([[0, 1], [1, 0]])
    is_eos = torch.tensor([[False, True], [True, False]])
    hyps = torch.tensor([[0, 1], [3, 2]])
    last = torch.tensor([[2**24 + 1, 5], [2**31 - 1, 7]])
    scores = torch.tensor([[-0.5, -0.25], [-9.0, -2.0]])
    step = _StepOnHost.read(top, beam_of, is_eos, hyps, last, scores)
    assert step.top.tobytes() == top.numpy().tobytes()
    assert step.last.tolist() == [2**24 + 1, 5, 2**31 - 1, 7] and step.hyps.tolist() == [0, 1, 3, 2]
    assert step.beam_of.tolist() == [[0, 1], [1, 0]] and step.is_eos.tolist() == [[False, True], [True, False]]
    assert step.best_live.tolist() == [-0.25, -2.0]
