"""The model directory of a training run: checked before any work, then held for the run.

    check_inputs(job)         everything that can be checked before work: settings, files, the
                              corpus (line counts, UTF-8), the tokenizer, the directory's state
    with ModelDirClaim(job):  rank 0 holds the directory: a lock (`.lock`, taken over from a dead
                              process), an interrupted replacement undone, leftovers of a killed
                              run removed, and the old run's files moved aside when it is replaced
                              (--overwrite, or a run that never saved a checkpoint started again
                              with other settings) -- restored if the new run fails before its
                              first checkpoint, deleted once it has one (drop_replaced)
        prepare_model_dir()   tokenizer (copied or trained) and config.toml for a fresh run; the
                              stored config checked against the wanted one for a resumed run
        ...
        claim.commit()        setup succeeded: a fresh run's files stay, whatever happens next
        ...
        claim.drop_replaced() the new run saved its first checkpoint: the replaced run is deleted

Only mtkit's own files (RUN_FILES) of an mtkit model directory are ever resumed, replaced or
deleted: a user's notes or evaluations beside them are kept, and a directory that is not an mtkit
model directory is refused, with or without --overwrite. A directory that mtkit created is removed
again if setup fails. The replaced run waits in `.replaced-run/` (a name no clean-up removes) until
the new run has saved its first checkpoint: if the process is killed before, the next `mtkit
train` on the directory puts it back first.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
from pathlib import Path

from mtkit import __version__, config_io
from mtkit import config as C
from mtkit.data.textio import require_file
from mtkit.data.tokenizer import Tokenizer, train_tokenizer
from mtkit.errors import UserError
from mtkit.files import (
    LOCK_NAME,
    TEMP_RE,
    DirLock,
    fsync_dir,
    remove_leftovers,
    remove_path,
    temp_name,
    write_error,
    write_text_atomic,
)
from mtkit.model.directory import REPLACED, RUN_FILES, ModelDir
from mtkit.training.events import Info, OnEvent
from mtkit.training.job import TrainJob

# Settings that may change when a run is resumed: when to stop, log and save, where and in which
# precision to run, and how validation decodes (every decode setting).
RESUMABLE = {
    "train": {"max_steps", "max_epochs", "max_time", "valid_every", "save_every", "keep_last", "patience",
              "device", "compile", "log_every", "valid_max_sentences", "threads", "max_nonfinite", "precision"},
    "decode": {f.name for f in dataclasses.fields(C.DecodeConfig)},
    "data": {"num_proc", "corpora"},  # the data itself is compared by its id (mtkit.training.inputs)
}


# ----------------------------------------------------------------------------- before any work
def check_inputs(job: TrainJob, check_model_dir: bool = True) -> C.RunConfig:
    """Everything that can be checked before any work is done (and before anything is deleted):
    settings, input files, the data (readable, UTF-8, parallel; or prepared with the run's
    tokenizer), the tokenizer, the directory. Changes nothing: returns the settings the run will
    use (with prepared data, its cleaning settings, which were applied when it was prepared)."""
    from mtkit.training.inputs import check_data, resolved_config

    cfg = resolved_config(job)
    cfg.validate()
    for path in (job.train_src, job.train_tgt, job.valid_src, job.valid_tgt):
        if path is not None:
            require_file(path)
    if (job.valid_src is None) != (job.valid_tgt is None):
        raise UserError("give both --valid-src and --valid-tgt, or neither")
    tok = _known_tokenizer(job)
    if job.tokenizer_dir is None and tok is None:
        job.tokenizer_options.validate()
    if job.parent is not None:
        _check_child(job, cfg)
    if job.model_dir.exists() and not job.model_dir.is_dir():
        raise UserError(f"{job.model_dir}: exists and is not a directory")
    if check_model_dir and _state(job) == "run" and not job.overwrite and job.run.config.is_file() \
            and job.run.has_checkpoint():
        _check_same_settings(dataclasses.replace(job, cfg=cfg))
    check_data(job, tok)
    if job.valid_src is not None and job.valid_tgt is not None:
        from mtkit.data.sources import source_from_paths

        source_from_paths(job.valid_src, job.valid_tgt).check()
    return cfg


def _check_child(job: TrainJob, cfg: C.RunConfig) -> None:
    """A run that starts from a parent keeps its tokenizer and its model's shape (dropout aside)."""
    parent = job.parent
    assert parent is not None
    given = job.given_tokenizer
    if given is not None and given.encoding_fingerprint() != parent.tokenizer.encoding_fingerprint():
        which = f"--tokenizer {job.tokenizer_dir}" if job.tokenizer_dir is not None else f"--data {job.data_dir}"
        raise UserError(f"{which}: the run starts from {parent.name} and keeps its tokenizer "
                        f"({parent.tokenizer_dir}); prepare the data with that tokenizer")
    ours, theirs = (dataclasses.replace(m, dropout=0.0) for m in (cfg.model, parent.cfg.model))
    if ours != theirs:
        raise UserError(f"--init-from {parent.name}: the model's shape comes from the parent; leave --preset and "
                        "model.* settings (but model.dropout) unset")


