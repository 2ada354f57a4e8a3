"""A run's data: a prepared directory (`--data`), or text (`--src/--tgt`, `[[data.corpora]]`)
prepared once into the run's cache; what the manifest records of it; the validation set.

A restart finds the cache by the sources' paths, sizes and modification times and reads no text;
the manifest records the prepared data's id (from the text's hashes), so a resume on other data is
caught whichever way the data was given.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from mtkit.config import RunConfig
from mtkit.data.corpus import Cleaning, EncodedCorpus
from mtkit.data.prepare import CorpusInput, OnProgress, corpus_inputs, prepare_cached, quick_key, tag_ids
from mtkit.data.prepared import is_prepared, load_prepared, read_info
from mtkit.data.sources import TextPair, source_from_paths
from mtkit.data.textio import read_lines
from mtkit.data.tokenizer import Tokenizer, file_sha256
from mtkit.errors import UserError, describe
from mtkit.training.events import CorpusReport, DataReport
from mtkit.training.job import TrainJob


@dataclass
class TrainData:
    corpus: EncodedCorpus
    info: dict  # the prepared directory's prepared.json
    where: Path  # the prepared directory

    def identity(self) -> dict:
        """What the manifest records (and a resume compares: the id)."""
        corpora = [{k: c[k] for k in ("name", "weight", "tag", "pairs", "report")} for c in self.info["corpora"]]
        return {"id": self.info["id"], "prepared": str(self.where.resolve()), "corpora": corpora}

    def report(self) -> DataReport:
        r, parts = self.corpus.report, self.corpus.parts
        detailed = len(parts) > 1 or any(p.weight != 1 or p.tag for p in parts)
        corpora = tuple(CorpusReport(p.name, p.report.read, p.report.kept, p.report.removed(), p.weight, p.tag,
                                     p.drawn()) for p in parts) if detailed else ()
        return DataReport(r.read, r.kept, r.removed(), corpora)


def text_inputs(job: TrainJob) -> list[CorpusInput]:
    return corpus_inputs(job.cfg.data, job.train_src, job.train_tgt, f"{job.config_file or 'config'} [[data.corpora]]")


def cache_root(job: TrainJob) -> Path:
    return job.cache_dir or job.run.cache


def resolved_config(job: TrainJob) -> RunConfig:
    """The settings the run uses: the job's, and with prepared data its cleaning settings (which
    were applied when it was prepared). A copy: the job is not changed."""
    cfg = copy.deepcopy(job.cfg)
    if job.data_dir is not None:
        for key, value in read_info(job.data_dir)["cleaning"].items():
            setattr(cfg.data, key, value)
    return cfg


def check_data(job: TrainJob, tok: Tokenizer | None) -> None:
    """Before any work: a prepared directory is readable and made with the run's tokenizer (`tok`,
    when known); text is readable, UTF-8 and parallel, unless its cache is already prepared."""
    if job.data_dir is not None:
        if job.train_src is not None or job.cfg.data.corpora:
            raise UserError("give --data DIR or the text (--src/--tgt, [[data.corpora]]), not both")
        _, info = load_prepared(job.data_dir)  # prepared.json and every file it names, of the expected size
        if tok is not None and tok.fingerprint() != info["tokenizer"]:
            raise UserError(f"{job.data_dir} was prepared with another tokenizer than {tok.directory}: prepare "
                            "it again with that tokenizer, or train with the data's (drop --tokenizer)")
        return
    inputs = text_inputs(job)
    if tok is not None:
        tag_ids(inputs, tok)
        if is_prepared(cache_root(job) / quick_key(inputs, tok, Cleaning.of(job.cfg.data))):
            return
    for inp in inputs:
        if inp.source.check() == 0:
            raise UserError(f"{inp.source.describe()}: the training corpus is empty")


def training_data(job: TrainJob, tok: Tokenizer, main: bool, progress: OnProgress | None = None) -> TrainData:
    """The run's corpus, memory-mapped; text is prepared by the main process (the others come
    after it, and map the result)."""
    if job.data_dir is not None:
        corpus, info = load_prepared(job.data_dir)
        if info["tokenizer"] != tok.fingerprint():
            raise UserError(f"{job.data_dir} was prepared with another tokenizer than the run's ({job.run.tokenizer_dir})")
        return TrainData(corpus, info, job.data_dir)
    inputs, cleaning = text_inputs(job), Cleaning.of(job.cfg.data)
    corpus, info = prepare_cached(inputs, tok, cleaning, cache_root(job), job.cfg.data.num_proc, progress)
    assert corpus.directory is not None
    return TrainData(corpus, info, corpus.directory)


def tokenizer_text(job: TrainJob) -> tuple[list[Path], list[Path], tuple[str, ...]]:
    """What a tokenizer trained for the run learns from: the text files of its corpora (and
    their tags, which become pieces of their own)."""
    inputs = text_inputs(job)
    pairs = [i.source for i in inputs if isinstance(i.source, TextPair)]
    if not pairs:
        raise UserError("training a tokenizer needs plain-text corpora (--src and --tgt); pass --tokenizer DIR "
                        "for TSV/JSONL or hub input")
    tags = tuple(dict.fromkeys(i.tag for i in inputs if i.tag))
    return [p.src for p in pairs], [p.tgt for p in pairs], tags


def same_data(stored: dict, data: TrainData) -> bool:
    """Whether a manifest's data entry names this data: its id; a manifest of mtkit before
    prepared data recorded the two files' SHA-256, compared for a single text corpus."""
    if "id" in stored:
        return stored["id"] == data.info["id"]
    if set(stored) == {"src", "tgt"} and len(data.info["corpora"]) == 1:
        source = data.info["corpora"][0]["quick"]
        if set(source) == {"src", "tgt"}:
            return [file_sha256(source[k][0]) for k in ("src", "tgt")] == [stored["src"], stored["tgt"]]
    return False


