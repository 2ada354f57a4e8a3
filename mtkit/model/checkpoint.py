"""Checkpoints: saving, loading (with the migration of older formats), averaging, pruning, and
loading a model directory's model for inference. (The directory itself: mtkit.model.directory.)

Checkpoints hold plain CPU tensors and plain data (loadable with weights_only=True on any
machine), the config they were trained with and a format version, and are written durably
(temporary file, fsync, rename: see mtkit.files).
"""

from __future__ import annotations

import errno
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from mtkit import config_io
from mtkit.errors import UserError, describe
from mtkit.files import atomic_write, write_error
from mtkit.model.directory import ModelDir

FORMAT = "mtkit-checkpoint"
FORMAT_VERSION = 2  # 2: fused attention projections, progress.best_score; 1 is read through _upgrade_v1
STEP_RE = re.compile(r"step_(\d+)\.pt$")


def to_cpu(obj: Any) -> Any:
    """The same nested dicts/lists/tuples with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save(path: Path, payload: dict[str, Any]) -> None:
    """Atomically and durably write {format, version, **payload}, every tensor on the CPU."""
    if path.is_dir():
        raise UserError(f"{path}: is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    with atomic_write(path) as f:
        try:
            torch.save({"format": FORMAT, "version": FORMAT_VERSION, **to_cpu(payload)}, f)
        except RuntimeError as e:  # torch reports a failed write in its own words; write_error checks the room
            raise OSError(errno.EIO, describe(e)) from None


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    _check_bytes(path)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # empty or truncated files, pickles with foreign objects, non-torch files
        raise UserError(f"{path}: not a readable mtkit checkpoint ({describe(e)})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path}: not an mtkit checkpoint (foreign file)")
    if not isinstance(data.get("model"), dict) or not isinstance(data.get("config"), dict):
        raise UserError(f"{path}: damaged mtkit checkpoint (no model weights or config)")
    if data.get("version") == 1:
        data = _upgrade_v1(data)
    if data.get("version") != FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format version {data.get('version')} is not supported (expected "
                        f"{FORMAT_VERSION}; a newer mtkit wrote it?)")
    return data


def _check_bytes(path: Path) -> None:
    """A checkpoint is a zip archive whose every record carries a CRC-32: torch.load does not
    check them (a flipped byte in the weights loads silently), so they are checked here (one read
    of the file, about a gigabyte a second)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise UserError(f"{path}: not a readable mtkit checkpoint ({describe(e)})") from None
    except zlib.error as e:  # a record whose compressed bytes were damaged
        raise UserError(f"{path}: damaged ({describe(e)}); use another checkpoint") from None
    if bad is not None:
        raise UserError(f"{path}: damaged ({bad} does not match its checksum); use another checkpoint")