def _known_tokenizer(job: TrainJob) -> Tokenizer | None:
    """The tokenizer the run will use, when it is known before any work: --tokenizer, the resumed
    run's, or the prepared data's."""
    if job.tokenizer_dir is not None:
        return job.given_tokenizer
    if not job.overwrite and (job.run.tokenizer_dir / "tokenizer.json").is_file() and job.run.config.is_file():
        try:
            return job.run.tokenizer
        except UserError:
            return None
    return job.given_tokenizer


def _state(job: TrainJob) -> str:
    """'new' (no directory), 'fresh' (nothing of a run in it: empty, or only what a killed setup
    left), 'run' (an mtkit model directory, or one whose replacement was interrupted); anything
    else is refused, with or without --overwrite."""
    d = job.model_dir
    if not d.exists():
        return "new"
    if job.run.is_run() or ModelDir(job.run.replaced).is_run():
        return "run"
    if job.run.config.exists():
        raise UserError(f"{d}: holds a config.toml that is not an mtkit run's; nothing was changed: choose "
                        "another -o (mtkit only ever replaces its own model directories)")
    if any(p.name not in (LOCK_NAME, REPLACED) and not TEMP_RE.fullmatch(p.name) for p in d.iterdir()):
        raise UserError(f"{d}: exists and is not an mtkit model directory (no config.toml); nothing was changed: "
                        "choose another -o (--overwrite only replaces model directories)")
    return "fresh"


def _check_same_settings(job: TrainJob) -> None:
    diffs = setting_differences(job)
    if diffs:
        raise UserError(f"{job.model_dir} holds a run with other settings ({'; '.join(diffs)}); "
                        "use --overwrite to start over, or another -o")


def setting_differences(job: TrainJob) -> list[str]:
    """What the wanted run changes of the stored one, beyond what a resume may change: settings,
    and the tokenizer (another --tokenizer, or a --vocab-size that the run's tokenizer has not)."""
    wanted = config_io.from_dict(config_io.to_dict(job.cfg), "settings")
    diffs = []
    if job.run.tokenizer_dir.is_dir():
        tok = job.run.tokenizer
        fix_vocabulary(wanted, tok)
        given = job.given_tokenizer if job.tokenizer_dir is not None else None
        if given is not None and given.fingerprint() != tok.fingerprint():
            diffs.append(f"--tokenizer {job.tokenizer_dir} is not the run's tokenizer ({job.run.tokenizer_dir})")
        elif job.tokenizer_dir is None and job.vocab_size_given and job.tokenizer_options.vocab_size != tok.src_vocab_size:
            diffs.append(f"--vocab-size: {tok.src_vocab_size} -> {job.tokenizer_options.vocab_size}")
    return diffs + _differences(config_io.load_toml(job.run.config), wanted)


def _differences(stored: C.RunConfig, wanted: C.RunConfig) -> list[str]:
    a, b = config_io.to_dict(stored), config_io.to_dict(wanted)
    diffs = [f"preset: {a['preset']} -> {b['preset']}"] if a["preset"] != b["preset"] else []
    for section in C.SECTIONS:
        for key, value in a[section].items():
            if key not in RESUMABLE.get(section, set()) and b[section][key] != value:
                diffs.append(f"{section}.{key}: {value} -> {b[section][key]}")
    return diffs


def fix_vocabulary(cfg: C.RunConfig, tok: Tokenizer) -> None:
    model = cfg.model
    model.src_vocab_size, model.tgt_vocab_size = tok.src_vocab_size, tok.tgt_vocab_size
    model.share_embeddings = model.share_embeddings and tok.joint


