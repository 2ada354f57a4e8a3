"""Training: from batches to a model directory. Imports inference (validation decoding), model,
data, metrics and the shared ground.

    trainer.py      the loop: setup, updates, validation, checkpoints, exact resume, DDP
    update.py       one optimiser update (accumulation, clipping, autocast) without host syncs
    job.py          what a run was asked to do (TrainJob)
    inputs.py       the run's data (prepared, or text prepared into the run's cache), validation set
    parent.py       fine-tuning: the trained model a run starts from, copied into the run
    rundir.py       the model directory of a run: checked before work, locked, replaced safely
    validation.py   validation loss, translations, BLEU and chrF
    events.py       what training reports, as typed events
    advice.py       warnings that save a run (warmup against the budget, vocabulary size)
    metrics_log.py  metrics.jsonl
"""
