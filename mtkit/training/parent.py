"""Fine-tuning: a new run whose weights start from a trained model (`mtkit train -o NEW
--init-from PARENT`), as fairseq's --finetune-from-model and Marian's --pretrained-model.

The parent gives the new run its tokenizer and the model's shape (its config, dropout aside);
everything else (data, learning rate, warmup, steps, validation) is the new run's own, with a fresh
optimiser and schedule. The parent's weights are copied into the new run when it is set up
(NEW/checkpoints/parent.pt), so the parent is only read, once: changing or deleting it later does
not change the run, which restarts from its copy (or resumes from its own last.pt as any run).
The manifest records where the weights came from: the parent's directory, its checkpoint, and a
SHA-256 of the weights.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from mtkit import config as C
from mtkit import config_io
from mtkit.errors import UserError
from mtkit.model import checkpoint as ckpt
from mtkit.model.directory import ModelDir

COPY = "parent.pt"  # the copy of the parent's weights in the new run's checkpoints/


@dataclass(frozen=True)
class Parent:
    """A trained model a run starts from, checked: where its weights are read from (the parent's
    checkpoint, or a resumed run's copy of it), its config and its tokenizer."""

    checkpoint: Path
    cfg: C.RunConfig
    tokenizer_dir: Path
    name: str  # the parent's directory, for messages

    @property
    def tokenizer(self):
        from mtkit.data.tokenizer import Tokenizer

        return Tokenizer.load(self.tokenizer_dir)

    @classmethod
    def open(cls, path: Path, which: str = "best") -> Parent:
        """The parent at `path`, refused in one line unless it is an mtkit run whose checkpoint
        loads (readable, not damaged, finite weights of its own config)."""
        run = ModelDir(path)
        if run.kind == "converted":
            raise UserError(f"--init-from {path}: a converted CTranslate2 model cannot be trained further; "
                            "start from the mtkit run it was converted from")
        run.require("run")
        checkpoint = run.checkpoint(which)
        return cls(checkpoint, _checked_config(checkpoint), run.tokenizer_dir, str(run.path))

    @classmethod
    def copied(cls, run: ModelDir) -> Parent:
        """The parent of a run that was set up already, as the run copied it (the parent itself is
        not read again: it may have changed or gone since)."""
        copy = run.checkpoints / COPY
        return cls(copy, _checked_config(copy), run.tokenizer_dir, str(ckpt.load(copy).get("parent", copy)))

    def child_model(self, dropout: float | None) -> C.ModelConfig:
        """The new run's model: the parent's shape and vocabulary, the dropout the run asks for."""
        import dataclasses

        return dataclasses.replace(self.cfg.model, dropout=self.cfg.model.dropout if dropout is None else dropout)

    def copy_into(self, run: ModelDir) -> dict:
        """Copy the parent's weights into the new run (checkpoints/parent.pt); what the manifest
        records of the parent."""
        data = ckpt.load(self.checkpoint)
        ckpt.save(run.checkpoints / COPY, {"config": data["config"], "step": data.get("step", 0),
                                           "model": data["model"], "parent": str(self.checkpoint.resolve())})
        return {"directory": str(Path(self.name).resolve()), "checkpoint": str(self.checkpoint.resolve()),
                "weights_sha256": weights_sha256(data["model"])}


def _checked_config(checkpoint: Path) -> C.RunConfig:
    """The config of a checkpoint whose weights load: readable, not damaged, finite, fitting."""
    from mtkit.model.transformer import Transformer

    data = ckpt.load(checkpoint)
    cfg = config_io.from_dict(data["config"], str(checkpoint))
    ckpt.load_weights(Transformer(cfg.model, init_weights=False), data["model"], checkpoint)
    return cfg


def weights_sha256(weights: dict[str, torch.Tensor]) -> str:
    """A fingerprint of a model's weights: their names, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def initial_weights(run: ModelDir) -> dict[str, torch.Tensor]:
    """The parent's weights as the run copied them when it was set up."""
    path = run.checkpoints / COPY
    if not path.is_file():
        raise UserError(f"{path}: missing (this run starts from a parent model; train it again with --overwrite "
                        "and --init-from)")
    return ckpt.load(path)["model"]
