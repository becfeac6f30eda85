#!/usr/bin/env python3
"""Write the GGUF fixtures under fixtures/gguf/ with gguf-py (the `gguf` package) from the LLaMA
fixtures, plus golden values computed by gguf-py's own dequantization and transformers.

Run from the repository root with the fixtures venv (torch, transformers, gguf, safetensors, numpy):

    /work/venv/bin/python scripts/make_gguf_fixtures.py

What it writes (all small, deterministic):

* `fixtures/gguf/gqa-{f32,q8_0,q4_0,q4_1,q5_0,q5_1}.gguf` from `fixtures/llama-gqa` (f32),
  `bf16.gguf` from `fixtures/llama-bf16`, `f16.gguf` from `fixtures/llama-f16`: the tensors llama.cpp's
  `convert_hf_to_gguf.py` writes for the `llama` architecture (names `token_embd`, `blk.N.attn_q`,
  ...; q/k rows permuted to the interleaved rotary order by the same formula as `LlamaModel.permute`;
  1-D norms kept in f32 as llama.cpp does), with the `llama.*` metadata and a byte-level token list.
* `fixtures/gguf/bias-f32.gguf` from `fixtures/llama-bias`: q/k/v/o and MLP biases, the q/k ones
  permuted like their weights (llama.cpp's conversion/llama.py).
* `fixtures/gguf/qwen2-{f32,q8_0}.gguf` from `fixtures/qwen2`: the `qwen2` architecture as
  conversion/qwen.py's Qwen2Model writes it (`qwen2.*` metadata, q/k/v biases, rows not
  permuted: llama.cpp runs qwen2 with half-split rotary), golden logits from Qwen2ForCausalLM.
* `fixtures/gguf/qwen3-f32.gguf` from `fixtures/qwen3` and `qwen3-wide-q8_0.gguf` from
  `fixtures/gguf/qwen3-wide-src/` (a dedicated Qwen3 with heads x head size twice the hidden size):
  the `qwen3` architecture (per-head `attn_q_norm`/`attn_k_norm`, rows not permuted), golden
  logits from Qwen3ForCausalLM.
* `fixtures/gguf/k-src/`: a dedicated HF LLaMA (hidden 256, so every matmul row is whole 256-element
  super-blocks) in f16, and `k-mix.gguf` from it with Q4_K, Q5_K, Q6_K and Q8_0 tensors (the mix of a
  Q4_K_M file). gguf-py has no K-quant quantizer, so this script packs the blocks itself (a plain
  min/max quantizer, not llama.cpp's search); the layout is checked by dequantizing with gguf-py.
* `fixtures/gguf/gqa-{f16,bf16}-rounded.gguf` from `fixtures/llama-gqa` (f32): `--outtype f16` /
  `bf16` (every matrix rounded to nearest even, norms in F32); `gqa-f16-truncated.gguf`: the F16 one
  with layer 0's v_proj truncated toward zero instead of rounded.
* `<name>.expected.safetensors` next to each GGUF: `input_ids` (the LLaMA fixtures' ids) and the f32
  logits of transformers' LlamaForCausalLM run on gguf-py's dequantization of that file.
* `fixtures/gguf/dequant.safetensors`: for each block type, random block bytes (`<type>.bytes`) and
  gguf-py's dequantized values (`<type>.values`): the kernels' dequantizers are tested against it.
* `fixtures/gguf/hostile/*.gguf`: malformed files (counts, string and array lengths, dims, offsets,
  alignment out of range; `ne` product overflow; truncation), each refused with exit 2.
"""

import json
import math
import os
import shutil
import struct

import numpy as np
import torch
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType, GGUFWriter, quants
from safetensors.numpy import load_file as np_load
from safetensors.torch import load_file, save_file
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = os.path.join(ROOT, "fixtures")
OUT = os.path.join(FIX, "gguf")
QK_K = 256

# --------------------------------------------------------------------------------------------
# HF <-> GGUF names and the rotary permutation


