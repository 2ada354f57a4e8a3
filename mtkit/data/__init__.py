"""Data: from text to batches. Imports only the shared ground (config, errors, files).

    textio.py     reading text: UTF-8, gzip, errors naming the file and line (standard library only)
    tokenizer.py  SentencePiece models with mtkit's fixed special ids
    corpus.py     corpus sources (two files, TSV/JSONL, a `datasets` hub id), encoding, cleaning, caching
    batching.py   length-bucketed batches under a token budget, resumable by (epoch, index)

Nothing is imported here, so that `mtkit.data.textio` stays light for `mtkit bleu`.
"""