# ----------------------------------------------------------------------------- holding the directory
class ModelDirClaim:
    """Rank 0's hold on the model directory for a run (see the module docstring); a no-op on
    other ranks. Use as a context manager and call commit() once setup has succeeded."""

    def __init__(self, job: TrainJob, main: bool = True):
        self.job, self.main = job, main
        self.lock = DirLock(job.model_dir)
        self.created = self.committed = False
        self.aside: Path | None = None  # the replaced run, while its replacement is not committed
        self.resuming = False

    def __enter__(self) -> ModelDirClaim:
        if not self.main:
            return self
        d = self.job.model_dir
        self.created = not d.exists()
        try:
            d.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except OSError as e:
            raise write_error(d / LOCK_NAME, e) from None
        except BaseException:
            if self.created:
                shutil.rmtree(d, ignore_errors=True)
            raise
        try:
            self._take_over()
        except BaseException:
            self.lock.release()
            raise
        return self

    def _take_over(self) -> None:
        """Undo an interrupted replacement, remove leftovers, and move the old run aside if it is
        to be replaced."""
        d = self.job.model_dir
        if self.job.run.replaced.is_dir():
            self._put_back(self.job.run.replaced)
        for sub in (d, self.job.run.checkpoints, self.job.cache_dir or self.job.run.cache):
            remove_leftovers(sub)
        state = _state(self.job)
        replace = state == "run" and (self.job.overwrite or (not self.job.run.has_checkpoint() and self._settings_changed()))
        self.resuming = state == "run" and not replace
        if replace:
            self._move_aside()

    def _settings_changed(self) -> bool:
        """For a run that never saved: other settings, or stored ones that cannot be read (nothing
        of it is lost by replacing it)."""
        try:
            return bool(setting_differences(self.job))
        except UserError:
            return True

    def _move_aside(self) -> None:
        """The run's own files into REPLACED (renames within the directory: nothing is copied)."""
        d = self.job.model_dir
        self.aside = self.job.run.replaced
        self.aside.mkdir()
        fsync_dir(d)
        for name in RUN_FILES:
            if (d / name).exists() or (d / name).is_symlink():
                (d / name).rename(self.aside / name)
        fsync_dir(d)

    def _put_back(self, aside: Path) -> None:
        """Undo a replacement that did not finish: what the new run wrote goes, the old run's
        files come back."""
        d = self.job.model_dir
        for name in RUN_FILES:
            remove_path(d / name)
        for entry in list(aside.iterdir()):
            entry.rename(d / entry.name)
        aside.rmdir()
        fsync_dir(d)

    def commit(self) -> None:
        """Setup succeeded: a fresh run's files are kept from here on, whatever happens."""
        self.committed = True

    def drop_replaced(self) -> None:
        """The new run saved a checkpoint: the replaced run (if any) is deleted for good."""
        if self.main and self.aside is not None:
            doomed = temp_name(self.aside)
            self.aside.rename(doomed)  # one rename: a kill during the deletion leaves a leftover, not a half run
            shutil.rmtree(doomed, ignore_errors=True)
            self.aside = None

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.main:
            return
        undo = exc_type is not None and not self.resuming and (not self.committed or self.aside is not None)
        if undo:
            if self.aside is not None:  # the new run has no checkpoint: the old one comes back
                self._put_back(self.aside)
            else:
                for name in RUN_FILES:
                    remove_path(self.job.model_dir / name)
        self.lock.release()
        if undo and self.created:
            shutil.rmtree(self.job.model_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- setting up
def _tokenizer_for(job: TrainJob, fresh: bool, on_event: OnEvent) -> Tokenizer:
    target = job.run.tokenizer_dir
    if not fresh and target.is_dir():
        return job.run.tokenizer
    if job.given_tokenizer is not None:
        job.given_tokenizer.copy_to(target)
        return Tokenizer.load(target)
    from mtkit.training.inputs import tokenizer_text

    src, tgt, tags = tokenizer_text(job)
    on_event(Info(f"training a {job.tokenizer_options.vocab_size}-token SentencePiece model"))
    train_tokenizer(src, tgt, target, dataclasses.replace(job.tokenizer_options, tags=tags))
    return Tokenizer.load(target)


def prepare_model_dir(job: TrainJob, on_event: OnEvent) -> Tokenizer:
    """Fill a fresh model directory (tokenizer, config.toml) or check a resumed one's settings;
    returns the tokenizer and fixes the vocabulary sizes in job.cfg."""
    fresh = not job.run.config.is_file()
    try:
        tok = _tokenizer_for(job, fresh, on_event)
    except OSError as e:
        raise write_error(job.run.tokenizer_dir, e) from None
    fix_vocabulary(job.cfg, tok)
    job.cfg.validate()
    if not fresh:
        _check_same_settings(job)
    write_text_atomic(job.run.config, config_io.to_toml(job.cfg))
    return tok


def write_manifest(job: TrainJob, tok: Tokenizer, data_identity: dict, parent: dict | None = None) -> None:
    """manifest.json: versions, the command line, the data and tokenizer, and the parent a
    fine-tuning run started from (`parent`, or the one an earlier start of the run recorded)."""
    import torch

    parent = parent or job.run.manifest().get("parent")
    manifest = {
        "mtkit": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command_line": job.command_line,
        "data": data_identity,
        "tokenizer": tok.fingerprint(),
        **({"parent": parent} if parent else {}),
    }
    write_text_atomic(job.run.manifest_path, json.dumps(manifest, indent=1) + "\n")
