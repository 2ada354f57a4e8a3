"""mtkit train: learning, exact resume with a real kill, signals, DDP, precisions, faults."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import run_in_process, write_pair

from mtkit import config as C
from mtkit import config_io
from mtkit.data.textio import read_lines
from mtkit.data.tokenizer import PAD_ID
from mtkit.model import checkpoint as ckpt
from mtkit.training import events as ev
from mtkit.training.metrics_log import read as read_metrics
from mtkit.training.rundir import TrainJob
from mtkit.training.trainer import TrainingDiverged, train
from mtkit.training.update import lr_at


def test_lr_schedule():
    assert lr_at(0, 1e-3, 100) == 0.0
    assert lr_at(50, 1e-3, 100) == pytest.approx(5e-4)
    assert lr_at(100, 1e-3, 100) == pytest.approx(1e-3)
    assert lr_at(400, 1e-3, 100) == pytest.approx(5e-4)  # inverse square root: sqrt(100/400)
    assert lr_at(9, 1e-3, 0) == pytest.approx(1e-3 / 3)


def test_linear_schedule_ends_at_zero_with_the_tighter_budget():
    from mtkit.training.update import learning_rate

    t = C.TrainConfig(lr=1e-3, warmup=100, schedule="linear", max_steps=1000)
    assert learning_rate(t, 50, 0.0) == pytest.approx(5e-4)  # warmup
    assert learning_rate(t, 100, 0.0) == pytest.approx(1e-3)
    assert learning_rate(t, 550, 0.0) == pytest.approx(5e-4)  # half of the 900 steps after warmup
    assert learning_rate(t, 1000, 0.0) == 0.0
    timed = C.TrainConfig(lr=1e-3, warmup=100, schedule="linear", max_time=600.0, max_steps=10**6)
    assert learning_rate(timed, 500, 450.0) == pytest.approx(2.5e-4)  # 3/4 of the time budget is spent
    with pytest.raises(Exception, match="budget"):
        C.TrainConfig(schedule="linear").validate()



def test_reverse_task_is_learnt_to_exact_match(reverse_model, reverse_data, mtkit_cli):
    out = mtkit_cli("translate", "-m", str(reverse_model), "-i", str(reverse_data["valid_src"]), "--greedy")
    hyps, refs = out.stdout.splitlines(), read_lines(reverse_data["valid_tgt"])
    exact = sum(h == r for h, r in zip(hyps, refs, strict=True)) / len(refs)
    assert exact >= 0.9


def test_model_directory_is_self_contained(reverse_model):
    for name in ("config.toml", "tokenizer/spm.model", "tokenizer/tokenizer.json", "checkpoints/last.pt",
                 "checkpoints/best.pt", "metrics.jsonl", "manifest.json"):
        assert (reverse_model / name).exists(), name
    assert len(ckpt.step_checkpoints(reverse_model)) == 6
    manifest = json.loads((reverse_model / "manifest.json").read_text())
    assert {"mtkit", "torch", "command_line", "data", "tokenizer"} <= set(manifest)
    data = torch.load(reverse_model / "checkpoints" / "last.pt", weights_only=True)
    assert data["format"] == "mtkit-checkpoint" and data["step"] == 600


def test_validation_bleu_equals_mtkit_bleu_on_the_same_output(reverse_model, reverse_data, mtkit_cli):
    valid = [e for e in read_metrics(reverse_model / "metrics.jsonl") if e["kind"] == "valid"]
    assert [e["step"] for e in valid] == [300, 600]
    out = mtkit_cli("bleu", str(reverse_data["valid_tgt"]), "-i", str(reverse_model / "valid_output.txt"),
                    "-f", "json")
    assert json.loads(out.stdout)["score"] == pytest.approx(valid[-1]["bleu"], abs=1e-9)
    assert valid[-1]["bleu_signature"] == json.loads(out.stdout)["signature"]


def _job(tmp_path, data, **train_overrides) -> TrainJob:
    cfg = C.RunConfig(preset="tiny", model=C.preset("tiny"))
    for k, v in {"warmup": 10, "lr": 3e-3, "log_every": 1, "valid_every": 0, "save_every": 0, **train_overrides}.items():
        config_io.apply_override(cfg, f"train.{k}={v}")
    cfg.data.max_tokens = 512
    return TrainJob(tmp_path / "model", cfg, data["train_src"], data["train_tgt"],
                    tokenizer_options=__import__("mtkit.data.tokenizer", fromlist=["x"]).TokenizerOptions(vocab_size=43))


@pytest.mark.slow
def test_loss_falls_on_a_multi30k_subset(multi30k, tmp_path):
    lines = {lang: [x.rstrip("\n") for x in __import__("gzip").open(multi30k / f"train.{lang}.gz", "rt", encoding="utf-8")][:2000]
             for lang in ("en", "de")}
    src, tgt = write_pair(tmp_path, lines["en"], lines["de"])
    job = _job(tmp_path, {"train_src": src, "train_tgt": tgt}, max_steps=40)
    job.tokenizer_options.vocab_size = 1000
    events: list = []
    train(job, events.append)
    losses = [e.loss for e in events if isinstance(e, ev.TrainStats)]
    assert len(losses) == 40 and sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5


def _cli_train(tmp_path, data, *extra):
    return [sys.executable, "-m", "mtkit", "train", "-o", str(tmp_path), "--src", str(data["train_src"]),
            "--tgt", str(data["train_tgt"]), "--tokenizer", str(data["tokenizer"]), "--quiet",
            "--preset", "tiny", "--set", "model.d_model=64", "--set", "model.n_heads=4", "--set", "model.d_ff=256",
            "--set", "model.dropout=0.1", "--max-tokens", "1024", "--warmup", "10", "--seed", "3", *extra]


def _params(path):
    return torch.load(path, weights_only=True)


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path, reverse_with_tokenizer):
    d = reverse_with_tokenizer
    n = 60
    straight = subprocess.run(_cli_train(tmp_path / "straight", d, "--max-steps", str(n), "--save-every", str(n // 2)),
                              capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    cmd = _cli_train(tmp_path / "killed", d, "--max-steps", str(n), "--save-every", str(n // 2))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    half = tmp_path / "killed" / "checkpoints" / f"step_{n // 2:08d}.pt"
    deadline = time.monotonic() + 120
    while not half.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert _params(tmp_path / "killed" / "checkpoints" / "last.pt")["step"] < n
    resumed = subprocess.run(cmd, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = _params(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = _params(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == n
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["data"] == b["data"] and a["progress"]["step"] == b["progress"]["step"]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint(tmp_path, reverse_with_tokenizer):
    cmd = _cli_train(tmp_path / "m", reverse_with_tokenizer, "--max-steps", "100000", "--save-every", "0")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "m" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().count("\n") >= 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    last = _params(tmp_path / "m" / "checkpoints" / "last.pt")
    assert last["step"] >= 3 and read_metrics(log)[-1]["reason"] == "signal"


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(tmp_path, reverse_with_tokenizer):
    d = reverse_with_tokenizer
    steps = ["--max-steps", "8", "--set", "model.dropout=0", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "mtkit", *_cli_train(tmp_path / "ddp", d, *steps)[3:]],
                         capture_output=True, text=True, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    done = read_metrics(tmp_path / "ddp" / "metrics.jsonl")[-1]
    assert done["kind"] == "done" and done["ranks_in_sync"] is True
    single = subprocess.run(_cli_train(tmp_path / "one", d, *steps, "--update-freq", "2"),
                            capture_output=True, text=True, env=env)
    assert single.returncode == 0, single.stderr
    a = _params(tmp_path / "ddp" / "checkpoints" / "last.pt")["model"]
    b = _params(tmp_path / "one" / "checkpoints" / "last.pt")["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_precisions_on_cpu(tmp_path, reverse_data, precision, monkeypatch):
    import mtkit.model.transformer as M

    computed_in, real = set(), M.FeedForward.forward

    def spy(self, x):
        out = real(self, x)
        computed_in.add(out.dtype)
        return out

    monkeypatch.setattr(M.FeedForward, "forward", spy)
    job = _job(tmp_path, reverse_data, max_steps=6, precision=precision, device="cpu")
    events: list = []
    summary = train(job, events.append)
    assert summary.step == 6
    assert all(math.isfinite(e.loss) for e in events if isinstance(e, ev.TrainStats))
    assert next(e for e in events if isinstance(e, ev.Start)).precision == precision
    # the layers really ran in that precision (this job has no validation, which would add float32 calls)
    assert computed_in == {torch.bfloat16 if precision == "bf16" else torch.float16}


@pytest.mark.parametrize("env, expected", [({}, "16"), ({"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "256"}, "256")])
def test_onednn_primitive_cache_is_bounded_unless_the_user_says_otherwise(env, expected):
    environ = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    code = ("import os, mtkit.training.trainer, mtkit.cli; before = os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY'); "
            "mtkit.cli.bound_onednn_cache(); print(before, os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])")
    out = subprocess.run([sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [env.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "None"), expected]  # not on import


def _poison_loss(monkeypatch, bad_steps):
    """Make the training loss infinite on the given (1-based) calls of the loss."""
    import mtkit.model.loss as L

    real, calls = L.projected_label_smoothed_nll, {"n": 0}

    def poisoned(*args):
        loss, nll = real(*args)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] in bad_steps:
                return loss * float("inf"), nll
        return loss, nll

    monkeypatch.setattr(L, "projected_label_smoothed_nll", poisoned)


def test_overflowing_fp16_steps_are_skipped_and_counted(tmp_path, reverse_data, monkeypatch):
    _poison_loss(monkeypatch, {3})
    job = _job(tmp_path, reverse_data, max_steps=6, precision="fp16", device="cpu")
    summary = train(job, lambda e: None)
    assert summary.step == 6 and summary.skipped_steps == 1
    params = _params(tmp_path / "model" / "checkpoints" / "last.pt")["model"]
    assert all(torch.isfinite(t).all() for t in params.values())


def test_repeated_nonfinite_losses_stop_with_last_checkpoint_intact(tmp_path, reverse_data, monkeypatch):
    _poison_loss(monkeypatch, set(range(5, 100)))
    job = _job(tmp_path, reverse_data, max_steps=50, save_every=2, max_nonfinite=3)
    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite losses"):
        train(job, lambda e: None)
    last = _params(tmp_path / "model" / "checkpoints" / "last.pt")
    before = _params(tmp_path / "model" / "checkpoints" / "step_00000004.pt")
    assert last["step"] == 6 and last["progress"]["skipped_steps"] == 2  # steps 5 and 6 were not applied
    for name, tensor in last["model"].items():
        assert torch.isfinite(tensor).all() and torch.equal(tensor, before["model"][name])


# ----------------------------------------------------------------------------- bad input


def test_bad_options_and_directories(tmp_path, reverse_with_tokenizer, mtkit_cli):
    d = reverse_with_tokenizer
    base = _cli_train(tmp_path / "m", d, "--max-steps", "2")[3:]
    bad = mtkit_cli(*base, "--precision", "fp8")
    assert bad.returncode == 2 and "precision" in bad.stderr and not (tmp_path / "m").exists()
    bad = mtkit_cli(*base, "--set", "model.d_model=30")
    assert bad.returncode == 2 and "divisible" in bad.stderr
    assert mtkit_cli(*base).returncode == 0
    other = mtkit_cli(*base, "--set", "model.d_ff=96")
    assert other.returncode == 2 and "model.d_ff: 256 -> 96" in other.stderr and "--overwrite" in other.stderr
    assert mtkit_cli(*base, "--set", "model.d_ff=96", "--overwrite").returncode == 0
    (tmp_path / "m" / "checkpoints" / "last.pt").write_bytes(b"garbage")
    corrupt = mtkit_cli(*base, "--set", "model.d_ff=96", "--max-steps", "3")
    assert corrupt.returncode == 2 and "last.pt" in corrupt.stderr and "Traceback" not in corrupt.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    unwritable = mtkit_cli(*_cli_train(blocker / "sub", d, "--max-steps", "2")[3:])
    assert unwritable.returncode == 2 and "Traceback" not in unwritable.stderr
    missing = mtkit_cli(*_cli_train(tmp_path / "n", {**d, "train_src": tmp_path / "nope.src"})[3:])
    assert missing.returncode == 2 and "nope.src: no such file" in missing.stderr


def test_foreign_checkpoint_is_refused(tmp_path):
    from mtkit.errors import UserError

    torch.save({"some": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not an mtkit checkpoint"):
        ckpt.load(tmp_path / "foreign.pt")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_amp_training(tmp_path, reverse_data, precision):
    job = _job(tmp_path, reverse_data, max_steps=20, precision=precision, device="cuda")
    events: list = []
    summary = train(job, events.append)
    losses = [e.loss for e in events if isinstance(e, ev.TrainStats)]
    assert summary.step == 20 and losses[-1] < losses[0]


@pytest.mark.slow
def test_compiled_layers_share_two_graphs_and_equal_eager_over_many_shapes():
    """--compile compiles each layer with dynamic shapes: every encoder layer shares one graph and
    every decoder layer another, whatever the batch shape; loss and gradients equal eager's."""
    import torch._dynamo.utils as dynamo_utils

    from mtkit.model.loss import LabelSmoothedObjective
    from mtkit.model.transformer import Transformer

    torch.manual_seed(0)
    model = Transformer(C.preset("tiny", src_vocab_size=100, tgt_vocab_size=100))
    eager, compiled = LabelSmoothedObjective(model, 0.1, PAD_ID), LabelSmoothedObjective(model, 0.1, PAD_ID, compile=True)
    dynamo_utils.counters.clear()
    model.eval()  # no dropout: the two must agree
    for batch, s_len, t_len in [(3, 7, 5), (4, 9, 6), (2, 12, 11), (5, 6, 8), (3, 15, 4)]:
        src, tgt = torch.randint(4, 100, (batch, s_len)), torch.randint(4, 100, (batch, t_len))
        src[0, -2:] = PAD_ID
        grads = []
        for objective in (eager, compiled):
            loss, _ = objective(src, tgt[:, :-1], tgt[:, 1:])
            loss.backward()
            grads.append([p.grad.clone() for p in model.parameters()])
            model.zero_grad()
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)
    assert dynamo_utils.counters["stats"]["unique_graphs"] == 2


