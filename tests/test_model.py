"""The Transformer's properties on tiny sizes, fixed seeds, CPU."""

import pytest
import torch

from mtkit.config import preset
from mtkit.data.tokenizer import BOS_ID, PAD_ID
from mtkit.model.transformer import Transformer, count_parameters, sinusoidal_table

V = 50


def tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    cfg = preset("tiny", src_vocab_size=V, tgt_vocab_size=V, n_enc_layers=2, n_dec_layers=2, **kw)
    return Transformer(cfg).eval()


def rand_ids(*shape, low=4):
    return torch.randint(low, V, shape)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_causality(norm, positions):
    model = tiny(norm=norm, positions=positions)
    src, tgt = rand_ids(2, 7), rand_ids(2, 9)
    tgt[:, 0] = BOS_ID
    base = model(src, tgt)
    for t in range(8):
        changed = tgt.clone()
        changed[:, t + 1:] = rand_ids(2, 9 - t - 1)
        out = model(src, changed)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=1e-5, atol=1e-5)


def test_padding_invariance_source_and_target():
    model = tiny()
    src, tgt = rand_ids(1, 6), rand_ids(1, 5)
    alone = model(src, tgt)
    src_padded = torch.cat([src, torch.full((1, 4), PAD_ID)], 1)
    tgt_padded = torch.cat([tgt, torch.full((1, 3), PAD_ID)], 1)
    other_src, other_tgt = rand_ids(1, 10), rand_ids(1, 8)
    batch = model(torch.cat([src_padded, other_src]), torch.cat([tgt_padded, other_tgt]))
    torch.testing.assert_close(batch[0, :5], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_cached_incremental_decoding_equals_full_forward(norm):
    model = tiny(norm=norm)
    src = rand_ids(3, 8)
    src[1, 5:] = PAD_ID
    tgt = rand_ids(3, 6)
    tgt[:, 0] = BOS_ID
    full = model(src, tgt)
    memory = model.encode(src)
    state = model.start_state(memory, src.eq(PAD_ID))
    steps = torch.stack([model.decode_step(tgt[:, t], state) for t in range(6)], dim=1)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)