_PROJECTION = re.compile(r"^(.*\.(self_attn|cross_attn)\.)(q|k|v|in)_proj\.(weight|bias)$")


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 -> 2. Version 1 files hold one of three attention layouts (the version was not
    bumped when the layout changed): separate q/k/v projections, a fused (3 d, d) in_proj in both
    attentions, or today's (self-attention's fused in_proj; cross-attention's q_proj and fused
    kv_proj). Their progress may name the best score `best_bleu`."""
    weights = dict(data["model"])
    found: dict[tuple[str, str, str], dict[str, str]] = {}  # (prefix, attention, weight|bias) -> {q|k|v|in: name}
    for name in weights:
        if m := _PROJECTION.match(name):
            found.setdefault((m.group(1), m.group(2), m.group(4)), {})[m.group(3)] = name
    for (prefix, kind, param), names in found.items():
        parts = {p: weights[n] for p, n in names.items()}
        if kind == "self_attn" and set(parts) == {"q", "k", "v"}:
            for n in names.values():
                del weights[n]
            weights[f"{prefix}in_proj.{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
        elif kind == "cross_attn" and "in" in parts:
            q, kv = parts["in"].split([parts["in"].size(0) // 3, 2 * parts["in"].size(0) // 3])
            del weights[names["in"]]
            weights[f"{prefix}q_proj.{param}"], weights[f"{prefix}kv_proj.{param}"] = q, kv
        elif kind == "cross_attn" and {"k", "v"} <= set(parts):
            del weights[names["k"]], weights[names["v"]]
            weights[f"{prefix}kv_proj.{param}"] = torch.cat([parts["k"], parts["v"]])
    upgraded = {**data, "model": weights, "version": 2}
    progress = data.get("progress")
    if isinstance(progress, dict) and "best_bleu" in progress:
        upgraded["progress"] = {("best_score" if k == "best_bleu" else k): v for k, v in progress.items()}
    return upgraded


def load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    """module.load_state_dict with a one-line error when the checkpoint is of another model, or
    when a weight is not finite (a NaN weight gives empty or garbage translations)."""
    for name, tensor in weights.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{path}: weight {name} holds non-finite values (NaN or inf); this checkpoint cannot "
                            "be used (choose another with --checkpoint)")
    try:
        module.load_state_dict(weights)
    except RuntimeError as e:
        problem = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line or "key" in line),
                       describe(e))
        raise UserError(f"{path}: the weights do not fit this model ({problem[:240]})") from None


def step_checkpoints(model_dir: Path) -> list[Path]:
    """Per-step checkpoints, oldest first."""
    found = [(int(m.group(1)), p) for p in ModelDir(model_dir).checkpoints.glob("step_*.pt")
             if (m := STEP_RE.search(p.name))]
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
        weights = load(path)["model"]
        if total and (set(weights) != set(total) or any(weights[k].shape != total[k].shape for k in total)):
            raise UserError(f"{path}: a checkpoint of another model than {paths[0].name} (names or shapes differ); "
                            "only checkpoints of one run can be averaged")
        for name, tensor in weights.items():
            acc = total.get(name)
            total[name] = tensor.double() if acc is None else acc + tensor.double()
            dtypes[name] = tensor.dtype
    return {name: (t / len(paths)).to(dtypes[name]) for name, t in total.items()}


def average_last(model_dir: Path, last: int, out: Path | None = None) -> Path:
    """Write the average of the last N step checkpoints to checkpoints/averaged.pt (or out)."""
    run = ModelDir(model_dir)
    if not run.path.is_dir():
        raise UserError(f"{model_dir}: no such model directory")
    paths = step_checkpoints(model_dir)[-last:]
    if not paths:
        raise UserError(f"{run.checkpoints}: no step checkpoints to average (is {model_dir} a model directory?)")
    if len(paths) < last:
        raise UserError(f"{run.checkpoints}: asked to average {last} checkpoints but only {len(paths)} exist")
    out = out or run.checkpoints / "averaged.pt"
    check_average_output(out)
    meta = load(paths[-1])
    save(out, {"config": meta["config"], "step": meta["step"], "model": average(paths),
               "averaged": [p.name for p in paths]})
    return out


RUN_CHECKPOINTS = ("last.pt", "best.pt")  # with step_N.pt: what a training run writes and reads back


def check_average_output(out: Path) -> None:
    """An average may replace an earlier average, never anything else: not a user's file, not a
    run's own checkpoints (last.pt, best.pt, step_N.pt), not any other file of a model directory."""
    if out.is_dir():
        raise UserError(f"{out}: is a directory; -o takes a file name")
    if out.name in RUN_CHECKPOINTS or STEP_RE.fullmatch(out.name):
        raise UserError(f"-o {out}: a training run's own checkpoint name; choose another name (e.g. averaged.pt)")
    if not out.exists():
        return
    try:
        previous = torch.load(out, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        previous = None
    if not (isinstance(previous, dict) and previous.get("format") == FORMAT and "averaged" in previous):
        raise UserError(f"-o {out}: exists and is not an averaged mtkit checkpoint; nothing was written "
                        "(choose a new file name)")


def load_for_inference(model_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"):
    """(model in eval mode, tokenizer, run config) from a model directory."""
    from mtkit.model.transformer import Transformer

    run = ModelDir(model_dir)
    run.require("run")
    path = run.checkpoint(which)
    data = load(path, map_location="cpu")
    cfg = config_io.from_dict(data["config"], str(path))
    tok = run.tokenizer
    if (cfg.model.src_vocab_size, cfg.model.tgt_vocab_size) != (tok.src_vocab_size, tok.tgt_vocab_size):
        raise UserError(f"{path}: trained with vocabularies of {cfg.model.src_vocab_size}/{cfg.model.tgt_vocab_size} "
                        f"entries but {run.tokenizer_dir} has {tok.src_vocab_size}/{tok.tgt_vocab_size}")
    model = Transformer(cfg.model, init_weights=False)
    load_weights(model, data["model"], path)
    return model.to(device).eval(), tok, cfg
