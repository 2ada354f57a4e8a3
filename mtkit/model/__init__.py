"""The model: the Transformer, its training objective, and the model directory on disk (both
training and inference load it). Imports data (token ids, the tokenizer) and the shared ground.

    transformer.py  encode(src) -> memory; decode(tgt_in, memory) -> hidden states; the KV cache
    loss.py         label-smoothed cross-entropy fused with the output projection, in chunks
    checkpoint.py   checkpoints (save, load, average, migrate), a model loaded for inference
    directory.py    the model directory's one owner (ModelDir): paths, kind, manifest, languages
"""
