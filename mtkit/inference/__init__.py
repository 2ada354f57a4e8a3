"""Inference: from a model to translations. Imports model, data and the shared ground.

    types.py      what translating produces (Translation, TranslateStats) and its small helpers: no torch
    search.py     greedy and beam search with a KV cache, batch-size invariant; cross-attention
    translate.py  lines to translations: encoding, batches under a budget, one per CPU thread, in order
    ct2.py        conversion to CTranslate2, and its translator
    engine.py     the Engine protocol and open_engine(): mtkit's own search on torch, or CTranslate2
"""
