"""Data: from text to batches. Imports only the shared ground (config, errors, files).

    textio.py     reading text: UTF-8, gzip, errors naming the file and line (standard library only)
    sentences.py  text cut into sentences and put back together around their translations
    tokenizer.py  SentencePiece models with mtkit's fixed special ids
    sources.py    where parallel text comes from: two files, a TSV/JSONL file, a `datasets` hub id
    prepare.py    text encoded and cleaned once, in a pool of processes, into a prepared directory
    prepared.py   a prepared directory: its layout, opening it checked, replacing its contents
    corpus.py     the prepared corpus in memory (memory-mapped ids), cleaning rules, duplicates
    batching.py   an epoch's weighted draw, length-bucketed batches packed to the token budget,
                  resumable by (epoch, index)

Nothing is imported here, so that `mtkit.data.textio` stays light for `mtkit bleu`.
"""
