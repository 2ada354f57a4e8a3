"""The student presets (deep encoder, shallow decoder) and the distillation recipe."""

import os
import subprocess
from pathlib import Path

import pytest
from helpers import run_in_process

from mtkit.config import preset

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["student", "student-tiny"])
def test_a_student_trains_converts_and_translates_the_same_with_ctranslate2(tmp_path, reverse_with_tokenizer, name):
    cfg = preset(name)
    assert cfg.n_enc_layers > cfg.n_dec_layers  # the decoder runs once per token: it is the shallow one
    d = reverse_with_tokenizer
    model = tmp_path / "m"
    code, _, err = run_in_process("train", "-o", str(model), "--src", str(d["train_src"]), "--tgt", str(d["train_tgt"]),
                                  "--tokenizer", str(d["tokenizer"]), "--preset", name, "--max-steps", "120",
                                  "--max-tokens", "2048", "--warmup", "30", "--lr", "0.005", "--valid-every", "0",
                                  "--quiet")
    assert code == 0, err
    lines = d["valid_src"].read_text().splitlines()[:40]
    stdin = "".join(line + "\n" for line in lines)
    code, ours, err = run_in_process("translate", "-m", str(model), "--checkpoint", "last", "--greedy", stdin=stdin)
    assert code == 0, err
    pytest.importorskip("ctranslate2", reason="CTranslate2 is optional (pip install 'mtkit[ct2]')")
    converted = tmp_path / "ct2"
    code, _, err = run_in_process("convert", "-m", str(model), "--checkpoint", "last", "-o", str(converted),
                                  "--quantization", "float32")
    assert code == 0, err
    code, theirs, err = run_in_process("translate", "-m", str(converted), "--greedy", stdin=stdin)
    assert code == 0, err
    same = sum(a == b for a, b in zip(ours.splitlines(), theirs.splitlines(), strict=True))
    assert same >= 0.95 * len(lines), (ours, theirs)


def test_the_distillation_recipe_dry_run_prints_every_step(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "RUN_DIR": str(tmp_path / "run"), "TEACHERS": "2", "NPROC": "2"}
    out = subprocess.run(["bash", str(ROOT / "recipes" / "distill.sh")], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    text = out.stderr
    run = tmp_path / "run"
    for model in ("teacher1", "teacher2", "student-distilled", "student-references", "student-tiny-distilled",
                  "student-tiny-references"):
        assert f"train -o {run / model} " in text, model
    assert (f"torchrun --standalone --nproc_per_node 2 -m mtkit translate -m {run / 'teacher1'}:averaged "
            f"-m {run / 'teacher2'}:averaged --beam 5 -i {run / 'data' / 'train.en'}") in text
    assert f"--tgt {run / 'data' / 'train.distilled.de'}" in text and "bench_decode.py" in text
    assert not run.exists()