def load_valid(job: TrainJob, tok: Tokenizer) -> tuple[EncodedCorpus, list[str], list[str]] | None:
    """The validation set: encoded (length rules only: every sentence is translated and scored),
    its source lines and its references."""
    if job.valid_src is None or job.valid_tgt is None:
        return None
    src_lines, refs = read_lines(job.valid_src), read_lines(job.valid_tgt)
    if len(src_lines) != len(refs):
        raise UserError(f"{job.valid_src} has {len(src_lines)} lines but {job.valid_tgt} has {len(refs)}")
    inputs = [CorpusInput("valid", source_from_paths(job.valid_src, job.valid_tgt))]
    cleaning = Cleaning(max_len=job.cfg.data.max_len, max_ratio=0.0, dedup=False)
    return prepare_cached(inputs, tok, cleaning, cache_root(job), 1)[0], src_lines, refs


def check_data_unchanged(job: TrainJob, data: TrainData) -> None:
    """A run resumes on the data it was trained on (or has no checkpoint yet); other data is
    refused unless job.reset_data (then the run continues from the new data's first batch)."""
    manifest = job.run.manifest_path
    if not job.run.has_checkpoint() or not manifest.is_file():
        return
    try:
        stored = json.loads(manifest.read_text(encoding="utf-8"))
        if not isinstance(stored, dict) or not isinstance(stored.get("data"), dict):
            raise ValueError("no \"data\" entry")
        trained_on = stored["data"]
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        if job.reset_data:
            return
        raise UserError(f"{manifest}: damaged ({describe(e, 80)}); it records the corpus the run was trained on: "
                        "restore it, or pass --reset-data to resume on the given corpus from its first batch") from None
    if not same_data(trained_on, data) and not job.reset_data:
        raise UserError(f"{job.model_dir} was trained on another corpus (see its manifest.json); resuming on a "
                        "different one needs --reset-data (training continues from its first batch), "
                        "or use another -o")
