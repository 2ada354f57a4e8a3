"""Checkpoints and model directories.

A model directory is self-contained:

    config.toml        the resolved RunConfig the model was trained with
    tokenizer/         spm.model (or src.model + tgt.model) and tokenizer.json
    checkpoints/       last.pt (full training state), best.pt, step_00001000.pt ... (weights)
    metrics.jsonl      one JSON object per training/validation event
    manifest.json      versions, command line, data and tokenizer hashes, BLEU signature

Checkpoints hold plain tensors and plain data (loadable with weights_only=True), the config they
were trained with and a format version, and are written to a temporary file, then renamed.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from mtkit import config as C
from mtkit.errors import UserError

FORMAT = "mtkit-checkpoint"
FORMAT_VERSION = 1
STEP_RE = re.compile(r"step_(\d+)\.pt$")


def checkpoint_dir(model_dir: Path) -> Path:
    return Path(model_dir) / "checkpoints"


def save(path: Path, payload: dict[str, Any]) -> None:
    """Atomically write {format, version, **payload} to path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"format": FORMAT, "version": FORMAT_VERSION, **payload}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated files, pickles with foreign objects, non-torch files
        raise UserError(f"{path}: not a readable mtkit checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path}: not an mtkit checkpoint (foreign file)")
    if data.get("version") != FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format version {data.get('version')} is not supported (expected {FORMAT_VERSION})")
    return data


def step_checkpoints(model_dir: Path) -> list[Path]:
    """Per-step checkpoints, oldest first."""
    found = [(int(m.group(1)), p) for p in checkpoint_dir(model_dir).glob("step_*.pt") if (m := STEP_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def prune(model_dir: Path, keep_last: int) -> None:
    for path in step_checkpoints(model_dir)[:-keep_last] if keep_last > 0 else []:
        path.unlink(missing_ok=True)


def average(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the models' weights (accumulated in float64)."""
    if not paths:
        raise UserError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for path in paths:
        for name, tensor in load(path)["model"].items():
            acc = total.get(name)
            total[name] = tensor.double() if acc is None else acc + tensor.double()
            dtypes[name] = tensor.dtype
    return {name: (t / len(paths)).to(dtypes[name]) for name, t in total.items()}


def average_last(model_dir: Path, last: int, out: Path | None = None) -> Path:
    """Write the average of the last N step checkpoints to checkpoints/averaged.pt (or out)."""
    model_dir = Path(model_dir)
    paths = step_checkpoints(model_dir)[-last:]
    if len(paths) < last:
        raise UserError(f"{checkpoint_dir(model_dir)}: asked to average {last} checkpoints but only {len(paths)} exist")
    meta = load(paths[-1])
    out = out or checkpoint_dir(model_dir) / "averaged.pt"
    save(out, {"config": meta["config"], "step": meta["step"], "model": average(paths),
               "averaged": [p.name for p in paths]})
    return out


def resolve(model_dir: Path, which: str) -> Path:
    """best | last | averaged | a path."""
    if which in ("best", "last", "averaged"):
        path = checkpoint_dir(model_dir) / f"{which}.pt"
        if not path.is_file():
            raise UserError(f"{model_dir}: checkpoint {which!r} is missing ({path})")
        return path
    return Path(which)


def load_for_inference(model_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"):
    """(model in eval mode, tokenizer, run config) from a model directory."""
    from mtkit.model import Transformer
    from mtkit.tokenizer import Tokenizer

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: no such model directory")
    for needed in ("config.toml", "tokenizer"):
        if not (model_dir / needed).exists():
            raise UserError(f"{model_dir}: not a complete model directory ({needed} is missing)")
    path = resolve(model_dir, which)
    data = load(path, map_location="cpu")
    cfg = C.from_dict(data["config"], str(path))
    model = Transformer(cfg.model)
    model.load_state_dict(data["model"])
    return model.to(device).eval(), Tokenizer.load(model_dir / "tokenizer"), cfg