@pytest.mark.slow
def test_compile_trains_and_saves_the_plain_module(tmp_path, reverse_with_tokenizer):
    res = subprocess.run(_cli_train(tmp_path / "m", reverse_with_tokenizer, "--max-steps", "3", "--compile"),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    state = _params(tmp_path / "m" / "checkpoints" / "last.pt")
    assert state["step"] == 3
    from mtkit.model.transformer import Transformer

    fresh = Transformer(config_io.from_dict(state["config"], "last.pt").model)
    fresh.load_state_dict(state["model"])  # the plain module's names and shapes, not the compiled wrapper's


# ----------------------------------------------------------------------------- the loop's policy
def test_plan_of_the_loop():
    from mtkit.training.trainer import Plan, plan

    t = C.TrainConfig(log_every=10, valid_every=100, save_every=50)
    assert plan(7, t, None) == Plan(log=False, validate=False, save=False) and not plan(7, t, None).reads
    assert plan(10, t, None).log and not plan(10, t, None).save
    assert plan(50, t, None).save and not plan(50, t, None).validate
    p = plan(100, t, None)
    assert p.validate and p.save and p.log
    p = plan(123, t, "max_steps")  # stopping validates once more and saves
    assert p.validate and p.save and not p.log
    p = plan(123, t, "signal")  # a signal asks to stop quickly: save, no validation
    assert p.save and not p.validate
    assert not plan(100, C.TrainConfig(valid_every=0, save_every=0), None).save


@pytest.mark.slow
def test_stop_conditions(tmp_path, reverse_data):
    summary = train(_job(tmp_path / "a", reverse_data, max_epochs=1), lambda e: None)
    assert summary.reason == "max_epochs" and summary.epoch == 2
    start = time.monotonic()
    summary = train(_job(tmp_path / "b", reverse_data, max_time=2), lambda e: None)
    assert summary.reason == "max_time" and 2 <= summary.elapsed < 2 + 30 and time.monotonic() - start < 120



def test_the_log_shows_target_tokens_per_update_and_how_full_batches_are(tmp_path, reverse_data):
    """What a user sees of the effective batch (fairseq's wpb): target tokens per update and the
    share of --max-tokens a batch used, in the progress line and in metrics.jsonl."""
    events: list = []
    job = _job(tmp_path, reverse_data, max_steps=4, update_freq=2)
    train(job, events.append)
    stats = [e for e in events if isinstance(e, ev.TrainStats)]
    assert len(stats) == 4
    for e in stats:
        # two batches an update, each at most 512 cells of sentences x longest padded side
        assert 0.9 <= e.fill <= 1.0 and 0.3 * 2 * 512 < e.tgt_tokens_per_update <= 2 * 512
    logged = [e for e in read_metrics(job.model_dir / "metrics.jsonl") if e["kind"] == "train"]
    assert [e["tgt_tokens_per_update"] for e in logged] == [e.tgt_tokens_per_update for e in stats]
    assert [e["fill"] for e in logged] == [e.fill for e in stats]
    code, _, err = run_in_process("train", "-o", str(tmp_path / "cli"), "--src", str(reverse_data["train_src"]),
                                  "--tgt", str(reverse_data["train_tgt"]), "--vocab-size", "43", "--preset", "tiny",
                                  "--max-steps", "2", "--set", "train.log_every=1", "--valid-every", "0")
    assert code == 0, err
    assert "tgt tok/update (fill 0.9" in err or "tgt tok/update (fill 1.00)" in err, err


def test_resume_in_another_precision(tmp_path, reverse_data):
    """A loss scale saved by fp16 is dropped by bf16/fp32; a run without one resumed in fp16 starts
    a new scale: both continue, with a message instead of a traceback."""
    events: list = []
    train(_job(tmp_path, reverse_data, max_steps=3, precision="fp16", device="cpu", save_every=3), events.append)
    assert train(_job(tmp_path, reverse_data, max_steps=5, precision="bf16", device="cpu"), events.append).step == 5
    assert train(_job(tmp_path, reverse_data, max_steps=7, precision="fp16", device="cpu"), events.append).step == 7
    assert any("new one" in getattr(e, "message", "") for e in events)


@pytest.mark.slow
def test_ddp_ranks_keep_their_own_rng_streams(tmp_path, reverse_with_tokenizer):
    d = reverse_with_tokenizer
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "mtkit", *_cli_train(tmp_path / "ddp", d, "--max-steps", "3", "--device", "cpu")[3:]],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    rng = _params(tmp_path / "ddp" / "checkpoints" / "last.pt")["rng"]
    assert isinstance(rng, list) and len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])


