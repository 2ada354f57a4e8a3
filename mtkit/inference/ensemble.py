"""Several models decoding as one (`mtkit translate -m A -m B`): what greedy search, beam search
and sampling see is one model whose next-token distribution combines the members'.

How they are combined: the members' log-probabilities are averaged, and the average is
normalised again (a product of experts: p(y) proportional to the geometric mean of the members'
p_i(y)), as Marian combines its ensembles; fairseq averages the probabilities instead (a mixture).
Measured on Multi30k with two 10-minute models (docs/benchmarks.md, Ensembles), neither won: val
BLEU 28.93 for the mean of log-probabilities against 29.20 for the mixture, test 30.66 against
30.21. The geometric mean is one mean of (rows, V) log-probabilities, where the mixture takes a
log-sum-exp over them, and a token that one member finds all but impossible stays unlikely (the
members must agree). An ensemble of a model with itself is that model: the same translations and
the same scores.

Each member keeps its own encoder output and its own KV cache (the members may differ in shape:
a `base` with a `big`); they share the tokenizer, which the engine checks. A sentence's
translation does not depend on its batch, as each member's does not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mtkit.config import ModelConfig


@dataclass
class EnsembleState:
    """The members' decoder states, reordered together."""

    states: list[Any]

    def reorder(self, index: Tensor, same_sources: bool = False) -> None:
        for state in self.states:
            state.reorder(index, same_sources)


class Ensemble:
    """Members (Transformers, or anything Searchable) seen by the search as one model."""

    def __init__(self, members: Sequence[Any]):
        if len(members) < 2:
            raise ValueError("an ensemble has at least two members")
        self.members = list(members)
        # the search's length limit must hold for every member
        self.cfg: ModelConfig = dataclasses.replace(members[0].cfg,
                                                    max_positions=min(m.cfg.max_positions for m in members))

    def encode(self, src: Tensor) -> list[Tensor]:
        return [m.encode(src) for m in self.members]

    def start_state(self, memory: list[Tensor], src_pad_mask: Tensor, beams: int = 1) -> EnsembleState:
        return EnsembleState([m.start_state(mem, src_pad_mask, beams) for m, mem in zip(self.members, memory)])

    def decode_step(self, tokens: Tensor, state: EnsembleState) -> Tensor:
        """(rows, V) the mean of the members' log-probabilities: scores for the search's log-softmax,
        which normalises them again (for one member repeated, a no-op: the member's own)."""
        total = None
        for member, member_state in zip(self.members, state.states):
            logprobs = F.log_softmax(member.decode_step(tokens, member_state).float(), dim=-1)
            total = logprobs if total is None else total + logprobs
        assert total is not None
        return total / len(self.members)

    def eval(self) -> Ensemble:
        for m in self.members:
            m.eval()
        return self

    def parameters(self):
        for m in self.members:
            yield from m.parameters()


def member_sizes(members: Sequence[torch.nn.Module]) -> list[int]:
    """Each member's number of parameters (what memory grows with)."""
    return [sum(p.numel() for p in m.parameters()) for m in members]
