"""CTranslate2: converting an mtkit model, and translating with the converted model.

    convert(model_dir, out)     OUT/ holds CTranslate2's model (model.bin, config.json, vocabularies),
                                mtkit's tokenizer (tokenizer/) and mtkit.json (what it was made from)
    Translator(out).translate(lines, cfg, stats)
                                the same Translation stream as mtkit's own search (mtkit.inference.translate)

The mapping: pre- or post-norm layers; self-attention's fused in_proj is CTranslate2's linear[0],
cross-attention's q_proj and kv_proj its linear[0] and linear[1]; embeddings scaled by
sqrt(d_model) with mtkit's own position table (CTranslate2's built-in sinusoids order sines and
cosines differently); shared or tied embeddings copied; SentencePiece pieces as vocabularies, eos
appended to the source, bos starts the target. `ctranslate2` is an optional dependency
(`pip install 'mtkit[ct2]'`), imported only here.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mtkit import __version__
from mtkit.config import AUTO_MAX_TOKENS, DecodeConfig
from mtkit.errors import UserError, describe
from mtkit.files import disk_full, make_temp_dir, write_error
from mtkit.inference.types import (
    TranslateStats,
    Translation,
    chunks,
    cpu_threads,
    decode_nbests,
)
from mtkit.model.directory import CONVERTED_MARKER, ModelDir

# mtkit translate --precision -> CTranslate2's compute type ("default": the model's own quantization)
COMPUTE_TYPES = {"auto": "default", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "int8": "int8"}
QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "float16", "bfloat16", "float32")


def _ctranslate2() -> Any:
    try:
        import ctranslate2
    except ImportError:
        raise UserError("CTranslate2 is not installed: pip install 'mtkit[ct2]' (or pip install ctranslate2)") from None
    return ctranslate2


def cuda_device_count() -> int:
    """The CUDA devices CTranslate2 can use (its build may have none, whatever torch's has)."""
    return _ctranslate2().get_cuda_device_count()


def read_info(directory: Path) -> dict:
    """mtkit.json of a converted model, checked: what it was made from and its longest input."""
    path = directory / CONVERTED_MARKER
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: invalid JSON or UTF-8
        raise UserError(f"{path}: damaged ({describe(e, 80)}); convert the model again with mtkit convert") from None
    positions = info.get("max_positions") if isinstance(info, dict) else None
    if not isinstance(positions, int) or isinstance(positions, bool) or positions < 2:
        raise UserError(f"{path}: damaged (no valid \"max_positions\"); convert the model again with mtkit convert")
    if "check" in info and info["check"] != _check(info):  # older conversions have none
        raise UserError(f"{path}: damaged (its content does not match its check); convert the model again")
    return info


def _check(info: dict) -> str:
    """A hash of mtkit.json's content (its "check" aside): a damaged value is found, not used."""
    content = {k: v for k, v in info.items() if k != "check"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- converting
def convert(model_dir: Path, out: Path, quantization: str = "int8", checkpoint: str = "best") -> Path:
    """Write a CTranslate2 model of model_dir's checkpoint to `out` (new or empty, written whole)."""
    from mtkit.model.checkpoint import load_for_inference

    ct2 = _ctranslate2()
    if quantization not in QUANTIZATIONS:
        raise UserError(f"--quantization: expected one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty directory; choose a new -o")
    model, tok, _ = load_for_inference(model_dir, checkpoint, "cpu")
    spec = _spec(ct2, model, tok)
    work = make_temp_dir(out)
    try:
        _save(spec, work, quantization)
        shutil.copytree(tok.directory, work / "tokenizer")
        info = {"format": "ctranslate2", "mtkit": __version__, "source": str(ModelDir(model_dir).checkpoint(checkpoint)),
                "quantization": quantization, "max_positions": model.cfg.max_positions,
                "languages": list(ModelDir(model_dir).languages())}
        info["check"] = _check(info)
        (work / CONVERTED_MARKER).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()
        work.rename(out)
    except OSError as e:
        raise write_error(out / "model.bin", e) from None
    except RuntimeError as e:  # CTranslate2 reports a failed write in its own words
        if disk_full(out.parent):
            raise write_error(out / "model.bin", e) from None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _save(spec: Any, directory: Path, quantization: str) -> None:
    spec.validate()
    spec.optimize(quantization=quantization)
    spec.save(str(directory))


def _spec(ct2: Any, model: Any, tok: Any) -> Any:
    from ctranslate2.specs import common_spec, transformer_spec

    cfg = model.cfg
    activation = common_spec.Activation.GELU if cfg.activation == "gelu" else common_spec.Activation.RELU
    spec = transformer_spec.TransformerSpec.from_config(
        (cfg.n_enc_layers, cfg.n_dec_layers), cfg.n_heads, pre_norm=cfg.norm == "pre", activation=activation)
    _embedding(spec.encoder, model.src_embed)
    _embedding(spec.decoder, model.tgt_embed)
    for layer_spec, layer in zip(spec.encoder.layer, model.encoder):
        _linear(layer_spec.self_attention.linear[0], layer.self_attn.in_proj)
        _linear(layer_spec.self_attention.linear[1], layer.self_attn.out_proj)
        _norm(layer_spec.self_attention.layer_norm, layer.attn_res.norm)
        _ffn(layer_spec.ffn, layer.ff, layer.ff_res.norm)
    for layer_spec, layer in zip(spec.decoder.layer, model.decoder):
        _linear(layer_spec.self_attention.linear[0], layer.self_attn.in_proj)
        _linear(layer_spec.self_attention.linear[1], layer.self_attn.out_proj)
        _norm(layer_spec.self_attention.layer_norm, layer.self_res.norm)
        _linear(layer_spec.attention.linear[0], layer.cross_attn.q_proj)
        _linear(layer_spec.attention.linear[1], layer.cross_attn.kv_proj)
        _linear(layer_spec.attention.linear[2], layer.cross_attn.out_proj)
        _norm(layer_spec.attention.layer_norm, layer.cross_res.norm)
        _ffn(layer_spec.ffn, layer.ff, layer.ff_res.norm)
    if cfg.norm == "pre":
        _norm(spec.encoder.layer_norm, model.enc_norm)
        _norm(spec.decoder.layer_norm, model.dec_norm)
    spec.decoder.projection.weight = _numpy(model.output.weight)
    spec.register_source_vocabulary([tok.src.id_to_piece(i) for i in range(tok.src_vocab_size)])
    spec.register_target_vocabulary([tok.tgt.id_to_piece(i) for i in range(tok.tgt_vocab_size)])
    spec.config.add_source_eos = True
    spec.config.decoder_start_token = "<s>"
    spec.config.layer_norm_epsilon = 1e-5  # nn.LayerNorm's
    return spec


def _numpy(tensor: Any) -> Any:
    return tensor.detach().float().cpu().numpy()


def _embedding(spec: Any, embed: Any) -> None:
    table_spec = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings  # the encoder's is a list
    table_spec.weight = _numpy(embed.tokens.weight)
    spec.scale_embeddings = True
    table = embed.learned.weight if embed.learned is not None else embed.table
    spec.position_encodings.encodings = _numpy(table)


def _linear(spec: Any, linear: Any) -> None:
    spec.weight = _numpy(linear.weight)
    if linear.bias is not None:
        spec.bias = _numpy(linear.bias)


def _norm(spec: Any, norm: Any) -> None:
    spec.gamma, spec.beta = _numpy(norm.weight), _numpy(norm.bias)


def _ffn(spec: Any, ff: Any, norm: Any) -> None:
    _linear(spec.linear_0, ff.fc1)
    _linear(spec.linear_1, ff.fc2)
    _norm(spec.layer_norm, norm)


# ----------------------------------------------------------------------------- translating
class Translator:
    """A converted model, loaded once; translates like mtkit.inference.translate.translate."""

    def __init__(self, directory: Path, device: str = "auto", compute_type: str = "default", threads: int = 0,
                 concurrent: int = 0):
        """threads: CPU threads in all (0: OMP_NUM_THREADS, else the cores this process may use);
        concurrent: batches decoded at once on a CPU, threads / concurrent threads each (0: one thread
        each, as mtkit's own decoding does; CTranslate2's own default is one worker)."""
        ct2 = _ctranslate2()
        from mtkit.data.tokenizer import Tokenizer

        self.info = read_info(directory)
        self.tokenizer = Tokenizer.load(directory / "tokenizer")
        if device == "auto":
            device = "cuda" if cuda_device_count() > 0 else "cpu"
        index = int(device.split(":")[1]) if ":" in device else 0
        if device.startswith("cuda") and index >= cuda_device_count():
            raise UserError(f"--device {device}: CTranslate2 sees {cuda_device_count()} CUDA device(s)")
        inter, intra = 1, threads  # a GPU: one worker
        if device == "cpu":
            threads = threads or cpu_threads()
            inter = min(concurrent or threads, threads)
            intra = max(1, threads // inter)
        try:
            self.model = ct2.Translator(str(directory), device=device.split(":")[0], device_index=index,
                                        compute_type=compute_type, inter_threads=inter, intra_threads=intra)
        except (RuntimeError, ValueError) as e:
            raise UserError(f"{directory}: CTranslate2 cannot load this model ({e})") from None
        self.device = device.split(":")[0]

    @property
    def max_positions(self) -> int:
        return self.info["max_positions"]

    def batch_tokens(self, cfg: DecodeConfig) -> int:
        """mtkit's batch budget in CTranslate2's terms. mtkit's counts sentences x (longest source +
        eos) x beam; CTranslate2's "tokens" are the sum of the batch's source lengths, once (it sorts
        by length too, so padding is small): the same batches come from the budget over the beam."""
        return max(1, (cfg.max_tokens or AUTO_MAX_TOKENS[self.device]) // cfg.rows_per_sentence)

    def translate(self, lines: Iterable[str], cfg: DecodeConfig, stats: TranslateStats,
                  chunk_size: int = 2000, first_line: int = 0) -> Iterator[Translation]:
        """CTranslate2 samples with one random generator for the whole process (seeded once by
        --seed here): unlike mtkit's own sampling, its samples depend on the batches and the order
        of the sentences, not on the line numbers (first_line is not used)."""
        if cfg.sampling:
            import ctranslate2

            if cfg.seed >= 1 << 32:
                raise UserError(f"--seed {cfg.seed}: a converted model samples with CTranslate2, whose seeds are "
                                "below 2**32 (4,294,967,296)")
            ctranslate2.set_random_seed(cfg.seed)
        for chunk in chunks(lines, chunk_size):
            yield from self._chunk(chunk, cfg, stats)

    def _chunk(self, lines: list[str], cfg: DecodeConfig, stats: TranslateStats) -> list[Translation]:
        max_src = self.info["max_positions"] - 1
        pieces = [self.tokenizer.src.encode(line, out_type=str) for line in lines]
        cut = {i for i, p in enumerate(pieces) if len(p) > max_src}
        for i in cut:
            pieces[i] = pieces[i][:max_src]
        stats.truncated += len(cut)
        todo = [i for i, p in enumerate(pieces) if p]
        results = [Translation("", [], 0.0) for _ in lines]
        # mtkit's limit (a * source length + b, eos included, at most the position table) applies per
        # sentence; CTranslate2 takes one limit per call: that of the longest source
        longest = max((len(pieces[i]) for i in todo), default=0)
        limit = min(max(1, math.floor(cfg.max_len_a * (longest + 1) + cfg.max_len_b)), max_src)
        search = {"beam_size": cfg.beam} if not cfg.sampling else {
            "beam_size": 1, "sampling_topk": cfg.topk, "sampling_topp": cfg.topp, "sampling_temperature": cfg.temperature}
        outputs = self.model.translate_batch(
            [pieces[i] for i in todo], num_hypotheses=cfg.nbest, return_scores=True,
            length_penalty=cfg.length_penalty, max_batch_size=self.batch_tokens(cfg), batch_type="tokens",
            max_decoding_length=limit, **search,
        ) if todo else []
        all_ids = [[[self.tokenizer.tgt.piece_to_id(p) for p in hyp] for hyp in out.hypotheses] for out in outputs]
        for i, out, ids, texts in zip(todo, outputs, all_ids, decode_nbests(self.tokenizer.decode_tgt, all_ids)):
            results[i] = Translation(texts[0], ids[0], out.scores[0], list(zip(texts, out.scores)), truncated=i in cut)
            stats.tgt_tokens += len(ids[0]) + 1
        stats.sentences += len(lines)
        return results