# ----------------------------------------------------------------------------- on a GPU
def _cuda_updater(precision: str, compile: bool = False):
    from mtkit.model.loss import LabelSmoothedObjective
    from mtkit.model.transformer import Transformer
    from mtkit.runtime import Dist, resolve_precision
    from mtkit.training.update import Updater

    torch.manual_seed(0)
    model = Transformer(C.preset("tiny", src_vocab_size=100, tgt_vocab_size=100, d_model=64, n_heads=4)).cuda()
    prec = resolve_precision(precision, torch.device("cuda"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    scaler = torch.amp.GradScaler("cuda", enabled=prec.scaled)
    objective = LabelSmoothedObjective(model, 0.1, PAD_ID, compile=compile)
    return Updater(model, objective, optimizer, scaler, prec, torch.device("cuda"), Dist(), C.TrainConfig(warmup=10))


def _random_batches(n: int, seed: int = 0):
    from mtkit.data.batching import Batch

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        bsz, s, t = (int(x) for x in torch.randint(2, 9, (3,), generator=g))
        src, tgt = torch.randint(4, 100, (bsz, s), generator=g), torch.randint(4, 100, (bsz, t + 1), generator=g)
        src[0, -2:] = PAD_ID
        tgt[0, -2:] = PAD_ID
        out.append(Batch(src, tgt[:, :-1], tgt[:, 1:], None))
    return out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_cuda_update_never_waits_for_the_device(precision):
    update = _cuda_updater(precision)
    batches = _random_batches(6)
    update([batches[0]], 1e-3)  # first use: kernels load, pinned memory is allocated
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for b in batches[1:]:
            update([b], 1e-3)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    totals = update.totals.read(update.dist)
    assert totals["skipped"] == 0 and math.isfinite(totals["loss"]) and totals["tokens"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_compiled_step_equals_eager_over_many_shapes():
    eager, compiled = _cuda_updater("bf16"), _cuda_updater("bf16", compile=True)
    for b in _random_batches(8):
        eager([b], 1e-3)
        compiled([b], 1e-3)
    a, b = eager.totals.read(eager.dist), compiled.totals.read(compiled.dist)
    assert a["loss"] == pytest.approx(b["loss"], rel=2e-2)
    # Adam moves a parameter by up to ~lr per update whatever its gradient's size, so where a
    # gradient is near zero two roundings can move it opposite ways: 8 updates x lr 1e-3 apart at most
    for p, q in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=5e-2, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_run_resumes_on_the_cpu(tmp_path, reverse_data):
    train(_job(tmp_path, reverse_data, max_steps=4, device="cuda", save_every=4), lambda e: None)
    summary = train(_job(tmp_path, reverse_data, max_steps=6, device="cpu"), lambda e: None)
    assert summary.step == 6
    assert _params(tmp_path / "model" / "checkpoints" / "last.pt")["model"]["output.weight"].device.type == "cpu"


def test_patience_keep_last_and_valid_max_sentences(tmp_path, reverse_data):
    """A model that cannot improve (learning rate ~0) stops on patience after its second validation;
    only the last keep_last step checkpoints stay; validation decodes valid_max_sentences only."""
    job = _job(tmp_path, reverse_data, lr=1e-12, warmup=0, max_steps=50, valid_every=2, save_every=1, keep_last=2,
               patience=1, valid_max_sentences=10)
    job.valid_src, job.valid_tgt = reverse_data["valid_src"], reverse_data["valid_tgt"]
    events: list = []
    summary = train(job, events.append)
    assert summary.reason == "patience" and summary.step == 4
    assert [p.name for p in ckpt.step_checkpoints(job.model_dir)] == ["step_00000003.pt", "step_00000004.pt"]
    valid = [e for e in events if isinstance(e, ev.Validation)]
    assert [e.valid_sentences for e in valid] == [10, 10] and valid[1].improved is False
    assert len((job.model_dir / "valid_output.txt").read_text().splitlines()) == 10


# ----------------------------------------------------------------------------- warnings that save a run
def test_warmup_longer_than_the_budget_is_warned_about(tmp_path, reverse_data):
    from mtkit.training.advice import vocabulary_warning, warmup_warning

    t = C.TrainConfig(warmup=4000, max_steps=1500)
    assert "--warmup 4000 is longer than the 1,500 updates --max-steps 1500 allows" in warmup_warning(t, 1500, "--max-steps 1500")
    assert warmup_warning(C.TrainConfig(warmup=100), 1500, "x") is None
    events: list = []
    train(_job(tmp_path / "steps", reverse_data, warmup=40, max_steps=8), events.append)
    warned = [e.message for e in events if isinstance(e, ev.Warn)]
    assert any("--warmup 40" in w and "--max-steps 8" in w for w in warned)
    events = []
    train(_job(tmp_path / "time", reverse_data, warmup=100000, max_time=4, log_every=25), events.append)
    assert any("--max-time 4" in e.message and "estimated" in e.message for e in events if isinstance(e, ev.Warn))
    big = C.preset("tiny", src_vocab_size=8000, tgt_vocab_size=8000)
    assert "large for this corpus" in vocabulary_warning(20_000, big) and vocabulary_warning(200_000, big) is None


def test_best_checkpoint_by_chrf(tmp_path, reverse_data):
    job = _job(tmp_path, reverse_data, max_steps=4, valid_every=2, best_metric="chrf")
    job.valid_src, job.valid_tgt = reverse_data["valid_src"], reverse_data["valid_tgt"]
    events: list = []
    summary = train(job, events.append)
    valid = [e for e in events if isinstance(e, ev.Validation)]
    assert summary.best_metric == "chrf" and summary.best_score == max(e.chrf for e in valid)
    best = _params(job.model_dir / "checkpoints" / "best.pt")
    assert best["metric"] == "chrf" and best["score"] == summary.best_score
