"""The recipes parse, and their dry runs print the whole pipeline without running it."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").glob("*.sh") if p.name != "lib.sh")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_and_dry_runs(recipe, tmp_path):
    subprocess.run(["bash", "-n", str(recipe)], check=True)
    env = {**os.environ, "DRY_RUN": "1", "RUN_DIR": str(tmp_path / "run"), "NGPU": "2"}
    out = subprocess.run(["bash", str(recipe)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    commands = [line for line in out.stderr.splitlines() if line.startswith("+ ")]
    text = "\n".join(commands)
    for step in ("tokenizer train", " train -o", "average", "translate", "bleu"):
        assert step in text, step
    assert not (tmp_path / "run").exists()  # nothing was run


def test_wmt14_uses_torchrun_with_several_gpus(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "RUN_DIR": str(tmp_path / "run"), "NGPU": "4"}
    out = subprocess.run(["bash", str(ROOT / "recipes" / "wmt14_en_de.sh")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "torchrun --standalone --nproc_per_node 4 -m mtkit train" in out.stderr
    assert "sacrebleu -t wmt14 -l en-de --echo src" in out.stderr and "--preset base" in out.stderr
    assert "mtkit prepare -o" in out.stderr and f"--data {tmp_path / 'run' / 'prepared'}" in out.stderr


@pytest.mark.parametrize("native_bf16, chosen", [("1", "--max-tokens 4096 --update-freq 1 --lr 0.003"),
                                                  ("0", "--max-tokens 2048 --update-freq 1 --lr 0.002")])
def test_demo_mode_budget(tmp_path, native_bf16, chosen):
    """The demo's settings follow the CPU: bf16 and larger batches with native bf16, else fp32 (auto)
    and smaller batches."""
    env = {**os.environ, "DRY_RUN": "1", "DEMO": "1", "RUN_DIR": str(tmp_path / "run"), "NATIVE_BF16": native_bf16}
    out = subprocess.run(["bash", str(ROOT / "recipes" / "multi30k.sh")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--max-time 600" in out.stderr and "--preset multi30k" in out.stderr and "train.schedule=linear" in out.stderr
    assert chosen in out.stderr
    assert f"--precision {'bf16' if native_bf16 == '1' else 'auto'}" in out.stderr


def test_backtranslation_dry_run_prints_every_step(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "RUN_DIR": str(tmp_path / "run")}
    out = subprocess.run(["bash", str(ROOT / "recipes" / "backtranslation.sh")], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = out.stderr
    assert "mono.de" in text and "tail -n +10001" in text  # the German side of the rest, only
    assert "--sampling --seed 1" in text and "-o " + str(tmp_path / "run" / "data" / "bt-beam.en") in text
    for model in ("de-en", "a-parallel", "b-beam", "c-sampling", "d-tagged", "e-all"):
        assert f"train -o {tmp_path / 'run' / model} " in text, model
    assert "--tag <BT>" in text and 'tag = "<BT>"' in text
    assert not (tmp_path / "run").exists()
