"""Inference: from a model to translations. Imports model, data and the shared ground.

    types.py        what translating produces (Translation, TranslateStats) and its small helpers: no torch
    search.py       greedy and beam search with a KV cache, batch-size invariant; cross-attention
    sampling.py     sampling, with random numbers from (seed, line, sample, step): batch-invariant
    translate.py    lines to translations: encoding, batches under a budget, one per CPU thread, in order
    ct2.py          conversion to CTranslate2, and its translator
    engine.py       the Engine protocol and open_engine(): mtkit's own search on torch, or CTranslate2;
                    an engine that translates by sentences
    distributed.py  one file translated by several processes (torchrun), joined in order
    ensemble.py     several models decoding as one (the mean of their log-probabilities)
"""