def permute(w, n_head):
    """HF half-split rotary rows -> interleaved (llama.cpp's LlamaModel.permute, re-derived)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    if hf.endswith("_proj.bias"):  # projection biases: the weight's name with .bias
        return gguf_name(hf[: -len("bias")] + "weight")[: -len("weight")] + "bias"
    parts = hf.split(".")
    i = parts[2]
    rest = ".".join(parts[3:])
    table = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
    }
    return f"blk.{i}.{table[rest]}"


def hf_name(g):
    inv = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    }
    if g in inv:
        return inv[g]
    if g.endswith(".bias"):
        return hf_name(g[: -len("bias")] + "weight")[: -len("weight")] + "bias"
    _, i, rest = g.split(".", 2)
    table = {
        "attn_norm.weight": "input_layernorm.weight",
        "ffn_norm.weight": "post_attention_layernorm.weight",
        "attn_q.weight": "self_attn.q_proj.weight",
        "attn_k.weight": "self_attn.k_proj.weight",
        "attn_v.weight": "self_attn.v_proj.weight",
        "attn_output.weight": "self_attn.o_proj.weight",
        "ffn_gate.weight": "mlp.gate_proj.weight",
        "ffn_up.weight": "mlp.up_proj.weight",
        "ffn_down.weight": "mlp.down_proj.weight",
        "attn_q_norm.weight": "self_attn.q_norm.weight",
        "attn_k_norm.weight": "self_attn.k_norm.weight",
    }
    return f"model.layers.{i}.{table[rest]}"


# --------------------------------------------------------------------------------------------
# K-quant packing (gguf-py only dequantizes these). Plain min/max quantizers; the layouts follow
# ggml's block_q4_K / block_q5_K / block_q6_K as gguf-py's dequantizers read them.


def f16_bytes(v):
    return np.asarray(v, dtype=np.float16).reshape(-1, 1).view(np.uint8)


def pack_scale_min_k4(sc, m):
    """8 6-bit scales and mins -> 12 bytes (ggml's get_scale_min_k4 layout)."""
    out = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    for j in range(4):
        out[:, j] = (sc[:, j] & 0x3F) | ((sc[:, j + 4] >> 4) << 6)
        out[:, j + 4] = (m[:, j] & 0x3F) | ((m[:, j + 4] >> 4) << 6)
        out[:, j + 8] = (sc[:, j + 4] & 0x0F) | ((m[:, j + 4] & 0x0F) << 4)
    return out


def affine_k(x, levels):
    """x: (n, 256). Sub-blocks of 32: x ~ d*sc*q - dmin*m, q in [0, levels]."""
    n = x.shape[0]
    sub = x.reshape(n, 8, 32)
    lo = np.minimum(sub.min(axis=2), 0.0)
    hi = sub.max(axis=2)
    scale = (hi - lo) / levels
    mn = -lo
    d = (scale.max(axis=1) / 63.0).astype(np.float16).astype(np.float32)
    dmin = (mn.max(axis=1) / 63.0).astype(np.float16).astype(np.float32)
    sd = np.where(d > 0, d, 1.0)
    smin = np.where(dmin > 0, dmin, 1.0)
    sc = np.clip(np.round(scale / sd[:, None]), 0, 63).astype(np.uint8)
    m = np.clip(np.round(mn / smin[:, None]), 0, 63).astype(np.uint8)
    eff = d[:, None] * sc
    off = dmin[:, None] * m
    safe = np.where(eff > 0, eff, 1.0)
    q = np.clip(np.round((sub + off[:, :, None]) / safe[:, :, None]), 0, levels).astype(np.uint8)
    q = np.where(eff[:, :, None] > 0, q, 0).astype(np.uint8)
    return d, dmin, sc, m, q


def quant_q4_k(x):
    d, dmin, sc, m, q = affine_k(x, 15)
    n = x.shape[0]
    qs = np.zeros((n, 4, 32), dtype=np.uint8)
    for g in range(4):
        qs[:, g, :] = q[:, 2 * g, :] | (q[:, 2 * g + 1, :] << 4)
    return np.concatenate(
        [f16_bytes(d), f16_bytes(dmin), pack_scale_min_k4(sc, m), qs.reshape(n, 128)], axis=1
    )


def quant_q5_k(x):
    d, dmin, sc, m, q = affine_k(x, 31)
    n = x.shape[0]
    lo = q & 0x0F
    qs = np.zeros((n, 4, 32), dtype=np.uint8)
    for g in range(4):
        qs[:, g, :] = lo[:, 2 * g, :] | (lo[:, 2 * g + 1, :] << 4)
    qh = np.zeros((n, 32), dtype=np.uint8)
    for j in range(8):
        qh |= ((q[:, j, :] >> 4) & 1) << j
    return np.concatenate(
        [f16_bytes(d), f16_bytes(dmin), pack_scale_min_k4(sc, m), qh, qs.reshape(n, 128)], axis=1
    )


def quant_q6_k(x):
    n = x.shape[0]
    grp = x.reshape(n, 16, 16)
    amax = np.abs(grp).max(axis=2)
    s = amax / 31.0
    d = (s.max(axis=1) / 127.0).astype(np.float16).astype(np.float32)
    sd = np.where(d > 0, d, 1.0)
    sc = np.clip(np.round(s / sd[:, None]), -128, 127).astype(np.int8)
    eff = d[:, None] * sc.astype(np.float32)
    safe = np.where(eff != 0, eff, 1.0)
    q = np.clip(np.round(grp / safe[:, :, None]), -32, 31)
    q = np.where(eff[:, :, None] != 0, q, 0).astype(np.int16) + 32
    q = q.reshape(n, 256).astype(np.uint8)
    ql = np.zeros((n, 128), dtype=np.uint8)
    qh = np.zeros((n, 64), dtype=np.uint8)
    for e in range(256):
        g, rem = divmod(e, 128)
        half, i = divmod(rem, 64)
        ql[:, g * 64 + i] |= (q[:, e] & 0x0F) << (4 * half)
        s2, l = divmod(rem, 32)
        qh[:, g * 32 + l] |= ((q[:, e] >> 4) & 3) << (2 * s2)
    return np.concatenate([ql, qh, sc.view(np.uint8), f16_bytes(d)], axis=1)


K_QUANT = {T.Q4_K: quant_q4_k, T.Q5_K: quant_q5_k, T.Q6_K: quant_q6_k}


def quantize(arr, qtype):
    """float32 (rows, cols) -> uint8 bytes of `qtype` (rows, bytes per row)."""
    if qtype == T.IQ4_NL:
        # gguf-py has no IQ4_NL quantizer and ckpt does not decode the type: all-zero blocks
        # (scale 0) stand for a file whose values nothing can compare.
        return np.zeros((arr.shape[0], arr.shape[1] // 32 * 18), dtype=np.uint8)
    if qtype in K_QUANT:
        rows = arr.reshape(-1, QK_K).astype(np.float32)
        return K_QUANT[qtype](rows).reshape(arr.shape[0], -1)
    return quants.quantize(arr.astype(np.float32), qtype)


# --------------------------------------------------------------------------------------------
# Writing a GGUF the way convert_hf_to_gguf.py does for `llama`


def write_gguf(path, cfg, sd, types, stored=None, extra_kv=(), split_max_tensors=0, arch="llama"):
    """`sd`: HF name -> torch tensor (stored values); `types(hf_name, tensor)` -> GGML type;
    `extra_kv`: (key, value, GGUFValueType) added after the standard metadata; `split_max_tensors`:
    gguf-py's own split into `-0000N-of-0000M.gguf` parts; `arch`: `llama` (q/k rows permuted to
    the interleaved rotary order, as conversion/llama.py does), `qwen2` (conversion/qwen.py's
    Qwen2Model: the same names and metadata keys under `qwen2.`, nothing permuted) or `qwen3`
    (Qwen3Model: as qwen2, plus `attn_q_norm`/`attn_k_norm`, and the head size always written, as
    TextModel.set_gguf_parameters does for a config with `head_dim`). Returns
    {gguf name: (qtype, bytes or array)} as written."""
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or heads
    hidden = cfg["hidden_size"]
    hd = cfg.get("head_dim") or hidden // heads
    w = GGUFWriter(path, arch, split_max_tensors=split_max_tensors)
    w.add_name(os.path.basename(path))
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(float(cfg.get("rope_theta") or cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(hd)
    if hd != hidden // heads or arch == "qwen3":
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_tokenizer_model("llama")
    toks = [f"<0x{i:02X}>" for i in range(cfg["vocab_size"])]
    w.add_token_list(toks)
    w.add_token_scores([0.0] * len(toks))
    w.add_token_types([6] * len(toks))
    w.add_bos_token_id(cfg.get("bos_token_id") or 1)
    w.add_eos_token_id(cfg.get("eos_token_id") or 2)
    for key, value, vtype in extra_kv:
        w.add_key_value(key, value, vtype)
    written = {}
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if rp.get("rope_type") == "llama3" and arch == "llama":
        # convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors: f32 frequencies, f64 math.
        theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
        freqs = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        factor, lo, hi = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
        old = rp["original_max_position_embeddings"]
        out = []
        for f in freqs.tolist():
            wavelen = 2 * math.pi / f
            if wavelen < old / hi:
                out.append(1.0)
            elif wavelen > old / lo:
                out.append(factor)
            else:
                smooth = (old / wavelen - lo) / (hi - lo)
                out.append(1 / ((1 - smooth) / factor + smooth))
        w.add_tensor("rope_freqs.weight", np.array(out, dtype=np.float32))
    for name, t in sd.items():
        a = t.to(torch.float32).numpy()
        # conversion/llama.py permutes q/k biases like their weights.
        if arch != "llama":
            pass
        elif name.endswith(("q_proj.weight", "q_proj.bias")):
            a = permute(a, heads)
            t = torch.from_numpy(np.ascontiguousarray(a)).to(t.dtype)
        elif name.endswith(("k_proj.weight", "k_proj.bias")):
            a = permute(a, kv)
            t = torch.from_numpy(np.ascontiguousarray(a)).to(t.dtype)
        g = gguf_name(name)
        q = T.F32 if a.ndim == 1 else types(name, t)
        if q == T.F32:
            data = t.to(torch.float32).numpy()
            w.add_tensor(g, data)
        elif q == T.F16:
            data = t.to(torch.float16).numpy()
            w.add_tensor(g, data)
        elif q == T.BF16:
            raw = t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint8).reshape(a.shape[0], -1)
            data = raw
            w.add_tensor(g, raw, raw_dtype=T.BF16)
        else:
            data = quantize(a, q)
            w.add_tensor(g, data, raw_dtype=q)
        written[g] = (q, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return written


def dequantized_state_dict(written, cfg, arch="llama"):
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or heads
    sd = {}
    for g, (q, data) in written.items():
        if q == T.F32:
            a = np.asarray(data, dtype=np.float32)
        elif q == T.F16:
            a = np.asarray(data, dtype=np.float16).astype(np.float32)
        else:
            a = quants.dequantize(data, q).astype(np.float32)
        hf = hf_name(g)
        if arch != "llama":
            pass
        elif hf.endswith(("q_proj.weight", "q_proj.bias")):
            a = unpermute(a, heads)
        elif hf.endswith(("k_proj.weight", "k_proj.bias")):
            a = unpermute(a, kv)
        sd[hf] = torch.from_numpy(np.ascontiguousarray(a))
    return sd


def logits(cfg_dict, sd, ids, arch="llama"):
    cfg = dict(cfg_dict)
    for k in ("dtype", "torch_dtype", "transformers_version", "model_type", "architectures"):
        cfg.pop(k, None)
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM),
                             "qwen2": (Qwen2Config, Qwen2ForCausalLM),
                             "qwen3": (Qwen3Config, Qwen3ForCausalLM)}[arch]
    config = config_cls(**cfg)
    config._attn_implementation = "eager"
    model = model_cls(config).to(torch.float32)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "rotary" not in m]
    if config.tie_word_embeddings:
        missing = [m for m in missing if m != "lm_head.weight"]
    assert not missing and not unexpected, (missing, unexpected)
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.to(torch.float32).contiguous()


def load_hf(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    sd = load_file(os.path.join(d, "model.safetensors"))
    ids = load_file(os.path.join(d, "expected.safetensors"))["input_ids"]
    return cfg, sd, ids


def case(name, src_dir, types, tol_src=None, extra_kv=(), cfg_update=None, arch="llama"):
    """`extra_kv`: metadata added to the file; `cfg_update`: what llama.cpp makes of it, as
    transformers config keys for the golden logits (None when it computes the source's model)."""
    cfg, sd, ids = load_hf(src_dir)
    path = os.path.join(OUT, f"{name}.gguf")
    written = write_gguf(path, cfg, sd, types, extra_kv=extra_kv, arch=arch)
    deq = dequantized_state_dict(written, cfg, arch=arch)
    lg = logits({**cfg, **(cfg_update or {})}, deq, ids, arch=arch)
    save_file({"input_ids": ids, "logits": lg}, os.path.join(OUT, f"{name}.expected.safetensors"))
    src = load_file(os.path.join(src_dir, "expected.safetensors"))["logits"]
    d = (lg - src).abs().max().item()
    print(f"  {name}: {os.path.getsize(path)} bytes; max |logit - source logit| = {d:.3e}")
    if tol_src is not None:
        assert d <= tol_src, (name, d)


def qwen2_cases():
    """`qwen2` architecture files from `fixtures/qwen2` (tied, q/k/v biases, rope_theta 1e6), as
    conversion/qwen.py's Qwen2Model writes them: f32 (converts back bit-exact) and Q8_0 (biases and
    norms kept in F32, as every 1-D tensor); golden logits from Qwen2ForCausalLM on gguf-py's
    dequantization. llama.cpp's qwen2 graph computes no sliding window; the source has none."""
    src = os.path.join(FIX, "qwen2")
    case("qwen2-f32", src, lambda n, t: T.F32, tol_src=1e-5, arch="qwen2")
    case("qwen2-q8_0", src, lambda n, t: T.Q8_0, arch="qwen2")


def k_source():
    """A dedicated LLaMA whose matmul inputs are multiples of 256 (K-quant super-blocks)."""
    config = LlamaConfig(
        hidden_size=256, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, max_position_embeddings=256, rms_norm_eps=1e-5,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, head_dim=64,
    )
    return random_source("k-src", config, LlamaForCausalLM, 1313, torch.float16, "llama")


def random_source(dirname, config, model_cls, seed, dtype, arch):
    """A Hugging Face directory `OUT/dirname` of `model_cls(config)` with seeded random weights
    (norm weights near 1) saved in `dtype`, and its golden logits on the llama-gqa ids."""
    d = os.path.join(OUT, dirname)
    os.makedirs(d, exist_ok=True)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_cls(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 / p.shape[-1] ** 0.5) * 4)
    model = model.to(dtype)
    model.save_pretrained(d, safe_serialization=True)
    ids = load_file(os.path.join(FIX, "llama-gqa", "expected.safetensors"))["input_ids"]
    sd = load_file(os.path.join(d, "model.safetensors"))
    cfg = json.load(open(os.path.join(d, "config.json")))
    lg = logits(cfg, {k: v.to(torch.float32) for k, v in sd.items()}, ids, arch=arch)
    save_file({"input_ids": ids, "logits": lg}, os.path.join(d, "expected.safetensors"))
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors", "expected.safetensors"):
            os.remove(os.path.join(d, f))
    return d


def qwen3_cases():
    """`qwen3` architecture files as conversion/qwen.py's Qwen3Model writes them: `qwen3-f32` from
    `fixtures/qwen3` (converts back bit-exact), and `qwen3-wide-q8_0` from `qwen3-wide-src/`, a
    dedicated Qwen3 whose heads x head size (4 x 32) is twice its hidden size (64), as in
    Qwen3-0.6B (16 x 128 over 1024), tied embeddings; golden logits from Qwen3ForCausalLM."""
    case("qwen3-f32", os.path.join(FIX, "qwen3"), lambda n, t: T.F32, tol_src=1e-5, arch="qwen3")
    config = Qwen3Config(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, vocab_size=256, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1e6}, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
    )
    wide = random_source("qwen3-wide-src", config, Qwen3ForCausalLM, 3333, torch.float32, "qwen3")
    case("qwen3-wide-q8_0", wide, lambda n, t: T.Q8_0, arch="qwen3")


def k_mix(hf, _t):
    if hf.endswith(("v_proj.weight", "down_proj.weight", "lm_head.weight")):
        return T.Q6_K
    if hf.endswith(("k_proj.weight", "up_proj.weight")):
        return T.Q5_K
    if hf.endswith("o_proj.weight"):
        return T.Q8_0
    return T.Q4_K


# --------------------------------------------------------------------------------------------
# Dequantization golden values


def dequant_fixture():
    rng = np.random.default_rng(7)
    out = {}
    for q in (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
        be, bb = quants.GGML_QUANT_SIZES[q]
        nblocks = 6
        raw = rng.integers(0, 256, size=(nblocks, bb), dtype=np.uint8)
        # Replace every f16 field with a finite value of varied sign and magnitude; random bits
        # elsewhere exercise every packed field.
        offsets = {
            T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2],
            T.Q2_K: [bb - 4, bb - 2], T.Q3_K: [bb - 2], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [bb - 2],
        }[q]
        for b in range(nblocks):
            for o in offsets:
                v = np.float16(rng.choice([-1, 1]) * 10.0 ** rng.uniform(-4, 0))
                raw[b, o:o + 2] = np.frombuffer(np.float16(v).tobytes(), dtype=np.uint8)
        raw[0, :] = raw[0, :] if q != T.Q8_0 else raw[0, :]
        vals = quants.dequantize(raw.reshape(1, -1), q).astype(np.float32).reshape(-1)
        assert vals.size == nblocks * be and np.isfinite(vals).all(), q.name
        out[f"{q.name}.bytes"] = raw.reshape(-1)
        out[f"{q.name}.values"] = vals
    from safetensors.numpy import save_file as np_save

    np_save(out, os.path.join(OUT, "dequant.safetensors"))


def check_k_layouts():
    """Our packers against gguf-py's dequantizers: the error must be that of the quantizer."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 256)).astype(np.float32)
    for q, tol in ((T.Q4_K, 0.25), (T.Q5_K, 0.12), (T.Q6_K, 0.08)):
        back = quants.dequantize(quantize(x, q), q)
        err = np.abs(back - x).max()
        print(f"  {q.name} packer: max |dequant - x| = {err:.3f} (|x| max {np.abs(x).max():.2f})")
        assert err < tol, (q.name, err)


# --------------------------------------------------------------------------------------------
# Hostile files


def gguf_bytes(kv=(), tensors=(), version=3, n_t=None, n_kv=None, data=b"", align=32):
    def s(v):
        b = v.encode() if isinstance(v, str) else v
        return struct.pack("<Q", len(b)) + b

    body = b""
    for k, ty, payload in kv:
        body += s(k) + struct.pack("<I", ty) + payload
    for name, ne, ty, off in tensors:
        body += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        body += struct.pack("<IQ", ty, off)
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_t is None else n_t,
                                 len(kv) if n_kv is None else n_kv)
    out = head + body
    out += b"\0" * ((-len(out)) % align)
    return out + data


def hostile():
    d = os.path.join(OUT, "hostile")
    os.makedirs(d, exist_ok=True)
    arch = ("general.architecture", 8, struct.pack("<Q", 5) + b"llama")
    ok_t = [("token_embd.weight", [4, 4], 0, 0)]
    files = {
        "tensor-count-huge": gguf_bytes([arch], ok_t, n_t=1 << 62),
        "kv-count-huge": gguf_bytes([arch], ok_t, n_kv=(1 << 64) - 1),
        "kv-count-past-eof": gguf_bytes([arch], ok_t, n_kv=1000),
        "string-length-huge": gguf_bytes([("general.architecture", 8, struct.pack("<Q", (1 << 64) - 2) + b"llama")], ok_t),
        "key-length-past-eof": b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 40) + b"abc",
        "array-length-huge": gguf_bytes([arch, ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, (1 << 63)))], ok_t),
        "array-nested-deep": gguf_bytes([arch, ("x", 9, struct.pack("<IQ", 9, 1) * 6 + struct.pack("<IQ", 4, 0))], ok_t),
        "array-elem-type-bad": gguf_bytes([arch, ("x", 9, struct.pack("<IQ", 77, 4))], ok_t),
        "value-type-bad": gguf_bytes([arch, ("x", 42, b"\0" * 8)], ok_t),
        "bool-not-01": gguf_bytes([arch, ("x", 7, b"\x05")], ok_t),
        "n-dims-huge": gguf_bytes([arch], [("token_embd.weight", [4] * 5, 0, 0)]),
        "dim-negative": gguf_bytes([arch], [("token_embd.weight", [(1 << 64) - 4, 4], 0, 0)]),
        "ne-product-overflow": gguf_bytes([arch], [("token_embd.weight", [(1 << 63) - 1, 2, 1, 1], 0, 0)]),
        "ne-bytes-overflow": gguf_bytes([arch], [("token_embd.weight", [1 << 32, 1 << 30], 0, 0)]),
        "offset-past-eof": gguf_bytes([arch], [("token_embd.weight", [4, 4], 0, 1 << 40)], data=b"\0" * 64),
        "offset-wraps": gguf_bytes([arch], [("token_embd.weight", [4, 4], 0, (1 << 64) - 32)], data=b"\0" * 64),
        "offset-unaligned": gguf_bytes([arch], [("token_embd.weight", [4, 4], 0, 4)], data=b"\0" * 96),
        "tensors-overlap": gguf_bytes([arch], [("a.weight", [8], 0, 0), ("b.weight", [8], 0, 0)], data=b"\0" * 32),
        "alignment-zero": gguf_bytes([arch, ("general.alignment", 4, struct.pack("<I", 0))], ok_t, data=b"\0" * 64),
        "alignment-not-pow2": gguf_bytes([arch, ("general.alignment", 4, struct.pack("<I", 48))], ok_t, data=b"\0" * 64),
        "alignment-huge": gguf_bytes([arch, ("general.alignment", 4, struct.pack("<I", 1 << 31))], ok_t, data=b"\0" * 64),
        "alignment-wrong-type": gguf_bytes([arch, ("general.alignment", 10, struct.pack("<Q", 32))], ok_t, data=b"\0" * 64),
        "type-unknown": gguf_bytes([arch], [("token_embd.weight", [4, 4], 200, 0)], data=b"\0" * 64),
        "block-partial-row": gguf_bytes([arch], [("token_embd.weight", [33, 1], 8, 0)], data=b"\0" * 64),
        "duplicate-tensor": gguf_bytes([arch], [("a.weight", [8], 0, 0), ("a.weight", [8], 0, 32)], data=b"\0" * 64),
        "duplicate-key": gguf_bytes([arch, arch], ok_t, data=b"\0" * 64),
        "version-1": gguf_bytes([arch], ok_t, version=1, data=b"\0" * 64),
        "version-big-endian": gguf_bytes([arch], ok_t, version=3 << 24, data=b"\0" * 64),
        "truncated-data": gguf_bytes([arch], ok_t, data=b"\0" * 10),
        "block-count-huge": gguf_bytes([arch, ("llama.block_count", 4, struct.pack("<I", 1 << 30)),
                                        ("llama.embedding_length", 4, struct.pack("<I", 4)),
                                        ("llama.attention.head_count", 4, struct.pack("<I", 1))], ok_t, data=b"\0" * 64),
        "arch-gemma": gguf_bytes([("general.architecture", 8, struct.pack("<Q", 5) + b"gemma")], ok_t, data=b"\0" * 64),
        # llama.cpp refuses a key of the wrong type; read leniently, the scaling would be skipped.
        "rope-type-uint32": gguf_bytes([arch, ("llama.block_count", 4, struct.pack("<I", 1)),
                                        ("llama.embedding_length", 4, struct.pack("<I", 4)),
                                        ("llama.attention.head_count", 4, struct.pack("<I", 1)),
                                        ("llama.rope.scaling.type", 4, struct.pack("<I", 1))], ok_t, data=b"\0" * 64),
    }
    for n, b in files.items():
        with open(os.path.join(d, f"{n}.gguf"), "wb") as f:
            f.write(b)
    print(f"  {len(files)} hostile files")


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    check_k_layouts()
    gqa = os.path.join(FIX, "llama-gqa")
    f32 = lambda n, t: T.F32  # noqa: E731
    case("gqa-f32", gqa, f32, tol_src=1e-5)
    case("f16", os.path.join(FIX, "llama-f16"), lambda n, t: T.F16, tol_src=1e-5)
    case("bf16", os.path.join(FIX, "llama-bf16"), lambda n, t: T.BF16, tol_src=1e-5)
    case("llama3-f32", os.path.join(FIX, "llama3-scaling"), f32, tol_src=1e-5)
    case("bias-f32", os.path.join(FIX, "llama-bias"), f32, tol_src=1e-5)
    case("tied-q8_0", os.path.join(FIX, "llama-tied"), lambda n, t: T.Q8_0)
    for q in (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1):
        case(f"gqa-{q.name.lower()}", gqa, lambda n, t, q=q: q)
    # Rotary metadata as llama.cpp's load_hparams reads it (src/llama-model.cpp): the scaling
    # type defaults to "linear", and the factor comes from `rope.scaling.factor` or else the
    # older `rope.scale_linear`. Both files compute linear scaling by 4 in llama.cpp, so their
    # golden logits are transformers' with `rope_scaling` linear 4.
    linear4 = {"rope_scaling": {"rope_type": "linear", "factor": 4.0}, "rope_parameters": None}
    for name, key in (("rope-factor", "llama.rope.scaling.factor"), ("rope-scale-linear", "llama.rope.scale_linear")):
        case(f"{name}-q8_0", gqa, lambda n, t: T.Q8_0, extra_kv=[(key, 4.0, GGUFValueType.FLOAT32)], cfg_update=linear4)
    # A Q8_0 file whose embedding llama.cpp's converter kept in F16 (the source's values rounded
    # to f16): equivalent within the Q8_0 bands; the same with an embedding that is not the
    # source's rounded (1e-3 noise added) is not.
    embd_f16 = lambda n, t: T.F16 if n == "model.embed_tokens.weight" else T.Q8_0  # noqa: E731
    case("q8_0-f16-embd", gqa, embd_f16)
    cfg, sd, _ = load_hf(gqa)
    g = torch.Generator().manual_seed(7)
    noisy = dict(sd)
    e = sd["model.embed_tokens.weight"]
    noisy["model.embed_tokens.weight"] = e + 1e-3 * torch.randn(e.shape, generator=g, dtype=e.dtype)
    write_gguf(os.path.join(OUT, "q8_0-f16-embd-changed.gguf"), cfg, noisy, embd_f16)
    # Every matrix but the embedding in a type ckpt does not decode (IQ4_NL), the embedding in F16
    # (as llama.cpp's TQ1_0/TQ2_0 outputs keep it): nothing can compare the matrices' values.
    undecoded = lambda n, t: T.F16 if n == "model.embed_tokens.weight" else T.IQ4_NL  # noqa: E731
    write_gguf(os.path.join(OUT, "iq4_nl-undecoded.gguf"), cfg, sd, undecoded)
    # A key llama.cpp computes with and ckpt does not model (it scales q and k): no golden logits,
    # every command that computes refuses it by name.
    cfg, sd, _ = load_hf(gqa)
    write_gguf(os.path.join(OUT, "attn-factor-q8_0.gguf"), cfg, sd, lambda n, t: T.Q8_0,
               extra_kv=[("llama.rope.scaling.attn_factor", 1.5, GGUFValueType.FLOAT32)])
    # gqa-q8_0 split in two parts by gguf-py itself (`split_max_tensors`, as llama-gguf-split and
    # the converter's `--split-max-tensors` name them: `-00001-of-00002.gguf`): the first part holds
    # the metadata and 12 tensors, the second 9. Read from its first part it is gqa-q8_0.
    write_gguf(os.path.join(OUT, "gqa-q8_0-split.gguf"), cfg, sd, lambda n, t: T.Q8_0, split_max_tensors=12)
    # `--outtype f16` / `bf16` of an f32 source (llama.cpp's default conversion): every matrix the
    # source's values rounded to nearest even (torch's rounding, as numpy's and gguf-py's), norms
    # kept in F32; golden logits on the rounded weights. And the F16 file with one matrix
    # truncated toward zero instead (a converter that does not round to nearest): no golden logits,
    # its logits are within the F16 band, only the exact rounding check tells it apart.
    case("gqa-f16-rounded", gqa, lambda n, t: T.F16)
    case("gqa-bf16-rounded", gqa, lambda n, t: T.BF16)
    cfg, sd, _ = load_hf(gqa)
    truncated = dict(sd)
    v = sd["model.layers.0.self_attn.v_proj.weight"].numpy()
    r = v.astype(np.float16)
    away = np.abs(r.astype(np.float32)) > np.abs(v)
    r = np.where(away, np.nextafter(r, np.float16(0)), r)
    assert (r != v.astype(np.float16)).any()
    truncated["model.layers.0.self_attn.v_proj.weight"] = torch.from_numpy(r.astype(np.float32))
    write_gguf(os.path.join(OUT, "gqa-f16-truncated.gguf"), cfg, truncated, lambda n, t: T.F16)
    k = k_source()
    case("k-mix", k, k_mix)
    qwen2_cases()
    qwen3_cases()
    dequant_fixture()
    hostile()


if __name__ == "__main__":
    main()