def test_cache_reorder_follows_rows():
    model = tiny()
    src, tgt = rand_ids(3, 5), rand_ids(3, 4)
    tgt[:, 0] = BOS_ID
    state = model.start_state(model.encode(src), src.eq(PAD_ID))
    for t in range(3):
        model.decode_step(tgt[:, t], state)
    order = torch.tensor([2, 0, 1])
    state.reorder(order)
    last = model.decode_step(tgt[order, 3], state)
    torch.testing.assert_close(last, model(src[order], tgt[order])[:, 3], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_beams_share_their_sources_keys_and_values(device):
    """beams=k keeps the encoder's keys/values once per source and k decoder rows per source: every
    step's logits equal those of a full forward over each row's own prefix, through beam reorders
    (rows moving between beams of one source) and a source leaving the batch."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model, k = tiny().to(device), 3
    src = rand_ids(2, 6).to(device)
    src[1, 4:] = PAD_ID
    state = model.start_state(model.encode(src), src.eq(PAD_ID), beams=k)
    assert state.memory_kv[0][0].size(0) == 2  # once per source, not per beam
    rows_src = src.repeat_interleave(k, dim=0)  # (2k, src_len): each row's source
    prefix = torch.full((2 * k, 1), BOS_ID, device=device)
    moves = [torch.tensor([0, 0, 1, 5, 3, 4]), torch.tensor([2, 1, 0, 3, 3, 5]), None]
    for move in moves:
        step = model.decode_step(prefix[:, -1], state)
        torch.testing.assert_close(step, model(rows_src, prefix)[:, -1], rtol=1e-4, atol=1e-4)
        tokens = rand_ids(prefix.size(0), 1).to(device)
        if move is not None:  # beams of one source trade places; tokens follow
            move = move.to(device)
            state.reorder(move, same_sources=True)
            prefix = torch.cat([prefix[move], tokens], 1)
        else:  # the first source leaves
            keep = torch.arange(k, 2 * k, device=device)
            state.reorder(keep)
            prefix, rows_src = torch.cat([prefix, tokens], 1)[keep], rows_src[keep]
    torch.testing.assert_close(model.decode_step(prefix[:, -1], state), model(rows_src, prefix)[:, -1],
                               rtol=1e-4, atol=1e-4)


def test_cross_attention_uses_the_source():
    model = tiny()
    src, tgt = rand_ids(1, 6), rand_ids(1, 5)
    other = src.clone()
    other[0, 2] = (other[0, 2] + 1 - 4) % (V - 4) + 4
    assert not torch.allclose(model(src, tgt), model(other, tgt))


def test_gradients_reach_every_parameter_and_weights_are_tied():
    model = tiny(dropout=0.1, activation_dropout=0.1, attn_dropout=0.1)
    model.train()
    src, tgt = rand_ids(2, 6), rand_ids(2, 5)
    model(src, tgt).sum().backward()  # dropout on, so the dropout paths are exercised too
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.output.weight is model.tgt_embed.tokens.weight
    assert model.src_embed.tokens is model.tgt_embed.tokens
    untied = tiny(share_embeddings=False, tie_output=False)
    assert untied.output.weight is not untied.tgt_embed.tokens.weight
    assert untied.src_embed.tokens is not untied.tgt_embed.tokens


def test_sinusoidal_formula():
    table = sinusoidal_table(50, 16)
    pos, i = 7, 3
    assert table[pos, 2 * i].item() == pytest.approx(torch.sin(torch.tensor(pos / 10000 ** (2 * i / 16))).item(), abs=1e-6)
    assert table[pos, 2 * i + 1].item() == pytest.approx(torch.cos(torch.tensor(pos / 10000 ** (2 * i / 16))).item(), abs=1e-6)


def expected_parameters(cfg) -> int:
    """The closed-form parameter count of Transformer(cfg), to check the implementation against."""
    d, f = cfg.d_model, cfg.d_ff
    attention = 4 * (d * d + d)
    ffn = d * f + f + f * d + d
    norm = 2 * d
    enc = cfg.n_enc_layers * (attention + ffn + 2 * norm)
    dec = cfg.n_dec_layers * (2 * attention + ffn + 3 * norm)
    emb = cfg.tgt_vocab_size * d + (0 if cfg.share_embeddings else cfg.src_vocab_size * d)
    out = 0 if cfg.tie_output else cfg.tgt_vocab_size * d
    learned = 2 * cfg.max_positions * d if cfg.positions == "learned" else 0
    final_norms = 2 * norm if cfg.norm == "pre" else 0
    return enc + dec + emb + out + learned + final_norms


@pytest.mark.parametrize("name", ["tiny", "multi30k", "small", "base", "big"])
@pytest.mark.parametrize("kw", [{}, {"share_embeddings": False, "tie_output": False, "norm": "post", "positions": "learned"}])
def test_parameter_count_matches_formula(name, kw):
    cfg = preset(name, src_vocab_size=37000, tgt_vocab_size=37000, **kw)
    if name in ("base", "big"):
        with torch.device("meta"):
            model = Transformer(cfg)
    else:
        model = Transformer(cfg)
    assert count_parameters(model) == expected_parameters(cfg)
    assert 0.99 < cfg.approx_parameters() / count_parameters(model) <= 1.0  # the size check before allocation


def test_base_has_about_63m_parameters():
    cfg = preset("base", src_vocab_size=37000, tgt_vocab_size=37000)
    with torch.device("meta"):
        n = count_parameters(Transformer(cfg))
    assert n == 63_084_544  # 37000*512 shared embeddings + 6 encoder + 6 decoder layers + 2 final norms


def test_attention_probabilities_on_demand_equal_normal_path():  # the recording path changes nothing
    model = tiny()
    src, tgt = rand_ids(2, 6), rand_ids(2, 4)
    src[1, 4:] = PAD_ID
    memory = model.encode(src)
    sink: list = []
    recorded = model.decode(tgt, memory, src.eq(PAD_ID), sink=sink)
    torch.testing.assert_close(recorded, model.decode(tgt, memory, src.eq(PAD_ID)), rtol=1e-5, atol=1e-5)
    assert len(sink) == 2 and sink[0].shape == (2, 2, 4, 6)
    torch.testing.assert_close(sink[0].sum(-1), torch.ones(2, 2, 4))
    assert sink[0][1, :, :, 4:].abs().max() == 0  # padding gets no attention


def test_bf16_autocast_on_cpu():
    model = tiny()
    src, tgt = rand_ids(2, 6), rand_ids(2, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(src, tgt)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), model(src, tgt), rtol=0.1, atol=0.1)


def test_sequence_longer_than_positions_is_refused():
    model = tiny(max_positions=8)
    with pytest.raises(ValueError, match="max_positions"):
        model(rand_ids(1, 9), rand_ids(1, 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast(dtype):
    model = tiny().cuda()
    src, tgt = rand_ids(2, 6).cuda(), rand_ids(2, 5).cuda()
    with torch.autocast("cuda", dtype=dtype):
        out = model(src, tgt)
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), model(src, tgt), rtol=0.05, atol=0.05)


# ------------------------------------------------------------------ the training loss



@pytest.mark.gpu
@pytest.mark.perf
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_attention_backends_are_chosen_and_agree(dtype, monkeypatch):
    """The memory-efficient kernel for every attention (causal, padding-masked), never cuDNN's or
    flash; and the results equal the math kernel's and a float64 CPU reference within the
    precision's tolerance."""
    from torch.nn.attention import SDPBackend

    import mtkit.model.transformer as M

    model = tiny().cuda()
    src, tgt = rand_ids(3, 11).cuda(), rand_ids(3, 7).cuda()
    src[1, 6:] = PAD_ID
    ref = tiny().double()(src.cpu(), tgt.cpu())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.autocast("cuda", dtype=dtype):
            chosen = model(src, tgt).float()
    ops = {e.name for e in prof.events()}
    assert "aten::_efficient_attention_forward" in ops, ops
    assert not any("cudnn_attention" in op or "flash_attention" in op for op in ops), ops
    monkeypatch.setattr(M, "CUDA_BACKENDS", [SDPBackend.MATH])
    with torch.autocast("cuda", dtype=dtype):
        math_only = model(src, tgt).float()
    torch.testing.assert_close(chosen, math_only, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(chosen.double().cpu(), ref, rtol=5e-2, atol=5e-2)


# ------------------------------------------------------------------ the mathematics, pinned
def _copy_attention(theirs, self_attn=None, cross_attn=None):
    """Copy an mtkit attention module's weights into an nn.MultiheadAttention."""
    with torch.no_grad():
        if self_attn is not None:
            theirs.in_proj_weight.copy_(self_attn.in_proj.weight)
            theirs.in_proj_bias.copy_(self_attn.in_proj.bias)
            out = self_attn.out_proj
        else:
            theirs.in_proj_weight.copy_(torch.cat([cross_attn.q_proj.weight, cross_attn.kv_proj.weight]))
            theirs.in_proj_bias.copy_(torch.cat([cross_attn.q_proj.bias, cross_attn.kv_proj.bias]))
            out = cross_attn.out_proj
        theirs.out_proj.weight.copy_(out.weight)
        theirs.out_proj.bias.copy_(out.bias)


def _copy_norm(theirs, ours):
    with torch.no_grad():
        theirs.weight.copy_(ours.weight)
        theirs.bias.copy_(ours.bias)


def _copy_ff(theirs, ours):
    with torch.no_grad():
        for a, b in ((theirs.linear1, ours.fc1), (theirs.linear2, ours.fc2)):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")  # nn.Transformer's, about norm_first
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_equals_torch_nn_transformer_with_the_same_weights(norm):
    model = tiny(norm=norm).double()
    cfg = model.cfg
    ref = torch.nn.Transformer(cfg.d_model, cfg.n_heads, cfg.n_enc_layers, cfg.n_dec_layers, cfg.d_ff, dropout=0.0,
                               batch_first=True, norm_first=norm == "pre").double().eval()
    for theirs, ours in zip(ref.encoder.layers, model.encoder, strict=True):
        _copy_attention(theirs.self_attn, self_attn=ours.self_attn)
        _copy_norm(theirs.norm1, ours.attn_res.norm)
        _copy_norm(theirs.norm2, ours.ff_res.norm)
        _copy_ff(theirs, ours.ff)
    for theirs, ours in zip(ref.decoder.layers, model.decoder, strict=True):
        _copy_attention(theirs.self_attn, self_attn=ours.self_attn)
        _copy_attention(theirs.multihead_attn, cross_attn=ours.cross_attn)
        for a, b in ((theirs.norm1, ours.self_res.norm), (theirs.norm2, ours.cross_res.norm), (theirs.norm3, ours.ff_res.norm)):
            _copy_norm(a, b)
        _copy_ff(theirs, ours.ff)
    if norm == "pre":
        _copy_norm(ref.encoder.norm, model.enc_norm)
        _copy_norm(ref.decoder.norm, model.dec_norm)
    else:  # the post-norm layers end in their own norm; nn.Transformer adds one more, mtkit does not
        ref.encoder.norm, ref.decoder.norm = torch.nn.Identity(), torch.nn.Identity()
    src, tgt = rand_ids(3, 9), rand_ids(3, 6)
    src[1, 5:] = PAD_ID
    causal = torch.nn.Transformer.generate_square_subsequent_mask(6, dtype=torch.bool)
    theirs = ref(model.src_embed(src), model.tgt_embed(tgt), tgt_mask=causal, src_key_padding_mask=src.eq(PAD_ID),
                 memory_key_padding_mask=src.eq(PAD_ID))
    torch.testing.assert_close(model.features(src, tgt), theirs, rtol=1e-10, atol=1e-10)


def test_embedding_is_scaled_token_vectors_plus_positions():
    model = tiny().eval()
    ids = rand_ids(2, 5)
    expected = model.src_embed.tokens.weight[ids] * model.cfg.d_model ** 0.5 + sinusoidal_table(5, model.cfg.d_model)
    torch.testing.assert_close(model.src_embed(ids), expected)
